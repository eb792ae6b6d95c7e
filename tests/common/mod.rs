//! A mock Kubernetes API server for reconcile tests: it expects an exact
//! sequence of requests, checks each one, answers it, and fails the test on a
//! missing, unexpected or extra request.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use freight::{
    api::MigrationJob,
    controller::{
        Context,
        children::ChildSettings,
        stores::{Stores, Writers},
    },
    leader::LeaderGate,
    metrics::Metrics,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body, runtime::events::Reporter};
use serde_json::{Value, json};

/// The test's end of the mock API server.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A checker of a request body.
pub type BodyCheck = Box<dyn Fn(&Value) + Send>;

/// How the mock answers a request.
pub enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// 200 echoing the request body (what an apply/create returns, near enough).
    Echo,
    /// 404 Not Found.
    NotFound,
    /// An error status with a message.
    Status(u16, &'static str),
}

/// One expected request.
pub struct Expect {
    method: Method,
    path_and_query: String,
    check: Option<BodyCheck>,
    reply: Reply,
}

impl Expect {
    pub fn new(method: Method, path_and_query: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            check: None,
            reply,
        }
    }
    pub fn get(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::GET, path, reply)
    }
    /// A server-side apply by the operator's field manager.
    pub fn apply(path: &str) -> Self {
        Self::new(
            Method::PATCH,
            format!("{path}?&force=true&fieldManager=freight-operator"),
            Reply::Echo,
        )
    }
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path, Reply::Echo)
    }
    pub fn delete(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::DELETE, path, reply)
    }
    /// Answers with `reply` instead of the default.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }
    pub fn reply_mut(&mut self) -> &mut Reply {
        &mut self.reply
    }
    pub fn reply_ref(&self) -> &Reply {
        &self.reply
    }
    pub fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
    }
}

/// Runs `expected` against the client's requests; returns a task to await
/// after the reconcile, which fails if anything was left over or extra, and
/// hands the mock back for the next reconcile.
pub fn serve(mut handle: Handle, expected: Vec<Expect>) -> tokio::task::JoinHandle<Handle> {
    tokio::spawn(async move {
        let total = expected.len();
        for (i, exp) in expected.into_iter().enumerate() {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "request {}/{total} never came: expected {} {}",
                            i + 1,
                            exp.method,
                            exp.path_and_query
                        )
                    })
                    .expect("client went away");
            let method = request.method().clone();
            let uri = request.uri().to_string();
            assert_eq!(
                (&method, uri.as_str()),
                (&exp.method, exp.path_and_query.as_str()),
                "request {}/{total} differs",
                i + 1
            );
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            };
            if let Some(check) = &exp.check {
                check(&body);
            }
            let (code, reply) = match exp.reply {
                Reply::Json(v) => (StatusCode::OK, v),
                Reply::Echo => (StatusCode::OK, body),
                Reply::NotFound => (
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", "not found"),
                ),
                Reply::Status(code, msg) => (
                    StatusCode::from_u16(code).unwrap(),
                    status_body(code, "Failure", msg),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        if let Ok(Some((extra, _))) =
            tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
        {
            panic!(
                "unexpected extra request: {} {}",
                extra.method(),
                extra.uri()
            );
        }
        handle
    })
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

/// A context wired to a fresh mock server, with empty (listed) caches of
/// children that the test fills through the returned writers.
pub fn context() -> (Arc<Context>, Handle, Writers) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (stores, mut writers) = Stores::new();
    writers.mark_ready();
    let ctx = Context::new(
        client,
        settings(),
        Arc::new(Metrics::default()),
        LeaderGate::always(),
        Reporter {
            controller: "freight-operator".into(),
            instance: Some("test".into()),
        },
        stores,
    );
    (Arc::new(ctx), handle, writers)
}

pub fn settings() -> ChildSettings {
    ChildSettings {
        default_worker_image: "freight:test".into(),
        coordinator_url: "http://freight-coordinator.freight-system.svc:8081".into(),
    }
}

/// The job of `examples/postgres-to-postgres.yaml`, as stored: with uid,
/// generation and (unless `finalized` is false) the operator's finalizer.
pub fn job(finalized: bool) -> MigrationJob {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/postgres-to-postgres.yaml"
    ))
    .unwrap();
    let doc = yaml
        .split("\n---")
        .find(|d| d.contains("kind: MigrationJob"))
        .unwrap();
    let mut job: MigrationJob = serde_yaml::from_str(doc).unwrap();
    job.metadata.namespace = Some("crm".into());
    job.metadata.uid = Some("1f0e7c1a-0000-4000-8000-000000000001".into());
    job.metadata.generation = Some(1);
    job.metadata.resource_version = Some("100".into());
    if finalized {
        job.metadata.finalizers = Some(vec!["freight.dev/cleanup".into()]);
    }
    job
}

/// A Secret with one key, as the API server returns it (data base64-encoded
/// by `ByteString`'s serializer).
pub fn secret(name: &str, key: &str, value: &str) -> Value {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("crm".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        data: Some(
            [(
                key.to_owned(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}
