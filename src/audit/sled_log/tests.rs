use super::super::blocks::{block_key, BLOCK_BYTES};
use super::*;
use crate::audit::RecordKind;

fn entry(i: usize) -> AuditEntry {
    let services = ["api", "web", "jobs"];
    let kind = if i.is_multiple_of(5) { RecordKind::Outcome } else { RecordKind::Request };
    AuditEntry {
        service: (!i.is_multiple_of(7)).then(|| services[i % 3].to_string()),
        // ~1 KiB per record, so one commit spans several blocks.
        detail: format!("record {i} {}", "x".repeat(1000)),
        ..AuditEntry::new(kind)
    }
}

fn brute(all: &[AuditRecord], query: &AuditQuery) -> Vec<u64> {
    let mut out: Vec<u64> = all.iter().filter(|r| query.matches(r)).map(|r| r.seq).collect();
    if let Some(limit) = query.limit {
        out.drain(..out.len().saturating_sub(limit));
    }
    out
}

fn temporary() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

/// Every key and value of the audit tree, to show that something did not write.
fn snapshot(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

/// A log with `commits` commits of `per_commit` records each (a commit of
/// 40 ~1 KiB records spans two blocks).
async fn filled(db: &sled::Db, commits: usize, per_commit: usize) -> SledAuditLog {
    let log = SledAuditLog::open(db).unwrap();
    for c in 0..commits {
        (&log as &dyn AuditLog)
            .append_all((0..per_commit).map(|i| entry(c * per_commit + i + 1)).collect())
            .await
            .unwrap();
    }
    log
}

fn head_of(tree: &sled::Tree, key: &[u8]) -> Option<Head> {
    tree.get(key).unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

#[tokio::test]
async fn status_outcomes_come_from_memory_and_match_the_stored_index() {
    let db = temporary();
    let log = SledAuditLog::open(&db).unwrap();
    let audit: &dyn AuditLog = &log;
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    let check = || {
        for service in ["api", "web", "jobs"] {
            for n in 1..=recent::KEEP + 2 {
                let query = crate::audit::newest_outcomes_query(service, n);
                let stored = seqs(audit.read(&query).unwrap());
                assert_eq!(seqs(audit.newest_outcomes(service, n).unwrap()), stored, "{query:?}");
            }
        }
    };
    // "api" is asked about before it has any outcome, "web" and "jobs"
    // only after some: both ways of filling must keep up with commits.
    assert!(audit.newest_outcomes("api", 3).unwrap().is_empty());
    audit.append_all((1..=40).map(entry).collect()).await.unwrap();
    check();
    for i in 41..=80 {
        audit.append(entry(i)).await.unwrap();
        check();
    }
    audit.append_all((81..=150).map(entry).collect()).await.unwrap();
    check();
    assert_eq!(log.recent.0.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn blocks_hold_many_records_and_every_query_matches_a_full_scan() {
    let db = temporary();
    let log = SledAuditLog::open(&db).unwrap();
    let audit: &dyn AuditLog = &log;
    // One commit of 150 records, then 50 single appends: both block shapes.
    audit.append_all((1..=150).map(entry).collect()).await.unwrap();
    for i in 151..=200 {
        audit.append(entry(i)).await.unwrap();
    }
    let tree = db.open_tree("audit").unwrap();
    let blocks = tree.scan_prefix([BLOCK_PREFIX]).count();
    assert!(blocks > 50 + 150 * 1024 / BLOCK_BYTES && blocks < 100, "{blocks} blocks");
    assert_eq!(log.verify().unwrap().records, 200);

    let all = audit.read(&AuditQuery::default()).unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
    let service = |s: &str| Some(s.to_string());
    let queries = [
        AuditQuery { service: service("api"), limit: Some(7), ..Default::default() },
        AuditQuery { service: service("web"), kind: Some(RecordKind::Outcome), limit: Some(4), ..Default::default() },
        AuditQuery { service: service("jobs"), limit: Some(500), ..Default::default() },
        AuditQuery { service: service("api"), limit: Some(500), after_seq: Some(120), ..Default::default() },
        AuditQuery { limit: Some(9), ..Default::default() },
        AuditQuery { limit: Some(9), kind: Some(RecordKind::Outcome), ..Default::default() },
        AuditQuery { after_seq: Some(37), ..Default::default() },
        AuditQuery { after_seq: Some(37), service: service("web"), ..Default::default() },
        AuditQuery { after_seq: Some(200), ..Default::default() },
    ];
    for query in &queries {
        let got: Vec<u64> = audit.read(query).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, brute(&all, query), "{query:?}");
        let mut streamed = Vec::new();
        audit
            .each(query, &mut |r| {
                streamed.push(r.seq);
                true
            })
            .unwrap();
        let unlimited = AuditQuery { limit: None, look_back: None, ..query.clone() };
        assert_eq!(streamed, brute(&all, &unlimited), "each {query:?}");
    }
    // look_back bounds how far back in the trail a limited question looks,
    // in the sled log as in the in-memory one.
    let memory = crate::audit::MemoryAuditLog::default();
    (&memory as &dyn AuditLog).append_all((1..=200).map(entry).collect()).await.unwrap();
    for look_back in [1, 10, 37, 150, 500] {
        for service_query in [service("api"), service("web"), None] {
            for kind in [None, Some(RecordKind::Request), Some(RecordKind::Outcome)] {
                let bounded = AuditQuery {
                    service: service_query.clone(),
                    kind,
                    limit: Some(50),
                    look_back: Some(look_back),
                    ..Default::default()
                };
                let window = &all[all.len().saturating_sub(look_back)..];
                let expected = brute(window, &bounded);
                let got: Vec<u64> = audit.read(&bounded).unwrap().iter().map(|r| r.seq).collect();
                assert_eq!(got, expected, "{bounded:?}");
                let in_memory: Vec<u64> = memory.read(&bounded).unwrap().iter().map(|r| r.seq).collect();
                assert_eq!(in_memory, expected, "memory {bounded:?}");
            }
        }
    }
}

/// The writes of one more commit of `records` records after the trail in
/// `tree`, as the writer would make them (it is the writer's own code).
fn next_commit(tree: &sled::Tree, first_entry: usize, records: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut head = head_of(tree, COMMITTED_KEY).unwrap_or_else(Head::genesis);
    let mut blocks = BlockWriter::new(head.seq + 1);
    for i in 0..records {
        let seq = head.seq + 1;
        let (record, stored) = chain::seal(seq, Utc::now(), entry(first_entry + i), &head.hash);
        blocks.push(&record, &stored);
        head = Head { seq, hash: record.hash };
    }
    blocks.finish(head).writes().collect()
}

#[tokio::test]
async fn every_prefix_of_a_commit_that_a_crash_can_leave_opens_and_loses_nothing_acknowledged() {
    // A commit of 70 ~1 KiB records spans three blocks: its writes are two
    // unsealed blocks, index entries, h, the sealed block and c.
    for per_commit in [1, 70] {
        let db = temporary();
        let log = filled(&db, 3, per_commit).await;
        log.close();
        drop(log);
        let tree = db.open_tree("audit").unwrap();
        let acknowledged = head_of(&tree, COMMITTED_KEY).unwrap();
        let writes = next_commit(&tree, 1000, per_commit);
        let before = snapshot(&tree);
        // The commit's state change (a run lock released with the outcome)
        // is written after `c`: the last step of the commit.
        let state = db.open_tree("state").unwrap();
        for cut in 0..=writes.len() + 1 {
            // Back to the acknowledged state, then the first `cut` writes.
            tree.clear().unwrap();
            for (k, v) in &before {
                tree.insert(k, v.clone()).unwrap();
            }
            for (k, v) in &writes[..cut.min(writes.len())] {
                tree.insert(k, v.clone()).unwrap();
            }
            state.insert("lock", "r-1").unwrap();
            if cut > writes.len() {
                state.remove("lock").unwrap();
            }
            let end = end::classify(&tree).unwrap();
            assert!(!matches!(end, End::Broken { .. }), "{per_commit}/{cut}: a crash state was called broken: {end:?}");
            let verify = Trail::new(tree.clone()).verify().unwrap_or_else(|e| panic!("{per_commit}/{cut}: {e}"));
            assert!(verify.records >= acknowledged.seq);
            let reopened = SledAuditLog::open(&db).unwrap();
            let summary = reopened.verify().unwrap();
            assert!(
                summary.records == acknowledged.seq || summary.records == acknowledged.seq + per_commit as u64,
                "{per_commit}/{cut}: {summary:?}"
            );
            assert_eq!(end::classify(&tree).unwrap(), End::Clean { head: head_of(&tree, COMMITTED_KEY).unwrap() });
            // A lock is never released without its outcome on the record
            // (the other way round — outcome kept, lock held — recovery
            // releases the lock without calling the action interrupted).
            if state.get("lock").unwrap().is_none() {
                assert_eq!(summary.records, acknowledged.seq + per_commit as u64, "{per_commit}/{cut}");
            }
            // No index entry points past the head, and service reads work.
            for key in tree.scan_prefix([INDEX_PREFIX]).keys() {
                assert!(key_seq(&key.unwrap()) <= summary.records, "{per_commit}/{cut}: an index entry past the head");
            }
            let query = AuditQuery { service: Some("api".into()), limit: Some(5), ..Default::default() };
            let shown = (&reopened as &dyn AuditLog).read(&query).unwrap_or_else(|e| panic!("{per_commit}/{cut}: {e}"));
            assert!(shown.iter().all(|r| r.seq <= summary.records && r.entry.service.as_deref() == Some("api")));
            // The chain goes on from what the store opened at.
            let next = (&reopened as &dyn AuditLog).append(entry(9999)).await.unwrap();
            assert_eq!(next.seq, summary.records + 1);
            assert_eq!(reopened.verify().unwrap().records, summary.records + 1);
            reopened.close();
        }
    }
}

/// Opens a log over a copy of `original`'s trail with `tamper` applied and
/// returns what classify, verify and open said, and whether the stored
/// trail changed.
fn tampered_outcome(before: &[(Vec<u8>, Vec<u8>)], tamper: impl FnOnce(&sled::Tree)) -> (End, bool, bool) {
    let db = temporary();
    let tree = db.open_tree("audit").unwrap();
    for (k, v) in before {
        tree.insert(k, v.clone()).unwrap();
    }
    tamper(&tree);
    let tampered = snapshot(&tree);
    let end = end::classify(&tree).unwrap();
    let verified = Trail::new(tree.clone()).verify().is_ok();
    let opened = SledAuditLog::open(&db);
    let refused = matches!(opened, Err(AuditError::Damaged(_)));
    drop(opened);
    if refused {
        assert_eq!(snapshot(&tree), tampered, "refusing to open changed nothing");
    }
    (end, verified, refused)
}

#[tokio::test]
async fn a_head_deleted_or_moved_back_is_refused_never_taken_as_a_crash() {
    let db = temporary();
    let log = filled(&db, 6, 1).await;
    (&log as &dyn AuditLog).append_all((7..=80).map(entry).collect()).await.unwrap();
    log.close();
    drop(log);
    let tree = db.open_tree("audit").unwrap();
    let before = snapshot(&tree);
    let head = head_of(&tree, HEAD_KEY).unwrap();
    let record_hash = |seq: u64| {
        let log = Trail::new(tree.clone());
        log.read(&AuditQuery { after_seq: Some(seq - 1), limit: None, ..Default::default() }).unwrap()[0].hash.clone()
    };
    type Tamper = Box<dyn FnOnce(&sled::Tree)>;
    let mut cases: Vec<(String, Tamper)> = vec![
        (
            "h deleted".into(),
            Box::new(|t: &sled::Tree| {
                t.remove(HEAD_KEY).unwrap();
            }),
        ),
        (
            "h and c deleted".into(),
            Box::new(|t: &sled::Tree| {
                t.remove(HEAD_KEY).unwrap();
                t.remove(COMMITTED_KEY).unwrap();
            }),
        ),
        (
            "the last sealed block deleted".into(),
            Box::new(move |t: &sled::Tree| {
                let (key, _) = t.scan_prefix([BLOCK_PREFIX]).next_back().unwrap().unwrap();
                t.remove(key).unwrap();
            }),
        ),
        (
            "the last record line removed".into(),
            Box::new(move |t: &sled::Tree| {
                let (key, value) = t.scan_prefix([BLOCK_PREFIX]).next_back().unwrap().unwrap();
                let block = parse_block(&value);
                let mut lines: Vec<Vec<u8>> = block.records.iter().map(|r| r.to_vec()).collect();
                lines.pop();
                let mut value: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
                value.extend_from_slice(format!("={} {}\n", head.seq, head.hash).as_bytes());
                t.insert(key, value).unwrap();
            }),
        ),
        (
            "the seal line removed".into(),
            Box::new(move |t: &sled::Tree| {
                let (key, value) = t.scan_prefix([BLOCK_PREFIX]).next_back().unwrap().unwrap();
                let records: Vec<u8> =
                    parse_block(&value).records.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
                t.insert(key, records).unwrap();
            }),
        ),
    ];
    for back in [1u64, 2, 5, 74, 79] {
        let at = head.seq - back;
        let mark = serde_json::to_vec(&Head { seq: at, hash: record_hash(at) }).unwrap();
        let both = mark.clone();
        cases.push((
            format!("h moved back {back}"),
            Box::new(move |t: &sled::Tree| {
                t.insert(HEAD_KEY, mark).unwrap();
            }),
        ));
        cases.push((
            format!("h and c moved back {back}"),
            Box::new(move |t: &sled::Tree| {
                t.insert(HEAD_KEY, both.clone()).unwrap();
                t.insert(COMMITTED_KEY, both).unwrap();
            }),
        ));
    }
    for (name, tamper) in cases {
        let (end, verified, refused) = tampered_outcome(&before, tamper);
        assert!(matches!(end, End::Broken { .. }), "{name}: {end:?}");
        assert!(!verified, "{name}: verify passed");
        assert!(refused, "{name}: the store opened for writing");
    }
    // Moving `c` alone back by one commit is what a crash after the sealed
    // block leaves: harmless, it comes back up; by two it is not.
    let previous = Head { seq: 6, hash: record_hash(6) };
    let one = serde_json::to_vec(&previous).unwrap();
    let (end, verified, refused) = tampered_outcome(&before, |t| {
        t.insert(COMMITTED_KEY, one).unwrap();
    });
    assert!(matches!(end, End::CrashLeftover(Leftover { reset_committed: true, .. })) && verified && !refused);
    let two = serde_json::to_vec(&Head { seq: 5, hash: record_hash(5) }).unwrap();
    let (end, verified, refused) = tampered_outcome(&before, |t| {
        t.insert(COMMITTED_KEY, two).unwrap();
    });
    assert!(matches!(end, End::Broken { .. }) && !verified && refused);
}

#[tokio::test]
async fn repair_keeps_every_record_and_refuses_a_broken_chain() {
    let db = temporary();
    let log = filled(&db, 5, 30).await;
    log.close();
    drop(log);
    let tree = db.open_tree("audit").unwrap();
    let all = Trail::new(tree.clone()).read(&AuditQuery::default()).unwrap();
    assert_eq!(all.len(), 150);
    // The head moved back to record 3 and the committed mark deleted.
    let third = serde_json::to_vec(&Head { seq: 3, hash: all[2].hash.clone() }).unwrap();
    tree.insert(HEAD_KEY, third).unwrap();
    tree.remove(COMMITTED_KEY).unwrap();
    // And the service index lost an entry.
    let index_key = tree.scan_prefix([INDEX_PREFIX]).keys().next().unwrap().unwrap();
    tree.remove(index_key).unwrap();
    assert!(matches!(SledAuditLog::open(&db), Err(AuditError::Damaged(_))));
    let repaired = repair(&db, true).unwrap();
    assert!(repaired.problem.is_some());
    assert_eq!((repaired.records, repaired.was_head.as_ref().map(|h| h.seq)), (150, Some(3)));
    let log = SledAuditLog::open(&db).unwrap();
    assert_eq!(log.verify().unwrap().records, 150);
    assert_eq!(log.read(&AuditQuery::default()).unwrap(), all, "every record kept, unchanged");
    for service in ["api", "web", "jobs"] {
        let query = AuditQuery { service: Some(service.into()), limit: Some(1000), ..Default::default() };
        assert_eq!(log.read(&query).unwrap().len(), brute(&all, &query).len(), "the index was rebuilt");
    }
    log.close();
    drop(log);
    assert_eq!(repair(&db, true).unwrap().problem, None, "a sound trail needs no repair");

    // A changed byte in a record cannot be repaired; nothing is written.
    let (key, value) = tree.scan_prefix([BLOCK_PREFIX]).next().unwrap().unwrap();
    let mut value = value.to_vec();
    value[100] ^= 1;
    tree.insert(key, value).unwrap();
    tree.remove(HEAD_KEY).unwrap();
    let before = snapshot(&tree);
    match repair(&db, true) {
        Err(AuditError::Damaged(problem)) => assert!(problem.contains("keep this data directory"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&tree), before);
}

#[tokio::test]
async fn a_trail_stripped_of_seals_and_layout_version_is_refused_until_repaired() {
    let db = temporary();
    let tree = db.open_tree("audit").unwrap();
    // Records that verify, but seals, `c` and the layout version removed.
    let mut prev = chain::GENESIS.to_string();
    let mut value = Vec::new();
    for seq in 1..=5u64 {
        let (record, stored) = chain::seal(seq, Utc::now(), entry(seq as usize), &prev);
        value.extend_from_slice(&stored);
        value.push(b'\n');
        prev = record.hash;
    }
    tree.insert(block_key(1), value).unwrap();
    tree.insert(HEAD_KEY, serde_json::to_vec(&Head { seq: 5, hash: prev }).unwrap()).unwrap();
    match SledAuditLog::open(&db) {
        Err(AuditError::Damaged(problem)) => assert!(problem.contains("audit repair"), "{problem}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(repair(&db, true).unwrap().records, 5);
    let log = SledAuditLog::open(&db).unwrap();
    (&log as &dyn AuditLog).append(entry(6)).await.unwrap();
    assert_eq!(log.verify().unwrap().records, 6);
}

#[tokio::test]
async fn an_effect_lands_in_the_same_commit_and_a_failing_one_stops_the_store() {
    let db = temporary();
    let log = SledAuditLog::open(&db).unwrap();
    let state = db.open_tree("state").unwrap();
    state.insert("lock", "r-1").unwrap();
    let audit: &dyn AuditLog = &log;
    let tree = state.clone();
    let release: Effect = Box::new(move || tree.remove("lock").map(|_| ()).map_err(|e| e.to_string()));
    audit.commit(vec![entry(1)], Some(release)).await.unwrap();
    assert!(state.get("lock").unwrap().is_none());
    // A commit that fails takes the store out of service: nothing is
    // acknowledged, nothing more is taken, and it says why.
    let failing: Effect = Box::new(|| Err("no".into()));
    // An outcome, then a request, in the failed commit.
    let outcome = AuditEntry { request_id: Some("r-9".into()), ..entry(5) };
    assert!(audit.commit(vec![outcome.clone(), entry(2)], Some(failing)).await.is_err());
    assert!(log.failed().is_some_and(|why| why.contains("no")));
    assert!(audit.append(entry(3)).await.is_err(), "a failed store takes no more records");
    assert_eq!(log.acked().seq, 1, "nothing past the last good commit was acknowledged");
    // The failed commit's writes reach the disk anyway (sled's flusher, the
    // shutdown flush): the next open drops them, since nobody was told they
    // were kept, and says so.
    log.close();
    drop(log);
    db.flush().unwrap();
    let tree = db.open_tree("audit").unwrap();
    let end = end::classify(&tree).unwrap();
    assert!(matches!(&end, End::CrashLeftover(Leftover { failed: true, unsealed: Some((2, 3)), .. })), "{end:?}");
    let dry = repair(&db, false).unwrap();
    assert!(dry.leftover.as_deref().is_some_and(|l| l.contains("commit that failed")), "{dry:?}");
    let reopened = SledAuditLog::open(&db).unwrap();
    assert!(reopened.recovered().is_some_and(|l| l.failed));
    // The outcome it held is handed back, to be recorded again as unknown
    // (its action ended; its run lock's release may have landed).
    let dropped: Vec<_> = reopened.dropped_outcomes().iter().map(|e| e.detail.clone()).collect();
    assert_eq!(dropped, [entry(5).detail]);
    // Kept in the store until recorded again: a crash (or another writing
    // open) before that loses nothing.
    reopened.close();
    drop(reopened);
    let reopened = SledAuditLog::open(&db).unwrap();
    assert!(reopened.recovered().is_none(), "the drop itself is done");
    assert_eq!(reopened.dropped_outcomes().len(), 1, "still to be recorded");
    // Recorded again, and a crash before `u` is removed: the next open sees
    // the request has its outcome and hands back nothing.
    let again = AuditEntry { detail: "unknown: recorded again".into(), ..outcome };
    let recorded = (&reopened as &dyn AuditLog).append(again).await.unwrap();
    assert_eq!(recorded.seq, 2);
    reopened.close();
    drop(reopened);
    let reopened = SledAuditLog::open(&db).unwrap();
    assert!(reopened.dropped_outcomes().is_empty(), "recorded once, not again");
    assert!(tree.get(UNRECORDED_KEY).unwrap().is_none(), "and the saved copy is gone");
    assert_eq!(reopened.verify().unwrap().records, 2);
    let next = (&reopened as &dyn AuditLog).append(entry(4)).await.unwrap();
    assert_eq!(next.seq, 3, "the chain goes on from the last acknowledged record");
    reopened.close();
}

/// A forged failed-commit mark can drop no more than one commit, and must
/// name the end of a sealed commit.
#[tokio::test]
async fn a_failed_commit_mark_drops_at_most_one_commit() {
    let db = temporary();
    let log = filled(&db, 3, 70).await;
    log.close();
    drop(log);
    let tree = db.open_tree("audit").unwrap();
    let before = snapshot(&tree);
    let at = |seq: u64| {
        let mut hash = String::new();
        let after = AuditQuery { after_seq: Some(seq - 1), ..Default::default() };
        Trail::new(tree.clone())
            .each(&after, &mut |r| {
                hash = r.hash;
                false
            })
            .unwrap();
        serde_json::to_vec(&Head { seq, hash }).unwrap()
    };
    for (mark, why) in
        [(at(70), "two commits follow it"), (at(69), "not the end of a commit"), (b"{}".to_vec(), "unreadable")]
    {
        tree.insert(FAILED_KEY, mark).unwrap();
        let end = end::classify(&tree).unwrap();
        assert!(matches!(end, End::Broken { .. }), "{why}: {end:?}");
        assert!(matches!(SledAuditLog::open(&db), Err(AuditError::Damaged(_))), "{why}");
        // Repair removes a mark no failure explains, keeping every record.
        let repaired = repair(&db, true).unwrap();
        assert!(repaired.problem.is_some() && repaired.records == 210, "{why}: {repaired:?}");
        assert!(tree.get(FAILED_KEY).unwrap().is_none(), "{why}");
        let reopened = SledAuditLog::open(&db).unwrap();
        assert_eq!(reopened.verify().unwrap().records, 210, "{why}");
        reopened.close();
        drop(reopened);
        assert_eq!(snapshot(&tree), before, "{why}: the store is as it was before the mark");
    }
    tree.insert(FAILED_KEY, at(140)).unwrap();
    assert!(matches!(end::classify(&tree).unwrap(), End::CrashLeftover(Leftover { failed: true, .. })));
    tree.remove(FAILED_KEY).unwrap();
    assert_eq!(snapshot(&tree), before);
}

/// A crash leftover is the open's to drop: repair never seals it into the
/// trail (those records were never acknowledged).
#[tokio::test]
async fn repair_leaves_a_crash_leftover_to_the_open() {
    let db = temporary();
    let log = filled(&db, 3, 70).await;
    log.close();
    drop(log);
    let tree = db.open_tree("audit").unwrap();
    let acknowledged = head_of(&tree, COMMITTED_KEY).unwrap();
    let writes = next_commit(&tree, 1000, 70);
    tree.insert(&writes[0].0, writes[0].1.clone()).unwrap();
    let before = snapshot(&tree);
    let repaired = repair(&db, true).unwrap();
    assert!(repaired.problem.is_none() && repaired.leftover.is_some(), "{repaired:?}");
    assert_eq!(snapshot(&tree), before, "repair changed nothing");
    let reopened = SledAuditLog::open(&db).unwrap();
    assert_eq!(reopened.verify().unwrap().records, acknowledged.seq);
    reopened.close();
}

/// The in-memory log keeps the same contract as the sled one: appends,
/// bounded and streamed queries, commits with state changes.
#[tokio::test]
async fn the_memory_and_sled_logs_keep_one_contract() {
    let db = temporary();
    let sled_log = SledAuditLog::open(&db).unwrap();
    let memory = crate::audit::MemoryAuditLog::default();
    crate::audit::contract::reads_like_the_reference("sled", &sled_log, &memory).await;
    // A commit that fails stops both: nothing of it is acknowledged and
    // nothing more is taken.
    crate::audit::contract::a_failed_commit_stops_the_log("sled", &sled_log).await;
    crate::audit::contract::a_failed_commit_stops_the_log("memory", &memory).await;
}

/// One commit never holds more than MAX_COMMIT records: that bound is what
/// lets opening a store tell a commit cut short from records removed.
#[tokio::test]
async fn an_append_larger_than_one_commit_is_refused_whole() {
    let db = temporary();
    let log = SledAuditLog::open(&db).unwrap();
    let audit: &dyn AuditLog = &log;
    let too_many = (0..=MAX_COMMIT).map(|i| AuditEntry { detail: format!("{i}"), ..entry(1) }).collect();
    let refused = audit.append_all(too_many).await.unwrap_err();
    assert!(refused.to_string().contains("at most 4096 go in one commit"), "{refused}");
    assert_eq!(log.acked().seq, 0, "nothing of it was written");
    let fits = (0..MAX_COMMIT).map(|i| AuditEntry { detail: format!("{i}"), ..entry(1) }).collect();
    assert_eq!(audit.append_all(fits).await.unwrap().len(), MAX_COMMIT);
    assert_eq!(log.verify().unwrap().records, MAX_COMMIT as u64);
}
