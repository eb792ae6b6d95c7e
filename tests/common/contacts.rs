//! The `contacts` fixture of the ledger tests: a source table planned into
//! the ledger of one job, and a worker's copy-and-record step.
//! Include next to `pg.rs` (it uses `crate::pg`).

#![allow(dead_code)]

use freight::{
    api::WriteMode,
    domain::plan::PlanTotals,
    postgres::{
        CopySpec, Rows, TableRef, connect, copy_range,
        ledger::{self, Lease},
        prepare_staging, table_columns,
    },
};

use crate::pg::TempPostgres;

/// The job.
pub const JOB: &str = "1f0e7c1a-0000-4000-8000-000000000001";
/// The table, on both sides.
pub const TABLE: &str = "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, age int)";
/// The table's content, to compare both sides.
pub const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM contacts t";

/// `public.contacts`.
pub fn contacts() -> TableRef {
    TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    }
}

/// Copying contacts to contacts (same types on both sides: direct COPY allowed).
pub async fn contacts_spec(source: &tokio_postgres::Client) -> CopySpec {
    CopySpec {
        direct: true,
        source: contacts(),
        target: contacts(),
        key_column: "id".into(),
        columns: table_columns(source, &contacts()).await.unwrap(),
        mode: WriteMode::Insert,
    }
}

/// A server whose source holds `rows` contacts (keys with gaps, some
/// negative) and whose target has the empty table and the job planned in
/// batches of `batch`.
pub async fn setup(rows: i64, batch: u64) -> (TempPostgres, PlanTotals) {
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

/// Copies the lease's range and records it, as a worker does.
pub async fn copy_and_complete(pg: &TempPostgres, lease: &Lease) {
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    let spec = contacts_spec(&source).await;
    prepare_staging(&target, &spec).await.unwrap();
    copy_lease(&source, &mut target, &spec, lease).await;
}

/// Copies the lease's range and records the result in the same target
/// transaction, on connections the caller keeps.
pub async fn copy_lease(
    source: &tokio_postgres::Client,
    target: &mut tokio_postgres::Client,
    spec: &CopySpec,
    lease: &Lease,
) {
    let tx = target.transaction().await.unwrap();
    let copied = copy_range(
        source,
        &tx,
        spec,
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
