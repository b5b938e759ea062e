//! A scripted ECS API on 127.0.0.1 (awsJson1.1 over HTTP, as the AWS SDKs
//! speak it; `ecs_wire.py` checks every answer against botocore's model of
//! ECS). One cluster `prod`, one service `api` on task definition family
//! `api`, and deployments that behave as ECS's do: `UpdateService` with a new
//! task definition (or `forceNewDeployment`) creates a new PRIMARY deployment
//! and makes the old one ACTIVE; each `DescribeServices` moves the rollout
//! one step. What the new deployment does is the script ([`Behaviour`]): it
//! completes; the deployment circuit breaker fails it (FAILED, stopped tasks
//! with their reasons, events) and rolls the service back to the last
//! completed deployment; it fails without a rollback; or it hangs. A write
//! can be made slow (applied at once, answered late).

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
    /// FAILED after two looks, no rollback configured.
    Fails,
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
            breaker: behaviour != Behaviour::Fails,
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

type Answer = Result<Value, (String, String)>;

impl World {
    fn handle(&mut self, action: &str, r: &Value) -> Answer {
        let cluster = r["cluster"].as_str().unwrap_or("default");
        if r.get("cluster").is_some() && cluster != "prod" && !cluster.ends_with("cluster/prod") {
            return Err(("ClusterNotFoundException".into(), "Cluster not found.".into()));
        }
        match action {
            "DescribeServices" => {
                let names: Vec<&str> =
                    r["services"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if names.contains(&"api") {
                    self.advance();
                }
                let services: Vec<Value> = names.iter().filter(|n| **n == "api").map(|_| self.service()).collect();
                let failures: Vec<Value> = names
                    .iter()
                    .filter(|n| **n != "api")
                    .map(|n| json!({"arn": format!("{ARN}:service/prod/{n}"), "reason": "MISSING"}))
                    .collect();
                Ok(json!({"services": services, "failures": failures}))
            }
            "UpdateService" => self.update(r),
            "DescribeTaskDefinition" => {
                let wanted = r["taskDefinition"].as_str().unwrap_or("");
                let name = wanted.rsplit('/').next().unwrap_or(wanted);
                let found = self.definitions.iter().rev().find(|d| {
                    let short = d["taskDefinitionArn"].as_str().unwrap().rsplit('/').next().unwrap();
                    short == name || d["family"] == name
                });
                let Some(definition) = found.cloned() else {
                    return Err(("ClientException".into(), "Unable to describe task definition.".into()));
                };
                let mut out = json!({"taskDefinition": definition});
                if r["include"].as_array().is_some_and(|i| i.iter().any(|x| x == "TAGS")) {
                    let arn = definition["taskDefinitionArn"].as_str().unwrap();
                    out["tags"] = self.tags.iter().find(|(a, _)| a == arn).map(|(_, t)| t.clone()).unwrap_or(json!([]));
                }
                Ok(out)
            }
            "RegisterTaskDefinition" => {
                let family = r["family"].as_str().unwrap_or("api").to_string();
                let revision = self.definitions.iter().filter(|d| d["family"] == family.as_str()).count() as u64 + 7;
                let mut definition = r.clone();
                definition.as_object_mut().unwrap().remove("tags");
                definition["taskDefinitionArn"] = json!(td_arn(&family, revision));
                definition["revision"] = json!(revision);
                definition["status"] = json!("ACTIVE");
                if let Some(tags) = r.get("tags") {
                    self.tags.push((td_arn(&family, revision), tags.clone()));
                }
                self.definitions.push(definition.clone());
                Ok(json!({"taskDefinition": definition, "tags": r.get("tags").cloned().unwrap_or(json!([]))}))
            }
            "ListTaskDefinitions" => {
                let mut arns: Vec<Value> = self.definitions.iter().map(|d| d["taskDefinitionArn"].clone()).collect();
                if r["sort"] == "DESC" {
                    arns.reverse();
                }
                arns.truncate(r["maxResults"].as_u64().unwrap_or(100) as usize);
                Ok(json!({"taskDefinitionArns": arns}))
            }
            "ListTasks" => {
                let arns: Vec<Value> = if r["desiredStatus"] == "STOPPED" {
                    self.stopped.iter().map(|t| t["taskArn"].clone()).collect()
                } else {
                    vec![]
                };
                Ok(json!({"taskArns": arns}))
            }
            "DescribeTasks" => {
                let wanted: Vec<&Value> = r["tasks"].as_array().into_iter().flatten().collect();
                let tasks: Vec<Value> =
                    self.stopped.iter().filter(|t| wanted.contains(&&t["taskArn"])).cloned().collect();
                Ok(json!({"tasks": tasks, "failures": []}))
            }
            "ListClusters" => Ok(json!({"clusterArns": [format!("{ARN}:cluster/prod")]})),
            other => Err(("InvalidAction".into(), format!("the fake does not do {other}"))),
        }
    }

    fn service(&self) -> Value {
        let running: i64 = self.deployments.iter().map(|d| d.running).sum();
        json!({"serviceArn": format!("{ARN}:service/prod/api"), "serviceName": "api", "clusterArn": format!("{ARN}:cluster/prod"),
            "status": "ACTIVE", "desiredCount": self.desired, "runningCount": running, "pendingCount": (self.desired - running).max(0),
            "launchType": "FARGATE", "taskDefinition": self.task_definition,
            "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": self.breaker, "rollback": self.breaker}, "maximumPercent": 200, "minimumHealthyPercent": 100},
            "deployments": self.deployments.iter().map(Deployment::json).collect::<Vec<_>>(),
            "events": self.events.iter().enumerate().map(|(i, m)| json!({"id": format!("event-{i}"), "createdAt": 1.7e9, "message": m})).collect::<Vec<_>>()})
    }

    fn update(&mut self, r: &Value) -> Answer {
        if r["service"] != "api" {
            return Err(("ServiceNotFoundException".into(), "Service not found.".into()));
        }
        if let Some(n) = r["desiredCount"].as_i64() {
            self.desired = n;
            if let Some(p) = self.deployments.iter_mut().find(|d| d.status == "PRIMARY") {
                p.desired = n;
            }
        }
        let new_definition = r["taskDefinition"].as_str().map(|t| {
            let name = t.rsplit('/').next().unwrap();
            self.definitions
                .iter()
                .find(|d| d["taskDefinitionArn"].as_str().unwrap().ends_with(&format!("/{name}")))
                .map(|d| d["taskDefinitionArn"].as_str().unwrap().to_string())
        });
        let new_definition = match new_definition {
            Some(None) => return Err(("ClientException".into(), "TaskDefinition not found.".into())),
            Some(Some(arn)) if arn != self.task_definition => Some(arn),
            _ => None,
        };
        if new_definition.is_some() || r["forceNewDeployment"] == true {
            for d in &mut self.deployments {
                d.status = "ACTIVE";
            }
            let id = format!("ecs-svc/{}", self.next);
            self.next += 1;
            let td = new_definition.unwrap_or_else(|| self.task_definition.clone());
            self.task_definition = td.clone();
            self.deployments.insert(
                0,
                Deployment {
                    id: id.clone(),
                    status: "PRIMARY",
                    task_definition: td,
                    desired: self.desired,
                    running: 0,
                    failed: 0,
                    state: "IN_PROGRESS",
                    reason: format!("ECS deployment {id} in progress."),
                    rollback: false,
                    looks: 0,
                },
            );
        }
        Ok(json!({"service": self.service()}))
    }

    /// One step of the rollout, as a look at the service sees it.
    fn advance(&mut self) {
        let Some(i) = self.deployments.iter().position(|d| d.status == "PRIMARY") else { return };
        // The script is for the first deployment an update creates; the
        // circuit breaker's rollback and any later deployment complete.
        let scripted = !self.deployments[i].rollback && self.deployments[i].id == "ecs-svc/1001";
        let behaviour = if scripted { self.behaviour } else { Behaviour::Completes };
        let p = &mut self.deployments[i];
        p.looks += 1;
        match behaviour {
            Behaviour::Hangs => {}
            _ if p.state == "COMPLETED" => {
                // A count change: one task up or down per look.
                p.running += (p.desired - p.running).signum();
            }
            Behaviour::Completes => {
                // The first look finds the deployment just created.
                if p.looks > 1 {
                    p.running = (p.running + 1).min(p.desired);
                }
                if p.running == p.desired {
                    p.state = "COMPLETED";
                    p.reason = format!("ECS deployment {} completed.", p.id);
                    self.deployments.retain(|d| d.status == "PRIMARY");
                    self.events.insert(0, "(service api) has reached a steady state.".into());
                }
            }
            Behaviour::CircuitBreaker | Behaviour::Fails if p.state == "IN_PROGRESS" && p.looks >= 2 => {
                self.fail(i, behaviour == Behaviour::CircuitBreaker)
            }
            Behaviour::CircuitBreaker | Behaviour::Fails => {}
        }
    }

    fn fail(&mut self, i: usize, rollback: bool) {
        let id = self.deployments[i].id.clone();
        let td = self.deployments[i].task_definition.clone();
        {
            let d = &mut self.deployments[i];
            d.state = "FAILED";
            d.failed = 3;
            d.running = 0;
            d.reason = "ECS deployment circuit breaker: tasks failed to start.".into();
        }
        for n in 0..3 {
            self.stopped.push(json!({"taskArn": format!("{ARN}:task/prod/{:x}{n}", 0xabc0 + self.next), "clusterArn": format!("{ARN}:cluster/prod"),
                "taskDefinitionArn": td, "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "startedBy": id,
                "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
                "containers": [{"name": "app", "lastStatus": "STOPPED", "exitCode": 1, "reason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)"}]}));
        }
        self.events.insert(0, format!("(service api) deployment {id} deployment failed: tasks failed to start."));
        // The circuit breaker returns to the last completed deployment.
        let previous = self.deployments.iter().position(|d| d.status == "ACTIVE" && d.state == "COMPLETED");
        if let (true, Some(j)) = (rollback, previous) {
            self.deployments[i].status = "ACTIVE";
            let back = &mut self.deployments[j];
            back.status = "PRIMARY";
            back.state = "IN_PROGRESS";
            back.rollback = true;
            back.looks = 0;
            back.running = (back.desired - 1).max(0);
            back.reason = format!("ECS deployment circuit breaker: rolling back to deploymentId {}.", back.id);
            self.task_definition = back.task_definition.clone();
            let to = back.id.clone();
            self.events.insert(0, format!("(service api) rolling back to deployment {to}."));
        }
    }
}
