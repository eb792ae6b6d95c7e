//! The ledger against a real PostgreSQL: planning, exclusive leases, results
//! committed with their rows, and stale leases that cannot commit.

#[path = "common/pg.rs"]
mod pg;

use std::{collections::BTreeSet, time::Duration};

use freight::{
    api::WriteMode,
    postgres::{
        CopySpec, Rows, TableRef, connect, copy_range,
        ledger::{self, Lease},
        prepare_staging, table_columns,
    },
};
use pg::TempPostgres;

const JOB: &str = "1f0e7c1a-0000-4000-8000-000000000001";
const TABLE: &str = "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, age int)";
const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM contacts t";

fn contacts() -> TableRef {
    TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    }
}

/// Copying contacts to contacts (same types on both sides: direct COPY allowed).
async fn contacts_spec(source: &tokio_postgres::Client) -> CopySpec {
    CopySpec {
        direct: true,
        source: contacts(),
        target: contacts(),
        key_column: "id".into(),
        columns: table_columns(source, &contacts()).await.unwrap(),
        mode: WriteMode::Insert,
    }
}

async fn setup(rows: i64, batch: u64) -> (TempPostgres, freight::domain::plan::PlanTotals) {
    let pg = TempPostgres::start();
    pg.psql("source", TABLE);
    pg.psql(
        "source",
        &format!("INSERT INTO contacts SELECT g * 3 - 1000, 'user' || g || '@example.com', g % 100 FROM generate_series(1, {rows}) g"),
    );
    pg.psql("target", TABLE);
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    ledger::install(&target).await.unwrap();
    let totals = ledger::plan(
        &source,
        &mut target,
        JOB,
        &contacts(),
        "id",
        batch,
        &Default::default(),
    )
    .await
    .unwrap();
    (pg, totals)
}

/// One worker: lease, copy, complete in the same transaction, until no batch is left.
async fn work(pg_source: String, pg_target: String, owner: String) -> Vec<i64> {
    let source = connect(&pg_source).await.unwrap();
    let mut target = connect(&pg_target).await.unwrap();
    let spec = contacts_spec(&source).await;
    prepare_staging(&target, &spec).await.unwrap();
    let mut mine = Vec::new();
    while let Some(lease) = ledger::lease(&target, JOB, &owner, 30.0).await.unwrap() {
        let tx = target.transaction().await.unwrap();
        let copied = copy_range(
            &source,
            &tx,
            &spec,
            Rows::Range {
                lower: lease.lower.as_deref(),
                upper: lease.upper.as_deref(),
            },
        )
        .await
        .unwrap();
        assert!(
            ledger::complete(&tx, JOB, &lease, copied.written, &copied.failed)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        mine.push(lease.batch_id);
    }
    mine
}

#[tokio::test]
async fn planning_is_stored_once() {
    let (pg, totals) = setup(1000, 64).await;
    assert_eq!((totals.records, totals.batches), (1000, 16));
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    let again = ledger::plan(
        &source,
        &mut target,
        JOB,
        &contacts(),
        "id",
        10,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(again, totals, "a planned job keeps its plan");
    assert_eq!(
        pg.psql("target", "SELECT count(*) FROM freight.batches"),
        "16"
    );
    assert_eq!(
        pg.psql("target", "SELECT sum(planned_records) FROM freight.batches"),
        "1000"
    );
}

#[tokio::test]
async fn concurrent_workers_copy_every_batch_exactly_once() {
    let (pg, totals) = setup(5000, 100).await;
    let workers: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(work(
                pg.url("source"),
                pg.url("target"),
                format!("worker-{i}"),
            ))
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a batch was leased twice");
    assert_eq!(distinct.len() as u64, totals.batches);
    let target = connect(&pg.url("target")).await.unwrap();
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.pending, c.leased, c.done), (0, 0, totals.batches as i64));
    assert_eq!(c.processed_records, 5000);
    assert_eq!(pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
}

#[tokio::test]
async fn an_expired_lease_moves_on_and_its_holder_cannot_commit() {
    let (pg, _) = setup(100, 50).await;
    let source = connect(&pg.url("source")).await.unwrap();
    let mut stale_conn = connect(&pg.url("target")).await.unwrap();
    let target = connect(&pg.url("target")).await.unwrap();
    let spec = contacts_spec(&source).await;
    prepare_staging(&stale_conn, &spec).await.unwrap();

    let stale: Lease = ledger::lease(&target, JOB, "slow", 0.2)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = ledger::lease(&target, JOB, "fast", 30.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fresh.batch_id, stale.batch_id,
        "the expired batch is handed out again"
    );
    assert_eq!(fresh.attempt, 2);

    // The slow worker finishes its copy, but its lease is gone: it must not commit.
    let tx = stale_conn.transaction().await.unwrap();
    let copied = copy_range(
        &source,
        &tx,
        &spec,
        Rows::Range {
            lower: stale.lower.as_deref(),
            upper: stale.upper.as_deref(),
        },
    )
    .await
    .unwrap();
    assert!(
        !ledger::complete(&tx, JOB, &stale, copied.written, &[])
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert_eq!(pg.psql("target", "SELECT count(*) FROM contacts"), "0");

    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.pending, c.leased, c.done), (1, 1, 0));
}
