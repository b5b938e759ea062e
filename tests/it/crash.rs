//! kill -9 while actions run: the trail must still verify, and hold every
//! step the user was told about; the next start records what was interrupted.

use crate::support::{config_text, stdout, Bot};
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn kill_dash_nine_loses_nothing_the_user_was_told() {
    // Slow rollouts so several actions are mid-flight at the kill.
    let bot = Bot::with_config(&config_text("30m", "").replace("step = \"20ms\"", "step = \"150ms\""));
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for service in ["api-staging", "web-staging", "jobs-staging"] {
        writeln!(stdin, "/deploy {service} v7.0.0").unwrap();
    }
    writeln!(stdin, "/deploy api-service v7.0.0").unwrap();
    writeln!(stdin, "/as console:bob").unwrap();
    writeln!(stdin, "/approve r-4").unwrap();
    stdin.flush().unwrap();
    // Let some progress be shown, then kill without warning.
    let mut seen = Vec::new();
    while seen.iter().filter(|l: &&String| l.contains("↳")).count() < 5 {
        seen.push(rx.recv_timeout(Duration::from_secs(10)).expect("progress lines"));
    }
    // On Unix, Child::kill is SIGKILL: no handler, no flush, no goodbye.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(rx.try_iter());

    // Readers never write: not even sled's own recovery of the torn tail.
    let before = crate::support::fingerprint(&bot.data());
    let verify = bot.verify();
    assert!(verify.status.success(), "{}", stdout(&verify));
    let records = bot.export(&[]);
    let tail = bot.command(&["audit", "tail", "-n", "5"]).output().unwrap();
    assert!(tail.status.success());
    assert_eq!(crate::support::fingerprint(&bot.data()), before, "verify, export and tail changed the data directory");
    let has = |kind: &str, request: &str, detail: Option<&str>| {
        records.iter().any(|r| {
            r["kind"] == kind && r["request_id"] == request && detail.is_none_or(|d| r["detail"].as_str() == Some(d))
        })
    };
    let mut checked = 0;
    for line in &seen {
        if let Some(rest) = line.strip_prefix("  ↳ ") {
            let (id, text) = rest.split_once(": ").unwrap();
            assert!(has("progress", id, Some(text)), "told {line:?} but it is not in the trail");
            checked += 1;
        } else if let Some(pos) = line.find("▶ r-") {
            let id = line[pos + "▶ ".len()..].split(':').next().unwrap();
            assert!(has("intent", id, None), "told {line:?} but no intent is recorded");
            checked += 1;
        } else if let Some(rest) = line.strip_prefix("✅ ").or_else(|| line.strip_prefix("❌ ")) {
            let (id, text) = rest.split_once(": ").unwrap();
            assert!(has("outcome", id, Some(text)), "told {line:?} but it is not in the trail");
            checked += 1;
        } else if line.contains("is waiting for") {
            assert!(has("decision", "r-4", None));
            checked += 1;
        }
    }
    assert!(checked >= 8, "the test saw too little to prove anything: {seen:?}");

    // The next start records every action that was cut off, and frees its service.
    let after = stdout(&bot.console(&["/status api-staging", "/deploy api-staging v7.0.1"]));
    assert!(after.contains("▶ r-5"), "the run lock was released on recovery: {after}");
    let records = bot.export(&[]);
    let interrupted: Vec<&str> =
        records.iter().filter(|r| r["outcome"] == "interrupted").map(|r| r["request_id"].as_str().unwrap()).collect();
    for id in ["r-1", "r-2", "r-3", "r-4"] {
        let finished = records.iter().any(|r| r["request_id"] == id && r["kind"] == "outcome");
        assert!(finished, "{id} has an outcome (succeeded before the kill, or interrupted): {interrupted:?}");
    }
    assert!(!interrupted.is_empty(), "something was mid-flight at the kill");
    assert!(bot.verify().status.success());
}

#[test]
fn sigterm_lets_running_actions_finish_and_records_them() {
    let bot = Bot::with_config(&config_text("30m", "").replace("step = \"20ms\"", "step = \"200ms\""));
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "/deploy api-staging v8.0.0").unwrap();
    loop {
        let line = lines.next().expect("output").unwrap();
        if line.contains("↳ r-1") {
            break;
        }
    }
    // Stdin stays open: only the signal stops it.
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
    assert!(rest.iter().any(|l| l.starts_with("✅ r-1")), "the running deploy finished: {rest:?}");
    let records = bot.export(&[]);
    assert!(records.iter().any(|r| r["request_id"] == "r-1" && r["outcome"] == "succeeded"));
    assert_eq!(records.last().unwrap()["detail"], "opsbot console stopped");
    drop(stdin);
}
