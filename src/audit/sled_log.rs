//! The durable audit log on sled, with group commit.
//!
//! Appends from any number of tasks go through a channel to one writer thread.
//! The writer takes everything queued, seals it into the chain, writes one sled
//! batch (records plus the new head, atomically) and fsyncs once, then wakes
//! every waiting caller. With 64 concurrent writers one fsync covers up to 64
//! records, which is what makes tens of thousands of durable appends per second
//! possible on a 2-core machine.
//!
//! Because sled's flush covers every earlier write to the same database, state
//! written before an append (pending approvals, locks) is durable once the
//! append returns.

use super::chain::{self, Head, GENESIS};
use super::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture};
use chrono::Utc;
use std::sync::mpsc;
use std::sync::Mutex;
use tokio::sync::{broadcast, oneshot};

const RECORD_PREFIX: u8 = b'r';
const HEAD_KEY: &[u8] = b"h";
/// Most records one commit takes; bounds latency of the first caller in a burst.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<AuditRecord>, AuditError>>;

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
}

/// Index keys, next to the chain but not part of it (they only speed up
/// lookups): `s`, service, 0, seq for every record about a service, and the
/// same under `o` for its outcomes, so `/status` and `/audit <service>` read a
/// handful of keys instead of scanning the trail.
const SERVICE_INDEX: u8 = b's';
const OUTCOME_INDEX: u8 = b'o';

fn index_prefix(kind: u8, service: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(service.len() + 10);
    key.push(kind);
    key.extend_from_slice(service.as_bytes());
    key.push(0);
    key
}

fn index_key(kind: u8, service: &str, seq: u64) -> Vec<u8> {
    let mut key = index_prefix(kind, service);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
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

/// Every stored record as (sequence number, stored bytes), in order.
pub fn stored_records(tree: &sled::Tree) -> impl Iterator<Item = Result<(u64, Vec<u8>), AuditError>> + '_ {
    tree.scan_prefix([RECORD_PREFIX]).map(|item| {
        let (key, value) = item.map_err(|e| AuditError::Store(e.to_string()))?;
        let seq = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        Ok((seq, value.to_vec()))
    })
}

impl SledAuditLog {
    /// Opens the log in `db`'s `audit` tree and starts its writer thread.
    pub fn open(db: &sled::Db) -> Result<SledAuditLog, AuditError> {
        let tree = db.open_tree("audit").map_err(|e| AuditError::Store(e.to_string()))?;
        let head = match read_head(&tree)? {
            Some(head) => head,
            None => Head { seq: 0, hash: GENESIS.to_string() },
        };
        let (committed, _) = broadcast::channel(1024);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_tree = tree.clone();
        let writer_db = db.clone();
        let notify = committed.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_writer(writer_db, writer_tree, head, rx, notify))
            .map_err(|e| AuditError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(SledAuditLog { tree, jobs: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), committed })
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

fn run_writer(
    db: sled::Db,
    tree: sled::Tree,
    mut head: Head,
    rx: mpsc::Receiver<Job>,
    notify: broadcast::Sender<AuditRecord>,
) {
    let mut last_ts = Utc::now();
    while let Ok(first) = rx.recv() {
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
        let mut batch = sled::Batch::default();
        let mut sealed: Vec<Vec<AuditRecord>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let mut records = Vec::with_capacity(job.entries.len());
            for entry in &job.entries {
                // Timestamps never go backwards along the chain, even if the wall clock does.
                last_ts = Utc::now().max(last_ts);
                let seq = head.seq + 1;
                let (record, stored) = chain::seal(seq, last_ts, entry.clone(), &head.hash);
                batch.insert(&record_key(seq), stored);
                if let Some(service) = &record.entry.service {
                    batch.insert(index_key(SERVICE_INDEX, service, seq), &[]);
                    if record.entry.kind == super::RecordKind::Outcome {
                        batch.insert(index_key(OUTCOME_INDEX, service, seq), &[]);
                    }
                }
                head = Head { seq, hash: record.hash.clone() };
                records.push(record);
            }
            sealed.push(records);
        }
        batch.insert(HEAD_KEY, serde_json::to_vec(&head).expect("head serialises"));
        let written = tree.apply_batch(batch).and_then(|_| db.flush().map(|_| ()));
        match written {
            Ok(()) => {
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
                // the last committed head.
                head = start_head;
                tracing::error!(error = %e, "audit commit failed");
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
        let mut out = Vec::new();
        match (query.limit, &query.service) {
            // The newest matches for one service: walk its index backwards.
            (Some(limit), Some(service)) => {
                let kind = if query.kind == Some(super::RecordKind::Outcome) { OUTCOME_INDEX } else { SERVICE_INDEX };
                let prefix = index_prefix(kind, service);
                for item in self.tree.scan_prefix(&prefix).rev().take(query.look_back.unwrap_or(usize::MAX)) {
                    if out.len() >= limit {
                        break;
                    }
                    let (key, _) = item.map_err(store_err)?;
                    let seq = key[prefix.len()..].try_into().map(u64::from_be_bytes).unwrap_or(0);
                    if let Some(value) = self.tree.get(record_key(seq)).map_err(store_err)? {
                        let record = decode(seq, &value)?;
                        if query.matches(&record) {
                            out.push(record);
                        }
                    }
                }
                out.reverse();
            }
            // The newest matches: walk backwards and stop early.
            (Some(limit), None) => {
                let start = record_key(query.after_seq.map(|n| n + 1).unwrap_or(1));
                let range = self.tree.range(start.to_vec()..vec![RECORD_PREFIX + 1]);
                for item in range.rev().take(query.look_back.unwrap_or(usize::MAX)) {
                    if out.len() >= limit {
                        break;
                    }
                    let (key, value) = item.map_err(store_err)?;
                    let seq = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                    let record = decode(seq, &value)?;
                    if query.matches(&record) {
                        out.push(record);
                    }
                }
                out.reverse();
            }
            (None, _) => {
                let start = record_key(query.after_seq.map(|n| n + 1).unwrap_or(1));
                for item in self.tree.range(start.to_vec()..vec![RECORD_PREFIX + 1]) {
                    let (key, value) = item.map_err(store_err)?;
                    let seq = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                    let record = decode(seq, &value)?;
                    if query.matches(&record) {
                        out.push(record);
                    }
                }
            }
        }
        Ok(out)
    }

    fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.committed.subscribe()
    }
}
