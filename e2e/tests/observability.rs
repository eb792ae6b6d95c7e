//! Observability end to end, on a real Prometheus (built from its Go module
//! by `e2e/cluster/build.sh`) scraping the operator and the worker
//! processes every second: every query of the chart's Grafana dashboard
//! returns series during a running job (the queries are read out of the
//! dashboard JSON, so panels cannot drift from the metrics), and the
//! chart's FreightJobStalled alert fires for a job whose target blocks and
//! clears once it is unblocked. Run by `make e2e` (e2e/run.sh).

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use freight_e2e::{
    CONTACTS_TABLE, Operator, OperatorOptions, TempPostgres, TestNamespace, WriteGate, checksum,
    condition, create_db_secrets, create_url_secret,
    dashboard::{self, PanelQuery},
    eventually, free_port, http_get, insert_contacts, job, kubectl_stdin,
    prometheus::{Prometheus, SCRAPE_SECONDS, TargetSync},
    repo_root, running_processes, wait_phase,
};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// What the e2e substitutes for Grafana's interval variables: with a
/// scrape every second, a 10 s rate window holds about ten samples (Grafana
/// makes `$__rate_interval` at least four scrape intervals).
const RATE_INTERVAL: &str = "10s";

/// FreightJobStalled's window (`metrics.prometheusRule.jobStalledFor`) and
/// `for:` in this test, instead of minutes.
const STALLED_FOR: &str = "15s";
const STALLED_PENDING: &str = "5s";

/// The job of these scenarios: 100k rows in batches of 200 (500 batches),
/// every write into the target taking at least [`WRITE_SECONDS`] until the
/// gate is removed: with two workers of two lanes, 50 s or more.
const ROWS: u64 = 100_000;
const BATCH_SIZE: u32 = 200;
const WRITE_SECONDS: f64 = 0.4;
const JOB: &str = "contacts";

/// The dashboard is a Grafana dashboard of ours whose panels all read the
/// `${datasource}` Prometheus, with the namespace and job variables, and
/// whose queries read only Freight's metrics.
#[test]
fn dashboard_is_well_formed() {
    let d = dashboard::dashboard();
    assert_eq!(d["uid"], "freight");
    assert!(
        d["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let names: Vec<String> = dashboard::label_values_variables(&d)
        .into_iter()
        .map(|(name, _, label)| format!("{name}:{label}"))
        .collect();
    assert_eq!(names, ["namespace:namespace", "job:job"]);

    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    let all: Vec<&Value> = d["panels"].as_array().expect("panels").iter().collect();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
    }
    let panels = dashboard::panels(&d);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    for (row, p) in &panels {
        let title = format!("{row} / {}", p["title"].as_str().unwrap_or_default());
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    for q in dashboard::panel_queries(&d) {
        let names = dashboard::metric_names(&q.expr);
        assert!(!names.is_empty(), "{}: reads no freight_ metric", q.name);
        let optional = names.iter().any(|n| n.starts_with("freight_rollout_"));
        assert_eq!(
            optional, q.optional,
            "{}: freightOptional must mark exactly the panels of metrics to come (rollouts)",
            q.name
        );
    }
}

/// A MigrationJob `name` copying `contacts` from the database of the
/// Secret `legacy-db` to that of `target_secret`.
fn manifest(name: &str, target_secret: &str) -> String {
    format!(
        "apiVersion: freight.dev/v1alpha1
kind: MigrationJob
metadata:
  name: {name}
spec:
  source:
    postgres:
      connectionSecretRef: {{ name: legacy-db, key: url }}
      table: contacts
      keyColumn: id
  target:
    postgres:
      connectionSecretRef: {{ name: {target_secret}, key: url }}
      table: contacts
      mode: upsert
  batchSize: {BATCH_SIZE}
  workers:
    min: 2
    max: 2
"
    )
}

/// The chart's alerting rules as a Prometheus rules file
/// (`charts/freight/tests/render-rules.sh`), with FreightJobStalled's
/// window at [`STALLED_FOR`] and its `for:` at [`STALLED_PENDING`], and the
/// operator's series selected as this test's Prometheus labels them.
fn rules() -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("charts/freight/tests/render-rules.sh"))
        .args([
            "--set",
            &format!("metrics.prometheusRule.jobStalledFor={STALLED_FOR}"),
            "--set-string",
            // `\,`: a comma inside a --set value.
            r#"metrics.prometheusRule.operatorSelector=job="freight"\,role="operator""#,
        ])
        .output()
        .expect("run render-rules.sh");
    assert!(
        out.status.success(),
        "render-rules.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    let mut rules: serde_yaml::Value = serde_yaml::from_str(&rendered).expect("a rules file");
    let mut found = false;
    for group in rules["groups"].as_sequence_mut().into_iter().flatten() {
        for r in group["rules"].as_sequence_mut().into_iter().flatten() {
            if r["alert"].as_str() == Some("FreightJobStalled") {
                r["for"] = STALLED_PENDING.into();
                found = true;
            }
        }
    }
    assert!(
        found,
        "no FreightJobStalled in the chart's rules:\n{rendered}"
    );
    serde_yaml::to_string(&rules).expect("rules serialize")
}

fn apply(ns: &str, manifest: &str) {
    let out = kubectl_stdin(&["-n", ns, "apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asks the coordinator on `port` for a lease of `namespace`/`job` with a
/// wrong token; returns the HTTP status.
fn lease_with_a_wrong_token(port: u16, namespace: &str, job: &str) -> u16 {
    let body = r#"{"worker":"e2e-intruder"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the coordinator");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a timeout");
    write!(
        stream,
        "POST /v1/namespaces/{namespace}/migrationjobs/{job}/leases HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAuthorization: Bearer not-the-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Grafana's variables as the dashboard check fills them in: the test's
/// namespace and job, and the interval built-ins.
fn variables<'a>(namespace: &'a str, job: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("namespace", namespace),
        ("job", job),
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "2s"),
        ("__range", "5m"),
        ("datasource", "prometheus"),
    ]
}

/// One round of the dashboard check: the queries that return no series
/// (or an error), by name. Optional panels count only once Prometheus
/// holds one of the metrics they read.
fn empty_queries(prom: &Prometheus, queries: &[PanelQuery], vars: &[(&str, &str)]) -> Vec<String> {
    let known: HashSet<String> = prom.metric_names().into_iter().collect();
    let mut empty = Vec::new();
    for q in queries {
        let names = dashboard::metric_names(&q.expr);
        if q.optional && !names.iter().any(|n| known.contains(n)) {
            continue;
        }
        let expr = dashboard::substitute(&q.expr, vars);
        match prom.query(&expr) {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => {
                let missing: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
                empty.push(format!(
                    "{}: no series (metrics Prometheus never saw: {missing:?})\n    {expr}",
                    q.name
                ));
            }
            Err(e) => empty.push(format!("{}: {e}\n    {expr}", q.name)),
        }
    }
    empty
}

/// The template variables offer the test's namespace and job.
fn check_variables(prom: &Prometheus, d: &Value, vars: &[(&str, &str)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, selector, label) in dashboard::label_values_variables(d) {
        let want = vars.iter().find(|(k, _)| *k == name).expect("a value").1;
        let selector = dashboard::substitute(&selector, vars);
        match prom.label_values(&selector, &label) {
            Ok(values) if values.iter().any(|v| v == want) => {}
            Ok(values) => wrong.push(format!(
                "variable {name}: label_values({selector}, {label}) = {values:?}, not {want}"
            )),
            Err(e) => wrong.push(format!("variable {name}: {e}")),
        }
    }
    wrong
}

/// Firing or pending FreightJobStalled alerts of `namespace`/`job`: their states.
fn stalled_states(prom: &Prometheus, namespace: &str, job: &str) -> Vec<String> {
    prom.alerts()
        .iter()
        .filter(|a| {
            a["labels"]["alertname"] == "FreightJobStalled"
                && a["labels"]["namespace"] == namespace
                && a["labels"]["job"] == job
        })
        .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn phase(ns: &str) -> String {
    job(ns, JOB)
        .and_then(|j| j["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// During a running job, every panel of the dashboard has data on a real
/// Prometheus; then the job's target blocks (a gate on its writes), the
/// stalled-job alert fires, and once the gate opens it clears and the job
/// completes exactly.
#[tokio::test]
async fn dashboard_has_data_and_the_stalled_alert_fires_and_clears_on_a_real_prometheus() {
    let ns = TestNamespace::create("obs");
    let kubeconfig = ns.operator_kubeconfig();
    let pg = TempPostgres::start();
    pg.psql("source", CONTACTS_TABLE);
    pg.psql("target", CONTACTS_TABLE);
    insert_contacts(&pg, "source", ROWS);
    create_db_secrets(&ns.name, &pg.url("source"), &pg.url("target"));
    let mut gate = WriteGate::install(&pg, "target", "contacts", WRITE_SECONDS);

    let prom = Prometheus::start(&ns.name, Some(&rules())).await;
    let op = Operator::start(&OperatorOptions {
        // Blocked batches stay with their workers rather than being leased again.
        batch_lease_seconds: Some(600),
        ..OperatorOptions::new(&ns, &kubeconfig, "obs")
    })
    .await;
    let _sync = TargetSync::start(&prom, op.port, &ns.name);
    apply(&ns.name, &manifest(JOB, "new-db"));
    wait_phase(&ns.name, JOB, "Running", MINUTE * 2).await;
    let running = Instant::now();

    // The error panels have data once something fails: a job whose target
    // database does not answer (reconcile errors, error="database") and a
    // lease request with a wrong token (a coordinator refusal).
    let nowhere = format!(
        "postgres://freight@127.0.0.1:{}/target?sslmode=disable",
        free_port()
    );
    create_url_secret(&ns.name, "nowhere-db", &nowhere);
    apply(&ns.name, &manifest("unreachable", "nowhere-db"));
    assert_eq!(
        lease_with_a_wrong_token(ns.coordinator_port, &ns.name, JOB),
        401,
        "a lease request with a wrong token"
    );

    // Every dashboard query returns series while the job runs.
    let d = dashboard::dashboard();
    let queries = dashboard::panel_queries(&d);
    let vars = variables(&ns.name, JOB);
    let deadline = Instant::now() + MINUTE;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut problems = check_variables(&prom, &d, &vars);
        problems.extend(empty_queries(&prom, &queries, &vars));
        if problems.is_empty() {
            break;
        }
        let now_phase = phase(&ns.name);
        if Instant::now() > deadline || now_phase != "Running" {
            panic!(
                "after {rounds} rounds over {:?} of Running (phase now {now_phase}), \
                 dashboard queries without data:\n  {}\nPrometheus targets: {:#?}\nPrometheus log:\n{}",
                running.elapsed(),
                problems.join("\n  "),
                prom.targets(),
                prom.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_secs(SCRAPE_SECONDS)).await;
    }
    let skipped: Vec<&str> = queries
        .iter()
        .filter(|q| q.optional)
        .map(|q| q.name.as_str())
        .collect();
    eprintln!(
        "all {} dashboard queries have data after {:?} of Running ({rounds} rounds); \
         optional, skipped while their metrics do not exist: {skipped:?}",
        queries.len() - skipped.len(),
        running.elapsed()
    );
    assert_eq!(phase(&ns.name), "Running", "the job ended during the check");

    // What the operator and a worker expose follows Prometheus' conventions.
    let worker = running_processes(&ns.name)
        .into_iter()
        .find(|p| p.metrics_port != 0)
        .expect("a worker process with a metrics port");
    for (what, port) in [("operator", op.port), ("worker", worker.metrics_port)] {
        let text = http_get(port, "/metrics").unwrap_or_default();
        assert!(text.contains("freight_"), "no metrics from the {what}");
        promtool_check_metrics(what, &classic_text(&text));
    }

    // Every rule of the chart evaluates on this Prometheus.
    let broken: Vec<_> = prom
        .rule_health()
        .into_iter()
        .filter(|(_, health, _)| health != "ok")
        .collect();
    assert!(broken.is_empty(), "rules that do not evaluate: {broken:?}");

    // FreightJobStalled is quiet while the job makes progress.
    assert!(
        stalled_states(&prom, &ns.name, JOB).is_empty(),
        "FreightJobStalled before the target blocked: {:?}",
        prom.alerts()
    );

    // The target blocks: FreightJobStalled fires.
    gate.close(&pg, "target");
    let closed = Instant::now();
    eprintln!("gate closed");
    eventually("FreightJobStalled firing", MINUTE * 2, || async {
        assert_eq!(
            phase(&ns.name),
            "Running",
            "the job left Running while blocked"
        );
        stalled_states(&prom, &ns.name, JOB)
            .iter()
            .any(|s| s == "firing")
            .then_some(())
    })
    .await;
    eprintln!(
        "FreightJobStalled firing {:?} after the gate closed",
        closed.elapsed()
    );

    // Unblocked, it clears.
    gate.open();
    let opened = Instant::now();
    eventually("FreightJobStalled cleared", MINUTE, || async {
        stalled_states(&prom, &ns.name, JOB)
            .is_empty()
            .then_some(())
    })
    .await;
    eprintln!(
        "FreightJobStalled cleared {:?} after the gate opened",
        opened.elapsed()
    );
    assert_eq!(
        phase(&ns.name),
        "Running",
        "the job ended before the alert cleared"
    );
    // The rest at full speed.
    gate.remove(&pg, "target", "contacts");

    let done = eventually("the job Succeeded", MINUTE * 4, || async {
        let j = job(&ns.name, JOB)?;
        let complete = condition(&j, "Complete").is_some_and(|c| c["status"] == "True");
        (j["status"]["phase"] == "Succeeded" && complete).then_some(j)
    })
    .await;
    assert_eq!(
        done["status"]["processedRecords"], ROWS,
        "{}",
        done["status"]
    );
    assert_eq!(
        checksum(&pg, "target", "contacts", "id"),
        checksum(&pg, "source", "contacts", "id")
    );
    assert!(
        stalled_states(&prom, &ns.name, JOB).is_empty(),
        "FreightJobStalled for a Succeeded job"
    );
    ns.delete().await;
    op.stop();
}

/// The classic text exposition `promtool check metrics` reads, from the
/// OpenMetrics one both processes serve (`application/openmetrics-text`,
/// which Prometheus scrapes as such): a counter family `x` with samples
/// `x_total` is named `x_total` in the classic format; `# EOF` and `# UNIT`
/// do not exist there. Nothing else changes, so every other lint applies.
fn classic_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    openmetrics
        .lines()
        .filter(|l| *l != "# EOF" && !l.starts_with("# UNIT "))
        .map(|l| {
            for prefix in ["# HELP ", "# TYPE "] {
                if let Some(rest) = l.strip_prefix(prefix) {
                    let name = rest.split(' ').next().unwrap_or_default();
                    if counters.contains(name) {
                        return format!("{prefix}{name}_total{}", &rest[name.len()..]);
                    }
                }
            }
            l.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `promtool check metrics` on an exposition, failing on any problem it reports.
fn promtool_check_metrics(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (e2e/cluster/env.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics of the {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
