//! Two `opsbot serve` processes on one PostgreSQL: one leads and serves, the
//! other stands by (live, ready, forwarding every request to the leader).
//! 200 signed commands spread across both, each retried on the other, make
//! 200 requests. `kill -9` the leader in the middle of an action: the
//! standby takes the lock within seconds, records the action as interrupted
//! (never re-runs it), runs an approval given after the failover exactly
//! once, takes no retry of a command the dead leader already took, and the
//! trail verifies, each record carrying the term of the leader that wrote it.
//! A Kubernetes change the dead leader was making carries its term; the new
//! leader marks that Deployment with its own, so the old one's late writes
//! are refused (`kubernetes::fence` shows the refusal).

use super::fake_k8s::FakeK8s;
use super::fake_slack::FakeSlack;
use super::postgres::Postgres;
use super::slack::{serve_command, SECRET};
use super::support::{commands_dir, Bot};
use opsbot::chat::slack::verify::Verifier;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn config() -> String {
    format!(
        r#"
[bot]
commands_dir = "{commands}"

[store]
type = "postgres"

[slack]
mode = "http"
channel_interval = "20ms"

[environments.staging]
[environments.production]

[groups]
developers = ["slack:UALICE"]
sre = ["slack:UBOB"]

[services.api-service]
environment = "production"
channels = ["slack:COPS"]
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

[services.api-staging]
environment = "staging"
channels = ["slack:COPS"]
backend = {{ type = "simulated", version = "v1.4.1", replicas = 3, step = "2s" }}

[services.web-staging]
environment = "staging"
channels = ["slack:COPS"]
min_replicas = 1
max_replicas = 8
backend = {{ type = "kubernetes", context = "fake", namespace = "shop", deployment = "web", container = "app", image = "registry.example.com/web", poll = "100ms", rollout_timeout = "60s", call_timeout = "2s" }}

[[rules]]
commands = ["read"]
environments = ["*"]
requesters = ["*"]

[[rules]]
commands = ["deploy", "rollback", "restart", "scale"]
environments = ["staging"]
requesters = ["developers", "sre"]

[[rules]]
commands = ["deploy", "rollback", "restart", "scale"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
"#,
        commands = commands_dir().display()
    )
}

/// One `opsbot serve` process.
struct Replica {
    _bot: Bot,
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
}

impl Replica {
    fn start(name: &str, url: &str, slack: &FakeSlack) -> Replica {
        Replica::with_kubeconfig(name, url, slack, std::path::Path::new("/nonexistent/kubeconfig"))
    }

    fn with_kubeconfig(name: &str, url: &str, slack: &FakeSlack, kubeconfig: &std::path::Path) -> Replica {
        Replica::launch(name, url, slack, &config(), kubeconfig)
    }

    /// A replica with Slack in Socket Mode only.
    fn socket(name: &str, url: &str, slack: &FakeSlack) -> Replica {
        let config = config().replace("mode = \"http\"", "mode = \"socket\"");
        Replica::launch(name, url, slack, &config, std::path::Path::new("/nonexistent/kubeconfig"))
    }

    fn launch(name: &str, url: &str, slack: &FakeSlack, config: &str, kubeconfig: &std::path::Path) -> Replica {
        let bot = Bot::with_config(config);
        let mut child = serve_command(&bot, slack)
            .env("KUBECONFIG", kubeconfig)
            .env("OPSBOT_STORE_URL", url)
            .env("HOSTNAME", name)
            .spawn()
            .expect("serve starts");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(20)).expect("serve says where it listens");
        let address = first
            .strip_prefix("opsbot serving on ")
            .or_else(|| first.strip_prefix("opsbot standby on ").and_then(|rest| rest.split(": ").next()))
            .unwrap_or_else(|| panic!("unexpected: {first}"))
            .to_string();
        Replica { _bot: bot, child, lines, base: format!("http://{address}") }
    }

    fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A slash command, signed as Slack signs it.
    fn command(&self, user: &str, command: &str, text: &str, trigger: &str) -> (u16, String) {
        let body = serde_urlencoded::to_string([
            ("team_id", "T1"),
            ("channel_id", "COPS"),
            ("user_id", user),
            ("command", command),
            ("text", text),
            ("response_url", "https://hooks.slack.com/commands/T1/1/x"),
            ("trigger_id", trigger),
        ])
        .unwrap();
        let ts = chrono::Utc::now().timestamp();
        let signature = Verifier::new(SECRET).sign(ts, body.as_bytes());
        let request = ureq::post(&format!("{}/slack/commands", self.base))
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("X-Slack-Request-Timestamp", &ts.to_string())
            .set("X-Slack-Signature", &signature);
        match request.send_string(&body) {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits for a line of stdout starting with `prefix`.
    fn wait_for_line(&self, prefix: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let left =
                within.checked_sub(started.elapsed()).unwrap_or_else(|| panic!("no `{prefix}` line in {within:?}"));
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return started.elapsed(),
                Ok(_) => {}
                Err(_) => panic!("no `{prefix}` line in {within:?}"),
            }
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (kind, outcome, term) of each record about `request`, from the database.
fn records(pg: &Postgres, request: &str) -> Vec<(String, String, Option<i64>)> {
    let (url, request) = (pg.url("opsbot"), request.to_string());
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        c.query(
            &format!("SELECT kind, {BODY}->>'outcome', term FROM opsbot_audit WHERE request_id = $1 ORDER BY seq"),
            &[&request],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default(), r.get(2)))
        .collect()
    })
    .join()
    .unwrap()
}

/// The request id of the (one) request for `command`.
fn request_of(pg: &Postgres, command: &str) -> String {
    request_for(pg, command, "%")
}

/// The request id of the (one) request for `command` on a service named like `service`.
fn request_for(pg: &Postgres, command: &str, service: &str) -> String {
    let (url, command, service) = (pg.url("opsbot"), command.to_string(), service.to_string());
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let sql = format!(
            "SELECT request_id FROM opsbot_audit WHERE kind = 'request' AND {BODY}->>'command' = $1 AND {BODY}->>'service' LIKE $2"
        );
        c.query_one(&sql, &[&command, &service]).unwrap().get(0)
    })
    .join()
    .unwrap()
}

/// A record's body as JSON, in SQL (the stored bytes after the hash).
const BODY: &str = "convert_from(substring(record from 65), 'UTF8')::json";

fn count(pg: &Postgres, sql: &str) -> i64 {
    let (url, sql) = (pg.url("opsbot"), sql.replace("BODY", BODY));
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        c.query_one(&sql, &[]).unwrap().get(0)
    })
    .join()
    .unwrap()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_standby_takes_over_from_a_killed_leader_and_nothing_runs_twice() {
    let pg = Postgres::start();
    let url = format!("host=127.0.0.1 port={} user=opsbot dbname=postgres", pg.port);
    let slack = FakeSlack::start();
    // A Kubernetes Deployment whose rollouts take seconds (one replica each 2 s).
    let k8s = FakeK8s::with_step(Duration::from_secs(2));
    k8s.add_deployment("shop", "web", "app", "registry.example.com/web:v1.0.0", 2);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = k8s.kubeconfig(dir.path());
    let a = Replica::with_kubeconfig("replica-a", &url, &slack, &kubeconfig);
    let b = Replica::with_kubeconfig("replica-b", &url, &slack, &kubeconfig);
    // A leads; B stands by, ready, forwarding what reaches it to A.
    let (status, ready) = a.get("/health/ready");
    assert_eq!(status, 200, "{ready}");
    assert!(ready.starts_with("ready: leader replica-a/") && ready.ends_with("term 1\n"), "{ready}");
    assert_eq!(b.get("/health/live").0, 200);
    let (status, why) = b.get("/health/ready");
    assert!(status == 200 && why.contains("standby") && why.contains("replica-a/"), "{status} {why}");
    let (_, metrics) = a.get("/metrics");
    assert!(metrics.contains("opsbot_leader 1\n") && metrics.contains("opsbot_leader_term 1\n"), "{metrics}");
    assert!(b.get("/metrics").1.contains("opsbot_leader 0\n"));
    // 200 signed slash commands spread across both, each delivered again to
    // the other replica (a Slack retry): 200 requests recorded, by the leader.
    for i in 0..200 {
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let trigger = format!("t-spread-{i}");
        let (status, answer) = first.command("UALICE", "/status", "api-service", &trigger);
        assert_eq!(status, 200, "{i}: {answer}");
        assert_eq!(second.command("UALICE", "/status", "api-service", &trigger).0, 200, "{i}: the retry");
    }
    assert_eq!(count(&pg, "SELECT count(*) FROM opsbot_audit WHERE kind = 'request'"), 200, "each command once");
    assert_eq!(count(&pg, "SELECT count(DISTINCT term) FROM opsbot_audit WHERE kind = 'request'"), 1);

    // An approval requested on one replica and given on the other (each
    // vote also sent to both): the restart runs once.
    let (status, answer) = a.command("UALICE", "/restart", "api-service", "t-prod-restart");
    assert_eq!(status, 200, "{answer}");
    let prod_restart = request_for(&pg, "restart", "api-service");
    for (replica, trigger) in [(&b, "t-prod-approve"), (&a, "t-prod-approve"), (&a, "t-prod-approve-2")] {
        let (status, answer) = replica.command("UBOB", "/approve", &prod_restart, trigger);
        assert_eq!(status, 200, "{answer}");
    }
    wait_until("the approved restart's outcome", Duration::from_secs(10), || {
        records(&pg, &prod_restart).iter().any(|(kind, _, _)| kind == "outcome")
    });
    std::thread::sleep(Duration::from_millis(300));
    let ran = records(&pg, &prod_restart);
    assert_eq!(ran.iter().filter(|(kind, _, _)| kind == "intent").count(), 1, "{ran:?}");
    assert!(ran.iter().any(|(kind, outcome, _)| kind == "outcome" && outcome == "succeeded"), "{ran:?}");

    // A production deploy (asked through the standby) waits for approval; a
    // staging restart runs (slowly), and so does a scale on Kubernetes.
    let (status, answer) = b.command("UALICE", "/deploy", "api-service v1.4.2", "t-deploy");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = a.command("UALICE", "/restart", "api-staging", "t-restart");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = b.command("UALICE", "/scale", "web-staging 6", "t-scale");
    assert_eq!(status, 200, "{answer}");
    let deploy_id = request_of(&pg, "deploy");
    let restart_id = request_for(&pg, "restart", "api-staging");
    let scale_id = request_of(&pg, "scale");
    wait_until("the restart's intent", Duration::from_secs(10), || {
        records(&pg, &restart_id).iter().any(|(kind, outcome, _)| kind == "intent" && outcome == "started")
    });
    // A's scale landed on the Deployment, in its term, and is rolling out.
    let term_on = |k8s: &FakeK8s| {
        k8s.deployment("shop", "web")["metadata"]["labels"][opsbot::action::kubernetes::TERM]
            .as_str()
            .map(str::to_string)
    };
    wait_until("A's scale on the Deployment", Duration::from_secs(10), || {
        k8s.deployment("shop", "web")["spec"]["replicas"] == 6
    });
    assert_eq!(term_on(&k8s).as_deref(), Some("1"));
    assert!(k8s.deployment("shop", "web")["status"]["availableReplicas"].as_u64() < Some(6), "still rolling");
    assert!(records(&pg, &deploy_id).iter().any(|(_, outcome, _)| outcome == "pending"), "the deploy waits");

    // kill -9 the leader mid-rollout.
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let took = b.wait_for_line("opsbot serving on", Duration::from_secs(15));
    assert!(took < Duration::from_secs(10), "the standby took over in {took:?}");
    let (status, ready) = b.get("/health/ready");
    assert!(status == 200 && ready.starts_with("ready: leader replica-b/") && ready.ends_with("term 2\n"), "{ready}");

    // The cut-off restart is recorded as interrupted, by the new leader, and not run again.
    let restart = records(&pg, &restart_id);
    let interrupted: Vec<_> =
        restart.iter().filter(|(kind, outcome, _)| kind == "outcome" && outcome == "interrupted").collect();
    assert_eq!(interrupted.len(), 1, "{restart:?}");
    assert_eq!(interrupted[0].2, Some(2), "written in term 2");
    assert_eq!(restart.iter().filter(|(kind, _, _)| kind == "intent").count(), 1, "never re-run: {restart:?}");
    // So is the scale, and the new leader marked its Deployment with term 2
    // first: a write A might still send is refused by the cluster.
    let scale = records(&pg, &scale_id);
    assert!(
        scale.iter().any(|(kind, outcome, term)| kind == "outcome" && outcome == "interrupted" && *term == Some(2)),
        "{scale:?}"
    );
    assert_eq!(scale.iter().filter(|(kind, _, _)| kind == "intent").count(), 1, "never re-run: {scale:?}");
    assert_eq!(term_on(&k8s).as_deref(), Some("2"));
    let said = count(
        &pg,
        &format!(
            "SELECT count(*) FROM opsbot_audit WHERE request_id = '{scale_id}' AND BODY->>'detail' LIKE '%deployment shop/web now carries term 2, so a write the previous leader still sends is refused%'"
        ),
    );
    assert_eq!(said, 1, "the interrupted record says the Deployment was marked");

    // A retry of the restart command (the dead leader had taken it) is a duplicate.
    let (status, answer) = b.command("UALICE", "/restart", "api-staging", "t-restart");
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM opsbot_audit WHERE kind = 'request' AND BODY->>'command' = 'restart' AND BODY->>'service' = 'api-staging'"
        ),
        1,
        "the retry made no request"
    );

    // The approval, given to the new leader, runs the deploy once.
    let (status, answer) = b.command("UBOB", "/approve", &deploy_id, "t-approve");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = b.command("UBOB", "/approve", &deploy_id, "t-approve-again");
    assert_eq!(status, 200, "{answer}");
    wait_until("the deploy's outcome", Duration::from_secs(10), || {
        records(&pg, &deploy_id).iter().any(|(kind, _, _)| kind == "outcome")
    });
    let deploy = records(&pg, &deploy_id);
    assert_eq!(deploy.iter().filter(|(kind, _, _)| kind == "intent").count(), 1, "{deploy:?}");
    assert!(
        deploy.iter().any(|(kind, outcome, term)| kind == "outcome" && outcome == "succeeded" && *term == Some(2)),
        "{deploy:?}"
    );
    // Every record was written under a term: 1 by A, 2 by B.
    let terms: Vec<Option<i64>> = std::thread::spawn({
        let url = pg.url("opsbot");
        move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            c.query("SELECT DISTINCT term FROM opsbot_audit ORDER BY term", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
    })
    .join()
    .unwrap();
    assert_eq!(terms, [Some(1), Some(2)]);
    // The whole trail verifies.
    let out = b._bot.command(&["audit", "verify"]).env("OPSBOT_STORE_URL", &url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A leader whose lock connection is gone (here: terminated by the
/// database) while its other connections still work stops at once, and
/// nothing of its lands after its successor's term began.
#[test]
fn a_leader_that_loses_its_lock_stops_and_writes_nothing_after_its_successor_began() {
    let pg = Postgres::start();
    let url = format!("host=127.0.0.1 port={} user=opsbot dbname=postgres", pg.port);
    let slack = FakeSlack::start();
    let a = Replica::start("replica-a", &url, &slack);
    let b = Replica::start("replica-b", &url, &slack);
    assert!(a.get("/health/ready").1.ends_with("term 1\n"));
    // The database drops A's lock connection (a network cut between them).
    let admin = pg.url("opsbot");
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&admin, ::postgres::NoTls).unwrap();
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1",
            &[&(0x6f70_7362_6f74_0002_i64 as u32)],
        )
        .unwrap();
    })
    .join()
    .unwrap();
    b.wait_for_line("opsbot serving on", Duration::from_secs(15));
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "A went on after losing its lock");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stopped.code(), Some(75), "A stopped because it lost the lock");
    let late = count(
        &pg,
        "SELECT count(*) FROM opsbot_audit WHERE term = 1 AND seq > (SELECT coalesce(min(seq), 0) FROM opsbot_audit WHERE term = 2)",
    );
    assert_eq!(late, 0, "A wrote after term 2 began");
    assert!(count(&pg, "SELECT count(*) FROM opsbot_audit WHERE term = 2") > 0, "B recorded its start");
    assert!(b.get("/health/ready").1.ends_with("term 2\n"));
}

/// With Slack in Socket Mode every replica holds a connection, and Slack
/// gives each envelope to one of them: a standby relays what it gets to the
/// leader (signed with a key from the app-level token) and acks with the
/// leader's answer. Each command runs once, by the leader, whichever socket
/// it came on and however often it is redelivered; after a failover the new
/// leader's own socket takes over.
#[test]
fn every_replica_holds_a_socket_and_a_standbys_envelopes_run_on_the_leader() {
    let pg = Postgres::start();
    let url = format!("host=127.0.0.1 port={} user=opsbot dbname=postgres", pg.port);
    let slack = FakeSlack::start();
    let a = Replica::socket("replica-a", &url, &slack);
    wait_until("the leader's socket", Duration::from_secs(15), || slack.open_sockets().len() == 1);
    let leaders = slack.open_sockets()[0];
    let b = Replica::socket("replica-b", &url, &slack);
    assert!(a.get("/health/ready").1.starts_with("ready: leader replica-a/"));
    assert!(b.get("/health/ready").1.contains("standby"));
    wait_until("a socket on each replica", Duration::from_secs(15), || slack.open_sockets().len() == 2);
    let standbys = slack.open_sockets().into_iter().find(|s| *s != leaders).unwrap();
    let command = |envelope: &str, trigger: &str| {
        serde_json::json!({"envelope_id": envelope, "type": "slash_commands", "accepts_response_payload": true, "payload": {
            "command": "/status", "text": "api-service", "user_id": "UALICE", "channel_id": "COPS", "trigger_id": trigger, "team_id": "T1"}})
    };
    let acked = |socket: u64, envelope: &str| {
        let mut ack = None;
        wait_until(&format!("the ack of {envelope}"), Duration::from_secs(10), || {
            ack = slack.acks_on(socket).into_iter().find(|a| a["envelope_id"] == envelope);
            ack.is_some()
        });
        ack.unwrap()
    };
    // One command on each socket: the standby's answered as the leader's
    // is, both run by the leader.
    let sockets = [leaders, standbys];
    for (i, socket) in sockets.iter().enumerate() {
        slack.push_to(*socket, command(&format!("env-{i}"), &format!("trig-{i}")));
    }
    for (i, socket) in sockets.iter().enumerate() {
        let ack = acked(*socket, &format!("env-{i}"));
        let text = ack["payload"]["text"].as_str().unwrap_or_default();
        assert!(text.contains("api-service"), "{i}: {ack}");
    }
    let requests = "SELECT count(*) FROM opsbot_audit WHERE kind = 'request' AND BODY->>'command' = 'status'";
    assert_eq!(count(&pg, requests), 2);
    assert_eq!(count(&pg, "SELECT count(DISTINCT term) FROM opsbot_audit WHERE kind = 'request'"), 1);
    // Slack redelivers the leader's first on the standby's socket: acked,
    // not run again.
    slack.push_to(standbys, command("env-0-again", "trig-0"));
    acked(standbys, "env-0-again");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&pg, requests), 2, "a redelivery is a duplicate");

    // Nobody else can relay: a request not signed with the app token's key
    // is refused before it is read.
    let forged = ureq::post(&format!("{}/slack/socket-relay", a.base))
        .set("Content-Type", "application/json")
        .set("X-Opsbot-Relay-Timestamp", &chrono::Utc::now().timestamp().to_string())
        .set("X-Opsbot-Relay-Signature", &format!("v1={}", "0".repeat(64)))
        .send_string(&command("env-forged", "trig-forged").to_string());
    match forged {
        Err(ureq::Error::Status(401, r)) => assert_eq!(r.into_string().unwrap(), "invalid relay signature\n"),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&pg, requests), 2);

    // The leader dies: B leads, its standby socket gives way to its own.
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    b.wait_for_line("opsbot serving on", Duration::from_secs(15));
    wait_until("B's own socket", Duration::from_secs(15), || {
        let open = slack.open_sockets();
        open.len() == 1 && !sockets.contains(&open[0])
    });
    let socket = slack.open_sockets()[0];
    slack.push_to(socket, command("env-after", "trig-after"));
    acked(socket, "env-after");
    assert_eq!(count(&pg, requests), 3);
    assert_eq!(count(&pg, "SELECT count(*) FROM opsbot_audit WHERE kind = 'request' AND term = 2"), 1);
}
