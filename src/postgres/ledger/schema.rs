//! The ledger's tables: a versioned schema, upgraded in place by ordered
//! migrations, and removing a job from it.
//!
//! `freight.schema_version` holds one row per applied migration. [`install`]
//! applies the missing ones in order, all in one transaction under a
//! transaction-level advisory lock, so many jobs installing the ledger in
//! the same database at once wait for each other instead of racing on the
//! catalog (a concurrent `CREATE SCHEMA IF NOT EXISTS` fails with a duplicate
//! key otherwise). A ledger created before versioning has no version table:
//! migration 1 is exactly that schema, written with `IF NOT EXISTS`, so it
//! upgrades in place.
//!
//! | version | adds |
//! |---|---|
//! | 1 | `jobs`, `batches`, `failed_records` |
//! | 2 | `batches.lease_revision`; `attempts`: one row per lease handed out |

use tokio_postgres::{Client, error::SqlState};

use crate::postgres::error::PgError;

/// The schema version this code installs (the last migration's).
pub const SCHEMA_VERSION: i32 = 2;

/// Key of the advisory lock held while migrating: "freight" in ASCII.
const INSTALL_LOCK: i64 = 0x0066_7265_6967_6874;

/// One step of the schema, applied once per database.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// The schema's history, in order. Append only: a migration that has shipped
/// never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "jobs, batches and failed records",
        sql: "CREATE SCHEMA IF NOT EXISTS freight;
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
    },
    Migration {
        version: 2,
        description: "worker revisions and the attempt history",
        sql: "ALTER TABLE freight.batches ADD COLUMN IF NOT EXISTS lease_revision text;
             CREATE TABLE IF NOT EXISTS freight.attempts (
               job_uid uuid NOT NULL,
               batch_id bigint NOT NULL,
               attempt int NOT NULL,
               revision text NOT NULL DEFAULT '',
               worker text NOT NULL,
               leased_at timestamptz NOT NULL DEFAULT now(),
               ended_at timestamptz,
               outcome text CHECK (outcome IN ('done', 'expired', 'abandoned')),
               processed_records bigint NOT NULL DEFAULT 0,
               failed_records bigint NOT NULL DEFAULT 0,
               PRIMARY KEY (job_uid, batch_id, attempt));
             CREATE INDEX IF NOT EXISTS attempts_leased ON freight.attempts (job_uid, leased_at);
             CREATE INDEX IF NOT EXISTS attempts_abandoned ON freight.attempts (job_uid, batch_id)
               WHERE outcome = 'abandoned';",
    },
];

/// Brings the ledger schema to [`SCHEMA_VERSION`]: creates it, or applies
/// the migrations it lacks. Idempotent, and safe to run from many jobs at
/// once; a ledger that is up to date costs one query. A newer schema (from
/// a newer operator) is left as it is.
pub async fn install(client: &Client) -> Result<(), PgError> {
    if schema_version(client).await? >= SCHEMA_VERSION {
        return Ok(());
    }
    // One simple-query message is one implicit transaction: it commits
    // whole or not at all, and no other query on a shared client can land
    // inside it. The lock is held until it ends.
    client
        .batch_execute(&migration_script())
        .await
        .map_err(|e| PgError::from_driver("install ledger", &e))
}

/// The version of the ledger schema in the database: 0 when there is no
/// version table (no ledger, or one created before versioning).
pub async fn schema_version(client: &Client) -> Result<i32, PgError> {
    match client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM freight.schema_version",
            &[],
        )
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(0)
        }
        Err(e) => Err(PgError::from_driver("read ledger version", &e)),
    }
}

/// The whole upgrade as one script: take the lock, make sure the version
/// table exists, then run each migration not recorded yet (checked after
/// the lock, so a concurrent installer's work is seen and skipped).
fn migration_script() -> String {
    let mut script = format!(
        "SELECT pg_advisory_xact_lock({INSTALL_LOCK});
         CREATE SCHEMA IF NOT EXISTS freight;
         CREATE TABLE IF NOT EXISTS freight.schema_version (
           version int PRIMARY KEY,
           description text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now());\n"
    );
    for m in MIGRATIONS {
        script.push_str(&format!(
            "DO $freight_migration$ BEGIN
               IF NOT EXISTS (SELECT FROM freight.schema_version WHERE version = {version}) THEN
                 {sql}
                 INSERT INTO freight.schema_version (version, description) VALUES ({version}, '{description}');
               END IF;
             END $freight_migration$;\n",
            version = m.version,
            sql = m.sql,
            description = m.description.replace('\'', "''"),
        ));
    }
    script
}

/// Removes everything the ledger holds about a job (when it is deleted).
/// A ledger from an older operator is upgraded first, so every table is there.
pub async fn forget(client: &mut Client, job_uid: &str) -> Result<(), PgError> {
    install(client).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::from_driver("begin forget", &e))?;
    for table in ["attempts", "failed_records", "batches", "jobs"] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.description);
            assert!(!m.sql.contains("$freight_migration$"));
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
