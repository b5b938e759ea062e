//! The durable audit log on sled, with group commit.
//!
//! Appends from any number of tasks go through a channel to one writer thread.
//! The writer takes everything queued, seals it into the chain, writes one sled
//! batch (records plus the new head, atomically) and fsyncs once, then wakes
//! every waiting caller. With 64 concurrent writers one fsync covers up to 64
//! records, which is what makes tens of thousands of durable appends per second
//! possible on a 2-core machine.
//!
//! Layout in the `audit` tree: records are stored in blocks, `b` + the first
//! record's sequence number → that record and the ones after it, one
//! `hash + JSON body` line each. A commit writes as many blocks as it needs
//! (each up to 32 KiB), so sled handles a few keys per commit rather than
//! several per record; per-record sled writes were most of the cost of an
//! append. `h` holds the chain's head; `s`/`o` keys index blocks by service.
//! Verification reads the lines in order and checks every record's hash,
//! position, and link to the one before, exactly as for one key per record.
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

/// Blocks of records: `b` + the first record's sequence number (big-endian).
const BLOCK_PREFIX: u8 = b'b';
/// Records stored one per key by development builds before blocks; still read.
const LEGACY_PREFIX: u8 = b'r';
const HEAD_KEY: &[u8] = b"h";
/// Most records one commit takes; bounds latency of the first caller in a burst.
const MAX_BATCH: usize = 4096;
/// A block is closed once it holds this many bytes, so a value stays well
/// below the size at which sled moves it to a separate blob file.
const BLOCK_BYTES: usize = 32 * 1024;

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
/// lookups): `s`, service, 0, block for every block holding records about a
/// service, and the same under `o` for blocks holding its outcomes. The value
/// lists the sequence numbers of those records (8 bytes each, big-endian), so
/// `/status` and `/audit <service>` decode only the records they show.
const SERVICE_INDEX: u8 = b's';
const OUTCOME_INDEX: u8 = b'o';

fn index_prefix(kind: u8, service: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(service.len() + 10);
    key.push(kind);
    key.extend_from_slice(service.as_bytes());
    key.push(0);
    key
}

fn index_key(kind: u8, service: &str, block: u64) -> Vec<u8> {
    let mut key = index_prefix(kind, service);
    key.extend_from_slice(&block.to_be_bytes());
    key
}

fn block_key(first_seq: u64) -> [u8; 9] {
    let mut key = [BLOCK_PREFIX; 9];
    key[1..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

fn key_seq(key: &[u8]) -> u64 {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// The stored records of one block: each is `hash + body`, ended by a newline
/// (compact JSON never contains a raw newline). A legacy value is one record
/// without the newline.
fn split_block(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    value.split(|&b| b == b'\n')
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

/// Every stored block as (first sequence number, value), in order: legacy
/// one-record keys first (they all predate blocks), then blocks.
fn blocks(tree: &sled::Tree) -> impl Iterator<Item = Result<(u64, sled::IVec), AuditError>> + '_ {
    tree.scan_prefix([LEGACY_PREFIX]).chain(tree.scan_prefix([BLOCK_PREFIX])).map(|item| {
        let (key, value) = item.map_err(|e| AuditError::Store(e.to_string()))?;
        Ok((key_seq(&key), value))
    })
}

/// Every stored record as (sequence number, stored bytes), in order. The
/// number is the record's position as stored (block start + place in the
/// block), which verification compares with the number inside the record.
pub fn stored_records(tree: &sled::Tree) -> impl Iterator<Item = Result<(u64, Vec<u8>), AuditError>> + '_ {
    blocks(tree).flat_map(|block| -> Vec<Result<(u64, Vec<u8>), AuditError>> {
        match block {
            Ok((first, value)) => {
                split_block(&value).enumerate().map(|(i, r)| Ok((first + i as u64, r.to_vec()))).collect()
            }
            Err(e) => vec![Err(e)],
        }
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

    /// The block that starts at `first` (a legacy record, for old stores).
    fn block_at(&self, first: u64) -> Result<Option<sled::IVec>, sled::Error> {
        let mut key = block_key(first);
        if let Some(value) = self.tree.get(key)? {
            return Ok(Some(value));
        }
        key[0] = LEGACY_PREFIX;
        self.tree.get(key)
    }

    /// The block holding `seq` and every block after it, in order.
    fn blocks_from(
        &self,
        seq: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, sled::IVec), AuditError>> + '_, sled::Error> {
        let start = |prefix: u8| -> Result<Vec<u8>, sled::Error> {
            let mut at = block_key(seq);
            at[0] = prefix;
            Ok(match self.tree.range(vec![prefix]..=at.to_vec()).next_back().transpose()? {
                Some((key, _)) => key.to_vec(),
                None => vec![prefix],
            })
        };
        let legacy = self.tree.range(start(LEGACY_PREFIX)?..vec![LEGACY_PREFIX + 1]);
        let blocks = self.tree.range(start(BLOCK_PREFIX)?..vec![BLOCK_PREFIX + 1]);
        Ok(legacy.chain(blocks).map(|item| {
            let (key, value) = item.map_err(|e| AuditError::Store(e.to_string()))?;
            Ok((key_seq(&key), value))
        }))
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

/// Removes what a crash in the middle of a commit can leave: blocks past the
/// head, and index entries for them. Returns how many blocks went.
fn drop_uncommitted(tree: &sled::Tree, head: &Head) -> Result<usize, sled::Error> {
    let past_head: Vec<sled::IVec> =
        tree.range(block_key(head.seq + 1).to_vec()..vec![BLOCK_PREFIX + 1]).keys().collect::<Result<_, _>>()?;
    if past_head.is_empty() {
        return Ok(0);
    }
    for key in &past_head {
        tree.remove(key)?;
    }
    for kind in [SERVICE_INDEX, OUTCOME_INDEX] {
        for key in tree.scan_prefix([kind]).keys() {
            let key = key?;
            let block = key.len().checked_sub(8).map(|at| u64::from_be_bytes(key[at..].try_into().expect("8 bytes")));
            if block.is_some_and(|b| b > head.seq) {
                tree.remove(key)?;
            }
        }
    }
    tree.flush()?;
    Ok(past_head.len())
}

/// Builds the blocks of one commit.
struct BlockWriter {
    /// Keys and values to write, in order.
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    first: u64,
    bytes: Vec<u8>,
    /// Per service: sequence numbers of its records, and of its outcomes.
    services: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl BlockWriter {
    fn new(first: u64) -> BlockWriter {
        BlockWriter { writes: Vec::new(), first, bytes: Vec::new(), services: Vec::new() }
    }

    fn push(&mut self, record: &AuditRecord, stored: &[u8]) {
        if !self.bytes.is_empty() && self.bytes.len() + stored.len() >= BLOCK_BYTES {
            self.close_block(record.seq);
        }
        self.bytes.extend_from_slice(stored);
        self.bytes.push(b'\n');
        if let Some(service) = &record.entry.service {
            let slot = match self.services.iter().position(|(s, _, _)| s == service) {
                Some(i) => i,
                None => {
                    self.services.push((service.clone(), Vec::new(), Vec::new()));
                    self.services.len() - 1
                }
            };
            let (_, all, outcomes) = &mut self.services[slot];
            all.extend_from_slice(&record.seq.to_be_bytes());
            if record.entry.kind == super::RecordKind::Outcome {
                outcomes.extend_from_slice(&record.seq.to_be_bytes());
            }
        }
    }

    /// Ends the current block; the next one starts at `next`.
    fn close_block(&mut self, next: u64) {
        if self.bytes.is_empty() {
            return;
        }
        self.writes.push((block_key(self.first).to_vec(), std::mem::take(&mut self.bytes)));
        for (service, all, outcomes) in self.services.drain(..) {
            self.writes.push((index_key(SERVICE_INDEX, &service, self.first), all));
            if !outcomes.is_empty() {
                self.writes.push((index_key(OUTCOME_INDEX, &service, self.first), outcomes));
            }
        }
        self.first = next;
    }

    fn finish(mut self, head: &Head) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.close_block(head.seq + 1);
        self.writes.push((HEAD_KEY.to_vec(), serde_json::to_vec(head).expect("head serialises")));
        self.writes
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
        let written = blocks.finish(&head).into_iter().try_for_each(|(key, value)| tree.insert(key, value).map(|_| ()));
        let written = written.and_then(|_| db.flush().map(|_| ()));
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
                // the last committed head, without whatever part of the commit
                // was written before the error.
                head = start_head;
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
                let kind = if query.kind == Some(super::RecordKind::Outcome) { OUTCOME_INDEX } else { SERVICE_INDEX };
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
                    let Some(value) = self.block_at(first).map_err(store_err)? else { continue };
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
                let newest_first =
                    self.tree.scan_prefix([BLOCK_PREFIX]).rev().chain(self.tree.scan_prefix([LEGACY_PREFIX]).rev());
                'blocks: for item in newest_first {
                    let (key, value) = item.map_err(store_err)?;
                    let first = key_seq(&key);
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
                for block in self.blocks_from(lower).map_err(store_err)? {
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

    fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.committed.subscribe()
    }
}

#[cfg(test)]
mod tests {
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
