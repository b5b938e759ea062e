//! Table tests of summaries and timelines.

use super::*;
use crate::audit::{AuditEntry, AuditRecord, RecordKind, Verdict};
use chrono::TimeZone;

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn actor(name: &str) -> Actor {
    Actor::parse(&format!("console:{name}")).unwrap()
}

fn incident() -> Incident {
    Incident {
        declared_in: None,
        id: "INC-3".into(),
        title: "pool | exhausted".into(),
        severity: 1,
        services: vec!["api".into()],
        lead: actor("alice"),
        declared_by: actor("alice"),
        declared_at: at(0),
        from_seq: 0,
        channel: ReplyTarget::channel("console:ops"),
        last_update: None,
        resolved_at: None,
        resolved_by: None,
        resolution: None,
    }
}

fn record(seq: u64, minute: i64, entry: AuditEntry) -> AuditRecord {
    AuditRecord { seq, ts: at(minute), entry, prev: String::new(), hash: String::new() }
}

fn on(service: &str, kind: RecordKind, id: &str, outcome: Verdict) -> AuditEntry {
    AuditEntry {
        request_id: Some(id.into()),
        service: Some(service.into()),
        command: Some("rollback".into()),
        actor: Some("console:bob".into()),
        outcome: Some(outcome),
        detail: "api runs v1 again".into(),
        ..AuditEntry::new(kind)
    }
}

#[test]
fn deploys_are_gated_only_by_an_open_sev1_or_sev2_naming_the_service() {
    let mut i = incident();
    assert!(i.gates_deploys("api"));
    assert!(!i.gates_deploys("web"), "a service it does not name");
    i.severity = 2;
    assert!(i.gates_deploys("api"));
    i.severity = 3;
    assert!(!i.gates_deploys("api"), "SEV3 and below never hold deploys");
    i.severity = 1;
    i.resolved_at = Some(at(5));
    assert!(!i.gates_deploys("api"), "a resolved incident holds nothing");
}

#[test]
fn durations_read_as_people_say_them() {
    let d = chrono::Duration::seconds;
    assert_eq!(human(d(42)), "42s");
    assert_eq!(human(d(4 * 60 + 59)), "4m");
    assert_eq!(human(d(72 * 60)), "1h 12m");
    assert_eq!(human(d(51 * 3600)), "2d 3h");
    assert_eq!(human(d(-5)), "0s", "a clock step back is not a negative age");
}

#[test]
fn the_timeline_holds_its_own_records_and_its_services_while_open_and_finds_mitigation() {
    let mut i = incident();
    i.resolved_at = Some(at(50));
    let own = AuditEntry {
        request_id: Some("INC-3".into()),
        actor: Some("console:alice".into()),
        detail: "declared SEV1 on api".into(),
        ..AuditEntry::new(RecordKind::Incident)
    };
    let records = vec![
        record(1, -10, on("api", RecordKind::Outcome, "r-1", Verdict::Succeeded)), // before it
        record(2, 0, own),
        record(3, 5, on("api", RecordKind::Progress, "r-2", Verdict::Started)), // progress: noise
        record(4, 6, on("api", RecordKind::Request, "r-2", Verdict::Allowed)),  // its decision tells it
        record(5, 7, on("web", RecordKind::Outcome, "r-3", Verdict::Succeeded)), // another service
        record(6, 12, on("api", RecordKind::Outcome, "r-2", Verdict::Failed)),
        record(7, 20, on("api", RecordKind::Outcome, "r-4", Verdict::Succeeded)),
        record(8, 30, on("api", RecordKind::Outcome, "r-5", Verdict::Succeeded)),
        record(9, 60, on("api", RecordKind::Outcome, "r-6", Verdict::Succeeded)), // after it
    ];
    let timeline = Timeline::build(&i, records);
    let seqs: Vec<u64> = timeline.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 6, 7, 8]);
    assert_eq!(timeline.mitigated_at, Some(at(20)), "the first change on its services that succeeded");
    assert_eq!(timeline.mitigated_by.as_deref(), Some("r-4 rollback api"));
    assert_eq!(timeline.time_to_mitigate(), Some(chrono::Duration::minutes(20)));
    assert_eq!(timeline.time_to_resolve(), Some(chrono::Duration::minutes(50)));
    let md = timeline.to_markdown();
    assert!(md.starts_with("# INC-3: pool \\| exhausted\n"), "a pipe cannot break the table: {md}");
    assert!(md.contains("- Time to mitigate: 20m (first successful change: r-4 rollback api)"), "{md}");
    assert!(md.contains("- Time to resolve: 50m"), "{md}");
    assert!(md.contains("| 2026-12-01 03:20:00 | console:bob | rollback r-4 succeeded: api runs v1 again |"), "{md}");
    let json = timeline.to_json();
    assert_eq!(json["time_to_mitigate_seconds"], 1200);
    assert_eq!(json["timeline"].as_array().unwrap().len(), 4);
    assert_eq!(Format::parse("md"), Ok(Format::Markdown));
    assert!(Format::parse("pdf").unwrap_err().contains("md or json"));
}

#[test]
fn an_open_incident_has_no_time_to_resolve_and_says_so() {
    let timeline = Timeline::build(&incident(), Vec::new());
    assert_eq!(timeline.time_to_resolve(), None);
    let text = timeline.chat_lines(10);
    assert!(text.contains("time to mitigate: not yet"), "{text}");
    assert!(text.contains("time to resolve: still open"), "{text}");
}

#[test]
fn the_summary_lists_recent_changes_and_what_holds_deploys() {
    let i = incident();
    let change = |id: &str, minute: i64| Change {
        request_id: id.into(),
        service: "api".into(),
        what: "deploy api".into(),
        command: "deploy".into(),
        said: "api runs v2".into(),
        by: Some("console:carol".into()),
        at: at(minute),
        verdict: Some(Verdict::Succeeded),
    };
    let text = summary_text(&i, &[change("r-9", 8), change("r-7", 2)], at(10));
    assert!(text.starts_with("🚨 INC-3 SEV1 — "), "{text}");
    assert!(text.contains("open for 10m · lead console:alice"), "{text}");
    assert!(text.contains("deploys to them wait for the lead's approval"), "{text}");
    assert!(text.contains("• r-9 deploy api by console:carol, 2m ago: succeeded — api runs v2"), "{text}");
    assert!(text.contains("to undo r-9: /rollback api --of r-9"), "{text}");
    // The title is typed text: marked so adapters render it inert.
    assert!(text.contains(&crate::engine::reply::typed("pool | exhausted")), "{text}");
    let mut done = i.clone();
    done.severity = 3;
    done.resolved_at = Some(at(30));
    done.resolution = Some("rolled back".into());
    let text = summary_text(&done, &[], at(40));
    assert!(text.contains("resolved after 30m"), "{text}");
    assert!(!text.contains("wait for the lead"), "{text}");
    assert!(text.contains("recent changes: none in the trail"), "{text}");
}

#[test]
fn a_change_is_read_from_an_outcome_record_only() {
    let outcome = record(1, 0, on("api", RecordKind::Outcome, "r-1", Verdict::Succeeded));
    let change = Change::from_record(&outcome).unwrap();
    assert_eq!((change.what.as_str(), change.said.as_str()), ("rollback api", "api runs v1 again"));
    assert_eq!(Change::from_record(&record(2, 0, on("api", RecordKind::Intent, "r-1", Verdict::Started))), None);
}

#[test]
fn typed_text_stays_text_in_the_markdown_export() {
    let hostile = "[runbook](https://evil.example) <img src=x> <!-- *bold* `code` | # h\nnext";
    let escaped = markdown_text(hostile);
    assert_eq!(
        escaped,
        "\\[runbook\\](https\\://evil.example) &lt;img src=x&gt; &lt;\\!-- \\*bold\\* \\`code\\` \\| \\# h next"
    );
    assert_eq!(markdown_text("@team look"), "\\@team look", "no one is notified from a pasted export");
    assert_eq!(markdown_text("  1. first"), "1\\. first", "not a numbered list");
    assert_eq!(markdown_text("- item"), "\\- item", "not a list");
    let mut i = incident();
    i.title = hostile.into();
    let md = Timeline::build(&i, Vec::new()).to_markdown();
    assert!(!md.contains("<img") && !md.contains("<!--") && !md.contains("](https://"), "{md}");
}

#[test]
fn a_rollback_is_offered_only_where_the_newest_change_is_a_deploy_that_took_effect() {
    let change = |service: &str, command: &str, verdict: Verdict| Change {
        request_id: "r-1".into(),
        service: service.into(),
        what: format!("{command} {service}"),
        command: command.into(),
        said: String::new(),
        by: None,
        at: at(0),
        verdict: Some(verdict),
    };
    // Newest first: api was rolled back after its deploy (offering another
    // rollback would roll forward); web's deploy failed; db's took effect.
    let recent = [
        change("api", "rollback", Verdict::Succeeded),
        change("web", "deploy", Verdict::Failed),
        change("api", "deploy", Verdict::Succeeded),
        change("db", "deploy", Verdict::Succeeded),
    ];
    assert_eq!(rollback_offers(&recent, at(60)), [("db".to_string(), "r-1".to_string())]);
    // A day later it is history, not something to undo from a button.
    assert_eq!(rollback_offers(&recent, at(25 * 60)), Vec::<(String, String)>::new());
}

#[test]
fn an_incidents_own_channel_is_named_from_its_id_and_title() {
    assert_eq!(super::channel_name("INC-3", "Pool <exhausted>!  on api"), "inc-3-pool-exhausted-on-api");
    assert_eq!(super::channel_name("INC-12", "¡¡¡"), "inc-12");
    let long = super::channel_name("INC-1", &"a".repeat(300));
    assert!(long.len() <= 46 && long.starts_with("inc-1-aaaa"), "{long}");
    assert_eq!(super::channel_name("INC-4", "db -- down --"), "inc-4-db-down");
}
