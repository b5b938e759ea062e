//! A fake Kubernetes API server on 127.0.0.1 (axum), faithful enough that the
//! real `kubectl` and kube-rs work against it: discovery, Deployments,
//! ReplicaSets and Pods (GET, LIST with label/field selectors, WATCH as a
//! chunked stream), strategic-merge, merge and JSON patches, the `scale`
//! subresource, resourceVersion conflicts (409) and permission errors (403) on
//! demand, and a scripted controller: new ReplicaSets per pod template,
//! revisions, replicas coming up one step at a time, and images whose pods
//! crash until the progress deadline is exceeded.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

#[derive(Default)]
struct World {
    rv: u64,
    deployments: BTreeMap<(String, String), Value>,
    replicasets: BTreeMap<(String, String), Value>,
    /// When each deployment's current rollout started (for the deadline).
    rollout_started: HashMap<(String, String), Instant>,
    faults: VecDeque<(String, u16)>,
    forbidden: Vec<(String, String)>,
    requests: Vec<(String, String)>,
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
/// How long a crashing rollout may try before `ProgressDeadlineExceeded`.
const DEADLINE: Duration = Duration::from_millis(800);
const STEP: Duration = Duration::from_millis(60);

impl FakeK8s {
    pub fn start() -> FakeK8s {
        let runtime =
            Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
        let world = Arc::new(Mutex::new(World::default()));
        let (events, _) = broadcast::channel(1024);
        let shared = Shared { world: world.clone(), events: events.clone() };
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = Router::new()
            .route("/version", get(|| async { Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})) }))
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
            .route("/api/v1", get(|| async { Json(resource_list("v1", &[("pods", "Pod", true)])) }))
            .route("/apis", get(|| async {
                Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
                    {"name": "authorization.k8s.io", "versions": [{"groupVersion": "authorization.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "authorization.k8s.io/v1", "version": "v1"}}
                ]}))
            }))
            .route("/apis/apps/v1", get(|| async {
                Json(resource_list("apps/v1", &[("deployments", "Deployment", true), ("deployments/scale", "Scale", true), ("deployments/status", "Deployment", true), ("replicasets", "ReplicaSet", true)]))
            }))
            .route("/apis/authorization.k8s.io/v1", get(|| async { Json(resource_list("authorization.k8s.io/v1", &[("selfsubjectaccessreviews", "SelfSubjectAccessReview", false)])) }))
            .route("/apis/apps/v1/namespaces/{ns}/{kind}", get(list))
            .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}", get(get_one).patch(patch).put(put))
            .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale", get(get_scale).patch(patch_scale))
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", axum::routing::post(access_review))
            .with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        let ticker = shared.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(STEP).await;
                ticker.tick();
            }
        });
        FakeK8s { world, events, url, _runtime: runtime }
    }

    /// Adds a Deployment (and its first ReplicaSet, fully available).
    pub fn add_deployment(&self, ns: &str, name: &str, container: &str, image: &str, replicas: u64) {
        let shared = Shared { world: self.world.clone(), events: self.events.clone() };
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
        world.rollout_started.remove(&key);
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

    /// Fails the next request with this verb (`patch`, `get`, …) with `status`.
    pub fn fail_next(&self, verb: &str, status: u16) {
        self.world.lock().unwrap().faults.push_back((verb.to_string(), status));
    }

    pub fn forbid(&self, verb: &str, resource: &str) {
        self.world.lock().unwrap().forbidden.push((verb.to_string(), resource.to_string()));
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.world.lock().unwrap().requests.clone()
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

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            let verbs = if name.contains('/') { json!(["get", "patch", "update"]) } else { json!(["get", "list", "watch", "patch", "update", "create", "delete"]) };
            let short: Vec<&str> = match *name {
                "deployments" => vec!["deploy"],
                "replicasets" => vec!["rs"],
                "pods" => vec!["po"],
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

fn template_hash(template: &Value) -> String {
    let mut template = template.clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    hex::encode(&Sha256::digest(template.to_string().as_bytes())[..5])
}

fn revision(object: &Value) -> u64 {
    object["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn crashing(template: &Value) -> bool {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["image"].as_str().unwrap_or("").contains(CRASHING))
}

impl Shared {
    fn bump(&self, world: &mut World) -> String {
        world.rv += 1;
        world.rv.to_string()
    }

    fn publish(&self, world: &mut World, ns: &str, name: &str) {
        let rv = self.bump(world);
        if let Some(d) = world.deployments.get_mut(&(ns.to_string(), name.to_string())) {
            d["metadata"]["resourceVersion"] = json!(rv);
            let _ = self.events.send(json!({"type": "MODIFIED", "object": d.clone()}));
        }
    }

    /// The deployment controller's reaction to a changed pod template.
    fn reconcile(&self, world: &mut World, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        let deployment = world.deployments[&key].clone();
        let template = deployment["spec"]["template"].clone();
        let hash = template_hash(&template);
        let owned: Vec<(String, String)> = world
            .replicasets
            .iter()
            .filter(|(k, rs)| k.0 == ns && rs["metadata"]["ownerReferences"][0]["name"] == name)
            .map(|(k, _)| k.clone())
            .collect();
        let max_revision = owned.iter().map(|k| revision(&world.replicasets[k])).max().unwrap_or(0);
        let current = owned
            .iter()
            .find(|k| world.replicasets[*k]["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            .cloned();
        let rs_key = match current {
            Some(k) if revision(&world.replicasets[&k]) == max_revision => k,
            Some(k) => {
                // Rolling back to an old template: that ReplicaSet gets the next revision.
                let rs = world.replicasets.get_mut(&k).unwrap();
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!((max_revision + 1).to_string());
                k
            }
            None => {
                let rs_name = format!("{name}-{hash}");
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut labels = template["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let mut annotations = json!({"deployment.kubernetes.io/revision": (max_revision + 1).to_string()});
                if let Some(cause) = deployment["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str() {
                    annotations["kubernetes.io/change-cause"] = json!(cause);
                }
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations, "uid": format!("uid-{rs_name}"),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": deployment["metadata"]["uid"], "controller": true}]},
                    "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": rs_template},
                    "status": {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0}
                });
                world.replicasets.insert((ns.to_string(), rs_name.clone()), rs);
                (ns.to_string(), rs_name)
            }
        };
        let rev = revision(&world.replicasets[&rs_key]);
        let d = world.deployments.get_mut(&key).unwrap();
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(rev.to_string());
        world.rollout_started.insert(key, Instant::now());
    }

    /// One controller step for every deployment: new pods come up one at a
    /// time (unless they crash), old ones go away, status follows.
    fn tick(&self) {
        let mut world = self.world.lock().unwrap();
        let keys: Vec<(String, String)> = world.deployments.keys().cloned().collect();
        for (ns, name) in keys {
            let key = (ns.clone(), name.clone());
            let d = world.deployments[&key].clone();
            let desired = d["spec"]["replicas"].as_u64().unwrap_or(1);
            let generation = d["metadata"]["generation"].as_u64().unwrap_or(1);
            let hash = template_hash(&d["spec"]["template"]);
            let crash = crashing(&d["spec"]["template"]);
            let owned: Vec<(String, String)> = world
                .replicasets
                .iter()
                .filter(|(k, rs)| k.0 == ns && rs["metadata"]["ownerReferences"][0]["name"] == name.as_str())
                .map(|(k, _)| k.clone())
                .collect();
            let before = world.deployments[&key]["status"].clone();
            let mut changed = false;
            let (mut total, mut updated, mut ready) = (0, 0, 0);
            for rs_key in &owned {
                let is_new = world.replicasets[rs_key]["metadata"]["labels"]["pod-template-hash"] == hash.as_str();
                let rs = world.replicasets.get_mut(rs_key).unwrap();
                let have = rs["spec"]["replicas"].as_u64().unwrap_or(0);
                let want = if is_new {
                    if have < desired {
                        have + 1
                    } else {
                        desired
                    }
                } else if crash {
                    have // old pods keep serving while the new ones crash
                } else {
                    have.saturating_sub(1)
                };
                if want != have {
                    changed = true;
                }
                let ready_here = if is_new && crash { 0 } else { want };
                rs["spec"]["replicas"] = json!(want);
                rs["status"] = json!({"replicas": want, "readyReplicas": ready_here, "availableReplicas": ready_here, "observedGeneration": 1});
                total += want;
                ready += ready_here;
                if is_new {
                    updated = want;
                }
            }
            let started = world.rollout_started.get(&key).copied();
            let complete = updated == desired && total == desired && ready == desired;
            let deadline_exceeded = crash && started.is_some_and(|s| s.elapsed() > DEADLINE);
            let progressing = if complete {
                world.rollout_started.remove(&key);
                json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet has successfully progressed.")})
            } else if deadline_exceeded {
                json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": format!("ReplicaSet \"{name}-{hash}\" has timed out progressing.")})
            } else {
                json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"})
            };
            let status = json!({
                "observedGeneration": generation, "replicas": total, "updatedReplicas": updated,
                "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": total.saturating_sub(ready),
                "conditions": [{"type": "Available", "status": if ready >= desired.saturating_sub(desired / 4) { "True" } else { "False" }}, progressing]
            });
            if status != before || changed {
                world.deployments.get_mut(&key).unwrap()["status"] = status;
                self.publish(&mut world, &ns, &name);
            }
        }
    }
}

/// Records the request and applies scripted faults and permissions.
fn gate(world: &mut World, method: &Method, path: &str, verb: &str, resource: &str) -> Option<Response> {
    world.requests.push((method.to_string(), path.to_string()));
    if world.forbidden.iter().any(|(v, r)| v == verb && r == resource) {
        return Some(status_error(403, "Forbidden", &format!("{resource} is forbidden: User \"system:serviceaccount:ops:opsbot\" cannot {verb} resource \"{resource}\" in API group \"apps\"")));
    }
    if let Some(i) = world.faults.iter().position(|(v, _)| v == verb) {
        let (_, code) = world.faults.remove(i).unwrap();
        let reason = if code == 409 { "Conflict" } else { "InternalError" };
        return Some(status_error(
            code,
            reason,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
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

async fn list(
    State(s): State<Shared>,
    Path((ns, kind)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    method: Method,
) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let field_name = q.get("fieldSelector").and_then(|f| f.strip_prefix("metadata.name=")).map(str::to_string);
    let (items, rv) = {
        let mut world = s.world.lock().unwrap();
        if let Some(denied) =
            gate(&mut world, &method, &format!("/{ns}/{kind}"), if watch { "watch" } else { "list" }, &kind)
        {
            return denied;
        }
        let source = if kind == "deployments" { &world.deployments } else { &world.replicasets };
        let items: Vec<Value> = source
            .iter()
            .filter(|((n, name), o)| {
                *n == ns
                    && field_name.as_ref().is_none_or(|f| f == name)
                    && label_match(&o["metadata"]["labels"], q.get("labelSelector"))
            })
            .map(|(_, o)| o.clone())
            .collect();
        (items, world.rv.to_string())
    };
    if watch {
        let receiver = s.events.subscribe();
        let initial: Vec<Value> = items.iter().map(|o| json!({"type": "ADDED", "object": o})).collect();
        let timeout = q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(60u64);
        let stream = futures_util::stream::unfold(
            (initial.into_iter(), receiver, Instant::now()),
            move |(mut initial, mut rx, started)| {
                let field_name = field_name.clone();
                let ns = ns.clone();
                async move {
                    if let Some(event) = initial.next() {
                        return Some((
                            Ok::<Bytes, std::io::Error>(Bytes::from(format!("{event}\n"))),
                            (initial, rx, started),
                        ));
                    }
                    loop {
                        let left = Duration::from_secs(timeout).checked_sub(started.elapsed())?;
                        let event = tokio::time::timeout(left, rx.recv()).await.ok()?.ok()?;
                        let object = &event["object"];
                        if object["metadata"]["namespace"] == ns.as_str()
                            && field_name.as_ref().is_none_or(|f| object["metadata"]["name"] == f.as_str())
                        {
                            return Some((Ok(Bytes::from(format!("{event}\n"))), (initial, rx, started)));
                        }
                    }
                }
            },
        );
        return Response::builder().header("content-type", "application/json").body(Body::from_stream(stream)).unwrap();
    }
    let list_kind = if kind == "deployments" { "DeploymentList" } else { "ReplicaSetList" };
    Json(json!({"kind": list_kind, "apiVersion": "apps/v1", "metadata": {"resourceVersion": rv}, "items": items}))
        .into_response()
}

async fn get_one(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    method: Method,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&mut world, &method, &format!("/{ns}/{kind}/{name}"), "get", &kind) {
        return denied;
    }
    let source = if kind == "deployments" { &world.deployments } else { &world.replicasets };
    match source.get(&(ns, name.clone())) {
        Some(o) => Json(o.clone()).into_response(),
        None => status_error(404, "NotFound", &format!("{kind}.apps \"{name}\" not found")),
    }
}

/// RFC 7386 merge patch; with `strategic`, lists of named items (containers)
/// merge by `name` the way strategic-merge-patch does for them.
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if strategic && (k == "containers" || k == "initContainers") && v.is_array() {
                    let existing = t.entry(k.clone()).or_insert_with(|| json!([]));
                    for item in v.as_array().unwrap() {
                        let name = item["name"].clone();
                        match existing.as_array_mut().unwrap().iter_mut().find(|c| c["name"] == name) {
                            Some(c) => merge(c, item, true),
                            None => existing.as_array_mut().unwrap().push(item.clone()),
                        }
                    }
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// RFC 6902 JSON patch: add, replace, remove (what kubectl rollout undo sends).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is a list")? {
        let path = op["path"].as_str().ok_or("op without path")?;
        let (parent_path, last) = path.rsplit_once('/').ok_or("bad path")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = target.pointer_mut(parent_path).ok_or(format!("no {parent_path}"))?;
        match op["op"].as_str() {
            Some("add") | Some("replace") => {
                parent.as_object_mut().ok_or("parent is not an object")?.insert(last, op["value"].clone());
            }
            Some("remove") => {
                parent.as_object_mut().ok_or("parent is not an object")?.remove(&last);
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

fn apply_patch(object: &mut Value, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let patch: Value = serde_json::from_slice(body).map_err(|e| status_error(400, "BadRequest", &e.to_string()))?;
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
        if object["metadata"]["resourceVersion"].as_str() != Some(rv) {
            return Err(status_error(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    match content_type.split(';').next().unwrap_or("") {
        "application/strategic-merge-patch+json" => merge(object, &patch, true),
        "application/merge-patch+json" => merge(object, &patch, false),
        "application/json-patch+json" => json_patch(object, &patch).map_err(|e| status_error(422, "Invalid", &e))?,
        other => {
            return Err(status_error(
                415,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format: {other}"),
            ))
        }
    }
    Ok(())
}

async fn patch(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&mut world, &method, &format!("/{ns}/{kind}/{name}"), "patch", &kind) {
        return denied;
    }
    if kind != "deployments" {
        return status_error(405, "MethodNotAllowed", "only deployments are patched here");
    }
    let key = (ns.clone(), name.clone());
    let Some(current) = world.deployments.get(&key).cloned() else {
        return status_error(404, "NotFound", &format!("deployments.apps \"{name}\" not found"));
    };
    let mut updated = current.clone();
    if let Err(response) = apply_patch(&mut updated, &headers, &body) {
        return response;
    }
    finish_update(&s, &mut world, &key, current, updated)
}

async fn put(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    method: Method,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&mut world, &method, &format!("/{ns}/{kind}/{name}"), "update", &kind) {
        return denied;
    }
    let key = (ns.clone(), name.clone());
    let Some(current) = world.deployments.get(&key).cloned() else { return status_error(404, "NotFound", "not found") };
    let updated: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status_error(400, "BadRequest", &e.to_string()),
    };
    if updated["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status_error(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    finish_update(&s, &mut world, &key, current, updated)
}

/// Bumps generation on spec changes, runs the controller on template changes.
fn finish_update(
    s: &Shared,
    world: &mut World,
    key: &(String, String),
    current: Value,
    mut updated: Value,
) -> Response {
    updated["status"] = current["status"].clone();
    if updated["spec"] != current["spec"] {
        let generation = current["metadata"]["generation"].as_u64().unwrap_or(1) + 1;
        updated["metadata"]["generation"] = json!(generation);
    }
    let template_changed = updated["spec"]["template"] != current["spec"]["template"];
    world.deployments.insert(key.clone(), updated);
    if template_changed {
        s.reconcile(world, &key.0, &key.1);
    }
    s.publish(world, &key.0, &key.1);
    Json(world.deployments[key].clone()).into_response()
}

fn scale_of(d: &Value) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"], "resourceVersion": d["metadata"]["resourceVersion"]},
        "spec": {"replicas": d["spec"]["replicas"]}, "status": {"replicas": d["status"]["replicas"], "selector": "app=".to_string() + d["metadata"]["name"].as_str().unwrap_or("")}})
}

async fn get_scale(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    method: Method,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&mut world, &method, &format!("/{ns}/{kind}/{name}/scale"), "get", "deployments/scale") {
        return denied;
    }
    match world.deployments.get(&(ns, name)) {
        Some(d) => Json(scale_of(d)).into_response(),
        None => status_error(404, "NotFound", "not found"),
    }
}

async fn patch_scale(
    State(s): State<Shared>,
    Path((ns, _kind, name)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) =
        gate(&mut world, &method, &format!("/{ns}/deployments/{name}/scale"), "patch", "deployments/scale")
    {
        return denied;
    }
    let key = (ns.clone(), name.clone());
    let Some(current) = world.deployments.get(&key).cloned() else { return status_error(404, "NotFound", "not found") };
    let mut scale = scale_of(&current);
    if let Err(response) = apply_patch(&mut scale, &headers, &body) {
        return response;
    }
    let mut updated = current.clone();
    updated["spec"]["replicas"] = scale["spec"]["replicas"].clone();
    finish_update(&s, &mut world, &key, current, updated);
    Json(scale_of(&world.deployments[&key])).into_response()
}

async fn list_pods(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
    method: Method,
) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&mut world, &method, &format!("/{ns}/pods"), "list", "pods") {
        return denied;
    }
    let mut pods = Vec::new();
    for ((rs_ns, rs_name), rs) in &world.replicasets {
        if *rs_ns != ns {
            continue;
        }
        let crash = crashing(&rs["spec"]["template"]);
        for i in 0..rs["spec"]["replicas"].as_u64().unwrap_or(0) {
            let labels = rs["spec"]["template"]["metadata"]["labels"].clone();
            if !label_match(&labels, q.get("labelSelector")) {
                continue;
            }
            let containers: Vec<Value> = rs["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    if crash {
                        json!({"name": c["name"], "image": c["image"], "ready": false, "restartCount": 4,
                            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
                    } else {
                        json!({"name": c["name"], "image": c["image"], "ready": true, "restartCount": 0, "state": {"running": {}}})
                    }
                })
                .collect();
            pods.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{rs_name}-{i}"), "namespace": ns, "labels": labels},
                "spec": rs["spec"]["template"]["spec"],
                "status": {"phase": "Running", "containerStatuses": containers}}));
        }
    }
    let mut map = Map::new();
    map.insert("resourceVersion".into(), json!(world.rv.to_string()));
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": map, "items": pods})).into_response()
}

async fn access_review(State(s): State<Shared>, body: Bytes) -> Response {
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let attrs = &review["spec"]["resourceAttributes"];
    let verb = attrs["verb"].as_str().unwrap_or("").to_string();
    let mut resource = attrs["resource"].as_str().unwrap_or("").to_string();
    if let Some(sub) = attrs["subresource"].as_str().filter(|s| !s.is_empty()) {
        resource = format!("{resource}/{sub}");
    }
    let allowed = !s.world.lock().unwrap().forbidden.iter().any(|(v, r)| *v == verb && *r == resource);
    let mut answer = review.clone();
    answer["status"] = json!({"allowed": allowed});
    (StatusCode::CREATED, Json(answer)).into_response()
}
