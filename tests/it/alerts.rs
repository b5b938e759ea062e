//! Alert intake end to end: the real `opsbot serve` against the fake Slack,
//! with a real Prometheus Alertmanager pair (Debian's
//! `prometheus-alertmanager`, two instances without gossip, so both deliver
//! every notification as an HA pair does) posting to it; payloads as
//! Datadog and PagerDuty send them; every refusal before a body is read.

use crate::fake_slack::Call;
use crate::slack::Served;
use crate::support::commands_dir;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "am-token-5b1f0c";
const DD_SECRET: &str = "dd-shared-7c2e";
/// The PagerDuty subscription's secrets while one is rotated.
const PD_OLD: &str = "pd-old-secret";
const PD_NEW: &str = "pd-new-secret";
const LONG: Duration = Duration::from_secs(20);
const CI_SECRET: &str = "ci-secret-41d9";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A bot whose alerts go to #COPS (api-service's channel) or #CALERTS.
fn config(am_api: &str) -> String {
    format!(
        r#"
[bot]
data_dir = "data"
commands_dir = "{commands}"

[slack]
mode = "http"
channel_interval = "20ms"
channel_burst = 5

[environments.production]

[groups]
developers = ["slack:UALICE"]
sre = ["slack:UBOB"]

[services.api-service]
environment = "production"
channels = ["slack:COPS"]
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

[[rules]]
commands = ["read", "incident", "alerts"]
environments = ["*"]
requesters = ["*"]

[[rules]]
commands = ["alerts-silence"]
environments = ["*"]
requesters = ["sre"]

[[rules]]
commands = ["deploy", "rollback"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1

[alerts]
default_channel = "slack:CALERTS"

[[alerts.routes]]
match = {{ service = "API Service" }}
service = "api-service"

[alerts.alertmanager]
token_env = "AM_TOKEN"
api_url = "{am_api}"

[alerts.datadog]
secret_env = "DD_SECRET"

[alerts.pagerduty]
secrets_env = "PD_SECRETS"

[ci]
secret_env = "CI_SECRET"
"#,
        commands = commands_dir().display()
    )
}

fn serve(am_api: &str) -> Served {
    let secrets = format!("{PD_OLD},{PD_NEW}");
    Served::with_env(
        &config(am_api),
        &[
            ("AM_TOKEN", std::ffi::OsStr::new(TOKEN)),
            ("DD_SECRET", std::ffi::OsStr::new(DD_SECRET)),
            ("PD_SECRETS", std::ffi::OsStr::new(&secrets)),
            ("CI_SECRET", std::ffi::OsStr::new(CI_SECRET)),
        ],
    )
}

/// A real Alertmanager whose one receiver is the bot's webhook.
struct Alertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(port: u16, bot: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
route:
  receiver: opsbot
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: opsbot
    webhook_configs:
      - url: {bot}/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
"#
        );
        std::fs::write(dir.path().join("am.yml"), config).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("am.log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager runs (Debian's package; scripts/test.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + LONG;
        while ureq::get(&format!("{base}/-/ready")).call().is_err() {
            assert!(Instant::now() < deadline, "Alertmanager did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Alertmanager { child, base, _dir: dir }
    }

    /// Posts alerts as Prometheus does.
    fn post(&self, alerts: &Value) {
        ureq::post(&format!("{}/api/v2/alerts", self.base)).send_json(alerts.clone()).expect("alerts taken");
    }

    fn silences(&self) -> Vec<Value> {
        let answer: Value = ureq::get(&format!("{}/api/v2/silences", self.base)).call().unwrap().into_json().unwrap();
        answer.as_array().unwrap().clone()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pool_alerts(starts: &str, ends: Option<&str>) -> Value {
    let alert = |instance: &str| {
        let mut a = json!({
            "labels": {"alertname": "PoolSaturated", "service": "api-service", "instance": instance, "severity": "page"},
            "annotations": {"summary": "Connection pool saturated. Quick fix: restart app servers"},
            "startsAt": starts,
        });
        if let Some(ends) = ends {
            a["endsAt"] = json!(ends);
        }
        a
    };
    json!([alert("api-1"), alert("api-2")])
}

/// Chat calls that show alert A-n (posts and edits), in order.
fn alert_calls(calls: &[Call], id: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.status == 200 && matches!(c.method.as_str(), "chat.postMessage" | "chat.update"))
        .filter(|c| c.body["text"].as_str().is_some_and(|t| t.contains(&format!(" {id} — "))))
        .cloned()
        .collect()
}

/// The alert buttons' action ids in a call's blocks.
fn buttons(call: &Call) -> Vec<String> {
    let blocks = match &call.body["blocks"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["action_id"].as_str().map(str::to_string))
        .collect()
}

fn click(served: &Served, user: &str, action_id: &str, message_ts: &str) -> u16 {
    // Each click has its own action_ts (Slack's retries of one repeat it).
    static CLICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let action_ts = format!("1700000000.{:06}", CLICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let payload = json!({
        "type": "block_actions", "user": {"id": user}, "channel": {"id": "COPS"}, "team": {"id": "T1"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": "COPS"},
        "actions": [{"action_id": action_id, "block_id": "opsbot_alert", "value": action_id, "type": "button", "action_ts": action_ts}]
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    served.post("/slack/interactivity", "application/x-www-form-urlencoded", &body).0
}

fn alert_records(served: &Served) -> Vec<Value> {
    served.bot.export(&[]).into_iter().filter(|r| r["kind"] == "alert").collect()
}

fn events(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["args"]["event"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn a_real_alertmanager_pair_makes_one_message_per_group_edited_on_resolve_and_its_silence_button_silences() {
    let am_port = free_port();
    let served = serve(&format!("http://127.0.0.1:{am_port}"));
    let first = Alertmanager::start(am_port, &served.base);
    let second = Alertmanager::start(free_port(), &served.base);
    let starts = (chrono::Utc::now() - chrono::Duration::seconds(30)).to_rfc3339();
    // Prometheus sends every alert to both members of the pair.
    first.post(&pool_alerts(&starts, None));
    second.post(&pool_alerts(&starts, None));
    // Alertmanager may send the group before both alerts are in it, then
    // again with both: one message, edited, showing both in the end.
    let both = |c: &Call| c.body["text"].as_str().is_some_and(|t| t.contains("2 of 2 firing"));
    served.slack.wait_for("the alert's message with both alerts", LONG, |c| alert_calls(c, "A-1").iter().any(both));
    // Both members deliver within a second or two of each other.
    std::thread::sleep(Duration::from_secs(3));
    let calls = served.slack.calls();
    let shown = alert_calls(&calls, "A-1");
    let posts: Vec<&Call> = shown.iter().filter(|c| c.method == "chat.postMessage").collect();
    assert_eq!(posts.len(), 1, "one message for the group, whatever the pair sends: {shown:#?}");
    let ts = posts[0].ts.clone().unwrap();
    assert!(shown.iter().skip(1).all(|c| c.method == "chat.update" && c.body["ts"] == ts.as_str()), "{shown:#?}");
    assert_eq!(posts[0].body["channel"], "COPS", "routed by its service label to api-service's channel");
    let message = shown.last().unwrap();
    let text = message.body["text"].as_str().unwrap();
    assert!(text.contains("FIRING A-1") && text.contains("2 of 2 firing"), "{text}");
    assert_eq!(events(&alert_records(&served)), ["fired", "fired"], "one record per alert, not per delivery");

    // Silence 1h, by an SRE: a real silence in Alertmanager, matching what
    // both alerts share, read back before the message says so.
    let silence = buttons(message).into_iter().find(|b| b.contains(":silence-1h:")).expect("a Silence 1h button");
    // Someone outside the rule cannot.
    assert_eq!(click(&served, "UALICE", &silence, &ts), 200);
    served.slack.wait_for("the refusal", LONG, |c| {
        c.iter().any(|c| c.method == "chat.postEphemeral" && c.body["text"].as_str().unwrap_or("").contains("Denied"))
    });
    assert!(first.silences().is_empty());
    assert_eq!(click(&served, "UBOB", &silence, &ts), 200);
    served.slack.wait_for("the silenced message", LONG, |c| {
        alert_calls(c, "A-1").iter().any(|c| c.body["text"].as_str().unwrap_or("").contains("silenced by <@UBOB>"))
    });
    let silences = first.silences();
    assert_eq!(silences.len(), 1, "{silences:#?}");
    assert_eq!(silences[0]["status"]["state"], "active");
    assert_eq!(silences[0]["createdBy"], "slack:UBOB");
    let mut matchers: Vec<(String, String)> = silences[0]["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["value"].as_str().unwrap().to_string()))
        .collect();
    matchers.sort();
    assert_eq!(
        matchers,
        [("alertname", "PoolSaturated"), ("service", "api-service"), ("severity", "page")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let silenced = alert_records(&served).into_iter().find(|r| r["args"]["event"] == "silenced").unwrap();
    assert_eq!(silenced["live"]["silence"], silences[0]["id"]);

    // A click on the message as it was first drawn: refused, no second silence.
    assert_eq!(click(&served, "UBOB", &silence, &ts), 200);
    served.slack.wait_for("the stale click's refusal", LONG, |c| {
        c.iter().any(|c| {
            c.method == "chat.postEphemeral"
                && c.body["text"].as_str().unwrap_or("").contains("changed since that button was drawn")
        })
    });
    assert_eq!(first.silences().len(), 1);

    // Resolved: both members say so; the one message is edited, not reposted.
    let ends = chrono::Utc::now().to_rfc3339();
    first.post(&pool_alerts(&starts, Some(&ends)));
    second.post(&pool_alerts(&starts, Some(&ends)));
    served.slack.wait_for("the resolved edit", LONG, |c| {
        alert_calls(c, "A-1").iter().any(|c| c.body["text"].as_str().unwrap_or("").contains("RESOLVED A-1"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let shown = alert_calls(&served.slack.calls(), "A-1");
    assert_eq!(shown.iter().filter(|c| c.method == "chat.postMessage").count(), 1, "{shown:#?}");
    assert!(shown.iter().skip(1).all(|c| c.method == "chat.update" && c.body["ts"] == ts.as_str()));
    let resolved = shown.last().unwrap();
    assert!(buttons(resolved).is_empty(), "a resolved alert offers no buttons");
    assert_eq!(events(&alert_records(&served)), ["fired", "fired", "silence", "silenced", "resolved", "resolved"]);
    served.stop();
}

/// Posts `body` to `path` with `headers`: (status, answer).
fn post(served: &Served, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = ureq::post(&format!("{}{path}", served.base)).set("Content-Type", "application/json");
    for (k, v) in headers {
        request = request.set(k, v);
    }
    match request.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Sends only a request's head, declaring `length` bytes of body, and
/// returns the status the bot answers before any of it is sent.
fn head_only(served: &Served, path: &str, headers: &[(&str, &str)], length: usize) -> u16 {
    use std::io::{Read, Write};
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: opsbot\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n{extra}\r\n"
    );
    let mut stream = std::net::TcpStream::connect(served.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).expect("an answer before the body was sent");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).split(' ').nth(1).unwrap().parse().unwrap()
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An Alertmanager webhook body (version 4) for group `group` of `alerts`.
fn am_body(group: usize, alerts: std::ops::Range<usize>, status: &str) -> String {
    let alerts: Vec<Value> = alerts
        .map(|i| {
            json!({"status": status, "labels": {"alertname": format!("Load{group}"), "instance": format!("host-{i}")},
                "annotations": {"summary": "load high"}, "startsAt": "2026-12-01T10:00:00Z",
                "endsAt": if status == "resolved" { "2026-12-01T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("{group:04x}{i:08x}")})
        })
        .collect();
    json!({"receiver": "opsbot", "status": status, "alerts": alerts, "groupLabels": {"alertname": format!("Load{group}")},
        "commonLabels": {"alertname": format!("Load{group}")}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"Load{group}\"}}"), "truncatedAlerts": 0})
    .to_string()
}

fn pagerduty_event(id: &str, kind: &str, at: &str) -> String {
    json!({"event": {"id": id, "event_type": kind, "resource_type": "incident", "occurred_at": at,
        "agent": {"html_url": "https://acme.pagerduty.com/users/PLH1HKV", "id": "PLH1HKV", "self": "https://api.pagerduty.com/users/PLH1HKV", "summary": "Tenex Engineer", "type": "user_reference"},
        "client": null,
        "data": {"id": "PGR0VU2", "type": "incident", "self": "https://api.pagerduty.com/incidents/PGR0VU2",
            "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2", "number": 2, "status": kind.trim_start_matches("incident."),
            "incident_key": "d3640fbd41094207a1c11e58e46b1662", "created_at": "2026-12-01T15:16:27Z",
            "title": "API latency over SLO", "service": {"html_url": "https://acme.pagerduty.com/services/PF9KMXH", "id": "PF9KMXH",
            "self": "https://api.pagerduty.com/services/PF9KMXH", "summary": "API Service", "type": "service_reference"},
            "assignees": [], "escalation_policy": {"id": "PTNFB1S", "type": "escalation_policy_reference", "summary": "Default"},
            "teams": [], "priority": null, "urgency": "high", "conference_bridge": null, "resolve_reason": null}}})
    .to_string()
}

fn datadog_body(transition: &str, date_ms: i64) -> String {
    json!({"alert_id": "1234567", "alert_cycle_key": "7890123", "alert_transition": transition, "aggreg_key": "9a8b7c",
        "title": format!("[{transition}] Disk almost full on db-1"), "body": "%%%\nDisk at 97%\n%%%",
        "tags": "env:prod,host:db-1,team:storage", "date": date_ms.to_string(), "link": "https://app.datadoghq.com/monitors/1234567"})
    .to_string()
}

#[test]
fn every_source_is_refused_before_its_body_is_read_or_parsed_unless_its_secret_matches() {
    let served = serve("http://127.0.0.1:9");
    let body = am_body(1, 0..1, "firing");
    let bearer = format!("Bearer {TOKEN}");
    // Alertmanager: no token, a wrong one, basic instead of bearer.
    assert_eq!(post(&served, "/alerts/alertmanager", &[], &body).0, 401);
    assert_eq!(post(&served, "/alerts/alertmanager", &[("Authorization", "Bearer am-token-5b1f0d")], &body).0, 401);
    assert_eq!(post(&served, "/alerts/alertmanager", &[("Authorization", "Basic YTpi")], &body).0, 401);
    // Datadog: the shared secret header.
    let dd = datadog_body("Triggered", 1_764_640_000_000);
    assert_eq!(post(&served, "/alerts/datadog", &[], &dd).0, 401);
    assert_eq!(post(&served, "/alerts/datadog", &[("X-Opsbot-Token", "dd-shared-7c2f")], &dd).0, 401);
    // PagerDuty: a signature of the body under one of the subscription's
    // secrets; none, a wrong one, or one of another body is refused.
    let pd = pagerduty_event("01DEN4HPBQAK7DAIIOYGF1NSEB", "incident.triggered", "2026-12-01T18:45:22.169Z");
    assert_eq!(post(&served, "/alerts/pagerduty", &[], &pd).0, 401);
    assert_eq!(post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &sign("other", &pd))], &pd).0, 401);
    let other = pagerduty_event("01DEN4HPBQAK7DAIIOYGF1NSEC", "incident.resolved", "2026-12-01T18:45:22.169Z");
    assert_eq!(post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &sign(PD_NEW, &other))], &pd).0, 401);
    assert!(alert_records(&served).is_empty(), "nothing refused was recorded");

    // A 10 MB body is refused before it is sent: without credentials (401)
    // and with them (413).
    let ten_mb = 10 * 1024 * 1024;
    assert_eq!(head_only(&served, "/alerts/alertmanager", &[], ten_mb), 401);
    assert_eq!(head_only(&served, "/alerts/alertmanager", &[("Authorization", &bearer)], ten_mb), 413);
    assert_eq!(head_only(&served, "/alerts/datadog", &[("X-Opsbot-Token", DD_SECRET)], ten_mb), 413);
    assert_eq!(head_only(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", "v1=00")], ten_mb), 413);

    // Authenticated but malformed: 400, naming what is wrong.
    let (status, why) = post(&served, "/alerts/alertmanager", &[("Authorization", &bearer)], r#"{"version":"3"}"#);
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("not a Alertmanager payload") || why.contains("version"), "{why}");
    let v3 = body.replace(r#""version":"4""#, r#""version":"3""#);
    let (status, why) = post(&served, "/alerts/alertmanager", &[("Authorization", &bearer)], &v3);
    assert_eq!((status, why.trim()), (400, "Alertmanager payload version 3 (opsbot reads version 4)"));
    let unfilled = datadog_body("Triggered", 0).replace("1234567", "$ALERT_ID");
    let (status, why) = post(&served, "/alerts/datadog", &[("X-Opsbot-Token", DD_SECRET)], &unfilled);
    assert_eq!(status, 400);
    assert!(why.contains("paste the documented template"), "{why}");

    // Rotation: either secret, alone or beside a stale one, is taken.
    let rotated = format!("v1=deadbeef,{}", sign(PD_OLD, &pd));
    assert_eq!(post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &rotated)], &pd).0, 200);
    assert_eq!(post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &sign(PD_NEW, &pd))], &pd).0, 200);
    assert_eq!(alert_records(&served).len(), 1, "the same webhook id twice is one record");
    let (_, metrics) = served.get("/metrics");
    for line in [
        r#"opsbot_webhooks_total{source="alertmanager",answer="unauthorized"} 4"#,
        r#"opsbot_webhooks_total{source="alertmanager",answer="too_large"} 1"#,
        r#"opsbot_webhooks_total{source="alertmanager",answer="malformed"} 2"#,
        r#"opsbot_webhooks_total{source="pagerduty",answer="unauthorized"} 3"#,
        r#"opsbot_webhooks_total{source="pagerduty",answer="changed"} 1"#,
        r#"opsbot_webhooks_total{source="pagerduty",answer="unchanged"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
    served.stop();
}

#[test]
fn datadog_and_pagerduty_payloads_make_one_thread_each_edited_as_they_change() {
    let served = serve("http://127.0.0.1:9");
    // PagerDuty: triggered, acknowledged (still firing), a retry, resolved;
    // routed by [[alerts.routes]] (its service is "API Service") to #COPS.
    let pd = |id: &str, kind: &str, at: &str| {
        let body = pagerduty_event(id, kind, at);
        post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &sign(PD_NEW, &body))], &body).0
    };
    assert_eq!(pd("E1", "incident.triggered", "2026-12-01T18:45:22Z"), 200);
    assert_eq!(pd("E1", "incident.triggered", "2026-12-01T18:45:22Z"), 200);
    assert_eq!(pd("E2", "incident.acknowledged", "2026-12-01T18:47:00Z"), 200);
    assert_eq!(pd("E3", "incident.resolved", "2026-12-01T18:55:00Z"), 200);
    // A replay of the first event: its id is known, it reopens nothing.
    assert_eq!(pd("E1", "incident.triggered", "2026-12-01T18:45:22Z"), 200);
    // A note added to the incident: taken (2xx, PagerDuty stops sending it)
    // and changes nothing; its data is the note, not an incident.
    let note = json!({"event": {"id": "E4", "event_type": "incident.annotated", "resource_type": "incident",
        "occurred_at": "2026-12-01T18:56:00Z", "data": {"incident": {"id": "PGR0VU2", "type": "incident_reference"},
        "id": "PWL7QXS", "content": "Restarted the pool", "trimmed": false, "type": "incident_note"}}})
    .to_string();
    assert_eq!(post(&served, "/alerts/pagerduty", &[("X-PagerDuty-Signature", &sign(PD_NEW, &note))], &note).0, 200);
    // Datadog: triggered, re-sent, recovered; no service tag: the default channel.
    let dd = |transition: &str, at: i64| {
        post(&served, "/alerts/datadog", &[("X-Opsbot-Token", DD_SECRET)], &datadog_body(transition, at)).0
    };
    assert_eq!(dd("Triggered", 1_764_640_000_000), 200);
    assert_eq!(dd("Triggered", 1_764_640_000_000), 200);
    assert_eq!(dd("Recovered", 1_764_640_600_000), 200);
    served.slack.wait_for("both resolved", LONG, |c| {
        ["A-1", "A-2"]
            .iter()
            .all(|id| alert_calls(c, id).iter().any(|c| c.body["text"].as_str().unwrap_or("").contains("RESOLVED")))
    });
    let calls = served.slack.calls();
    for (id, channel, name) in [("A-1", "COPS", "API latency over SLO"), ("A-2", "CALERTS", "Disk almost full")] {
        let shown = alert_calls(&calls, id);
        assert_eq!(shown.len(), 2, "{id}: posted once, then edited once: {shown:#?}");
        assert_eq!((shown[0].method.as_str(), shown[1].method.as_str()), ("chat.postMessage", "chat.update"));
        assert_eq!(shown[0].body["channel"], channel);
        assert!(shown[0].body["text"].as_str().unwrap().contains(name));
        // No Silence buttons: only Alertmanager alerts are silenced from here.
        assert!(!buttons(&shown[0]).iter().any(|b| b.contains("silence")));
    }
    let records = alert_records(&served);
    let by = |id: &str| {
        records
            .iter()
            .filter(|r| r["request_id"] == id)
            .map(|r| r["args"]["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("A-1"), ["fired", "resolved"]);
    assert_eq!(by("A-2"), ["fired", "resolved"]);
    assert_eq!(records.len(), 4, "the note made no alert");
    assert_eq!(records.iter().find(|r| r["request_id"] == "A-1").unwrap()["service"], "api-service");
    served.stop();
}

#[test]
fn a_thousand_alerts_each_delivered_twice_with_retries_are_exactly_a_thousand_records() {
    let served = serve("http://127.0.0.1:9");
    let bearer = format!("Bearer {TOKEN}");
    // 200 groups of 5 alerts; every webhook sent by both members of an HA
    // pair at once, and every tenth once more (a retry).
    let bodies: Vec<String> = (0..200).map(|g| am_body(g, g * 5..g * 5 + 5, "firing")).collect();
    std::thread::scope(|scope| {
        for copy in 0..2 {
            let (bodies, served, bearer) = (&bodies, &served, &bearer);
            scope.spawn(move || {
                for (i, body) in bodies.iter().enumerate() {
                    assert_eq!(post(served, "/alerts/alertmanager", &[("Authorization", bearer)], body).0, 200);
                    if copy == 1 && i % 10 == 0 {
                        assert_eq!(post(served, "/alerts/alertmanager", &[("Authorization", bearer)], body).0, 200);
                    }
                }
            });
        }
    });
    let records = alert_records(&served);
    assert_eq!(records.len(), 1000);
    let fingerprints: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["args"]["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(fingerprints.len(), 1000);
    // One message per group, in the default channel.
    served.slack.wait_for("a message per group", Duration::from_secs(60), |c| {
        c.iter().filter(|c| c.method == "chat.postMessage" && c.status == 200).count() >= 200
    });
    std::thread::sleep(Duration::from_millis(500));
    let posts: Vec<Call> =
        served.slack.calls().into_iter().filter(|c| c.method == "chat.postMessage" && c.status == 200).collect();
    assert_eq!(posts.len(), 200);
    assert!(posts.iter().all(|c| c.body["channel"] == "CALERTS"));
    served.stop();
}

/// `/report` in Slack: the figures from the trail, and the chart uploaded
/// as Slack takes files now (an upload URL, the bytes, then the share).
#[test]
fn the_report_in_slack_uploads_the_chart_into_the_channel() {
    let served = serve("http://127.0.0.1:9");
    // CI says which commit v1.4.2 is, made two hours ago (signed; a record
    // unsigned, or about a service opsbot does not know, is refused).
    let committed = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let record =
        json!({"service": "api-service", "version": "v1.4.2", "commit": "3f2a9c1e", "committed_at": committed})
            .to_string();
    let signed = sign(CI_SECRET, &record);
    assert_eq!(post(&served, "/ci/commits", &[("X-Opsbot-Signature", "v1=00")], &record).0, 401);
    let unknown = record.replace("api-service", "billing");
    let (status, why) = post(&served, "/ci/commits", &[("X-Opsbot-Signature", &sign(CI_SECRET, &unknown))], &unknown);
    assert_eq!((status, why.trim()), (400, "`billing` is not a configured service"));
    assert_eq!(post(&served, "/ci/commits", &[("X-Opsbot-Signature", &signed)], &record).0, 200);
    let (_, metrics) = served.get("/metrics");
    for (answer, n) in [("recorded", 1), ("unauthorized", 1), ("malformed", 1)] {
        let line = format!("opsbot_webhooks_total{{source=\"ci\",answer=\"{answer}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
    served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "t1");
    served.command("UBOB", "COPS", "/approve", "r-1", "t2");
    served.slack.wait_for("the outcome", LONG, |c| {
        c.iter().any(|c| c.body["text"].as_str().is_some_and(|t| t.contains("r-1") && t.contains("now runs v1.4.2")))
    });
    let ack = served.command("UALICE", "COPS", "/report", "api-service 7d", "t3");
    let text = ack.to_string();
    assert!(text.contains("deployment frequency: 1.0/week (1 deploys;"), "{text}");
    assert!(text.contains("lead time for changes: median 2h 0m (n=1 of 1 deploys with commit data)"), "{text}");
    served.slack.wait_for("the chart", LONG, |_| !served.slack.files().is_empty());
    let file = served.slack.files().pop().unwrap();
    assert_eq!((file.channel.as_str(), file.thread.as_deref()), ("COPS", None));
    assert!(file.filename.starts_with("delivery-") && file.filename.ends_with(".png"), "{}", file.filename);
    assert!(file.comment.contains("Weekly deploys") && file.comment.contains("api-service"), "{}", file.comment);
    let info = png::Decoder::new(std::io::Cursor::new(&file.bytes)).read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (opsbot::report::chart::WIDTH, opsbot::report::chart::HEIGHT));
    served.stop();
}

/// `opsbot report delivery|alerts` over a stopped bot's store: the figures
/// of what ran, in each format, and the chart written to a file.
#[test]
fn the_report_commands_read_the_trail_in_each_format_and_write_the_chart() {
    let bot = crate::support::Bot::with_config(&crate::support::config_text(
        "30m",
        "[reports]\nenvironments = [\"staging\"]\ntime_to_restore = \"1h\"\n",
    ));
    let out = bot.console(&["/deploy api-staging v1.4.2", "/wait", "/deploy api-staging v9.9.9-broken", "/wait"]);
    assert!(out.status.success(), "{}", crate::support::stdout(&out));
    let chart = bot.dir.path().join("delivery.png");
    let run = |args: &[&str]| {
        let out = bot.command(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value =
        serde_json::from_str(&run(&["report", "delivery", "--format", "json", "--chart", chart.to_str().unwrap()]))
            .unwrap();
    let figure = |name: &str| json["figures"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap().clone();
    assert_eq!(figure("deployment frequency")["samples"], 1);
    assert_eq!(figure("deployment success rate")["value"], 50.0, "{json:#}");
    assert_eq!(figure("change failure rate")["value"], 50.0, "the broken deploy failed verification");
    assert_eq!(figure("lead time for changes")["value"], Value::Null);
    assert_eq!(json["environments"], json!(["staging"]));
    let png = std::fs::read(&chart).unwrap();
    let info = png::Decoder::new(std::io::Cursor::new(&png)).read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (opsbot::report::chart::WIDTH, opsbot::report::chart::HEIGHT));
    let csv = run(&["report", "delivery", "--format", "csv", "--service", "api-staging"]);
    assert!(csv.starts_with("metric,value,unit,samples,target,meets_target,band\n"), "{csv}");
    assert!(csv.contains("deployment success rate,50.00,%,2,> 95%,false,"), "{csv}");
    assert!(run(&["report", "alerts"]).contains("No alert fired"));
    let refused = bot.command(&["report", "delivery", "--format", "xml"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not one of text, json, csv"));
}
