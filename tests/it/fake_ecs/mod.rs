//! A scripted ECS API on 127.0.0.1 (awsJson1.1 over HTTP, as the AWS SDKs
//! speak it; `ecs_wire.py` checks every answer against botocore's model of
//! ECS). One cluster `prod`, one service `api` on task definition family
//! `api`, and deployments that behave as ECS's do: `UpdateService` with a new
//! task definition (or `forceNewDeployment`) creates a new PRIMARY deployment
//! and makes the old one ACTIVE; each `DescribeServices` moves the rollout
//! one step. What the new deployment does is the script ([`Behaviour`]): it
//! completes; the deployment circuit breaker fails it (FAILED, stopped tasks
//! with their reasons, events) and rolls the service back — as ECS does,
//! with a *new* deployment of the last completed task definition, after
//! which the failed one is gone (`CircuitBreakerQuick` does all of that
//! between two looks); it fails without a rollback; its tasks keep stopping
//! but nothing fails it (`Stalls`); another writer's deployment replaces it
//! without a trace (`ReplacedQuickly`) or in plain sight (`Superseded`); or
//! it hangs. A write can be made slow
//! (applied at once, answered late).

mod api;
mod script;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ARN: &str = "arn:aws:ecs:us-east-1:123456789012";

/// What the first deployment an update creates does (later ones complete).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Completes,
    /// FAILED after two looks, then the circuit breaker rolls back.
    CircuitBreaker,
    /// FAILED and rolled back between two looks: opsbot never sees FAILED.
    CircuitBreakerQuick,
    /// FAILED after two looks, no rollback configured.
    Fails,
    /// Tasks stop after two looks, and keep stopping; no circuit breaker.
    Stalls,
    /// Completes, and another writer's forced deployment replaces it and
    /// completes, all between two looks: it leaves no trace.
    ReplacedQuickly,
    /// Another writer forces a new deployment while it is in progress.
    Superseded,
    Hangs,
}

#[derive(Debug, Clone)]
struct Deployment {
    id: String,
    status: &'static str,
    task_definition: String,
    desired: i64,
    running: i64,
    failed: i64,
    state: &'static str,
    reason: String,
    /// Started by the circuit breaker: always completes.
    rollback: bool,
    looks: u32,
}

impl Deployment {
    fn json(&self) -> Value {
        json!({"id": self.id, "status": self.status, "taskDefinition": self.task_definition,
            "desiredCount": self.desired, "runningCount": self.running, "pendingCount": (self.desired - self.running).max(0),
            "failedTasks": self.failed, "createdAt": 1.7e9, "updatedAt": 1.7e9, "launchType": "FARGATE",
            "rolloutState": self.state, "rolloutStateReason": self.reason})
    }
}

struct World {
    behaviour: Behaviour,
    breaker: bool,
    definitions: Vec<Value>,
    tags: Vec<(String, Value)>,
    task_definition: String,
    desired: i64,
    deployments: Vec<Deployment>,
    /// Newest first, as ECS lists them.
    events: Vec<String>,
    stopped: Vec<Value>,
    slow: Option<(String, Duration)>,
    calls: Vec<String>,
    next: u64,
}

pub struct FakeEcs {
    pub url: String,
    world: Arc<Mutex<World>>,
    _runtime: tokio::runtime::Runtime,
}

fn td_arn(family: &str, revision: u64) -> String {
    format!("{ARN}:task-definition/{family}:{revision}")
}

impl FakeEcs {
    /// Service `api` running `api:7` (image `repo/api:v7`, tagged team=payments), 2 tasks.
    pub fn start(behaviour: Behaviour) -> FakeEcs {
        let first = json!({"taskDefinitionArn": td_arn("api", 7), "family": "api", "revision": 7, "status": "ACTIVE",
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "repo/api:v7", "essential": true, "portMappings": [{"containerPort": 8080, "protocol": "tcp"}]}]});
        let world = World {
            behaviour,
            breaker: !matches!(behaviour, Behaviour::Fails | Behaviour::Stalls),
            definitions: vec![first],
            tags: vec![(td_arn("api", 7), json!([{"key": "team", "value": "payments"}]))],
            task_definition: td_arn("api", 7),
            desired: 2,
            deployments: vec![Deployment {
                id: "ecs-svc/1000".into(),
                status: "PRIMARY",
                task_definition: td_arn("api", 7),
                desired: 2,
                running: 2,
                failed: 0,
                state: "COMPLETED",
                reason: "ECS deployment ecs-svc/1000 completed.".into(),
                rollback: false,
                looks: 0,
            }],
            events: vec!["(service api) has reached a steady state.".into()],
            stopped: Vec::new(),
            slow: None,
            calls: Vec::new(),
            next: 1001,
        };
        let world = Arc::new(Mutex::new(world));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shared = world.clone();
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: Bytes| {
                let world = shared.clone();
                async move { answer(world, headers, body).await }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeEcs { url, world, _runtime: runtime }
    }

    /// Applies the next call of `action` at once but answers it only after `delay`.
    pub fn slow_next(&self, action: &str, delay: Duration) {
        self.world.lock().unwrap().slow = Some((action.to_string(), delay));
    }

    /// Deregisters `api:N` (INACTIVE: ECS starts no new tasks from it).
    pub fn deregister(&self, name: &str) {
        let mut world = self.world.lock().unwrap();
        for d in &mut world.definitions {
            if d["taskDefinitionArn"].as_str().unwrap().ends_with(&format!("/{name}")) {
                d["status"] = serde_json::json!("INACTIVE");
            }
        }
    }

    /// The actions called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.world.lock().unwrap().calls.clone()
    }

    /// `api:N` the service runs.
    pub fn running(&self) -> String {
        self.world.lock().unwrap().task_definition.rsplit('/').next().unwrap().to_string()
    }

    /// Every registered definition: (`api:N`, the app image, its tags).
    pub fn definitions(&self) -> Vec<(String, String, Value)> {
        let world = self.world.lock().unwrap();
        world
            .definitions
            .iter()
            .map(|d| {
                let arn = d["taskDefinitionArn"].as_str().unwrap().to_string();
                let tags = world.tags.iter().find(|(a, _)| *a == arn).map(|(_, t)| t.clone()).unwrap_or(json!([]));
                (
                    arn.rsplit('/').next().unwrap().to_string(),
                    d["containerDefinitions"][0]["image"].as_str().unwrap().to_string(),
                    tags,
                )
            })
            .collect()
    }

    /// (id, status, task definition, rollout state) of each deployment.
    pub fn deployments(&self) -> Vec<(String, String, String, String)> {
        let world = self.world.lock().unwrap();
        world
            .deployments
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.status.to_string(),
                    d.task_definition.rsplit('/').next().unwrap().to_string(),
                    d.state.to_string(),
                )
            })
            .collect()
    }
}

fn error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        Json(json!({"__type": code, "message": message})),
    )
        .into_response()
}

async fn answer(world: Arc<Mutex<World>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let action = target.rsplit('.').next().unwrap_or("").to_string();
    let request: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let (result, delay) = {
        let mut w = world.lock().unwrap();
        w.calls.push(action.clone());
        let delay = match &w.slow {
            Some((slow, delay)) if *slow == action => Some(*delay),
            _ => None,
        };
        if delay.is_some() {
            w.slow = None;
        }
        (w.handle(&action, &request), delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match result {
        Ok(body) => ([("content-type", "application/x-amz-json-1.1")], Json(body)).into_response(),
        Err((code, message)) => error(&code, &message),
    }
}
