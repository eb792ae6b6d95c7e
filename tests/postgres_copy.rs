//! The copy path against a real PostgreSQL: values land identical, rejected
//! rows are isolated, re-runs are idempotent, every key is copied once.

#[path = "common/pg.rs"]
mod pg;

use freight::{
    api::WriteMode,
    domain::plan::plan_all,
    postgres::{
        CopySpec, PgErrorKind, Rows, TableRef, connect, copy_range, prepare_staging, table_columns,
    },
};
use pg::TempPostgres;

const MIXED: &str = "
CREATE TABLE contacts (
  id bigint PRIMARY KEY, name text, age int, balance numeric, active bool, born date,
  seen timestamptz, doc jsonb, avatar bytea, ref uuid, scores int[], tags text[]
)";

/// 200 rows of every type, with the awkward values: unicode, empty vs NULL,
/// NaN, infinities, extreme keys.
const SEED: &str = "
INSERT INTO contacts
SELECT g * 7919 - 500000,
       CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'Zoë 🚚 ' || g ELSE 'name ' || g END,
       g % 90,
       CASE g % 7 WHEN 0 THEN 'NaN'::numeric ELSE (g * 1.25)::numeric END,
       CASE g % 3 WHEN 0 THEN NULL ELSE g % 2 = 0 END,
       DATE '2000-01-01' + g,
       CASE g % 11 WHEN 0 THEN 'infinity'::timestamptz WHEN 1 THEN '-infinity'::timestamptz
            ELSE TIMESTAMPTZ '2024-02-29 12:00:00+00' + g * INTERVAL '1 minute 1.5 seconds' END,
       jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 'two', NULL)),
       CASE g % 4 WHEN 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       md5(g::text)::uuid,
       ARRAY[g, -g, 0],
       ARRAY['a', NULL, '']
  FROM generate_series(1, 200) g;
INSERT INTO contacts (id, name) VALUES (-9223372036854775808, 'min'), (9223372036854775807, 'max');
";

const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM contacts t";

fn spec(
    columns: Vec<freight::postgres::Column>,
    target_columns: &[freight::postgres::Column],
    key: &str,
    mode: WriteMode,
) -> CopySpec {
    CopySpec {
        direct: CopySpec::same_types(&columns, target_columns),
        source: TableRef {
            schema: "public".into(),
            table: "contacts".into(),
        },
        target: TableRef {
            schema: "public".into(),
            table: "contacts".into(),
        },
        key_column: key.into(),
        columns,
        mode,
    }
}

/// Plans the source by streaming its keys in order, then copies every range,
/// one transaction per batch. Returns all failed records.
async fn migrate(
    pg: &TempPostgres,
    key: &str,
    batch: u64,
    mode: WriteMode,
) -> Vec<freight::postgres::FailedRecord> {
    let source = connect(&pg.url("source")).await.unwrap();
    let mut target = connect(&pg.url("target")).await.unwrap();
    let table = TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    let spec = spec(
        table_columns(&source, &table).await.unwrap(),
        &table_columns(&target, &table).await.unwrap(),
        key,
        mode,
    );
    prepare_staging(&target, &spec).await.unwrap();
    let keys: Vec<String> = source
        // Alias the text form: `ORDER BY key` must sort by the column, not its text.
        .query(
            &format!("SELECT {key}::text AS k FROM contacts ORDER BY contacts.{key}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (ranges, totals) = plan_all(keys, batch);
    let mut failed = Vec::new();
    let mut read = 0;
    for r in &ranges {
        let tx = target.transaction().await.unwrap();
        let copied = copy_range(
            &source,
            &tx,
            &spec,
            Rows::Range {
                lower: r.lower.as_deref(),
                upper: r.upper.as_deref(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            copied.read, r.planned_records,
            "range {:?}..{:?}",
            r.lower, r.upper
        );
        read += copied.read;
        failed.extend(copied.failed);
    }
    assert_eq!(read, totals.records, "every key read exactly once");
    failed
}

#[tokio::test]
async fn every_type_lands_identical() {
    let pg = TempPostgres::start();
    pg.psql("source", &format!("{MIXED}; {SEED}"));
    pg.psql("target", MIXED);
    let failed = migrate(&pg, "id", 7, WriteMode::Upsert).await;
    assert!(failed.is_empty(), "{failed:?}");
    let (src, dst) = (pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
    assert!(src.starts_with("202:"), "{src}");
    assert_eq!(src, dst, "source and target differ");
}

#[tokio::test]
async fn rejected_rows_are_isolated_and_the_rest_lands() {
    let pg = TempPostgres::start();
    pg.psql("source", &format!("{MIXED}; {SEED}"));
    pg.psql(
        "target",
        &format!("{MIXED}; ALTER TABLE contacts ADD CONSTRAINT adult CHECK (age >= 18)"),
    );
    let failed = migrate(&pg, "id", 16, WriteMode::Upsert).await;
    let expected_bad = pg.psql("source", "SELECT count(*) FROM contacts WHERE age < 18");
    assert_eq!(failed.len().to_string(), expected_bad);
    let landed = pg.psql("target", "SELECT count(*) FROM contacts");
    let good = pg.psql(
        "source",
        "SELECT count(*) FROM contacts WHERE age >= 18 OR age IS NULL",
    );
    assert_eq!(landed, good);
    // Each failure names its key and the constraint.
    for f in &failed {
        let age = pg.psql(
            "source",
            &format!("SELECT age FROM contacts WHERE id = {}", f.key),
        );
        assert!(age.parse::<i32>().unwrap() < 18, "{f:?}");
        assert!(f.error.contains("adult"), "{f:?}");
    }
}

#[tokio::test]
async fn upsert_reruns_are_idempotent_and_insert_reruns_fail_per_row() {
    let pg = TempPostgres::start();
    pg.psql("source", &format!("{MIXED}; {SEED}"));
    pg.psql("target", MIXED);
    assert!(migrate(&pg, "id", 50, WriteMode::Upsert).await.is_empty());
    assert!(migrate(&pg, "id", 50, WriteMode::Upsert).await.is_empty());
    assert_eq!(pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
    let failed = migrate(&pg, "id", 50, WriteMode::Insert).await;
    assert_eq!(
        failed.len(),
        202,
        "every re-inserted key is a unique violation"
    );
    assert!(failed[0].error.contains("duplicate key"), "{:?}", failed[0]);
    assert_eq!(pg.psql("source", CHECKSUM), pg.psql("target", CHECKSUM));
}

#[tokio::test]
async fn text_keys_under_a_linguistic_collation_are_copied_once() {
    let pg = TempPostgres::start();
    let table = "CREATE TABLE contacts (email text COLLATE \"und-x-icu\" PRIMARY KEY, n int)";
    pg.psql("source", table);
    pg.psql("target", table);
    pg.psql(
        "source",
        "INSERT INTO contacts SELECT v || g, g FROM generate_series(1, 60) g,
           unnest(ARRAY['a', 'B', 'é', 'E', 'z', 'Ä', ' ', '-', 'ß', 'ss', '10', '9']) v",
    );
    assert!(migrate(&pg, "email", 9, WriteMode::Insert).await.is_empty());
    let checksum = "SELECT count(*) || ':' || md5(string_agg(email || n, ',' ORDER BY email COLLATE \"C\")) FROM contacts";
    assert_eq!(pg.psql("source", checksum), pg.psql("target", checksum));
}

#[tokio::test]
async fn a_missing_table_is_a_configuration_problem() {
    let pg = TempPostgres::start();
    let source = connect(&pg.url("source")).await.unwrap();
    let err = table_columns(
        &source,
        &TableRef {
            schema: "public".into(),
            table: "nope".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, PgErrorKind::Config);
    assert!(err.to_string().contains("public.nope"), "{err}");
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let err = connect("postgres://freight:hunter2@127.0.0.1:1/db?sslmode=disable")
        .await
        .unwrap_err();
    assert_eq!(err.kind, PgErrorKind::Transient);
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// A target whose column types differ (int -> bigint, bigint -> double
/// precision) takes the staging path, where PostgreSQL casts each value:
/// binary data is never reinterpreted.
#[tokio::test]
async fn differing_column_types_are_cast_not_reinterpreted() {
    let pg = TempPostgres::start();
    pg.psql(
        "source",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, age int, big bigint)",
    );
    pg.psql(
        "target",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, age bigint, big double precision)",
    );
    pg.psql(
        "source",
        "INSERT INTO contacts SELECT g, g % 90, g * 1000003 FROM generate_series(1, 500) g",
    );
    let source = connect(&pg.url("source")).await.unwrap();
    let target = connect(&pg.url("target")).await.unwrap();
    let table = TableRef {
        schema: "public".into(),
        table: "contacts".into(),
    };
    let (src_cols, dst_cols) = (
        table_columns(&source, &table).await.unwrap(),
        table_columns(&target, &table).await.unwrap(),
    );
    assert!(!CopySpec::same_types(&src_cols, &dst_cols));
    assert!(migrate(&pg, "id", 64, WriteMode::Upsert).await.is_empty());
    let sum =
        "SELECT count(*) || ':' || sum(age)::text || ':' || sum(big)::bigint::text FROM contacts";
    assert_eq!(pg.psql("source", sum), pg.psql("target", sum));
}
