//! A real Prometheus for the end-to-end tests: the server built from its Go
//! module by `e2e/cluster/build.sh` (on PATH through `e2e/cluster/env.sh`),
//! scraping the operator and the worker processes on their loopback ports
//! every second. Targets come from a `file_sd` file that [`TargetSync`]
//! rewrites as workers come and go; queries and alerts are read through its
//! HTTP API.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{eventually, free_port, live_processes, state_dir};

/// Seconds between scrapes and between rule evaluations.
pub const SCRAPE_SECONDS: u64 = 1;

/// A `prometheus` process with its own configuration and storage.
pub struct Prometheus {
    child: Child,
    /// Port of its HTTP API.
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping the targets of `targets.json` in its own
    /// directory under the e2e state (`name` tells runs apart), evaluating
    /// `rules` (a Prometheus rules file, if any); waits until it is ready.
    ///
    /// Scrapes keep the targets' own `namespace` and `job` labels
    /// (`honor_labels`), as the chart's ServiceMonitor and PodMonitor must:
    /// Freight's per-job metrics label a MigrationJob with `job`, which
    /// would otherwise become `exported_job`.
    pub async fn start(name: &str, rules: Option<&str>) -> Self {
        let dir = state_dir().join(format!("prometheus-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Prometheus directory");
        write_atomic(&dir.join("targets.json"), "[]");
        let mut config = format!(
            "global:
  scrape_interval: {SCRAPE_SECONDS}s
  scrape_timeout: {SCRAPE_SECONDS}s
  evaluation_interval: {SCRAPE_SECONDS}s
scrape_configs:
  - job_name: freight
    honor_labels: true
    file_sd_configs:
      - files: ['{}']
        refresh_interval: 1s
",
            dir.join("targets.json").display()
        );
        if let Some(rules) = rules {
            std::fs::write(dir.join("rules.yaml"), rules).expect("write the rules");
            config.push_str(&format!(
                "rule_files: ['{}']\n",
                dir.join("rules.yaml").display()
            ));
        }
        std::fs::write(dir.join("prometheus.yaml"), config).expect("write the config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yaml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect(
                "prometheus is on PATH (e2e/cluster/build.sh builds it; source e2e/cluster/env.sh)",
            );
        let prom = Self { child, port, dir };
        eventually("Prometheus ready", Duration::from_secs(60), || async {
            let (status, _) = prom.get("/-/ready")?;
            (status == 200).then_some(())
        })
        .await;
        prom
    }

    /// Its directory (config, rules, targets, log, storage).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the scrape targets (see [`write_targets`]).
    pub fn set_targets(&self, targets: &[(&str, u16)]) {
        write_targets(&self.dir, targets);
    }

    /// GETs `path` from its API: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get_any(self.port, path)
    }

    /// Evaluates `expr` now (`/api/v1/query`): the result's series, or
    /// Prometheus' error.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", url_encode(expr)))
            .ok_or("no answer from Prometheus")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{status}: {}: {}", v["errorType"], v["error"]));
        }
        match &v["data"]["result"] {
            Value::Array(series) => Ok(series.clone()),
            // A scalar or a string is one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The values of `label` over the series of `selector`.
    pub fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>, String> {
        Ok(self
            .query(&format!("group by ({label}) ({selector})"))?
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
            .collect())
    }

    /// Every metric name Prometheus holds.
    pub fn metric_names(&self) -> Vec<String> {
        self.get("/api/v1/label/__name__/values")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    /// Its active alerts (`/api/v1/alerts`): pending and firing.
    pub fn alerts(&self) -> Vec<Value> {
        self.get("/api/v1/alerts")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The health of its rules: (name, health, last error).
    pub fn rule_health(&self) -> Vec<(String, String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        self.get("/api/v1/rules")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["groups"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| (text(&r["name"]), text(&r["health"]), text(&r["lastError"])))
            .collect()
    }

    /// The health of its scrape targets: (scrape URL, health, last error).
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        self.get("/api/v1/targets")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["activeTargets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    text(&t["scrapeUrl"]),
                    text(&t["health"]),
                    text(&t["lastError"]),
                )
            })
            .collect()
    }

    /// The tail of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps Prometheus' targets at the operator's port plus the `/metrics`
/// port of every live worker process of a namespace (the pod runner gives
/// each process, restarts included, a new port), every 500 ms until
/// dropped.
pub struct TargetSync {
    task: tokio::task::JoinHandle<()>,
}

impl TargetSync {
    /// Starts keeping `prom`'s targets in step; `prom` must outlive it.
    pub fn start(prom: &Prometheus, operator_port: u16, namespace: &str) -> Self {
        let dir = prom.dir.clone();
        let namespace = namespace.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let mut targets = vec![("operator", operator_port)];
                targets.extend(
                    live_processes(&namespace)
                        .iter()
                        .filter(|p| p.metrics_port != 0)
                        .map(|p| ("worker", p.metrics_port)),
                );
                write_targets(&dir, &targets);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { task }
    }
}

impl Drop for TargetSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the `file_sd` targets file of the Prometheus in `dir` (when it
/// changed): loopback ports, each with a `role` label (operator, worker)
/// that no Freight metric uses.
fn write_targets(dir: &Path, targets: &[(&str, u16)]) {
    let groups: Vec<Value> = targets
        .iter()
        .map(|(role, port)| {
            json!({"targets": [format!("127.0.0.1:{port}")], "labels": {"role": role}})
        })
        .collect();
    let text = serde_json::to_string_pretty(&groups).expect("targets serialize");
    let path = dir.join("targets.json");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&path, &text);
    }
}

/// Writes through a temporary file and a rename, so that Prometheus never
/// reads half a file.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write a temporary file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.0 GET against 127.0.0.1: (status, body) whatever the status.
pub fn http_get_any(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_owned()))
}
