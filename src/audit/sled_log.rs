//! The durable audit log on sled, with group commit.
//!
//! Appends from any number of tasks go through a bounded queue to one writer
//! thread. The writer takes everything queued, seals it into the chain, writes
//! it as blocks (see [`super::blocks`]) around the `h`/`c` marks, runs the
//! jobs' state changes, and flushes once (sled: `pwrite`, then
//! `sync_file_range`; plus `fdatasync` by default, see docs/audit.md), then
//! wakes every waiting caller. With 64 concurrent writers one flush covers up
//! to 64 records, which is what makes tens of thousands of durable appends per
//! second possible on a 2-core machine.
//!
//! Because sled's flush covers every earlier write to the same database, state
//! written before an append (pending approvals, locks) is durable once the
//! append returns. State that must change in the same commit as a record (a
//! run lock released with its action's outcome) rides on the job as an
//! [`Effect`]; state written often that must be durable only by the time an
//! append returns (the store's dedup keys) rides on every commit through a
//! [`CommitHook`].
//!
//! Reading is [`Trail`]'s: it never writes, so `audit verify` and `audit
//! export` can run on a store without changing a byte of it.

use super::blocks::{
    block_key, index_entries, index_key, index_of, key_seq, parse_block, records_of, remove_past, sealed, BlockWriter,
    BLOCK_PREFIX, COMMITTED_KEY, FAILED_KEY, FORMAT, FORMAT_KEY, HEAD_KEY, INDEX_PREFIX, MAX_COMMIT, UNRECORDED_KEY,
};
use super::chain::{self, Head, Verifier};
use super::end::{self, End, Leftover};
use super::recent::{self, RecentOutcomes};
use super::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture, Effect, RecordKind};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::{mpsc, Arc};
use tokio::sync::broadcast;

/// How long the writer idles before it runs the commit hook on its own, so
/// hook writes queued without a following append still become durable.
const IDLE_COMMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Most appends waiting for the writer; past this, appending waits (the
/// writer applies backpressure instead of queueing without bound).
const QUEUE_LIMIT: usize = 2 * MAX_COMMIT;

/// Called by the writer thread at the start of every commit, before the
/// commit's own inserts and its flush: whatever the hook writes to the
/// database is durable when the commit's appends return. Returns whether it
/// wrote anything. An error fails the whole commit.
pub type CommitHook = Box<dyn Fn() -> Result<bool, sled::Error> + Send>;

use super::queue::{Job, Queue};

fn store_error(e: sled::Error) -> AuditError {
    AuditError::Store(e.to_string())
}

/// The trail as stored, for reading. Never writes.
#[derive(Clone)]
pub struct Trail {
    tree: sled::Tree,
}

/// The trail's `audit` tree in `db`, if it has one (looking does not create it).
pub fn existing_tree(db: &sled::Db) -> Result<Option<sled::Tree>, AuditError> {
    if !db.tree_names().iter().any(|name| name == b"audit") {
        return Ok(None);
    }
    db.open_tree("audit").map(Some).map_err(store_error)
}

impl Trail {
    pub fn new(tree: sled::Tree) -> Trail {
        Trail { tree }
    }

    /// Where the trail ends (read from the end only).
    pub fn end(&self) -> Result<End, AuditError> {
        end::classify(&self.tree)
    }

    /// Walks every stored record and seal (memory stays flat), then checks
    /// the trail's end. A commit cut short by a crash is not a failure; the
    /// summary's note says what will happen to it.
    pub fn verify(&self) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        self.verify_at(&Default::default()).0
    }

    /// [`Trail::verify`], also giving the hash of each record in `at` that
    /// the walk reached (to compare with signed checkpoints).
    pub fn verify_at(
        &self,
        at: &std::collections::BTreeSet<u64>,
    ) -> (Result<chain::VerifySummary, chain::VerifyFailure>, std::collections::BTreeMap<u64, String>) {
        let mut hashes = std::collections::BTreeMap::new();
        let result = self.walk(at, None, &mut hashes);
        (result, hashes)
    }

    /// [`Trail::verify_at`] for a trail its writer is appending to: only the
    /// records up to `acked` (the last commit the writer acknowledged) are
    /// walked, and they must end exactly there. A commit in flight is not
    /// looked at, so it cannot be mistaken for a damaged end.
    pub fn verify_acked(
        &self,
        at: &std::collections::BTreeSet<u64>,
        acked: &Head,
    ) -> (Result<chain::VerifySummary, chain::VerifyFailure>, std::collections::BTreeMap<u64, String>) {
        let mut hashes = std::collections::BTreeMap::new();
        let result = self.walk(at, Some(acked), &mut hashes);
        (result, hashes)
    }

    fn walk(
        &self,
        at: &std::collections::BTreeSet<u64>,
        acked: Option<&Head>,
        hashes: &mut std::collections::BTreeMap<u64, String>,
    ) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        let upto = acked.map(|h| h.seq).unwrap_or(u64::MAX);
        let mut verifier = Verifier::default();
        // A seal that disagrees with its block is reported only if no record
        // fails after it: a removed record is named better by the gap it leaves.
        let mut bad_seal: Option<chain::VerifyFailure> = None;
        let mut pending: Option<Digested> = None;
        let mut check = |block: Digested, last: bool, verifier: &mut Verifier| -> Result<(), chain::VerifyFailure> {
            if block.first + block.records.len() as u64 - 1 > upto {
                // Past the acknowledged head: the writer's commit in flight.
                for (i, digest) in block.records.iter().enumerate() {
                    let seq = block.first + i as u64;
                    if seq <= upto {
                        verifier.push_digest(seq, digest)?;
                        if at.contains(&seq) {
                            hashes.insert(seq, verifier.head().hash);
                        }
                    }
                }
                return Ok(());
            }
            for (i, digest) in block.records.iter().enumerate() {
                let seq = block.first + i as u64;
                verifier.push_digest(seq, digest)?;
                if at.contains(&seq) {
                    hashes.insert(seq, verifier.head().hash);
                }
            }
            let end = verifier.head();
            let problem = match block.seal {
                Some(Ok(seal)) if seal == end => None,
                Some(Ok(seal)) if last && seal.seq > end.seq => Some(format!(
                    "the chain ends at record {} but its last commit was sealed at record {} (records were removed from the end)",
                    end.seq, seal.seq
                )),
                Some(Ok(seal)) => Some(format!(
                    "the block at record {} is sealed for record {} but ends with record {}: records were removed or changed",
                    block.first, seal.seq, end.seq
                )),
                Some(Err(problem)) => Some(problem),
                None => None,
            };
            if let Some(problem) = problem {
                bad_seal.get_or_insert(chain::VerifyFailure { seq: end.seq, problem });
            }
            Ok(())
        };
        // The blocks are hashed and parsed on worker threads; links are
        // checked here, in order, one block behind (to know the last one).
        digest_blocks(&self.tree, &mut |block| {
            if let Some(previous) = pending.replace(block) {
                check(previous, false, &mut verifier)?;
            }
            Ok(())
        })?;
        if let Some(last) = pending.take() {
            check(last, true, &mut verifier)?;
        }
        if let Some(failure) = bad_seal {
            return Err(failure);
        }
        let chain_end = verifier.head();
        if let Some(acked) = acked {
            return if chain_end == *acked {
                Ok(chain::VerifySummary { records: acked.seq, head_hash: acked.hash.clone(), note: None })
            } else {
                Err(chain::VerifyFailure {
                    seq: chain_end.seq,
                    problem: format!(
                        "the chain ends at record {} but the writer acknowledged record {} ({}…)",
                        chain_end.seq,
                        acked.seq,
                        &acked.hash[..12.min(acked.hash.len())]
                    ),
                })
            };
        }
        match self.end().map_err(|e| chain::VerifyFailure { seq: 0, problem: e.to_string() })? {
            End::Clean { head } => Ok(chain::VerifySummary { records: head.seq, head_hash: head.hash, note: None }),
            End::CrashLeftover(leftover) => Ok(chain::VerifySummary {
                records: leftover.head.seq,
                head_hash: leftover.head.hash.clone(),
                note: Some(leftover.describe()),
            }),
            End::Broken { problem } => Err(chain::VerifyFailure { seq: chain_end.seq, problem }),
        }
    }

    /// The last committed record (what readers may show): the end's head, or
    /// for a damaged end every stored record.
    fn readable_end(&self) -> Result<u64, AuditError> {
        Ok(match self.end()? {
            End::Clean { head } => head.seq,
            End::CrashLeftover(Leftover { head, .. }) => head.seq,
            End::Broken { .. } => u64::MAX,
        })
    }

    /// Calls `visit` with every committed record matching `query` (limits
    /// are ignored), oldest first, one at a time; stops when it returns false.
    pub fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError> {
        self.each_upto(query, self.readable_end()?, visit)
    }

    /// Every committed record as stored (its hash, then its body: the exact
    /// bytes the chain covers), oldest first, until `visit` returns false.
    pub fn each_stored(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), AuditError> {
        let upto = self.readable_end()?;
        for item in self.blocks_from(1) {
            let (first, value) = item?;
            for (i, bytes) in records_of(&value).into_iter().enumerate() {
                let seq = first + i as u64;
                if seq > upto || !visit(seq, bytes) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// [`Trail::each`], up to record `upto`.
    pub fn each_upto(
        &self,
        query: &AuditQuery,
        upto: u64,
        visit: &mut dyn FnMut(AuditRecord) -> bool,
    ) -> Result<(), AuditError> {
        let lower = query.after_seq.map(|n| n + 1).unwrap_or(1);
        for item in self.blocks_from(lower) {
            let (first, value) = item?;
            for (i, bytes) in records_of(&value).into_iter().enumerate() {
                let seq = first + i as u64;
                if seq > upto {
                    return Ok(());
                }
                if seq < lower {
                    continue;
                }
                let record = decode(seq, bytes)?;
                if query.matches(&record) && !visit(record) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The block holding `seq` and every block after it, in order.
    fn blocks_from(&self, seq: u64) -> impl Iterator<Item = Result<(u64, sled::IVec), AuditError>> + '_ {
        let start = match self.tree.range(vec![BLOCK_PREFIX]..=block_key(seq).to_vec()).next_back() {
            Some(Ok((key, _))) => key.to_vec(),
            _ => vec![BLOCK_PREFIX],
        };
        self.tree.range(start..vec![BLOCK_PREFIX + 1]).map(|item| {
            let (key, value) = item.map_err(store_error)?;
            Ok((key_seq(&key), value))
        })
    }

    /// Reads matching records, oldest first (see [`AuditLog::read`]).
    pub fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        self.read_upto(query, u64::MAX)
    }

    /// [`Trail::read`] of records up to `upto` only (a running bot's reads
    /// stop at what the writer acknowledged: never a commit in flight).
    pub fn read_upto(&self, query: &AuditQuery, upto: u64) -> Result<Vec<AuditRecord>, AuditError> {
        let lower = query.after_seq.map(|n| n + 1).unwrap_or(1);
        let look_back = query.look_back.unwrap_or(usize::MAX);
        let mut examined = 0usize;
        let mut out = Vec::new();
        match (query.limit, &query.service) {
            // The newest matches for one service: walk the index backwards and
            // decode only the records it names, within the look-back window.
            (Some(limit), Some(service)) => {
                let outcomes_only = query.kind == Some(RecordKind::Outcome);
                let floor = match query.look_back {
                    Some(n) => self.newest_seq()?.saturating_sub(n as u64) + 1,
                    None => 1,
                };
                let lower = lower.max(floor);
                'blocks: for item in self.tree.scan_prefix([INDEX_PREFIX]).rev() {
                    let (key, listed) = item.map_err(store_error)?;
                    let first = key_seq(&key);
                    let wanted: Vec<u64> = index_entries(&listed)
                        .filter(|e| e.service == service.as_bytes() && (e.outcome || !outcomes_only))
                        .map(|e| e.offset)
                        .filter(|offset| first + offset >= lower && first + offset <= upto)
                        .collect();
                    if !wanted.is_empty() {
                        let Some(value) = self.tree.get(block_key(first)).map_err(store_error)? else { continue };
                        let stored = records_of(&value);
                        for offset in wanted.into_iter().rev() {
                            let seq = first + offset;
                            let Some(bytes) = stored.get(offset as usize) else {
                                return Err(AuditError::Corrupt {
                                    seq,
                                    problem: "the service index names a record its block does not hold".into(),
                                });
                            };
                            let record = decode(seq, bytes)?;
                            if query.matches(&record) {
                                out.push(record);
                                if out.len() >= limit {
                                    break 'blocks;
                                }
                            }
                        }
                    }
                    if first <= lower {
                        break;
                    }
                }
                out.reverse();
            }
            // The newest matches: walk backwards and stop early.
            (Some(limit), None) => {
                'blocks: for item in self.tree.scan_prefix([BLOCK_PREFIX]).rev() {
                    let (key, value) = item.map_err(store_error)?;
                    let first = key_seq(&key);
                    for (i, bytes) in records_of(&value).into_iter().enumerate().rev() {
                        let seq = first + i as u64;
                        if seq > upto {
                            continue;
                        }
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
            (None, _) => self.each_upto(query, upto, &mut |record| {
                out.push(record);
                true
            })?,
        }
        Ok(out)
    }
}

impl Trail {
    /// Whether the trail's layout version (`v`) is stored: every trail
    /// opsbot opened has it, before any other state is written.
    pub fn has_layout_version(&self) -> Result<bool, AuditError> {
        self.tree.contains_key(FORMAT_KEY).map_err(store_error)
    }

    /// The number of the newest stored record (0 for an empty trail).
    pub fn newest_seq(&self) -> Result<u64, AuditError> {
        match self.tree.scan_prefix([BLOCK_PREFIX]).next_back() {
            None => Ok(0),
            Some(item) => {
                let (key, value) = item.map_err(store_error)?;
                Ok(key_seq(&key) + records_of(&value).len() as u64 - 1)
            }
        }
    }
}

/// One block, digested: every record's hash checked and link read, and its seal.
struct Digested {
    first: u64,
    records: Vec<Result<chain::Digest, String>>,
    seal: Option<Result<Head, String>>,
}

/// Blocks per job handed to a digesting thread.
const DIGEST_BATCH: usize = 64;

/// Reads every block in order on one thread, digests them on the others
/// (SHA-256 and a JSON parse per record, the bulk of verification), and
/// hands them to `visit` in order. Queues are bounded, so memory stays flat;
/// an error from `visit` stops everything.
fn digest_blocks(
    tree: &sled::Tree,
    visit: &mut dyn FnMut(Digested) -> Result<(), chain::VerifyFailure>,
) -> Result<(), chain::VerifyFailure> {
    use std::sync::mpsc::sync_channel;
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    type Batch = Result<Vec<(u64, sled::IVec)>, String>;
    std::thread::scope(|scope| {
        let (jobs, job_queue) = sync_channel::<(usize, Batch)>(workers * 2);
        let job_queue = Arc::new(Mutex::new(job_queue));
        let (done, finished) = sync_channel::<(usize, Result<Vec<Digested>, String>)>(workers * 2);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(DIGEST_BATCH);
            let mut n = 0;
            for item in tree.scan_prefix([BLOCK_PREFIX]) {
                match item {
                    Ok((key, value)) => batch.push((key_seq(&key), value)),
                    Err(e) => {
                        let _ = jobs.send((n, Err(e.to_string())));
                        return;
                    }
                }
                if batch.len() == DIGEST_BATCH {
                    if jobs.send((n, Ok(std::mem::take(&mut batch)))).is_err() {
                        return;
                    }
                    n += 1;
                }
            }
            if !batch.is_empty() {
                let _ = jobs.send((n, Ok(batch)));
            }
        });
        for _ in 0..workers {
            let (job_queue, done) = (job_queue.clone(), done.clone());
            scope.spawn(move || loop {
                let job = job_queue.lock().expect("job queue").recv();
                let Ok((n, batch)) = job else { return };
                let digested = batch.map(|blocks| {
                    blocks
                        .iter()
                        .map(|(first, value)| {
                            let block = parse_block(value);
                            Digested {
                                first: *first,
                                records: block.records.iter().map(|r| chain::digest(r)).collect(),
                                seal: block.seal,
                            }
                        })
                        .collect()
                });
                if done.send((n, digested)).is_err() {
                    return;
                }
            });
        }
        drop(done);
        // Batches come back in any order; hand them on in order.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        let result = (|| {
            for (n, digested) in finished.iter() {
                waiting.insert(n, digested);
                while let Some(digested) = waiting.remove(&next) {
                    let blocks = digested.map_err(|problem| chain::VerifyFailure { seq: 0, problem })?;
                    for block in blocks {
                        visit(block)?;
                    }
                    next += 1;
                }
            }
            Ok(())
        })();
        // Dropping the receiver stops the workers, which stops the reader.
        drop(finished);
        result
    })
}

fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    chain::open(bytes).map_err(|problem| AuditError::Corrupt { seq, problem })
}

/// The audit log over one sled tree.
pub struct SledAuditLog {
    trail: Trail,
    /// The last record the writer acknowledged (durable): what readers of a
    /// running bot's trail go up to, and what checkpoints sign.
    acked: Arc<Mutex<Head>>,
    /// Why the store stopped taking records, if a commit failed.
    failed: Arc<Mutex<Option<String>>>,
    queue: Queue,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    committed: broadcast::Sender<AuditRecord>,
    recent: Arc<RecentOutcomes>,
    recovered: Option<Leftover>,
    /// Outcomes in a failed commit that the open dropped (see
    /// [`SledAuditLog::dropped_outcomes`]).
    dropped_outcomes: Vec<AuditEntry>,
}

impl SledAuditLog {
    /// Opens the log in `db`'s `audit` tree and starts its writer thread.
    pub fn open(db: &sled::Db) -> Result<SledAuditLog, AuditError> {
        SledAuditLog::open_with_hook(db, Box::new(|| Ok(false)), Durable { db: db.clone(), sync: None })
    }

    /// [`SledAuditLog::open`], with `hook` run by the writer in every commit,
    /// each made durable by `durable` (which must flush `db`).
    ///
    /// A commit cut short by a crash is dropped (see [`super::end`]); a trail
    /// whose end no crash explains is refused with [`AuditError::Damaged`].
    pub fn open_with_hook(db: &sled::Db, hook: CommitHook, durable: Durable) -> Result<SledAuditLog, AuditError> {
        let tree = db.open_tree("audit").map_err(store_error)?;
        let mut dropped_outcomes = Vec::new();
        let (head, recovered) = match end::classify(&tree)? {
            End::Clean { head } => {
                // Index values a commit cut short wrote before its blocks.
                remove_past(&tree, &head).map_err(store_error)?;
                (head, None)
            }
            End::CrashLeftover(leftover) => {
                if leftover.failed {
                    // A failed commit's state changes (a run lock's release)
                    // may have reached the disk with it: an outcome in it
                    // stood for an action that ended, so what it said must
                    // not vanish with it. It is kept under `u`, written
                    // before anything is dropped (sled recovers a prefix of
                    // its log), until the bot has recorded it again.
                    let trail = Trail::new(tree.clone());
                    let past = AuditQuery {
                        after_seq: Some(leftover.head.seq),
                        kind: Some(RecordKind::Outcome),
                        ..Default::default()
                    };
                    let mut saved = Vec::new();
                    let read = trail.each_upto(&past, u64::MAX, &mut |record| {
                        saved.push(record.entry);
                        true
                    });
                    if let Err(e) = read {
                        tracing::error!(error = %e, "the failed commit's records could not be read; outcomes in it are lost");
                    }
                    if !saved.is_empty() {
                        let mut unrecorded = read_unrecorded(&tree)?
                            .unwrap_or(Unrecorded { head: leftover.head.clone(), entries: Vec::new() });
                        unrecorded.entries.extend(saved);
                        let bytes = serde_json::to_vec(&unrecorded).expect("entries serialise");
                        tree.insert(UNRECORDED_KEY, bytes).map_err(store_error)?;
                    }
                }
                let dropped = remove_past(&tree, &leftover.head).map_err(store_error)?;
                let mark = serde_json::to_vec(&leftover.head).expect("head serialises");
                tree.insert(HEAD_KEY, mark.clone()).map_err(store_error)?;
                tree.insert(COMMITTED_KEY, mark).map_err(store_error)?;
                tree.remove(FAILED_KEY).map_err(store_error)?;
                durable.flush().map_err(store_error)?;
                tracing::warn!(blocks = dropped, "{}", leftover.describe());
                (leftover.head.clone(), Some(leftover))
            }
            End::Broken { problem } => return Err(AuditError::Damaged(problem)),
        };
        // Saved outcomes not yet in the trail: those whose request has an
        // outcome after the save were recorded again (a crash may have come
        // before `u` was removed).
        if let Some(unrecorded) = read_unrecorded(&tree)? {
            let mut recorded = std::collections::HashSet::new();
            let after = AuditQuery {
                after_seq: Some(unrecorded.head.seq),
                kind: Some(RecordKind::Outcome),
                ..Default::default()
            };
            Trail::new(tree.clone()).each_upto(&after, head.seq, &mut |record| {
                recorded.extend(record.entry.request_id);
                true
            })?;
            dropped_outcomes = unrecorded
                .entries
                .into_iter()
                .filter(|e| e.request_id.as_ref().is_none_or(|id| !recorded.contains(id)))
                .collect();
            if dropped_outcomes.is_empty() {
                tree.remove(UNRECORDED_KEY).map_err(store_error)?;
            }
        }
        if head.seq == 0 && tree.get(FORMAT_KEY).map_err(store_error)?.is_none() {
            tree.insert(FORMAT_KEY, FORMAT).map_err(store_error)?;
        }
        let (committed, _) = broadcast::channel(1024);
        let (queue, rx) = Queue::new(QUEUE_LIMIT);
        let writer_tree = tree.clone();
        let notify = committed.clone();
        let recent = Arc::new(RecentOutcomes::default());
        let acked = Arc::new(Mutex::new(head.clone()));
        let failed = Arc::new(Mutex::new(None));
        let told = Told { notify, recent: recent.clone(), acked: acked.clone(), failed: failed.clone() };
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_writer(durable, writer_tree, head, rx, hook, told))
            .map_err(|e| AuditError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(SledAuditLog {
            trail: Trail::new(tree),
            acked,
            failed,
            queue,
            writer: Mutex::new(Some(writer)),
            committed,
            recent,
            recovered,
            dropped_outcomes,
        })
    }

    /// The outcomes of a commit that failed, which an open dropped with it
    /// and which are not in the trail yet. Their actions had ended (the
    /// channel was told "unknown"), and the commit's run-lock releases may
    /// have landed: the bot records each again, so no started action is
    /// left without an outcome, then calls
    /// [`SledAuditLog::dropped_outcomes_recorded`]. Until then they are
    /// kept in the store, across restarts.
    pub fn dropped_outcomes(&self) -> &[AuditEntry] {
        &self.dropped_outcomes
    }

    /// The dropped outcomes are in the trail now. (Should a crash come
    /// before this reaches the disk, the next open sees they were recorded.)
    pub fn dropped_outcomes_recorded(&self) -> Result<(), AuditError> {
        self.trail.tree.remove(UNRECORDED_KEY).map_err(store_error)?;
        Ok(())
    }

    /// What opening the store had to fix after a crash, if anything.
    pub fn recovered(&self) -> Option<&Leftover> {
        self.recovered.as_ref()
    }

    /// The read side.
    pub fn trail(&self) -> &Trail {
        &self.trail
    }

    /// Stops taking appends and waits for everything queued to be committed.
    pub fn close(&self) {
        self.queue.close();
        if let Some(handle) = self.writer.lock().expect("audit lock").take() {
            let _ = handle.join();
        }
    }

    /// Verifies the whole chain (see [`Trail::verify`]).
    pub fn verify(&self) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        self.trail.verify()
    }

    /// Why the store takes no more records (a commit failed), if it does not.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("failed lock").clone()
    }

    /// The last record the writer acknowledged.
    pub fn acked(&self) -> Head {
        self.acked.lock().expect("acked lock").clone()
    }

    /// Verifies the chain up to what the writer acknowledged, while it runs
    /// (see [`Trail::verify_acked`]).
    pub fn verify_live(
        &self,
        at: &std::collections::BTreeSet<u64>,
    ) -> (Result<chain::VerifySummary, chain::VerifyFailure>, std::collections::BTreeMap<u64, String>) {
        self.trail.verify_acked(at, &self.acked())
    }
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

impl AuditLog for SledAuditLog {
    fn commit(
        &self,
        entries: Vec<AuditEntry>,
        then: Option<Effect>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        Box::pin(self.queue.submit(entries, then))
    }

    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        // Up to what the writer acknowledged: never a commit in flight (so
        // /status and /audit never show what a crash could still take back).
        self.trail.read_upto(query, self.acked().seq)
    }

    fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError> {
        // Up to what the writer acknowledged: never a commit in flight.
        self.trail.each_upto(query, self.acked().seq, visit)
    }

    fn head(&self) -> Result<Head, AuditError> {
        Ok(self.acked())
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

    fn failed(&self) -> Option<String> {
        SledAuditLog::failed(self)
    }
}

/// Outcomes of failed commits that opens dropped, not yet recorded again
/// (the `u` key).
#[derive(Serialize, Deserialize)]
pub struct Unrecorded {
    /// The trail's head when the first of them was saved: outcomes recorded
    /// again come after it.
    head: Head,
    entries: Vec<AuditEntry>,
}

fn read_unrecorded(tree: &sled::Tree) -> Result<Option<Unrecorded>, AuditError> {
    match tree.get(UNRECORDED_KEY).map_err(store_error)? {
        None => Ok(None),
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(unrecorded) => Ok(Some(unrecorded)),
            Err(e) => {
                // The chain is intact without them; say so loudly and go on.
                tracing::error!(error = %e, "the saved outcomes of a failed commit (the `u` key) are unreadable; they cannot be recorded again");
                Ok(None)
            }
        },
    }
}

mod repair;
mod writer;
pub use repair::{repair, Repaired};
use writer::{run_writer, Told};

#[cfg(test)]
mod tests;
