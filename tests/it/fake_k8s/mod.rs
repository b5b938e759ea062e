//! A fake Kubernetes API server on 127.0.0.1 (axum), faithful enough that the
//! real `kubectl` and kube-rs work against it (proven in `kubernetes.rs` with
//! the real kubectl): discovery, Deployments, ReplicaSets, Pods and Events
//! (GET, LIST with label/field selectors, WATCH as a chunked stream),
//! strategic-merge, merge and JSON patches, the `scale` subresource,
//! resourceVersion conflicts (409), permission errors (403), and faults on
//! demand (a status code or a slow answer for the n-th request of a verb).
//!
//! - `controller`: the deployment controller — new ReplicaSets per pod
//!   template with the Deployment's annotations copied, revisions, replicas
//!   coming up one step at a time, paused Deployments, events on the objects
//!   the real components record them on, and images whose pods crash or
//!   cannot be scheduled until the progress deadline is exceeded.
//! - `handlers`: the REST endpoints; `patch`: the three patch formats.
//!
//! Where it differs from a real API server, knowingly: writes drop `null`s
//! and empty objects from the pod template (`creationTimestamp: null`,
//! `resources: {}`), which a real one keeps — harmless while opsbot compares
//! typed templates; events are never aggregated (`count` stays 1).

mod controller;
mod handlers;
mod jobs;
mod patch;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// What a scripted fault does to the request it hits.
#[derive(Debug, Clone, Copy)]
enum FaultKind {
    /// Answer this status instead of handling the request.
    Status(u16),
    /// Handle the request (a write is applied), then answer only after this long.
    Slow(Duration),
    /// Handle the request (a write is applied), then answer this status:
    /// an API server that failed after etcd committed.
    LandThenFail(u16),
}

#[derive(Debug, Clone)]
struct Fault {
    verb: String,
    /// Matching requests to let through first.
    skip: u32,
    kind: FaultKind,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub at: Instant,
}

#[derive(Default)]
struct World {
    rv: u64,
    deployments: BTreeMap<(String, String), Value>,
    replicasets: BTreeMap<(String, String), Value>,
    events: Vec<Value>,
    /// When each deployment's current rollout last progressed (for its
    /// progress deadline); absent when no rollout is under way.
    progressed: HashMap<(String, String), Instant>,
    faults: Vec<Fault>,
    forbidden: Vec<(String, String)>,
    requests: Vec<Seen>,
    jobs: BTreeMap<(String, String), jobs::JobState>,
}

pub struct FakeK8s {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<Value>,
    pub url: String,
    _runtime: Arc<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct Shared {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<Value>,
}

/// Tags containing this crash on start.
pub const CRASHING: &str = "crash";
/// Pods of images whose tag contains this cannot be scheduled (no node has room).
pub const UNSCHEDULABLE: &str = "unschedulable";
/// One controller step (one replica up or down) by default.
const STEP: Duration = Duration::from_millis(60);

impl FakeK8s {
    pub fn start() -> FakeK8s {
        FakeK8s::with_step(STEP)
    }

    /// A fake whose controller takes `step` per replica.
    pub fn with_step(step: Duration) -> FakeK8s {
        let runtime =
            Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
        let world = Arc::new(Mutex::new(World::default()));
        let (events, _) = broadcast::channel(1024);
        let shared = Shared { world: world.clone(), events: events.clone() };
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = routes(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        let ticker = shared.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(step).await;
                ticker.tick();
            }
        });
        FakeK8s { world, events, url, _runtime: runtime }
    }

    fn shared(&self) -> Shared {
        Shared { world: self.world.clone(), events: self.events.clone() }
    }

    /// Adds a Deployment (and its first ReplicaSet, fully available).
    pub fn add_deployment(&self, ns: &str, name: &str, container: &str, image: &str, replicas: u64) {
        let shared = self.shared();
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": 1, "annotations": {}, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "progressDeadlineSeconds": 1,
                "revisionHistoryLimit": 10,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": container, "image": image}]}}
            },
            "status": {}
        });
        let mut world = self.world.lock().unwrap();
        world.deployments.insert((ns.into(), name.into()), deployment);
        shared.reconcile(&mut world, ns, name);
        // The first ReplicaSet starts complete.
        let key = (ns.to_string(), name.to_string());
        for rs in world.replicasets.values_mut() {
            if rs["metadata"]["ownerReferences"][0]["name"] == name {
                rs["spec"]["replicas"] = json!(replicas);
                rs["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas});
            }
        }
        world.progressed.remove(&key);
        world.events.clear();
        let d = world.deployments.get_mut(&key).unwrap();
        d["status"] = json!({"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
        shared.publish(&mut world, ns, name);
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Value {
        self.world.lock().unwrap().deployments[&(ns.to_string(), name.to_string())].clone()
    }

    pub fn image(&self, ns: &str, name: &str) -> String {
        self.deployment(ns, name)["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string()
    }

    /// The names of the containers in the Deployment's pod template.
    pub fn containers(&self, ns: &str, name: &str) -> Vec<String> {
        let d = self.deployment(ns, name);
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The Deployment's ReplicaSets, oldest revision first.
    pub fn replicasets(&self, ns: &str, name: &str) -> Vec<Value> {
        let world = self.world.lock().unwrap();
        let mut owned: Vec<Value> = world
            .replicasets
            .iter()
            .filter(|((n, _), rs)| n == ns && rs["metadata"]["ownerReferences"][0]["name"] == name)
            .map(|(_, rs)| rs.clone())
            .collect();
        owned.sort_by_key(controller::revision);
        owned
    }

    /// Fails the next request with this verb (`patch`, `get`, `list`, …) with `status`.
    pub fn fail_next(&self, verb: &str, status: u16) {
        self.fail_nth(verb, 1, status);
    }

    /// Fails the `n`-th request from now with this verb with `status`.
    pub fn fail_nth(&self, verb: &str, n: u32, status: u16) {
        let fault = Fault { verb: verb.into(), skip: n - 1, kind: FaultKind::Status(status) };
        self.world.lock().unwrap().faults.push(fault);
    }

    /// Handles the `n`-th request from now with this verb (a write is
    /// applied), but answers only after `delay`.
    pub fn slow_nth(&self, verb: &str, n: u32, delay: Duration) {
        let fault = Fault { verb: verb.into(), skip: n - 1, kind: FaultKind::Slow(delay) };
        self.world.lock().unwrap().faults.push(fault);
    }

    /// Handles the `n`-th request from now with this verb (a write is
    /// applied), then answers `status` instead of the result.
    pub fn land_then_fail_nth(&self, verb: &str, n: u32, status: u16) {
        let fault = Fault { verb: verb.into(), skip: n - 1, kind: FaultKind::LandThenFail(status) };
        self.world.lock().unwrap().faults.push(fault);
    }

    /// The Job `ns/name` as the fake holds it.
    pub fn job(&self, ns: &str, name: &str) -> Option<Value> {
        self.world.lock().unwrap().jobs.get(&(ns.to_string(), name.to_string())).map(|j| j.object.clone())
    }

    /// Every Job's name in `ns`.
    pub fn job_names(&self, ns: &str) -> Vec<String> {
        self.world.lock().unwrap().jobs.keys().filter(|(n, _)| n == ns).map(|(_, name)| name.clone()).collect()
    }

    pub fn forbid(&self, verb: &str, resource: &str) {
        self.world.lock().unwrap().forbidden.push((verb.to_string(), resource.to_string()));
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.world.lock().unwrap().requests.iter().map(|r| (r.method.clone(), r.path.clone())).collect()
    }

    /// Every request so far, with when it arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.world.lock().unwrap().requests.clone()
    }

    /// Records an event about an object (`("ReplicaSet", "api-1a2b")`), as
    /// the component that owns it would.
    pub fn add_event(&self, ns: &str, object: (&str, &str), type_: &str, reason: &str, message: &str) {
        let mut world = self.world.lock().unwrap();
        controller::record_event(&mut world, ns, object, type_, reason, message);
    }

    /// The events recorded so far: (involved kind, involved name, reason).
    pub fn events(&self) -> Vec<(String, String, String)> {
        let world = self.world.lock().unwrap();
        world
            .events
            .iter()
            .map(|e| {
                let text = |v: &Value| v.as_str().unwrap_or("").to_string();
                (text(&e["involvedObject"]["kind"]), text(&e["involvedObject"]["name"]), text(&e["reason"]))
            })
            .collect()
    }

    /// A kubeconfig file naming this server as context `fake`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            url = self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/version", get(|| async { Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})) }))
        .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
        .route("/api/v1", get(|| async { Json(resource_list("v1", &[("pods", "Pod", true), ("events", "Event", true)])) }))
        .route("/apis", get(|| async {
            Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
                {"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}},
                {"name": "authorization.k8s.io", "versions": [{"groupVersion": "authorization.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "authorization.k8s.io/v1", "version": "v1"}}
            ]}))
        }))
        .route("/apis/apps/v1", get(|| async {
            Json(resource_list("apps/v1", &[("deployments", "Deployment", true), ("deployments/scale", "Scale", true), ("deployments/status", "Deployment", true), ("replicasets", "ReplicaSet", true)]))
        }))
        .route("/apis/batch/v1", get(|| async { Json(resource_list("batch/v1", &[("jobs", "Job", true), ("jobs/status", "Job", true)])) }))
        .route("/apis/batch/v1/namespaces/{ns}/jobs", get(jobs::list).post(jobs::create))
        .route("/apis/batch/v1/namespaces/{ns}/jobs/{name}", get(jobs::get))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(jobs::log))
        .route("/apis/authorization.k8s.io/v1", get(|| async { Json(resource_list("authorization.k8s.io/v1", &[("selfsubjectaccessreviews", "SelfSubjectAccessReview", false)])) }))
        .route("/apis/apps/v1/namespaces/{ns}/{kind}", get(handlers::list))
        .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}", get(handlers::get_one).patch(handlers::patch).put(handlers::put))
        .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale", get(handlers::get_scale).patch(handlers::patch_scale))
        .route("/api/v1/namespaces/{ns}/pods", get(handlers::list_pods))
        .route("/api/v1/namespaces/{ns}/events", get(handlers::list_events))
        .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", axum::routing::post(handlers::access_review))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), faults))
        .with_state(shared)
}

/// The RBAC verb a request exercises.
fn verb_of(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    match *method {
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ if query.is_some_and(|q| q.contains("watch=true") || q.contains("watch=1")) => "watch",
        _ => {
            // .../namespaces/NS/KIND is a collection; anything longer names an object.
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            match segments.iter().position(|s| *s == "namespaces") {
                Some(i) if segments.len() == i + 3 => "list",
                _ => "get",
            }
        }
    }
}

/// Records every request and applies the scripted faults.
async fn faults(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let verb = verb_of(request.method(), request.uri().path(), request.uri().query());
    let fault = {
        let mut world = s.world.lock().unwrap();
        world.requests.push(Seen {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            at: Instant::now(),
        });
        // Every matching fault counts this request; the first due one hits.
        let mut hit = None;
        for (i, fault) in world.faults.iter_mut().enumerate().filter(|(_, f)| f.verb == verb) {
            if fault.skip > 0 {
                fault.skip -= 1;
            } else if hit.is_none() {
                hit = Some(i);
            }
        }
        hit.map(|i| world.faults.remove(i).kind)
    };
    match fault {
        Some(FaultKind::LandThenFail(code)) => {
            let _applied = next.run(request).await;
            status_error(code, "InternalError", "Internal error occurred: etcdserver: leader changed")
        }
        Some(FaultKind::Status(code)) => {
            let (reason, message) = match code {
                409 => (
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                ),
                _ => ("InternalError", "Internal error occurred: etcdserver: request timed out"),
            };
            status_error(code, reason, message)
        }
        Some(FaultKind::Slow(delay)) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        None => next.run(request).await,
    }
}

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            let verbs = if name.contains('/') { json!(["get", "patch", "update"]) } else { json!(["get", "list", "watch", "patch", "update", "create", "delete"]) };
            let short: Vec<&str> = match *name {
                "deployments" => vec!["deploy"],
                "replicasets" => vec!["rs"],
                "pods" => vec!["po"],
                "events" => vec!["ev"],
                _ => vec![],
            };
            let singular = name.trim_end_matches('s').to_lowercase();
            json!({"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs, "shortNames": short, "categories": ["all"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn status_error(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

/// Applies scripted permissions.
fn gate(world: &World, verb: &str, resource: &str) -> Option<Response> {
    if world.forbidden.iter().any(|(v, r)| v == verb && r == resource) {
        let group = match resource {
            "pods" | "events" | "pods/log" => "",
            "jobs" => "batch",
            _ => "apps",
        };
        return Some(status_error(403, "Forbidden", &format!("{resource} is forbidden: User \"system:serviceaccount:ops:opsbot\" cannot {verb} resource \"{resource}\" in API group \"{group}\"")));
    }
    None
}

fn label_match(labels: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|pair| match pair.split_once('=') {
        Some((k, v)) => labels[k.trim()] == v.trim().trim_start_matches('='),
        None => labels.get(pair.trim()).is_some(),
    })
}
