//! Copying one batch: binary `COPY` out of the source, then `COPY` straight
//! into the target table (one write per row: the fast path). If the target
//! refuses any row — a key that already exists (a re-run, for upsert), a
//! constraint, a type that needs a cast — the same bytes go to a staging
//! table instead and one `INSERT ... SELECT [ON CONFLICT DO UPDATE]` writes
//! them. PostgreSQL encodes and decodes every value itself, so values land
//! identical whatever their type, and no row is parsed in between.
//!
//! When the target rejects rows on the staging path, they are isolated by
//! bisecting the staging table (each attempt in a savepoint); the rest of the
//! batch still lands. Everything happens in the caller's transaction, so the
//! caller can commit the batch's ledger entry atomically with its rows.

use std::ops::Range;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, pin_mut};
use tokio_postgres::{Client, Transaction};

use super::{
    catalog::{Column, TableRef},
    error::{PgError, PgErrorKind},
};
use crate::{api::WriteMode, domain::isolate::isolate};

/// Name of the per-session staging table on the target.
const STAGING: &str = "freight_staging";
/// Ordinal column of the staging table (COPY order), used to bisect.
const ORDINAL: &str = "freight_ord";

/// What to copy, and how to write it.
#[derive(Clone, Debug)]
pub struct CopySpec {
    /// Table read.
    pub source: TableRef,
    /// Table written.
    pub target: TableRef,
    /// Column whose ranges are the batches.
    pub key_column: String,
    /// Columns copied, with the source's types.
    pub columns: Vec<Column>,
    /// Upsert (idempotent) or insert.
    pub mode: WriteMode,
    /// Whether batches may be copied straight into the target: only when
    /// every copied column has the very same type there (binary COPY would
    /// otherwise reinterpret same-width values, e.g. bigint as double).
    pub direct: bool,
}

/// Which source rows a batch covers.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    /// Keys in `[lower, upper)` (`None`: unbounded).
    Range {
        /// Inclusive lower bound.
        lower: Option<&'a str>,
        /// Exclusive upper bound.
        upper: Option<&'a str>,
    },
    /// Exactly these keys (a retry of failed records).
    Keys(&'a [String]),
}

/// A record the target refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecord {
    /// The record's key, as text.
    pub key: String,
    /// The target's error message.
    pub error: String,
}

/// The result of copying one range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeCopy {
    /// Rows read from the source.
    pub read: u64,
    /// Rows written to the target.
    pub written: u64,
    /// Rows the target refused.
    pub failed: Vec<FailedRecord>,
}

/// Quotes an identifier (`"a""b"`), so any name is taken literally.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal in the escape-string form, which means the same
/// whatever `standard_conforming_strings` is set to.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table))
}

fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CopySpec {
    /// Whether the target's columns take the copied columns' binary data
    /// as-is: same names, same types.
    pub fn same_types(copied: &[Column], target: &[Column]) -> bool {
        copied.iter().all(|c| target.iter().any(|t| t == c))
    }

    fn key_type(&self) -> Result<&str, PgError> {
        self.columns
            .iter()
            .find(|c| c.name == self.key_column)
            .map(|c| c.type_sql.as_str())
            .ok_or_else(|| {
                PgError::config(
                    "plan copy",
                    format!(
                        "key column {} is not among the copied columns",
                        self.key_column
                    ),
                )
            })
    }

    /// The `COPY ... TO STDOUT` statement reading a batch from the source.
    pub fn copy_out_sql(&self, rows: &Rows<'_>) -> Result<String, PgError> {
        let key = quote_ident(&self.key_column);
        let key_type = self.key_type()?;
        let mut predicates = Vec::new();
        match rows {
            Rows::Range { lower, upper } => {
                if let Some(lo) = lower {
                    predicates.push(format!("{key} >= {}::{key_type}", quote_literal(lo)));
                }
                if let Some(hi) = upper {
                    predicates.push(format!("{key} < {}::{key_type}", quote_literal(hi)));
                }
            }
            Rows::Keys(keys) => {
                let list: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}::{key_type}", quote_literal(k)))
                    .collect();
                // An empty key list selects nothing.
                predicates.push(if list.is_empty() {
                    "false".to_owned()
                } else {
                    format!("{key} IN ({})", list.join(", "))
                });
            }
        }
        let filter = if predicates.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", predicates.join(" AND "))
        };
        Ok(format!(
            "COPY (SELECT {} FROM {}{filter}) TO STDOUT (FORMAT binary)",
            column_list(&self.columns),
            qualified(&self.source)
        ))
    }

    /// The statement writing staging rows with ordinals in `[$1, $2)` to the target.
    pub fn write_sql(&self) -> String {
        let cols = column_list(&self.columns);
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {STAGING} WHERE {ORDINAL} >= $1 AND {ORDINAL} < $2",
            qualified(&self.target)
        );
        match self.mode {
            WriteMode::Insert => insert,
            WriteMode::Upsert => {
                let updates: Vec<String> = self
                    .columns
                    .iter()
                    .filter(|c| c.name != self.key_column)
                    .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                    .collect();
                let action = if updates.is_empty() {
                    "NOTHING".to_owned()
                } else {
                    format!("UPDATE SET {}", updates.join(", "))
                };
                format!(
                    "{insert} ON CONFLICT ({}) DO {action}",
                    quote_ident(&self.key_column)
                )
            }
        }
    }
}

/// Creates the session's staging table on the target (once per connection).
pub async fn prepare_staging(target: &Client, spec: &CopySpec) -> Result<(), PgError> {
    let columns: Vec<String> = spec
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.type_sql))
        .collect();
    let ddl = format!(
        "CREATE TEMP TABLE IF NOT EXISTS {STAGING} ({ORDINAL} bigserial, {})",
        columns.join(", ")
    );
    target
        .batch_execute(&ddl)
        .await
        .map_err(|e| PgError::from_driver("create staging table", &e))
}

/// Copies the source rows of a batch into the target, inside `tx`,
/// isolating rows the target rejects.
pub async fn copy_range(
    source: &Client,
    tx: &Transaction<'_>,
    spec: &CopySpec,
    rows: Rows<'_>,
) -> Result<RangeCopy, PgError> {
    // The batch is kept as it streams by (one batch is small), because a
    // batch the target refuses is written a second time, through staging.
    let mut chunks: Vec<Bytes> = Vec::new();

    // Fast path: straight into the target, all or nothing, while it is read
    // from the source (both servers work at once). It fails over to the
    // staging path when any row is refused (a key that exists for upsert, a
    // constraint), which then sorts it out.
    if spec.direct {
        if let Some(done) = copy_direct(source, tx, spec, &rows, &mut chunks).await? {
            return Ok(done);
        }
    } else {
        let out = source
            .copy_out(&spec.copy_out_sql(&rows)?)
            .await
            .map_err(|e| PgError::from_driver("read source range", &e))?;
        pin_mut!(out);
        while let Some(chunk) = out.next().await {
            chunks.push(chunk.map_err(|e| PgError::from_driver("read source range", &e))?);
        }
    }

    tx.batch_execute(&format!("TRUNCATE {STAGING} RESTART IDENTITY"))
        .await
        .map_err(|e| PgError::from_driver("empty staging table", &e))?;
    let staging = format!(
        "COPY {STAGING} ({}) FROM STDIN (FORMAT binary)",
        column_list(&spec.columns)
    );
    let read = copy_in(tx, &staging, &chunks).await?;

    let sql = spec.write_sql();
    let len = usize::try_from(read).unwrap_or(usize::MAX);
    // Ordinals are 1-based; slice i..j of the batch is ordinals i+1..j+1.
    let rejected = isolate(len, |slice: Range<usize>| write_slice(tx, &sql, slice)).await?;

    let mut failed = Vec::with_capacity(rejected.len());
    for (index, error) in rejected {
        let ordinal = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let row = tx
            .query_one(
                &format!(
                    "SELECT {}::text FROM {STAGING} WHERE {ORDINAL} = $1",
                    quote_ident(&spec.key_column)
                ),
                &[&ordinal],
            )
            .await
            .map_err(|e| PgError::from_driver("read rejected key", &e))?;
        failed.push(FailedRecord {
            key: row.get::<_, Option<String>>(0).unwrap_or_default(),
            error,
        });
    }
    Ok(RangeCopy {
        read,
        written: read - failed.len() as u64,
        failed,
    })
}

/// The fast path: the batch streamed from the source straight into the
/// target, in a savepoint. Every chunk read is also kept in `chunks`.
/// `None` when the target refused a row (rolled back; use staging).
async fn copy_direct(
    source: &Client,
    tx: &Transaction<'_>,
    spec: &CopySpec,
    rows: &Rows<'_>,
    chunks: &mut Vec<Bytes>,
) -> Result<Option<RangeCopy>, PgError> {
    tx.batch_execute("SAVEPOINT freight_direct")
        .await
        .map_err(|e| PgError::from_driver("savepoint", &e))?;
    match stream_into_target(source, tx, spec, rows, chunks).await? {
        Ok(read) => {
            tx.batch_execute("RELEASE SAVEPOINT freight_direct")
                .await
                .map_err(|e| PgError::from_driver("release savepoint", &e))?;
            Ok(Some(RangeCopy {
                read,
                written: read,
                failed: Vec::new(),
            }))
        }
        Err(refused) => {
            tracing::debug!(error = %refused, "the target refused the batch; writing it through staging");
            tx.batch_execute("ROLLBACK TO SAVEPOINT freight_direct")
                .await
                .map_err(|e| PgError::from_driver("rollback savepoint", &e))?;
            Ok(None)
        }
    }
}

/// Pipes the batch's `COPY ... TO STDOUT` into `COPY target FROM STDIN`.
/// The outer error is fatal; the inner one is the target refusing data (the
/// rest of the source is still read into `chunks`).
async fn stream_into_target(
    source: &Client,
    tx: &Transaction<'_>,
    spec: &CopySpec,
    rows: &Rows<'_>,
    chunks: &mut Vec<Bytes>,
) -> Result<Result<u64, PgError>, PgError> {
    let out = source
        .copy_out(&spec.copy_out_sql(rows)?)
        .await
        .map_err(|e| PgError::from_driver("read source range", &e))?;
    pin_mut!(out);
    let direct = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        qualified(&spec.target),
        column_list(&spec.columns)
    );
    let sink = tx
        .copy_in(&direct)
        .await
        .map_err(|e| PgError::from_driver("start copy into the target", &e))?;
    pin_mut!(sink);
    let mut refused: Option<PgError> = None;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| PgError::from_driver("read source range", &e))?;
        if refused.is_none()
            && let Err(e) = sink.feed(chunk.clone()).await
        {
            refused = Some(PgError::from_driver("copy into the target", &e));
        }
        chunks.push(chunk);
    }
    let result = match refused {
        Some(e) => Err(e),
        None => sink
            .finish()
            .await
            .map_err(|e| PgError::from_driver("finish copy into the target", &e)),
    };
    match result {
        Ok(read) => Ok(Ok(read)),
        Err(e) if e.kind == PgErrorKind::Rejected => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Streams buffered COPY data into `sql` (a `COPY ... FROM STDIN`); returns the row count.
async fn copy_in(tx: &Transaction<'_>, sql: &str, chunks: &[Bytes]) -> Result<u64, PgError> {
    let sink = tx
        .copy_in(sql)
        .await
        .map_err(|e| PgError::from_driver("start copy into the target", &e))?;
    pin_mut!(sink);
    for chunk in chunks {
        sink.feed(chunk.clone())
            .await
            .map_err(|e| PgError::from_driver("copy into the target", &e))?;
    }
    sink.finish()
        .await
        .map_err(|e| PgError::from_driver("copy into the target", &e))
}

/// Writes one slice in a savepoint: `Ok(Ok(()))` written, `Ok(Err(msg))`
/// rejected by the target (rolled back), `Err` anything else.
async fn write_slice(
    tx: &Transaction<'_>,
    sql: &str,
    slice: Range<usize>,
) -> Result<Result<(), String>, PgError> {
    let from = i64::try_from(slice.start + 1).unwrap_or(i64::MAX);
    let to = i64::try_from(slice.end + 1).unwrap_or(i64::MAX);
    tx.batch_execute("SAVEPOINT freight_slice")
        .await
        .map_err(|e| PgError::from_driver("savepoint", &e))?;
    match tx.execute(sql, &[&from, &to]).await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT freight_slice")
                .await
                .map_err(|e| PgError::from_driver("release savepoint", &e))?;
            Ok(Ok(()))
        }
        Err(e) => {
            let error = PgError::from_driver("write target", &e);
            if error.kind != PgErrorKind::Rejected {
                return Err(error);
            }
            tx.batch_execute("ROLLBACK TO SAVEPOINT freight_slice")
                .await
                .map_err(|e| PgError::from_driver("rollback savepoint", &e))?;
            Ok(Err(error.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: WriteMode) -> CopySpec {
        CopySpec {
            source: TableRef {
                schema: "public".into(),
                table: "Con\"tacts".into(),
            },
            target: TableRef {
                schema: "crm".into(),
                table: "contacts".into(),
            },
            key_column: "id".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_sql: "bigint".into(),
                },
                Column {
                    name: "name".into(),
                    type_sql: "text".into(),
                },
            ],
            mode,
            direct: false,
        }
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal(r"it's a \ test"), r"E'it''s a \\ test'");
    }

    #[test]
    fn copy_out_bounds_are_half_open_and_typed() {
        let s = spec(WriteMode::Upsert);
        assert_eq!(
            s.copy_out_sql(&Rows::Range {
                lower: Some("-5"),
                upper: Some("10")
            })
            .unwrap(),
            r#"COPY (SELECT "id", "name" FROM "public"."Con""tacts" WHERE "id" >= E'-5'::bigint AND "id" < E'10'::bigint) TO STDOUT (FORMAT binary)"#
        );
        assert!(
            !s.copy_out_sql(&Rows::Range {
                lower: None,
                upper: None
            })
            .unwrap()
            .contains("WHERE")
        );
        let keys = vec!["7".to_owned(), "o'k".to_owned()];
        assert!(
            s.copy_out_sql(&Rows::Keys(&keys))
                .unwrap()
                .contains(r#""id" IN (E'7'::bigint, E'o''k'::bigint)"#)
        );
        assert!(
            s.copy_out_sql(&Rows::Keys(&[]))
                .unwrap()
                .contains("WHERE false")
        );
    }

    #[test]
    fn upsert_updates_every_non_key_column() {
        assert!(
            spec(WriteMode::Upsert)
                .write_sql()
                .ends_with(r#"ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name""#)
        );
        assert!(!spec(WriteMode::Insert).write_sql().contains("ON CONFLICT"));
    }
}
