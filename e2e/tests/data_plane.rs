//! End-to-end scenarios of the data plane: MigrationJobs copying real
//! PostgreSQL tables through the operator and its worker processes, with
//! crashes, restarts and suspensions along the way. Run by `make e2e`
//! (e2e/run.sh), one at a time; each scenario has its own namespace,
//! operator and PostgreSQL.
//!
//! "Mid-run" is read from the ledger (`freight.batches` in the target), not
//! from status (which is written every few seconds), and a scenario fails
//! rather than pass vacuously if its job ran past the point where it meant
//! to act.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use freight_e2e::{
    CONTACTS_TABLE, Operator, OperatorOptions, TempPostgres, TestNamespace, argocd_health,
    checksum, condition, create_db_secrets, create_url_secret, eventually, expect_gitops,
    free_port, get_json, insert_contacts, job, kstatus, kstatus_of_phase, kubectl_ok,
    kubectl_stdin, lease_holder, live_processes, patch_job_ok, running_processes, slow_down_writes,
    wait_no_workers, wait_phase, worker_deployments,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// Rows of the tables of the scenarios that act mid-run. Their target
/// tables also take at least [`MID_RUN_SLOW`] seconds per write (see
/// `slow_down_writes`): with 300 batches of 1000 rows and four in flight,
/// a run lasts 7.5 s or more however fast the machine, long enough to act
/// while it runs.
const MID_RUN_ROWS: u64 = 300_000;
/// Least seconds per write into the target of a mid-run scenario.
const MID_RUN_SLOW: f64 = 0.1;

/// A namespace with the chart installed, and the operator's kubeconfig.
struct Scenario {
    ns: TestNamespace,
    kubeconfig: PathBuf,
}

impl Scenario {
    fn new(prefix: &str) -> Self {
        let ns = TestNamespace::create(prefix);
        let kubeconfig = ns.operator_kubeconfig();
        Self { ns, kubeconfig }
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    fn opts<'a>(&'a self, identity: &'a str) -> OperatorOptions<'a> {
        OperatorOptions::new(&self.ns, &self.kubeconfig, identity)
    }

    async fn operator(&self, identity: &str) -> Operator {
        Operator::start(&self.opts(identity)).await
    }

    /// Applies a MigrationJob; returns its uid (the ledger's `job_uid`).
    fn apply(&self, spec: &JobSpec) -> String {
        let out = kubectl_stdin(&["-n", self.name(), "apply", "-f", "-"], &spec.manifest());
        assert!(
            out.status.success(),
            "apply {}: {}",
            spec.name,
            String::from_utf8_lossy(&out.stderr)
        );
        job(self.name(), spec.name).expect("the job just applied")["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_owned()
    }

    async fn delete(self) {
        self.ns.delete().await;
    }
}

/// The parts of a MigrationJob the scenarios vary. Source and target table
/// have the same name; the Secrets are `legacy-db` and `new-db`.
struct JobSpec {
    name: &'static str,
    table: &'static str,
    mode: &'static str,
    batch_size: u32,
    workers: u32,
    max_failed_ratio: f64,
}

impl JobSpec {
    fn new(name: &'static str, table: &'static str) -> Self {
        Self {
            name,
            table,
            mode: "upsert",
            batch_size: 1000,
            workers: 2,
            max_failed_ratio: 0.0,
        }
    }

    fn manifest(&self) -> String {
        let Self {
            name,
            table,
            mode,
            batch_size,
            workers,
            max_failed_ratio,
        } = self;
        format!(
            "apiVersion: freight.dev/v1alpha1
kind: MigrationJob
metadata:
  name: {name}
spec:
  source:
    postgres:
      connectionSecretRef: {{ name: legacy-db, key: url }}
      table: {table}
      keyColumn: id
  target:
    postgres:
      connectionSecretRef: {{ name: new-db, key: url }}
      table: {table}
      mode: {mode}
  batchSize: {batch_size}
  workers:
    min: {workers}
    max: {workers}
  failurePolicy:
    maxAttemptsPerBatch: 3
    maxFailedRecordRatio: {max_failed_ratio:?}
"
        )
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

/// Ledger progress of a job: (batches done, batches planned, records written).
/// None while the ledger or the plan is not there, or the target is down.
fn ledger_progress(target: &TempPostgres, uid: &str) -> Option<(i64, i64, i64)> {
    let row = target
        .try_psql(
            "target",
            &format!(
                "SELECT count(*) FILTER (WHERE state = 'done') || ',' || count(*) || ','
                        || coalesce(sum(processed_records), 0)
                   FROM freight.batches WHERE job_uid = '{uid}'"
            ),
        )
        .ok()?;
    let mut parts = row.split(',').map(|p| p.parse::<i64>().ok());
    let (done, total, processed) = (parts.next()??, parts.next()??, parts.next()??);
    (total > 0).then_some((done, total, processed))
}

/// Waits until at least `from` percent of the job's batches are done, and
/// fails if more than `to` percent are: the scenario wants to act mid-run.
/// Returns (done, total).
async fn wait_progress(target: &TempPostgres, uid: &str, from: i64, to: i64) -> (i64, i64) {
    let (done, total) = eventually(
        &format!("{from}% of the batches done"),
        MINUTE * 3,
        || async {
            let (done, total, _) = ledger_progress(target, uid)?;
            (done * 100 >= total * from && done > 0).then_some((done, total))
        },
    )
    .await;
    assert!(
        done * 100 <= total * to,
        "the job ran past {to}% ({done} of {total} batches) before the scenario could act; \
         make the table larger"
    );
    (done, total)
}

/// Waits until the job finished in `phase` with Complete=True, then until it
/// runs no worker (Deployment at 0 replicas, no process).
async fn wait_finished(ns: &str, name: &str, phase: &str, timeout: Duration) -> Value {
    let start = Instant::now();
    let done = eventually(&format!("{name} finished ({phase})"), timeout, || async {
        let j = job(ns, name)?;
        let phase_now = j["status"]["phase"].as_str().unwrap_or_default();
        assert!(
            phase_now != "Failed" || phase == "Failed",
            "{name} failed: {}",
            j["status"]
        );
        let complete = condition(&j, "Complete").is_some_and(|c| c["status"] == "True");
        (phase_now == phase && complete).then_some(j)
    })
    .await;
    eprintln!("{name}: {phase} after {:?}", start.elapsed());
    wait_no_workers(ns, name, MINUTE).await;
    done
}

/// Checks the final counters: processed + failed = total, every batch
/// finished, progress 100%.
fn assert_counts(job: &Value, total: i64, failed: i64) {
    let s = &job["status"];
    assert_eq!(int(&s["totalRecords"]), total, "totalRecords: {s}");
    assert_eq!(
        int(&s["processedRecords"]),
        total - failed,
        "processedRecords: {s}"
    );
    assert_eq!(int(&s["failedRecords"]), failed, "failedRecords: {s}");
    assert_eq!(s["progress"], "100%", "progress: {s}");
    let b = &s["batches"];
    assert_eq!(int(&b["pending"]), 0, "batches: {s}");
    assert_eq!(int(&b["inFlight"]), 0, "batches: {s}");
    assert_eq!(
        int(&b["succeeded"]) + int(&b["failed"]),
        int(&b["total"]),
        "batches: {s}"
    );
    assert_eq!(
        job["status"]["observedGeneration"], job["metadata"]["generation"],
        "status describes the current spec: {s}"
    );
}

/// The events of `ns`: (type, reason, message).
fn events(ns: &str) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    get_json(&["-n", ns, "get", "events", "-o", "json"])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| (text(&e["type"]), text(&e["reason"]), text(&e["message"])))
        .collect()
}

/// Waits for a Warning event with `reason` whose message contains `text`.
async fn wait_warning(ns: &str, reason: &str, text: &str) -> String {
    eventually(
        &format!("a Warning event {reason} mentioning {text:?}"),
        MINUTE,
        || async {
            events(ns)
                .into_iter()
                .find(|(type_, r, message)| {
                    type_ == "Warning" && r == reason && message.contains(text)
                })
                .map(|(_, _, message)| message)
        },
    )
    .await
}

/// Waits until the job is Pending with Ready=False for `reason`.
async fn wait_blocked(ns: &str, name: &str, reason: &str) -> Value {
    eventually(&format!("{name} Pending ({reason})"), MINUTE, || async {
        let j = job(ns, name)?;
        let ready = condition(&j, "Ready")?;
        (j["status"]["phase"] == "Pending"
            && ready["status"] == "False"
            && ready["reason"] == reason)
            .then_some(j)
    })
    .await
}

/// Changes an annotation of the job, which makes the operator look at it
/// again at once (as any edit would).
fn nudge(ns: &str, name: &str, n: u32) {
    kubectl_ok(&[
        "-n",
        ns,
        "annotate",
        "mj",
        name,
        &format!("e2e.freight.dev/nudge={n}"),
        "--overwrite",
    ]);
}

/// The `contacts` table in `source` of `src` (`rows` rows) and an empty
/// `contacts` in `target` of `dst` created with `target_ddl`, and the
/// Secrets pointing at them.
fn seed_contacts(ns: &str, src: &TempPostgres, dst: &TempPostgres, rows: u64, target_ddl: &str) {
    src.psql("source", CONTACTS_TABLE);
    insert_contacts(src, "source", rows);
    dst.psql("target", target_ddl);
    create_db_secrets(ns, &src.url("source"), &dst.url("target"));
}

/// A table with a column of every common type, and rows that hold their
/// edge values: unicode, empty strings next to NULLs, NaN, infinities,
/// empty and NULL-holding arrays, JSON with nesting and nulls, empty bytea.
const MIXED_TABLE: &str = "CREATE TABLE mixed (
    id bigint PRIMARY KEY, txt text, small int, big bigint, num numeric, flag bool,
    day date, at timestamptz, doc jsonb, raw bytea, uid uuid, tags text[], nums int[])";

fn mixed_rows(rows: u64) -> String {
    format!(
        "INSERT INTO mixed SELECT g,
           CASE g % 6 WHEN 0 THEN NULL WHEN 1 THEN ''
                      WHEN 2 THEN 'héllo wörld ✓ 日本語 🚚 ' || g
                      WHEN 3 THEN E'tab\\there \"quoted\" back\\\\slash, comma ' || g
                      WHEN 4 THEN E'line\\nbreak ' || g ELSE 'plain ' || g END,
           CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN -2147483648
                ELSE (g * 37) % 2000003 - 1000000 END,
           CASE WHEN g % 8 = 0 THEN NULL WHEN g % 8 = 1 THEN 9223372036854775807
                ELSE g * 1000003::bigint * (1 - 2 * (g % 2)) END,
           CASE g % 6 WHEN 0 THEN 'NaN'::numeric WHEN 1 THEN NULL
                      WHEN 2 THEN 123456789012345678901234567890.123456789
                      ELSE round(g::numeric / 7, 10) END,
           CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN true ELSE false END,
           CASE WHEN g % 10 = 0 THEN NULL ELSE date '1999-12-31' + (g % 20000) END,
           CASE g % 11 WHEN 0 THEN 'infinity'::timestamptz WHEN 1 THEN '-infinity'
                       WHEN 2 THEN NULL
                       ELSE timestamptz '2020-01-01 00:00:00+00'
                            + g * interval '1 second 123 microseconds' END,
           CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '{{}}'::jsonb
                ELSE jsonb_build_object('id', g, 'name', 'ñame ' || g,
                       'list', jsonb_build_array(g, 'x', NULL, true, 1.5),
                       'nested', jsonb_build_object('ü', g % 13, 'null', NULL)) END,
           CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN ''::bytea
                ELSE decode(md5(g::text) || '00ff', 'hex') END,
           CASE g % 9 WHEN 0 THEN NULL ELSE md5(g::text)::uuid END,
           CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '{{}}'::text[]
                ELSE ARRAY['a' || g, NULL, 'ü,\"q\"', ''] END,
           CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN '{{}}'::int[]
                ELSE ARRAY[g, -g, NULL]::int[] END
         FROM generate_series(1, {rows}) g"
    )
}

/// 200k rows of mixed types migrate; source and target are identical, value
/// for value, and status counts them all.
#[tokio::test]
async fn every_type_migrates_identically() {
    const ROWS: i64 = 200_000;
    let s = Scenario::new("types");
    let pg = TempPostgres::start();
    pg.psql("source", MIXED_TABLE);
    pg.psql("target", MIXED_TABLE);
    pg.psql("source", &mixed_rows(ROWS as u64));
    // The fixture holds the edge values it claims to.
    let edges = "SELECT count(*) FILTER (WHERE txt = '') || ',' || count(*) FILTER (WHERE txt IS NULL)
                 || ',' || count(*) FILTER (WHERE num = 'NaN') || ',' || count(*) FILTER (WHERE at = 'infinity')
                 || ',' || count(*) FILTER (WHERE at = '-infinity') || ',' || count(*) FILTER (WHERE raw = '')
                 || ',' || count(*) FILTER (WHERE tags = '{}') || ',' || count(*) FILTER (WHERE txt LIKE '%日本語%')
                 FROM mixed";
    let source_edges = pg.psql("source", edges);
    assert!(
        source_edges
            .split(',')
            .all(|n| n.parse::<i64>().unwrap_or(0) > 0),
        "{source_edges}"
    );
    create_db_secrets(s.name(), &pg.url("source"), &pg.url("target"));
    let op = s.operator("types").await;

    s.apply(&JobSpec::new("mixed", "mixed"));
    let done = wait_finished(s.name(), "mixed", "Succeeded", MINUTE * 6).await;
    assert_counts(&done, ROWS, 0);
    assert_eq!(pg.psql("target", edges), source_edges);
    assert_eq!(
        checksum(&pg, "target", "mixed", "id"),
        checksum(&pg, "source", "mixed", "id"),
        "source and target differ"
    );
    s.delete().await;
    op.stop();
}

/// A target CHECK constraint rejects a known set of rows: the job completes
/// with exactly those failed, named in status and in `freight.failed_records`;
/// once the constraint is dropped, `retryFailed` copies exactly them.
#[tokio::test]
async fn rejected_rows_are_reported_and_retry_failed_copies_them() {
    const ROWS: i64 = 20_000;
    // ages are id % 100; ages 0, 1 and 2 are refused: 3% of the rows.
    const REJECTED: i64 = 600;
    let s = Scenario::new("retry");
    let pg = TempPostgres::start();
    seed_contacts(
        s.name(),
        &pg,
        &pg,
        ROWS as u64,
        &format!("{CONTACTS_TABLE}; ALTER TABLE contacts ADD CONSTRAINT adult CHECK (age >= 3)"),
    );
    let refused = "SELECT count(*) || ':' || md5(string_agg(id::text, ',' ORDER BY id))
                     FROM contacts WHERE age < 3";
    let refused_keys = pg.psql("source", refused);
    assert!(
        refused_keys.starts_with(&format!("{REJECTED}:")),
        "{refused_keys}"
    );
    // The target holds older versions of some (acceptable) rows: upserts
    // update them in place.
    pg.psql(
        "target",
        "INSERT INTO contacts SELECT g, 'stale', 50, NULL, NULL
           FROM generate_series(1, 300) g WHERE g % 100 >= 3",
    );
    let op = s.operator("retry").await;

    let uid = s.apply(&JobSpec {
        batch_size: 500,
        max_failed_ratio: 0.1,
        ..JobSpec::new("contacts", "contacts")
    });
    let done = wait_finished(s.name(), "contacts", "CompletedWithErrors", MINUTE * 4).await;
    assert_counts(&done, ROWS, REJECTED);
    // Finished within its failure budget: done, for Flux and Argo CD alike.
    let (_, argo) = expect_gitops(
        s.name(),
        "contacts",
        "CompletedWithErrors",
        "Current",
        "Healthy",
    )
    .await;
    assert!(
        argo.message
            .contains(&format!("{REJECTED} of {ROWS} records failed")),
        "{argo}"
    );
    let recent = done["status"]["recentFailures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !recent.is_empty() && recent.len() <= 5,
        "recentFailures: {}",
        done["status"]
    );
    for failure in &recent {
        let key: i64 = failure["key"]
            .as_str()
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("a failure names its key: {failure}"));
        assert!(key % 100 < 3, "{key} was not refused: {failure}");
        let error = failure["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("adult"),
            "the error names the constraint: {failure}"
        );
    }
    let ledger = format!(
        "SELECT count(*) || ':' || md5(string_agg(record_key, ',' ORDER BY record_key::bigint))
           FROM freight.failed_records WHERE job_uid = '{uid}'"
    );
    assert_eq!(pg.psql("target", &ledger), refused_keys);
    assert_eq!(
        pg.psql(
            "target",
            "SELECT count(*) || ',' || count(*) FILTER (WHERE email = 'stale') FROM contacts"
        ),
        format!("{},0", ROWS - REJECTED),
        "every accepted row is in the target once, stale versions updated"
    );

    // Fix the target, retry the failed records.
    pg.psql("target", "ALTER TABLE contacts DROP CONSTRAINT adult");
    patch_job_ok(s.name(), "contacts", r#"{"spec":{"retryFailed":1}}"#);
    let retried = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 3).await;
    assert_counts(&retried, ROWS, 0);
    expect_gitops(s.name(), "contacts", "Succeeded", "Current", "Healthy").await;
    assert_eq!(
        pg.psql(
            "target",
            &format!("SELECT count(*) FROM freight.failed_records WHERE job_uid = '{uid}'")
        ),
        "0"
    );
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id"),
        "source and target differ after the retry"
    );
    s.delete().await;
    op.stop();
}

/// The operator is killed (SIGKILL) twice mid-run and replaced each time;
/// the job completes with every row written exactly once. The target has no
/// unique key and the job inserts: a batch written twice would leave
/// duplicate rows.
#[tokio::test]
async fn operator_killed_twice_mid_run_loses_and_duplicates_nothing() {
    const LEADER_LEASE: u64 = 6;
    let s = Scenario::new("opkill");
    let pg = TempPostgres::start();
    seed_contacts(
        s.name(),
        &pg,
        &pg,
        MID_RUN_ROWS,
        &CONTACTS_TABLE.replace("id bigint PRIMARY KEY", "id bigint NOT NULL"),
    );
    slow_down_writes(&pg, "target", "contacts", MID_RUN_SLOW);
    let opts = |identity| OperatorOptions {
        lease_seconds: LEADER_LEASE,
        ..s.opts(identity)
    };
    let first = Operator::start(&opts("opkill-1")).await;
    let uid = s.apply(&JobSpec {
        mode: "insert",
        batch_size: 500,
        ..JobSpec::new("contacts", "contacts")
    });

    let (at_first_kill, total) = wait_progress(&pg, &uid, 5, 40).await;
    first.kill();
    eprintln!("killed the first operator at {at_first_kill}/{total} batches");
    let second = Operator::start(&opts("opkill-2")).await;
    eventually("the second operator leads", MINUTE, || async {
        (lease_holder(s.name()).as_deref() == Some("opkill-2")).then_some(())
    })
    .await;
    // The second operator drives the job forward before it is killed too.
    let step = (total / 10).max(1);
    let (at_second_kill, _) =
        eventually("progress under the second operator", MINUTE * 3, || async {
            let (done, total, _) = ledger_progress(&pg, &uid)?;
            (done >= at_first_kill + step).then_some((done, total))
        })
        .await;
    assert!(
        at_second_kill * 100 <= total * 80,
        "the job ran past 80% ({at_second_kill} of {total} batches) before the second kill; \
         make the table larger"
    );
    second.kill();
    eprintln!("killed the second operator at {at_second_kill}/{total} batches");
    let third = Operator::start(&opts("opkill-3")).await;

    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 6).await;
    let rows = MID_RUN_ROWS as i64;
    assert_counts(&done, rows, 0);
    assert_eq!(
        pg.psql(
            "target",
            "SELECT count(*) || ',' || count(DISTINCT id) FROM contacts"
        ),
        format!("{rows},{rows}"),
        "rows lost or written twice"
    );
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );
    s.delete().await;
    third.stop();
}

/// A worker process is killed (SIGKILL) while it holds a batch: the batch
/// is leased again once its lease expires, and the job completes with exact
/// counts.
#[tokio::test]
async fn worker_killed_mid_batch_its_batch_is_leased_again() {
    const BATCH_LEASE: u64 = 8;
    let s = Scenario::new("wkill");
    let pg = TempPostgres::start();
    seed_contacts(s.name(), &pg, &pg, MID_RUN_ROWS, CONTACTS_TABLE);
    // Each batch takes half a second or more: a worker is nearly always
    // inside one.
    slow_down_writes(&pg, "target", "contacts", 0.5);
    let op = Operator::start(&OperatorOptions {
        batch_lease_seconds: Some(BATCH_LEASE),
        ..s.opts("wkill")
    })
    .await;
    let uid = s.apply(&JobSpec {
        batch_size: 2000,
        ..JobSpec::new("contacts", "contacts")
    });
    wait_progress(&pg, &uid, 5, 50).await;

    // Kill a worker while it holds a batch (between reading the lease and
    // the kill the batch may just finish: then try again).
    let mut killed = None;
    for _ in 0..40 {
        let Some(proc_) = running_processes(s.name()).into_iter().next() else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        // A worker leases as `<pod>`, or `<pod>/<lane>` with several batches at once.
        let held = pg.psql(
            "target",
            &format!(
                "SELECT batch_id || ',' || lease_id FROM freight.batches
                  WHERE job_uid = '{uid}' AND state = 'leased' AND split_part(lease_owner, '/', 1) = '{}'
                  ORDER BY batch_id LIMIT 1",
                proc_.pod
            ),
        );
        let Some((batch, lease)) = held.split_once(',') else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        kill(Pid::from_raw(proc_.pid), Signal::SIGKILL).expect("SIGKILL the worker");
        // A COMMIT the worker sent just before it died still lands: look
        // once the server has read everything the worker sent.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let still_held = pg.psql(
            "target",
            &format!(
                "SELECT count(*) FROM freight.batches WHERE job_uid = '{uid}' AND batch_id = {batch}
                   AND lease_id = '{lease}' AND state = 'leased'"
            ),
        );
        if still_held == "1" {
            killed = Some((proc_, batch.to_owned(), lease.to_owned()));
            break;
        }
        eprintln!("batch {batch} finished before the kill landed; trying again");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (victim, batch, lease) = killed.unwrap_or_else(|| {
        panic!(
            "no worker could be killed while holding a batch; workers {:?}, leases held {:?}",
            running_processes(s.name()),
            pg.psql(
                "target",
                &format!(
                    "SELECT string_agg(lease_owner, ' ') FROM freight.batches
                      WHERE job_uid = '{uid}' AND state = 'leased'"
                )
            )
        )
    });
    let killed_at = Instant::now();
    eprintln!(
        "killed worker {} (pid {}) holding batch {batch}",
        victim.pod, victim.pid
    );

    // The pod runner restarts the process of the pod, like kubelet would.
    eventually("the killed worker's pod runs again", MINUTE, || async {
        running_processes(s.name())
            .into_iter()
            .find(|p| p.pod == victim.pod && p.pid != victim.pid)
    })
    .await;
    // Its batch goes to another attempt once the lease has expired.
    let releases = eventually("the batch leased again and done", MINUTE * 2, || async {
        let row = pg.psql(
            "target",
            &format!(
                "SELECT attempts FROM freight.batches WHERE job_uid = '{uid}' AND batch_id = {batch}
                   AND state = 'done' AND lease_id IS DISTINCT FROM '{lease}'"
            ),
        );
        row.parse::<i64>().ok()
    })
    .await;
    assert!(releases >= 2, "batch {batch} done in attempt {releases}");
    eprintln!(
        "batch {batch} done in attempt {releases}, {:?} after the kill",
        killed_at.elapsed()
    );

    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 6).await;
    assert_counts(&done, MID_RUN_ROWS as i64, 0);
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );
    s.delete().await;
    op.stop();
}

/// The target PostgreSQL restarts mid-run: the job waits out the outage
/// (transient errors are not failed records) and completes exactly.
#[tokio::test]
async fn target_restart_mid_run_pauses_and_completes_exactly() {
    const OUTAGE: Duration = Duration::from_secs(12);
    let s = Scenario::new("pgrestart");
    let src = TempPostgres::start();
    let mut dst = TempPostgres::start();
    seed_contacts(s.name(), &src, &dst, MID_RUN_ROWS, CONTACTS_TABLE);
    slow_down_writes(&dst, "target", "contacts", MID_RUN_SLOW);
    let op = Operator::start(&OperatorOptions {
        batch_lease_seconds: Some(10),
        ..s.opts("pgrestart")
    })
    .await;
    let uid = s.apply(&JobSpec::new("contacts", "contacts"));
    let (at_stop, total) = wait_progress(&dst, &uid, 5, 50).await;

    dst.stop();
    eprintln!("target stopped at {at_stop}/{total} batches");
    let outage = Instant::now();
    while outage.elapsed() < OUTAGE {
        let j = job(s.name(), "contacts").expect("job");
        assert_eq!(
            j["status"]["phase"], "Running",
            "the job stays Running through a target outage: {}",
            j["status"]
        );
        assert!(
            int(&j["status"]["failedRecords"]) <= 0,
            "an outage is not failed records: {}",
            j["status"]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    dst.start_again();
    eprintln!("target started again");
    // The outage was reported as a transient reconcile error.
    wait_warning(s.name(), "ReconcileError", "target database").await;

    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 6).await;
    assert_counts(&done, MID_RUN_ROWS as i64, 0);
    assert_eq!(
        dst.psql(
            "target",
            &format!("SELECT count(*) FROM freight.failed_records WHERE job_uid = '{uid}'")
        ),
        "0"
    );
    assert_eq!(
        checksum(&dst, "target", "contacts", "id"),
        checksum(&src, "source", "contacts", "id")
    );
    s.delete().await;
    op.stop();
}

/// Suspended mid-run, the job runs no worker and makes no progress; resumed,
/// it completes exactly.
#[tokio::test]
async fn suspend_mid_run_stops_everything_and_resume_completes() {
    let s = Scenario::new("suspend");
    let pg = TempPostgres::start();
    seed_contacts(s.name(), &pg, &pg, MID_RUN_ROWS, CONTACTS_TABLE);
    slow_down_writes(&pg, "target", "contacts", MID_RUN_SLOW);
    let op = s.operator("suspend").await;
    let uid = s.apply(&JobSpec::new("contacts", "contacts"));
    wait_progress(&pg, &uid, 5, 50).await;
    expect_gitops(s.name(), "contacts", "Running", "InProgress", "Progressing").await;

    patch_job_ok(s.name(), "contacts", r#"{"spec":{"suspend":true}}"#);
    wait_phase(s.name(), "contacts", "Suspended", MINUTE).await;
    // Suspended is where its spec says it should be: Current for kstatus.
    expect_gitops(s.name(), "contacts", "Suspended", "Current", "Suspended").await;
    wait_no_workers(s.name(), "contacts", MINUTE).await;
    let (_, total, written) = ledger_progress(&pg, &uid).expect("ledger");
    assert!(
        written < MID_RUN_ROWS as i64,
        "the job finished before it was suspended"
    );
    // Status catches up with what the workers wrote before they stopped.
    let status = eventually("status shows the ledger's count", MINUTE, || async {
        let j = job(s.name(), "contacts")?;
        (int(&j["status"]["processedRecords"]) == written).then_some(j)
    })
    .await;
    assert_eq!(status["status"]["phase"], "Suspended");
    eprintln!("suspended at {written} records ({total} batches planned)");
    let still = Instant::now();
    while still.elapsed() < Duration::from_secs(12) {
        let procs = live_processes(s.name());
        assert!(
            procs.is_empty(),
            "worker processes while suspended: {procs:?}"
        );
        let deployments = worker_deployments(s.name(), "contacts");
        assert!(
            deployments.iter().all(|d| d["spec"]["replicas"] == 0),
            "worker Deployment scaled up while suspended"
        );
        let (_, _, now) = ledger_progress(&pg, &uid).expect("ledger");
        assert_eq!(now, written, "records written while suspended");
        let j = job(s.name(), "contacts").expect("job");
        assert_eq!(j["status"]["phase"], "Suspended", "{}", j["status"]);
        assert_eq!(
            int(&j["status"]["processedRecords"]),
            written,
            "processedRecords moved while suspended"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    patch_job_ok(s.name(), "contacts", r#"{"spec":{"suspend":false}}"#);
    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 6).await;
    assert_counts(&done, MID_RUN_ROWS as i64, 0);
    expect_gitops(s.name(), "contacts", "Succeeded", "Current", "Healthy").await;
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );
    s.delete().await;
    op.stop();
}

/// Problems with the databases: an unreachable one is a transient error
/// (Warning events, retried); a missing table or key column is a Pending
/// condition naming it, with no worker started. Each is noticed when fixed;
/// the last fix (creating the target table) is noticed without any edit of
/// the job, as the condition promises ("the job resumes by itself").
#[tokio::test]
async fn database_problems_are_reported_and_fixing_them_resumes_the_job() {
    const ROWS: i64 = 10_000;
    let s = Scenario::new("dbproblems");
    let pg = TempPostgres::start();
    // Nothing listens on the target's port at first.
    let unreachable = format!(
        "postgres://freight@127.0.0.1:{}/target?sslmode=disable",
        free_port()
    );
    create_db_secrets(s.name(), &pg.url("source"), &unreachable);
    let op = s.operator("dbproblems").await;
    s.apply(&JobSpec::new("contacts", "contacts"));

    wait_warning(s.name(), "ReconcileError", "target database").await;
    assert!(op.metric("freight_reconcile_errors_total") >= 1.0);
    // An unreachable database is retried by itself: nothing a person must fix, so
    // not Failed (Stalled) for kstatus. (With no status written yet it reads Current,
    // "Resource is current": kstatus' default for a resource without conditions.)
    let transient = kstatus(s.name(), "contacts").expect("kstatus");
    eprintln!("target unreachable: kstatus {transient}");
    assert_ne!(transient.status, "Failed", "{transient}");
    let j = job(s.name(), "contacts").expect("job");
    assert!(
        !matches!(
            j["status"]["phase"].as_str(),
            Some("Planning" | "Running" | "Succeeded")
        ),
        "{}",
        j["status"]
    );
    assert!(worker_deployments(s.name(), "contacts").is_empty());

    // Reachable now (the Secret changed): the source table is missing.
    create_url_secret(s.name(), "new-db", &pg.url("target"));
    let j = wait_blocked(s.name(), "contacts", "SourceTableNotFound").await;
    expect_blocked_reads_failed(s.name(), "public.contacts").await;
    let message = condition(&j, "Ready").expect("Ready")["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("public.contacts")),
        "{message}"
    );
    wait_warning(s.name(), "SourceTableNotFound", "public.contacts").await;
    assert!(worker_deployments(s.name(), "contacts").is_empty());

    // The source table exists, without the key column.
    pg.psql(
        "source",
        &CONTACTS_TABLE.replace("id bigint", "contact_id bigint"),
    );
    nudge(s.name(), "contacts", 1);
    let j = wait_blocked(s.name(), "contacts", "KeyColumnNotFound").await;
    expect_blocked_reads_failed(s.name(), "\"id\"").await;
    let message = condition(&j, "Ready").expect("Ready")["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains("\"id\"")),
        "{message}"
    );
    assert!(worker_deployments(s.name(), "contacts").is_empty());

    // The source is right; the target table is missing.
    pg.psql("source", "DROP TABLE contacts");
    pg.psql("source", CONTACTS_TABLE);
    insert_contacts(&pg, "source", ROWS as u64);
    nudge(s.name(), "contacts", 2);
    let j = wait_blocked(s.name(), "contacts", "TargetTableNotFound").await;
    expect_blocked_reads_failed(s.name(), "public.contacts").await;
    let message = condition(&j, "Ready").expect("Ready")["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("public.contacts")),
        "{message}"
    );
    assert!(worker_deployments(s.name(), "contacts").is_empty());

    // Creating it is enough: the job resumes by itself.
    pg.psql("target", CONTACTS_TABLE);
    let fixed = Instant::now();
    eventually(
        "the job resumes by itself once the target table exists",
        MINUTE,
        || async {
            let j = job(s.name(), "contacts")?;
            (j["status"]["phase"] != "Pending").then_some(())
        },
    )
    .await;
    eprintln!("resumed {:?} after the fix", fixed.elapsed());
    // Planning and Running may be over before a check can see them; whatever
    // phase each read catches, it must read as that phase should.
    for _ in 0..3 {
        let k = kstatus(s.name(), "contacts").expect("kstatus");
        assert_eq!(
            k.status,
            kstatus_of_phase(&k.phase),
            "kstatus after the fix: {k}"
        );
        if k.phase == "Succeeded" {
            break;
        }
    }
    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 3).await;
    assert_counts(&done, ROWS, 0);
    expect_gitops(s.name(), "contacts", "Succeeded", "Current", "Healthy").await;
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );

    // A spec edit the operator has not seen yet (it is stopped): status describes
    // an older generation, which kstatus and Argo CD read as in progress until the
    // operator catches up.
    op.stop();
    patch_job_ok(s.name(), "contacts", r#"{"spec":{"workers":{"max":3}}}"#);
    let behind = kstatus(s.name(), "contacts").expect("kstatus");
    assert_eq!(behind.status, "InProgress", "{behind}");
    assert!(
        behind.message.contains("latest observed generation"),
        "{behind}"
    );
    let argo = argocd_health(s.name(), "contacts").expect("Argo CD health");
    assert_eq!(argo.status, "Progressing", "{argo}");
    let op = s.operator("dbproblems-2").await;
    eventually(
        "kstatus Current once the edit is observed",
        MINUTE,
        || async { kstatus(s.name(), "contacts").filter(|k| k.status == "Current") },
    )
    .await;
    expect_gitops(s.name(), "contacts", "Succeeded", "Current", "Healthy").await;
    s.delete().await;
    op.stop();
}

/// A job blocked on a problem only a person can fix (Pending, Stalled=True)
/// reads Failed for kstatus and Degraded for Argo CD, both with the problem
/// (`needle`) in their message.
async fn expect_blocked_reads_failed(ns: &str, needle: &str) {
    let (k, a) = expect_gitops(ns, "contacts", "Pending", "Failed", "Degraded").await;
    assert!(k.message.contains(needle), "kstatus message: {k}");
    assert!(a.message.contains(needle), "Argo CD message: {a}");
}

/// More records rejected than the failure budget allows: the job fails, and
/// kstatus (Flux) and Argo CD read it as failed.
#[tokio::test]
async fn over_the_failure_budget_the_job_fails_for_gitops_tools() {
    const ROWS: i64 = 5_000;
    let s = Scenario::new("overbudget");
    let pg = TempPostgres::start();
    // ages are id % 100; ages 0, 1 and 2 are refused: 3% of the rows, over 1%.
    seed_contacts(
        s.name(),
        &pg,
        &pg,
        ROWS as u64,
        &format!("{CONTACTS_TABLE}; ALTER TABLE contacts ADD CONSTRAINT adult CHECK (age >= 3)"),
    );
    let op = s.operator("overbudget").await;
    s.apply(&JobSpec {
        batch_size: 500,
        max_failed_ratio: 0.01,
        ..JobSpec::new("contacts", "contacts")
    });
    wait_phase(s.name(), "contacts", "Failed", MINUTE * 3).await;
    let (k, a) = expect_gitops(s.name(), "contacts", "Failed", "Failed", "Degraded").await;
    assert!(k.message.contains("maxFailedRecordRatio"), "{k}");
    assert!(a.message.contains("maxFailedRecordRatio"), "{a}");
    // `kubectl wait` on the standard condition works too.
    kubectl_ok(&[
        "-n",
        s.name(),
        "wait",
        "mj/contacts",
        "--for=condition=Failed",
        "--timeout=10s",
    ]);
    s.delete().await;
    op.stop();
}

/// Upserts need a unique key on the target's key column: without one, rows
/// the target already holds would be duplicated instead of updated. Such a
/// target is held back as a configuration problem; once it has the key, the
/// job updates those rows in place.
#[tokio::test]
async fn upsert_needs_a_unique_key_and_then_updates_rows_in_place() {
    const ROWS: i64 = 10_000;
    const TARGET_ROWS: &str = "SELECT count(*) || ',' || count(DISTINCT id) || ','
                                      || count(*) FILTER (WHERE email = 'stale') FROM contacts";
    let s = Scenario::new("upsertkey");
    let pg = TempPostgres::start();
    seed_contacts(
        s.name(),
        &pg,
        &pg,
        ROWS as u64,
        &CONTACTS_TABLE.replace("id bigint PRIMARY KEY", "id bigint NOT NULL"),
    );
    // Older versions of the first 100 rows.
    pg.psql(
        "target",
        "INSERT INTO contacts SELECT g, 'stale', 50, NULL, NULL FROM generate_series(1, 100) g",
    );
    let op = s.operator("upsertkey").await;
    s.apply(&JobSpec::new("contacts", "contacts"));

    let j = eventually("the job held back, or started", MINUTE, || async {
        let j = job(s.name(), "contacts")?;
        let held = j["status"]["phase"] == "Pending"
            && condition(&j, "Ready").is_some_and(|c| {
                c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.to_lowercase().contains("unique"))
            });
        let started = matches!(
            j["status"]["phase"].as_str(),
            Some("Planning" | "Running" | "Succeeded" | "CompletedWithErrors" | "Failed")
        );
        (held || started).then_some(j)
    })
    .await;
    if j["status"]["phase"] != "Pending" {
        let end = eventually("the job to end", MINUTE * 3, || async {
            let j = job(s.name(), "contacts")?;
            matches!(
                j["status"]["phase"].as_str(),
                Some("Succeeded" | "CompletedWithErrors" | "Failed")
            )
            .then_some(j)
        })
        .await;
        panic!(
            "an upsert job whose target has no unique key on `id` was not held back: it ended {} \
             and the target holds {} (rows, distinct ids, stale rows; the source has {ROWS} rows); \
             status: {}",
            end["status"]["phase"],
            pg.psql("target", TARGET_ROWS),
            end["status"]
        );
    }
    assert_eq!(pg.psql("target", TARGET_ROWS), "100,100,100");
    assert!(live_processes(s.name()).is_empty());

    // With the key, the job runs and updates the stale rows in place.
    pg.psql("target", "ALTER TABLE contacts ADD PRIMARY KEY (id)");
    nudge(s.name(), "contacts", 1);
    let done = wait_finished(s.name(), "contacts", "Succeeded", MINUTE * 3).await;
    assert_counts(&done, ROWS, 0);
    assert_eq!(pg.psql("target", TARGET_ROWS), format!("{ROWS},{ROWS},0"));
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );
    s.delete().await;
    op.stop();
}
