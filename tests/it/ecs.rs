//! ECS: effects against moto (the AWS emulator), rollout watching against a
//! small scripted ECS fake (moto's rollouts never progress), and smoke tests
//! against a local server that can be healthy, unhealthy or hang.

use crate::support::{config_text, stdout, Bot};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `moto_server` on a free loopback port; killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // moto's rollouts never progress; with this they start complete.
            .env("MOTO_ECS_SERVICE_RUNNING", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is installed (pip install 'moto[server]')");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{url}/moto-api/")).call().is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url }
    }

    fn python(&self, script: &str, args: &[&str]) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it").join(script);
        let output = Command::new("python3").arg(path).arg(&self.url).args(args).output().unwrap();
        assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local HTTP server for smoke tests: /healthy, /unhealthy, /hang.
struct Health {
    base: String,
    _runtime: tokio::runtime::Runtime,
}

impl Health {
    fn start() -> Health {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = Router::new()
            .route("/healthy", get(|| async { "status: ok" }))
            .route("/unhealthy", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database down") }))
            .route(
                "/hang",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            );
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Health { base, _runtime: runtime }
    }
}

fn ecs_config(listener: &str, green_url: &str, steps: &str) -> String {
    let services = format!(
        r#"
[services.api-ecs]
environment = "staging"
min_replicas = 1
max_replicas = 8
backend = {{ type = "ecs", cluster = "prod", service = "api", container = "app", image = "repo/api", region = "us-east-1", poll = "50ms", rollout_timeout = "10s" }}

[services.ghost-ecs]
environment = "staging"
backend = {{ type = "ecs", cluster = "nope", service = "api", container = "app", image = "repo/api", region = "us-east-1", poll = "50ms" }}

[services.web-bg]
environment = "staging"
backend = {{ type = "ecs", cluster = "prod", container = "app", image = "repo/web", region = "us-east-1", poll = "50ms", rollout_timeout = "10s", blue_green = {{ listener_arn = "{listener}", blue_service = "web-blue", green_service = "web-green", blue_url = "{green_url}", green_url = "{green_url}", steps = {steps} }}, smoke = {{ expect_status = 200, expect_body = "ok", timeout = "300ms", retries = 2, interval = "50ms" }} }}
"#
    );
    config_text("30m", "").replacen("[[rules]]", &format!("{services}\n[[rules]]"), 1)
}

struct EcsBot {
    moto: Moto,
    bot: Bot,
    arns: Value,
}

impl EcsBot {
    fn new(green_url: &str, steps: &str) -> EcsBot {
        let moto = Moto::start();
        let arns = moto.python("ecs_seed.py", &[]);
        let bot = Bot::with_config(&ecs_config(arns["listener"].as_str().unwrap(), green_url, steps));
        EcsBot { moto, bot, arns }
    }

    fn console(&self, lines: &[&str]) -> String {
        let env = [
            ("AWS_ENDPOINT_URL", self.moto.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
        let out = stdout(&self.bot.console_env(lines, &env));
        println!("$ opsbot console <<< {lines:?}\n{out}");
        out
    }

    fn state(&self) -> Value {
        self.moto.python("ecs_query.py", &[self.arns["listener"].as_str().unwrap()])
    }
}

fn image(definition: &Value, container: &str) -> String {
    definition.as_array().unwrap().iter().find(|c| c["name"] == container).unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn ecs_deploy_registers_one_revision_with_only_the_image_changed_and_is_idempotent() {
    let eb = EcsBot::new("http://127.0.0.1:1/none", "[]");
    let out = eb.console(&["/deploy api-ecs v2.0.0", "/wait", "/deploy api-ecs v2.0.0", "/wait", "/status api-ecs"]);
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v2.0.0 (api:2)"), "{out}");
    assert!(out.contains("api already uses api:2; nothing to update"), "the duplicate changed nothing: {out}");
    let state = eb.state();
    let definitions = state["definitions"]["api"].as_array().unwrap();
    assert_eq!(definitions.len(), 2, "exactly one new revision");
    let (old, new) = (&definitions[0], &definitions[1]);
    assert_eq!(image(old, "app"), "repo/api:v1.0.0");
    assert_eq!(image(new, "app"), "repo/api:v2.0.0");
    let mut without_image = new.clone();
    for c in without_image.as_array_mut().unwrap() {
        if c["name"] == "app" {
            c["image"] = json!("repo/api:v1.0.0");
        }
    }
    assert_eq!(&without_image, old, "only the image changed");
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("task-definition/api:2"));
    assert!(out.contains("api in prod: api:2 (repo/api:v2.0.0)"), "{out}");
}

#[test]
fn unknown_clusters_and_missing_credentials_are_named() {
    let eb = EcsBot::new("http://127.0.0.1:1/none", "[]");
    let out = eb.console(&["/deploy ghost-ecs v2"]);
    assert!(out.contains("❌ r-1: unknown ECS cluster"), "{out}");
    let env = [
        ("AWS_ENDPOINT_URL", eb.moto.url.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
    let out = stdout(&eb.bot.console_env(&["/restart api-ecs"], &env));
    assert!(out.contains("❌ r-2: no usable AWS credentials for ecs:DescribeServices"), "{out}");
}

#[test]
fn ecs_restart_rollback_and_scale() {
    let eb = EcsBot::new("http://127.0.0.1:1/none", "[]");
    let before = eb.state()["services"]["api"]["deploymentIds"].clone();
    let out = eb.console(&[
        "/restart api-ecs",
        "/wait",
        "/deploy api-ecs v2.0.0",
        "/wait",
        "/rollback api-ecs",
        "/wait",
        "/scale api-ecs 5",
        "/wait",
    ]);
    assert!(out.contains("✅ r-1: api-ecs restarted (api:1)"), "{out}");
    assert!(out.contains("✅ r-3: api-ecs rolled back to api:1 (repo/api:v1.0.0)"), "{out}");
    assert!(out.contains("✅ r-4: api-ecs runs 5 tasks"), "{out}");
    let state = eb.state();
    assert_ne!(state["services"]["api"]["deploymentIds"], before, "a new deployment was forced");
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("task-definition/api:1"));
    assert_eq!(state["services"]["api"]["desiredCount"], 5);
}

#[test]
fn blue_green_switches_in_weighted_steps_after_a_smoke_test_and_switches_back_on_rollback() {
    let health = Health::start();
    let eb = EcsBot::new(&format!("{}/healthy", health.base), "[50, 100]");
    let out = eb.console(&["/status web-bg", "/deploy web-bg v2.0.0", "/wait", "/status web-bg"]);
    assert!(out.contains("blue-green: blue is live, green idle"), "{out}");
    assert!(out.contains("blue is live; deploying to idle green (web-green)"), "{out}");
    assert!(out.contains("50% of traffic on green") && out.contains("100% of traffic on green"), "{out}");
    assert!(out.contains("smoke test passed"), "{out}");
    assert!(out.contains("✅ r-1: green is live with repo/web:v2.0.0 (was blue)"), "{out}");
    assert!(out.contains("blue-green: green is live, blue idle"), "{out}");
    let state = eb.state();
    assert_eq!(state["listener"]["TargetGroupArn"], eb.arns["green"]);
    assert!(state["services"]["web-green"]["taskDefinition"].as_str().unwrap().ends_with("web-green:2"));
    assert!(
        state["services"]["web-blue"]["taskDefinition"].as_str().unwrap().ends_with("web-blue:1"),
        "blue untouched"
    );

    let out = eb.console(&["/rollback web-bg"]);
    assert!(out.contains("✅ r-2: switched back: blue is live (green idle)"), "{out}");
    assert_eq!(eb.state()["listener"]["TargetGroupArn"], eb.arns["blue"]);
}

#[test]
fn a_failing_or_hanging_smoke_test_blocks_the_switch() {
    let health = Health::start();
    for path in ["unhealthy", "hang"] {
        let eb = EcsBot::new(&format!("{}/{path}", health.base), "[]");
        let out = eb.console(&["/deploy web-bg v3.0.0"]);
        assert!(out.contains("❌ r-1: smoke test of"), "{path}: {out}");
        let why = if path == "unhealthy" { "answered 503" } else { "no answer within 300ms" };
        assert!(out.contains(why) && out.contains("traffic stays on blue"), "{path}: {out}");
        assert_eq!(eb.state()["listener"]["TargetGroupArn"], eb.arns["blue"], "{path}: the listener did not move");
        let records = eb.bot.export(&[]);
        assert!(records.iter().any(|r| r["request_id"] == "r-1" && r["outcome"] == "failed"));
    }
}

/// A scripted ECS API: DescribeServices answers from a script, one step per call.
struct ScriptedEcs {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

fn deployment(status: &str, rollout: &str, running: i32, reason: &str) -> Value {
    json!({"id": format!("ecs-svc/{status}"), "status": status, "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/api:7",
        "desiredCount": 2, "runningCount": running, "pendingCount": 2 - running, "failedTasks": if rollout == "FAILED" { 3 } else { 0 },
        "rolloutState": rollout, "rolloutStateReason": reason})
}

impl ScriptedEcs {
    fn start(script: Vec<Vec<Value>>) -> ScriptedEcs {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let recorded = calls.clone();
        let app = Router::new().route(
            "/",
            post(move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
                let calls = recorded.clone();
                let script = script.clone();
                async move {
                    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
                    calls.lock().unwrap().push(target.clone());
                    let body = match target.as_str() {
                        "DescribeServices" => {
                            let mut script = script.lock().unwrap();
                            let deployments = if script.len() > 1 { script.pop_front().unwrap() } else { script.front().cloned().unwrap() };
                            json!({"services": [{"serviceName": "api", "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
                                "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/api:7", "desiredCount": 2, "runningCount": 1, "pendingCount": 1,
                                "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}},
                                "deployments": deployments, "events": [{"message": "(service api) has started 1 tasks"}]}], "failures": []})
                        }
                        "DescribeTaskDefinition" => json!({"taskDefinition": {"family": "api", "revision": 7,
                            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/api:7",
                            "containerDefinitions": [{"name": "app", "image": "repo/api:v7"}]}}),
                        "UpdateService" => json!({"service": {"serviceName": "api"}}),
                        _ => json!({}),
                    };
                    ([("content-type", "application/x-amz-json-1.1")], Json(body))
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        ScriptedEcs { url, calls, _runtime: runtime }
    }
}

fn scripted_run(script: Vec<Vec<Value>>, timeout: &str) -> (String, Vec<String>) {
    let fake = ScriptedEcs::start(script);
    let service = format!(
        "\n[services.api-ecs]\nenvironment = \"staging\"\nbackend = {{ type = \"ecs\", cluster = \"prod\", service = \"api\", container = \"app\", image = \"repo/api\", region = \"us-east-1\", poll = \"30ms\", rollout_timeout = \"{timeout}\" }}\n"
    );
    let bot = Bot::with_config(&config_text("30m", "").replacen("[[rules]]", &format!("{service}\n[[rules]]"), 1));
    let env = [
        ("AWS_ENDPOINT_URL", fake.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
    let out = stdout(&bot.console_env(&["/restart api-ecs"], &env));
    println!("{out}");
    let calls = fake.calls.lock().unwrap().clone();
    (out, calls)
}

#[test]
fn rollout_waiting_reports_progress_until_completed() {
    let progressing = |running| vec![deployment("PRIMARY", "IN_PROGRESS", running, "in progress")];
    let (out, calls) = scripted_run(
        vec![progressing(0), progressing(0), progressing(1), vec![deployment("PRIMARY", "COMPLETED", 2, "completed")]],
        "10s",
    );
    assert!(
        out.contains("api: 0/2 tasks running (IN_PROGRESS)") && out.contains("api: 1/2 tasks running (IN_PROGRESS)"),
        "{out}"
    );
    assert!(out.contains("✅ r-1: api-ecs restarted (api:7)"), "{out}");
    assert!(calls.contains(&"UpdateService".to_string()));
}

#[test]
fn a_failed_rollout_reports_the_circuit_breaker_rollback() {
    let failed = vec![
        deployment("PRIMARY", "FAILED", 0, "ECS deployment circuit breaker: tasks failed to start."),
        deployment("ACTIVE", "COMPLETED", 2, "rolling back"),
    ];
    let (out, _) = scripted_run(vec![vec![deployment("PRIMARY", "IN_PROGRESS", 0, "")], failed], "10s");
    assert!(out.contains("❌ r-1: api: rollout failed: ECS deployment circuit breaker: tasks failed to start. (3 task(s) failed); the deployment circuit breaker rolled it back"), "{out}");
}

#[test]
fn a_rollout_that_never_settles_times_out() {
    let (out, _) = scripted_run(vec![vec![deployment("PRIMARY", "IN_PROGRESS", 1, "")]], "300ms");
    assert!(out.contains("❌ r-1: timed out after 300ms waiting for api to become stable"), "{out}");
}
