//! Turns a job's source and target settings into a [`CopySpec`], checking
//! them against both catalogs: the tables exist, the key column and the
//! chosen columns exist in the source, and the target has every copied
//! column. The operator runs it before planning (a problem becomes a
//! condition naming the field); each worker runs it when it connects.

use tokio_postgres::Client;

use super::{
    catalog::{Column, TableRef, has_unique_key, table_columns},
    copy::CopySpec,
    error::{PgError, PgErrorKind},
};
use crate::api::{PostgresSource, PostgresTarget, Reason, WriteMode};

/// Why a job's tables cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The configuration does not match the databases.
    #[error("{message}")]
    Invalid {
        /// Why, e.g. [`Reason::SourceTableNotFound`].
        reason: Reason,
        /// What is wrong, naming the spec field.
        message: String,
    },
    /// The source database could not be asked.
    #[error("source: {0}")]
    Source(PgError),
    /// The target database could not be asked.
    #[error("target: {0}")]
    Target(PgError),
}

fn invalid(reason: Reason, message: String) -> ResolveError {
    ResolveError::Invalid { reason, message }
}

/// The columns of `table`, `None` if it does not exist.
async fn columns_of(client: &Client, table: &TableRef) -> Result<Option<Vec<Column>>, PgError> {
    match table_columns(client, table).await {
        Ok(columns) => Ok(Some(columns)),
        Err(e) if e.kind == PgErrorKind::Config && e.context == "read table columns" => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks the tables and builds the copy specification.
pub async fn resolve_copy_spec(
    source: &Client,
    target: &Client,
    src: &PostgresSource,
    dst: &PostgresTarget,
) -> Result<CopySpec, ResolveError> {
    let source_table = TableRef {
        schema: src.schema.clone(),
        table: src.table.clone(),
    };
    let target_table = TableRef {
        schema: dst.schema.clone(),
        table: dst.table.clone(),
    };
    let Some(all) = columns_of(source, &source_table)
        .await
        .map_err(ResolveError::Source)?
    else {
        return Err(invalid(
            Reason::SourceTableNotFound,
            format!(
                "table {}.{} named by spec.source.postgres does not exist in the source database",
                src.schema, src.table
            ),
        ));
    };
    if !all.iter().any(|c| c.name == src.key_column) {
        return Err(invalid(
            Reason::KeyColumnNotFound,
            format!(
                "spec.source.postgres.keyColumn {:?} is not a column of {}.{}",
                src.key_column, src.schema, src.table
            ),
        ));
    }
    let columns = match &src.columns {
        None => all,
        Some(wanted) => {
            let mut picked = Vec::with_capacity(wanted.len());
            for name in wanted {
                let Some(column) = all.iter().find(|c| &c.name == name) else {
                    return Err(invalid(
                        Reason::ColumnNotFound,
                        format!(
                            "spec.source.postgres.columns names {name:?}, which is not a column of {}.{}",
                            src.schema, src.table
                        ),
                    ));
                };
                picked.push(column.clone());
            }
            picked
        }
    };
    let Some(target_columns) = columns_of(target, &target_table)
        .await
        .map_err(ResolveError::Target)?
    else {
        return Err(invalid(
            Reason::TargetTableNotFound,
            format!(
                "table {}.{} named by spec.target.postgres does not exist in the target database; create it first",
                dst.schema, dst.table
            ),
        ));
    };
    let missing: Vec<&str> = columns
        .iter()
        .filter(|c| !target_columns.iter().any(|t| t.name == c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            Reason::TargetColumnNotFound,
            format!(
                "table {}.{} (spec.target.postgres) lacks the copied column(s) {}",
                dst.schema,
                dst.table,
                missing.join(", ")
            ),
        ));
    }
    // Upsert is INSERT ... ON CONFLICT (key): without a unique key on it the
    // target would silently collect duplicates.
    if dst.mode == WriteMode::Upsert
        && !has_unique_key(target, &target_table, &src.key_column)
            .await
            .map_err(ResolveError::Target)?
    {
        return Err(invalid(
            Reason::UpsertNeedsUniqueKey,
            format!(
                "spec.target.postgres.mode is upsert, but column {:?} of {}.{} has no unique \
                 key (primary key or unique constraint on that column alone); add one, or use \
                 mode insert",
                src.key_column, dst.schema, dst.table
            ),
        ));
    }
    Ok(CopySpec {
        direct: CopySpec::same_types(&columns, &target_columns),
        source: source_table,
        target: target_table,
        key_column: src.key_column.clone(),
        columns,
        mode: dst.mode,
    })
}
