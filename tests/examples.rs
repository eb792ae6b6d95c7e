//! The examples against the CRD's CEL rules, evaluated client-side.
//! (Schema bounds, required fields and unknown fields are checked by a real
//! API server in the end-to-end tests; this catches rule regressions early.)

use std::path::{Path, PathBuf};

use freight::api::MigrationJob;
use kube::{CustomResourceExt, core::cel::Validator};
use serde_json::Value;

fn schema() -> Value {
    let crd = MigrationJob::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn jobs_in(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---")
        .filter(|d| d.contains("kind: MigrationJob"))
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

fn expectation(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
        .to_owned()
}

fn cel_messages(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(
                    rules
                        .iter()
                        .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                );
            }
            map.values().for_each(|v| cel_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| cel_messages(v, out)),
        _ => {}
    }
}

#[test]
fn valid_examples_deserialize_and_pass_every_rule() {
    let schema = schema();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let files = yaml_files(&dir);
    assert!(files.len() >= 2, "expected at least two valid examples");
    for file in files {
        let jobs = jobs_in(&file);
        assert!(!jobs.is_empty(), "{} holds no MigrationJob", file.display());
        for job in jobs {
            serde_json::from_value::<MigrationJob>(job.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            Validator::new()
                .validate(&schema, &job, None)
                .unwrap_or_else(|e| panic!("{} fails a rule: {e:?}", file.display()));
        }
    }
}

#[test]
fn invalid_examples_break_the_rule_they_name() {
    let schema = schema();
    let mut rules = Vec::new();
    cel_messages(&schema, &mut rules);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/invalid");
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 15,
        "the catalog needs at least 15 invalid manifests"
    );
    let mut cel_checked = 0;
    for file in files {
        let expect = expectation(&file);
        // Only expectations that are CEL messages can be checked without an API server.
        if !rules.iter().any(|m| m.contains(&expect)) {
            continue;
        }
        cel_checked += 1;
        let job = jobs_in(&file).remove(0);
        let errors = Validator::new()
            .validate(&schema, &job, None)
            .expect_err(&format!("{} passed every rule", file.display()));
        assert!(
            errors
                .as_slice()
                .iter()
                .any(|e| e.message.contains(&expect)),
            "{}: expected {expect:?}, got {errors:?}",
            file.display()
        );
    }
    assert!(
        cel_checked >= 7,
        "only {cel_checked} CEL rules were exercised"
    );
}

#[test]
fn transition_rules_guard_immutable_fields() {
    let schema = schema();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/postgres-to-postgres.yaml");
    let old = jobs_in(&path).remove(0);

    let mut retried = old.clone();
    retried["spec"]["retryFailed"] = 2.into();
    Validator::new()
        .validate(&schema, &retried, Some(&old))
        .expect("raising retryFailed is allowed");
    let errors = Validator::new()
        .validate(&schema, &old, Some(&retried))
        .expect_err("lowering retryFailed must be refused");
    assert!(
        errors
            .as_slice()
            .iter()
            .any(|e| e.message.contains("retryFailed can only be increased"))
    );

    let mut moved = old.clone();
    moved["spec"]["source"]["postgres"]["table"] = "people".into();
    let errors = Validator::new()
        .validate(&schema, &moved, Some(&old))
        .expect_err("changing the source must be refused");
    assert!(
        errors
            .as_slice()
            .iter()
            .any(|e| e.message.contains("source is immutable"))
    );

    let mut suspended = old.clone();
    suspended["spec"]["suspend"] = true.into();
    suspended["spec"]["workers"]["image"] = "freight:v2".into();
    Validator::new()
        .validate(&schema, &suspended, Some(&old))
        .expect("suspend and the worker image may change");
}
