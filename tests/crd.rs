//! The committed CRD files must be exactly what `freight crd` generates.

use std::path::Path;

fn committed(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

#[test]
fn crds_dir_matches_generated() {
    let generated = freight::crd::crd_yaml().unwrap();
    assert!(
        committed("crds/migrationjob.yaml") == generated,
        "crds/migrationjob.yaml is stale: run `make crds` and commit"
    );
}

#[test]
fn chart_crd_matches_generated() {
    let generated = freight::crd::crd_yaml().unwrap();
    assert!(
        committed("charts/freight/crds/migrationjob.yaml") == generated,
        "charts/freight/crds/migrationjob.yaml is stale: run `make crds` and commit"
    );
}

#[test]
fn crd_has_the_promised_shape() {
    let crd: serde_json::Value = serde_yaml::from_str(&freight::crd::crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["group"], "freight.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["plural"], "migrationjobs");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "mj");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Progress",
            "Processed",
            "Failed",
            "Workers",
            "Age",
            "Rate",
            "ETA"
        ]
    );
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}

/// Every field of the spec carries documentation for `kubectl explain`.
#[test]
fn every_spec_field_is_documented() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(p.clone());
                }
                walk(&p, sub, missing);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], missing);
        }
    }
    let crd: serde_json::Value = serde_yaml::from_str(&freight::crd::crd_yaml().unwrap()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk("spec", &root["properties"]["spec"], &mut missing);
    walk("status", &root["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without documentation: {missing:?}"
    );
}
