//! Slack end to end: the real `opsbot serve` binary, signed requests in, and a
//! fake Slack Web API / Socket Mode recording what comes out.

use crate::fake_slack::{Call, FakeSlack, Fault};
use crate::support::{commands_dir, Bot};
use opsbot::chat::slack::verify::Verifier;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn config(mode: &str) -> String {
    format!(
        r#"
[bot]
data_dir = "data"
commands_dir = "{commands}"

[slack]
mode = "{mode}"
channel_interval = "20ms"
channel_burst = 5

[environments.staging]
[environments.production]

[groups]
developers = ["slack:UALICE"]
sre = ["slack:UBOB", "slack:UDAVE"]

[services.api-service]
environment = "production"
channels = ["slack:COPS"]
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

[services.api-staging]
environment = "staging"
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

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

[[rules]]
commands = ["incident"]
environments = ["*"]
requesters = ["*"]
"#,
        commands = commands_dir().display()
    )
}

/// `opsbot serve` on a free port with Slack's secrets (both modes) and the
/// fake's API URL; stdout piped, the log appended to `serve.log`.
pub fn serve_command(bot: &Bot, slack: &FakeSlack) -> std::process::Command {
    let mut command = bot.command(&["serve", "--listen", "127.0.0.1:0"]);
    command
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("SLACK_BOT_TOKEN", "xoxb-test-token")
        .env("SLACK_APP_TOKEN", "xapp-test-token")
        .env("SLACK_API_URL", slack.api_url())
        .env("OPSBOT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(bot.dir.path().join("serve.log")).unwrap());
    command
}

/// `opsbot serve` against a fake Slack; killed (SIGTERM) on drop.
pub struct Served {
    pub bot: Bot,
    pub slack: FakeSlack,
    pub base: String,
    child: Child,
}

impl Served {
    pub fn start(mode: &str) -> Served {
        Served::with_config(&config(mode))
    }

    pub fn with_config(text: &str) -> Served {
        Served::with_env(text, &[])
    }

    /// With these environment variables too (a KUBECONFIG, say).
    pub fn with_env(text: &str, env: &[(&str, &std::ffi::OsStr)]) -> Served {
        let slack = FakeSlack::start();
        let bot = Bot::with_config(text);
        let (child, base) = Served::spawn(&bot, &slack, env);
        Served { bot, slack, base, child }
    }

    fn spawn(bot: &Bot, slack: &FakeSlack, env: &[(&str, &std::ffi::OsStr)]) -> (Child, String) {
        let mut child = serve_command(bot, slack).envs(env.iter().copied()).spawn().expect("serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("serve prints its address").unwrap();
        let address =
            first.strip_prefix("opsbot serving on ").unwrap_or_else(|| panic!("unexpected: {first}")).to_string();
        std::thread::spawn(move || for _ in lines {});
        (child, format!("http://{address}"))
    }

    /// What the bot logged (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.bot.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The bot's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGTERM, then the exit status once it stops.
    pub fn terminate_and_wait(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the same bot (config and store) serving again.
    pub fn restart(&mut self) {
        terminate(&mut self.child);
        (self.child, self.base) = Served::spawn(&self.bot, &self.slack, &[]);
    }

    /// Posts `body` to `path`, signed at `ts` with `secret`.
    pub fn post_signed(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        ts: i64,
        signature: Option<String>,
    ) -> (u16, String) {
        let mut request = ureq::post(&format!("{}{path}", self.base)).set("Content-Type", content_type);
        if let Some(signature) = signature {
            request = request.set("X-Slack-Request-Timestamp", &ts.to_string()).set("X-Slack-Signature", &signature);
        }
        match request.send_string(body) {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
            Err(e) => panic!("request failed: {e}"),
        }
    }

    /// Like [`Served::post`], but sends only the request's head (its
    /// `Content-Length` declaring `body`) and returns the status the bot
    /// answers with before any of the body is sent.
    pub fn post_head_only(&self, path: &str, content_type: &str, body: &str) -> u16 {
        use std::io::{Read, Write};
        let ts = chrono::Utc::now().timestamp();
        let signature = Verifier::new(SECRET).sign(ts, body.as_bytes());
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: opsbot\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nX-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {signature}\r\n\r\n",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).expect("an answer before the body was sent");
            assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        let status = String::from_utf8_lossy(&answer).split(' ').nth(1).unwrap_or_default().to_string();
        status.parse().unwrap_or_else(|_| panic!("no status line: {}", String::from_utf8_lossy(&answer)))
    }

    pub fn post(&self, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let ts = chrono::Utc::now().timestamp();
        let signature = Verifier::new(SECRET).sign(ts, body.as_bytes());
        self.post_signed(path, content_type, body, ts, Some(signature))
    }

    pub fn command(&self, user: &str, channel: &str, command: &str, text: &str, trigger: &str) -> Value {
        let body = serde_urlencoded::to_string([
            ("token", "ignored"),
            ("team_id", "T1"),
            ("channel_id", channel),
            ("user_id", user),
            ("command", command),
            ("text", text),
            ("response_url", "https://hooks.slack.com/commands/T1/1/x"),
            ("trigger_id", trigger),
            ("api_app_id", "A1"),
        ])
        .unwrap();
        let (status, answer) = self.post("/slack/commands", "application/x-www-form-urlencoded", &body);
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str(&answer).unwrap()
    }

    pub fn click(&self, user: &str, action: &str, request: &str, message_ts: &str) -> u16 {
        let payload = json!({
            "type": "block_actions", "user": {"id": user}, "channel": {"id": "COPS"}, "team": {"id": "T1"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": "COPS"},
            "actions": [{"action_id": action, "block_id": "opsbot_vote", "value": request, "type": "button", "action_ts": "1"}]
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.post("/slack/interactivity", "application/x-www-form-urlencoded", &body).0
    }

    pub fn event(&self, event_id: &str, event: Value) -> (u16, String) {
        let body = json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": event_id, "event_time": 1, "event": event});
        self.post("/slack/events", "application/json", &body.to_string())
    }

    /// Polls `/metrics` until it has `line` (gauges change just after Slack calls return).
    pub fn wait_for_metric(&self, line: &str) {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let (_, metrics) = self.get("/metrics");
            if metrics.lines().any(|l| l == line) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{line} never showed in {metrics}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

fn text_of(call: &Value) -> String {
    let mut text = call.get("text").and_then(|t| t.as_str()).unwrap_or("").to_string();
    if let Some(blocks) = call.get("blocks") {
        text.push_str(&blocks.to_string());
    }
    text
}

fn has(calls: &[Call], method: &str, needle: &str) -> bool {
    calls.iter().any(|c| c.method == method && c.status == 200 && text_of(&c.body).contains(needle))
}

const LONG: Duration = Duration::from_secs(10);

#[test]
fn a_production_deploy_is_approved_by_reaction_and_runs_in_a_thread() {
    let served = Served::start("http");
    let ack = served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "trig-1");
    assert_eq!(ack["response_type"], "in_channel");
    assert!(ack["text"].as_str().unwrap().contains("r-1 is waiting for 1 approval(s) from sre"), "{ack}");

    let slack = &served.slack;
    slack.wait_for("the approval card", LONG, |c| has(c, "chat.postMessage", "opsbot_approve"));
    let card = slack.ok_calls("chat.postMessage").into_iter().find(|c| text_of(c).contains("opsbot_approve")).unwrap();
    let card_text = text_of(&card);
    assert!(
        card_text.contains("deploy api-service v1.4.2")
            && card_text.contains("<@UALICE>")
            && card_text.contains("opsbot_deny"),
        "{card_text}"
    );
    assert!(card_text.contains(":white_check_mark: reaction"), "the card says reactions count: {card_text}");
    let card_ts = served.slack.calls().iter().filter(|c| c.method == "chat.postMessage" && c.status == 200).count();
    let card_ts = format!("1700000000.{card_ts:06}");

    // Self-approval by button: refused, privately.
    assert_eq!(served.click("UALICE", "opsbot_approve", "r-1", &card_ts), 200);
    slack.wait_for("the ephemeral refusal", LONG, |c| has(c, "chat.postEphemeral", "cannot approve your own request"));
    let ephemeral = slack.ok_calls("chat.postEphemeral").pop().unwrap();
    assert_eq!(ephemeral["user"], "UALICE");
    // Someone outside the approver group: refused, privately, with the reason.
    assert_eq!(served.click("UMALLORY", "opsbot_approve", "r-1", &card_ts), 200);
    slack.wait_for("the second refusal", LONG, |c| has(c, "chat.postEphemeral", "only sre can vote on r-1"));
    assert_eq!(slack.ok_calls("chat.postEphemeral").pop().unwrap()["user"], "UMALLORY");

    // An SRE reacts with ✅ on the card.
    let (status, _) = served.event("Ev1", json!({"type": "reaction_added", "user": "UBOB", "reaction": "white_check_mark", "item": {"type": "message", "channel": "COPS", "ts": card_ts}, "event_ts": "2"}));
    assert_eq!(status, 200);
    slack.wait_for("the outcome in the thread", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    let calls = slack.calls();
    // The card was updated: decided, by whom, and no buttons left.
    let update =
        calls.iter().rfind(|c| c.method == "chat.update" && c.body["ts"] == card_ts.as_str()).expect("card updated");
    let updated = text_of(&update.body);
    assert!(
        updated.contains("Approved") && updated.contains("<@UBOB>") && !updated.contains("opsbot_approve"),
        "{updated}"
    );
    // Start, progress and outcome all live in the card's thread; progress is one message, updated.
    let threaded: Vec<&Call> =
        calls.iter().filter(|c| c.method == "chat.postMessage" && c.body["thread_ts"] == card_ts.as_str()).collect();
    assert!(
        threaded.iter().any(|c| text_of(&c.body).contains("r-1: [simulated] deploy api-service v1.4.2 started")),
        "{threaded:#?}"
    );
    let progress_posts = threaded
        .iter()
        .filter(|c| text_of(&c.body).contains("replicas updated") || text_of(&c.body).contains("rolling"))
        .count();
    assert_eq!(progress_posts, 1, "progress is posted once, then updated");
    assert!(calls.iter().any(|c| c.method == "chat.update" && text_of(&c.body).contains("2/2 replicas updated")));
    assert!(calls.iter().all(|c| c.authorization == "Bearer xoxb-test-token"));

    let records = served.bot.export(&["--request", "r-1"]);
    let votes: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "vote")
        .map(|r| (r["actor"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(votes, [("slack:UALICE", "refused"), ("slack:UMALLORY", "refused"), ("slack:UBOB", "approve")]);
    assert!(records.iter().any(|r| r["kind"] == "outcome" && r["outcome"] == "succeeded"));
    assert_eq!(records[0]["channel"], "slack:COPS");
    // Display names from users.info label the actors in the trail; each person
    // is looked up once, however many times they acted.
    let named: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "vote")
        .map(|r| (r["actor"].as_str().unwrap(), r["actor_name"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        named,
        [("slack:UALICE", "UALICE-display"), ("slack:UMALLORY", "UMALLORY-display"), ("slack:UBOB", "UBOB-display")]
    );
    assert_eq!(records[0]["actor_name"], "UALICE-display");
    let lookups: Vec<String> = slack
        .calls()
        .iter()
        .filter(|c| c.method == "users.info")
        .map(|c| c.body["user"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(lookups, ["UALICE", "UMALLORY", "UBOB"], "one lookup per person: {lookups:?}");
    // The request ended: opsbot no longer follows its thread.
    served.wait_for_metric("opsbot_slack_threads 0");
    served.stop();
}

#[test]
fn a_denied_request_closes_its_card_and_nothing_runs() {
    let served = Served::start("http");
    let ack = served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "trig-deny");
    assert!(ack["text"].as_str().unwrap().contains("r-1 is waiting"), "{ack}");
    let slack = &served.slack;
    slack.wait_for("the approval card", LONG, |c| has(c, "chat.postMessage", "opsbot_deny"));
    let card_ts = format!("1700000000.{:06}", slack.ok_calls("chat.postMessage").len());
    served.wait_for_metric("opsbot_slack_threads 1");

    assert_eq!(served.click("UBOB", "opsbot_deny", "r-1", &card_ts), 200);
    slack.wait_for("the card closed", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.update" && c.body["ts"] == card_ts.as_str() && text_of(&c.body).contains("Denied")
        })
    });
    let update = slack.calls().into_iter().rfind(|c| c.method == "chat.update").unwrap();
    let closed = text_of(&update.body);
    assert!(closed.contains("<@UBOB>") && !closed.contains("opsbot_approve"), "{closed}");
    // Nothing more will be said about r-1, so its thread is not followed.
    served.wait_for_metric("opsbot_slack_threads 0");
    served.wait_for_metric("opsbot_pending_approvals 0");

    let records = served.bot.export(&["--request", "r-1"]);
    assert!(records.iter().any(|r| r["kind"] == "vote" && r["actor"] == "slack:UBOB" && r["outcome"] == "deny"));
    assert!(!records.iter().any(|r| r["kind"] == "intent"), "a denied deploy never runs: {records:#?}");
    assert!(!slack.calls().iter().any(|c| text_of(&c.body).contains("started")));
    served.stop();
}

#[test]
fn bad_signatures_get_401_and_change_nothing() {
    let served = Served::start("http");
    let body = "command=%2Fdeploy&text=api-staging+v9&user_id=UALICE&channel_id=COPS&trigger_id=t";
    let now = chrono::Utc::now().timestamp();
    let good = Verifier::new(SECRET).sign(now, body.as_bytes());
    let cases = [
        (
            "forged with another secret",
            body.to_string(),
            now,
            Some(Verifier::new("not-the-secret").sign(now, body.as_bytes())),
        ),
        ("body altered after signing", body.replace("v9", "v10"), now, Some(good.clone())),
        // A minute past the 5-minute window, so a slow start cannot bring them back into it.
        ("stale timestamp", body.to_string(), now - 360, Some(Verifier::new(SECRET).sign(now - 360, body.as_bytes()))),
        ("future timestamp", body.to_string(), now + 360, Some(Verifier::new(SECRET).sign(now + 360, body.as_bytes()))),
        ("garbage signature", body.to_string(), now, Some("v0=zz".into())),
        ("missing headers", body.to_string(), now, None),
    ];
    for path in ["/slack/commands", "/slack/interactivity", "/slack/events"] {
        for (name, body, ts, signature) in &cases {
            let (status, _) =
                served.post_signed(path, "application/x-www-form-urlencoded", body, *ts, signature.clone());
            assert_eq!(status, 401, "{path}: {name}");
        }
    }
    // A body over the 256 KiB limit is refused before it is read or verified,
    // even when correctly signed: the client sends only its headers and gets
    // the answer. (Sending the whole body would race the server's close and
    // fail on a broken pipe now and then; the streamed case is a unit test.)
    let oversized = format!("{body}&pad={}", "x".repeat(300 * 1024));
    for path in ["/slack/commands", "/slack/interactivity", "/slack/events"] {
        assert_eq!(
            served.post_head_only(path, "application/x-www-form-urlencoded", &oversized),
            413,
            "{path}: oversized body"
        );
    }
    assert!(served.slack.calls().is_empty(), "nothing was posted");
    let records = served.bot.export(&[]);
    assert!(records.iter().all(|r| r["kind"] == "system"), "nothing but start-up was recorded: {records:?}");
    let (_, metrics) = served.get("/metrics");
    assert!(metrics.contains("opsbot_rejected_signatures_total 18"), "{metrics}");
    // url_verification is answered once verified.
    let (status, answer) = served.post(
        "/slack/events",
        "application/json",
        &json!({"type": "url_verification", "challenge": "c-123", "token": "x"}).to_string(),
    );
    assert_eq!((status, answer.as_str()), (200, "{\"challenge\":\"c-123\"}"));
}

#[test]
fn retried_deliveries_run_nothing_twice() {
    let mut served = Served::start("http");
    let first = served.command("UALICE", "COPS", "/deploy", "api-staging v2.0.0", "trig-dup");
    assert!(first["text"].as_str().unwrap().contains("r-1"), "{first}");
    // Slack retries the same slash command (same trigger_id).
    let retry = served.command("UALICE", "COPS", "/deploy", "api-staging v2.0.0", "trig-dup");
    assert_eq!(retry["text"], "Already received.");
    // A mention event delivered three times (X-Slack-Retry-Num) is handled once.
    let mention = json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> status api-staging", "channel": "COPS", "ts": "77.1"});
    for _ in 0..3 {
        assert_eq!(served.event("EvMention", mention.clone()).0, 200);
    }
    served.slack.wait_for("the status reply", LONG, |c| has(c, "chat.postMessage", "api-staging (staging)"));
    served.slack.wait_for("the deploy outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    std::thread::sleep(Duration::from_millis(300));
    let status_posts = served
        .slack
        .ok_calls("chat.postMessage")
        .iter()
        .filter(|c| text_of(c).contains("api-staging (staging)"))
        .count();
    assert_eq!(status_posts, 1);
    assert!(
        served
            .slack
            .ok_calls("chat.postMessage")
            .iter()
            .filter(|c| text_of(c).contains("api-staging (staging)"))
            .all(|c| c["thread_ts"] == "77.1"),
        "mentions are answered in thread"
    );
    // Slack keeps retrying across a restart of the bot: still nothing runs twice.
    served.restart();
    let after_restart = served.command("UALICE", "COPS", "/deploy", "api-staging v2.0.0", "trig-dup");
    assert_eq!(after_restart["text"], "Already received.");
    assert_eq!(served.event("EvMention", mention).0, 200);
    // Events are handled after their ack; give a wrongly repeated one time to show.
    std::thread::sleep(Duration::from_millis(300));
    let records = served.bot.export(&[]);
    assert_eq!(records.iter().filter(|r| r["kind"] == "intent").count(), 1, "one deploy ran");
    assert_eq!(records.iter().filter(|r| r["kind"] == "request" && r["command"] == "status").count(), 1);
}

#[test]
fn a_429_storm_delays_but_delivers_every_message_in_order() {
    let served = Served::start("http");
    for _ in 0..4 {
        served.slack.fail(Fault {
            method: "chat.postMessage".into(),
            channel: Some("CSTORM".into()),
            status: 429,
            retry_after: Some(1),
        });
    }
    served.slack.fail(Fault {
        method: "chat.postMessage".into(),
        channel: Some("CSTORM".into()),
        status: 503,
        retry_after: None,
    });
    let topics = ["deploy", "status", "scale", "lock", "audit", "rollback"];
    for (i, topic) in topics.iter().enumerate() {
        let mention = json!({"type": "app_mention", "user": "UALICE", "text": format!("<@UBOT> help {topic}"), "channel": "CSTORM", "ts": format!("{i}.5")});
        assert_eq!(served.event(&format!("EvStorm{i}"), mention).0, 200);
    }
    served.slack.wait_for("all six answers", Duration::from_secs(20), |calls| {
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.status == 200 && c.body["channel"] == "CSTORM")
            .count()
            == 6
    });
    let delivered: Vec<String> =
        served.slack.ok_calls("chat.postMessage").iter().filter(|c| c["channel"] == "CSTORM").map(text_of).collect();
    for (i, topic) in topics.iter().enumerate() {
        assert!(delivered[i].starts_with(&format!("/{topic} —")), "message {i} out of order: {delivered:?}");
    }
    let refused = served.slack.calls().iter().filter(|c| c.status != 200).count();
    assert_eq!(refused, 5);
    let (_, metrics) = served.get("/metrics");
    assert!(metrics.contains("opsbot_slack_rate_limited_total 4"), "{metrics}");
}

#[test]
fn slacks_own_python_sdk_signs_requests_opsbot_accepts() {
    let served = Served::start("http");
    let body = "command=%2Fstatus&text=api-service&user_id=UBOB&channel_id=COPS&trigger_id=py-1";
    let ts = chrono::Utc::now().timestamp().to_string();
    let script = "import sys\nfrom slack_sdk.signature import SignatureVerifier\nprint(SignatureVerifier(sys.argv[1]).generate_signature(timestamp=sys.argv[2], body=sys.argv[3]))";
    let output =
        std::process::Command::new("python3").args(["-c", script, SECRET, &ts, body]).output().expect("python3 runs");
    assert!(
        output.status.success(),
        "slack_sdk is needed (pip install slack_sdk): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signature = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(signature.starts_with("v0="));
    let (status, answer) = served.post_signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body,
        ts.parse().unwrap(),
        Some(signature.clone()),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("api-service (production)"), "{answer}");
    // And the same signature on a different body is refused.
    let (status, _) = served.post_signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        &body.replace("UBOB", "UDAVE"),
        ts.parse().unwrap(),
        Some(signature),
    );
    assert_eq!(status, 401);
}

#[test]
fn health_metrics_and_missing_secrets() {
    let served = Served::start("http");
    assert_eq!(served.get("/health/live").0, 200);
    assert_eq!(served.get("/health/ready"), (200, "ready\n".into()));
    served.command("UALICE", "COPS", "/status", "api-service", "t-m");
    let (_, metrics) = served.get("/metrics");
    for line in [
        "opsbot_requests_total{platform=\"slack\",command=\"status\",outcome=\"allowed\"} 1",
        "opsbot_ack_seconds_count 1",
        "opsbot_pending_approvals 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    served.stop();

    let bot = Bot::with_config(&config("both"));
    let output = bot
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("SLACK_APP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let err = String::from_utf8_lossy(&output.stderr);
    for name in ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"] {
        assert!(err.contains(name), "{name} missing from {err}");
    }
}

#[test]
fn the_manifest_lists_every_command_and_endpoint() {
    let bot = Bot::with_config(&config("http"));
    let output = bot.command(&["slack-manifest", "--url", "https://opsbot.example.com/"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let manifest: Value = serde_json::from_slice(&output.stdout).unwrap();
    let commands: Vec<&str> = manifest["features"]["slash_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    for name in [
        "/deploy",
        "/ship",
        "/rollback",
        "/restart",
        "/scale",
        "/status",
        "/lock",
        "/unlock",
        "/approve",
        "/deny",
        "/audit",
        "/help",
        "/incident",
        "/runbook",
    ] {
        assert!(commands.contains(&name), "{name} missing: {commands:?}");
    }
    // A group is one slash command; its words are in the hint.
    assert_eq!(commands.iter().filter(|c| c.starts_with("/incident")).count(), 1, "{commands:?}");
    let incident = manifest["features"]["slash_commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "/incident")
        .unwrap();
    assert!(incident["usage_hint"].as_str().unwrap().starts_with("declare|lead|"), "{incident}");
    let deploy =
        manifest["features"]["slash_commands"].as_array().unwrap().iter().find(|c| c["command"] == "/deploy").unwrap();
    assert_eq!(deploy["url"], "https://opsbot.example.com/slack/commands");
    assert!(deploy["usage_hint"].as_str().unwrap().starts_with("<service> <version>"));
    assert_eq!(manifest["settings"]["interactivity"]["request_url"], "https://opsbot.example.com/slack/interactivity");
    assert_eq!(manifest["settings"]["event_subscriptions"]["request_url"], "https://opsbot.example.com/slack/events");
    let scopes = manifest["oauth_config"]["scopes"]["bot"].to_string();
    for scope in ["commands", "chat:write", "pins:write", "reactions:read", "app_mentions:read"] {
        assert!(scopes.contains(scope), "{scope}");
    }
    let http = bot.command(&["slack-manifest", "--url", "http://insecure"]).output().unwrap();
    assert!(!http.status.success());
}

#[test]
fn socket_mode_acks_envelopes_and_survives_a_reconnect() {
    let served = Served::start("socket");
    let slack = &served.slack;
    let deadline = std::time::Instant::now() + LONG;
    while served.get("/health/ready").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The HTTP endpoints are off in socket mode.
    assert_eq!(served.post("/slack/commands", "application/x-www-form-urlencoded", "command=%2Fstatus").0, 404);
    let command = |envelope: &str, trigger: &str| {
        json!({"envelope_id": envelope, "type": "slash_commands", "accepts_response_payload": true, "payload": {
            "command": "/deploy", "text": "api-service v1.5.0", "user_id": "UALICE", "channel_id": "COPS", "trigger_id": trigger, "team_id": "T1"}})
    };
    slack.push(command("env-1", "sock-trig-1"));
    let wait_ack = |id: &str| {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            if let Some(ack) = slack.acks().into_iter().find(|a| a["envelope_id"] == id) {
                return ack;
            }
            assert!(std::time::Instant::now() < deadline, "no ack for {id}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let ack = wait_ack("env-1");
    assert!(ack["payload"]["text"].as_str().unwrap().contains("r-1 is waiting for 1 approval(s)"), "{ack}");
    slack.wait_for("the card", LONG, |c| has(c, "chat.postMessage", "opsbot_approve"));
    let card_ts =
        slack.ok_calls("chat.postMessage").into_iter().find(|c| text_of(c).contains("opsbot_approve")).unwrap()
            ["channel"]
            .clone();
    assert_eq!(card_ts, "COPS");

    // Slack asks for a reconnect; then redelivers the same command (not run twice).
    slack.push(json!({"type": "disconnect", "reason": "refresh_requested"}));
    let deadline = std::time::Instant::now() + LONG;
    while slack.connections() < 2 {
        assert!(std::time::Instant::now() < deadline, "did not reconnect");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    slack.push(command("env-1-again", "sock-trig-1"));
    assert_eq!(wait_ack("env-1-again")["payload"]["text"], "Already received.");

    // An approval by button over the socket runs it.
    let click = json!({"envelope_id": "env-2", "type": "interactive", "payload": {
        "type": "block_actions", "user": {"id": "UDAVE"}, "channel": {"id": "COPS"},
        "container": {"message_ts": "1700000000.000001"}, "actions": [{"action_id": "opsbot_approve", "value": "r-1"}]}});
    slack.push(click);
    wait_ack("env-2");
    slack.wait_for("the outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    let records = served.bot.export(&[]);
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "request").count(),
        1,
        "the redelivered command did not run twice"
    );
    assert!(records.iter().any(|r| r["kind"] == "vote" && r["actor"] == "slack:UDAVE"));
    served.stop();
}

/// Every piece of text a person types (a lock reason, an emergency reason, a
/// deny reason, an echo of a mistyped value) reaches Slack escaped: it can
/// neither ping the channel (`<!channel>`) nor show a disguised link, nor be
/// turned into a mention of someone.
#[test]
fn typed_text_reaches_slack_escaped_in_every_field() {
    let payload = "<!channel> <https://evil.example|runbook> slack:UBOB";
    let escaped = "&lt;!channel&gt; &lt;https://evil.example|runbook&gt; slack:UBOB";
    let rules = r#"
[[rules]]
commands = ["lock"]
environments = ["*"]
requesters = ["developers", "sre"]

[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
break_glass = ["developers"]
"#;
    // The break-glass rule goes first, so it decides production deploys.
    let text = config("http").replacen("[[rules]]", &format!("{}\n[[rules]]", rules.trim()), 1);
    let served = Served::with_config(&text);
    let acks = [
        served.command("UALICE", "COPS", "/lock", &format!("api-staging \"{payload}\""), "t1"),
        served.command("UALICE", "COPS", "/deploy", "api-staging v2.0.0", "t2"),
        served.command("UALICE", "COPS", "/unlock", "api-staging", "t3"),
        served.command("UALICE", "COPS", "/deploy", &format!("api-service v2.0.1 --emergency \"{payload}\""), "t4"),
        served.command("UALICE", "COPS", "/deploy", &format!("api-svc<!here>{payload} v1"), "t5"),
    ];
    let lock = acks[0]["text"].as_str().unwrap();
    assert!(lock.contains("locked by <@UALICE>") && lock.contains(escaped), "lock reason: {lock}");
    let refused = acks[1]["text"].as_str().unwrap();
    assert!(refused.contains("is locked by <@UALICE>") && refused.contains(escaped), "lock echo: {refused}");
    let unlocked = acks[2]["text"].as_str().unwrap();
    assert!(unlocked.contains("unlocked by <@UALICE>") && unlocked.contains(escaped), "unlock echo: {unlocked}");
    let emergency = acks[3]["text"].as_str().unwrap();
    assert!(emergency.contains("break-glass by <@UALICE>") && emergency.contains(escaped), "emergency: {emergency}");
    let echo = acks[4]["text"].as_str().unwrap();
    assert!(echo.contains("&lt;!here&gt;") && echo.contains("not a valid"), "a mistyped value's echo: {echo}");

    // A deny reason, said in the channel.
    served.slack.wait_for("the break-glass run", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-4"));
    let pending = served.command("UALICE", "COPS", "/deploy", "api-service v2.0.2", "t6");
    assert!(pending["text"].as_str().unwrap().contains("waiting for 1 approval"), "{pending}");
    let denied = served.command("UBOB", "COPS", "/deny", &format!("r-5 \"{payload}\""), "t7");
    let denial = denied["text"].as_str().unwrap();
    assert!(denial.contains("r-5 denied by <@UBOB>") && denial.contains(escaped), "deny reason: {denial}");
    served.slack.wait_for("the card closed", LONG, |c| has(c, "chat.update", "Denied: deploy api-service v2.0.2"));
    let calls = served.slack.calls();
    // The break-glass start message repeats the reason.
    assert!(has(&calls, "chat.postMessage", &format!("BREAK-GLASS by <@UALICE>: {escaped}")), "{calls:#?}");

    // /status shows the lock reason, /audit the reasons on the record.
    let relocked = served.command("UALICE", "COPS", "/lock", &format!("api-staging \"{payload}\""), "t8");
    let status = served.command("UBOB", "COPS", "/status", "api-staging", "t9");
    let shown = status["text"].as_str().unwrap();
    assert!(shown.contains("locked by <@UALICE>") && shown.contains(escaped), "status: {shown}");
    let audit = served.command("UBOB", "COPS", "/audit", "api-staging", "t10");
    let listed = audit["text"].as_str().unwrap();
    assert!(listed.contains("&lt;!channel&gt;") && listed.contains("UALICE"), "audit: {listed}");

    // Nowhere did the raw markup reach Slack.
    let mut everything: Vec<String> =
        acks.iter().chain([&pending, &denied, &relocked, &status, &audit]).map(|a| a.to_string()).collect();
    everything.extend(calls.iter().map(|c| text_of(&c.body)));
    for text in &everything {
        for raw in ["<!channel>", "<!here>", "<https://evil.example", "<@UBOB>  "] {
            assert!(!text.contains(raw), "{raw} reached Slack in: {text}");
        }
        assert!(!text.contains("runbook&gt; <@UBOB>"), "typed text became a mention: {text}");
    }
}

fn storm(channel: &str) -> Fault {
    Fault { method: "chat.postMessage".into(), channel: Some(channel.into()), status: 429, retry_after: Some(1) }
}

/// Private notes and in-place updates go their own way: thirty refused votes
/// (each a private note) do not hold up the channel's next post.
#[test]
fn private_notes_do_not_wait_behind_channel_posts() {
    let text = config("http")
        .replace("channel_interval = \"20ms\"\nchannel_burst = 5", "channel_interval = \"500ms\"\nchannel_burst = 1");
    let served = Served::with_config(&text);
    let ack = served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "q-1");
    assert!(ack["text"].as_str().unwrap().contains("waiting for"), "{ack}");
    served.slack.wait_for("the card", LONG, |c| has(c, "chat.postMessage", "opsbot_approve"));
    let card_ts =
        served.slack.ok_calls("chat.postMessage").iter().find(|c| text_of(c).contains("opsbot_approve")).unwrap()["ts"]
            .clone();
    let card_ts = card_ts.as_str().map(str::to_string).unwrap_or_else(|| "1700000000.000001".into());
    for i in 0..30 {
        assert_eq!(served.click(&format!("UMALLORY{i}"), "opsbot_approve", "r-1", &card_ts), 200);
    }
    // Bob approves: the start message is a channel post.
    assert_eq!(served.click("UBOB", "opsbot_approve", "r-1", &card_ts), 200);
    served
        .slack
        .wait_for("the start message", LONG, |c| has(c, "chat.postMessage", "deploy api-service v1.4.2 started"));
    served.slack.wait_for("all thirty refusals", LONG, |c| {
        c.iter().filter(|c| c.method == "chat.postEphemeral" && c.status == 200).count() == 30
    });
    let calls = served.slack.calls();
    let started =
        calls.iter().position(|c| c.method == "chat.postMessage" && text_of(&c.body).contains("started")).unwrap();
    let last_refusal = calls.iter().rposition(|c| c.method == "chat.postEphemeral").unwrap();
    assert!(started < last_refusal, "the start waited behind the private notes: {started} vs {last_refusal}");
}

/// A long 429 storm on one channel: the send queue stays bounded (memory
/// flat), plain replies beyond it are dropped and counted, and the channel
/// is served again once the storm ends.
#[test]
fn a_long_429_storm_keeps_memory_flat() {
    let served = Served::start("http");
    served.slack.storm(storm("CFLOOD"));
    let mention = |i: usize| json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> help", "channel": "CFLOOD", "ts": format!("{i}.1")});
    for i in 0..500 {
        assert_eq!(served.event(&format!("EvWarm{i}"), mention(i)).0, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = served.rss_kib();
    for i in 0..20_000 {
        assert_eq!(served.event(&format!("EvFlood{i}"), mention(1000 + i)).0, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = served.rss_kib();
    let (_, metrics) = served.get("/metrics");
    let value = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or("0").parse().unwrap()
    };
    assert!(value("opsbot_slack_queued") <= 130, "{metrics}");
    assert!(value("opsbot_slack_dropped_total") >= 20_000 - 130, "{metrics}");
    assert!(after < before + 10 * 1024, "resident memory grew from {before} KiB to {after} KiB during the storm");
    // When the storm ends, what is queued goes out.
    served.slack.calm();
    served.slack.wait_for("the queue to empty", Duration::from_secs(30), |c| {
        c.iter().filter(|c| c.method == "chat.postMessage" && c.status == 200 && c.body["channel"] == "CFLOOD").count()
            >= 100
    });
}

/// A channel's send queue ends when idle: a bot that answered in many
/// channels does not keep a task for each.
#[test]
fn idle_channel_queues_end() {
    let text = config("http").replace("channel_burst = 5", "channel_burst = 5\nchannel_idle = \"300ms\"");
    let served = Served::with_config(&text);
    for i in 0..20 {
        let mention = json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> help", "channel": format!("CIDLE{i}"), "ts": format!("{i}.1")});
        assert_eq!(served.event(&format!("EvIdle{i}"), mention).0, 200);
    }
    served.slack.wait_for("twenty answers", LONG, |c| {
        c.iter().filter(|c| c.method == "chat.postMessage" && c.status == 200).count() == 20
    });
    served.wait_for_metric("opsbot_slack_channels 0");
    // A channel that speaks again gets a queue again.
    let mention =
        json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> help", "channel": "CIDLE0", "ts": "99.1"});
    assert_eq!(served.event("EvIdleAgain", mention).0, 200);
    served.slack.wait_for("the answer", LONG, |c| {
        c.iter().filter(|c| c.method == "chat.postMessage" && c.status == 200).count() == 21
    });
}

/// Messages still queued at shutdown are waited for within a bounded grace,
/// then named in the log, request by request.
#[test]
fn messages_not_delivered_by_shutdown_are_named() {
    let text = config("http").replace("channel_burst = 5", "channel_burst = 5\nshutdown_grace = \"1s\"");
    let mut served = Served::with_config(&text);
    served.slack.storm(storm("CSLOW"));
    let ack = served.command("UALICE", "CSLOW", "/deploy", "api-staging v2.0.0", "s-1");
    assert!(ack["text"].as_str().unwrap().contains("r-1 runs now"), "{ack}");
    std::thread::sleep(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let status = served.terminate_and_wait();
    assert!(status.success(), "clean exit");
    assert!(started.elapsed() < Duration::from_secs(8), "the grace is bounded: {:?}", started.elapsed());
    let log = served.log();
    assert!(log.contains("Slack messages not delivered before shutdown"), "{log}");
    assert!(log.contains("r-1 start message in CSLOW") && log.contains("r-1 outcome in CSLOW"), "{log}");
}

/// A Socket Mode connection that goes silent (half-open: no pongs, no
/// frames, never closed) is noticed, readiness goes false while no socket is
/// live, and a new connection replaces it; commands work again after.
#[test]
fn a_silent_socket_is_noticed_replaced_and_readiness_follows() {
    let text = config("socket").replace("channel_burst = 5", "channel_burst = 5\nsocket_ping = \"200ms\"");
    let served = Served::with_config(&text);
    let slack = &served.slack;
    let ready = |want: u16, what: &str| {
        let deadline = std::time::Instant::now() + LONG;
        while served.get("/health/ready").0 != want {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    ready(200, "never became ready");
    assert_eq!(slack.connections(), 1);
    // The next connection attempts fail for a while, so the gap is visible.
    for _ in 0..3 {
        slack.fail(Fault { method: "apps.connections.open".into(), channel: None, status: 500, retry_after: None });
    }
    slack.silence_socket();
    let silenced = std::time::Instant::now();
    ready(503, "readiness stayed green on a silent socket");
    let noticed = silenced.elapsed();
    assert!(noticed < Duration::from_secs(3), "took {noticed:?} to notice (three pings of 200ms)");
    let (_, why) = served.get("/health/ready");
    assert!(why.contains("slack socket mode"), "{why}");
    ready(200, "never reconnected");
    assert_eq!(slack.connections(), 2, "a new connection replaced the silent one");
    // The new socket carries commands.
    slack.push(json!({"envelope_id": "env-after", "type": "slash_commands", "accepts_response_payload": true, "payload": {
        "command": "/status", "text": "api-staging", "user_id": "UALICE", "channel_id": "COPS", "trigger_id": "after-1", "team_id": "T1"}}));
    let deadline = std::time::Instant::now() + LONG;
    while !slack.acks().iter().any(|a| a["envelope_id"] == "env-after") {
        assert!(std::time::Instant::now() < deadline, "no ack on the new socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served.log().contains("no frame from Slack"), "{}", served.log());
}

/// An answer longer than one Slack message (a long /audit) reaches the
/// channel whole, in parts, instead of an ack cut at Slack's limit.
#[test]
fn a_long_answer_reaches_the_channel_whole_in_parts() {
    let served = Served::start("http");
    // 50 refused requests (no rule allows /lock here): 100 records.
    for i in 0..25 {
        served.command("UALICE", "COPS", "/lock", &format!("api-staging \"window {i}\""), &format!("l{i}"));
        served.command("UALICE", "COPS", "/unlock", "api-staging", &format!("u{i}"));
    }
    let ack = served.command("UBOB", "COPS", "/audit", "api-staging 100", "a1");
    assert_eq!(ack["response_type"], "ephemeral", "{ack}");
    assert!(ack["text"].as_str().unwrap().contains("follows in the channel"), "{ack}");
    let lines = |calls: &[Call]| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.status == 200)
            .flat_map(|c| text_of(&c.body).lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|l| l.trim_start().starts_with('#'))
            .collect()
    };
    served.slack.wait_for("all 100 audit lines", LONG, |calls| lines(calls).len() >= 100);
    let calls = served.slack.calls();
    let posts = calls.iter().filter(|c| c.method == "chat.postMessage" && text_of(&c.body).contains("  #")).count();
    assert!(posts > 1, "split into several posts: {posts}");
    for call in calls.iter().filter(|c| c.method == "chat.postMessage") {
        assert!(text_of(&call.body).chars().count() <= 3_900, "each part fits one message");
    }
    assert_eq!(lines(&calls).len(), 100);
}

/// A long answer is promised only when the channel's queue takes it, and,
/// once taken, is not pushed out by later plain messages; in a channel
/// whose queue is full the ack says so instead. The queue stays bounded.
#[test]
fn a_long_answer_is_promised_only_when_queued_and_then_kept() {
    // A short shutdown grace: the storm in CTWO never ends.
    let served =
        Served::with_config(&config("http").replace("channel_burst = 5", "channel_burst = 5\nshutdown_grace = \"1s\""));
    for i in 0..25 {
        served.command("UALICE", "COPS", "/lock", &format!("api-staging \"window {i}\""), &format!("l{i}"));
        served.command("UALICE", "COPS", "/unlock", "api-staging", &format!("u{i}"));
    }
    served.slack.storm(storm("CFULL"));
    let ack = served.command("UBOB", "CFULL", "/audit", "api-staging 100", "a1");
    assert!(ack["text"].as_str().unwrap().contains("follows in the channel"), "{ack}");
    // Plain replies fill the queue and overflow it; the answer stays.
    let mention = |i: usize| json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> help", "channel": "CFULL", "ts": format!("{i}.1")});
    for i in 0..300 {
        assert_eq!(served.event(&format!("EvFull{i}"), mention(i)).0, 200);
    }
    let ack = served.command("UBOB", "CFULL", "/audit", "api-staging 100", "a2");
    let text = ack["text"].as_str().unwrap();
    assert!(text.contains("backed up") && !text.contains("follows"), "{ack}");
    let (_, metrics) = served.get("/metrics");
    let queued: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("opsbot_slack_queued "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(queued <= 130, "bounded: {queued}");
    served.slack.calm();
    let audit_lines = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.status == 200 && c.body["channel"] == "CFULL")
            .flat_map(|c| text_of(&c.body).lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
    };
    served.slack.wait_for("the promised answer, all 100 lines", Duration::from_secs(60), |c| audit_lines(c) >= 100);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(audit_lines(&served.slack.calls()), 100, "the refused one was not sent");

    // A channel holds two long answers waiting at most (besides the one
    // being posted), however empty its queue.
    served.slack.storm(storm("CTWO"));
    let ack = served.command("UBOB", "CTWO", "/audit", "api-staging 100", "two-first");
    assert!(ack["text"].as_str().unwrap().contains("follows"), "{ack}");
    served.slack.wait_for("the first answer being posted", LONG, |c| {
        c.iter().any(|c| c.method == "chat.postMessage" && c.body["channel"] == "CTWO")
    });
    for (i, want) in ["follows", "follows", "backed up"].iter().enumerate() {
        let ack = served.command("UBOB", "CTWO", "/audit", "api-staging 100", &format!("two{i}"));
        assert!(ack["text"].as_str().unwrap().contains(want), "answer {i}: {ack}");
    }
}

/// A 429 storm in one channel, with its queue full of plain replies, holds
/// up nothing elsewhere: votes and cards in another channel go through at
/// once (a must-deliver message never waits for room, and never while a
/// vote is being counted).
#[test]
fn a_storm_in_one_channel_never_stalls_votes_in_another() {
    let text = config("http").replace("channel_burst = 5", "channel_burst = 5\nshutdown_grace = \"1s\"")
        + r#"
[services.jobs]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1, step = "30ms" }
"#;
    let served = Served::with_config(&text);
    served.slack.storm(Fault {
        method: "chat.postMessage".into(),
        channel: Some("CFLOOD".into()),
        status: 429,
        retry_after: Some(30),
    });
    for i in 0..200 {
        let mention = json!({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> help", "channel": "CFLOOD", "ts": format!("{i}.1")});
        assert_eq!(served.event(&format!("EvFill{i}"), mention).0, 200);
    }
    let timed = |what: &str, f: &dyn Fn() -> Value| {
        let started = std::time::Instant::now();
        let answer = f();
        assert!(started.elapsed() < Duration::from_secs(3), "{what} took {:?}: {answer}", started.elapsed());
        answer
    };
    let flood =
        timed("a request in the stormy channel", &|| served.command("UALICE", "CFLOOD", "/deploy", "jobs v2", "s1"));
    assert!(flood["text"].as_str().unwrap().contains("waiting for 1 approval"), "{flood}");
    let quiet =
        timed("a request elsewhere", &|| served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "s2"));
    assert!(quiet["text"].as_str().unwrap().contains("waiting for 1 approval"), "{quiet}");
    served.slack.wait_for("the quiet channel's card", LONG, |c| has(c, "chat.postMessage", "opsbot_approve"));
    timed("a vote in the stormy channel", &|| served.command("UBOB", "CFLOOD", "/approve", "r-1", "s3"));
    timed("a vote elsewhere", &|| served.command("UBOB", "COPS", "/approve", "r-2", "s4"));
    // The quiet channel's card closes and its action runs and is reported.
    served.slack.wait_for("the quiet channel's outcome", LONG, |c| {
        has(c, "chat.update", "Approved") && has(c, "chat.postMessage", ":white_check_mark: r-2")
    });
    assert!(served.slack.calls().iter().all(|c| c.body["channel"] != "CFLOOD" || c.status != 200));
}

/// Card updates held up by rate limits never land out of order: whatever
/// was queued, the card ends showing the decision, without buttons.
#[test]
fn a_card_ends_showing_its_decision_whatever_the_rate_limits() {
    let text = config("http").replace("approvals = 1", "approvals = 2");
    let served = Served::with_config(&text);
    let ack = served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "o1");
    assert!(ack["text"].as_str().unwrap().contains("waiting for 2 approval"), "{ack}");
    served.slack.wait_for("the card", LONG, |c| has(c, "chat.postMessage", "opsbot_approve"));
    let card_ts =
        served.slack.ok_calls("chat.postMessage").iter().find(|c| text_of(c).contains("opsbot_approve")).unwrap()["ts"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| "1700000000.000001".into());
    served.slack.storm(Fault {
        method: "chat.update".into(),
        channel: Some("COPS".into()),
        status: 429,
        retry_after: Some(1),
    });
    assert_eq!(served.click("UBOB", "opsbot_approve", "r-1", &card_ts), 200);
    assert_eq!(served.click("UDAVE", "opsbot_approve", "r-1", &card_ts), 200);
    std::thread::sleep(Duration::from_millis(300));
    served.slack.calm();
    served.slack.wait_for("the outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    served.slack.wait_for("the card's update", LONG, |c| has(c, "chat.update", "Approved"));
    std::thread::sleep(Duration::from_millis(300));
    let updates = served.slack.ok_calls("chat.update");
    let last = updates.last().expect("the card was updated");
    assert!(text_of(last).contains("Approved") && !text_of(last).contains("opsbot_approve"), "{updates:#?}");
    let first_closed = updates.iter().position(|u| text_of(u).contains("Approved")).unwrap();
    assert!(updates[first_closed..].iter().all(|u| !text_of(u).contains("opsbot_approve")), "{updates:#?}");
}

/// An update whose first try fails is retried with the card's newest view,
/// not the one it was queued with, even after a newer update went out on the
/// other lane (found by review: the card ended "1/2" with live buttons).
#[test]
fn a_retried_card_update_never_brings_back_an_older_view() {
    let text = config("http").replace("approvals = 1", "approvals = 2");
    let served = Served::with_config(&text);
    // The card's first post fails once: its ts is unknown when the first vote comes.
    served.slack.fail(Fault {
        method: "chat.postMessage".into(),
        channel: Some("COPS".into()),
        status: 500,
        retry_after: None,
    });
    let ack = served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "q1");
    assert!(ack["text"].as_str().unwrap().contains("waiting for 2 approval"), "{ack}");
    // The first update (1/2) goes on the posts lane behind the card; its first try fails.
    served.slack.fail(Fault {
        method: "chat.update".into(),
        channel: Some("COPS".into()),
        status: 500,
        retry_after: None,
    });
    served.command("UBOB", "COPS", "/approve", "r-1", "q2");
    served.slack.wait_for("the first update's failed try", LONG, |c| {
        c.iter().any(|c| c.method == "chat.update" && c.status == 500)
    });
    // Meanwhile the second approval: the card is known, so its update goes the fast way.
    served.command("UDAVE", "COPS", "/approve", "r-1", "q3");
    served.slack.wait_for("the outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    std::thread::sleep(Duration::from_millis(800));
    let updates = served.slack.ok_calls("chat.update");
    let last = updates.last().expect("the card was updated");
    assert!(
        text_of(last).contains("Approved") && !text_of(last).contains("opsbot_approve"),
        "the card must end approved, without buttons: {updates:#?}"
    );
}

/// Slack shows an error if a slash command is not acknowledged within 3 s.
/// A `/status` whose backend (here the Kubernetes API server) is slow is
/// acknowledged in time, saying the answer follows, and the answer is
/// posted in the channel when the backend gives it.
#[test]
fn a_status_whose_backend_is_slow_is_acknowledged_in_time_and_answered_in_the_channel() {
    let k8s = crate::fake_k8s::FakeK8s::start();
    k8s.add_deployment("shop", "api", "app", "registry.example.com/api:v1.0.0", 2);
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = k8s.kubeconfig(kubeconfig_dir.path());
    let service = "\n[services.api-k8s]\nenvironment = \"staging\"\nbackend = { type = \"kubernetes\", context = \"fake\", namespace = \"shop\", deployment = \"api\", container = \"app\", image = \"registry.example.com/api\", call_timeout = \"10s\" }\n";
    let text = config("http").replacen("[[rules]]", &format!("{service}\n[[rules]]"), 1);
    let served = Served::with_env(&text, &[("KUBECONFIG", kubeconfig.as_os_str())]);
    k8s.slow_nth("get", 1, Duration::from_secs(4));
    let started = std::time::Instant::now();
    let ack = served.command("UALICE", "CSLOWK", "/status", "api-k8s", "slow-1");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2900), "acknowledged within Slack's 3 s: {took:?}");
    assert!(ack["text"].as_str().unwrap().contains("Working on it"), "{ack}");
    served.slack.wait_for("the status in the channel", LONG, |calls| {
        calls.iter().any(|c| {
            c.method == "chat.postMessage" && c.body["channel"] == "CSLOWK" && text_of(&c.body).contains("v1.0.0")
        })
    });
    assert!(started.elapsed() >= Duration::from_secs(4), "posted when the backend answered, not before");
}

/// An incident declared in Slack: its summary is posted once at the
/// channel's top level, pinned, and edited in place as the incident
/// changes; a deploy to its service is held for the lead; the summary's
/// Roll back button asks for a rollback as the clicker, under its gates.
#[test]
fn an_incident_summary_is_posted_once_pinned_edited_in_place_and_offers_a_rollback() {
    let served = Served::start("http");
    let slack = &served.slack;
    let ack = served.command(
        "UALICE",
        "COPS",
        "/incident",
        "declare \"pool <!channel> exhausted\" --sev 1 --service api-service",
        "trig-1",
    );
    assert!(ack["text"].as_str().unwrap().contains("INC-1 declared by <@UALICE>"), "{ack}");
    slack.wait_for("the summary pinned", LONG, |c| c.iter().any(|c| c.method == "pins.add" && c.status == 200));
    let summary_posts = || -> Vec<Call> {
        slack
            .calls()
            .into_iter()
            .filter(|c| c.method == "chat.postMessage" && c.status == 200 && text_of(&c.body).contains("INC-1 SEV1"))
            .collect()
    };
    let posts = summary_posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let summary = &posts[0];
    assert!(summary.body.get("thread_ts").is_none_or(|t| t.is_null()), "at the channel's top level: {summary:?}");
    assert!(!text_of(&summary.body).contains("<!channel>"), "typed text is inert: {summary:?}");
    assert!(!text_of(&summary.body).contains("opsbot_rollback"), "nothing to roll back yet");
    let ts = summary.ts.clone().unwrap();
    let pin = slack.ok_calls("pins.add").pop().unwrap();
    assert_eq!((pin["channel"].as_str(), pin["timestamp"].as_str()), (Some("COPS"), Some(ts.as_str())));

    // A deploy to its service waits for an SRE and the lead: both approve, and it runs.
    let ack = served.command("UBOB", "COPS", "/deploy", "api-service v1.4.2", "trig-2");
    assert!(
        ack["text"]
            .as_str()
            .unwrap()
            .contains("1 approval(s) from sre and <@UALICE>'s (INC-1 (SEV1) is open on api-service)"),
        "{ack}"
    );
    served.command("UALICE", "COPS", "/approve", "r-1", "trig-3");
    served.command("UDAVE", "COPS", "/approve", "r-1", "trig-3b");
    slack.wait_for("the deploy's outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    // The summary follows every change, and now offers to roll the deploy back.
    served.command("UBOB", "COPS", "/incident", "update pool drained", "trig-4");
    let ts_ref = ts.as_str();
    let edited_with = |needle: &'static str| {
        move |c: &[Call]| {
            c.iter().any(|c| c.method == "chat.update" && c.body["ts"] == ts_ref && text_of(&c.body).contains(needle))
        }
    };
    slack.wait_for("the summary edited", LONG, edited_with("pool drained"));
    slack.wait_for("the Roll back button", LONG, edited_with("opsbot_rollback"));
    // Dave clicks it: a rollback request of his, under the summary, waiting for an SRE.
    assert_eq!(served.click("UDAVE", "opsbot_rollback:api-service", "r-1", &ts), 200);
    slack.wait_for("the rollback's card", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.postMessage"
                && c.body["thread_ts"] == ts.as_str()
                && text_of(&c.body).contains("opsbot_approve")
        })
    });
    let records = served.bot.export(&["--request", "r-2"]);
    assert_eq!(records[0]["kind"], "request");
    assert_eq!(records[0]["actor"], "slack:UDAVE");
    assert_eq!(records[0]["command"], "rollback");
    assert_eq!(records[0]["args"]["of"], "r-1", "the click names the deploy it undoes");
    assert_eq!(records[1]["outcome"], "pending", "a click is a request like any other: {records:#?}");
    // A click whose button does not name a plain service and a deploy is refused and opens nothing.
    assert_eq!(served.click("UDAVE", "opsbot_rollback:api-service 1", "r-1", &ts), 400);
    assert_eq!(served.click("UDAVE", "opsbot_rollback:api-service", "r-1 --emergency x", &ts), 400);
    assert!(served.bot.export(&["--request", "r-3"]).is_empty());
    served.command("UALICE", "COPS", "/incident", "resolve", "trig-5");
    slack.wait_for("the summary resolved", LONG, edited_with("resolved after"));
    assert_eq!(summary_posts().len(), 1, "posted once, edited afterwards");
    assert_eq!(slack.ok_calls("pins.add").len(), 1);
    served.stop();
}

/// The incident flow end to end in Slack: a deploy goes out; a SEV1 is
/// declared on its service and its summary offers to roll the deploy back;
/// a new deploy is held for the lead; the summary's button asks for the
/// rollback, which runs once approved; the connection-pool runbook runs
/// with an approval, its card showing the plan; the incident is resolved;
/// and the export tells it all from the trail, with durations.
#[test]
fn the_incident_flow_end_to_end_in_slack_with_a_rollback_click_and_a_runbook() {
    let text = config("http")
        .replace("[slack]", &format!("runbooks_dir = \"{}\"\n\n[slack]", crate::runbook::shipped_runbooks_dir()))
        .replace(
            "sre = [\"slack:UBOB\", \"slack:UDAVE\"]",
            "sre = [\"slack:UBOB\", \"slack:UDAVE\"]\ncommanders = [\"slack:UDAVE\"]",
        )
        + &crate::runbook::shipped_runbooks_config("slack:COPS");
    let served = Served::with_config(&text);
    let slack = &served.slack;
    served.command("UBOB", "COPS", "/deploy", "api-service v1.4.2", "e2e-1");
    served.command("UDAVE", "COPS", "/approve", "r-1", "e2e-2");
    slack.wait_for("the deploy's outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-1"));
    served.command("UALICE", "COPS", "/incident", "declare \"pool exhausted\" --sev 1 --service api-service", "e2e-3");
    slack.wait_for("the summary pinned", LONG, |c| c.iter().any(|c| c.method == "pins.add" && c.status == 200));
    let summary = slack
        .calls()
        .into_iter()
        .find(|c| c.method == "chat.postMessage" && c.status == 200 && text_of(&c.body).contains("INC-1 SEV1"))
        .unwrap();
    assert!(text_of(&summary.body).contains("r-1 deploy api-service"), "recent deploys listed: {summary:?}");
    assert!(text_of(&summary.body).contains("opsbot_rollback"), "a Roll back button: {summary:?}");
    let ts = summary.ts.clone().unwrap();
    // A deploy now is held for the lead.
    let ack = served.command("UBOB", "COPS", "/deploy", "api-service v1.4.3", "e2e-4");
    assert!(ack["text"].as_str().unwrap().contains("and <@UALICE>'s (INC-1 (SEV1) is open on api-service)"), "{ack}");
    // The summary's button asks for the rollback as Dave; Bob approves it.
    assert_eq!(served.click("UDAVE", "opsbot_rollback:api-service", "r-1", &ts), 200);
    slack.wait_for("the rollback's card", LONG, |c| has(c, "chat.postMessage", "r-3"));
    served.command("UBOB", "COPS", "/approve", "r-3", "e2e-5");
    slack.wait_for("the rollback's outcome", LONG, |c| has(c, "chat.postMessage", ":white_check_mark: r-3"));
    // The runbook: its card shows the plan; once approved, its steps run in the thread.
    let ack = served.command("UALICE", "COPS", "/runbook", "connection-pool idle_for=15m", "e2e-6");
    assert!(ack["text"].as_str().unwrap().contains("r-4 is waiting for 1 approval(s) from sre"), "{ack}");
    slack.wait_for("the runbook's card with its plan", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.postMessage"
                && text_of(&c.body).contains("opsbot_approve")
                && text_of(&c.body).contains("$1 = '900 seconds' (idle_for)")
        })
    });
    served.command("UDAVE", "COPS", "/approve", "r-4", "e2e-7");
    slack.wait_for("the runbook's outcome", LONG, |c| {
        has(c, "chat.postMessage", ":white_check_mark: r-4") || has(c, "chat.update", ":white_check_mark: r-4")
    });
    served.command("UALICE", "COPS", "/incident", "resolve \"rolled back\"", "e2e-8");
    slack.wait_for("the summary resolved", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.update" && c.body["ts"] == ts.as_str() && text_of(&c.body).contains("resolved after")
        })
    });
    let exported = served.bot.command(&["incident", "export", "INC-1"]).output().unwrap();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let md = String::from_utf8(exported.stdout).unwrap();
    for row in [
        "deploy r-2 pending",
        "rollback r-3 succeeded",
        "restart r-4 succeeded: step 1/3 restart api-service",
        "sql r-4 succeeded: step 3/3 sql on main",
        "runbook run r-4 succeeded: runbook connection-pool done",
        "- Time to mitigate: ",
        "- Time to resolve: ",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    served.stop();
}

/// With `[incidents] dedicated_channels`, a declared incident gets a channel
/// of its own: made by the bot, the declarer invited, its summary pinned
/// there, its commands taken there, and changes to its services taken
/// there as in the channel it was declared in. Without the scope, it lives
/// where it was declared and says why.
#[test]
fn an_incident_gets_a_channel_of_its_own_where_it_is_run() {
    let text = config("http") + "\n[incidents]\ndedicated_channels = true\n";
    let served = Served::with_config(&text);
    let slack = &served.slack;
    let ack = served.command(
        "UALICE",
        "COPS",
        "/incident",
        "declare \"Pool <exhausted>!\" --sev 1 --service api-service",
        "ch-1",
    );
    let said = ack["text"].as_str().unwrap();
    assert!(said.contains("It has its own channel, #inc-1-pool-exhausted"), "{ack}");
    assert_eq!(slack.channels(), [("inc-1-pool-exhausted".to_string(), "CINC1".to_string())]);
    let invite = slack.ok_calls("conversations.invite");
    assert_eq!(invite.len(), 1);
    assert_eq!(invite[0]["channel"], "CINC1");
    assert_eq!(invite[0]["users"], "UALICE", "the declarer is invited: {invite:?}");
    let created = slack.ok_calls("conversations.create");
    assert_eq!(created[0]["is_private"], true, "private: nobody sees it who was not asked in");
    // The summary is posted and pinned in the incident's channel, not here.
    slack.wait_for("the summary pinned", LONG, |c| c.iter().any(|c| c.method == "pins.add" && c.status == 200));
    let pin = slack.ok_calls("pins.add").pop().unwrap();
    assert_eq!(pin["channel"], "CINC1");
    let summary = slack
        .calls()
        .into_iter()
        .find(|c| c.method == "chat.postMessage" && text_of(&c.body).contains("INC-1 SEV1"))
        .unwrap();
    assert_eq!(summary.body["channel"], "CINC1");
    // Its commands are taken there, and in the channel it was declared in
    // (should its own be archived), where they are said in its channel.
    served.command("UALICE", "CINC1", "/incident", "update draining the pool", "ch-2");
    slack.wait_for("the summary edited there", LONG, |c| {
        c.iter()
            .any(|c| c.method == "chat.update" && c.body["channel"] == "CINC1" && text_of(&c.body).contains("draining"))
    });
    let ack = served.command("UALICE", "COPS", "/incident", "update from elsewhere", "ch-3");
    assert!(ack["text"].as_str().unwrap().contains("done: incident update (announced in its channel)"), "{ack}");
    slack.wait_for("the update said in its channel", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.postMessage"
                && c.body["channel"] == "CINC1"
                && text_of(&c.body).contains("from elsewhere")
        })
    });
    // Changes keep their channels: api-service takes them in slack:COPS only, not in the incident's channel.
    let ack = served.command("UBOB", "CINC1", "/rollback", "api-service", "ch-4");
    assert!(ack["text"].as_str().unwrap().contains("changes to api-service are only taken in slack:COPS"), "{ack}");
    // Without the scope, the incident lives where it was declared, and says why.
    slack.without_channel_scope();
    let ack = served.command(
        "UALICE",
        "CSTAGE",
        "/incident",
        "declare \"staging slow\" --sev 3 --service api-staging",
        "ch-6",
    );
    assert!(
        ack["text"]
            .as_str()
            .unwrap()
            .contains("could not get a channel of its own (the Slack app lacks the groups:write scope"),
        "{ack}"
    );
    slack.wait_for("the second summary", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.postMessage" && c.body["channel"] == "CSTAGE" && text_of(&c.body).contains("INC-2")
        })
    });
    let records = served.bot.export(&["--request", "INC-1"]);
    assert!(
        records[0]["detail"].as_str().unwrap().contains("its channel slack:CINC1 (inc-1-pool-exhausted)"),
        "{records:?}"
    );
    // The manifest asks for the scope only when the configuration does.
    let manifest = served.bot.command(&["slack-manifest"]).output().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert!(manifest["oauth_config"]["scopes"]["bot"].to_string().contains("groups:write"));
    served.stop();
}
