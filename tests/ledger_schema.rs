//! The ledger's schema against a real PostgreSQL: many installs at once in
//! one database, a ledger from before schema versioning upgraded in place,
//! and installing again changing nothing.

#[path = "common/pg.rs"]
mod pg;

use freight::postgres::{connect, ledger};
use pg::TempPostgres;

const JOB: &str = "1f0e7c1a-0000-4000-8000-000000000001";

/// The ledger as the code before schema versioning created it (verbatim).
const UNVERSIONED_LEDGER: &str = "CREATE SCHEMA IF NOT EXISTS freight;
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
       PRIMARY KEY (job_uid, record_key));";

/// A job planned by that code: batch 0 done (one record failed), batch 1
/// leased on a lease that has expired, batch 2 pending.
const PLANNED_JOB: &str = "
     INSERT INTO freight.jobs (job_uid, total_records, total_batches)
       VALUES ('1f0e7c1a-0000-4000-8000-000000000001', 30, 3);
     INSERT INTO freight.batches (job_uid, batch_id, lower_key, upper_key, planned_records,
                                  state, attempts, lease_id, lease_owner, lease_expires,
                                  processed_records, failed_records, finished_at)
     VALUES ('1f0e7c1a-0000-4000-8000-000000000001', 0, NULL, '11', 10,
             'done', 1, gen_random_uuid(), 'w-0', NULL, 9, 1, now()),
            ('1f0e7c1a-0000-4000-8000-000000000001', 1, '11', '21', 10,
             'leased', 1, gen_random_uuid(), 'w-1', now() - interval '1 minute', 0, 0, NULL),
            ('1f0e7c1a-0000-4000-8000-000000000001', 2, '21', NULL, 10,
             'pending', 0, NULL, NULL, NULL, 0, 0, NULL);
     INSERT INTO freight.failed_records (job_uid, record_key, batch_id, error)
       VALUES ('1f0e7c1a-0000-4000-8000-000000000001', '7', 0, 'bad email');";

/// The applied migrations and when they were applied.
fn versions(pg: &TempPostgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT string_agg(version || '@' || applied_at, ',' ORDER BY version) FROM freight.schema_version",
    )
}

#[tokio::test]
async fn many_jobs_installing_at_once_in_one_database_do_not_race() {
    let pg = TempPostgres::start();
    // A few fresh databases: without the lock, concurrent CREATE SCHEMA IF
    // NOT EXISTS / CREATE TABLE IF NOT EXISTS fail with duplicate keys in
    // the catalog (SQLSTATE 23505) in nearly every round.
    for round in 0..4 {
        let db = format!("race{round}");
        pg.psql("target", &format!("CREATE DATABASE {db}"));
        let installs: Vec<_> = (0..10)
            .map(|_| {
                let url = pg.url(&db);
                tokio::spawn(async move {
                    let client = connect(&url).await.unwrap();
                    ledger::install(&client).await
                })
            })
            .collect();
        for install in installs {
            let installed = install.await.unwrap();
            assert!(installed.is_ok(), "round {round}: {installed:?}");
        }
        let client = connect(&pg.url(&db)).await.unwrap();
        assert_eq!(
            ledger::schema_version(&client).await.unwrap(),
            ledger::SCHEMA_VERSION
        );
        assert_eq!(
            pg.psql(&db, "SELECT count(*) FROM freight.schema_version"),
            ledger::SCHEMA_VERSION.to_string(),
            "each migration ran once"
        );
    }
}

#[tokio::test]
async fn a_ledger_from_before_versioning_upgrades_in_place() {
    let pg = TempPostgres::start();
    pg.psql("target", UNVERSIONED_LEDGER);
    pg.psql("target", PLANNED_JOB);
    let target = connect(&pg.url("target")).await.unwrap();
    assert_eq!(ledger::schema_version(&target).await.unwrap(), 0);

    ledger::install(&target).await.unwrap();

    assert_eq!(
        ledger::schema_version(&target).await.unwrap(),
        ledger::SCHEMA_VERSION
    );
    let totals = ledger::planned(&target, JOB).await.unwrap().unwrap();
    assert_eq!((totals.records, totals.batches), (30, 3));
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.pending, c.leased, c.done), (1, 1, 1));
    assert_eq!((c.processed_records, c.failed_records), (9, 1));
    // What the later migrations add is there.
    assert_eq!(
        pg.psql(
            "target",
            "SELECT count(*) FROM information_schema.columns
              WHERE table_schema = 'freight' AND table_name = 'batches' AND column_name = 'lease_revision'"
        ),
        "1"
    );
    assert_eq!(
        pg.psql(
            "target",
            "SELECT to_regclass('freight.attempts') IS NOT NULL"
        ),
        "t"
    );
    // The lease that expired before the upgrade is taken over as attempt 2,
    // the first one with a history.
    let lease = ledger::lease(&target, JOB, "w-2", 30.0, "v2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lease.batch_id, lease.attempt), (1, 2));
    assert_eq!(
        pg.psql(
            "target",
            "SELECT string_agg(batch_id || ':' || attempt || ':' || revision, ',') FROM freight.attempts"
        ),
        "1:2:v2"
    );
}

#[tokio::test]
async fn installing_again_changes_nothing() {
    let pg = TempPostgres::start();
    let target = connect(&pg.url("target")).await.unwrap();
    assert_eq!(ledger::schema_version(&target).await.unwrap(), 0);
    ledger::install(&target).await.unwrap();
    pg.psql("target", PLANNED_JOB);
    let before = versions(&pg, "target");

    ledger::install(&target).await.unwrap();

    assert_eq!(versions(&pg, "target"), before);
    assert_eq!(
        ledger::schema_version(&target).await.unwrap(),
        ledger::SCHEMA_VERSION
    );
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.pending, c.leased, c.done), (1, 1, 1));
}
