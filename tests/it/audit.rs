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
    let db = open_raw(&bot.data());
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

/// Opens the store with sled directly. sled lets go of its file lock only
/// once its IO threads are done with the previous handle (one this process
/// dropped a moment ago), so the lock can still be held for a moment.
fn open_raw(dir: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("open store directly: {e}"),
        }
    }
}

/// Every key and value of the store's trail, read with sled directly.
fn raw_trail(bot: &Bot) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = open_raw(&bot.data());
    let tree = db.open_tree("audit").unwrap();
    tree.iter().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

fn with_tree(bot: &Bot, edit: impl FnOnce(&sled::Tree)) {
    let db = open_raw(&bot.data());
    let tree = db.open_tree("audit").unwrap();
    edit(&tree);
    db.flush().unwrap();
}

#[test]
fn a_deleted_or_moved_back_head_is_reported_loses_nothing_and_is_repaired() {
    let moved_back = |n: u64| {
        move |tree: &sled::Tree| {
            let hash = String::from_utf8(record_bytes(tree, n)[..64].to_vec()).unwrap();
            tree.insert("h", serde_json::to_vec(&serde_json::json!({"seq": n, "hash": hash})).unwrap()).unwrap();
        }
    };
    type Tamper<'a> = Box<dyn Fn(&sled::Tree) + 'a>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "deleted",
            Box::new(|tree: &sled::Tree| {
                tree.remove("h").unwrap();
            }),
        ),
        ("moved back to record 1", Box::new(moved_back(1))),
        (
            "moved back one record",
            Box::new(|tree: &sled::Tree| {
                let head: serde_json::Value = serde_json::from_slice(&tree.get("h").unwrap().unwrap()).unwrap();
                moved_back(head["seq"].as_u64().unwrap() - 1)(tree);
            }),
        ),
    ];
    for (name, tamper) in cases {
        let bot = Bot::new();
        bot.console(&["/deploy api-staging v2", "/status api-staging", "/deploy api-service v3"]);
        let records = bot.export(&[]);
        with_tree(&bot, |tree| tamper(tree));
        let tampered = raw_trail(&bot);
        let files = crate::support::fingerprint(&bot.data());

        let verify = bot.verify();
        let out = stdout(&verify);
        assert!(!verify.status.success() && out.contains("audit trail BROKEN"), "{name}: {out}");
        assert!(out.contains("head") && out.contains("audit repair"), "{name}: {out}");
        assert_eq!(bot.export(&[]), records, "{name}: export still reads every record");
        assert_eq!(crate::support::fingerprint(&bot.data()), files, "{name}: verify and export wrote nothing");

        // The bot refuses to write to it, and says what to do.
        let refused = bot.command(&["console"]).stdin(std::process::Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(65), "{name}: {err}");
        assert!(err.contains("audit trail is damaged") && err.contains("opsbot audit repair"), "{name}: {err}");
        assert_eq!(crate::support::fingerprint(&bot.data()), files, "{name}: refusing to start wrote nothing");
        let refused_repair = bot.command(&["audit", "verify"]).output().unwrap();
        assert!(!refused_repair.status.success());
        assert_eq!(raw_trail(&bot), tampered);

        let repair = bot.command(&["audit", "repair"]).output().unwrap();
        assert!(repair.status.success(), "{name}: {}", stdout(&repair));
        assert!(stdout(&repair).contains("every record was kept"), "{name}: {}", stdout(&repair));
        let after = bot.export(&[]);
        assert_eq!(&after[..records.len()], &records[..], "{name}: every record kept, unchanged");
        assert_eq!(after.len(), records.len() + 1, "{name}: plus the repair's own record");
        assert!(after.last().unwrap()["detail"].as_str().unwrap().starts_with("audit repair:"));
        assert!(bot.verify().status.success(), "{name}");
        assert!(stdout(&bot.console(&["/status api-staging"])).contains("api-staging"), "{name}: it starts again");
    }
}

/// Records removed from the end leave sled leaves small enough to merge:
/// reading such a store must not make sled finish (and write) that merge.
/// verify, export, tail and a refused start leave every file as it was.
#[test]
fn reading_a_store_with_records_cut_from_its_end_writes_nothing() {
    let bot = Bot::new();
    let commands: Vec<String> = (0..200).map(|_| "/status api-staging".to_string()).collect();
    bot.console(&commands.iter().map(String::as_str).collect::<Vec<_>>());
    with_tree(&bot, |tree| {
        let keys: Vec<_> = tree.scan_prefix(b"b").keys().map(|k| k.unwrap()).collect();
        assert!(keys.len() > 100, "one block per console commit: {}", keys.len());
        for key in keys.iter().rev().take(12) {
            tree.remove(key).unwrap();
        }
    });
    let files = crate::support::fingerprint(&bot.data());
    let verify = bot.verify();
    assert!(!verify.status.success() && stdout(&verify).contains("removed from the end"), "{}", stdout(&verify));
    bot.export(&[]);
    bot.command(&["audit", "tail", "-n", "5"]).output().unwrap();
    let refused = bot.command(&["console"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(refused.status.code(), Some(65));
    assert_eq!(crate::support::fingerprint(&bot.data()), files, "reading the store changed it");
}

/// What an outsider with write access to the data directory can do: rewrite
/// the whole trail consistently (every hash recomputed, seals and head marks
/// written in the store's own layout), with `change` applied to the records.
fn rewrite_consistently(bot: &Bot, change: impl Fn(&mut serde_json::Value)) {
    let records = bot.export(&[]);
    with_tree(bot, |tree| {
        tree.clear().unwrap();
        let mut prev = opsbot::audit::chain::GENESIS.to_string();
        let mut head = None;
        for mut value in records {
            change(&mut value);
            let mut record: opsbot::audit::AuditRecord = serde_json::from_value(value).unwrap();
            let (sealed, stored) = opsbot::audit::chain::seal(record.seq, record.ts, record.entry.clone(), &prev);
            record.hash = sealed.hash.clone();
            prev = sealed.hash.clone();
            let mut block = stored;
            block.extend_from_slice(format!("\n={} {}\n", record.seq, record.hash).as_bytes());
            let mut key = vec![b'b'];
            key.extend_from_slice(&record.seq.to_be_bytes());
            tree.insert(key, block).unwrap();
            head = Some(serde_json::json!({"seq": record.seq, "hash": record.hash}));
        }
        let head = serde_json::to_vec(&head.unwrap()).unwrap();
        tree.insert("h", head.clone()).unwrap();
        tree.insert("c", head).unwrap();
        tree.insert("v", "2").unwrap();
    });
}

#[test]
fn signed_checkpoints_catch_a_consistent_rewrite_that_the_chain_alone_cannot() {
    let published = tempfile::tempdir().unwrap();
    let checkpoints = published.path().join("checkpoints.jsonl");
    let extra = format!("\n[audit]\ncheckpoint_file = \"{}\"\n", checkpoints.display());
    let bot = Bot::with_config(&crate::support::config_text("30m", &extra));
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let keyed = |args: &[&str]| bot.command(args).env("OPSBOT_AUDIT_KEY", seed).output().unwrap();

    bot.console_env(&["/deploy api-staging v2", "/deploy api-service v3"], &[("OPSBOT_AUDIT_KEY", seed.as_ref())]);
    let made = keyed(&["audit", "checkpoint"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let line = stdout(&made);
    assert!(line.contains("\"opsbot_checkpoint\":1") && line.contains(public), "{line}");
    let published_text = std::fs::read_to_string(&checkpoints).unwrap();
    assert_eq!(published_text.trim(), line.trim(), "published to the configured file");
    let checkpoint: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let covered = checkpoint["seq"].as_u64().unwrap();
    // The checkpoint is on the record too.
    let records = bot.export(&[]);
    assert!(records.last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .starts_with(&format!("checkpoint of record {covered}")));
    bot.console(&["/status api-staging"]);

    let check = |key: &str| {
        bot.command(&["audit", "verify", "--checkpoints"])
            .arg(&checkpoints)
            .args(["--public-key", key])
            .output()
            .unwrap()
    };
    let ok = check(public);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("extends all 1 checkpoint(s)"), "{}", stdout(&ok));
    // A checkpoint signed by an untrusted key proves nothing.
    let other = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let untrusted = check(other);
    assert!(
        !untrusted.status.success()
            && stdout(&untrusted).contains("no checkpoint of this trail signed by a trusted key"),
        "{}",
        stdout(&untrusted)
    );

    // Another trail signed with the same key (staging next to production).
    let elsewhere = tempfile::tempdir().unwrap();
    let other_file = elsewhere.path().join("checkpoints.jsonl");
    let second = Bot::with_config(&crate::support::config_text(
        "30m",
        &format!("\n[audit]\ncheckpoint_file = \"{}\"\n", other_file.display()),
    ));
    second.console_env(&["/status api-staging"], &[("OPSBOT_AUDIT_KEY", seed.as_ref())]);
    let second_line = stdout(&second.command(&["audit", "checkpoint"]).env("OPSBOT_AUDIT_KEY", seed).output().unwrap());
    // Only the other trail's checkpoint: nothing vouches for this one (were
    // this store rewritten from record 1, this is what it would look like).
    let only_other = bot
        .command(&["audit", "verify", "--checkpoints"])
        .arg(&other_file)
        .args(["--public-key", public])
        .output()
        .unwrap();
    assert!(
        !only_other.status.success() && stdout(&only_other).contains("of another trail"),
        "{}",
        stdout(&only_other)
    );
    // The other trail's checkpoint, signed at a chosen time (the CLI signs
    // "now", and one second apart is too close to order in a test).
    let theirs: serde_json::Value = serde_json::from_str(second_line.trim()).unwrap();
    let sign_theirs = |at: chrono::DateTime<chrono::Utc>| {
        opsbot::audit::checkpoint::Signer::from_seed_hex(seed)
            .unwrap()
            .sign(
                theirs["trail"].as_str().unwrap(),
                &opsbot::audit::chain::Head {
                    seq: theirs["seq"].as_u64().unwrap(),
                    hash: theirs["hash"].as_str().unwrap().to_string(),
                },
                at,
            )
            .line()
    };
    let earlier = sign_theirs(chrono::Utc::now() - chrono::Duration::hours(1));
    // A log a collector keeps: JSON lines that escape the checkpoint, next
    // to lines anyone in the channel could have posted. Those are warnings.
    let log = published.path().join("collected.log");
    let escaped = serde_json::to_string(&format!("audit checkpoint: {}", line.trim())).unwrap();
    let forged = line.trim().replace(&format!("\"seq\":{covered},"), "\"seq\":1,");
    std::fs::write(
        &log,
        format!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":{escaped}}}}}\nposted by someone: {{\"opsbot_checkpoint\":1}}\n{forged}\n{earlier}\n"
        ),
    )
    .unwrap();
    let from_log =
        bot.command(&["audit", "verify", "--checkpoints"]).arg(&log).args(["--public-key", public]).output().unwrap();
    let text = stdout(&from_log);
    assert!(from_log.status.success(), "{text}");
    assert!(text.contains("extends all 1 checkpoint(s)"), "{text}");
    assert!(text.contains(":2: ignored: not a readable checkpoint"), "{text}");
    assert!(text.contains(":3: ignored: its signature does not verify"), "{text}");
    assert!(text.contains("1 checkpoint(s) are of another trail"), "{text}");
    // One key signing two trails into one file: if the other trail signed
    // last, this store may be that other trail swapped in. That fails.
    let later = sign_theirs(chrono::Utc::now() + chrono::Duration::hours(1));
    let shared = published.path().join("shared.jsonl");
    std::fs::write(&shared, format!("{}\n{later}\n", line.trim())).unwrap();
    let swapped = bot
        .command(&["audit", "verify", "--checkpoints"])
        .arg(&shared)
        .args(["--public-key", public])
        .output()
        .unwrap();
    let text = stdout(&swapped);
    assert!(!swapped.status.success() && text.contains("may have been replaced by that other trail"), "{text}");
    // The checkpoint file must stay outside the data directory, also when
    // --data-dir (or OPSBOT_DATA_DIR) moves it.
    let moved = bot.command(&["audit", "verify"]).arg("--data-dir").arg(published.path()).output().unwrap();
    assert_eq!(moved.status.code(), Some(64), "{}", stdout(&moved));
    assert!(String::from_utf8_lossy(&moved.stderr).contains("is inside the data directory"));

    // A consistent rewrite of a covered record: the chain alone cannot tell…
    rewrite_consistently(&bot, |record| {
        if record["request_id"] == "r-2" && record["kind"] == "request" {
            record["actor"] = serde_json::json!("console:bob");
        }
    });
    let plain = bot.verify();
    assert!(plain.status.success(), "a consistent rewrite verifies on its own: {}", stdout(&plain));
    // …the checkpoint can.
    let caught = check(public);
    assert!(!caught.status.success(), "{}", stdout(&caught));
    assert!(
        stdout(&caught).contains(&format!("checkpoint of record {covered}"))
            && stdout(&caught).contains("rewritten after this checkpoint"),
        "{}",
        stdout(&caught)
    );

    // Cutting the trail back below the checkpoint is caught too.
    let truncated = Bot::with_config(&crate::support::config_text("30m", ""));
    std::fs::remove_dir_all(truncated.data()).ok();
    copy_dir(&bot.data(), &truncated.data());
    rewrite_consistently(&truncated, |_| {});
    with_tree(&truncated, |tree| {
        let mut keys: Vec<_> = tree.scan_prefix(b"b").keys().map(|k| k.unwrap()).collect();
        keys.reverse();
        for key in keys.iter().take(keys.len() - 2) {
            tree.remove(key).unwrap();
        }
        let (_, value) = tree.scan_prefix(b"b").next_back().unwrap().unwrap();
        let seal = String::from_utf8(value.to_vec()).unwrap();
        let seal = seal.lines().last().unwrap().trim_start_matches('=').to_string();
        let (seq, hash) = seal.split_once(' ').unwrap();
        let head = serde_json::to_vec(&serde_json::json!({"seq": seq.parse::<u64>().unwrap(), "hash": hash})).unwrap();
        tree.insert("h", head.clone()).unwrap();
        tree.insert("c", head).unwrap();
    });
    assert!(truncated.verify().status.success(), "a consistent truncation verifies on its own");
    let out = truncated
        .command(&["audit", "verify", "--checkpoints"])
        .arg(&checkpoints)
        .args(["--public-key", public])
        .output()
        .unwrap();
    assert!(!out.status.success() && stdout(&out).contains("does not reach record"), "{}", stdout(&out));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "admin.sock" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// While the bot appends, `audit verify` (over its admin socket) sees only
/// what the writer acknowledged: a commit in flight is never taken for a
/// damaged end.
#[test]
fn verify_and_export_of_a_busy_bot_never_see_a_commit_in_flight() {
    let bot = Bot::new();
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pump = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..50 {
                    if writeln!(stdin, "/status api-staging").is_err() {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    let socket = bot.data().join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the bot never opened its admin socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..25 {
        let verify = bot.verify();
        assert!(verify.status.success(), "run {i}: {}", stdout(&verify));
        if i % 5 == 0 {
            let records = bot.export(&[]);
            for pair in records.windows(2) {
                assert_eq!(pair[1]["prev"], pair[0]["hash"], "run {i}: export holds a gap");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pump.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
