//! ECS: effects against moto (the AWS emulator, run by `moto_ecs.py` so that
//! UpdateService starts a deployment as ECS's does, seeded by `ecs_seed.py`,
//! read back by `ecs_query.py`, changed behind opsbot's back by
//! `ecs_poke.py`) behind a fault proxy (`aws_proxy`); rollouts against the
//! scripted ECS API (`fake_ecs`), since moto's deployments settle at once;
//! smoke tests against a local server that can be healthy, unhealthy or hang.
//!
//! - `fakes`: the scripted API and the proxy proven with boto3.
//! - `flows`: the ordinary flows against moto.
//! - `rollouts`: following the deployment opsbot started (issue #13).
//! - `blue_green`: switches, rollbacks and a split listener (issue #13).
//! - `deployments`: the deployment followed is the one the update started.
//! - `errors`: wrong names, regions, revisions; no Debug dumps (issue #13).
//! - `writes`: writes sent once, their lost answers settled by re-reading.
//! - `readback`: after a change, the outcome is what a read shows, or unknown.
//! - `listener`: what must hold before blue-green traffic moves, and what it keeps.
//! - `fence`: the leader's term on every write; a deposed leader's refused.

mod blue_green;
mod deployments;
mod errors;
mod fakes;
mod fence;
mod flows;
mod listener;
mod readback;
mod rollouts;
mod writes;

use crate::aws_proxy::AwsProxy;
use crate::fake_ecs::{Behaviour, FakeEcs};
use crate::support::{config_text, stdout, Bot};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a helper script from tests/it with the endpoint first; parses its JSON.
fn python(script: &str, endpoint: &str, args: &[&str]) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it").join(script);
    let output = Command::new("python3").arg(path).arg(endpoint).args(args).output().unwrap();
    assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// moto on a free loopback port; killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    /// moto with ECS deployments as ECS makes them (`moto_ecs.py`).
    fn start() -> Moto {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/moto_ecs.py");
        let mut command = Command::new("python3");
        command.arg(script);
        Moto::run(command)
    }

    /// moto as it is: UpdateService starts no deployment.
    fn start_unpatched() -> Moto {
        Moto::run(Command::new("moto_server"))
    }

    fn run(mut command: Command) -> Moto {
        let port = free_port();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // moto's rollouts never progress; with this they start complete.
            .env("MOTO_ECS_SERVICE_RUNNING", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto is installed (pip install 'moto[server]')");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{url}/moto-api/")).call().is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local HTTP server for smoke tests: /healthy, /unhealthy, /hang, and
/// /once (healthy for the first request only).
struct Health {
    base: String,
    _runtime: tokio::runtime::Runtime,
}

impl Health {
    fn start() -> Health {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let served = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let app = Router::new()
            .route("/healthy", get(|| async { "status: ok" }))
            .route(
                "/once",
                get(move || {
                    let first = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            (axum::http::StatusCode::OK, "status: ok")
                        } else {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database down")
                        }
                    }
                }),
            )
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

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

/// The blue-green service's smoke-test URLs and traffic steps.
struct Setup {
    blue_url: String,
    green_url: String,
    steps: &'static str,
}

impl Setup {
    /// No smoke-test server (the single-service tests).
    fn plain() -> Setup {
        Setup { blue_url: "http://127.0.0.1:1/none".into(), green_url: "http://127.0.0.1:1/none".into(), steps: "[]" }
    }
}

fn ecs_config(listener: &str, setup: &Setup) -> String {
    let ecs = |name: &str, rest: &str| {
        format!("\n[services.{name}]\nenvironment = \"staging\"\nmin_replicas = 1\nmax_replicas = 8\nbackend = {{ type = \"ecs\", image = \"repo/api\", poll = \"50ms\", rollout_timeout = \"10s\", call_timeout = \"2s\", {rest} }}\n")
    };
    let services = [
        ecs("api-ecs", r#"cluster = "prod", service = "api", container = "app", region = "us-east-1""#),
        ecs("ghost-ecs", r#"cluster = "nope", service = "api", container = "app", region = "us-east-1""#),
        ecs("ghost-container", r#"cluster = "prod", service = "api", container = "ghost-container", region = "us-east-1""#),
        ecs("elsewhere-ecs", r#"cluster = "prod", service = "api", container = "app", region = "eu-west-1""#),
        ecs("noregion-ecs", r#"cluster = "prod", service = "api", container = "app""#),
        format!(
            "\n[services.web-bg]\nenvironment = \"staging\"\nmin_replicas = 1\nmax_replicas = 8\nbackend = {{ type = \"ecs\", cluster = \"prod\", container = \"app\", image = \"repo/web\", region = \"us-east-1\", poll = \"50ms\", rollout_timeout = \"10s\", call_timeout = \"2s\", blue_green = {{ listener_arn = \"{listener}\", blue_service = \"web-blue\", green_service = \"web-green\", blue_url = \"{}\", green_url = \"{}\", steps = {} }}, smoke = {{ expect_status = 200, expect_body = \"ok\", timeout = \"300ms\", retries = 2, interval = \"50ms\" }} }}\n",
            setup.blue_url, setup.green_url, setup.steps
        ),
    ]
    .concat();
    config_text("30m", "").replacen("[[rules]]", &format!("{services}\n[[rules]]"), 1)
}

/// A bot against moto, through the fault proxy.
struct EcsBot {
    moto: Moto,
    proxy: AwsProxy,
    bot: Bot,
    arns: Value,
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
    ]
}

fn run_console(bot: &Bot, lines: &[&str], env: &[(&str, String)]) -> String {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(v.as_str()))).collect();
    let out = stdout(&bot.console_env(lines, &env));
    println!("$ opsbot console <<< {lines:?}\n{out}");
    out
}

impl EcsBot {
    fn new(setup: Setup) -> EcsBot {
        EcsBot::against(Moto::start(), setup)
    }

    fn against(moto: Moto, setup: Setup) -> EcsBot {
        let arns = python("ecs_seed.py", &moto.url, &[]);
        let proxy = AwsProxy::start(&moto.url);
        let bot = Bot::with_config(&ecs_config(arns["listener"].as_str().unwrap(), &setup));
        EcsBot { moto, proxy, bot, arns }
    }

    fn console(&self, lines: &[&str]) -> String {
        run_console(&self.bot, lines, &aws_env(&self.proxy.url))
    }

    /// Gives every service this `rollout_timeout` (opsbot's own deadline).
    fn set_rollout_timeout(&self, timeout: &str) {
        let text = std::fs::read_to_string(self.bot.config()).unwrap();
        self.bot
            .rewrite_config(&text.replace("rollout_timeout = \"10s\"", &format!("rollout_timeout = \"{timeout}\"")));
    }

    /// moto's state, read with boto3.
    fn state(&self) -> Value {
        python("ecs_query.py", &self.moto.url, &[self.arns["listener"].as_str().unwrap()])
    }

    /// Changes moto's state as another writer would (see ecs_poke.py).
    fn poke(&self, args: &[&str]) {
        python("ecs_poke.py", &self.moto.url, args);
    }

    /// (target group ARN, weight) the listener forwards to (a single target
    /// group, weighted or not, counts as 100).
    fn weights(&self) -> Vec<(String, i64)> {
        let action = &self.state()["listener"];
        match action["ForwardConfig"]["TargetGroups"].as_array() {
            Some(groups) if groups.len() > 1 => groups
                .iter()
                .map(|g| (g["TargetGroupArn"].as_str().unwrap().to_string(), g["Weight"].as_i64().unwrap_or(1)))
                .collect(),
            Some(groups) => vec![(groups[0]["TargetGroupArn"].as_str().unwrap().to_string(), 100)],
            None => vec![(action["TargetGroupArn"].as_str().unwrap().to_string(), 100)],
        }
    }

    fn colour(&self, name: &str) -> String {
        self.arns[name].as_str().unwrap().to_string()
    }

    /// The outcome the audit trail recorded for `request`.
    fn outcome(&self, request: &str) -> String {
        let steps = crate::support::steps(&self.bot.export(&[]), request);
        steps.iter().rev().find(|(kind, _)| kind == "outcome").map(|(_, o)| o.clone()).unwrap_or_default()
    }
}

/// The image `container` has in a list of container definitions.
fn image(definition: &Value, container: &str) -> String {
    definition.as_array().unwrap().iter().find(|c| c["name"] == container).unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A bot whose only service `api-ecs` talks to the scripted ECS API.
fn scripted(behaviour: Behaviour, timeout: &str, auto_rollback: bool) -> (FakeEcs, Bot) {
    let fake = FakeEcs::start(behaviour);
    let service = format!(
        "\n[services.api-ecs]\nenvironment = \"staging\"\nbackend = {{ type = \"ecs\", cluster = \"prod\", service = \"api\", container = \"app\", image = \"repo/api\", region = \"us-east-1\", poll = \"30ms\", rollout_timeout = \"{timeout}\", call_timeout = \"1s\", auto_rollback = {auto_rollback} }}\n"
    );
    let bot = Bot::with_config(&config_text("30m", "").replacen("[[rules]]", &format!("{service}\n[[rules]]"), 1));
    (fake, bot)
}

/// A blue-green bot whose colours both answer their smoke test.
fn healthy(steps: &'static str) -> (Health, EcsBot) {
    let health = Health::start();
    let url = health.url("healthy");
    let eb = EcsBot::new(Setup { blue_url: url.clone(), green_url: url, steps });
    (health, eb)
}
