//! `bot.action_timeout` cuts an action off: its backend may have applied the
//! change, so the outcome is unknown (with what was last seen), never ❌.

use super::{command, engine_with, user};
use opsbot::audit::{AuditQuery, RecordKind, Verdict};
use opsbot::engine::reply::Reply;

#[tokio::test]
async fn an_action_the_engine_cuts_off_is_unknown_and_says_what_was_last_seen() {
    let text = r#"
[bot]
action_timeout = "500ms"
[environments.staging]
[groups]
developers = ["console:u0"]
[services.api]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 3, step = "300ms" }
[[rules]]
commands = ["deploy", "read"]
environments = ["staging"]
requesters = ["developers"]
"#;
    let h = engine_with(text);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.wait_idle().await;
    let replies = h.sink.replies();
    let outcome = replies.iter().find_map(|r| match r {
        Reply::Outcome { verdict, text, .. } => Some((*verdict, text.clone())),
        _ => None,
    });
    let (verdict, text) = outcome.expect("an outcome");
    assert_eq!(verdict, Verdict::Unknown, "{text}");
    assert!(
        text.contains("no outcome within 500ms (bot.action_timeout); api may have been changed and may still be changing; last seen: [simulated] api: 1/3 replicas updated to v2"),
        "{text}"
    );
    let recorded = h.audit.read(&AuditQuery { kind: Some(RecordKind::Outcome), ..Default::default() }).unwrap();
    assert_eq!(recorded.iter().map(|r| r.entry.outcome).collect::<Vec<_>>(), [Some(Verdict::Unknown)]);
    assert!(h.engine.store().run_locks().unwrap().is_empty(), "the service is free again");
}
