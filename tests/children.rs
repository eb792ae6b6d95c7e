//! The desired children, as plain data.

mod common;

use common::{job, settings};
use freight::controller::children::{applied_hash, desired_children, worker_revision};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

const TOKEN: &str = "t0ken";

#[test]
fn children_are_owned_labelled_and_named_after_the_job() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let c = desired_children(&job, &owner, &settings(), TOKEN, true);
    assert_eq!(c.credential.name_any(), "contacts-worker");
    assert_eq!(c.autoscaler.name_any(), "contacts-worker");
    assert_eq!(
        c.active().deployment.name_any(),
        format!("contacts-worker-{}", c.active().revision)
    );
    for (meta, kind) in [
        (c.credential.meta(), "Secret"),
        (c.active().deployment.meta(), "Deployment"),
        (c.autoscaler.meta(), "HPA"),
    ] {
        assert_eq!(meta.namespace.as_deref(), Some("crm"), "{kind}");
        assert_eq!(
            meta.owner_references.as_ref().unwrap(),
            &vec![owner.clone()],
            "{kind}"
        );
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["freight.dev/job"], "contacts", "{kind}");
        assert_eq!(labels["app.kubernetes.io/instance"], "contacts", "{kind}");
        assert!(applied_hash(&c.credential).is_some(), "{kind}");
    }
}

#[test]
fn deployment_selects_only_its_own_revision_pods() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let c = desired_children(&job, &owner, &settings(), TOKEN, true);
    let spec = c.active().deployment.spec.clone().unwrap();
    let selector = spec.selector.match_labels.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(selector["freight.dev/revision"], c.active().revision);
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "pod template lacks selector label {k}"
        );
    }
}

#[test]
fn worker_env_references_secrets_and_never_holds_values() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let c = desired_children(&job, &owner, &settings(), TOKEN, true);
    let pod = pod_of(&c);
    let env = pod.containers[0].env.clone().unwrap();
    let by_name = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
    let source = by_name("FREIGHT_SOURCE_URL")
        .value_from
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (source.name.as_str(), source.key.as_str()),
        ("legacy-db", "url")
    );
    let token = by_name("FREIGHT_WORKER_TOKEN")
        .value_from
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("contacts-worker", "token")
    );
    assert!(env.iter().all(|e| e.value.as_deref() != Some(TOKEN)));
}

#[test]
fn same_inputs_same_hash_and_revision() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let a = desired_children(&job, &owner, &settings(), TOKEN, true);
    let b = desired_children(&job, &owner, &settings(), TOKEN, true);
    assert_eq!(a, b);
}

#[test]
fn image_or_resources_change_the_revision_bounds_do_not() {
    let base = job(true);
    let rev = worker_revision(&base, &settings());

    let mut scaled = base.clone();
    scaled.spec.workers.max = 20;
    assert_eq!(
        worker_revision(&scaled, &settings()),
        rev,
        "max is not part of the template"
    );

    let mut image = base.clone();
    image.spec.workers.image = Some("freight:v2".into());
    assert_ne!(worker_revision(&image, &settings()), rev);

    let mut bigger = base.clone();
    bigger
        .spec
        .workers
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert("cpu".into(), Quantity("1".into()));
    assert_ne!(worker_revision(&bigger, &settings()), rev);
}

#[test]
fn autoscaler_bounds_follow_the_spec_and_its_hash_changes() {
    let base = job(true);
    let owner = base.controller_owner_ref(&()).unwrap();
    let before = desired_children(&base, &owner, &settings(), TOKEN, true);
    let mut scaled = base.clone();
    scaled.spec.workers.min = 2;
    scaled.spec.workers.max = 20;
    let after = desired_children(&scaled, &owner, &settings(), TOKEN, true);
    let spec = after.autoscaler.spec.as_ref().unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 20));
    assert_ne!(
        applied_hash(&before.autoscaler),
        applied_hash(&after.autoscaler)
    );
    assert_eq!(
        applied_hash(&before.active().deployment),
        applied_hash(&after.active().deployment)
    );
}

#[test]
fn stopped_workers_are_pinned_to_zero_otherwise_the_autoscaler_owns_them() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let running = desired_children(&job, &owner, &settings(), TOKEN, true);
    assert_eq!(
        running.active().deployment.spec.clone().unwrap().replicas,
        None
    );
    let stopped = desired_children(&job, &owner, &settings(), TOKEN, false);
    assert_eq!(
        stopped.active().deployment.spec.clone().unwrap().replicas,
        Some(0)
    );
}

#[test]
fn workers_get_the_coordinator_and_their_tables_but_no_secret_values() {
    let job = job(true);
    let owner = job.controller_owner_ref(&()).unwrap();
    let c = desired_children(&job, &owner, &settings(), TOKEN, true);
    let pod = pod_of(&c);
    let env = pod.containers[0].env.clone().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} is set"))
            .clone()
    };
    assert_eq!(
        value("FREIGHT_COORDINATOR_URL").value.as_deref(),
        Some("http://freight-coordinator.freight-system.svc:8081")
    );
    let source: freight::api::PostgresSource =
        serde_json::from_str(value("FREIGHT_SOURCE_SPEC").value.as_deref().unwrap()).unwrap();
    assert_eq!(Some(&source), job.spec.source.postgres.as_ref());
    let target: freight::api::PostgresTarget =
        serde_json::from_str(value("FREIGHT_TARGET_SPEC").value.as_deref().unwrap()).unwrap();
    assert_eq!(Some(&target), job.spec.target.postgres.as_ref());
    // Connection strings come from the Secrets, by reference only.
    for name in [
        "FREIGHT_SOURCE_URL",
        "FREIGHT_TARGET_URL",
        "FREIGHT_WORKER_TOKEN",
    ] {
        let e = value(name);
        assert!(e.value.is_none(), "{name} has no literal value");
        assert!(e.value_from.unwrap().secret_key_ref.is_some(), "{name}");
    }
}

#[test]
fn default_image_is_the_operators_own() {
    let mut job = job(true);
    job.spec.workers.image = None;
    let owner = job.controller_owner_ref(&()).unwrap();
    let c = desired_children(&job, &owner, &settings(), TOKEN, true);
    let pod = pod_of(&c);
    assert_eq!(pod.containers[0].image.as_deref(), Some("freight:test"));
}

/// The pod template of the active fleet.
fn pod_of(
    c: &freight::controller::children::DesiredChildren,
) -> k8s_openapi::api::core::v1::PodSpec {
    c.active()
        .deployment
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap()
}
