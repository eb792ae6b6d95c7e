//! The durable ledger of a job, kept in the target database (schema
//! `freight`): the plan (one row per key range), leases, per-batch results
//! and failed records.
//!
//! A batch's result is recorded in the same transaction that writes its rows
//! ([`complete`] takes the copy's transaction), and only by the holder of its
//! current lease. So a batch's rows and its "done" mark commit together or not
//! at all: a crash anywhere loses no finished batch and counts none twice, and
//! a worker whose lease expired cannot commit over the batch's new holder.

use futures::{StreamExt, pin_mut};
use tokio_postgres::{Client, Transaction};

use super::{
    catalog::TableRef,
    copy::{FailedRecord, qualified, quote_ident},
    error::PgError,
};
use crate::domain::plan::{KeyRange, PlanTotals, Planner};

/// Creates the ledger schema if it is not there (idempotent).
pub async fn install(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS freight;
             CREATE TABLE IF NOT EXISTS freight.jobs (
               job_uid uuid PRIMARY KEY,
               total_records bigint NOT NULL,
               total_batches bigint NOT NULL,
               retry_round bigint NOT NULL DEFAULT 0,
               planned_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS freight.batches (
               job_uid uuid NOT NULL,
               batch_id bigint NOT NULL,
               lower_key text,
               upper_key text,
               planned_records bigint NOT NULL,
               keys text[],
               state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
               attempts int NOT NULL DEFAULT 0,
               lease_id uuid,
               lease_owner text,
               lease_expires timestamptz,
               processed_records bigint NOT NULL DEFAULT 0,
               failed_records bigint NOT NULL DEFAULT 0,
               finished_at timestamptz,
               PRIMARY KEY (job_uid, batch_id));
             CREATE INDEX IF NOT EXISTS batches_open ON freight.batches (job_uid, batch_id)
               WHERE state <> 'done';
             CREATE TABLE IF NOT EXISTS freight.failed_records (
               job_uid uuid NOT NULL,
               record_key text NOT NULL,
               batch_id bigint NOT NULL,
               error text NOT NULL,
               recorded_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (job_uid, record_key));",
        )
        .await
        .map_err(|e| PgError::from_driver("install ledger", &e))
}

/// How far a running [`plan`] got: keys read and batches cut so far.
#[derive(Debug, Default)]
pub struct PlanProgress {
    /// Keys read from the source so far.
    pub records: std::sync::atomic::AtomicU64,
    /// Batches cut so far.
    pub batches: std::sync::atomic::AtomicU64,
}

/// Plans the job if it is not planned yet: streams the source's keys in key
/// order (memory does not grow with the table) and stores the ranges, all in
/// one target transaction. Planning again returns the stored totals.
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
        return Ok(totals);
    }
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
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| PgError::from_driver("read source keys", &e))?;
        let key: Option<String> = row.get(0);
        let key = key.ok_or_else(|| {
            PgError::config(
                "plan",
                format!("key column {key_column} holds NULL; a key must be NOT NULL"),
            )
        })?;
        progress
            .records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(range) = planner.observe(key) {
            store(&tx, &insert, job_uid, batch_id, &range).await?;
            batch_id += 1;
            progress
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// The stored plan totals, if the job is planned.
pub async fn planned(client: &Client, job_uid: &str) -> Result<Option<PlanTotals>, PgError> {
    let row = client
        .query_opt(
            "SELECT total_records, total_batches FROM freight.jobs WHERE job_uid = $1::text::uuid",
            &[&job_uid],
        )
        .await
        .map_err(|e| PgError::from_driver("read plan", &e))?;
    Ok(row.map(|r| PlanTotals {
        records: r.get::<_, i64>(0) as u64,
        batches: r.get::<_, i64>(1) as u64,
    }))
}

/// A batch leased to one worker until its lease expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The batch.
    pub batch_id: i64,
    /// Proof of holding the lease; required to record the result.
    pub lease_id: String,
    /// Inclusive lower key bound (None: unbounded).
    pub lower: Option<String>,
    /// Exclusive upper key bound (None: unbounded).
    pub upper: Option<String>,
    /// For a retry batch: exactly these keys (the bounds are then unused).
    pub keys: Option<Vec<String>>,
    /// This is attempt number `attempt` of the batch.
    pub attempt: i32,
}

/// Leases the next open batch (pending, or leased with an expired lease) to
/// `owner` for `seconds`. Concurrent callers never get the same batch.
pub async fn lease(
    client: &Client,
    job_uid: &str,
    owner: &str,
    seconds: f64,
) -> Result<Option<Lease>, PgError> {
    let row = client
        .query_opt(
            "UPDATE freight.batches b
                SET state = 'leased', lease_id = gen_random_uuid(), lease_owner = $2,
                    lease_expires = now() + make_interval(secs => $3), attempts = b.attempts + 1
              WHERE (b.job_uid, b.batch_id) = (
                    SELECT job_uid, batch_id FROM freight.batches
                     WHERE job_uid = $1::text::uuid
                       AND (state = 'pending' OR (state = 'leased' AND lease_expires < now()))
                     ORDER BY batch_id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
          RETURNING b.batch_id, b.lease_id::text, b.lower_key, b.upper_key, b.attempts, b.keys",
            &[&job_uid, &owner, &seconds],
        )
        .await
        .map_err(|e| PgError::from_driver("lease batch", &e))?;
    Ok(row.map(|r| Lease {
        batch_id: r.get(0),
        lease_id: r.get(1),
        lower: r.get(2),
        upper: r.get(3),
        attempt: r.get(4),
        keys: r.get(5),
    }))
}

/// Records a finished batch inside the transaction that wrote its rows.
/// Returns false — and the caller must roll back — if the lease is no longer
/// held (it expired and the batch went to another worker).
pub async fn complete(
    tx: &Transaction<'_>,
    job_uid: &str,
    lease: &Lease,
    processed: u64,
    failed: &[FailedRecord],
) -> Result<bool, PgError> {
    let updated = tx
        .execute(
            "UPDATE freight.batches
                SET state = 'done', processed_records = $4, failed_records = $5,
                    finished_at = clock_timestamp(), lease_expires = NULL
              WHERE job_uid = $1::text::uuid AND batch_id = $2 AND lease_id = $3::text::uuid
                AND state = 'leased'",
            &[
                &job_uid,
                &lease.batch_id,
                &lease.lease_id,
                &(processed as i64),
                &(failed.len() as i64),
            ],
        )
        .await
        .map_err(|e| PgError::from_driver("record batch", &e))?;
    if updated != 1 {
        return Ok(false);
    }
    if let Some(keys) = &lease.keys {
        // The retried keys start clean; those that failed again are re-added below.
        tx.execute(
            "DELETE FROM freight.failed_records WHERE job_uid = $1::text::uuid AND record_key = ANY($2)",
            &[&job_uid, keys],
        )
        .await
        .map_err(|e| PgError::from_driver("clear retried records", &e))?;
    }
    for f in failed {
        tx.execute(
            "INSERT INTO freight.failed_records (job_uid, record_key, batch_id, error)
             VALUES ($1::text::uuid, $2, $3, $4)
             ON CONFLICT (job_uid, record_key) DO UPDATE
               SET batch_id = EXCLUDED.batch_id, error = EXCLUDED.error, recorded_at = now()",
            &[&job_uid, &f.key, &lease.batch_id, &f.error],
        )
        .await
        .map_err(|e| PgError::from_driver("record failed record", &e))?;
    }
    Ok(true)
}

/// Batch and record counters of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LedgerCounts {
    /// Batches not leased yet.
    pub pending: i64,
    /// Batches leased (including expired leases not yet taken over).
    pub leased: i64,
    /// Batches finished.
    pub done: i64,
    /// Finished batches that hold records still failed (a retry that lands
    /// them clears the batch).
    pub done_with_failures: i64,
    /// Records written.
    pub processed_records: i64,
    /// Records rejected and not (yet) written by a retry.
    pub failed_records: i64,
    /// Records written by batches that finished in the last
    /// [`RECENT_WINDOW_SECONDS`].
    pub recent_records: i64,
    /// Seconds from the plan to the last finished batch (0 before the first).
    pub elapsed_seconds: f64,
}

/// The window of [`LedgerCounts::recent_records`], in seconds.
pub const RECENT_WINDOW_SECONDS: i64 = 10;

/// Reads the counters (one aggregate query).
pub async fn counts(client: &Client, job_uid: &str) -> Result<LedgerCounts, PgError> {
    let r = client
        .query_one(
            "SELECT count(*) FILTER (WHERE b.state = 'pending'),
                    count(*) FILTER (WHERE b.state = 'leased'),
                    count(*) FILTER (WHERE b.state = 'done'),
                    (SELECT count(DISTINCT f.batch_id) FROM freight.failed_records f
                      WHERE f.job_uid = $1::text::uuid),
                    coalesce(sum(b.processed_records), 0)::bigint,
                    (SELECT count(*) FROM freight.failed_records f WHERE f.job_uid = $1::text::uuid),
                    coalesce(sum(b.processed_records)
                             FILTER (WHERE b.finished_at > now() - make_interval(secs => $2)), 0)::bigint,
                    coalesce(extract(epoch FROM max(b.finished_at) - min(j.planned_at)), 0)::float8
               FROM freight.batches b JOIN freight.jobs j USING (job_uid)
              WHERE b.job_uid = $1::text::uuid",
            &[&job_uid, &(RECENT_WINDOW_SECONDS as f64)],
        )
        .await
        .map_err(|e| PgError::from_driver("count batches", &e))?;
    Ok(LedgerCounts {
        pending: r.get(0),
        leased: r.get(1),
        done: r.get(2),
        done_with_failures: r.get(3),
        processed_records: r.get(4),
        failed_records: r.get(5),
        recent_records: r.get(6),
        elapsed_seconds: r.get(7),
    })
}

/// The `limit` most recently recorded failed records (key, error), newest first.
pub async fn recent_failures(
    client: &Client,
    job_uid: &str,
    limit: i64,
) -> Result<Vec<FailedRecord>, PgError> {
    let rows = client
        .query(
            "SELECT record_key, error FROM freight.failed_records
              WHERE job_uid = $1::text::uuid
              ORDER BY recorded_at DESC, record_key
              LIMIT $2",
            &[&job_uid, &limit],
        )
        .await
        .map_err(|e| PgError::from_driver("read failed records", &e))?;
    Ok(rows
        .iter()
        .map(|r| FailedRecord {
            key: r.get(0),
            error: r.get(1),
        })
        .collect())
}

/// The unfinished batch handed out most often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MostAttempted {
    /// The batch.
    pub batch_id: i64,
    /// Times it was leased.
    pub attempts: i32,
    /// Its inclusive lower key bound (None: unbounded, or a retry batch).
    pub lower: Option<String>,
    /// Its exclusive upper key bound.
    pub upper: Option<String>,
}

/// The unfinished batch that was leased most often, if any is unfinished.
pub async fn most_attempted(
    client: &Client,
    job_uid: &str,
) -> Result<Option<MostAttempted>, PgError> {
    let row = client
        .query_opt(
            "SELECT batch_id, attempts, lower_key, upper_key FROM freight.batches
              WHERE job_uid = $1::text::uuid AND state <> 'done'
              ORDER BY attempts DESC, batch_id LIMIT 1",
            &[&job_uid],
        )
        .await
        .map_err(|e| PgError::from_driver("read batch attempts", &e))?;
    Ok(row.map(|r| MostAttempted {
        batch_id: r.get(0),
        attempts: r.get(1),
        lower: r.get(2),
        upper: r.get(3),
    }))
}

/// The retry round the ledger has scheduled last (`spec.retryFailed`).
pub async fn retry_round(client: &Client, job_uid: &str) -> Result<i64, PgError> {
    client
        .query_opt(
            "SELECT retry_round FROM freight.jobs WHERE job_uid = $1::text::uuid",
            &[&job_uid],
        )
        .await
        .map(|r| r.map_or(0, |r| r.get(0)))
        .map_err(|e| PgError::from_driver("read retry round", &e))
}

/// Removes everything the ledger holds about a job (when it is deleted).
pub async fn forget(client: &mut Client, job_uid: &str) -> Result<(), PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::from_driver("begin forget", &e))?;
    for table in ["failed_records", "batches", "jobs"] {
        tx.execute(
            &format!("DELETE FROM freight.{table} WHERE job_uid = $1::text::uuid"),
            &[&job_uid],
        )
        .await
        .map_err(|e| PgError::from_driver("forget job", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| PgError::from_driver("commit forget", &e))
}

/// Schedules a retry of the job's failed records for retry round `round`
/// (`spec.retryFailed`): their keys become new batches of up to `batch_size`
/// keys. Idempotent per round; returns the number of keys scheduled.
pub async fn retry_failed(
    target: &mut Client,
    job_uid: &str,
    round: i64,
    batch_size: u64,
) -> Result<u64, PgError> {
    let tx = target
        .transaction()
        .await
        .map_err(|e| PgError::from_driver("begin retry", &e))?;
    let advanced = tx
        .execute(
            "UPDATE freight.jobs SET retry_round = $2 WHERE job_uid = $1::text::uuid AND retry_round < $2",
            &[&job_uid, &round],
        )
        .await
        .map_err(|e| PgError::from_driver("advance retry round", &e))?;
    if advanced == 0 {
        return Ok(0);
    }
    // The keys move from the failed list into retry batches: while they run
    // they count as neither processed nor failed, and those that fail again
    // come back with their new error when their batch is recorded.
    let keys: Vec<String> = tx
        .query(
            "DELETE FROM freight.failed_records WHERE job_uid = $1::text::uuid
              RETURNING record_key",
            &[&job_uid],
        )
        .await
        .map_err(|e| PgError::from_driver("read failed records", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut keys = keys;
    keys.sort();
    let next: i64 = tx
        .query_one(
            "SELECT coalesce(max(batch_id), -1) + 1 FROM freight.batches WHERE job_uid = $1::text::uuid",
            &[&job_uid],
        )
        .await
        .map_err(|e| PgError::from_driver("read batch ids", &e))?
        .get(0);
    let chunk = usize::try_from(batch_size.max(1)).unwrap_or(usize::MAX);
    for (i, keys) in keys.chunks(chunk).enumerate() {
        let batch_id = next + i64::try_from(i).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO freight.batches (job_uid, batch_id, keys, planned_records)
             VALUES ($1::text::uuid, $2, $3, $4)",
            &[&job_uid, &batch_id, &keys, &(keys.len() as i64)],
        )
        .await
        .map_err(|e| PgError::from_driver("schedule retry batch", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| PgError::from_driver("commit retry", &e))?;
    Ok(keys.len() as u64)
}
