//! Planning: the source's keys, streamed in key order, cut into ranges of
//! `batchSize` keys and stored in one target transaction, with its progress
//! readable from another task while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, pin_mut};
use tokio_postgres::{Client, Transaction};

use super::report::planned;
use crate::{
    domain::plan::{KeyRange, PlanTotals, Planner},
    postgres::{
        catalog::TableRef,
        copy::{qualified, quote_ident},
        error::PgError,
    },
};

/// How far a running [`plan`] got, updated as it streams, so another task
/// can show it while planning runs. Stored with `Ordering::Relaxed`: figures
/// to show, not to synchronise on.
#[derive(Debug, Default)]
pub struct PlanProgress {
    /// Source keys read so far.
    pub records: AtomicU64,
    /// Batches cut so far.
    pub batches: AtomicU64,
}

impl PlanProgress {
    fn set(&self, records: u64, batches: u64) {
        self.records.store(records, Ordering::Relaxed);
        self.batches.store(batches, Ordering::Relaxed);
    }
}

/// Keys read between two updates of [`PlanProgress::records`] inside a batch.
const PROGRESS_EVERY: u64 = 1024;

/// Plans the job if it is not planned yet: streams the source's keys in key
/// order (memory does not grow with the table) and stores the ranges, all in
/// one target transaction. Planning again returns the stored totals.
/// `progress` follows the keys read and batches cut (it ends at the totals).
pub async fn plan(
    source: &Client,
    target: &mut Client,
    job_uid: &str,
    table: &TableRef,
    key_column: &str,
    batch_size: u64,
    progress: &PlanProgress,
) -> Result<PlanTotals, PgError> {
    if let Some(totals) = planned(target, job_uid).await? {
        progress.set(totals.records, totals.batches);
        return Ok(totals);
    }
    progress.set(0, 0);
    let key = quote_ident(key_column);
    let source_table = qualified(table);
    // Alias the text form: ORDER BY must sort by the column (its type and
    // collation), not by the text it is printed as.
    let sql = format!(
        "SELECT {key}::text AS freight_key FROM {source_table} ORDER BY {source_table}.{key}"
    );
    let rows = source
        .query_raw(&sql, std::iter::empty::<&str>())
        .await
        .map_err(|e| PgError::from_driver("read source keys", &e))?;
    pin_mut!(rows);
    let tx = target
        .transaction()
        .await
        .map_err(|e| PgError::from_driver("begin plan", &e))?;
    let insert = tx
        .prepare(
            "INSERT INTO freight.batches (job_uid, batch_id, lower_key, upper_key, planned_records)
             VALUES ($1::text::uuid, $2, $3, $4, $5)",
        )
        .await
        .map_err(|e| PgError::from_driver("prepare plan insert", &e))?;
    let mut planner = Planner::new(batch_size);
    let mut batch_id: i64 = 0;
    let mut records: u64 = 0;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| PgError::from_driver("read source keys", &e))?;
        let key: Option<String> = row.get(0);
        let key = key.ok_or_else(|| {
            PgError::config(
                "plan",
                format!("key column {key_column} holds NULL; a key must be NOT NULL"),
            )
        })?;
        records += 1;
        if let Some(range) = planner.observe(key) {
            store(&tx, &insert, job_uid, batch_id, &range).await?;
            batch_id += 1;
            progress.set(records, batch_id.unsigned_abs());
        } else if records.is_multiple_of(PROGRESS_EVERY) {
            progress.records.store(records, Ordering::Relaxed);
        }
    }
    let (last, totals) = planner.finish();
    store(&tx, &insert, job_uid, batch_id, &last).await?;
    tx.execute(
        "INSERT INTO freight.jobs (job_uid, total_records, total_batches) VALUES ($1::text::uuid, $2, $3)",
        &[&job_uid, &(totals.records as i64), &(totals.batches as i64)],
    )
    .await
    .map_err(|e| PgError::from_driver("store plan", &e))?;
    tx.commit()
        .await
        .map_err(|e| PgError::from_driver("commit plan", &e))?;
    progress.set(totals.records, totals.batches);
    Ok(totals)
}

async fn store(
    tx: &Transaction<'_>,
    insert: &tokio_postgres::Statement,
    job_uid: &str,
    batch_id: i64,
    range: &KeyRange<String>,
) -> Result<(), PgError> {
    tx.execute(
        insert,
        &[
            &job_uid,
            &batch_id,
            &range.lower,
            &range.upper,
            &(range.planned_records as i64),
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| PgError::from_driver("store plan", &e))
}
