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

pub use super::copy_sql::{qualified, quote_ident};
use super::{
    catalog::{Column, TableRef},
    copy_sql::{ORDINAL, STAGING, column_list},
    error::{PgError, PgErrorKind},
};
use crate::{api::WriteMode, domain::isolate::isolate};

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
