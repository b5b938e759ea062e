//! The REST endpoints of the fake API server.

use super::controller::{fate, Fate, NO_NODE};
use super::patch::apply_patch;
use super::{gate, label_match, status_error, Shared, World};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(super) async fn list(
    State(s): State<Shared>,
    Path((ns, kind)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let field_name = q.get("fieldSelector").and_then(|f| f.strip_prefix("metadata.name=")).map(str::to_string);
    let (items, rv) = {
        let world = s.world.lock().unwrap();
        if let Some(denied) = gate(&world, if watch { "watch" } else { "list" }, &kind) {
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

pub(super) async fn get_one(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> Response {
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "get", &kind) {
        return denied;
    }
    let source = if kind == "deployments" { &world.deployments } else { &world.replicasets };
    match source.get(&(ns, name.clone())) {
        Some(o) => Json(o.clone()).into_response(),
        None => status_error(404, "NotFound", &format!("{kind}.apps \"{name}\" not found")),
    }
}

pub(super) async fn patch(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "patch", &kind) {
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

pub(super) async fn put(
    State(s): State<Shared>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "update", &kind) {
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

/// Bumps generation on spec changes, runs the controller on template changes
/// (and on a resume: a paused Deployment's template changes wait for it).
fn finish_update(
    s: &Shared,
    world: &mut World,
    key: &(String, String),
    current: Value,
    mut updated: Value,
) -> Response {
    updated["status"] = current["status"].clone();
    // Like the API server's decoding into typed objects: `null`s and empty
    // structs (`creationTimestamp: null`, `resources: {}` from Go clients)
    // are not stored, so a template restored by a client equals the original.
    prune(&mut updated["spec"]["template"]);
    if updated["spec"] != current["spec"] {
        let generation = current["metadata"]["generation"].as_u64().unwrap_or(1) + 1;
        updated["metadata"]["generation"] = json!(generation);
    }
    let template_changed = updated["spec"]["template"] != current["spec"]["template"];
    let paused = updated["spec"]["paused"] == true;
    let resumed = current["spec"]["paused"] == true && !paused;
    world.deployments.insert(key.clone(), updated);
    if !paused && (template_changed || resumed) {
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

pub(super) async fn get_scale(
    State(s): State<Shared>,
    Path((ns, _kind, name)): Path<(String, String, String)>,
) -> Response {
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "get", "deployments/scale") {
        return denied;
    }
    match world.deployments.get(&(ns, name)) {
        Some(d) => Json(scale_of(d)).into_response(),
        None => status_error(404, "NotFound", "not found"),
    }
}

pub(super) async fn patch_scale(
    State(s): State<Shared>,
    Path((ns, _kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "patch", "deployments/scale") {
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

pub(super) async fn list_pods(State(s): State<Shared>, Path(ns): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "list", "pods") {
        return denied;
    }
    let mut pods = Vec::new();
    for ((rs_ns, rs_name), rs) in &world.replicasets {
        if *rs_ns != ns {
            continue;
        }
        let fate = fate(&rs["spec"]["template"]);
        for i in 0..rs["spec"]["replicas"].as_u64().unwrap_or(0) {
            let labels = rs["spec"]["template"]["metadata"]["labels"].clone();
            if !label_match(&labels, q.get("labelSelector")) {
                continue;
            }
            pods.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{rs_name}-{i}"), "namespace": ns, "labels": labels},
                "spec": rs["spec"]["template"]["spec"],
                "status": pod_status(&rs["spec"]["template"], fate)}));
        }
    }
    pods.extend(super::jobs::pods(&world, &ns, q.get("labelSelector")));
    let mut map = Map::new();
    map.insert("resourceVersion".into(), json!(world.rv.to_string()));
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": map, "items": pods})).into_response()
}

/// A pod's status as the kubelet (or, unscheduled, the scheduler) reports it.
fn pod_status(template: &Value, fate: Fate) -> Value {
    let containers = template["spec"]["containers"].as_array().into_iter().flatten();
    match fate {
        Fate::Unschedulable => json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": NO_NODE}]}),
        Fate::Crashes => {
            let statuses: Vec<Value> = containers
                .map(|c| json!({"name": c["name"], "image": c["image"], "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}))
                .collect();
            json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": statuses})
        }
        Fate::Runs => {
            let statuses: Vec<Value> = containers
                .map(|c| json!({"name": c["name"], "image": c["image"], "ready": true, "restartCount": 0, "state": {"running": {}}}))
                .collect();
            json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": statuses})
        }
    }
}

pub(super) async fn access_review(State(s): State<Shared>, body: Bytes) -> Response {
    if let Some(denied) = gate(&s.world.lock().unwrap(), "create", "selfsubjectaccessreviews") {
        return denied;
    }
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

/// Core v1 events, filtered by `fieldSelector` on `involvedObject.*` (what
/// `kubectl describe` and `kubectl get events --field-selector` send).
pub(super) async fn list_events(State(s): State<Shared>, Path(ns): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "list", "events") {
        return denied;
    }
    let fields: Vec<(String, String)> = q
        .get("fieldSelector")
        .map(|f| {
            f.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_start_matches('=').to_string()))
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = world
        .events
        .iter()
        .filter(|e| e["metadata"]["namespace"] == ns.as_str())
        .filter(|e| {
            fields.iter().all(|(k, v)| {
                let path = format!("/{}", k.replace('.', "/"));
                e.pointer(&path).and_then(Value::as_str) == Some(v.as_str())
            })
        })
        .cloned()
        .collect();
    Json(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": world.rv.to_string()}, "items": items}))
        .into_response()
}

/// Removes `null`s and empty objects, recursively.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| !(v.is_null() || v.as_object().is_some_and(|o| o.is_empty())));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}
