//! How GitOps tools read a MigrationJob on the real API server: kstatus
//! (sigs.k8s.io/cli-utils, what Flux and kpt compute health with) through
//! `kstatus-check`, and Argo CD's health check
//! (`argocd/resource_customizations/freight.dev/MigrationJob/health.lua`) on
//! gopher-lua through `argocd-lua-health`. Both are built by
//! `e2e/cluster/build.sh` and put on PATH by `e2e/cluster/env.sh`.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use crate::{eventually, kubectl, repo_root, state_dir, suffix};

/// What a tool made of one read of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// `status.phase` of the object the tool read ("-" when it had none).
    pub phase: String,
    /// kstatus: InProgress, Current, Failed, ...; Argo CD: Healthy, Progressing, ...
    pub status: String,
    /// The tool's message.
    pub message: String,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {} {:?}", self.phase, self.status, self.message)
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: {e} (on PATH after `source e2e/cluster/env.sh`, built by e2e/cluster/build.sh)"
        )
    })
}

/// "<phase> <status> <message...>" into a Reading.
fn parse(line: &str) -> Option<Reading> {
    let mut parts = line.trim_end().splitn(3, ' ');
    Some(Reading {
        phase: parts.next()?.to_owned(),
        status: parts.next()?.to_owned(),
        message: parts.next().unwrap_or_default().to_owned(),
    })
}

/// kstatus of the job as read from the API server (`kstatus-check -phase -n NS NAME`,
/// with the harness's KUBECONFIG). None if it could not be read.
pub fn kstatus(ns: &str, name: &str) -> Option<Reading> {
    let out = run(
        Command::new("kstatus-check").args(["-phase", "-n", ns, name]),
        "kstatus-check",
    );
    if !out.status.success() {
        eprintln!(
            "kstatus-check -n {ns} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// The directory of the Argo CD health check and its test cases.
pub fn argocd_health_dir() -> PathBuf {
    repo_root().join("argocd/resource_customizations/freight.dev/MigrationJob")
}

/// Argo CD's health of the job: the object read with kubectl, run through
/// health.lua as argocd-cm runs it (no open libraries). None if it could not be read.
pub fn argocd_health(ns: &str, name: &str) -> Option<Reading> {
    let out = kubectl(&["-n", ns, "get", "migrationjob", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let obj: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let phase = obj["status"]["phase"].as_str().unwrap_or("-").to_owned();
    let file = state_dir().join(format!("argocd-health-{ns}-{name}-{}.json", suffix()));
    std::fs::write(&file, &out.stdout).expect("write the job for argocd-lua-health");
    let out = run(
        Command::new("argocd-lua-health")
            .arg("-f")
            .arg(&file)
            .arg(argocd_health_dir()),
        "argocd-lua-health",
    );
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "health.lua failed on {ns}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "openLibs=false: <status> <message>" (then the same with open libraries).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next()?.strip_prefix("openLibs=false: ")?;
    let (status, message) = line.split_once(' ').unwrap_or((line, ""));
    Some(Reading {
        phase,
        status: status.to_owned(),
        message: message.to_owned(),
    })
}

/// Waits until `read` sees the job in `phase`; returns that reading.
async fn reading_in_phase(
    tool: &str,
    ns: &str,
    name: &str,
    phase: &str,
    read: fn(&str, &str) -> Option<Reading>,
) -> Reading {
    eventually(
        &format!("{tool} to read {name} in phase {phase}"),
        Duration::from_secs(60),
        || async { read(ns, name).filter(|r| r.phase == phase) },
    )
    .await
}

/// Waits until the job is in `phase`, then asserts what kstatus (read from the API
/// server) and Argo CD's health check make of it. Returns both readings.
pub async fn expect_gitops(
    ns: &str,
    name: &str,
    phase: &str,
    want_kstatus: &str,
    want_argocd: &str,
) -> (Reading, Reading) {
    let k = reading_in_phase("kstatus", ns, name, phase, kstatus).await;
    assert_eq!(k.status, want_kstatus, "kstatus of {name} in {phase}: {k}");
    let a = reading_in_phase("Argo CD", ns, name, phase, argocd_health).await;
    assert_eq!(
        a.status, want_argocd,
        "Argo CD health of {name} in {phase}: {a}"
    );
    eprintln!("{name} {phase}: kstatus {k}; Argo CD {a}");
    (k, a)
}

/// What kstatus must read for a job in `phase` whose status is current
/// (observedGeneration = generation) and which is not blocked.
pub fn kstatus_of_phase(phase: &str) -> &'static str {
    match phase {
        "Planning" | "Running" => "InProgress",
        "Succeeded" | "CompletedWithErrors" | "Suspended" => "Current",
        "Failed" => "Failed",
        _ => "?",
    }
}
