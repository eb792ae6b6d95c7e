//! End-to-end scenarios of the operator core on a real kube-apiserver.
//! Run by `make e2e` (e2e/run.sh), one at a time.
//!
//! Jobs read and write a real PostgreSQL (a [`TempPostgres`] per scenario):
//! the operator plans them and its workers copy rows, so a job that should
//! stay `Running` while a scenario looks at it gets a source table large
//! enough to outlast the scenario, and checks of "no writes in steady state"
//! use finished jobs (a running job writes its progress).

use std::{path::Path, time::Duration};

use freight_e2e::{
    Operator, OperatorOptions, TempPostgres, TestNamespace, audit_writes, condition,
    create_url_secret, eventually, get_json, job, kubectl, kubectl_ok, kubectl_stdin, lease_holder,
    live_processes, patch_job, repo_root, running_processes, seed_example, slow_down_writes,
    state_dir, wait_no_workers,
};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// Rows of a source table that keeps a job `Running` for as long as a
/// scenario looks at it (the scenario suspends or deletes the job first),
/// with target writes slowed down to [`SLOW_BATCH`] seconds per statement:
/// 200 batches of 1000 rows take at least 50 s with two workers.
const LONG_TABLE: u64 = 200_000;
/// Least seconds per write into a slowed-down target table.
const SLOW_BATCH: f64 = 1.0;

fn operator_opts<'a>(
    ns: &'a TestNamespace,
    kubeconfig: &'a Path,
    identity: &'a str,
) -> OperatorOptions<'a> {
    OperatorOptions::new(ns, kubeconfig, identity)
}

/// A fresh namespace with the chart installed and an operator watching it.
async fn namespace_with_operator(prefix: &str) -> (TestNamespace, Operator) {
    let ns = TestNamespace::create(prefix);
    let kubeconfig = ns.operator_kubeconfig();
    let op = Operator::start(&operator_opts(&ns, &kubeconfig, prefix)).await;
    (ns, op)
}

/// Applies `examples/postgres-to-postgres.yaml` as it is (two Secrets
/// pointing at a database nobody runs here, and the job `contacts`).
fn apply_example(ns: &str) {
    let manifest = repo_root().join("examples/postgres-to-postgres.yaml");
    kubectl_ok(&["-n", ns, "apply", "-f", &manifest.display().to_string()]);
}

/// The example on a real PostgreSQL: `contacts` with `rows` rows, the
/// Secrets pointing at it, and the example's job, edited by `edit`.
fn run_example(ns: &str, rows: u64, edit: impl FnOnce(String) -> String) -> TempPostgres {
    run_example_slowed(ns, rows, None, edit)
}

/// [`run_example`], with each write into the target taking at least `slow`
/// seconds.
fn run_example_slowed(
    ns: &str,
    rows: u64,
    slow: Option<f64>,
    edit: impl FnOnce(String) -> String,
) -> TempPostgres {
    let pg = TempPostgres::start();
    seed_example(ns, &pg, rows);
    if let Some(seconds) = slow {
        slow_down_writes(&pg, "target", "contacts", seconds);
    }
    freight_e2e::apply_example_job(ns, edit);
    pg
}

/// Merge-patches the job `contacts`; returns kubectl's result.
fn patch_contacts(ns: &str, patch: &str) -> std::process::Output {
    patch_job(ns, "contacts", patch)
}

/// Merge-patches the job `contacts`, which must succeed.
fn patch_job_ok(ns: &str, patch: &str) {
    freight_e2e::patch_job_ok(ns, "contacts", patch);
}

async fn wait_phase(ns: &str, name: &str, phase: &str) -> Value {
    freight_e2e::wait_phase(ns, name, phase, MINUTE).await
}

/// Waits until the job is Running with every wanted worker ready.
async fn wait_running_ready(ns: &str, name: &str) -> Value {
    eventually(&format!("{name} running and ready"), MINUTE * 2, || async {
        let j = job(ns, name)?;
        let ready = condition(&j, "Ready")?;
        (j["status"]["phase"] == "Running" && ready["status"] == "True").then_some(j)
    })
    .await
}

/// Waits until the job has finished in `phase` (Complete=True), its workers
/// are gone, and its status has not changed for three seconds.
async fn wait_finished_settled(ns: &str, name: &str, phase: &str) -> Value {
    eventually(
        &format!("{name} finished ({phase})"),
        MINUTE * 3,
        || async {
            let j = job(ns, name)?;
            (j["status"]["phase"] == phase && condition(&j, "Complete")?["status"] == "True")
                .then_some(())
        },
    )
    .await;
    wait_no_workers(ns, name, MINUTE).await;
    eventually(&format!("{name} settled"), MINUTE * 2, || async {
        let first = job(ns, name)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let second = job(ns, name)?;
        (first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"])
            .then_some(second)
    })
    .await
}

fn children(ns: &str, job: &str) -> (Vec<Value>, Vec<Value>, Option<Value>) {
    let selector = format!("freight.dev/job={job}");
    let items = |kind: &str| {
        get_json(&["-n", ns, "get", kind, "-l", &selector, "-o", "json"])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    };
    let secret = get_json(&[
        "-n",
        ns,
        "get",
        "secret",
        &format!("{job}-worker"),
        "-o",
        "json",
    ]);
    (
        items("deployments"),
        items("horizontalpodautoscalers"),
        secret,
    )
}

fn owned_by(obj: &Value, uid: &Value) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| &r["uid"] == uid && r["controller"] == true)
        })
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Provisions what the jobs of `manifest` read and write, on `pg`: every
/// referenced Secret points at a database of `pg` (the source's at `source`,
/// a distinct target Secret at `target`), each source table gets `rows` rows
/// (key and a text column) and each target table the same columns, empty,
/// with the key unique (for upserts) and writes slowed down to
/// [`SLOW_BATCH`] seconds per statement.
fn provision_jobs(ns: &str, pg: &TempPostgres, manifest: &str, rows: u64) {
    for doc in manifest.split("\n---") {
        let Ok(v) = serde_yaml::from_str::<Value>(doc) else {
            continue;
        };
        if v["kind"] != "MigrationJob" {
            continue;
        }
        let (src, dst) = (
            &v["spec"]["source"]["postgres"],
            &v["spec"]["target"]["postgres"],
        );
        let src_secret = src["connectionSecretRef"]["name"]
            .as_str()
            .expect("source Secret");
        let dst_secret = dst["connectionSecretRef"]["name"]
            .as_str()
            .expect("target Secret");
        let (src_db, dst_db) = if src_secret == dst_secret {
            ("source", "source")
        } else {
            ("source", "target")
        };
        for (secret, db, side) in [(src_secret, src_db, src), (dst_secret, dst_db, dst)] {
            let key = side["connectionSecretRef"]["key"]
                .as_str()
                .expect("Secret key");
            assert_eq!(
                key, "url",
                "the examples keep connection strings under `url`"
            );
            create_url_secret(ns, secret, &pg.url(db));
        }
        let key = sql_ident(src["keyColumn"].as_str().expect("keyColumn"));
        for (db, side) in [(src_db, src), (dst_db, dst)] {
            let schema = sql_ident(side["schema"].as_str().unwrap_or("public"));
            let table = sql_ident(side["table"].as_str().expect("table"));
            pg.psql(
                db,
                &format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema};
                     CREATE TABLE {schema}.{table} ({key} bigint PRIMARY KEY, name text)"
                ),
            );
        }
        let schema = sql_ident(dst["schema"].as_str().unwrap_or("public"));
        let table = sql_ident(dst["table"].as_str().expect("table"));
        slow_down_writes(pg, dst_db, &format!("{schema}.{table}"), SLOW_BATCH);
        let schema = sql_ident(src["schema"].as_str().unwrap_or("public"));
        let table = sql_ident(src["table"].as_str().expect("table"));
        pg.psql(
            src_db,
            &format!(
                "INSERT INTO {schema}.{table} SELECT g, 'name ' || g FROM generate_series(1, {rows}) g"
            ),
        );
    }
}

fn example_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join(dir))
        .expect("examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Scenario 1: `kubectl get mj` shows the printer columns, filled in by a
/// job that copied its rows; `kubectl explain` shows the documentation.
#[tokio::test]
async fn get_shows_columns_and_explain_shows_docs() {
    let (ns, op) = namespace_with_operator("columns").await;
    let _pg = run_example(&ns.name, 2500, |j| j);
    let finished = wait_finished_settled(&ns.name, "contacts", "Succeeded").await;

    let table = kubectl_ok(&["-n", &ns.name, "get", "mj"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "PROGRESS",
            "PROCESSED",
            "FAILED",
            "WORKERS",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(..6),
        Some(&["contacts", "Succeeded", "100%", "2500", "0", "0"][..]),
        "{table}\n{}",
        finished["status"]
    );

    // -o wide adds the recent rate and the estimated completion time (none
    // once finished).
    let wide = kubectl_ok(&["-n", &ns.name, "get", "mj", "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header.get(7..), Some(&["RATE", "ETA"][..]), "{wide}");
    // A finished job has no estimate: kubectl leaves the cell empty.
    let cells = wide
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .count();
    assert_eq!(cells, header.len() - 1, "{wide}");

    let explain = kubectl_ok(&["explain", "migrationjob.spec"]);
    for text in [
        "Where records are read from",
        "batchSize",
        "retryFailed",
        "suspend",
    ] {
        assert!(
            explain.contains(text),
            "kubectl explain lacks {text:?}:\n{explain}"
        );
    }
    let explain = kubectl_ok(&["explain", "migrationjob.spec.workers.min"]);
    assert!(explain.contains("Fewest worker pods"), "{explain}");
    let explain = kubectl_ok(&["explain", "migrationjob"]);
    assert!(explain.contains("A data migration"), "{explain}");

    ns.delete().await;
    op.stop();
}

/// Scenario 2: every valid example, run against a real PostgreSQL, creates
/// the worker Deployment, HPA and Secret with owner references; deleting the
/// running job removes them.
#[tokio::test]
async fn valid_examples_create_owned_children_and_deletion_removes_them() {
    let (ns, op) = namespace_with_operator("examples").await;
    let pg = TempPostgres::start();
    let files = example_files("examples");
    assert!(files.len() >= 2);
    for file in files {
        let manifest = std::fs::read_to_string(&file).expect("read example");
        provision_jobs(&ns.name, &pg, &manifest, LONG_TABLE);
        // The example's own Secrets point at a database nobody runs here.
        let without_secrets: Vec<&str> = manifest
            .split("\n---")
            .filter(|d| serde_yaml::from_str::<Value>(d).is_ok_and(|v| v["kind"] != "Secret"))
            .collect();
        let out = kubectl_stdin(
            &["-n", &ns.name, "apply", "-f", "-"],
            &without_secrets.join("\n---\n"),
        );
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for doc in manifest.split("\n---") {
            let v: Value = serde_yaml::from_str(doc).unwrap_or(Value::Null);
            if v["kind"] != "MigrationJob" {
                continue;
            }
            let name = v["metadata"]["name"].as_str().expect("job name").to_owned();
            let job = wait_phase(&ns.name, &name, "Running").await;
            let uid = job["metadata"]["uid"].clone();
            let (deployments, hpas, secret) = children(&ns.name, &name);
            assert_eq!(
                deployments.len(),
                1,
                "{}: one worker Deployment",
                file.display()
            );
            assert_eq!(hpas.len(), 1, "{}: one HPA", file.display());
            assert!(
                owned_by(&deployments[0], &uid),
                "Deployment not owned by {name}"
            );
            assert!(owned_by(&hpas[0], &uid), "HPA not owned by {name}");
            assert!(
                owned_by(&secret.expect("worker Secret"), &uid),
                "Secret not owned by {name}"
            );
            let pod = &deployments[0]["spec"]["template"]["spec"];
            assert_eq!(
                pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
                true
            );

            kubectl_ok(&[
                "-n",
                &ns.name,
                "delete",
                "mj",
                &name,
                "--wait=true",
                "--timeout=60s",
            ]);
            let (deployments, hpas, secret) = children(&ns.name, &name);
            assert!(
                deployments.is_empty() && hpas.is_empty() && secret.is_none(),
                "{name}: children left behind"
            );
        }
    }
    ns.delete().await;
    op.stop();
}

/// Scenario 3: each invalid manifest is rejected by `kubectl apply`, with a
/// message naming the field; none is stored.
#[tokio::test]
async fn invalid_manifests_are_rejected_with_the_field_named() {
    let ns = TestNamespace::create("invalid");
    let files = example_files("examples/invalid");
    assert!(files.len() >= 15, "the catalog needs at least 15 manifests");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read manifest");
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .expect("`# expect:` line");
        let out = kubectl_stdin(&["-n", &ns.name, "apply", "-f", "-"], &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted", file.display()));
        } else if !stderr.contains(expect) {
            failures.push(format!(
                "{}: expected {expect:?} in {stderr}",
                file.display()
            ));
        }
    }
    let stored = kubectl_ok(&["-n", &ns.name, "get", "mj", "-o", "name"]);
    assert!(
        stored.trim().is_empty(),
        "invalid jobs were stored: {stored}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Transition rules: an immutable field and a counter that only goes up.
    apply_example(&ns.name);
    let out = patch_contacts(
        &ns.name,
        r#"{"spec":{"source":{"postgres":{"table":"people"}}}}"#,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("source is immutable"));
    patch_job_ok(&ns.name, r#"{"spec":{"retryFailed":2}}"#);
    let out = patch_contacts(&ns.name, r#"{"spec":{"retryFailed":1}}"#);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retryFailed can only be increased"));
    // No operator runs in this test: nothing holds a finalizer.
    ns.delete().await;
}

/// Scenario 4: a missing Secret is named in a condition, and the job
/// recovers by itself once the Secret is created.
#[tokio::test]
async fn missing_secret_is_reported_and_the_job_recovers() {
    let (ns, op) = namespace_with_operator("secret").await;
    let pg = TempPostgres::start();
    seed_example(&ns.name, &pg, LONG_TABLE);
    slow_down_writes(&pg, "target", "contacts", SLOW_BATCH);
    // Only the source's Secret exists at first.
    kubectl_ok(&["-n", &ns.name, "delete", "secret", "new-db"]);
    freight_e2e::apply_example_job(&ns.name, |j| j);

    wait_phase(&ns.name, "contacts", "Pending").await;
    let blocked = eventually("SecretNotFound condition", MINUTE, || async {
        let j = job(&ns.name, "contacts")?;
        (condition(&j, "Ready")?["reason"] == "SecretNotFound").then_some(j)
    })
    .await;
    let ready = condition(&blocked, "Ready").expect("Ready condition");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/new-db", ns.name)),
        "{message}"
    );
    assert!(
        message.contains("spec.target.postgres.connectionSecretRef"),
        "{message}"
    );
    let (deployments, _, _) = children(&ns.name, "contacts");
    assert!(
        deployments.is_empty(),
        "no workers while the configuration is broken"
    );
    let events = kubectl_ok(&[
        "-n",
        &ns.name,
        "get",
        "events",
        "--field-selector",
        "reason=SecretNotFound",
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "a Warning event names the problem"
    );

    create_url_secret(&ns.name, "new-db", &pg.url("target"));
    let running = wait_phase(&ns.name, "contacts", "Running").await;
    assert_ne!(
        condition(&running, "Ready").expect("Ready")["reason"],
        "SecretNotFound"
    );
    let (deployments, _, _) = children(&ns.name, "contacts");
    assert_eq!(deployments.len(), 1);
    // It recovered through the Secret watch, not through errors and retries.
    assert_eq!(
        op.metric("freight_reconcile_errors_total"),
        0.0,
        "{}",
        op.log_text()
    );
    ns.delete().await;
    op.stop();
}

/// Scenario 5: restarting the operator creates no duplicate children and no
/// status churn; a steady state (a finished job) produces zero writes.
#[tokio::test]
async fn restart_creates_no_duplicates_and_steady_state_writes_nothing() {
    let ns = TestNamespace::create("restart");
    let kubeconfig = ns.operator_kubeconfig();
    let first = Operator::start(&operator_opts(&ns, &kubeconfig, "restart-1")).await;
    let _pg = run_example(&ns.name, 5000, |j| j);
    let before = wait_finished_settled(&ns.name, "contacts", "Succeeded").await;
    let (deployments, hpas, secret) = children(&ns.name, "contacts");
    let uids = |items: &[Value]| -> Vec<Value> {
        items.iter().map(|i| i["metadata"]["uid"].clone()).collect()
    };
    let (dep_uids, hpa_uids) = (uids(&deployments), uids(&hpas));
    let secret_rv = secret.expect("worker Secret")["metadata"]["resourceVersion"].clone();
    first.stop();

    let writes_before = audit_writes(&ns.service_account_user()).len();
    assert!(
        writes_before > 0,
        "the audit log shows the first operator's writes"
    );
    let second = Operator::start(&operator_opts(&ns, &kubeconfig, "restart-2")).await;
    eventually("second operator reconciled", MINUTE, || async {
        (second.metric("freight_reconciles_total") >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let after = job(&ns.name, "contacts").expect("job");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "status churned after restart"
    );
    let (deployments, hpas, secret) = children(&ns.name, "contacts");
    assert_eq!(
        uids(&deployments),
        dep_uids,
        "worker Deployment duplicated or replaced"
    );
    assert_eq!(uids(&hpas), hpa_uids, "HPA duplicated or replaced");
    assert_eq!(
        secret.expect("worker Secret")["metadata"]["resourceVersion"],
        secret_rv,
        "credential rewritten"
    );
    assert_eq!(
        second.writes(),
        0.0,
        "the restarted operator wrote: {}",
        second.log_text()
    );
    let writes = audit_writes(&ns.service_account_user());
    assert_eq!(
        writes.len(),
        writes_before,
        "audit log shows new writes: {:?}",
        &writes[writes_before..]
    );
    ns.delete().await;
    second.stop();
}

/// Scenario 6: the chart installs (cluster-wide RBAC), and the operator, run
/// as the chart's ServiceAccount, reconciles a job with nothing forbidden;
/// the role grants no more than the operator uses.
#[tokio::test]
async fn chart_rbac_is_enough_and_not_more() {
    let ns = TestNamespace::create_with("rbac", &[]);
    let user = ns.service_account_user();
    let can_i = |verb: &str, resource: &str| {
        let out = kubectl(&[
            "auth", "can-i", verb, resource, "-n", &ns.name, "--as", &user,
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can_i("watch", "migrationjobs.freight.dev"));
    assert!(can_i("patch", "deployments.apps"));
    for verb in ["get", "create", "patch"] {
        assert!(
            can_i(verb, "leases.coordination.k8s.io"),
            "leader election needs {verb} leases"
        );
    }
    for (verb, resource) in [
        ("create", "pods"),
        ("get", "configmaps"),
        ("update", "secrets"),
        ("delete", "migrationjobs.freight.dev"),
        ("update", "deployments.apps"),
        ("escalate", "roles"),
        ("create", "migrationjobs.freight.dev"),
        ("update", "leases.coordination.k8s.io"),
        ("list", "leases.coordination.k8s.io"),
    ] {
        assert!(
            !can_i(verb, resource),
            "the chart grants {verb} {resource}, which the operator never uses"
        );
    }

    let kubeconfig = ns.operator_kubeconfig();
    let opts = OperatorOptions {
        namespace: None,
        ..OperatorOptions::new(&ns, &kubeconfig, "rbac")
    };
    let op = Operator::start(&opts).await;
    // The whole life of a job: planning, copying, suspend, resume, finish.
    // 40 batches of at least half a second each: Running for 10 s or more.
    let pg = run_example_slowed(&ns.name, 40_000, Some(0.5), |j| j);
    wait_running_ready(&ns.name, "contacts").await;
    patch_job_ok(&ns.name, r#"{"spec":{"suspend":true}}"#);
    wait_phase(&ns.name, "contacts", "Suspended").await;
    wait_no_workers(&ns.name, "contacts", MINUTE).await;
    patch_job_ok(&ns.name, r#"{"spec":{"suspend":false}}"#);
    let done = freight_e2e::wait_phase(&ns.name, "contacts", "Succeeded", MINUTE * 5).await;
    assert_eq!(
        done["status"]["processedRecords"], 40_000,
        "{}",
        done["status"]
    );
    assert_eq!(
        freight_e2e::checksum(&pg, "source", "contacts", "id"),
        freight_e2e::checksum(&pg, "target", "contacts", "id")
    );
    kubectl_ok(&[
        "-n",
        &ns.name,
        "delete",
        "mj",
        "contacts",
        "--wait=true",
        "--timeout=60s",
    ]);
    let log = op.log_text();
    let denials: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is forbidden: User"))
        .collect();
    assert!(
        denials.is_empty(),
        "RBAC denied the operator:\n{}",
        denials.join("\n")
    );
    assert_eq!(op.metric("freight_reconcile_errors_total"), 0.0, "{log}");
    ns.delete().await;
    op.stop();
}

/// Scenario 7: with two replicas only the leader writes; killing it hands
/// over within the lease duration.
#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    const LEASE: u64 = 6;
    let ns = TestNamespace::create("leader");
    let kubeconfig = ns.operator_kubeconfig();
    // Both replicas run at once on one host: each coordinator listens on its
    // own loopback address (the same port), workers are sent to 127.0.0.1.
    let opts = |identity, coordinator_ip| OperatorOptions {
        lease_seconds: LEASE,
        coordinator_ip,
        ..operator_opts(&ns, &kubeconfig, identity)
    };
    let a = Operator::start(&opts("replica-a", "127.0.0.1")).await;
    let b = Operator::start(&opts("replica-b", "127.0.0.2")).await;
    let holder = eventually("a lease holder", MINUTE, || async {
        lease_holder(&ns.name)
    })
    .await;
    let (leader, standby) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };

    let _pg = run_example_slowed(&ns.name, LONG_TABLE, Some(SLOW_BATCH), |j| j);
    wait_running_ready(&ns.name, "contacts").await;
    assert!(leader.writes() > 0.0, "the leader wrote nothing");
    assert_eq!(standby.writes(), 0.0, "the standby wrote");
    assert_eq!(standby.metric("freight_leader"), 0.0);
    assert_eq!(
        standby.metric("freight_reconciles_total"),
        0.0,
        "the standby reconciled"
    );

    let killed = std::time::Instant::now();
    leader.kill();
    let new_holder = eventually("the standby takes the lease", MINUTE, || async {
        lease_holder(&ns.name).filter(|h| h != &holder)
    })
    .await;
    let handover = killed.elapsed();
    assert!(
        handover <= Duration::from_secs(LEASE + 2),
        "handover took {handover:?}, lease duration is {LEASE}s"
    );
    assert_ne!(new_holder, holder);
    eventually("standby reports leadership", MINUTE, || async {
        (standby.metric("freight_leader") == 1.0).then_some(())
    })
    .await;
    patch_job_ok(&ns.name, r#"{"spec":{"suspend":true}}"#);
    wait_phase(&ns.name, "contacts", "Suspended").await;
    assert!(
        standby.writes() > 0.0,
        "the new leader did not write the status"
    );
    ns.delete().await;
    standby.stop();
}

/// Worker pods on the fake nodes are real local `freight worker` processes:
/// their number follows the Deployment, and suspend stops them all.
#[tokio::test]
async fn worker_pods_run_as_processes_and_suspend_stops_them() {
    let (ns, op) = namespace_with_operator("workers").await;
    let _pg = run_example_slowed(&ns.name, LONG_TABLE, Some(SLOW_BATCH), |job| {
        let job = job.replace("    min: 1\n", "    min: 2\n");
        assert!(job.contains("min: 2"));
        job
    });

    let procs = eventually("two worker processes", MINUTE, || async {
        let p = running_processes(&ns.name);
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &procs {
        let log = state_dir().join(format!("pods/{}_{}_worker.log", p.namespace, p.pod));
        let text = eventually("worker log", MINUTE, || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("worker starting"))
        })
        .await;
        assert!(text.contains("\"job\":\"contacts\""), "{text}");
    }

    patch_job_ok(&ns.name, r#"{"spec":{"suspend":true}}"#);
    wait_phase(&ns.name, "contacts", "Suspended").await;
    eventually("no worker process while suspended", MINUTE, || async {
        live_processes(&ns.name).is_empty().then_some(())
    })
    .await;
    // Each worker was stopped with SIGTERM and shut down cleanly.
    for p in &procs {
        let log = state_dir().join(format!("pods/{}_{}_worker.log", p.namespace, p.pod));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("worker stopped"),
            "{} did not stop gracefully:\n{text}",
            p.pod
        );
    }

    patch_job_ok(&ns.name, r#"{"spec":{"suspend":false}}"#);
    eventually("workers back after resume", MINUTE, || async {
        (running_processes(&ns.name).len() == 2).then_some(())
    })
    .await;
    wait_phase(&ns.name, "contacts", "Running").await;
    ns.delete().await;
    op.stop();
}
