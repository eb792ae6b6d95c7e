//! Pod runner of the end-to-end tests: backs the Freight pods that the scheduler puts on kwok's
//! fake nodes with real local processes (there is no kubelet), started with the pod's resolved
//! environment and stopped (SIGTERM, grace period, SIGKILL) when the pod goes away.
//!
//! Env: KUBECONFIG, FREIGHT_E2E_BIN (required), FREIGHT_E2E_STATE (default /tmp/freight-e2e),
//! FREIGHT_E2E_POD_SELECTOR or `--selector` (default `app.kubernetes.io/part-of=freight`).
//! Writes `<state>/pods/running.json` (each process with the loopback port of its `/metrics`,
//! which tests scrape) and `<state>/pods/<ns>_<pod>_<container>.log`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

const DEFAULT_SELECTOR: &str = "app.kubernetes.io/part-of=freight";
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Retry interval while a container cannot be started (missing Secret/ConfigMap key, ...).
const CONFIG_RETRY: Duration = Duration::from_secs(2);

type PodKey = (String, String); // namespace, pod
type ProcKey = (String, String, String); // namespace, pod, container

/// One (pod, container) the runner is responsible for: running, or waiting to be (re)started.
struct Proc {
    uid: String,
    grace: Duration,
    restarts: u32,
    backoff: Duration,
    retry_at: Instant,
    last_error: Option<String>,
    run: Option<Running>,
}

struct Running {
    child: Child,
    pid: u32,
    /// Loopback port of its `/metrics` (`FREIGHT_METRICS_ADDR`).
    metrics_port: u16,
    started_at: String,
    started: Instant,
}

/// A process whose pod is gone: SIGTERM was sent, SIGKILL follows at `deadline`.
struct Stopping {
    key: ProcKey,
    run: Running,
    restarts: u32,
    deadline: Instant,
    killed: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateEntry<'a> {
    namespace: &'a str,
    pod: &'a str,
    container: &'a str,
    pid: u32,
    /// Loopback port of the process's `/metrics`.
    metrics_port: u16,
    started_at: &'a str,
    restarts: u32,
    /// True while the process is terminating after its pod went away.
    stopping: bool,
}

struct Runner {
    client: Client,
    bin: PathBuf,
    dir: PathBuf,
    pods: HashMap<PodKey, Pod>,
    procs: BTreeMap<ProcKey, Proc>,
    stopping: Vec<Stopping>,
    skip_logged: HashSet<String>,
    dirty: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let bin =
        PathBuf::from(std::env::var("FREIGHT_E2E_BIN").map_err(|_| "FREIGHT_E2E_BIN is not set")?);
    let state = std::env::var("FREIGHT_E2E_STATE").unwrap_or_else(|_| "/tmp/freight-e2e".into());
    let dir = Path::new(&state).join("pods");
    fs::create_dir_all(&dir)?;
    let selector = selector_from_args(std::env::args().skip(1))
        .or_else(|| std::env::var("FREIGHT_E2E_POD_SELECTOR").ok())
        .unwrap_or_else(|| DEFAULT_SELECTOR.into());

    let client = Client::try_default().await?;
    let mut config = watcher::Config::default();
    if !selector.is_empty() {
        config = config.labels(&selector);
    }
    let mut events = watcher(Api::<Pod>::all(client.clone()), config)
        .default_backoff()
        .boxed();
    let mut runner = Runner {
        client,
        bin,
        dir,
        pods: HashMap::new(),
        procs: BTreeMap::new(),
        stopping: Vec::new(),
        skip_logged: HashSet::new(),
        dirty: true,
    };
    runner.write_state();
    info!(%selector, bin = %runner.bin.display(), "pod runner started");

    let (mut sigterm, mut sigint) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut init: Option<HashMap<PodKey, Pod>> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(pod))) => { runner.pods.insert(pod_key(&pod), pod); }
                Some(Ok(watcher::Event::Delete(pod))) => { runner.pods.remove(&pod_key(&pod)); }
                Some(Ok(watcher::Event::Init)) => init = Some(HashMap::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    init.get_or_insert_with(HashMap::new).insert(pod_key(&pod), pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    runner.pods = init.take().unwrap_or_default();
                    info!(pods = runner.pods.len(), "initial pod list complete");
                }
                Some(Err(e)) => { warn!(error = %e, "pod watch failed; retrying"); continue; }
                None => { warn!("pod watch ended"); break; }
            },
            _ = tick.tick() => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        runner.reconcile().await;
    }
    runner.shutdown().await;
    Ok(())
}

fn selector_from_args(mut args: impl Iterator<Item = String>) -> Option<String> {
    while let Some(arg) = args.next() {
        if arg == "--selector" {
            return args.next();
        }
        if let Some(v) = arg.strip_prefix("--selector=") {
            return Some(v.to_string());
        }
    }
    None
}

fn pod_key(pod: &Pod) -> PodKey {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Scheduled, not being deleted, not finished.
fn is_wanted(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// True when the image repository's last path segment is `freight` (any tag or digest).
fn is_freight_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    last.split(':').next() == Some("freight")
}

fn freight_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .filter(|c| c.image.as_deref().is_some_and(is_freight_image))
}

/// Argv after the binary name: `command[1..] + args` when command is set, else `args`.
fn build_argv(c: &Container) -> Vec<String> {
    let args = c.args.iter().flatten();
    match c.command.as_deref() {
        Some([_, rest @ ..]) => rest.iter().chain(args).cloned().collect(),
        _ => args.cloned().collect(),
    }
}

/// Kubelet-style `$(VAR)` expansion: `$$` is a literal `$`; unknown variables stay as written.
fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(') {
            let Some(end) = r.find(')') else {
                out.push_str("$(");
                out.push_str(r);
                return out;
            };
            match lookup(&r[..end]) {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[i..i + end + 3]),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn lookup_in(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn field_ref(pod: &Pod, path: &str) -> Result<String, String> {
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into()),
        "status.hostIP" => "127.0.0.1".into(),
        _ => {
            if let Some(k) = subscript("metadata.labels['") {
                pod.labels().get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations['") {
                pod.annotations().get(&k).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

/// Secrets and ConfigMaps of one namespace, fetched once per start attempt.
struct Sources<'a> {
    client: &'a Client,
    ns: &'a str,
    cache: HashMap<(bool, String), Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    async fn get(
        &mut self,
        secret: bool,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, String> {
        let key = (secret, name.to_string());
        if !self.cache.contains_key(&key) {
            let data = if secret {
                let s = Api::<Secret>::namespaced(self.client.clone(), self.ns)
                    .get_opt(name)
                    .await;
                let s = s.map_err(|e| format!("get secret {name}: {e}"))?;
                s.map(|s| {
                    let data = s.data.unwrap_or_default().into_iter();
                    data.map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect()
                })
            } else {
                let c = Api::<ConfigMap>::namespaced(self.client.clone(), self.ns)
                    .get_opt(name)
                    .await;
                c.map_err(|e| format!("get configmap {name}: {e}"))?
                    .map(|c| c.data.unwrap_or_default())
            };
            self.cache.insert(key.clone(), data);
        }
        Ok(self.cache.get(&key).and_then(Option::as_ref))
    }

    async fn key(
        &mut self,
        secret: bool,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<String>, String> {
        match self.get(secret, name).await?.and_then(|d| d.get(key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional == Some(true) => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {} {}/{name}",
                kind(secret),
                self.ns
            )),
        }
    }
}

fn kind(secret: bool) -> &'static str {
    if secret { "Secret" } else { "ConfigMap" }
}

/// The container's environment as kubelet would build it (envFrom first, then env).
async fn resolve_env(
    client: &Client,
    pod: &Pod,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut src = Sources {
        client,
        ns: &ns,
        cache: HashMap::new(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let refs = [
            from.secret_ref
                .as_ref()
                .map(|r| (true, &r.name, r.optional)),
            from.config_map_ref
                .as_ref()
                .map(|r| (false, &r.name, r.optional)),
        ];
        for (secret, name, optional) in refs.into_iter().flatten() {
            match src.get(secret, name).await? {
                Some(data) => env.extend(
                    data.iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                ),
                None if optional == Some(true) => {}
                None => return Err(format!("{} {ns}/{name} not found", kind(secret))),
            }
        }
    }
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.secret_key_ref {
                    src.key(true, &r.name, &r.key, r.optional).await?
                } else if let Some(r) = &from.config_map_key_ref {
                    src.key(false, &r.name, &r.key, r.optional).await?
                } else if let Some(r) = &from.field_ref {
                    Some(field_ref(pod, &r.field_path)?)
                } else {
                    warn!(var = %var.name, "unsupported valueFrom; variable skipped");
                    None
                }
            }
            (Some(v), None) => Some(expand(v, lookup_in(&env))),
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    env.retain(|(k, _)| !k.is_empty() && !k.contains('='));
    Ok(env)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal_pid(pid: u32, sig: Signal, group: bool) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = if group {
        killpg(Pid::from_raw(raw), sig)
    } else {
        kill(Pid::from_raw(raw), sig)
    };
}

impl Runner {
    fn wants(&self, (ns, pod, container): &ProcKey, uid: &str) -> bool {
        self.pods.get(&(ns.clone(), pod.clone())).is_some_and(|p| {
            is_wanted(p)
                && p.uid().as_deref() == Some(uid)
                && freight_containers(p).any(|c| &c.name == container)
        })
    }

    async fn reconcile(&mut self) {
        let now = Instant::now();
        // Processes that exited on their own: schedule a restart with exponential backoff.
        for ((ns, pod, container), p) in &mut self.procs {
            let Some(run) = &mut p.run else { continue };
            let status = match run.child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%ns, %pod, %container, pid = run.pid, error = %e, "wait failed");
                    continue;
                }
            };
            signal_pid(run.pid, Signal::SIGKILL, true); // leftovers of the process group
            if run.started.elapsed() > Duration::from_secs(60) {
                p.backoff = Duration::from_secs(1);
            }
            warn!(%ns, %pod, %container, pid = run.pid, %status, restart_in = ?p.backoff, "process exited");
            p.run = None;
            p.retry_at = now + p.backoff;
            p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
            p.restarts += 1;
            self.dirty = true;
        }
        // Processes being stopped: reap them, or SIGKILL after the grace period.
        self.stopping.retain_mut(|s| {
            let (ns, pod, container) = &s.key;
            match s.run.child.try_wait() {
                Ok(Some(status)) => {
                    signal_pid(s.run.pid, Signal::SIGKILL, true);
                    info!(%ns, %pod, %container, pid = s.run.pid, %status, "process stopped");
                    self.dirty = true;
                    return false;
                }
                Ok(None) if now >= s.deadline && !s.killed => {
                    warn!(%ns, %pod, %container, pid = s.run.pid, "grace period over; sending SIGKILL");
                    signal_pid(s.run.pid, Signal::SIGKILL, true);
                    s.killed = true;
                }
                Ok(None) => {}
                Err(e) => warn!(%ns, %pod, %container, pid = s.run.pid, error = %e, "wait failed"),
            }
            true
        });
        // Pods no longer wanted: SIGTERM their processes.
        let gone: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(k, p)| !self.wants(k, &p.uid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(p) = self.procs.remove(&key) else {
                continue;
            };
            if let Some(run) = p.run {
                let (ns, pod, container) = &key;
                info!(%ns, %pod, %container, pid = run.pid, grace = ?p.grace, "pod gone; sending SIGTERM");
                signal_pid(run.pid, Signal::SIGTERM, false);
                let deadline = now + p.grace;
                self.stopping.push(Stopping {
                    key,
                    run,
                    restarts: p.restarts,
                    deadline,
                    killed: false,
                });
                self.dirty = true;
            }
        }
        // Wanted containers without a running process: start them (when their backoff is over).
        let mut todo = Vec::new();
        for pod in self.pods.values().filter(|p| is_wanted(p)) {
            let (ns, name) = pod_key(pod);
            let uid = pod.uid().unwrap_or_default();
            let spec = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            if spec
                .iter()
                .any(|c| !c.image.as_deref().is_some_and(is_freight_image))
                && self.skip_logged.insert(uid.clone())
            {
                info!(%ns, pod = %name, "skipping containers whose image is not freight");
            }
            for c in freight_containers(pod) {
                let key = (ns.clone(), name.clone(), c.name.clone());
                let due = self
                    .procs
                    .get(&key)
                    .is_none_or(|p| p.run.is_none() && p.retry_at <= now);
                if due {
                    todo.push((key, pod.clone(), c.clone()));
                }
            }
        }
        let uids: HashSet<String> = self.pods.values().filter_map(|p| p.uid()).collect();
        self.skip_logged.retain(|u| uids.contains(u));
        for (key, pod, c) in todo {
            self.start(key, &pod, &c).await;
        }
        if std::mem::take(&mut self.dirty) {
            self.write_state();
        }
    }

    async fn start(&mut self, key: ProcKey, pod: &Pod, c: &Container) {
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let uid = pod.uid().unwrap_or_default();
        let result = self.spawn(&key, pod, c).await;
        let (ns, name, container) = &key;
        let p = self.procs.entry(key.clone()).or_insert_with(|| Proc {
            uid,
            grace: Duration::from_secs(grace.clamp(0, 60).unsigned_abs()),
            restarts: 0,
            backoff: Duration::from_secs(1),
            retry_at: Instant::now(),
            last_error: None,
            run: None,
        });
        match result {
            Ok((child, metrics_port, env_names)) => {
                let pid = child.id().unwrap_or_default();
                info!(%ns, pod = %name, %container, pid, restarts = p.restarts, env = %env_names, "process started");
                let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
                p.last_error = None;
                p.run = Some(Running {
                    child,
                    pid,
                    metrics_port,
                    started_at,
                    started: Instant::now(),
                });
                self.dirty = true;
            }
            Err(e) => {
                // Like kubelet's CreateContainerConfigError: retry soon, warn once per new error.
                if p.last_error.as_ref() != Some(&e) {
                    warn!(%ns, pod = %name, %container, error = %e, "cannot start process; retrying every 2s");
                }
                p.retry_at = Instant::now() + CONFIG_RETRY;
                p.last_error = Some(e);
            }
        }
    }

    /// Resolves the environment and spawns the process; returns it with the port of its
    /// `/metrics` and its env var names.
    async fn spawn(
        &self,
        (ns, pod_name, container): &ProcKey,
        pod: &Pod,
        c: &Container,
    ) -> Result<(Child, u16, String), String> {
        let mut env = resolve_env(&self.client, pod, c).await?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        env.push(("FREIGHT_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
        env.push(("FREIGHT_E2E_POD".into(), format!("{ns}/{pod_name}")));
        let argv: Vec<String> = build_argv(c)
            .iter()
            .map(|a| expand(a, lookup_in(&env)))
            .collect();
        let log_path = self.dir.join(format!("{ns}_{pod_name}_{container}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&argv)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        for var in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        // SAFETY: prctl(2) is async-signal-safe. Children die with the runner even if it is killed.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        Ok((child, port, names.join(",")))
    }

    fn write_state(&self) {
        let running = self
            .procs
            .iter()
            .filter_map(|(k, p)| p.run.as_ref().map(|r| (k, r, p.restarts, false)));
        let stopping = self
            .stopping
            .iter()
            .map(|s| (&s.key, &s.run, s.restarts, true));
        let entries: Vec<StateEntry> = running
            .chain(stopping)
            .map(|((ns, pod, container), r, restarts, stopping)| StateEntry {
                namespace: ns,
                pod,
                container,
                pid: r.pid,
                metrics_port: r.metrics_port,
                started_at: &r.started_at,
                restarts,
                stopping,
            })
            .collect();
        let path = self.dir.join("running.json");
        let tmp = self.dir.join("running.json.tmp");
        let result = serde_json::to_vec_pretty(&entries)
            .map_err(std::io::Error::other)
            .and_then(|json| fs::write(&tmp, json))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "cannot write state file");
        }
    }

    /// Stops every child (SIGTERM, SIGKILL after 10s) and removes the state file.
    async fn shutdown(mut self) {
        info!(
            processes = self.procs.len() + self.stopping.len(),
            "shutting down"
        );
        self.pods.clear();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for (key, p) in std::mem::take(&mut self.procs) {
            if let Some(run) = p.run {
                signal_pid(run.pid, Signal::SIGTERM, false);
                self.stopping.push(Stopping {
                    key,
                    run,
                    restarts: p.restarts,
                    deadline,
                    killed: false,
                });
            }
        }
        for s in &mut self.stopping {
            s.deadline = s.deadline.min(deadline);
        }
        while !self.stopping.is_empty() {
            self.reconcile().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = fs::remove_file(self.dir.join("running.json"));
        info!("pod runner stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_matching() {
        for image in [
            "freight",
            "freight:e2e",
            "ghcr.io/freight-dev/freight:0.1.0",
            "registry.local:5000/freight@sha256:abc",
            "a/b/freight:1@sha256:x",
        ] {
            assert!(is_freight_image(image), "{image}");
        }
        for image in [
            "busybox",
            "freight-operator:1",
            "ghcr.io/freight/other:1",
            "registry.local:5000/notfreight",
            "freight/worker:1",
        ] {
            assert!(!is_freight_image(image), "{image}");
        }
    }

    #[test]
    fn argv() {
        let mut c = Container {
            args: Some(vec!["worker".into()]),
            ..Default::default()
        };
        assert_eq!(build_argv(&c), ["worker"]);
        c.command = Some(vec!["/freight".into(), "--verbose".into()]);
        assert_eq!(build_argv(&c), ["--verbose", "worker"]);
        c.args = None;
        assert_eq!(build_argv(&c), ["--verbose"]);
        c.command = Some(vec![]);
        assert!(build_argv(&c).is_empty());
    }

    #[test]
    fn expansion() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two".to_string()),
        ];
        let e = |s: &str| expand(s, lookup_in(&env));
        assert_eq!(e("plain"), "plain");
        assert_eq!(e("$(A)-$(B)"), "1-two");
        assert_eq!(e("$$(A)"), "$(A)");
        assert_eq!(e("$(MISSING)/x"), "$(MISSING)/x");
        assert_eq!(e("a$b$"), "a$b$");
        assert_eq!(e("x$(A"), "x$(A");
        assert_eq!(e("$()"), "$()");
        assert_eq!(e("é$(A)ü"), "é1ü");
    }

    #[test]
    fn wanted_and_fields() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"nodeName": "fake-node-1", "serviceAccountName": "sa", "containers": []},
            "status": {"phase": "Running"}
        }))
        .expect("pod");
        assert!(is_wanted(&pod));
        assert_eq!(field_ref(&pod, "metadata.name").as_deref(), Ok("w-1"));
        assert_eq!(
            field_ref(&pod, "metadata.labels['app']").as_deref(),
            Ok("x")
        );
        assert_eq!(
            field_ref(&pod, "metadata.annotations['none']").as_deref(),
            Ok("")
        );
        assert_eq!(field_ref(&pod, "status.podIP").as_deref(), Ok("127.0.0.1"));
        assert!(field_ref(&pod, "spec.bogus").is_err());
        pod.status = serde_json::from_value(serde_json::json!({"phase": "Succeeded"})).ok();
        assert!(!is_wanted(&pod));
    }

    #[test]
    fn selector_args() {
        let args = |a: &[&str]| selector_from_args(a.iter().map(|s| s.to_string()));
        assert_eq!(args(&["--selector", "a=b"]).as_deref(), Some("a=b"));
        assert_eq!(args(&["--selector=c=d"]).as_deref(), Some("c=d"));
        assert_eq!(args(&[]), None);
    }
}
