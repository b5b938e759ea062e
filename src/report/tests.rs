//! The reports on seeded trails whose figures are worked out by hand here.

use super::delivery::{DeliveryScan, Targets};
use super::noise::NoiseScan;
use super::Period;
use crate::audit::{AuditEntry, AuditRecord, RecordKind, Verdict};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0).unwrap()
}

fn record(seq: u64, ts: DateTime<Utc>, entry: AuditEntry) -> AuditRecord {
    AuditRecord { seq, ts, entry, prev: String::new(), hash: String::new() }
}

fn outcome(id: &str, command: &str, service: &str, env: &str, verdict: Verdict) -> AuditEntry {
    AuditEntry {
        request_id: Some(id.into()),
        command: Some(command.into()),
        service: Some(service.into()),
        environment: Some(env.into()),
        args: Some(json!({"action": command, "service": service, "version": "v1"})),
        ..AuditEntry::new(RecordKind::Outcome)
    }
    .outcome(verdict)
}

fn incident(id: &str, service: &str, declared: DateTime<Utc>, resolved: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        request_id: Some(id.into()),
        args: Some(json!({
            "id": id, "title": "t", "severity": 2, "services": [service],
            "lead": "console:dave", "declared_by": "console:dave", "declared_at": declared,
            "channel": {"channel": "console:ops"}, "resolved_at": resolved,
        })),
        ..AuditEntry::new(RecordKind::Incident)
    }
}

/// Four weeks of production deploys (and one in staging), rollbacks and
/// incidents, with every figure worked out by hand below.
fn seeded() -> Vec<AuditRecord> {
    use Verdict::*;
    let seeds = vec![
        // r-1 is rolled back 30 minutes later: a change failure, recovered in 30m.
        (at(2, 10, 0), outcome("r-1", "deploy", "api", "production", Succeeded)),
        (at(2, 10, 30), outcome("r-10", "rollback", "api", "production", Succeeded)),
        // r-2 is named by two incidents: one failure; INC-1 resolves first
        // (11:00, before any later change): recovered in 2h.
        (at(3, 9, 0), outcome("r-2", "deploy", "api", "production", Succeeded)),
        (at(3, 10, 0), incident("INC-1", "api", at(3, 10, 0), at(3, 11, 0))),
        (at(3, 12, 0), incident("INC-2", "api", at(3, 12, 0), at(3, 12, 20))),
        // r-3 fails its verification; r-4 fixes it 40 minutes later.
        (at(5, 9, 0), outcome("r-3", "deploy", "api", "production", Failed)),
        (at(5, 9, 40), outcome("r-4", "deploy", "api", "production", Succeeded)),
        (at(10, 8, 0), outcome("r-5", "deploy", "pay", "production", Succeeded)),
        (at(17, 8, 0), outcome("r-6", "deploy", "pay", "production", Succeeded)),
        // Refused (busy): ran nothing, not a deployment.
        (at(17, 8, 1), outcome("r-7", "deploy", "pay", "production", Refused)),
        // r-8's rollback comes two days later, outside the 24h window.
        (at(20, 8, 0), outcome("r-8", "deploy", "api", "production", Succeeded)),
        (at(22, 8, 0), outcome("r-11", "rollback", "api", "production", Succeeded)),
        // Staging does not count.
        (at(20, 9, 0), outcome("r-9", "deploy", "api-staging", "staging", Succeeded)),
    ];
    seeds.into_iter().enumerate().map(|(i, (ts, e))| record(i as u64 + 1, ts, e)).collect()
}

fn report(service: Option<&str>) -> super::delivery::DeliveryReport {
    let period = Period { since: at(1, 0, 0), until: at(29, 0, 0) };
    let mut scan = DeliveryScan::new(Targets::default(), period, service.map(str::to_string));
    for r in seeded() {
        scan.take(&r);
    }
    scan.finish()
}

fn figure<'a>(report: &'a super::delivery::DeliveryReport, name: &str) -> &'a super::delivery::Figure {
    report.figures.iter().find(|f| f.name == name).unwrap()
}

#[test]
fn delivery_figures_match_the_hand_computed_answers() {
    let r = report(None);
    // 6 successful deploys (r-1, 2, 4, 5, 6, 8) in 4 weeks.
    let f = figure(&r, "deployment frequency");
    assert_eq!((f.value, f.samples, f.band, f.meets_target), (Some(1.5), 6, Some("high"), Some(false)));
    assert!(f.shown.contains("(6 deploys; rollbacks beside them: 2)"), "{}", f.shown);
    // 6 of 7 deployments (r-3 failed; r-7 refused; r-9 staging).
    let f = figure(&r, "deployment success rate");
    assert_eq!(f.samples, 7);
    assert!((f.value.unwrap() - 600.0 / 7.0).abs() < 1e-9);
    // r-1 (rollback), r-2 (two incidents, counted once), r-3 (failed): 3 of 7.
    let f = figure(&r, "change failure rate");
    assert!((f.value.unwrap() - 300.0 / 7.0).abs() < 1e-9, "{:?}", f.value);
    assert_eq!(f.band, Some("low"));
    // Recoveries 30m, 2h, 40m: median 40m (elite, but over the 30m target).
    let f = figure(&r, "failed-deployment recovery time");
    assert_eq!((f.value, f.samples, f.band, f.meets_target), (Some(40.0), 3, Some("elite"), Some(false)));
    // INC-1 took 1h, INC-2 20m: median 40m.
    let f = figure(&r, "incident time to restore");
    assert_eq!((f.value, f.samples), (Some(40.0), 2));
    // No deploy carries a commit time: never an invented number.
    let f = figure(&r, "lead time for changes");
    assert_eq!(f.value, None);
    assert_eq!(f.shown, "n/a — 0 of 6 deploys have commit data");
    assert_eq!(r.per_service.get("api"), Some(&1.0));
    assert_eq!(r.per_service.get("pay"), Some(&0.5));
    assert!(!r.per_service.contains_key("api-staging"));
    // Weeks from Monday 26 October: the 2 November one has r-1, r-2, r-4
    // deployed, three failures recovered in a median 40 minutes.
    let starts: Vec<String> = r.weeks.iter().map(|w| w.start.to_string()).collect();
    assert_eq!(starts, ["2026-10-26", "2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23"]);
    let w = &r.weeks[1];
    assert_eq!((w.deploys, w.failures, w.rollbacks, w.recovery_minutes), (3, 3, 1, Some(40.0)));
    assert_eq!((r.weeks[3].deploys, r.weeks[3].rollbacks), (2, 1));
    let text = r.text();
    assert!(text.contains("DORA, Accelerate State of DevOps Report 2024"), "{text}");
    assert!(r.csv().lines().count() == 7, "{}", r.csv());
}

#[test]
fn a_service_report_counts_only_its_deploys_and_incidents() {
    let r = report(Some("pay"));
    assert_eq!(figure(&r, "deployment frequency").samples, 2);
    assert_eq!(figure(&r, "change failure rate").value, Some(0.0));
    assert_eq!(figure(&r, "incident time to restore").samples, 0);
    assert!(figure(&r, "incident time to restore").shown.starts_with("n/a"));
}

fn alert(seq: u64, ts: DateTime<Utc>, group: &str, name: &str, event: &str) -> AuditRecord {
    record(
        seq,
        ts,
        AuditEntry {
            request_id: Some(group.into()),
            args: Some(json!({"alert": name, "event": event})),
            ..AuditEntry::new(RecordKind::Alert)
        },
    )
}

#[test]
fn the_noise_report_counts_firings_actions_and_the_wait_for_the_first() {
    let period = Period { since: at(1, 0, 0), until: at(29, 0, 0) };
    let records = [
        alert(1, at(2, 3, 0), "A-1", "PoolSaturated", "fired"),
        alert(2, at(2, 3, 5), "A-1", "PoolSaturated", "acknowledged"),
        alert(3, at(2, 3, 9), "A-1", "PoolSaturated", "acted:runbook"),
        alert(4, at(2, 3, 20), "A-1", "PoolSaturated", "resolved"),
        alert(5, at(4, 1, 0), "A-2", "PoolSaturated", "fired"),
        alert(6, at(4, 1, 10), "A-2", "PoolSaturated", "resolved"),
        alert(7, at(4, 1, 12), "A-2", "PoolSaturated", "refired"),
        alert(8, at(6, 1, 0), "A-3", "DiskFull", "fired"),
        // Another alert in the same group: it shares the group's action.
        record(
            11,
            at(6, 1, 1),
            AuditEntry {
                request_id: Some("A-3".into()),
                args: Some(json!({"alert": "DiskFull", "name": "InodesFull", "event": "fired"})),
                ..AuditEntry::new(RecordKind::Alert)
            },
        ),
        alert(9, at(6, 1, 2), "A-3", "DiskFull", "acted:incident"),
        // Outside the period.
        alert(10, at(29, 1, 0), "A-4", "DiskFull", "fired"),
    ];
    let mut scan = NoiseScan::default();
    for r in &records {
        scan.take(r, &period);
    }
    let noise = scan.finish();
    let rows = &noise.rows;
    let got: Vec<(&str, u64, u64, u64, Option<i64>)> =
        rows.iter().map(|r| (r.name.as_str(), r.fired, r.groups, r.acted_on, r.median_first_action_secs)).collect();
    assert_eq!(
        got,
        [("PoolSaturated", 3, 2, 1, Some(300)), ("DiskFull", 1, 1, 1, Some(120)), ("InodesFull", 1, 1, 1, Some(60))]
    );
    let text = super::noise::noise_text(&noise, &period);
    assert!(text.contains("5 firings in 3 threads; 2 acted on (67%)"), "{text}");
}

#[test]
fn the_chart_is_a_png_of_the_stated_size_with_the_weeks_drawn() {
    let png = super::chart::png(&report(None)).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (super::chart::WIDTH, super::chart::HEIGHT));
    let mut pixels = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut pixels).unwrap();
    let count = |rgb: [u8; 3]| pixels.chunks(3).filter(|p| *p == rgb).count();
    // The deploy bars (green) and failure bars (red) are there, and text
    // was drawn (dark pixels beyond the axes' lines).
    assert!(count([46, 125, 50]) > 1_000, "deploy bars");
    assert!(count([198, 40, 40]) > 1_000, "failure bars");
    assert!(pixels.chunks(3).filter(|p| p.iter().all(|c| *c < 80)).count() > 2_000, "text");
}

#[test]
fn a_deploy_interrupted_by_a_restart_is_a_failed_deployment() {
    // The outcome written at the next start names the request, not the
    // command; the deploy's intent says what it was.
    let intent = AuditEntry {
        request_id: Some("r-20".into()),
        command: Some("deploy".into()),
        service: Some("api".into()),
        environment: Some("production".into()),
        ..AuditEntry::new(RecordKind::Intent)
    };
    let interrupted = AuditEntry {
        request_id: Some("r-20".into()),
        service: Some("api".into()),
        environment: Some("production".into()),
        ..AuditEntry::new(RecordKind::Outcome)
    }
    .outcome(Verdict::Interrupted);
    let period = Period { since: at(1, 0, 0), until: at(29, 0, 0) };
    let mut scan = DeliveryScan::new(Targets::default(), period, None);
    for r in [record(1, at(3, 9, 0), intent), record(2, at(3, 9, 5), interrupted)] {
        assert!(scan.take(&r));
    }
    let r = scan.finish();
    assert_eq!(figure(&r, "deployment success rate").value, Some(0.0));
    assert_eq!(figure(&r, "change failure rate").value, Some(100.0));
    assert!(!r.cut_short);
}

#[test]
fn lead_time_comes_from_ci_commit_records_joined_by_commit_or_by_version() {
    let request = |id: &str, service: &str, version: &str, commit: Option<&str>| {
        let mut args = json!({"action": "deploy", "service": service, "version": version});
        if let Some(c) = commit {
            args["commit"] = json!(c);
        }
        AuditEntry {
            request_id: Some(id.into()),
            command: Some("deploy".into()),
            service: Some(service.into()),
            environment: Some("production".into()),
            args: Some(args),
            ..AuditEntry::new(RecordKind::Request)
        }
    };
    let ci = |service: &str, version: &str, commit: &str, at: DateTime<Utc>| AuditEntry {
        command: Some("ci commit".into()),
        service: Some(service.into()),
        args: Some(json!({"service": service, "version": version, "commit": commit, "committed_at": at})),
        ..AuditEntry::new(RecordKind::Commit)
    };
    let seeds = [
        // r-1 names its commit by a short SHA; CI reported the full one
        // (made 5h before) under another tag: only the commit joins them.
        (at(2, 10, 0), request("r-1", "api", "v1", Some("abc1234"))),
        (at(2, 10, 5), outcome("r-1", "deploy", "api", "production", Verdict::Succeeded)),
        // pay v7: no --commit; CI said which commit it is (a day old). A
        // later rebuild of v7 (committed after the deploy) is not it.
        (at(3, 10, 0), request("r-2", "pay", "v7", None)),
        (at(3, 10, 0), outcome("r-2", "deploy", "pay", "production", Verdict::Succeeded)),
        // Redeploying pay v7 changes nothing: no second lead time.
        (at(5, 10, 0), request("r-4", "pay", "v7", None)),
        (at(5, 10, 0), outcome("r-4", "deploy", "pay", "production", Verdict::Succeeded)),
        // api v2: nothing known about its commit.
        (at(4, 10, 0), request("r-3", "api", "v2", None)),
        (at(4, 10, 5), outcome("r-3", "deploy", "api", "production", Verdict::Succeeded)),
        // pay v6 went out months ago: going back to it is no new change.
        (at(6, 10, 0), request("r-5", "pay", "v6", None)),
        (at(6, 10, 0), outcome("r-5", "deploy", "pay", "production", Verdict::Succeeded)),
    ];
    let period = Period { since: at(1, 0, 0), until: at(29, 0, 0) };
    let mut scan = DeliveryScan::new(Targets::default(), period, None);
    // The whole trail, oldest first: long before the period, CI's records
    // and pay v6's first deploy.
    let long_ago = |days: i64| at(1, 0, 0) - chrono::Duration::days(days);
    let full = "abc1234ffffffffffffffffffffffffffffffff0";
    let history = [
        (long_ago(90), ci("pay", "v6", "6666666", long_ago(91))),
        (long_ago(90), request("r-0", "pay", "v6", None)),
        (long_ago(90), outcome("r-0", "deploy", "pay", "production", Verdict::Succeeded)),
        (long_ago(40), ci("api", "v1-build-88", full, at(2, 5, 0))),
        (long_ago(40), ci("pay", "v7", "def5678", at(2, 10, 0))),
        (long_ago(40), ci("pay", "v7", "0a0a0a0", at(3, 12, 0))),
    ];
    for (i, (ts, e)) in history.into_iter().chain(seeds).enumerate() {
        assert!(scan.read(&record(i as u64 + 1, ts, e)));
    }
    let r = scan.finish();
    let f = figure(&r, "lead time for changes");
    // 5h5m and 24h: median 14h32m30s, in hours.
    assert_eq!((f.samples, f.band), (2, Some("elite")));
    assert!((f.value.unwrap() - (5.0 + 5.0 / 60.0 + 24.0) / 2.0).abs() < 1e-9, "{:?}", f.value);
    assert_eq!(f.shown, "median 14h 32m (n=2 of 5 deploys with commit data)");
}
