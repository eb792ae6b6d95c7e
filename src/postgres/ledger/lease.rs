//! Leases: handing the next open batch to one worker, and recording its
//! result in the transaction that wrote its rows.

use tokio_postgres::{Client, Transaction};

use crate::postgres::{copy::FailedRecord, error::PgError};

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
