//! The durable audit log on sled, with group commit.
//!
//! Appends from any number of tasks go through a channel to one writer thread.
//! The writer takes everything queued, seals it into the chain, writes it as
//! blocks (see [`super::blocks`]) followed by the new head, and flushes once
//! (sled: `pwrite`, then `sync_file_range` waiting for the data to be written;
//! plus `fdatasync` if configured, see the README), then wakes every waiting
//! caller. With 64 concurrent writers one flush covers up to 64 records, which
//! is what makes tens of thousands of durable appends per second possible on a
//! 2-core machine.
//!
//! Because sled's flush covers every earlier write to the same database, state
//! written before an append (pending approvals, locks) is durable once the
//! append returns. State that is written often and must be durable only by
//! the time an append returns (the store's dedup keys) can instead ride on the
//! writer's commit through a [`CommitHook`]: one write per commit, not one per
//! caller.

use super::blocks::{
    block_at, blocks_from, drop_uncommitted, index_prefix, newest_first, split_block, stored_records, BlockWriter,
    HEAD_KEY, OUTCOME_INDEX, SERVICE_INDEX,
};
use super::chain::{self, Head, GENESIS};
use super::recent::{self, RecentOutcomes};
use super::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture, RecordKind};
use chrono::Utc;
use std::sync::Mutex;
use std::sync::{mpsc, Arc};
use tokio::sync::{broadcast, oneshot};

/// Most records one commit takes; bounds latency of the first caller in a burst.
const MAX_BATCH: usize = 4096;
type Reply = oneshot::Sender<Result<Vec<AuditRecord>, AuditError>>;
/// How long the writer idles before it runs the commit hook on its own, so
/// hook writes queued without a following append still become durable.
const IDLE_COMMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Called by the writer thread at the start of every commit, before the
/// commit's own inserts and its flush: whatever the hook writes to the
/// database is durable when the commit's appends return. Returns whether it
/// wrote anything. An error fails the whole commit.
pub type CommitHook = Box<dyn Fn() -> Result<bool, sled::Error> + Send>;

struct Job {
    entries: Vec<AuditEntry>,
    reply: Reply,
}

/// The audit log over one sled tree.
pub struct SledAuditLog {
    tree: sled::Tree,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    committed: broadcast::Sender<AuditRecord>,
    recent: Arc<RecentOutcomes>,
}

/// Reads the head the writer last committed.
pub fn read_head(tree: &sled::Tree) -> Result<Option<Head>, AuditError> {
    match tree.get(HEAD_KEY).map_err(|e| AuditError::Store(e.to_string()))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Corrupt { seq: 0, problem: format!("the chain head is unreadable: {e}") }),
    }
}

impl SledAuditLog {
    /// Opens the log in `db`'s `audit` tree and starts its writer thread.
    pub fn open(db: &sled::Db) -> Result<SledAuditLog, AuditError> {
        SledAuditLog::open_with_hook(db, Box::new(|| Ok(false)), Durable { db: db.clone(), sync: None })
    }

    /// [`SledAuditLog::open`], with `hook` run by the writer in every commit,
    /// each made durable by `durable` (which must flush `db`).
    pub fn open_with_hook(db: &sled::Db, hook: CommitHook, durable: Durable) -> Result<SledAuditLog, AuditError> {
        let tree = db.open_tree("audit").map_err(|e| AuditError::Store(e.to_string()))?;
        let head = match read_head(&tree)? {
            Some(head) => head,
            None => Head { seq: 0, hash: GENESIS.to_string() },
        };
        let dropped = drop_uncommitted(&tree, &head).map_err(|e| AuditError::Store(e.to_string()))?;
        if dropped > 0 {
            tracing::warn!(
                blocks = dropped,
                head = head.seq,
                "removed audit blocks past the chain's head: a commit was cut off by a crash before it was acknowledged"
            );
        }
        let (committed, _) = broadcast::channel(1024);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_tree = tree.clone();
        let notify = committed.clone();
        let recent = Arc::new(RecentOutcomes::default());
        let writer_recent = recent.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_writer(durable, writer_tree, head, rx, notify, hook, writer_recent))
            .map_err(|e| AuditError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(SledAuditLog { tree, jobs: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), committed, recent })
    }

    /// Stops taking appends and waits for everything queued to be committed.
    pub fn close(&self) {
        drop(self.jobs.lock().expect("audit lock").take());
        if let Some(handle) = self.writer.lock().expect("audit lock").take() {
            let _ = handle.join();
        }
    }

    /// Verifies the whole chain against the stored head.
    pub fn verify(&self) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        verify_tree(&self.tree)
    }
}

/// Verifies the records in `tree`.
pub fn verify_tree(tree: &sled::Tree) -> Result<chain::VerifySummary, chain::VerifyFailure> {
    let head = read_head(tree).map_err(|e| chain::VerifyFailure { seq: 0, problem: e.to_string() })?;
    let mut failure = None;
    let records = stored_records(tree).map_while(|r| match r {
        Ok(pair) => Some(pair),
        Err(e) => {
            failure = Some(e);
            None
        }
    });
    let result = chain::verify(records, head);
    if let Some(e) = failure {
        return Err(chain::VerifyFailure { seq: 0, problem: e.to_string() });
    }
    result
}

impl Drop for SledAuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The database, and how a flush of it is made durable: the audit writer's
/// after every commit, and the store's at shutdown.
#[derive(Clone)]
pub struct Durable {
    pub db: sled::Db,
    /// sled's log file, to `fdatasync` after each flush (`durability = "fdatasync"`).
    pub sync: Option<Arc<std::fs::File>>,
}

impl Durable {
    /// sled's flush, then `fdatasync` if configured. Blocks.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        match &self.sync {
            Some(file) => file.sync_data().map_err(sled::Error::Io),
            None => Ok(()),
        }
    }
}

fn run_writer(
    db: Durable,
    tree: sled::Tree,
    mut head: Head,
    rx: mpsc::Receiver<Job>,
    notify: broadcast::Sender<AuditRecord>,
    hook: CommitHook,
    recent: Arc<RecentOutcomes>,
) {
    let mut last_ts = Utc::now();
    loop {
        let first = match rx.recv_timeout(IDLE_COMMIT) {
            Ok(job) => job,
            Err(idle) => {
                // No appends: make the hook's queued writes durable anyway.
                match hook().and_then(|wrote| if wrote { db.flush() } else { Ok(()) }) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "audit writer: idle commit of queued state failed"),
                }
                if idle == mpsc::RecvTimeoutError::Disconnected {
                    break;
                }
                continue;
            }
        };
        let mut jobs = vec![first];
        let mut queued = jobs[0].entries.len();
        while queued < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    queued += job.entries.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let start_head = head.clone();
        let mut blocks = BlockWriter::new(head.seq + 1);
        let mut sealed: Vec<Vec<AuditRecord>> = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            let mut records = Vec::with_capacity(job.entries.len());
            for entry in job.entries.drain(..) {
                // Timestamps never go backwards along the chain, even if the wall clock does.
                last_ts = Utc::now().max(last_ts);
                let seq = head.seq + 1;
                let (record, stored) = chain::seal(seq, last_ts, entry, &head.hash);
                blocks.push(&record, &stored);
                head = Head { seq, hash: record.hash.clone() };
                records.push(record);
            }
            sealed.push(records);
        }
        // Plain inserts in order — blocks, their index entries, then the head —
        // and one flush. sled's `apply_batch` would make them atomic, but it
        // seals and writes sled's IO buffer twice per call, each waking all of
        // sled's IO threads; that cost a third of the CPU of a busy bot. sled
        // recovers a prefix of its log after a crash, so a crash mid-commit
        // leaves at worst blocks past the head, which `open` removes (nobody
        // was told about them).
        let written = hook().and_then(|_| {
            blocks.finish(&head).into_iter().try_for_each(|(key, value)| tree.insert(key, value).map(|_| ()))
        });
        let written = written.and_then(|_| db.flush());
        match written {
            Ok(()) => {
                recent.note(sealed.iter().flatten());
                for (job, records) in jobs.into_iter().zip(sealed) {
                    // Followers (audit tail) are rare; clone only when one listens.
                    if notify.receiver_count() > 0 {
                        for record in &records {
                            let _ = notify.send(record.clone());
                        }
                    }
                    let _ = job.reply.send(Ok(records));
                }
            }
            Err(e) => {
                // Nothing in this batch is acknowledged; the chain continues from
                // the last committed head, without whatever part of the commit
                // was written before the error.
                head = start_head;
                recent.forget();
                tracing::error!(error = %e, "audit commit failed");
                let rolled_back = tree
                    .insert(HEAD_KEY, serde_json::to_vec(&head).expect("head serialises"))
                    .and_then(|_| drop_uncommitted(&tree, &head));
                if let Err(e) = rolled_back {
                    tracing::error!(error = %e, "cannot remove a failed commit's blocks; `audit verify` will report them");
                }
                for job in jobs {
                    let _ = job.reply.send(Err(AuditError::Store(e.to_string())));
                }
            }
        }
    }
}

impl AuditLog for SledAuditLog {
    fn append_all(&self, entries: Vec<AuditEntry>) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        let (reply, done) = oneshot::channel();
        let sent = match self.jobs.lock().expect("audit lock").as_ref() {
            Some(jobs) => jobs.send(Job { entries, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(AuditError::Closed);
            }
            done.await.map_err(|_| AuditError::Closed)?
        })
    }

    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let decode =
            |seq: u64, value: &[u8]| chain::open(value).map_err(|problem| AuditError::Corrupt { seq, problem });
        let store_err = |e: sled::Error| AuditError::Store(e.to_string());
        let lower = query.after_seq.map(|n| n + 1).unwrap_or(1);
        let look_back = query.look_back.unwrap_or(usize::MAX);
        let mut examined = 0usize;
        let mut out = Vec::new();
        match (query.limit, &query.service) {
            // The newest matches for one service: walk its index backwards and
            // decode only the records it names.
            (Some(limit), Some(service)) => {
                let kind = if query.kind == Some(RecordKind::Outcome) { OUTCOME_INDEX } else { SERVICE_INDEX };
                let prefix = index_prefix(kind, service);
                'blocks: for item in self.tree.scan_prefix(&prefix).rev() {
                    let (key, listed) = item.map_err(store_err)?;
                    let first = key[prefix.len()..].try_into().map(u64::from_be_bytes).unwrap_or(0);
                    // A legacy index entry names one record and has no list.
                    let seqs: Vec<u64> = if listed.is_empty() {
                        vec![first]
                    } else {
                        listed.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect()
                    };
                    let Some(value) = block_at(&self.tree, first).map_err(store_err)? else { continue };
                    let stored: Vec<&[u8]> = split_block(&value).collect();
                    for &seq in seqs.iter().rev() {
                        if out.len() >= limit || examined >= look_back || seq < lower {
                            break 'blocks;
                        }
                        examined += 1;
                        let Some(bytes) = seq.checked_sub(first).and_then(|i| stored.get(i as usize)) else {
                            return Err(AuditError::Corrupt {
                                seq,
                                problem: "the service index names a record its block does not hold".into(),
                            });
                        };
                        let record = decode(seq, bytes)?;
                        if query.matches(&record) {
                            out.push(record);
                        }
                    }
                }
                out.reverse();
            }
            // The newest matches: walk backwards and stop early.
            (Some(limit), None) => {
                'blocks: for block in newest_first(&self.tree) {
                    let (first, value) = block?;
                    let stored: Vec<&[u8]> = split_block(&value).collect();
                    for (i, bytes) in stored.iter().enumerate().rev() {
                        let seq = first + i as u64;
                        if out.len() >= limit || examined >= look_back || seq < lower {
                            break 'blocks;
                        }
                        examined += 1;
                        let record = decode(seq, bytes)?;
                        if query.matches(&record) {
                            out.push(record);
                        }
                    }
                }
                out.reverse();
            }
            (None, _) => {
                for block in blocks_from(&self.tree, lower) {
                    let (first, value) = block?;
                    for (i, bytes) in split_block(&value).enumerate() {
                        let seq = first + i as u64;
                        if seq < lower {
                            continue;
                        }
                        let record = decode(seq, bytes)?;
                        if query.matches(&record) {
                            out.push(record);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// From memory, after the first question per service (see [`recent`]).
    fn newest_outcomes(&self, service: &str, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
        if n > recent::KEEP {
            return self.read(&super::newest_outcomes_query(service, n));
        }
        self.recent.newest(service, n, || self.read(&super::newest_outcomes_query(service, recent::KEEP)))
    }

    fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.committed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{block_key, index_key, BLOCK_BYTES, BLOCK_PREFIX, LEGACY_PREFIX};
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

    #[tokio::test]
    async fn status_outcomes_come_from_memory_and_match_the_stored_index() {
        let db = sled::Config::new().temporary(true).open().unwrap();
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
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = SledAuditLog::open(&db).unwrap();
        let audit: &dyn AuditLog = &log;
        // One commit of 150 records, then 50 single appends: both block shapes.
        audit.append_all((1..=150).map(entry).collect()).await.unwrap();
        for i in 151..=200 {
            audit.append(entry(i)).await.unwrap();
        }
        let blocks = log.tree.scan_prefix([BLOCK_PREFIX]).count();
        assert!(blocks > 50 + 150 * 1024 / BLOCK_BYTES && blocks < 100, "{blocks} blocks");
        assert_eq!(log.verify().unwrap().records, 200);

        let all = audit.read(&AuditQuery::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
        let service = |s: &str| Some(s.to_string());
        let queries = [
            AuditQuery { service: service("api"), limit: Some(7), ..Default::default() },
            AuditQuery {
                service: service("web"),
                kind: Some(RecordKind::Outcome),
                limit: Some(4),
                ..Default::default()
            },
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
        }
        // look_back bounds how many of the service's newest records are examined.
        let bounded = AuditQuery {
            service: service("api"),
            kind: Some(RecordKind::Request),
            limit: Some(50),
            look_back: Some(10),
            ..Default::default()
        };
        let newest_api: Vec<u64> = brute(&all, &AuditQuery { service: service("api"), ..Default::default() });
        let window = &newest_api[newest_api.len() - 10..];
        let expected: Vec<u64> =
            window.iter().copied().filter(|s| all[*s as usize - 1].entry.kind == RecordKind::Request).collect();
        let got: Vec<u64> = audit.read(&bounded).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_store_with_the_legacy_one_record_per_key_layout_is_still_read_and_extended() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        {
            // What development builds wrote: `r` + seq → record, `s` + service index, head.
            let tree = db.open_tree("audit").unwrap();
            let mut prev = GENESIS.to_string();
            for seq in 1..=5u64 {
                let (record, stored) = chain::seal(seq, Utc::now(), entry(seq as usize), &prev);
                let mut key = vec![LEGACY_PREFIX];
                key.extend_from_slice(&seq.to_be_bytes());
                tree.insert(key, stored).unwrap();
                if let Some(service) = &record.entry.service {
                    tree.insert(index_key(SERVICE_INDEX, service, seq), &[]).unwrap();
                }
                prev = record.hash;
            }
            tree.insert(HEAD_KEY, serde_json::to_vec(&Head { seq: 5, hash: prev }).unwrap()).unwrap();
        }
        let log = SledAuditLog::open(&db).unwrap();
        let audit: &dyn AuditLog = &log;
        for i in 6..=12 {
            audit.append(entry(i)).await.unwrap();
        }
        assert_eq!(log.verify().unwrap().records, 12);
        let all = audit.read(&AuditQuery::default()).unwrap();
        assert_eq!(all.len(), 12);
        for query in [
            AuditQuery { service: Some("api".into()), limit: Some(10), ..Default::default() },
            AuditQuery { limit: Some(8), ..Default::default() },
            AuditQuery { after_seq: Some(3), ..Default::default() },
            AuditQuery { after_seq: Some(7), ..Default::default() },
        ] {
            let got: Vec<u64> = audit.read(&query).unwrap().iter().map(|r| r.seq).collect();
            assert_eq!(got, brute(&all, &query), "{query:?}");
        }
    }

    #[tokio::test]
    async fn a_commit_cut_off_by_a_crash_is_removed_on_open_and_the_chain_goes_on() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = SledAuditLog::open(&db).unwrap();
        let audit: &dyn AuditLog = &log;
        for i in 1..=4 {
            audit.append(entry(i)).await.unwrap();
        }
        let head = read_head(&log.tree).unwrap().unwrap();
        log.close();
        drop(log);
        // What a crash after the block and index inserts but before the head
        // insert leaves: a block of records 5–6 and its index entry.
        let tree = db.open_tree("audit").unwrap();
        let (five, stored5) = chain::seal(5, Utc::now(), entry(5), &head.hash);
        let (_, stored6) = chain::seal(6, Utc::now(), entry(6), &five.hash);
        tree.insert(block_key(5), [stored5, b"\n".to_vec(), stored6, b"\n".to_vec()].concat()).unwrap();
        tree.insert(index_key(SERVICE_INDEX, "api", 5), 5u64.to_be_bytes().to_vec()).unwrap();
        assert!(verify_tree(&tree).is_err(), "the leftover is visible before reopening");

        let log = SledAuditLog::open(&db).unwrap();
        assert_eq!(log.verify().unwrap().records, 4);
        assert!(log.tree.get(index_key(SERVICE_INDEX, "api", 5)).unwrap().is_none());
        let audit: &dyn AuditLog = &log;
        let next = audit.append(entry(7)).await.unwrap();
        assert_eq!((next.seq, next.prev.as_str()), (5, head.hash.as_str()));
        assert_eq!(log.verify().unwrap().records, 5);
    }
}
