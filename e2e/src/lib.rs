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
mod namespace;
mod operator;
pub mod prometheus;
mod tables;

pub use gitops::{Reading, argocd_health, expect_gitops, kstatus, kstatus_of_phase};
pub use namespace::TestNamespace;
pub use operator::{Operator, OperatorOptions};
pub use pg::TempPostgres;
pub use tables::*;

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
