//! The attempt history against a real PostgreSQL: every lease is an
//! attempt, closed as done, expired or abandoned (handed back), and summed
//! per worker revision.

#[path = "common/contacts.rs"]
mod contacts;
#[path = "common/pg.rs"]
mod pg;

use std::time::Duration;

use contacts::{JOB, copy_and_complete, setup};
use freight::postgres::{
    connect,
    ledger::{self, Lease},
};
use pg::TempPostgres;

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
