//! Incidents in the core: an open SEV1/SEV2 holds deploys for its lead,
//! rollbacks keep their gates, the summary is one message kept current,
//! and the timeline comes from the trail.

use super::{command, engine_with, user, Harness};
use opsbot::audit::{AuditQuery, RecordKind, Verdict};
use opsbot::engine::reply::Reply;
use opsbot::event::{Actor, Event, ReplyTarget};

/// u0 and u3 develop, u1 and u2 are SREs (the approvers), u4 is an
/// incident commander who may break glass.
const INCIDENTS: &str = r#"
[environments.production]
[groups]
developers = ["console:u0", "console:u3"]
sre = ["console:u1", "console:u2"]
commanders = ["console:u4"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1, step = "1ms" }
[services.web]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1, step = "1ms" }
[incidents]
commanders = ["commanders"]
[[rules]]
commands = ["read", "incident"]
environments = ["*"]
requesters = ["*"]
[[rules]]
commands = ["deploy", "rollback"]
environments = ["production"]
requesters = ["developers", "sre", "commanders"]
approvers = ["sre"]
approvals = 1
break_glass = ["commanders"]
"#;

fn vote_on(actor: Actor, id: &str) -> Event {
    Event::Vote {
        actor,
        request_id: id.into(),
        approve: true,
        reply: ReplyTarget::channel("console:ops"),
        dedup_key: None,
        version: None,
        roles: Vec::new(),
    }
}

/// `text` by `actor` in `channel` (`command` speaks in console:ops).
fn command_in(actor: Actor, channel: &str, text: &str) -> Event {
    Event::Command {
        actor,
        text: text.into(),
        reply: ReplyTarget::channel(channel),
        dedup_key: None,
        roles: Vec::new(),
    }
}

/// Whether someone was told privately something containing `what`.
fn refused(h: &Harness, what: &str) -> bool {
    h.sink
        .replies()
        .iter()
        .any(|r| matches!(r, Reply::Private { text, .. } if opsbot::engine::reply::plain(text).contains(what)))
}

/// Intent records of request `id`: how many times it started.
fn started(h: &Harness, id: &str) -> usize {
    let query = AuditQuery { request_id: Some(id.into()), kind: Some(RecordKind::Intent), ..Default::default() };
    h.audit.read(&query).unwrap().len()
}

/// u3 declares a SEV1 on api (and leads it); u0 then asks to deploy api (r-1).
async fn outage_with_a_deploy(h: &Harness) {
    h.engine.handle(command(user(3), "/incident declare outage --sev 1 --service api")).await;
    h.engine.handle(command(user(0), "/deploy api v2")).await;
}

/// The first start message said.
fn start_text(h: &Harness) -> Option<String> {
    h.sink.replies().into_iter().find_map(|r| match r {
        Reply::Started { text, .. } => Some(text),
        _ => None,
    })
}

fn texts(h: &Harness) -> Vec<String> {
    h.sink
        .replies()
        .into_iter()
        .filter_map(|r| match r {
            Reply::Text(t) | Reply::Private { text: t, .. } => Some(opsbot::engine::reply::plain(&t).into_owned()),
            _ => None,
        })
        .collect()
}

fn said(h: &Harness, what: &str) -> bool {
    texts(h).iter().any(|t| t.contains(what))
}

fn summaries(h: &Harness) -> Vec<(String, String)> {
    h.sink
        .replies()
        .into_iter()
        .filter_map(|r| match r {
            Reply::Summary { key, text, .. } => Some((key, text)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_sev1_holds_deploys_for_its_lead_and_rollbacks_keep_their_usual_gates() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(3), "/incident declare \"pool exhausted\" --sev 1 --service api")).await;
    assert!(said(&h, "INC-1 declared by console:u3"), "{:#?}", texts(&h));
    // An SRE's deploy now waits for the rule's one approval and the lead's besides.
    h.engine.handle(command(user(1), "/deploy api v2")).await;
    assert!(said(&h, "r-1 is waiting for 1 approval(s) from sre and console:u3's (INC-1 (SEV1) is open on api)"));
    h.engine.handle(vote_on(user(2), "r-1")).await;
    assert!(said(&h, "console:u2 approved r-1; waiting for console:u3's approval (INC-1 (SEV1) is open on api)"));
    assert_eq!(started(&h, "r-1"), 0, "an SRE's approval alone does not run it");
    // The lead is not an SRE, but their approval is the one asked for.
    h.engine.handle(vote_on(user(3), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);
    // The lead's own deploy has the usual gate only; a deploy to another service is not held.
    h.engine.handle(command(user(3), "/deploy api v3")).await;
    h.engine.handle(command(user(0), "/deploy web v2")).await;
    let pending = |id: &str| h.engine.store().get_pending(id).unwrap().unwrap();
    assert_eq!(pending("r-2").required, None);
    assert_eq!(pending("r-3").required, None);
    // The summary now offers to roll api back (its deploy took effect).
    h.engine.handle(command(user(3), "/incident note deployed v2")).await;
    let offered = h.sink.replies().into_iter().rev().find_map(|r| match r {
        Reply::Summary { rollbacks, .. } => Some(rollbacks),
        _ => None,
    });
    assert_eq!(
        offered,
        Some(vec![opsbot::engine::reply::RollbackOffer { service: "api".into(), deploy: "r-1".into() }])
    );
    // A rollback keeps its normal gate: one SRE.
    h.engine.handle(command(user(0), "/rollback api")).await;
    assert_eq!(pending("r-4").required, None);
    h.engine.handle(vote_on(user(1), "r-4")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-4"), 1);
    // Break-glass skips the hold, as it skips approvals.
    h.engine.handle(command(user(4), "/deploy api v9 --emergency \"INC-1 hotfix\"")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-5"), 1);
    // Down to SEV3 (the lead's call): deploys no longer wait for the lead.
    h.engine.handle(command(user(3), "/incident sev 3")).await;
    assert!(said(&h, "INC-1 is SEV3 now (was SEV1), set by console:u3. Deploys to its services no longer wait"));
    h.engine.handle(command(user(0), "/deploy api v4")).await;
    assert_eq!(pending("r-6").required, None);
}

#[tokio::test]
async fn an_incident_declared_while_a_deploy_waits_adds_the_leads_approval_before_it_runs() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(command(user(3), "/incident declare outage --sev 2 --service api")).await;
    // The SRE's approval was enough when it was asked; now the re-check before running holds it.
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 0);
    assert!(said(&h, "r-1 now needs console:u3's approval too (INC-1 (SEV2) is open on api)"), "{:#?}", texts(&h));
    h.engine.handle(vote_on(user(3), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1, "the lead's approval completes it");
    // Had the lead been the approver already, it runs at once.
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(command(user(1), "/incident declare outage --sev 1 --service api")).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);
}

#[tokio::test]
async fn the_summary_is_one_message_kept_current_and_every_change_is_on_the_record() {
    let h = engine_with(INCIDENTS);
    h.engine
        .handle(command(
            user(0),
            "/incident declare \"pool exhausted\" --sev 2 --service api --service web --service api",
        ))
        .await;
    h.engine.handle(command(user(0), "/incident update pool drained")).await;
    h.engine.handle(command(user(0), "/incident lead @u1")).await;
    h.engine.handle(command(user(3), "/incident note idle sessions peaked at 480")).await;
    h.engine.handle(command(user(1), "/incident resolve \"pool size raised\"")).await;
    let summaries = summaries(&h);
    assert_eq!(summaries.len(), 5, "each change brings the summary up to date");
    assert!(summaries.iter().all(|(key, _)| key == "summary:INC-1"), "one message, edited in place");
    let last = opsbot::engine::reply::plain(&summaries[4].1).into_owned();
    assert!(last.contains("resolved after 0s · lead console:u1"), "{last}");
    assert!(last.contains("latest: pool drained") && last.contains("resolution: pool size raised"), "{last}");
    // The trail holds each change, with the incident as it stood after it.
    let query = AuditQuery { request_id: Some("INC-1".into()), ..Default::default() };
    let records = h.audit.read(&query).unwrap();
    let details: Vec<&str> = records.iter().map(|r| r.entry.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "declared SEV2 on api, web: pool exhausted; lead console:u0",
            "update: pool drained",
            "lead console:u1 (was console:u0)",
            "note: idle sessions peaked at 480",
            "resolved after 0s: pool size raised",
        ]
    );
    assert!(records.iter().all(|r| r.entry.kind == RecordKind::Incident && r.entry.outcome == Some(Verdict::Allowed)));
    let stated: opsbot::incident::Incident = serde_json::from_value(records[4].entry.args.clone().unwrap()).unwrap();
    assert_eq!((stated.lead.as_str(), stated.resolution.as_deref()), ("console:u1", Some("pool size raised")));
    assert_eq!(h.engine.store().open_incidents().unwrap(), Vec::new());
    // No request ids are spent on incident commands.
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    assert!(h.engine.store().get_pending("r-1").unwrap().is_some());
}

#[tokio::test]
async fn incident_commands_name_what_is_wrong_and_change_nothing() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(0), "/incident update anything")).await;
    assert!(refused(&h, "no open incident lives in this channel"));
    h.engine.handle(command(user(0), "/incident status INC-7")).await;
    assert!(refused(&h, "there is no incident INC-7"));
    h.engine.handle(command(user(0), "/incident declare one --service api")).await;
    h.engine.handle(command(user(0), "/incident declare two --service web")).await;
    h.engine.handle(command(user(0), "/incident update which one?")).await;
    assert!(refused(&h, "2 incidents are open in this channel (INC-1, INC-2); name the one you mean"));
    // Only someone the configuration knows may lead (they approve deploys).
    h.engine.handle(command(user(0), "/incident lead INC-1 console:mallory")).await;
    assert!(refused(&h, "console:mallory is not in any group of this opsbot"));
    h.engine.handle(command(user(0), "/incident resolve INC-1")).await;
    h.engine.handle(command(user(0), "/incident note INC-1 late")).await;
    assert!(refused(&h, "INC-1 was resolved at"));
    // Someone unknown cannot declare one.
    h.engine
        .handle(command(Actor::parse("console:mallory").unwrap(), "/incident declare fake --sev 1 --service api"))
        .await;
    assert!(refused(&h, "not in any group"));
    let records = h.audit.read(&AuditQuery { kind: Some(RecordKind::Incident), ..Default::default() }).unwrap();
    assert_eq!(records.len(), 3, "two declared, one resolved: {records:#?}");
    let open: Vec<String> = h.engine.store().open_incidents().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(open, ["INC-2"]);
    // Another channel sees nothing of them, and cannot change them.
    let elsewhere = |text: &str| command_in(user(0), "console:elsewhere", text);
    h.engine.handle(elsewhere("/incident status")).await;
    assert!(said(&h, "No incident is open in this channel"), "{:#?}", texts(&h));
    h.engine.handle(elsewhere("/incident timeline INC-2")).await;
    h.engine.handle(elsewhere("/incident update INC-2 from afar")).await;
    assert!(refused(&h, "there is no incident INC-2 in this channel"));
    // Refusals after the policy are on the record, as denied requests.
    let denied = h.audit.read(&AuditQuery { kind: Some(RecordKind::Decision), ..Default::default() }).unwrap();
    assert!(denied
        .iter()
        .any(|r| r.entry.outcome == Some(Verdict::Denied) && r.entry.detail.contains("was resolved at")));
}

/// The trail stamps records with the wall clock, so this one runs the core
/// on it too (the others run on a manual clock; durations are covered by
/// the incident module's tests).
#[tokio::test]
async fn the_timeline_tells_the_incident_from_the_trail() {
    let mut problems = Vec::new();
    let config = opsbot::config::from_str(std::path::Path::new("t.toml"), INCIDENTS, &mut problems).unwrap();
    let audit: std::sync::Arc<dyn opsbot::audit::AuditLog> =
        std::sync::Arc::new(opsbot::audit::MemoryAuditLog::default());
    let sink = std::sync::Arc::new(opsbot::engine::reply::RecordingSink::default());
    let engine = opsbot::engine::Engine::new(opsbot::engine::Parts {
        executors: opsbot::engine::Executors::from_config(&config),
        config,
        registry: opsbot::command::Registry::load_dir(&crate::support::commands_dir()).unwrap(),
        store: std::sync::Arc::new(opsbot::store::MemoryStore::default()),
        audit: audit.clone(),
        chat: sink.clone(),
        clock: std::sync::Arc::new(opsbot::clock::SystemClock),
        metrics: Default::default(),
    });
    // Before it was declared: not part of it.
    engine.handle(command(user(3), "/deploy api v2")).await;
    engine.handle(vote_on(user(1), "r-1")).await;
    engine.wait_idle().await;
    engine.handle(command(user(3), "/incident declare \"bad deploy\" --sev 1 --service api")).await;
    engine.handle(command(user(0), "/rollback api")).await;
    engine.handle(vote_on(user(1), "r-2")).await;
    engine.wait_idle().await;
    // Another service is not part of it either.
    engine.handle(command(user(0), "/deploy web v2")).await;
    engine.handle(command(user(3), "/incident resolve rolled back")).await;
    engine.handle(command(user(0), "/rollback api")).await;
    engine.handle(command(user(3), "/incident timeline INC-1")).await;
    let incident = engine.store().get_incident("INC-1").unwrap().unwrap();
    let timeline = engine.timeline(&incident).await.unwrap();
    let steps: Vec<(&str, Option<&str>)> =
        timeline.entries.iter().map(|e| (e.kind.as_str(), e.request_id.as_deref())).collect();
    assert_eq!(
        steps,
        [
            ("incident", Some("INC-1")),
            ("decision", Some("r-2")),
            ("vote", Some("r-2")),
            ("decision", Some("r-2")),
            ("intent", Some("r-2")),
            ("outcome", Some("r-2")),
            ("incident", Some("INC-1")),
        ]
    );
    assert_eq!(timeline.mitigated_by.as_deref(), Some("r-2 rollback api"));
    assert!(timeline.time_to_mitigate().unwrap() <= timeline.time_to_resolve().unwrap());
    let answer = sink.replies().into_iter().rev().find_map(|r| match r {
        Reply::Text(t) => Some(opsbot::engine::reply::plain(&t).into_owned()),
        _ => None,
    });
    let answer = answer.unwrap();
    assert!(answer.starts_with("INC-1 timeline (7 entries)"), "{answer}");
    assert!(answer.contains("time to mitigate: 0s (r-2 rollback api); time to resolve: 0s"), "{answer}");
}

#[tokio::test]
async fn a_leads_approval_is_asked_besides_the_rules_never_instead_of_them() {
    let h = engine_with(INCIDENTS);
    // A developer declares, so a developer leads.
    outage_with_a_deploy(&h).await;
    h.engine.handle(vote_on(user(3), "r-1")).await;
    assert_eq!(started(&h, "r-1"), 0, "the lead is no SRE: the rule's approval is still missing");
    assert!(said(&h, "console:u3 approved r-1; 1 more approval(s) needed"), "{:#?}", texts(&h));
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);
    let start = start_text(&h);
    assert!(start.unwrap().contains("approved by console:u1, console:u3"), "both approvals are named");
}

#[tokio::test]
async fn a_waiting_deploy_follows_the_incident_as_it_changes() {
    let h = engine_with(INCIDENTS);
    outage_with_a_deploy(&h).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    assert_eq!(started(&h, "r-1"), 0);
    // The lead hands over to a commander: the new lead's approval is the one asked now.
    h.engine.handle(command(user(3), "/incident lead @u4")).await;
    assert!(said(&h, "r-1 now needs console:u4's approval too"), "{:#?}", texts(&h));
    // The former lead (a developer, no approver) can no longer vote on it.
    h.engine.handle(vote_on(user(3), "r-1")).await;
    assert!(h
        .sink
        .replies()
        .iter()
        .any(|r| matches!(r, Reply::Private { to, text } if to == &user(3) && text.contains("can vote on r-1"))));
    assert_eq!(started(&h, "r-1"), 0);
    // The new lead's approval completes it.
    h.engine.handle(vote_on(user(4), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);

    // Lifting a hold never runs anything by itself: the approver's word does.
    let h = engine_with(INCIDENTS);
    outage_with_a_deploy(&h).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.handle(command(user(3), "/incident sev 3")).await;
    assert!(
        said(&h, "r-1 no longer needs console:u3's approval: no open SEV1/SEV2 incident holds deploys to api now; its approvals are complete, so an approver's `/approve` runs it"),
        "{:#?}",
        texts(&h)
    );
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 0, "nothing ran on the incident change");
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);
    let start = start_text(&h);
    assert!(start.unwrap().contains("approved by console:u1"), "the approver, never the one who changed the incident");
}

#[tokio::test]
async fn only_the_lead_or_a_commander_steers_the_hold() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(3), "/incident declare outage --sev 1 --service api")).await;
    for attempt in ["/incident resolve", "/incident sev 4", "/incident lead @u0"] {
        h.engine.handle(command(user(0), attempt)).await;
    }
    let refusals = h
        .sink
        .replies()
        .into_iter()
        .filter(|r| matches!(r, Reply::Private { text, .. } if opsbot::engine::reply::plain(text).contains("only INC-1's lead (console:u3) or someone in commanders may")))
        .count();
    assert_eq!(refusals, 3);
    assert_eq!(h.engine.store().open_incidents().unwrap()[0].lead.as_str(), "console:u3");
    // Anyone allowed may still add to its record.
    h.engine.handle(command(user(0), "/incident update looking at the pool")).await;
    assert!(said(&h, "INC-1 update from console:u0"));
    // A commander takes over.
    h.engine.handle(command(user(4), "/incident lead @u4")).await;
    assert_eq!(h.engine.store().open_incidents().unwrap()[0].lead.as_str(), "console:u4");
}

#[tokio::test]
async fn a_hold_can_always_be_reached_by_a_commander_and_never_doubled_by_anyone_else() {
    let h = engine_with(INCIDENTS);
    let at = command_in;
    // Not in a direct message, where nobody else could reach it.
    h.engine.handle(at(user(0), "slack:D0PRIVATE", "/incident declare mine --sev 1 --service api")).await;
    assert!(refused(&h, "not in a direct message"));
    // Declared in a channel only u3 watches.
    h.engine.handle(at(user(3), "console:quiet", "/incident declare outage --sev 1 --service api")).await;
    // A second hold on the same service is refused (the declarer would gate it).
    h.engine.handle(command(user(0), "/incident declare other --sev 2 --service api")).await;
    assert!(refused(&h, "api is held by INC-1 (SEV1, lead console:u3) already"));
    // A developer elsewhere sees nothing of it; a commander resolves it from anywhere.
    h.engine.handle(command(user(0), "/incident resolve INC-1")).await;
    assert!(refused(&h, "there is no incident INC-1 in this channel"));
    h.engine.handle(command(user(4), "/incident resolve INC-1 \"taken over\"")).await;
    assert_eq!(h.engine.store().open_incidents().unwrap(), Vec::new());
}

#[tokio::test]
async fn a_rollback_of_one_deploy_is_refused_once_the_service_changed_since() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    // Asked while r-1 is the newest change: waits for its approval as usual.
    h.engine.handle(command(user(0), "/rollback api --of r-1")).await;
    // Meanwhile another rollback runs (a double click, say).
    h.engine.handle(command(user(3), "/rollback api")).await;
    h.engine.handle(vote_on(user(1), "r-3")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-3"), 1);
    // Approved now, the first is refused under the run lock: nothing rolls forward.
    h.engine.handle(vote_on(user(2), "r-2")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-2"), 0);
    assert!(h.sink.replies().iter().any(|r| matches!(r,
        Reply::Outcome { request_id, text, .. } if request_id == "r-2" && text.contains("api changed since r-1: its newest change is r-3 (rollback succeeded)"))));
    // Asked afresh, it is refused before anyone is asked to approve it.
    h.engine.handle(command(user(0), "/rollback api --of r-1")).await;
    assert!(h
        .sink
        .replies()
        .iter()
        .any(|r| matches!(r, Reply::Private { text, .. } if text.contains("api changed since r-1"))));
    assert_eq!(h.engine.store().get_pending("r-4").unwrap(), None);
}

#[tokio::test]
async fn raising_an_incident_to_a_hold_on_a_held_service_is_refused_like_declaring_one() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(3), "/incident declare first --sev 1 --service api")).await;
    h.engine.handle(command(user(0), "/incident declare second --sev 3 --service api")).await;
    h.engine.handle(command(user(0), "/incident sev INC-2 1")).await;
    assert!(h.sink.replies().iter().any(|r| matches!(r, Reply::Private { text, .. }
        if opsbot::engine::reply::plain(text).contains("api is held by INC-1 (SEV1, lead console:u3) already"))));
    assert_eq!(h.engine.store().get_incident("INC-2").unwrap().unwrap().severity, 3);
    // The deploy hold is still INC-1's lead's.
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    let pending = h.engine.store().get_pending("r-1").unwrap().unwrap();
    assert_eq!(pending.required.unwrap().approver, user(3));
}

/// A rule that asks no approval: held by the incident, then lifted, the
/// requester's own `/approve` runs it (nobody else is an approver).
#[tokio::test]
async fn a_deploy_held_under_a_rule_without_approvals_is_its_requesters_to_run_once_lifted() {
    let text = INCIDENTS
        .replace("approvals = 1\nbreak_glass", "approvals = 0\nbreak_glass")
        .replace("approvers = [\"sre\"]\n", "");
    let h = engine_with(&text);
    outage_with_a_deploy(&h).await;
    assert!(said(&h, "r-1 is waiting for console:u3's approval (INC-1 (SEV1) is open on api)"), "{:#?}", texts(&h));
    h.engine.handle(command(user(3), "/incident resolve")).await;
    assert!(said(&h, "its rule asks no approval, so console:u0's `/approve` runs it"), "{:#?}", texts(&h));
    assert_eq!(started(&h, "r-1"), 0);
    h.engine.handle(vote_on(user(0), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1);
}

#[tokio::test]
async fn a_commander_acting_from_elsewhere_is_answered_privately_and_the_incident_channel_told() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(3), "/incident declare outage --sev 1 --service api")).await;
    let elsewhere = command_in(user(4), "console:public", "/incident resolve INC-1 \"customer data restored\"");
    h.engine.handle(elsewhere).await;
    let sent = h.sink.sent.lock().unwrap().clone();
    assert!(sent.iter().any(|(target, reply)| target.channel == "console:ops"
        && matches!(reply, Reply::Announcement(text) if text.contains("INC-1 resolved by console:u4"))));
    assert!(sent.iter().any(|(target, reply)| target.channel == "console:public"
        && matches!(reply, Reply::Private { text, .. } if text.contains("announced in its channel"))));
    assert!(!sent.iter().any(|(target, reply)| target.channel == "console:public"
        && matches!(reply, Reply::Text(t) | Reply::Announcement(t) if t.contains("customer data"))));
}

#[tokio::test]
async fn a_refused_rollback_is_no_change_and_leaves_the_next_deploy_undoable() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    // A double click: two rollbacks of r-1; the first runs.
    h.engine.handle(command(user(0), "/rollback api --of r-1")).await;
    h.engine.handle(command(user(3), "/rollback api --of r-1")).await;
    h.engine.handle(vote_on(user(1), "r-2")).await;
    h.engine.wait_idle().await;
    // A fix goes out; then the leftover is approved, and refused.
    h.engine.handle(command(user(0), "/deploy api v3")).await;
    h.engine.handle(vote_on(user(1), "r-4")).await;
    h.engine.wait_idle().await;
    h.engine.handle(vote_on(user(2), "r-3")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-3"), 0);
    // The refusal ran nothing: r-4 is still the newest change, and can be undone.
    h.engine.handle(command(user(0), "/rollback api --of r-4")).await;
    assert!(h.engine.store().get_pending("r-5").unwrap().is_some(), "{:#?}", texts(&h));
}

#[tokio::test]
async fn only_an_approval_given_since_the_hold_began_counts_as_the_leads() {
    // Two SRE approvals needed; u1 and u2 are SREs.
    let h = engine_with(&INCIDENTS.replace("approvals = 1", "approvals = 2"));
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.clock.advance(std::time::Duration::from_secs(60));
    // Then an incident, and u1 leads it: u1's approval as lead is asked now.
    h.engine.handle(command(user(3), "/incident declare outage --sev 1 --service api")).await;
    h.engine.handle(command(user(3), "/incident lead @u1")).await;
    assert!(said(&h, "r-1 now needs console:u1's approval too"), "{:#?}", texts(&h));
    h.engine.handle(vote_on(user(2), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 0, "u1's approval before the hold was not given as its lead");
    // u1 approves again, as lead: accepted (not "already voted"), and it runs.
    h.engine.handle(vote_on(user(1), "r-1")).await;
    h.engine.wait_idle().await;
    assert_eq!(started(&h, "r-1"), 1, "{:#?}", texts(&h));
}

/// A crash inside an incident's commit can keep its record and lose the
/// stored state: at start the newest record is put back.
#[tokio::test]
async fn at_start_the_stored_incident_is_brought_back_to_its_newest_record() {
    let h = engine_with(INCIDENTS);
    h.engine.handle(command(user(3), "/incident declare outage --sev 1 --service api")).await;
    let mut resolved = h.engine.store().get_incident("INC-1").unwrap().unwrap();
    resolved.resolved_at = Some(resolved.declared_at);
    resolved.resolved_by = Some(user(3));
    // The trail says resolved; the store (as after the crash) still has it open.
    let record = opsbot::audit::AuditEntry {
        request_id: Some("INC-1".into()),
        args: Some(serde_json::to_value(&resolved).unwrap()),
        ..opsbot::audit::AuditEntry::new(RecordKind::Incident)
    }
    .detail("resolved after 0s");
    h.audit.append(record).await.unwrap();
    assert_eq!(h.engine.store().open_incidents().unwrap().len(), 1);
    h.engine.recover().await;
    assert_eq!(h.engine.store().get_incident("INC-1").unwrap(), Some(resolved));
    assert_eq!(h.engine.store().open_incidents().unwrap(), Vec::new(), "the hold follows the trail");
}
