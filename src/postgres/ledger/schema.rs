//! The ledger's tables, and removing a job from them.

use tokio_postgres::Client;

use crate::postgres::error::PgError;

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
