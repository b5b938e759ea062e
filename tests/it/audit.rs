//! Tampering with the stored trail, and the audit CLI against a running bot.

use crate::support::{stdout, Bot};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// The trail's stored layout, as an outsider with raw access sees it: values
/// under `b` + first sequence number (big-endian), each holding records as
/// `hash + JSON body` lines. Returns the block key and its lines.
fn block_holding(tree: &sled::Tree, seq: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut at = vec![b'b'];
    at.extend_from_slice(&seq.to_be_bytes());
    let (key, value) = tree.range(vec![b'b']..=at).next_back().unwrap().unwrap();
    let lines = value.strip_suffix(b"\n").unwrap().split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    (key.to_vec(), lines)
}

fn first_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[1..9].try_into().unwrap())
}

fn store_block(tree: &sled::Tree, key: &[u8], lines: &[Vec<u8>]) {
    if lines.is_empty() {
        tree.remove(key).unwrap();
        return;
    }
    let mut value = Vec::new();
    for line in lines {
        value.extend_from_slice(line);
        value.push(b'\n');
    }
    tree.insert(key, value).unwrap();
}

/// Applies `edit` to the stored bytes of record `seq`, in place.
fn edit_record(tree: &sled::Tree, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let (key, mut lines) = block_holding(tree, seq);
    edit(&mut lines[(seq - first_of(&key)) as usize]);
    store_block(tree, &key, &lines);
}

fn remove_record(tree: &sled::Tree, seq: u64) {
    let (key, mut lines) = block_holding(tree, seq);
    lines.remove((seq - first_of(&key)) as usize);
    store_block(tree, &key, &lines);
}

fn record_bytes(tree: &sled::Tree, seq: u64) -> Vec<u8> {
    let (key, lines) = block_holding(tree, seq);
    lines[(seq - first_of(&key)) as usize].clone()
}

/// A bot with a few records, then `tamper` applied directly to its sled store.
fn tampered(tamper: impl FnOnce(&sled::Tree)) -> Bot {
    let bot = Bot::new();
    bot.console(&["/deploy api-staging v2", "/status api-staging", "/deploy api-service v3"]);
    assert!(bot.verify().status.success(), "untouched store verifies");
    let db = sled::open(bot.data()).expect("open store directly");
    let tree = db.open_tree("audit").unwrap();
    tamper(&tree);
    db.flush().unwrap();
    drop(tree);
    drop(db);
    bot
}

fn assert_broken_at(bot: &Bot, seq: u64) {
    let output = bot.verify();
    let out = stdout(&output);
    assert!(!output.status.success(), "verify must fail: {out}");
    assert!(out.contains(&format!("audit trail BROKEN at record {seq}:")), "{out}");
}

#[test]
fn an_untouched_store_verifies() {
    let bot = tampered(|_| {});
    let out = stdout(&bot.verify());
    assert!(out.starts_with("audit trail intact: "), "{out}");
}

#[test]
fn changing_one_byte_is_caught_and_named() {
    let bot = tampered(|tree| {
        // Flip a byte inside the JSON body (past the 64-char hash).
        edit_record(tree, 4, |value| {
            let at = value.len() - 10;
            value[at] ^= 0x01;
        });
    });
    assert_broken_at(&bot, 4);
}

#[test]
fn changing_a_hash_byte_is_caught_and_named() {
    let bot = tampered(|tree| {
        edit_record(tree, 2, |value| value[0] = if value[0] == b'a' { b'b' } else { b'a' });
    });
    assert_broken_at(&bot, 2);
}

#[test]
fn deleting_a_record_is_caught_and_named() {
    let bot = tampered(|tree| {
        remove_record(tree, 3);
    });
    assert_broken_at(&bot, 3);
}

#[test]
fn deleting_the_last_record_is_caught() {
    let bot = tampered(|tree| {
        let head: serde_json::Value = serde_json::from_slice(&tree.get("h").unwrap().unwrap()).unwrap();
        remove_record(tree, head["seq"].as_u64().unwrap());
    });
    let output = bot.verify();
    assert!(!output.status.success());
    assert!(stdout(&output).contains("records were removed from the end"), "{}", stdout(&output));
}

#[test]
fn swapping_two_records_is_caught_and_named() {
    let bot = tampered(|tree| {
        let (a, b) = (record_bytes(tree, 5), record_bytes(tree, 6));
        edit_record(tree, 5, |value| *value = b);
        edit_record(tree, 6, |value| *value = a);
    });
    assert_broken_at(&bot, 5);
}

#[test]
fn export_filters_by_service_request_and_time() {
    let bot = Bot::new();
    bot.console(&["/deploy api-staging v2", "/deploy api-service v3"]);
    let all = bot.export(&[]);
    let staging = bot.export(&["--service", "api-staging"]);
    assert!(!staging.is_empty() && staging.len() < all.len());
    assert!(staging.iter().all(|r| r["service"] == "api-staging"));
    let r2 = bot.export(&["--request", "2"]);
    assert!(!r2.is_empty() && r2.iter().all(|r| r["request_id"] == "r-2"));
    assert!(bot.export(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(bot.export(&["--since", "1h"]).len(), all.len());
    // Every exported record carries its hash and its predecessor's.
    for pair in all.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
        assert_eq!(pair[1]["seq"].as_u64().unwrap(), pair[0]["seq"].as_u64().unwrap() + 1);
    }
}

/// While the bot runs it holds sled's lock; the CLI talks to it over the admin socket.
#[test]
fn the_cli_reads_the_trail_of_a_running_bot() {
    let bot = Bot::new();
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "/deploy api-staging v2").unwrap();
    // Wait until the action is done, so the records below are all there.
    loop {
        let line = lines.next().expect("console output").unwrap();
        if line.starts_with("✅ r-1") {
            break;
        }
    }
    let verify = bot.verify();
    assert!(verify.status.success(), "{}{}", stdout(&verify), String::from_utf8_lossy(&verify.stderr));
    let exported = bot.export(&["--request", "r-1"]);
    assert!(exported.iter().any(|r| r["kind"] == "outcome" && r["outcome"] == "succeeded"), "{exported:?}");

    // tail --follow shows records committed after it started.
    let mut tail =
        bot.command(&["audit", "tail", "-n", "1", "--follow"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut tail_lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first = tail_lines.next().unwrap().unwrap();
    assert!(first.contains("\"seq\""), "{first}");
    writeln!(stdin, "/status api-staging").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_status = false;
    while Instant::now() < deadline {
        let line = tail_lines.next().unwrap().unwrap();
        if line.contains("\"command\":\"status\"") {
            saw_status = true;
            break;
        }
    }
    tail.kill().unwrap();
    tail.wait().unwrap();
    assert!(saw_status, "tail followed the new record");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
