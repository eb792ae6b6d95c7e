//! Table and column metadata from the system catalog.

use tokio_postgres::Client;

use super::error::PgError;

/// A schema-qualified table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
}

/// A column and its SQL type, as `format_type` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type, e.g. `bigint`, `numeric(12,2)`, `text[]`.
    pub type_sql: String,
}

/// The table's columns in order, or a `Config` error naming the table if it
/// does not exist.
pub async fn table_columns(client: &Client, table: &TableRef) -> Result<Vec<Column>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table.schema, &table.table],
        )
        .await
        .map_err(|e| PgError::from_driver("read table columns", &e))?;
    if rows.is_empty() {
        return Err(PgError::config(
            "read table columns",
            format!(
                "table {}.{} does not exist or has no columns",
                table.schema, table.table
            ),
        ));
    }
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_sql: r.get(1),
        })
        .collect())
}

/// Whether `column` alone has a unique index (a primary key or unique
/// constraint, not partial, not on an expression) in `table`: what
/// `INSERT ... ON CONFLICT (column)` needs.
pub async fn has_unique_key(
    client: &Client,
    table: &TableRef,
    column: &str,
) -> Result<bool, PgError> {
    client
        .query_one(
            "SELECT EXISTS (
               SELECT 1 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
                WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3
                  AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1
                  AND i.indpred IS NULL AND i.indexprs IS NULL)",
            &[&table.schema, &table.table, &column],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| PgError::from_driver("read unique keys", &e))
}
