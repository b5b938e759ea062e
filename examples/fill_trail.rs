//! Fills a store's audit trail with N realistic records, for the audit-scale
//! benchmark (bench/audit-scale/run.sh). Usage: fill_trail DATA_DIR N
//!
//! Records look like what a busy bot writes: a request with its parsed
//! arguments, its decision, progress and outcomes, about 350-450 bytes each,
//! over a handful of services, appended in group commits like the bot's.

use opsbot::audit::{AuditEntry, AuditLog, RecordKind, Verdict};
use opsbot::store::SledStore;
use std::sync::Arc;

fn entry(i: u64) -> AuditEntry {
    let services = ["api-service", "payment-service", "web", "jobs", "search"];
    let service = services[(i % 5) as usize];
    let (kind, outcome, detail) = match i % 4 {
        0 => (RecordKind::Request, None, String::new()),
        1 => (RecordKind::Decision, Some(Verdict::Allowed), String::new()),
        2 => (RecordKind::Progress, None, format!("{service}: {}/6 updated, {} available", i % 6, i % 6)),
        _ => (
            RecordKind::Outcome,
            Some(Verdict::Succeeded),
            format!("{service} runs registry.example.com/{service}:v1.{}.{} (revision {})", i % 50, i % 7, i % 90),
        ),
    };
    AuditEntry {
        kind,
        request_id: Some(format!("r-{}", i / 4 + 1)),
        actor: Some(format!("slack:U0{:08}", i % 977)),
        actor_name: Some(format!("engineer {}", i % 977)),
        channel: Some("slack:C0123456".into()),
        command: Some("deploy".into()),
        args: (kind == RecordKind::Request)
            .then(|| serde_json::json!({"action": "deploy", "service": service, "version": format!("v1.{}.{}", i % 50, i % 7)})),
        service: Some(service.into()),
        environment: Some("production".into()),
        outcome,
        detail,
        live: None,
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: fill_trail DATA_DIR N"));
    let n: u64 = args.next().expect("usage: fill_trail DATA_DIR N").parse().expect("N is a number");
    let store = SledStore::open_with(&dir, opsbot::config::Durability::Flush).expect("open store");
    let audit: Arc<dyn AuditLog> = store.audit();
    let started = std::time::Instant::now();
    let batch = 2_000u64;
    let mut i = 0;
    while i < n {
        // Eight commits in flight, as a busy bot has.
        let mut pending = Vec::new();
        for _ in 0..8 {
            if i >= n {
                break;
            }
            let end = (i + batch).min(n);
            let entries: Vec<AuditEntry> = (i..end).map(entry).collect();
            let audit = audit.clone();
            pending.push(tokio::spawn(async move { audit.append_all(entries).await.expect("append") }));
            i = end;
        }
        for p in pending {
            p.await.unwrap();
        }
    }
    store.audit().close();
    eprintln!("appended {n} records in {:.1}s", started.elapsed().as_secs_f64());
}
