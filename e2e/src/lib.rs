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
            .env("FREIGHT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,freight=debug")
            .env_remove("FREIGHT_WATCH_NAMESPACE")
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file);
        if let Some(ns) = opts.namespace {
            cmd.env("FREIGHT_WATCH_NAMESPACE", ns);
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
    /// Being stopped (its pod is gone).
    #[serde(default)]
    pub stopping: bool,
}

/// The live worker processes of `namespace`, per the pod runner.
pub fn running_processes(namespace: &str) -> Vec<RunningProcess> {
    let path = state_dir().join("pods/running.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "[]".into());
    serde_json::from_str::<Vec<RunningProcess>>(&text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.namespace == namespace && !p.stopping)
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), None).is_ok())
        .collect()
}
