//! The data plane without Kubernetes: a real PostgreSQL, the ledger, the
//! coordinator on a loopback port and several worker loops migrating a table.

#[path = "common/dataplane.rs"]
mod dataplane;
#[path = "common/pg.rs"]
mod pg;

use freight::{
    api::WriteMode,
    postgres::{connect, ledger},
    worker::batches::BatchMetrics,
};
use pg::TempPostgres;

const JOB: &str = "1f0e7c1a-0000-4000-8000-00000000000a";
const TABLE: &str = "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, age int, note jsonb, seen timestamptz)";
const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM contacts t";

/// Migrates with job `JOB`, upsert; returns the workers' metrics.
async fn migrate(pg: &TempPostgres, workers: usize, batch: u64) -> Vec<BatchMetrics> {
    dataplane::migrate(pg, JOB, workers, batch, WriteMode::Upsert)
        .await
        .metrics
}

/// 3000 source rows (ages 0-99) and a target that refuses ages under 18,
/// migrated once: 540 records fail.
async fn migrate_with_adult_check(pg: &TempPostgres) -> Vec<BatchMetrics> {
    seed(pg, 3_000);
    pg.psql(
        "target",
        &format!("{TABLE}; ALTER TABLE contacts ADD CONSTRAINT adult CHECK (age >= 18)"),
    );
    migrate(pg, 2, 250).await
}

fn seed(pg: &TempPostgres, rows: i64) {
    pg.psql("source", TABLE);
    pg.psql(
        "source",
        &format!(
            "INSERT INTO contacts SELECT g, 'user' || g || '@example.com', g % 100,
                    jsonb_build_object('g', g), TIMESTAMPTZ '2020-01-01' + g * INTERVAL '1 second'
               FROM generate_series(1, {rows}) g"
        ),
    );
}

#[tokio::test]
async fn workers_migrate_a_table_exactly() {
    let pg = TempPostgres::start();
    seed(&pg, 20_000);
    pg.psql("target", TABLE);
    let metrics = migrate(&pg, 3, 500).await;
    assert_eq!(pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
    let processed: u64 = metrics.iter().map(|m| m.processed.get()).sum();
    let batches: u64 = metrics.iter().map(|m| m.batches.get()).sum();
    assert_eq!((processed, batches), (20_000, 40));
    assert!(
        metrics.iter().filter(|m| m.batches.get() > 0).count() >= 2,
        "the work was shared"
    );
    let target = connect(&pg.url("target")).await.unwrap();
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!(
        (c.done, c.processed_records, c.failed_records),
        (40, 20_000, 0)
    );
}

#[tokio::test]
async fn rejected_records_are_kept_with_key_and_error() {
    let pg = TempPostgres::start();
    let metrics = migrate_with_adult_check(&pg).await;
    let failed: u64 = metrics.iter().map(|m| m.failed.get()).sum();
    assert_eq!(failed, 540, "ages 0-17 of every hundred rows");
    assert_eq!(pg.psql("target", "SELECT count(*) FROM contacts"), "2460");
    assert_eq!(
        pg.psql(
            "target",
            "SELECT count(*) FROM freight.failed_records WHERE error LIKE '%adult%'"
        ),
        "540"
    );
    let keys_match = pg.psql(
        "target",
        "SELECT bool_and(record_key::bigint % 100 < 18) FROM freight.failed_records",
    );
    assert_eq!(
        keys_match, "t",
        "each failed record is kept under its own key"
    );
}

#[tokio::test]
async fn retry_failed_reruns_exactly_the_failed_records() {
    let pg = TempPostgres::start();
    migrate_with_adult_check(&pg).await;

    // The user fixes the target, then bumps spec.retryFailed to 1.
    pg.psql("target", "ALTER TABLE contacts DROP CONSTRAINT adult");
    let mut target = connect(&pg.url("target")).await.unwrap();
    assert_eq!(
        ledger::retry_failed(&mut target, JOB, 1, 250)
            .await
            .unwrap(),
        540
    );
    assert_eq!(
        ledger::retry_failed(&mut target, JOB, 1, 250)
            .await
            .unwrap(),
        0,
        "a round is scheduled once"
    );

    let metrics = migrate(&pg, 2, 250).await;
    let processed: u64 = metrics.iter().map(|m| m.processed.get()).sum();
    assert_eq!(processed, 540, "only the failed records ran again");
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.processed_records, c.failed_records), (3000, 0));
    assert_eq!(pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
}

#[tokio::test]
async fn a_partial_fix_leaves_exactly_the_still_failing_records() {
    let pg = TempPostgres::start();
    migrate_with_adult_check(&pg).await;

    pg.psql("target", "ALTER TABLE contacts DROP CONSTRAINT adult; ALTER TABLE contacts ADD CONSTRAINT teen CHECK (age >= 10)");
    let mut target = connect(&pg.url("target")).await.unwrap();
    assert_eq!(
        ledger::retry_failed(&mut target, JOB, 1, 100)
            .await
            .unwrap(),
        540
    );
    migrate(&pg, 2, 250).await;
    let c = ledger::counts(&target, JOB).await.unwrap();
    // Ages 0-9 of each hundred still fail; 10-17 landed.
    assert_eq!((c.processed_records, c.failed_records), (2_700, 300));
    assert_eq!(
        c.processed_records + c.failed_records,
        3_000,
        "processed + failed = total"
    );
    assert_eq!(
        pg.psql(
            "target",
            "SELECT count(*) FROM freight.failed_records WHERE error LIKE '%teen%'"
        ),
        "300",
        "the stored errors are the new ones"
    );
}
