//! What status shows, read from the ledger: the plan's totals, batch and
//! record counters, recent failures and the most attempted batch; and the
//! figures of each worker revision, from the attempt history.

use tokio_postgres::Client;

use crate::{
    domain::plan::PlanTotals,
    postgres::{copy::FailedRecord, error::PgError},
};

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
    /// Times it was leased, not counting leases handed back unstarted
    /// ([`release`](super::release)).
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
            "SELECT b.batch_id, b.attempts - coalesce(h.abandoned, 0) AS tries,
                    b.lower_key, b.upper_key
               FROM freight.batches b
               LEFT JOIN (SELECT batch_id, count(*)::int AS abandoned FROM freight.attempts
                           WHERE job_uid = $1::text::uuid AND outcome = 'abandoned'
                           GROUP BY batch_id) h USING (batch_id)
              WHERE b.job_uid = $1::text::uuid AND b.state <> 'done'
              ORDER BY tries DESC, b.batch_id LIMIT 1",
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

/// What the attempts of one worker revision did, from `freight.attempts`.
/// Rows per second of the revision: `processed_records / done_seconds`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevisionStats {
    /// The workers' revision ("" when unknown).
    pub revision: String,
    /// Leases handed out.
    pub attempts: i64,
    /// Attempts that recorded their batch.
    pub done: i64,
    /// Attempts that did not: taken over after their lease expired (or
    /// expired and not taken over yet), or handed back.
    pub failed: i64,
    /// Records written by the done attempts.
    pub processed_records: i64,
    /// Records the target rejected in the done attempts.
    pub failed_records: i64,
    /// Seconds from lease to record, summed over the done attempts.
    pub done_seconds: f64,
}

/// Per-revision figures of a job's attempts leased in the last
/// `window_seconds` (None: all of them), ordered by revision. One aggregate
/// query.
pub async fn revision_stats(
    client: &Client,
    job_uid: &str,
    window_seconds: Option<f64>,
) -> Result<Vec<RevisionStats>, PgError> {
    // An attempt still open whose batch is leased under it with an expired
    // lease has failed too; it is only closed when the batch is taken over.
    let rows = client
        .query(
            "SELECT a.revision,
                    count(*),
                    count(*) FILTER (WHERE a.outcome = 'done'),
                    count(*) FILTER (WHERE a.outcome IN ('expired', 'abandoned')
                                        OR (a.outcome IS NULL AND b.lease_expires < now())),
                    coalesce(sum(a.processed_records) FILTER (WHERE a.outcome = 'done'), 0)::bigint,
                    coalesce(sum(a.failed_records) FILTER (WHERE a.outcome = 'done'), 0)::bigint,
                    coalesce(extract(epoch FROM sum(a.ended_at - a.leased_at)
                                                FILTER (WHERE a.outcome = 'done')), 0)::float8
               FROM freight.attempts a
               LEFT JOIN freight.batches b
                 ON (b.job_uid, b.batch_id, b.attempts) = (a.job_uid, a.batch_id, a.attempt)
                AND b.state = 'leased'
              WHERE a.job_uid = $1::text::uuid
                AND ($2::float8 IS NULL OR a.leased_at > now() - make_interval(secs => $2))
              GROUP BY a.revision
              ORDER BY a.revision",
            &[&job_uid, &window_seconds],
        )
        .await
        .map_err(|e| PgError::from_driver("read attempts", &e))?;
    Ok(rows
        .iter()
        .map(|r| RevisionStats {
            revision: r.get(0),
            attempts: r.get(1),
            done: r.get(2),
            failed: r.get(3),
            processed_records: r.get(4),
            failed_records: r.get(5),
            done_seconds: r.get(6),
        })
        .collect())
}
