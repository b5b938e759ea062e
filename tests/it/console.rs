//! The real binary, driven through stdin, end to end.

use crate::support::{config_text, pairs, stdout, steps, Bot};
use std::io::Write;
use std::time::Duration;

#[test]
fn staging_deploy_runs_at_once_and_is_audited() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&["/deploy api-staging v1.4.2", "/status api-staging"]));
    assert!(out.contains("▶ r-1: [simulated] deploy api-staging v1.4.2 started (requested by console:alice)"), "{out}");
    assert!(out.contains("✅ r-1: [simulated] api-staging now runs v1.4.2"), "{out}");
    let records = bot.export(&["--request", "r-1"]);
    let kinds = steps(&records, "r-1");
    assert_eq!(kinds[..3], pairs(&[("request", ""), ("decision", "allowed"), ("intent", "started")])[..], "{kinds:?}");
    assert_eq!(kinds.last().unwrap(), &("outcome".to_string(), "succeeded".to_string()));
    assert!(kinds.iter().filter(|(k, _)| k == "progress").count() >= 2, "{kinds:?}");
    let request = &records[0];
    assert_eq!(request["actor"], "console:alice");
    assert_eq!(request["channel"], "console:ops");
    assert_eq!(request["environment"], "staging");
    assert_eq!(request["args"]["version"], "v1.4.2");
}

#[test]
fn fdatasync_is_the_default_durability_and_flush_an_explicit_opt_out() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&["/deploy api-staging v1.4.2"]));
    assert!(out.contains("✅ r-1: [simulated] api-staging now runs v1.4.2"), "{out}");
    let kinds = steps(&bot.export(&["--request", "r-1"]), "r-1");
    assert_eq!(kinds.last().unwrap(), &("outcome".to_string(), "succeeded".to_string()));
    assert!(bot.verify().status.success());
    // The trail records which durability the bot ran with.
    let started: Vec<_> = bot.export(&[]).into_iter().filter(|r| r["kind"] == "system").collect();
    assert_eq!(started[0]["detail"], "opsbot console started (durability: fdatasync; checkpoints: off)", "{started:?}");
    let text = config_text("30m", "").replace("data_dir = \"data\"", "data_dir = \"data\"\ndurability = \"flush\"");
    let flush = Bot::with_config(&text);
    flush.console(&["/status api-staging"]);
    let started: Vec<_> = flush.export(&[]).into_iter().filter(|r| r["kind"] == "system").collect();
    assert_eq!(started[0]["detail"], "opsbot console started (durability: flush; checkpoints: off)", "{started:?}");
}

#[test]
fn production_deploy_waits_refuses_self_approval_and_runs_after_an_sre_approves() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/deploy api-service v1.4.2",
        "/approve r-1",
        "/as console:carol",
        "/approve r-1",
        "/as console:bob",
        "/approve r-1",
        "/approve r-1",
    ]));
    assert!(out.contains("r-1 is waiting for 1 approval(s) from sre"), "{out}");
    assert!(out.contains("you cannot approve your own request"), "{out}");
    assert!(out.contains("only sre can vote on r-1"), "{out}");
    assert!(
        out.contains("▶ r-1: [simulated] deploy api-service v1.4.2 started (requested by console:alice, approved by console:bob)"),
        "{out}"
    );
    assert!(out.contains("r-1 is already approved"), "{out}");
    assert!(out.contains("✅ r-1: [simulated] api-service now runs v1.4.2"), "{out}");
    let records = bot.export(&[]);
    let kinds = steps(&records, "r-1");
    let expected = pairs(&[
        ("request", ""),
        ("decision", "pending"),
        ("vote", "refused"),
        ("vote", "refused"),
        ("vote", "approve"),
        ("decision", "approved"),
        ("intent", "started"),
    ]);
    assert_eq!(kinds[..7], expected[..], "{kinds:?}");
    assert_eq!(kinds.last().unwrap().1, "succeeded");
    let votes: Vec<&str> =
        records.iter().filter(|r| r["kind"] == "vote").map(|r| r["actor"].as_str().unwrap()).collect();
    assert_eq!(votes, ["console:alice", "console:carol", "console:bob", "console:bob"]);
}

#[test]
fn a_deny_rejects_and_nothing_runs() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/deploy api-service v2.0.0",
        "/as console:dave",
        "/deny r-1 not during the incident",
        "/as console:bob",
        "/approve r-1",
    ]));
    assert!(out.contains("r-1 denied by console:dave: not during the incident; nothing will run"), "{out}");
    assert!(out.contains("r-1 is already denied"), "{out}");
    let kinds = steps(&bot.export(&[]), "r-1");
    assert!(!kinds.iter().any(|(k, _)| k == "intent"), "{kinds:?}");
}

#[test]
fn reactions_count_as_votes() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&["/restart api-service", "/as console:bob", "+1 r-1"]));
    assert!(out.contains("✅ r-1: [simulated] api-service restarted"), "{out}");
}

#[test]
fn an_expired_request_never_runs() {
    let bot = Bot::with_config(&config_text("1s", ""));
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "/deploy api-service v1.4.2").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    writeln!(stdin, "/as console:bob").unwrap();
    writeln!(stdin, "/approve r-1").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let out = stdout(&output);
    assert!(out.contains("⌛ r-1 expired without enough approvals; nothing ran"), "{out}");
    assert!(out.contains("Vote not counted: r-1 is already expired"), "{out}");
    assert!(!out.contains("▶ r-1"), "{out}");
    let kinds = steps(&bot.export(&[]), "r-1");
    assert!(kinds.contains(&("expired".into(), "expired".into())), "{kinds:?}");
    assert!(!kinds.iter().any(|(k, _)| k == "intent"), "{kinds:?}");
}

#[test]
fn a_locked_service_refuses_changes_until_unlocked() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/as console:bob",
        "/lock api-service database migration running 1h",
        "/as console:alice",
        "/deploy api-service v1.4.2",
        "/lock api-service mine",
        "/status api-service",
        "/as console:bob",
        "/unlock api-service",
        "/as console:alice",
        "/deploy api-service v1.4.2",
    ]));
    assert!(out.contains("🔒 api-service locked by console:bob"), "{out}");
    assert!(out.contains("Denied: api-service is locked by console:bob"), "{out}");
    assert!(out.contains("only sre may use `lock` in production"), "{out}");
    assert!(out.contains("🔒 locked by console:bob until"), "{out}");
    assert!(out.contains("🔓 api-service unlocked by console:bob"), "{out}");
    // Denied requests get ids too (they are in the audit trail): r-2, r-3, r-4.
    assert!(out.contains("r-5 is waiting for 1 approval(s)"), "{out}");
}

#[test]
fn a_pending_approval_survives_a_restart() {
    let bot = Bot::new();
    let first = stdout(&bot.console(&["/deploy api-service v1.4.2"]));
    assert!(first.contains("r-1 is waiting"), "{first}");
    let second = stdout(&bot.console(&["/as console:bob", "/approve r-1"]));
    assert!(second.contains("✅ r-1: [simulated] api-service now runs v1.4.2"), "{second}");
    let third = stdout(&bot.console(&["/deploy api-staging v2"]));
    assert!(third.contains("▶ r-2"), "request ids are never reused: {third}");
    assert!(bot.verify().status.success());
}

#[test]
fn approvals_do_not_carry_over_when_the_action_changes() {
    let bot = Bot::new();
    bot.console(&["/deploy api-service v1.4.2"]);
    // The service's target changes between the request and the approval.
    bot.rewrite_config(&config_text("30m", "").replace("replicas = 3, step", "replicas = 4, step"));
    let out = stdout(&bot.console(&["/as console:bob", "/approve r-1"]));
    assert!(out.contains("r-1 will not run: the action changed since it was requested"), "{out}");
    assert!(!out.contains("▶ r-1"), "{out}");
    let kinds = steps(&bot.export(&[]), "r-1");
    assert!(kinds.contains(&("decision".into(), "invalidated".into())), "{kinds:?}");
}

#[test]
fn break_glass_runs_at_once_and_says_so_loudly() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/deploy api-service v1.4.3 --emergency \"INC-231 hotfix\"",
        "/as console:dave",
        "/deploy api-service v1.4.3 --emergency \"INC-231 hotfix\"",
    ]));
    assert!(out.contains("--emergency is only for commanders"), "{out}");
    assert!(out.contains("🚨 BREAK-GLASS by console:dave: INC-231 hotfix"), "{out}");
    assert!(out.contains("✅ r-2: [simulated] api-service now runs v1.4.3"), "{out}");
    let kinds = steps(&bot.export(&[]), "r-2");
    assert!(kinds.contains(&("decision".into(), "break_glass".into())), "{kinds:?}");
    assert!(kinds.contains(&("intent".into(), "break_glass".into())), "{kinds:?}");
}

#[test]
fn a_crashing_rollout_is_reported_as_failed() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&["/deploy api-staging v9.9.9-broken", "/status api-staging"]));
    assert!(out.contains("❌ r-1: [simulated] rollout of api-staging to v9.9.9-broken failed"), "{out}");
    assert!(out.contains("CrashLoopBackOff"), "{out}");
    let kinds = steps(&bot.export(&[]), "r-1");
    assert_eq!(kinds.last().unwrap(), &("outcome".to_string(), "failed".to_string()));
}

#[test]
fn one_mutating_action_per_service_at_a_time() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&["/deploy api-staging v2", "/restart api-staging", "/restart web-staging"]));
    assert!(out.contains("api-staging is busy with r-1 (by console:alice)"), "{out}");
    assert!(out.contains("✅ r-1"), "{out}");
    assert!(out.contains("✅ r-3"), "{out}");
    assert!(!out.contains("▶ r-2"), "{out}");
}

#[test]
fn scale_is_bounded_by_config_and_rollback_restores() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/scale api-staging 9",
        "/scale api-staging 5",
        "/deploy web-staging v3.1.0",
        "/wait",
        "/rollback web-staging",
        "/wait",
        "/status web-staging",
        "/rollback web-staging 2",
    ]));
    assert!(out.contains("api-staging allows 1 to 6 replicas; 9 is outside that"), "{out}");
    assert!(!out.contains("to 9 replicas started"), "an out-of-bounds scale never starts: {out}");
    assert!(out.contains("✅ r-1: [simulated] api-staging runs 5 replicas (was 2)"), "{out}");
    assert!(out.contains("✅ r-3: [simulated] web-staging rolled back to v3.0.0 (revision 1 restored as 3)"), "{out}");
    assert!(out.contains("web-staging (staging): v3.0.0 — revision 3"), "{out}");
    assert!(out.contains("✅ r-4: [simulated] web-staging rolled back to v3.1.0 (revision 2 restored as 4)"), "{out}");
}

#[test]
fn unknown_users_and_typos_get_clear_answers() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/as console:mallory",
        "/status api-service",
        "/as slack:U1",
        "/as console:alice",
        "/stauts api-service",
        "/deploy api-servce v1",
    ]));
    assert!(out.contains("console:mallory is not in any group"), "{out}");
    assert!(out.contains("the console can only act as console: identities"), "{out}");
    assert!(out.contains("Did you mean `/status`?"), "{out}");
    assert!(out.contains("Did you mean `api-service`?"), "{out}");
}

#[test]
fn check_reports_every_problem_and_exits_64() {
    let bot = Bot::with_config("[bot]\nlock_ttl = \"soon\"\ndurability = \"always\"\n[groups]\nsre = [\"bob\"]\n");
    let output = bot.command(&["check"]).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let err = String::from_utf8_lossy(&output.stderr);
    for want in [
        "bot.lock_ttl",
        "bot.durability",
        "unknown durability `always`",
        "\"fdatasync\"",
        "groups.sre[0]",
        "no environments defined",
        "no rules",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
    let console = bot.command(&["console"]).output().unwrap();
    assert_eq!(console.status.code(), Some(64), "console refuses to start on a bad config");
    let good = Bot::new();
    let output = good.command(&["check"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The incident flow through the real binary: a deploy goes out, an
/// incident is declared on its service (the summary names the deploy), a
/// new deploy is held for the lead, a rollback runs under its usual gate,
/// the incident is resolved, and `opsbot incident export` tells it all
/// from the trail.
#[test]
fn an_incident_holds_deploys_for_its_lead_and_exports_its_timeline() {
    let bot = Bot::new();
    let out = stdout(&bot.console(&[
        "/as console:bob",
        "/deploy api-service v1.4.2",
        "/as console:dave",
        "/approve r-1",
        "/wait",
        "/as console:alice",
        "/incident declare \"errors after v1.4.2\" --sev 1 --service api-service",
        "/as console:carol",
        "/deploy api-service v1.4.3",
        "/as console:bob",
        "/approve r-2",
        "/as console:carol",
        "/rollback api-service",
        "/as console:dave",
        "/approve r-3",
        "/wait",
        "/status api-service",
        "/as console:alice",
        "/incident resolve \"rolled back to v1.4.1\"",
        "/as console:bob",
        "/approve r-2",
        "/wait",
    ]));
    assert!(out.contains("🚨 INC-1 declared by console:alice"), "{out}");
    assert!(out.contains("r-1 deploy api-service by console:bob"), "the summary lists the deploy: {out}");
    assert!(out.contains("r-2 is waiting for 1 approval(s) from sre and console:alice's"), "{out}");
    assert!(out.contains("console:bob approved r-2; waiting for console:alice's approval"), "{out}");
    assert!(out.contains("✅ r-3: [simulated] api-service rolled back to v1.4.1"), "{out}");
    assert!(out.contains("✅ INC-1 resolved by console:alice"), "{out}");
    // What runs is the rolled-back version; the held deploy never started.
    assert!(out.contains("opsbot: [simulated] api-service (production): v1.4.1"), "{out}");
    // The held deploy did not start while the incident was open; resolved,
    // nothing holds it, and it runs on its approver's word, not by itself.
    assert!(out.contains("r-2 no longer needs console:alice's approval"), "{out}");
    let records = bot.export(&[]);
    let seq_of = |check: &dyn Fn(&serde_json::Value) -> bool| {
        records.iter().find(|r| check(r)).map(|r| r["seq"].as_u64().unwrap())
    };
    let resolved =
        seq_of(&|r| r["kind"] == "incident" && r["detail"].as_str().unwrap().starts_with("resolved")).unwrap();
    let r2_started = seq_of(&|r| r["request_id"] == "r-2" && r["kind"] == "intent").unwrap();
    assert!(r2_started > resolved, "r-2 was held until the incident was resolved");
    let exported = bot.command(&["incident", "export", "INC-1"]).output().unwrap();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let md = String::from_utf8(exported.stdout).unwrap();
    assert!(md.starts_with("# INC-1: errors after v1.4.2\n"), "{md}");
    assert!(md.contains("- Lead: console:alice"), "{md}");
    assert!(
        md.contains("- Time to mitigate: ") && md.contains("(first successful change: r-3 rollback api-service)"),
        "{md}"
    );
    assert!(md.contains("- Time to resolve: "), "{md}");
    for row in ["declared SEV1 on api-service", "deploy r-2 pending", "rollback r-3 succeeded", "resolved after"] {
        assert!(md.contains(row), "{row}: {md}");
    }
    assert!(!md.contains("r-1"), "the deploy before it is not part of its timeline: {md}");
    let json = bot.command(&["incident", "export", "inc-1", "--format", "json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["incident"]["resolution"], "rolled back to v1.4.1");
    assert!(json["time_to_resolve_seconds"].as_i64().is_some());
    // Bad input says what to do.
    let missing = bot.command(&["incident", "export", "INC-9"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("the audit trail has no incident INC-9"));
    let bad = bot.command(&["incident", "export", "9", "--format", "pdf"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--format: unknown format `pdf`; use md or json"));
}
