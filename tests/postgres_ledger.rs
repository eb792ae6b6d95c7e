//! The ledger against a real PostgreSQL: planning, exclusive leases, results
//! committed with their rows, and stale leases that cannot commit.

#[path = "common/contacts.rs"]
mod contacts;
#[path = "common/pg.rs"]
mod pg;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use contacts::{CHECKSUM, JOB, TABLE, contacts, contacts_spec, copy_lease, setup};
use freight::postgres::{
    Rows, connect, copy_range,
    ledger::{self, Lease},
    prepare_staging,
};
use pg::TempPostgres;

/// One worker: lease, copy, complete in the same transaction, until no batch is left.
async fn work(pg_source: String, pg_target: String, owner: String) -> Vec<i64> {
    let source = connect(&pg_source).await.unwrap();
    let mut target = connect(&pg_target).await.unwrap();
    let spec = contacts_spec(&source).await;
    prepare_staging(&target, &spec).await.unwrap();
    let mut mine = Vec::new();
    while let Some(lease) = ledger::lease(&target, JOB, &owner, 30.0, "").await.unwrap() {
        copy_lease(&source, &mut target, &spec, &lease).await;
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
async fn planning_progress_follows_the_keys_read_and_the_batches_cut() {
    let pg = TempPostgres::start();
    pg.psql("source", TABLE);
    pg.psql(
        "source",
        "INSERT INTO contacts SELECT g, 'user' || g || '@example.com', g % 100 FROM generate_series(1, 20000) g",
    );
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    ledger::install(&target).await.unwrap();
    let progress = Arc::new(ledger::PlanProgress::default());
    let done = Arc::new(AtomicBool::new(false));
    // Another task samples the figures while planning runs.
    let sampler = tokio::spawn({
        let (progress, done) = (progress.clone(), done.clone());
        async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push((
                    progress.records.load(Ordering::Relaxed),
                    progress.batches.load(Ordering::Relaxed),
                ));
                tokio::task::yield_now().await;
            }
            seen
        }
    });
    let totals = ledger::plan(&source, &mut target, JOB, &contacts(), "id", 100, &progress)
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let seen = sampler.await.unwrap();
    assert_eq!((totals.records, totals.batches), (20000, 200));
    assert_eq!(
        (
            progress.records.load(Ordering::Relaxed),
            progress.batches.load(Ordering::Relaxed)
        ),
        (20000, 200)
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
    );
    assert!(
        seen.iter().any(|&(r, b)| 0 < b && b < 200 && r < 20000),
        "progress shows while planning runs"
    );

    // Planning a planned job shows its totals at once.
    let again = ledger::PlanProgress::default();
    ledger::plan(&source, &mut target, JOB, &contacts(), "id", 100, &again)
        .await
        .unwrap();
    assert_eq!(again.batches.load(Ordering::Relaxed), 200);
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

    let stale: Lease = ledger::lease(&target, JOB, "slow", 0.2, "")
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = ledger::lease(&target, JOB, "fast", 30.0, "")
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
