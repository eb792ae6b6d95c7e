//! Retrying failed records (`spec.retryFailed`): their keys become new,
//! key-list batches, once per retry round.

use tokio_postgres::Client;

use crate::postgres::error::PgError;

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
