//! The operator as a local process: started with the chart's ServiceAccount
//! identity in a test namespace, read through its HTTP endpoints and log.

use super::*;

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
