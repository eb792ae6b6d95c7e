//! The ledger against a real PostgreSQL: planning, exclusive leases, results
//! committed with their rows, stale leases that cannot commit, leases handed
//! back, and the attempt history per worker revision.

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
    while let Some(lease) = ledger::lease(&target, JOB, &owner, 30.0, "").await.unwrap() {
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

/// Copies the lease's range and records it, as a worker does.
async fn copy_and_complete(pg: &TempPostgres, lease: &Lease) {
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    let spec = contacts_spec(&source).await;
    prepare_staging(&target, &spec).await.unwrap();
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
        ledger::complete(&tx, JOB, lease, copied.written, &copied.failed)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

/// The attempts of a batch, as `attempt:revision:worker:outcome`.
fn attempts(pg: &TempPostgres, batch: i64) -> String {
    pg.psql(
        "target",
        &format!(
            "SELECT string_agg(attempt || ':' || revision || ':' || worker || ':' || coalesce(outcome, 'open'),
                               ',' ORDER BY attempt)
               FROM freight.attempts WHERE batch_id = {batch}"
        ),
    )
}

#[tokio::test]
async fn a_lease_handed_back_is_pending_again_and_only_its_holder_can() {
    let (pg, _) = setup(100, 10).await;
    let target = connect(&pg.url("target")).await.unwrap();
    let held = ledger::lease(&target, JOB, "w-1", 30.0, "blue")
        .await
        .unwrap()
        .unwrap();
    let forged = Lease {
        lease_id: "00000000-0000-4000-8000-000000000000".into(),
        ..held.clone()
    };
    assert!(!ledger::release(&target, JOB, &forged).await.unwrap());
    assert_eq!(attempts(&pg, 0), "1:blue:w-1:open");

    assert!(ledger::release(&target, JOB, &held).await.unwrap());
    assert!(
        !ledger::release(&target, JOB, &held).await.unwrap(),
        "released once"
    );
    assert_eq!(attempts(&pg, 0), "1:blue:w-1:abandoned");
    let c = ledger::counts(&target, JOB).await.unwrap();
    assert_eq!((c.pending, c.leased, c.done), (10, 0, 0));

    // The batch goes out again at once, as a new attempt; a handed-back
    // lease does not count against maxAttemptsPerBatch.
    let again = ledger::lease(&target, JOB, "w-2", 30.0, "green")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.batch_id, again.attempt), (0, 2));
    let most = ledger::most_attempted(&target, JOB).await.unwrap().unwrap();
    assert_eq!((most.batch_id, most.attempts), (0, 1));
    // A released lease cannot record its batch either.
    copy_and_complete(&pg, &again).await;
    let mut stale = connect(&pg.url("target")).await.unwrap();
    let tx = stale.transaction().await.unwrap();
    assert!(!ledger::complete(&tx, JOB, &held, 0, &[]).await.unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(attempts(&pg, 0), "1:blue:w-1:abandoned,2:green:w-2:done");
}

#[tokio::test]
async fn attempts_are_kept_and_summed_per_revision() {
    let (pg, _) = setup(100, 10).await;
    let mut target = connect(&pg.url("target")).await.unwrap();

    // Batch 0: blue's lease expires, green takes the batch over and records it.
    let slow = ledger::lease(&target, JOB, "blue-1", 0.2, "blue")
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken_over = ledger::lease(&target, JOB, "green-1", 30.0, "green")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (taken_over.batch_id, taken_over.attempt),
        (slow.batch_id, 2)
    );
    assert_eq!(
        attempts(&pg, 0),
        "1:blue:blue-1:expired,2:green:green-1:open"
    );
    assert_eq!(
        pg.psql(
            "target",
            "SELECT extract(epoch FROM ended_at - leased_at) FROM freight.attempts WHERE outcome = 'expired'"
        ),
        "0.200000",
        "an expired attempt ends when its lease expired"
    );
    copy_and_complete(&pg, &taken_over).await;

    // Batch 1: blue hands it back, then records it.
    let handed_back = ledger::lease(&target, JOB, "blue-1", 30.0, "blue")
        .await
        .unwrap()
        .unwrap();
    assert!(ledger::release(&target, JOB, &handed_back).await.unwrap());
    let recorded = ledger::lease(&target, JOB, "blue-1", 30.0, "blue")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.batch_id, 1);
    copy_and_complete(&pg, &recorded).await;

    // Batch 2: green's lease expires and nobody has taken it over yet.
    ledger::lease(&target, JOB, "green-2", 0.1, "green")
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stats = ledger::revision_stats(&target, JOB, None).await.unwrap();
    let figures: Vec<_> = stats
        .iter()
        .map(|s| {
            (
                s.revision.as_str(),
                s.attempts,
                s.done,
                s.failed,
                s.processed_records,
                s.failed_records,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [("blue", 3, 1, 2, 10, 0), ("green", 2, 1, 1, 10, 0)]
    );
    assert!(stats.iter().all(|s| s.done_seconds > 0.0), "{stats:?}");

    // The window counts attempts leased within it.
    pg.psql(
        "target",
        "UPDATE freight.attempts SET leased_at = leased_at - interval '1 hour',
                ended_at = ended_at - interval '1 hour'
          WHERE revision = 'blue'",
    );
    let recent = ledger::revision_stats(&target, JOB, Some(60.0))
        .await
        .unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|s| (s.revision.as_str(), s.attempts))
            .collect::<Vec<_>>(),
        [("green", 2)]
    );

    ledger::forget(&mut target, JOB).await.unwrap();
    assert_eq!(
        pg.psql("target", "SELECT count(*) FROM freight.attempts"),
        "0"
    );
    assert!(
        ledger::revision_stats(&target, JOB, None)
            .await
            .unwrap()
            .is_empty()
    );
}
