//! Leases: handing the next open batch to one worker, recording its result
//! in the transaction that wrote its rows, or taking it back unstarted.
//!
//! Every lease handed out is an attempt, kept in `freight.attempts` with the
//! worker and its revision, and closed as `done`, `expired` (another worker
//! took the batch over) or `abandoned` (handed back): failed attempts stay
//! there, not only the batch's last state.

use tokio_postgres::{Client, Transaction};

use crate::postgres::{copy::FailedRecord, error::PgError};

/// A batch leased to one worker until its lease expires. The same type is
/// what the coordinator hands the worker (flattened into its answer).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// This is attempt number `attempt` of the batch.
    pub attempt: i32,
}

/// Leases the next open batch (pending, or leased with an expired lease) to
/// `owner`, a worker of revision `revision` ("" when unknown), for `seconds`.
/// Concurrent callers never get the same batch.
///
/// The same statement opens the attempt in `freight.attempts` and, when it
/// takes over an expired lease, closes the previous attempt as `expired`
/// (ended when its lease expired).
pub async fn lease(
    client: &Client,
    job_uid: &str,
    owner: &str,
    seconds: f64,
    revision: &str,
) -> Result<Option<Lease>, PgError> {
    let row = client
        .query_opt(
            "WITH next AS (
                    SELECT job_uid, batch_id, state, attempts, lease_expires FROM freight.batches
                     WHERE job_uid = $1::text::uuid
                       AND (state = 'pending' OR (state = 'leased' AND lease_expires < now()))
                     ORDER BY batch_id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED),
                  expired AS (
                    UPDATE freight.attempts a
                       SET outcome = 'expired', ended_at = next.lease_expires
                      FROM next
                     WHERE next.state = 'leased' AND a.outcome IS NULL
                       AND (a.job_uid, a.batch_id, a.attempt) = (next.job_uid, next.batch_id, next.attempts)),
                  leased AS (
                    UPDATE freight.batches b
                       SET state = 'leased', lease_id = gen_random_uuid(), lease_owner = $2,
                           lease_revision = $4, lease_expires = now() + make_interval(secs => $3),
                           attempts = b.attempts + 1
                      FROM next
                     WHERE (b.job_uid, b.batch_id) = (next.job_uid, next.batch_id)
                 RETURNING b.job_uid, b.batch_id, b.lease_id, b.lower_key, b.upper_key, b.attempts, b.keys),
                  opened AS (
                    INSERT INTO freight.attempts (job_uid, batch_id, attempt, revision, worker, leased_at)
                    SELECT job_uid, batch_id, attempts, $4, $2, now() FROM leased
                        ON CONFLICT (job_uid, batch_id, attempt) DO UPDATE
                       SET revision = EXCLUDED.revision, worker = EXCLUDED.worker,
                           leased_at = EXCLUDED.leased_at, ended_at = NULL, outcome = NULL,
                           processed_records = 0, failed_records = 0)
           SELECT batch_id, lease_id::text, lower_key, upper_key, attempts, keys FROM leased",
            &[&job_uid, &owner, &seconds, &revision],
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

/// Hands a lease back unstarted (a worker scaling down): the batch is
/// pending again at once instead of when the lease expires, and the attempt
/// is closed as `abandoned`; it does not count against
/// `maxAttemptsPerBatch` (see [`most_attempted`](super::most_attempted)).
/// Only the holder can: returns false if the lease is no longer held.
pub async fn release(client: &Client, job_uid: &str, lease: &Lease) -> Result<bool, PgError> {
    let released: i64 = client
        .query_one(
            "WITH released AS (
                    UPDATE freight.batches
                       SET state = 'pending', lease_id = NULL, lease_owner = NULL,
                           lease_revision = NULL, lease_expires = NULL
                     WHERE job_uid = $1::text::uuid AND batch_id = $2 AND lease_id = $3::text::uuid
                       AND state = 'leased'
                 RETURNING job_uid, batch_id, attempts),
                  closed AS (
                    UPDATE freight.attempts a
                       SET outcome = 'abandoned', ended_at = clock_timestamp()
                      FROM released r
                     WHERE (a.job_uid, a.batch_id, a.attempt) = (r.job_uid, r.batch_id, r.attempts))
           SELECT count(*) FROM released",
            &[&job_uid, &lease.batch_id, &lease.lease_id],
        )
        .await
        .map_err(|e| PgError::from_driver("release batch", &e))?
        .get(0);
    Ok(released == 1)
}

/// Records a finished batch inside the transaction that wrote its rows, and
/// closes its attempt as `done` with the same counts. Returns false — and
/// the caller must roll back — if the lease is no longer held (it expired
/// and the batch went to another worker).
pub async fn complete(
    tx: &Transaction<'_>,
    job_uid: &str,
    lease: &Lease,
    processed: u64,
    failed: &[FailedRecord],
) -> Result<bool, PgError> {
    // The batch and its attempt are closed by one statement.
    let updated: i64 = tx
        .query_one(
            "WITH done AS (
                    UPDATE freight.batches
                       SET state = 'done', processed_records = $4, failed_records = $5,
                           finished_at = clock_timestamp(), lease_expires = NULL
                     WHERE job_uid = $1::text::uuid AND batch_id = $2 AND lease_id = $3::text::uuid
                       AND state = 'leased'
                 RETURNING job_uid, batch_id, attempts, finished_at),
                  closed AS (
                    UPDATE freight.attempts a
                       SET outcome = 'done', ended_at = done.finished_at,
                           processed_records = $4, failed_records = $5
                      FROM done
                     WHERE (a.job_uid, a.batch_id, a.attempt) = (done.job_uid, done.batch_id, done.attempts))
           SELECT count(*) FROM done",
            &[
                &job_uid,
                &lease.batch_id,
                &lease.lease_id,
                &(processed as i64),
                &(failed.len() as i64),
            ],
        )
        .await
        .map_err(|e| PgError::from_driver("record batch", &e))?
        .get(0);
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
