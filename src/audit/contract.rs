//! The [`AuditLog`] contract, run against every trail (sled's, PostgreSQL's)
//! with the in-memory log as the reference: what the core relies on,
//! whichever trail it is given.

use super::{AuditEntry, AuditLog, AuditQuery, AuditRecord, Effect, RecordKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Record `i` of the contract's trail: three services and none, requests and
/// outcomes, eleven request ids, ~1 KiB each (so one commit spans several of
/// sled's blocks).
pub fn entry(i: usize) -> AuditEntry {
    let services = ["api", "web", "jobs"];
    let kind = if i.is_multiple_of(5) { RecordKind::Outcome } else { RecordKind::Request };
    AuditEntry {
        service: (!i.is_multiple_of(7)).then(|| services[i % 3].to_string()),
        request_id: Some(format!("r-{}", i % 11)),
        detail: format!("record {i} {}", "x".repeat(1000)),
        ..AuditEntry::new(kind)
    }
}

/// Both logs, empty, take records 1–120 in one append and 121 in a commit
/// whose state change is made; then every query (bounded, filtered,
/// streamed) reads the same from `log` as from `reference`, and what is read
/// back is what was appended.
pub async fn reads_like_the_reference(name: &str, log: &dyn AuditLog, reference: &dyn AuditLog) {
    for (name, log) in [(name, log), ("reference", reference)] {
        assert_eq!(log.head().unwrap().seq, 0, "{name}");
        let records = log.append_all((1..=120).map(entry).collect()).await.unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=120).collect::<Vec<_>>(), "{name}");
        assert_eq!(records[1].prev, records[0].hash, "{name}");
        let changed = Arc::new(AtomicBool::new(false));
        let flag = changed.clone();
        let effect: Effect = Box::new(move || {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(log.commit(vec![entry(121)], Some(effect)).await.unwrap()[0].seq, 121, "{name}");
        assert!(changed.load(Ordering::SeqCst), "{name}");
        assert_eq!(log.head().unwrap().seq, 121, "{name}");
    }
    let service = |s: &str| Some(s.to_string());
    let queries = [
        AuditQuery::default(),
        AuditQuery { service: service("api"), limit: Some(7), ..Default::default() },
        AuditQuery { service: service("web"), kind: Some(RecordKind::Outcome), limit: Some(4), ..Default::default() },
        AuditQuery { limit: Some(9), look_back: Some(30), ..Default::default() },
        AuditQuery { service: service("jobs"), limit: Some(50), look_back: Some(40), ..Default::default() },
        AuditQuery { after_seq: Some(37), service: service("jobs"), ..Default::default() },
        AuditQuery { request_id: Some("r-3".into()), kind: Some(RecordKind::Request), ..Default::default() },
        AuditQuery { request_id: Some("none".into()), ..Default::default() },
    ];
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    for query in &queries {
        assert_eq!(seqs(log.read(query).unwrap()), seqs(reference.read(query).unwrap()), "{name}: {query:?}");
        let streamed = |log: &dyn AuditLog| {
            let mut out = Vec::new();
            log.each(query, &mut |r| {
                out.push(r.seq);
                out.len() < 50
            })
            .unwrap();
            out
        };
        assert_eq!(streamed(log), streamed(reference), "{name}: each {query:?}");
    }
    let entries = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.entry).collect::<Vec<_>>();
    let all = AuditQuery::default();
    assert_eq!(entries(log.read(&all).unwrap()), entries(reference.read(&all).unwrap()), "{name}");
}

/// A commit whose state change fails: nothing of it is acknowledged, and
/// the log takes no more records (run last: it ends the log).
pub async fn a_failed_commit_stops_the_log(name: &str, log: &dyn AuditLog) {
    let before = log.head().unwrap().seq;
    let failing: Effect = Box::new(|| Err("refused".into()));
    assert!(log.commit(vec![entry(1)], Some(failing)).await.is_err(), "{name}");
    assert!(log.append_all(vec![entry(2)]).await.is_err(), "{name}: a failed store takes no more records");
    assert_eq!(log.head().unwrap().seq, before, "{name}: nothing more acknowledged");
}
