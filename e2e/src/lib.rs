//! Fixtures of the end-to-end tests: a namespace per test, the chart
//! installed into it, and the operator run as a local process with the
//! chart's ServiceAccount identity (impersonation), so every scenario also
//! proves that the chart's RBAC is enough.
//!
//! The harness (`e2e/run.sh`) starts the control plane, installs the CRD and
//! the pod runner, and exports `KUBECONFIG`, `PATH` (kubectl, helm) and
//! `FREIGHT_E2E_STATE` before these tests run.

use std::{
    future::Future,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use kube::config::Kubeconfig;
use rand::Rng;
use serde_json::Value;

#[path = "../../tests/common/pg.rs"]
pub mod pg;

pub mod dashboard;
pub mod gitops;
pub mod prometheus;

pub use gitops::{Reading, argocd_health, expect_gitops, kstatus, kstatus_of_phase};
pub use pg::TempPostgres;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the harness keeps logs and state.
pub fn state_dir() -> PathBuf {
    std::env::var_os("FREIGHT_E2E_STATE")
        .map_or_else(|| PathBuf::from("/tmp/freight-e2e"), PathBuf::from)
}

/// The `freight` binary under test.
pub fn freight_bin() -> PathBuf {
    std::env::var_os("FREIGHT_E2E_BIN")
        .map_or_else(|| repo_root().join("target/debug/freight"), PathBuf::from)
}

/// Runs kubectl with the harness's kubeconfig.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl is on PATH (source e2e/cluster/env.sh)")
}

/// Runs kubectl, feeding `stdin`.
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is on PATH");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write kubectl stdin");
    child.wait_with_output().expect("kubectl ran")
}

/// Runs kubectl and returns stdout, panicking with stderr on failure.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs helm and panics with its output on failure.
pub fn helm_ok(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm is on PATH (source e2e/cluster/env.sh)");
    assert!(
        out.status.success(),
        "helm {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A short random suffix for names.
pub fn suffix() -> String {
    let n: u32 = rand::rng().random_range(0..0xff_ffff);
    format!("{n:06x}")
}

/// A namespace of one test, with the chart installed into it.
pub struct TestNamespace {
    /// The namespace.
    pub name: String,
    /// The Helm release (and ServiceAccount) name.
    pub release: String,
    /// Port of the batch coordinator of every operator run for this
    /// namespace: workers are given `http://127.0.0.1:<port>`, which must not
    /// change when an operator is restarted (it is part of the worker
    /// Deployment).
    pub coordinator_port: u16,
    deleted: bool,
}

impl Drop for TestNamespace {
    /// A test that panicked did not call `delete`: clear its finalizers and
    /// remove what it made, so that the next tests start clean.
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let _ = Command::new("kubectl")
            .args([
                "-n",
                &self.name,
                "patch",
                "migrationjobs",
                "--all",
                "--type=merge",
            ])
            .args(["-p", r#"{"metadata":{"finalizers":null}}"#])
            .output();
        let _ = Command::new("helm")
            .args(["uninstall", &self.release, "--namespace", &self.name])
            .output();
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` and installs the chart into it,
    /// watching only this namespace (namespaced RBAC), with no in-cluster
    /// operator pod: tests run the operator as a local process instead.
    pub fn create(prefix: &str) -> Self {
        Self::create_with(prefix, &[&format!("watchNamespace={}", "{ns}")])
    }

    /// Like [`create`](Self::create) with extra `--set` values; `{ns}` in a
    /// value is replaced by the namespace name.
    pub fn create_with(prefix: &str, sets: &[&str]) -> Self {
        let id = suffix();
        let name = format!("e2e-{prefix}-{id}");
        // Unique release names: cluster-scoped RBAC objects are named after the release.
        let release = format!("freight-{id}");
        kubectl_ok(&["create", "namespace", &name]);
        let mut args = vec![
            "install".to_owned(),
            release.clone(),
            repo_root().join("charts/freight").display().to_string(),
            "--namespace".into(),
            name.clone(),
            "--skip-crds".into(),
            "--set".into(),
            "replicaCount=0".into(),
        ];
        for s in sets {
            args.push("--set".into());
            args.push(s.replace("{ns}", &name));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm_ok(&args);
        Self {
            name,
            release,
            coordinator_port: free_port(),
            deleted: false,
        }
    }

    /// The user name the chart's ServiceAccount authenticates as.
    pub fn service_account_user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.name, self.release)
    }

    /// A kubeconfig that impersonates the chart's ServiceAccount.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read().expect("read KUBECONFIG");
        for auth in &mut kubeconfig.auth_infos {
            if let Some(info) = auth.auth_info.as_mut() {
                info.impersonate = Some(self.service_account_user());
            }
        }
        let path = state_dir().join(format!("kubeconfig-{}", self.name));
        std::fs::write(
            &path,
            serde_yaml::to_string(&kubeconfig).expect("kubeconfig serializes"),
        )
        .expect("write kubeconfig");
        path
    }

    /// Deletes the jobs (while the operator and its RBAC are still there to
    /// process their finalizers), uninstalls the chart, deletes the namespace
    /// and waits until it is gone.
    pub async fn delete(mut self) {
        self.deleted = true;
        kubectl_ok(&[
            "-n",
            &self.name,
            "delete",
            "migrationjobs",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ]);
        helm_ok(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.name,
            "--wait",
        ]);
        kubectl_ok(&["delete", "namespace", &self.name, "--wait=false"]);
        let name = self.name.clone();
        eventually("namespace deletion", Duration::from_secs(90), || {
            let name = name.clone();
            async move {
                let out = kubectl(&["get", "namespace", &name]);
                (!out.status.success()).then_some(())
            }
        })
        .await;
    }
}

/// Options of a local operator process.
pub struct OperatorOptions<'a> {
    /// Kubeconfig the operator uses.
    pub kubeconfig: &'a Path,
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<&'a str>,
    /// Namespace of the leader Lease.
    pub lease_namespace: &'a str,
    /// Identity in the lease.
    pub identity: &'a str,
    /// Lease duration in seconds.
    pub lease_seconds: u64,
    /// Port of the batch coordinator; workers are sent to
    /// `http://127.0.0.1:<port>` (`FREIGHT_COORDINATOR_URL`).
    pub coordinator_port: u16,
    /// Address the coordinator listens on (`FREIGHT_COORDINATOR_ADDR` is
    /// `<ip>:<coordinator_port>`): 127.0.0.1, or another loopback address
    /// for a second replica running at the same time.
    pub coordinator_ip: &'a str,
    /// `FREIGHT_BATCH_LEASE_SECONDS`: how long a worker holds a batch before
    /// it can go to another worker (None: the operator's default).
    pub batch_lease_seconds: Option<u64>,
    /// `FREIGHT_STATUS_INTERVAL_SECONDS`: minimum seconds between
    /// progress-only status writes (None: the operator's default).
    pub status_interval_seconds: Option<u64>,
}

impl<'a> OperatorOptions<'a> {
    /// An operator watching only `ns`, with its leader Lease in `ns`, a
    /// 15-second leader lease and the namespace's coordinator port.
    pub fn new(ns: &'a TestNamespace, kubeconfig: &'a Path, identity: &'a str) -> Self {
        Self {
            kubeconfig,
            namespace: Some(&ns.name),
            lease_namespace: &ns.name,
            identity,
            lease_seconds: 15,
            coordinator_port: ns.coordinator_port,
            coordinator_ip: "127.0.0.1",
            batch_lease_seconds: None,
            status_interval_seconds: None,
        }
    }
}

/// A `freight operator` running as a local process.
pub struct Operator {
    child: std::process::Child,
    /// Port of its `/metrics`.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts an operator and waits until its `/readyz` answers.
    pub async fn start(opts: &OperatorOptions<'_>) -> Self {
        let port = free_port();
        let log = state_dir().join(format!("operator-{}.log", opts.identity));
        let file = std::fs::File::create(&log).expect("create operator log");
        let mut cmd = Command::new(freight_bin());
        cmd.arg("operator")
            .env("KUBECONFIG", opts.kubeconfig)
            .env("FREIGHT_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("FREIGHT_WORKER_IMAGE", "freight:e2e")
            .env("POD_NAMESPACE", opts.lease_namespace)
            .env("POD_NAME", opts.identity)
            .env(
                "FREIGHT_LEASE_DURATION_SECONDS",
                opts.lease_seconds.to_string(),
            )
            .env(
                "FREIGHT_COORDINATOR_ADDR",
                format!("{}:{}", opts.coordinator_ip, opts.coordinator_port),
            )
            .env(
                "FREIGHT_COORDINATOR_URL",
                format!("http://127.0.0.1:{}", opts.coordinator_port),
            )
            .env_remove("FREIGHT_BATCH_LEASE_SECONDS")
            .env_remove("FREIGHT_STATUS_INTERVAL_SECONDS")
            .env("FREIGHT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,freight=debug")
            .env_remove("FREIGHT_WATCH_NAMESPACE")
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file);
        if let Some(ns) = opts.namespace {
            cmd.env("FREIGHT_WATCH_NAMESPACE", ns);
        }
        if let Some(s) = opts.batch_lease_seconds {
            cmd.env("FREIGHT_BATCH_LEASE_SECONDS", s.to_string());
        }
        if let Some(s) = opts.status_interval_seconds {
            cmd.env("FREIGHT_STATUS_INTERVAL_SECONDS", s.to_string());
        }
        let child = cmd.spawn().expect("start freight operator");
        let op = Self { child, port, log };
        eventually("operator /readyz", Duration::from_secs(30), || async {
            op.get("/readyz").filter(|b| b.contains("ok")).map(|_| ())
        })
        .await;
        op
    }

    /// GETs a path from the operator's HTTP endpoint.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.port, path)
    }

    /// The value of a metric (summed over its labels), from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let body = self.get("/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Writes the operator has sent to the API (its own counter).
    pub fn writes(&self) -> f64 {
        self.metric("freight_api_writes_total")
    }

    /// Sends SIGKILL (a crash) and reaps the process.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop) and waits for the process to exit.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// A minimal HTTP/1.0 GET against 127.0.0.1 (enough for /metrics and /readyz).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// Write requests (create/update/patch/delete) by `user` in the audit log,
/// excluding Lease renewals.
pub fn audit_writes(user: &str) -> Vec<Value> {
    let path = std::env::var_os("FREIGHT_AUDIT_LOG")
        .map_or_else(|| state_dir().join("audit.log"), PathBuf::from);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["user"]["username"] == user || e["impersonatedUser"]["username"] == user)
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter(|e| e["objectRef"]["resource"] != "leases")
        .collect()
}

/// A process the pod runner started for a worker pod.
#[derive(Debug, serde::Deserialize)]
pub struct RunningProcess {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Process id.
    pub pid: i32,
    /// Loopback port of its `/metrics` (0 from a pod runner that did not say).
    #[serde(default, rename = "metricsPort")]
    pub metrics_port: u16,
    /// Being stopped (its pod is gone).
    #[serde(default)]
    pub stopping: bool,
    /// How often the runner restarted it after it exited on its own.
    #[serde(default)]
    pub restarts: u32,
}

/// The live worker processes of `namespace` whose pods exist, per the pod
/// runner (not those being stopped because their pod is gone).
pub fn running_processes(namespace: &str) -> Vec<RunningProcess> {
    live_processes(namespace)
        .into_iter()
        .filter(|p| !p.stopping)
        .collect()
}

/// Every live worker process of `namespace`, including those still
/// stopping (finishing their batch after SIGTERM).
pub fn live_processes(namespace: &str) -> Vec<RunningProcess> {
    let path = state_dir().join("pods/running.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "[]".into());
    serde_json::from_str::<Vec<RunningProcess>>(&text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.namespace == namespace)
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), None).is_ok())
        .collect()
}

/// Runs kubectl and parses its JSON output (None when kubectl failed).
pub fn get_json(args: &[&str]) -> Option<Value> {
    let out = kubectl(args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The MigrationJob `name` of `ns`, as JSON.
pub fn job(ns: &str, name: &str) -> Option<Value> {
    get_json(&["-n", ns, "get", "migrationjob", name, "-o", "json"])
}

/// The condition `type_` of a job, if it has one.
pub fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits until the job is in `phase`; returns it.
pub async fn wait_phase(ns: &str, name: &str, phase: &str, timeout: Duration) -> Value {
    eventually(&format!("{name} in phase {phase}"), timeout, || async {
        job(ns, name).filter(|j| j["status"]["phase"] == phase)
    })
    .await
}

/// Merge-patches the MigrationJob `name`; returns kubectl's result.
pub fn patch_job(ns: &str, name: &str, patch: &str) -> Output {
    kubectl(&["-n", ns, "patch", "mj", name, "--type=merge", "-p", patch])
}

/// Merge-patches the MigrationJob `name`, which must succeed.
pub fn patch_job_ok(ns: &str, name: &str, patch: &str) {
    let out = patch_job(ns, name, patch);
    assert!(
        out.status.success(),
        "patch {patch}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates (or replaces) the Secrets of `examples/postgres-to-postgres.yaml`,
/// `legacy-db` and `new-db` (key `url`), pointing at real databases.
pub fn create_db_secrets(ns: &str, source_url: &str, target_url: &str) {
    for (name, url) in [("legacy-db", source_url), ("new-db", target_url)] {
        create_url_secret(ns, name, url);
    }
}

/// Creates (or replaces) the Secret `name` with the connection string `url`
/// under the key `url`.
pub fn create_url_secret(ns: &str, name: &str, url: &str) {
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "stringData": {"url": url},
    });
    let out = kubectl_stdin(&["-n", ns, "apply", "-f", "-"], &secret.to_string());
    assert!(
        out.status.success(),
        "create Secret {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example's `contacts` table (the same columns as in the data-plane
/// tests and `make bench`).
pub const CONTACTS_TABLE: &str = "CREATE TABLE contacts (
    id bigint PRIMARY KEY, email text NOT NULL, age int, note jsonb, seen timestamptz)";

/// Inserts `rows` contacts (ids 1..=rows) into `contacts` of `database`.
pub fn insert_contacts(pg: &TempPostgres, database: &str, rows: u64) {
    pg.psql(
        database,
        &format!(
            "INSERT INTO contacts
             SELECT g, 'user' || g || '@example.com', (g % 100)::int,
                    jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7)),
                    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
               FROM generate_series(1, {rows}) g"
        ),
    );
}

/// The example's setup on a real PostgreSQL: `contacts` with `rows` rows in
/// database `source`, an empty `contacts` in `target` (same columns, so the
/// direct COPY path), and the Secrets `legacy-db`/`new-db` pointing at them.
pub fn seed_example(ns: &str, pg: &TempPostgres, rows: u64) {
    pg.psql("source", CONTACTS_TABLE);
    pg.psql("target", CONTACTS_TABLE);
    insert_contacts(pg, "source", rows);
    create_db_secrets(ns, &pg.url("source"), &pg.url("target"));
}

/// Applies the MigrationJob of `examples/postgres-to-postgres.yaml` (not its
/// Secrets, which point at a database the tests do not run), after `edit`.
pub fn apply_example_job(ns: &str, edit: impl FnOnce(String) -> String) {
    let manifest = std::fs::read_to_string(repo_root().join("examples/postgres-to-postgres.yaml"))
        .expect("read the example");
    let job: String = manifest
        .split("\n---")
        .filter(|d| d.contains("kind: MigrationJob"))
        .collect();
    let job = edit(job);
    let out = kubectl_stdin(&["-n", ns, "apply", "-f", "-"], &job);
    assert!(
        out.status.success(),
        "apply the example's job: {}\n{job}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows of `table` in `database`: count and an md5 over every column of
/// every row in key order. Equal on both sides means identical data.
pub fn checksum(pg: &TempPostgres, database: &str, table: &str, key: &str) -> String {
    pg.psql(
        database,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '')
               FROM {table} t"
        ),
    )
}

/// Holder of the operator's leader Lease in `ns`.
pub fn lease_holder(ns: &str) -> Option<String> {
    get_json(&["-n", ns, "get", "lease", "freight-operator", "-o", "json"])?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// The worker Deployments of job `name`.
pub fn worker_deployments(ns: &str, name: &str) -> Vec<Value> {
    get_json(&[
        "-n",
        ns,
        "get",
        "deployments",
        "-l",
        &format!("freight.dev/job={name}"),
        "-o",
        "json",
    ])
    .and_then(|v| v["items"].as_array().cloned())
    .unwrap_or_default()
}

/// Waits until job `name` runs no worker: every worker Deployment has
/// `replicas: 0` and no process of `ns` is left, not even one finishing its
/// last batch.
pub async fn wait_no_workers(ns: &str, name: &str, timeout: Duration) {
    eventually(
        &format!("{name}: worker Deployments at 0 replicas and no worker process"),
        timeout,
        || async {
            let scaled_down = worker_deployments(ns, name)
                .iter()
                .all(|d| d["spec"]["replicas"] == 0);
            (scaled_down && live_processes(ns).is_empty()).then_some(())
        },
    )
    .await;
}

/// Makes every statement that writes into `table` of `database` take at
/// least `seconds` (a statement-level trigger that sleeps; rows are
/// unchanged). Each batch then takes at least that long whatever the
/// machine, so a scenario can act while a job is running.
pub fn slow_down_writes(pg: &TempPostgres, database: &str, table: &str, seconds: f64) {
    pg.psql(
        database,
        &format!(
            "CREATE OR REPLACE FUNCTION freight_e2e_slow() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END $$;
             CREATE TRIGGER freight_e2e_slow BEFORE INSERT ON {table}
               FOR EACH STATEMENT EXECUTE FUNCTION freight_e2e_slow('{seconds}')"
        ),
    );
}

/// A gate on the writes into `table` of `database`: while it is closed,
/// every statement that writes into the table waits (a statement-level
/// trigger takes a shared advisory lock that the gate holds exclusively),
/// so a job's batches block mid-write as behind a lock; opening it lets
/// them all go on at once. Each write also takes at least `seconds` (see
/// [`slow_down_writes`]). Open when made; dropping it opens it.
pub struct WriteGate {
    url: String,
    holder: Option<std::process::Child>,
}

/// Advisory lock key of [`WriteGate`] (the two-key form, apart from the
/// ledger's one-key advisory locks).
const GATE_KEY: &str = "7, 4242";

impl WriteGate {
    /// Installs the gate on `table` of `database`.
    pub fn install(pg: &TempPostgres, database: &str, table: &str, seconds: f64) -> Self {
        pg.psql(
            database,
            &format!(
                "CREATE OR REPLACE FUNCTION freight_e2e_gate() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN
                        PERFORM pg_advisory_lock_shared({GATE_KEY});
                        PERFORM pg_advisory_unlock_shared({GATE_KEY});
                        PERFORM pg_sleep(TG_ARGV[0]::float8);
                        RETURN NULL;
                      END $$;
                 CREATE TRIGGER freight_e2e_gate BEFORE INSERT ON {table}
                   FOR EACH STATEMENT EXECUTE FUNCTION freight_e2e_gate('{seconds}')"
            ),
        );
        Self {
            url: pg.url(database),
            holder: None,
        }
    }

    /// Closes the gate: holds the lock in a session of its own, and waits
    /// until it is held.
    pub fn close(&mut self, pg: &TempPostgres, database: &str) {
        assert!(self.holder.is_none(), "the gate is already closed");
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql is installed");
        child
            .stdin
            .as_mut()
            .expect("stdin is piped")
            .write_all(format!("SELECT pg_advisory_lock({GATE_KEY});\n").as_bytes())
            .expect("write to psql");
        self.holder = Some(child);
        let (class, obj) = GATE_KEY.split_once(", ").expect("two keys");
        let held = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {class}
               AND objid = {obj} AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted"
        );
        let start = Instant::now();
        while pg.psql(database, &held) != "1" {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the gate's lock was not granted in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens the gate and drops the trigger: writes go at full speed.
    pub fn remove(mut self, pg: &TempPostgres, database: &str, table: &str) {
        self.open();
        pg.psql(
            database,
            &format!("DROP TRIGGER freight_e2e_gate ON {table}"),
        );
    }

    /// Opens the gate (ends the session holding the lock).
    pub fn open(&mut self) {
        if let Some(mut child) = self.holder.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        self.open();
    }
}
