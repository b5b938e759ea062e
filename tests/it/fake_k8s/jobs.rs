//! batch/v1 Jobs, as the Job controller and the kubelet would run them:
//! create (409 when the name is taken, 422 without a container), get and
//! list; each Job gets one pod (labelled `job-name`, as the controller
//! labels them) whose log prints the container's environment, then the
//! Job completes a few controller steps later — or fails, with the
//! `BackoffLimitExceeded` condition, when its image contains
//! [`super::CRASHING`]. `GET …/pods/{name}/log` serves the log (honouring
//! `tailLines`).

use super::{gate, status_error, Shared, World, CRASHING};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Controller steps a Job runs before it ends.
const RUNS_FOR: u32 = 3;

/// One Job and how far it has run.
pub(super) struct JobState {
    pub object: Value,
    pub steps: u32,
}

fn pod_name(job: &str) -> String {
    format!("{job}-x7k2p")
}

fn image(job: &Value) -> &str {
    job["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

/// The pod's log: its environment, then how it ended (so far).
fn log_of(job: &JobState) -> String {
    let mut lines: Vec<String> = job.object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}={}", e["name"].as_str().unwrap_or(""), e["value"].as_str().unwrap_or("")))
        .collect();
    lines.insert(0, format!("running {}", job.object["spec"]["template"]["spec"]["containers"][0]["command"]));
    if job.steps >= RUNS_FOR {
        if image(&job.object).contains(CRASHING) {
            lines.push("error: no space left on device".into());
        } else {
            lines.push("freed 1234 MiB".into());
        }
    }
    lines.join("\n") + "\n"
}

/// One controller step for every Job.
pub(super) fn tick(world: &mut World) {
    for job in world.jobs.values_mut() {
        if job.steps >= RUNS_FOR {
            continue;
        }
        job.steps += 1;
        if job.steps < RUNS_FOR {
            job.object["status"] = json!({"active": 1, "ready": 1});
            continue;
        }
        job.object["status"] = if image(&job.object).contains(CRASHING) {
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
        } else {
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        };
    }
}

pub(super) async fn create(State(s): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "create", "jobs") {
        return denied;
    }
    let Ok(mut job) = serde_json::from_slice::<Value>(&body) else {
        return status_error(400, "BadRequest", "the body is not a Job");
    };
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() || job["spec"]["template"]["spec"]["containers"].as_array().is_none_or(|c| c.is_empty()) {
        return status_error(422, "Invalid", "Job.batch is invalid: spec.template.spec.containers: Required value");
    }
    if world.jobs.contains_key(&(ns.clone(), name.clone())) {
        return status_error(409, "AlreadyExists", &format!("jobs.batch \"{name}\" already exists"));
    }
    world.rv += 1;
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["uid"] = json!(format!("uid-job-{name}"));
    job["metadata"]["resourceVersion"] = json!(world.rv.to_string());
    job["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
    job["status"] = json!({});
    world.jobs.insert((ns, name), JobState { object: job.clone(), steps: 0 });
    (axum::http::StatusCode::CREATED, Json(job)).into_response()
}

pub(super) async fn get(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "get", "jobs") {
        return denied;
    }
    match world.jobs.get(&(ns, name.clone())) {
        Some(job) => Json(job.object.clone()).into_response(),
        None => status_error(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
    }
}

pub(super) async fn list(State(s): State<Shared>, Path(ns): Path<String>) -> Response {
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "list", "jobs") {
        return denied;
    }
    let items: Vec<Value> = world.jobs.iter().filter(|((n, _), _)| *n == ns).map(|(_, j)| j.object.clone()).collect();
    Json(json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {"resourceVersion": world.rv.to_string()}, "items": items}))
        .into_response()
}

/// The pods of the namespace's Jobs matching `selector` (`job-name=X`).
pub(super) fn pods(world: &World, ns: &str, selector: Option<&String>) -> Vec<Value> {
    world
        .jobs
        .iter()
        .filter(|((n, _), _)| n == ns)
        .filter_map(|((_, name), job)| {
            let labels = json!({"job-name": name, "batch.kubernetes.io/job-name": name});
            if !super::label_match(&labels, selector) {
                return None;
            }
            let phase = match (job.steps >= RUNS_FOR, image(&job.object).contains(CRASHING)) {
                (false, _) => "Running",
                (true, false) => "Succeeded",
                (true, true) => "Failed",
            };
            Some(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name(name), "namespace": ns, "labels": labels},
                "spec": job.object["spec"]["template"]["spec"],
                "status": {"phase": phase}}))
        })
        .collect()
}

pub(super) async fn log(
    State(s): State<Shared>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let world = s.world.lock().unwrap();
    if let Some(denied) = gate(&world, "get", "pods/log") {
        return denied;
    }
    let Some(job) = world.jobs.iter().find(|((n, name), _)| *n == ns && pod_name(name) == pod).map(|(_, j)| j) else {
        return status_error(404, "NotFound", &format!("pods \"{pod}\" not found"));
    };
    let text = log_of(job);
    let text = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
        }
        None => text,
    };
    text.into_response()
}
