//! Where the stored trail ends, and whether a crash explains it.
//!
//! Read from the end only (the blocks back to the last sealed commit, and
//! `h`/`c`), so opening a store costs the same for ten records or ten
//! million. The rules follow from the write order of a commit (see
//! [`super::blocks`]): unsealed blocks, index entries, `h`, the sealed block,
//! `c`. A crash leaves a prefix of that, so exactly these states are a crash:
//!
//! 1. `h` = `c` = the last seal, followed by unsealed blocks that continue the
//!    chain (the commit's first blocks): they are dropped.
//! 2. `h` past the last seal, `c` at it, and whatever unsealed blocks follow
//!    ending before `h`: the commit's sealed block never landed; dropped, and
//!    `h` goes back to the seal.
//! 3. `h` at the last seal, `c` one commit behind (or absent before the
//!    first commit's `c`): only `c` is brought up to the seal.
//!
//! Nothing the writer acknowledged is ever dropped: an acknowledgement waits
//! for the flush after `c`. Any other state is tampering or corruption, and
//! the store is not opened for writing until `opsbot audit repair` (which
//! keeps every record) has been run.

use super::blocks::{parse_block, BLOCK_PREFIX, COMMITTED_KEY, FAILED_KEY, FORMAT_KEY, HEAD_KEY, MAX_COMMIT};
use super::chain::{Head, Verifier};
use super::AuditError;

/// What the end of a stored trail says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The last commit is complete: `h`, the seal and `c` agree.
    Clean { head: Head },
    /// A commit was cut short by a crash; opening for writing fixes it.
    CrashLeftover(Leftover),
    /// Not a state a crash can leave.
    Broken { problem: String },
}

/// What a crash left, and what opening the store for writing does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The last sealed (acknowledgeable) record: the chain continues from it.
    pub head: Head,
    /// Unsealed records past it, never acknowledged: dropped.
    pub unsealed: Option<(u64, u64)>,
    /// `h` stood past the seal (state 2) and goes back to it.
    pub reset_head: bool,
    /// `c` stood one commit behind (state 3) and comes up to the seal.
    pub reset_committed: bool,
    /// The records past `head` belong to a commit that failed (the `f`
    /// mark): its callers were told so, and it is dropped.
    pub failed: bool,
}

impl Leftover {
    /// One line for logs, `audit verify` and the trail's start record.
    pub fn describe(&self) -> String {
        if self.failed {
            return match self.unsealed {
                Some((from, to)) => format!(
                    "a failed-commit mark (left by the writer after a write or flush error, or placed by someone who can write the store) says records {from}–{to} belong to a commit that failed: its callers were told it failed, and the bot drops them when it opens the store (the trail ends at record {})",
                    self.head.seq
                ),
                None => format!(
                    "a failed-commit mark (left by the writer after a write or flush error, or placed by someone who can write the store) names the trail's last record {}; nothing past it is dropped",
                    self.head.seq
                ),
            };
        }
        match (self.unsealed, self.reset_head, self.reset_committed) {
            (Some((from, to)), _, _) => format!(
                "records {from}–{to} belong to a commit that a crash cut short: they were never acknowledged, and the bot drops them when it opens the store (the trail ends at record {})",
                self.head.seq
            ),
            (None, true, _) => format!(
                "a crash cut the last commit short before any of its records landed; the head goes back to record {}",
                self.head.seq
            ),
            _ => format!(
                "a crash came between the last commit's records and its committed mark; the mark is brought up to record {}",
                self.head.seq
            ),
        }
    }
}

fn read_head(tree: &sled::Tree, key: &[u8]) -> Result<Option<Result<Head, String>>, AuditError> {
    let name = String::from_utf8_lossy(key).to_string();
    Ok(tree.get(key).map_err(store)?.map(|bytes| {
        serde_json::from_slice::<Head>(&bytes).map_err(|e| format!("the `{name}` key is unreadable: {e}"))
    }))
}

fn store(e: sled::Error) -> AuditError {
    AuditError::Store(e.to_string())
}

fn broken(problem: impl Into<String>) -> End {
    End::Broken { problem: problem.into() }
}

/// A block read back: where it starts, its records, its seal.
struct Read {
    first: u64,
    records: Vec<Vec<u8>>,
    seal: Option<Result<Head, String>>,
}

fn read_block(key: &[u8], value: &[u8]) -> Read {
    let block = parse_block(value);
    Read {
        first: super::blocks::key_seq(key),
        records: block.records.iter().map(|r| r.to_vec()).collect(),
        seal: block.seal,
    }
}

/// Classifies the end of the trail in `tree`.
pub fn classify(tree: &sled::Tree) -> Result<End, AuditError> {
    match read_head(tree, FAILED_KEY)? {
        Some(Err(problem)) => return Ok(broken(problem)),
        Some(Ok(failed)) => return after_failed_commit(tree, failed),
        None => {}
    }
    let h = match read_head(tree, HEAD_KEY)? {
        Some(Err(problem)) => return Ok(broken(problem)),
        Some(Ok(head)) => Some(head),
        None => None,
    };
    let c = match read_head(tree, COMMITTED_KEY)? {
        Some(Err(problem)) => return Ok(broken(problem)),
        Some(Ok(head)) => Some(head),
        None => None,
    };
    let mut newest = tree.scan_prefix([BLOCK_PREFIX]).rev();
    let has_blocks = tree.scan_prefix([BLOCK_PREFIX]).next().is_some();
    if has_blocks && tree.get(FORMAT_KEY).map_err(store)?.is_none() {
        return Ok(broken(
            "the trail has records but no layout version (`v`): it was removed, or this is not a trail opsbot wrote; `opsbot audit repair` restores it if every record verifies",
        ));
    }
    // The unsealed blocks at the end (newest first), then the last sealed one.
    let mut unsealed: Vec<Read> = Vec::new();
    let mut unsealed_records = 0usize;
    let mut last_sealed: Option<Read> = None;
    for item in newest.by_ref() {
        let (key, value) = item.map_err(store)?;
        let block = read_block(&key, &value);
        if block.seal.is_some() {
            last_sealed = Some(block);
            break;
        }
        unsealed_records += block.records.len();
        unsealed.push(block);
        if unsealed_records > MAX_COMMIT {
            return Ok(broken(format!(
                "more than {MAX_COMMIT} records follow the last sealed commit, more than one commit holds: records were added, or the head and seals were removed"
            )));
        }
    }
    let seal = match &last_sealed {
        None => Head::genesis(),
        Some(block) => match check_sealed(block) {
            Ok(head) => head,
            Err(problem) => return Ok(broken(problem)),
        },
    };
    // The unsealed tail must continue the chain from the seal.
    unsealed.reverse();
    let mut verifier = match Verifier::after(&seal) {
        Ok(v) => v,
        Err(problem) => return Ok(broken(problem)),
    };
    for block in &unsealed {
        for (i, record) in block.records.iter().enumerate() {
            if let Err(failure) = verifier.push(block.first + i as u64, record) {
                return Ok(broken(format!("in the records after the last sealed commit: {failure}")));
            }
        }
    }
    let tail_end = verifier.head();
    let tail = (tail_end.seq > seal.seq).then_some((seal.seq + 1, tail_end.seq));
    let leftover = |reset_head, reset_committed| {
        End::CrashLeftover(Leftover { head: seal.clone(), unsealed: tail, reset_head, reset_committed, failed: false })
    };
    let Some(h) = h else {
        // `h` is written before each sealed block, so only a crash in the
        // very first commit leaves records (unsealed ones) without it.
        return Ok(match (&last_sealed, tail, &c) {
            (None, None, None) => End::Clean { head: seal },
            (None, Some(_), None) => leftover(false, false),
            _ => broken(format!(
                "the chain's head (`h`) is missing while the trail holds records up to {}: it was deleted; `opsbot audit repair` restores it and keeps every record",
                tail_end.seq
            )),
        });
    };
    if h.seq < seal.seq {
        return Ok(broken(format!(
            "the head names record {} but the chain runs on to record {} (sealed): the head was moved back, or records were added behind it; `opsbot audit repair` restores it and keeps every record",
            h.seq, seal.seq
        )));
    }
    let committed_at_seal = c.as_ref().map(|c| c.seq).unwrap_or(0) == seal.seq;
    if let Some(c) = c.as_ref().filter(|c| c.seq > seal.seq) {
        return Ok(broken(format!(
            "the trail was committed up to record {} but its last sealed record is {}: records were removed from the end",
            c.seq, seal.seq
        )));
    }
    if h.seq > seal.seq {
        // State 2: `h` landed, the sealed block did not.
        return Ok(if committed_at_seal && tail_end.seq < h.seq {
            leftover(true, false)
        } else {
            broken(format!(
                "the head names record {} but the chain ends at record {}: records were removed from the end",
                h.seq, tail_end.seq
            ))
        });
    }
    if h != seal {
        return Ok(broken(format!(
            "the head's hash does not match record {} (the head or the record was changed)",
            h.seq
        )));
    }
    if committed_at_seal {
        if c.as_ref().is_some_and(|c| *c != seal) {
            return Ok(broken(format!("the committed mark's hash does not match record {}", seal.seq)));
        }
        return Ok(match tail {
            None => End::Clean { head: seal },
            Some(_) => leftover(false, false),
        });
    }
    // State 3: `c` one commit behind the seal, nothing after the seal.
    let previous = previous_seal(&mut newest)?;
    let one_behind = match (&c, &previous) {
        (None, Ok(None)) => true,
        (Some(c), Ok(Some(p))) => c == p,
        _ => false,
    };
    Ok(match previous {
        Err(problem) => broken(problem),
        Ok(_) if one_behind && tail.is_none() => leftover(false, true),
        Ok(_) => broken(format!(
            "the committed mark names record {} but the trail is sealed up to record {}: the mark was moved back",
            c.map(|c| c.seq).unwrap_or(0),
            seal.seq
        )),
    })
}

/// With the `f` mark: the trail ends at `failed` (the head before the commit
/// that failed), which must be a sealed commit's end, and what follows it
/// is at most one commit (so a forged mark can drop no more than deleting
/// seals could).
fn after_failed_commit(tree: &sled::Tree, failed: Head) -> Result<End, AuditError> {
    let mut past = 0u64;
    let mut end = failed.seq;
    for item in tree.scan_prefix([BLOCK_PREFIX]).rev() {
        let (key, value) = item.map_err(store)?;
        let block = read_block(&key, &value);
        if block.first > failed.seq {
            // Only the failed commit's own last block may be sealed.
            if block.seal.is_some() && past > 0 {
                return Ok(broken(format!(
                    "the failed-commit mark names record {} but more than one commit follows it",
                    failed.seq
                )));
            }
            past += block.records.len() as u64;
            end = end.max(block.first + block.records.len() as u64 - 1);
            if past > MAX_COMMIT as u64 {
                return Ok(broken(format!(
                    "the failed-commit mark names record {} but more than {MAX_COMMIT} records follow it, more than one commit holds",
                    failed.seq
                )));
            }
            continue;
        }
        let last = block.first + block.records.len() as u64 - 1;
        return Ok(match check_sealed(&block) {
            Ok(seal) if seal == failed && last == failed.seq => End::CrashLeftover(Leftover {
                head: failed,
                unsealed: (past > 0).then_some((seal.seq + 1, end)),
                reset_head: true,
                reset_committed: true,
                failed: true,
            }),
            Ok(_) | Err(_) => broken(format!(
                "the failed-commit mark names record {}, which does not end a sealed commit",
                failed.seq
            )),
        });
    }
    Ok(if failed == Head::genesis() {
        End::CrashLeftover(Leftover {
            head: Head::genesis(),
            unsealed: (past > 0).then_some((1, end)),
            reset_head: true,
            reset_committed: true,
            failed: true,
        })
    } else {
        broken(format!("the failed-commit mark names record {}, which the trail does not hold", failed.seq))
    })
}

/// The seal of a block, checked against the block's own last record.
fn check_sealed(block: &Read) -> Result<Head, String> {
    let seal = block.seal.clone().expect("a sealed block").map_err(|p| format!("block {}: {p}", block.first))?;
    let last = block.records.last().ok_or_else(|| format!("block {} holds a seal but no records", block.first))?;
    let last_seq = block.first + block.records.len() as u64 - 1;
    let hash = last.get(..64).map(|h| String::from_utf8_lossy(h).to_string()).unwrap_or_default();
    if seal.seq != last_seq || seal.hash != hash {
        return Err(format!(
            "the block at record {} is sealed for record {} but ends with record {last_seq}: records were removed or changed",
            block.first, seal.seq
        ));
    }
    Ok(seal)
}

/// The seal before the last one, walking on from where `classify` stopped.
fn previous_seal(
    blocks: &mut impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Result<Option<Head>, String>, AuditError> {
    let mut records = 0usize;
    for item in blocks {
        let (key, value) = item.map_err(store)?;
        let block = read_block(&key, &value);
        if block.seal.is_some() {
            return Ok(check_sealed(&block).map(Some));
        }
        records += block.records.len();
        if records > MAX_COMMIT {
            return Ok(Err("a commit of more records than the writer takes has no seal".into()));
        }
    }
    Ok(Ok(None))
}
