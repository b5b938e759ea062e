//! Alerts in the core: one message per group, edited in place; repeats,
//! duplicates and late copies change nothing; a flap stays in its thread;
//! every button is the clicker typing a command under its usual gates,
//! refused when the message it was drawn on is out of date.

use super::{command, engine_with, user, Harness};
use opsbot::alert::{Notice, Source, State};
use opsbot::audit::{AuditQuery, RecordKind};
use opsbot::engine::reply::{AlertAction, AlertButton, Reply};
use std::time::Duration;

/// u0 develops, u1 is an SRE (the approver); api is in production.
const ALERTS: &str = r#"
[environments.production]
[groups]
developers = ["console:u0", "console:u3"]
sre = ["console:u1"]
[services.api]
environment = "production"
channels = ["console:ops"]
backend = { type = "simulated", version = "v1", replicas = 1, step = "1ms" }
[[rules]]
commands = ["read", "incident", "alerts"]
environments = ["*"]
requesters = ["*"]
[[rules]]
commands = ["deploy", "rollback"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
[alerts]
default_channel = "console:alerts"
flap_window = "30m"
recent_change = "1h"
"#;

fn notice(fingerprint: &str, state: State, service: &str, starts_min: i64, ends_min: Option<i64>) -> Notice {
    let at = |m: i64| super::start() + chrono::Duration::minutes(m);
    Notice {
        source: Source::Alertmanager,
        group: format!("{{}}:{{alertname=\"PoolSaturated\", service=\"{service}\"}}"),
        fingerprint: fingerprint.into(),
        name: "PoolSaturated".into(),
        state,
        labels: [("alertname", "PoolSaturated"), ("service", service), ("instance", fingerprint)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Default::default(),
        starts_at: Some(at(starts_min)),
        ends_at: ends_min.map(at),
        summary: "Connection pool saturated. Quick fix: restart app servers".into(),
        delivery: None,
    }
}

/// Alert messages said, as (key, channel, text, buttons).
fn alert_messages(h: &Harness) -> Vec<(String, String, String, Vec<AlertButton>)> {
    h.sink
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(target, reply)| match reply {
            Reply::Alert { key, text, buttons } => Some((
                key.clone(),
                target.channel.clone(),
                opsbot::engine::reply::plain(text).into_owned(),
                buttons.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn alert_records(h: &Harness) -> Vec<String> {
    let query = AuditQuery { kind: Some(RecordKind::Alert), ..Default::default() };
    h.audit
        .read(&query)
        .unwrap()
        .iter()
        .map(|r| r.entry.args.as_ref().map(|a| a["event"].as_str().unwrap_or("").to_string()).unwrap_or_default())
        .collect()
}

fn public_texts(h: &Harness) -> Vec<String> {
    h.sink
        .replies()
        .into_iter()
        .filter_map(|r| match r {
            Reply::Text(text) => Some(opsbot::engine::reply::plain(&text).into_owned()),
            _ => None,
        })
        .collect()
}

fn private_texts(h: &Harness) -> Vec<String> {
    h.sink
        .replies()
        .into_iter()
        .filter_map(|r| match r {
            Reply::Private { text, .. } => Some(opsbot::engine::reply::plain(&text).into_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_group_is_one_message_edited_in_place_and_a_flap_stays_in_its_thread() {
    let h = engine_with(ALERTS);
    assert_eq!(h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 0, None)]).await.unwrap(), 1);
    // The HA twin's copy and a retry: nothing changes, nothing is said.
    assert_eq!(h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 0, None)]).await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(60));
    let both = vec![notice("api-1", State::Firing, "api", 0, None), notice("api-2", State::Firing, "api", 1, None)];
    assert_eq!(h.engine.take_alerts(both).await.unwrap(), 1, "only api-2 is new");
    h.clock.advance(Duration::from_secs(5 * 60));
    let resolved =
        vec![notice("api-1", State::Resolved, "api", 0, Some(6)), notice("api-2", State::Resolved, "api", 1, Some(6))];
    assert_eq!(h.engine.take_alerts(resolved.clone()).await.unwrap(), 2);
    assert_eq!(h.engine.take_alerts(resolved).await.unwrap(), 0);
    // A late copy of the first firing (older than its end): nothing.
    assert_eq!(h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 0, None)]).await.unwrap(), 0);
    // It comes back 10 minutes later: the same thread, flapping.
    h.clock.advance(Duration::from_secs(10 * 60));
    h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 16, None)]).await.unwrap();
    let messages = alert_messages(&h);
    assert!(messages.iter().all(|(key, channel, _, _)| key == "A-1" && channel == "console:ops"), "{messages:#?}");
    assert_eq!(messages.len(), 4, "first firing, api-2 joining, resolved, flapped");
    let (_, _, resolved_text, resolved_buttons) = &messages[2];
    assert!(resolved_text.starts_with("✅ RESOLVED A-1 — PoolSaturated · api"), "{resolved_text}");
    assert!(resolved_buttons.is_empty(), "a resolved alert has no buttons");
    let (_, _, flapped, _) = &messages[3];
    assert!(flapped.starts_with("🔥 FIRING A-1") && flapped.contains("flapping ×1"), "{flapped}");
    assert_eq!(alert_records(&h), ["fired", "fired", "resolved", "resolved", "refired"]);
    // Past the flap window after it resolves, a firing is a new thread.
    h.engine.take_alerts(vec![notice("api-1", State::Resolved, "api", 16, Some(17))]).await.unwrap();
    h.clock.advance(Duration::from_secs(31 * 60));
    h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 50, None)]).await.unwrap();
    assert_eq!(alert_messages(&h).last().unwrap().0, "A-2");
    // An alert no service claims goes to the default channel.
    h.engine.take_alerts(vec![notice("db-1", State::Firing, "billing-db", 50, None)]).await.unwrap();
    let last = alert_messages(&h).pop().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("A-3", "console:alerts"));
}

#[tokio::test]
async fn buttons_are_the_clicker_typing_a_command_under_its_gates_and_a_stale_one_is_refused() {
    let h = engine_with(ALERTS);
    // u0 deploys v2 with u1's approval; ten minutes later api alerts.
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(command(user(1), "/approve r-1")).await;
    h.engine.wait_idle().await;
    // The trail stamps records with the wall clock: the alert comes ten
    // minutes (and a second) after the deploy's outcome by that clock.
    h.clock.set(chrono::Utc::now() + chrono::Duration::seconds(10 * 60 + 1));
    h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 10, None)]).await.unwrap();
    let (_, _, text, buttons) = alert_messages(&h).pop().unwrap();
    assert!(text.contains("🚀 v2 deployed 10m ago by console:u0 (r-1)"), "{text}");
    let labels: Vec<&str> = buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Acknowledge", "Declare incident", "Roll back v2"], "no Alertmanager API: no silences");
    let click = |action: AlertAction| buttons.iter().find(|b| b.action == action).unwrap().command();

    // Acknowledge: recorded with who, shown, and the version moves on.
    h.engine.handle(command(user(3), &click(AlertAction::Acknowledge))).await;
    let (_, _, text, now) = alert_messages(&h).pop().unwrap();
    assert!(text.contains("👀 acknowledged by console:u3"), "{text}");
    assert!(!now.iter().any(|b| b.action == AlertAction::Acknowledge));
    // A click on the message as it was drawn before: refused, nothing runs.
    h.engine.handle(command(user(3), &click(AlertAction::RollBack))).await;
    assert!(
        private_texts(&h).iter().any(|t| t.contains("A-1 changed since that button was drawn")),
        "{:#?}",
        private_texts(&h)
    );
    assert!(h.engine.store().get_pending("r-2").unwrap().is_none());

    // Roll back from the current message: u3 asks for `/rollback api --of r-1`,
    // which waits for an SRE's approval as if typed.
    let rollback = now.iter().find(|b| b.action == AlertAction::RollBack).unwrap().command();
    h.engine.handle(command(user(3), &rollback)).await;
    let pending = h.engine.store().get_pending("r-2").unwrap().expect("the rollback waits for approval");
    assert_eq!(
        pending.request,
        opsbot::command::Request::Rollback { service: "api".into(), revision: None, of: Some("r-1".into()) }
    );
    assert_eq!(pending.requester, user(3));

    // Declare incident: an incident named after the alert, on its service
    // (from the message as it is now: acting moved its version on).
    let now = alert_messages(&h).pop().unwrap().3;
    let declare = now.iter().find(|b| b.action == AlertAction::DeclareIncident).unwrap().command();
    h.engine.handle(command(user(0), &declare)).await;
    let incident = h.engine.store().get_incident("INC-1").unwrap().expect("declared");
    assert_eq!(
        (incident.title.as_str(), incident.services.as_slice()),
        ("PoolSaturated (A-1)", &["api".to_string()][..])
    );
    // Run runbook: none is named or loaded here.
    h.engine.handle(command(user(0), "/alerts act A-1 runbook")).await;
    assert!(private_texts(&h).iter().any(|t| t.contains("A-1 names no runbook opsbot has loaded")));
    assert_eq!(
        alert_records(&h),
        ["fired", "acknowledged", "act:rollback", "acted:rollback", "act:incident", "acted:incident"]
    );

    // The noise report counts it as acted on, 0s after it fired (the ack).
    h.engine.handle(command(user(3), "/alerts noisy")).await;
    let report = public_texts(&h).pop().unwrap();
    assert!(report.contains("PoolSaturated · 1 · 1 · 1 (100%) · 0s"), "{report}");
}

#[tokio::test]
async fn an_alerts_own_text_stays_data_in_the_message_and_in_the_incident_it_declares() {
    let h = engine_with(ALERTS);
    let mut crafted = notice("api-1", State::Firing, "api", 0, None);
    crafted.name = "Pool\" --sev 1 --service web <!channel> “x”".into();
    crafted.summary = "<!channel> <https://evil.example|click>".into();
    h.engine.take_alerts(vec![crafted]).await.unwrap();
    let (_, _, _, buttons) = alert_messages(&h).pop().unwrap();
    // The sender's text is marked typed, for each adapter to render inert.
    let raw = h.sink.replies().into_iter().find_map(|r| match r {
        Reply::Alert { text, .. } => Some(text),
        _ => None,
    });
    let raw = raw.unwrap();
    assert!(opsbot::engine::reply::spans(&raw).any(|(typed, t)| typed && t.contains("<!channel> <https://evil")));
    let declare = buttons.iter().find(|b| b.action == AlertAction::DeclareIncident).unwrap().command();
    h.engine.handle(command(user(0), &declare)).await;
    let incident = h.engine.store().get_incident("INC-1").unwrap().expect("declared");
    // The name is one argument: no flag it carries took effect.
    assert_eq!(incident.severity, 3);
    assert_eq!(incident.services, ["api"]);
    assert_eq!(incident.title, "Pool --sev 1 --service web <!channel> “x” (A-1)");
    // A second click on the same message: refused, no second incident.
    h.engine.handle(command(user(3), &declare)).await;
    assert!(h.engine.store().get_incident("INC-2").unwrap().is_none());
    assert!(private_texts(&h).iter().any(|t| t.contains("changed since that button was drawn")));
}

#[tokio::test]
async fn a_silence_must_name_the_alert_so_one_click_cannot_silence_a_whole_severity() {
    let text = format!(
        "{ALERTS}\n[alerts.alertmanager]\ntoken_env = \"AM_TOKEN\"\napi_url = \"http://127.0.0.1:9\"\n[[rules]]\ncommands = [\"alerts-silence\"]\nenvironments = [\"*\"]\nrequesters = [\"*\"]\n"
    );
    let h = engine_with(&text);
    // One group (by service) holding two different alerts: they share
    // only `service`.
    let mut other = notice("api-2", State::Firing, "api", 0, None);
    other.name = "HighLatency".into();
    other.labels.insert("alertname".into(), "HighLatency".into());
    h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 0, None), other]).await.unwrap();
    h.engine.handle(command(user(1), "/alerts silence A-1 1h")).await;
    assert!(
        private_texts(&h).iter().any(|t| t.contains("the alerts in A-1 share no alertname")),
        "{:#?}",
        private_texts(&h)
    );
    assert!(!alert_records(&h).iter().any(|e| e.starts_with("silence")), "nothing was asked of Alertmanager");
}

/// The demo configuration, its commands and its three runbooks, in the core.
fn demo() -> Harness {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let loaded = opsbot::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let store = std::sync::Arc::new(opsbot::store::MemoryStore::default());
    let audit: std::sync::Arc<dyn opsbot::audit::AuditLog> =
        std::sync::Arc::new(opsbot::audit::MemoryAuditLog::default());
    let clock = std::sync::Arc::new(opsbot::clock::ManualClock::new(super::start()));
    let sink = std::sync::Arc::new(opsbot::engine::reply::RecordingSink::default());
    let engine = opsbot::engine::Engine::new(opsbot::engine::Parts {
        executors: opsbot::engine::Executors::from_config(&loaded.config),
        config: loaded.config,
        registry: loaded.registry,
        store,
        audit: audit.clone(),
        chat: sink.clone(),
        clock: clock.clone(),
        metrics: Default::default(),
    });
    Harness { engine, clock, sink, audit }
}

#[tokio::test]
async fn run_runbook_offers_the_alerts_own_runbook_or_the_configured_one_and_waits_for_its_approval() {
    let h = demo();
    let mut pool = notice("api-1", State::Firing, "api-service", 0, None);
    pool.labels.insert("service".into(), "api-service".into());
    // Its own annotation names another runbook: that one wins.
    let mut disk = notice("node-3", State::Firing, "api-service", 0, None);
    disk.name = "DiskFull".into();
    disk.group = "{}:{alertname=\"DiskFull\"}".into();
    disk.labels.insert("alertname".into(), "DiskFull".into());
    disk.annotations.insert("runbook".into(), "disk-full".into());
    h.engine.take_alerts(vec![pool, disk]).await.unwrap();
    let messages = alert_messages(&h);
    let label = |key: &str| {
        let (_, _, _, buttons) = messages.iter().rev().find(|m| m.0 == key).unwrap();
        buttons.iter().find(|b| b.action == AlertAction::RunRunbook).map(|b| (b.label.clone(), b.command()))
    };
    assert_eq!(label("A-1").unwrap().0, "Run runbook connection-pool", "[alerts.runbooks] maps PoolSaturated");
    assert_eq!(label("A-2").unwrap().0, "Run runbook disk-full", "its runbook annotation");
    // bob (an SRE) clicks: the run waits for another SRE's approval of
    // the whole plan, as `/runbook run connection-pool` typed would.
    let bob = opsbot::event::Actor::parse("console:bob").unwrap();
    h.engine.handle(command(bob.clone(), &label("A-1").unwrap().1)).await;
    let pending = h.engine.store().get_pending("r-1").unwrap().expect("the run waits for approval");
    assert_eq!(pending.requester, bob);
    assert!(
        matches!(&pending.request, opsbot::command::Request::Runbook { op: opsbot::command::RunbookOp::Run { runbook, .. } } if runbook == "connection-pool")
    );
    assert!(h.sink.replies().iter().any(|r| matches!(r, Reply::Approval(view) if view.plan.is_some())));
    assert_eq!(alert_records(&h), ["fired", "fired", "act:runbook", "acted:runbook"]);
}

#[tokio::test]
async fn roll_back_means_the_deploy_the_message_showed_and_is_refused_once_another_shipped() {
    let h = engine_with(ALERTS);
    for (deploy, id) in [("/deploy api v2", "/approve r-1")] {
        h.engine.handle(command(user(0), deploy)).await;
        h.engine.handle(command(user(1), id)).await;
    }
    h.engine.wait_idle().await;
    h.clock.set(chrono::Utc::now() + chrono::Duration::seconds(60));
    h.engine.take_alerts(vec![notice("api-1", State::Firing, "api", 1, None)]).await.unwrap();
    let (_, _, _, buttons) = alert_messages(&h).pop().unwrap();
    let rollback = buttons.iter().find(|b| b.action == AlertAction::RollBack).unwrap().clone();
    assert_eq!(rollback.label, "Roll back v2");
    assert_eq!(rollback.command(), format!("/alerts act A-1 rollback --version {} --of r-1", rollback.version));
    // v3 ships before anyone clicks; the message's version has not moved.
    h.engine.handle(command(user(0), "/deploy api v3")).await;
    h.engine.handle(command(user(1), "/approve r-2")).await;
    h.engine.wait_idle().await;
    h.engine.handle(command(user(3), &rollback.command())).await;
    // The click means r-1's v2, which is no longer the newest change: refused.
    let pending = h.engine.store().open_requests().unwrap();
    assert!(pending.iter().all(|p| !matches!(p.request, opsbot::command::Request::Rollback { .. })), "{pending:#?}");
    let said = private_texts(&h);
    assert!(said.iter().any(|t| t.contains("api changed since r-1: its newest change is r-2")), "{said:#?}");
    // The alert's story says the act was refused, not that anyone acted.
    assert_eq!(alert_records(&h), ["fired", "act:rollback", "act refused"]);
    let refusals = h.audit.read(&AuditQuery { request_id: Some("A-1".into()), ..Default::default() }).unwrap();
    let denials = refusals.iter().filter(|r| r.entry.kind == RecordKind::Decision).count();
    assert_eq!(denials, 0, "no second, contradictory decision under the alert's id");
}
