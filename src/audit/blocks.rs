//! How the trail lies in sled's `audit` tree.
//!
//! Records are stored in blocks: `b` + the first record's sequence number
//! (big-endian) → that record and the ones after it, one `hash + JSON body`
//! line each. A commit writes as many blocks as it needs (each up to 32 KiB),
//! so sled handles a few keys per commit rather than several per record;
//! per-record sled writes were most of the cost of an append. `h` holds the
//! chain's head, written after the blocks. `s`/`o` keys index blocks by
//! service. Verification reads the lines in order and checks every record's
//! hash, position, and link to the one before, exactly as for one key per
//! record. Development builds stored one record per `r` + seq key; those are
//! still read, as one-record blocks before all `b` blocks.
//!
//! sled recovers its log in order and stops at the first incomplete write, so
//! a crash in the middle of a commit leaves at worst blocks past the head;
//! [`drop_uncommitted`] removes them.

use super::chain::Head;
use super::{AuditError, AuditRecord, RecordKind};

/// Blocks of records: `b` + the first record's sequence number (big-endian).
pub(super) const BLOCK_PREFIX: u8 = b'b';
/// Records stored one per key by development builds before blocks; still read.
pub(super) const LEGACY_PREFIX: u8 = b'r';
pub(super) const HEAD_KEY: &[u8] = b"h";
/// A block is closed once it holds this many bytes, so a value stays well
/// below the size at which sled moves it to a separate blob file.
pub(super) const BLOCK_BYTES: usize = 32 * 1024;

/// Index keys, next to the chain but not part of it (they only speed up
/// lookups): `s`, service, 0, block for every block holding records about a
/// service, and the same under `o` for blocks holding its outcomes. The value
/// lists the sequence numbers of those records (8 bytes each, big-endian), so
/// `/status` and `/audit <service>` decode only the records they show.
pub(super) const SERVICE_INDEX: u8 = b's';
pub(super) const OUTCOME_INDEX: u8 = b'o';

type Blocks<'a> = Box<dyn Iterator<Item = Result<(u64, sled::IVec), AuditError>> + 'a>;

pub(super) fn index_prefix(kind: u8, service: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(service.len() + 10);
    key.push(kind);
    key.extend_from_slice(service.as_bytes());
    key.push(0);
    key
}

pub(super) fn index_key(kind: u8, service: &str, block: u64) -> Vec<u8> {
    let mut key = index_prefix(kind, service);
    key.extend_from_slice(&block.to_be_bytes());
    key
}

pub(super) fn block_key(first_seq: u64) -> [u8; 9] {
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
pub(super) fn split_block(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    value.split(|&b| b == b'\n')
}

/// (first sequence number, value) for each block key.
fn with_seq<'a>(items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a) -> Blocks<'a> {
    Box::new(items.map(|item| {
        let (key, value) = item.map_err(|e| AuditError::Store(e.to_string()))?;
        Ok((key_seq(&key), value))
    }))
}

/// The block that starts at `first` (a legacy record, for old stores).
pub(super) fn block_at(tree: &sled::Tree, first: u64) -> Result<Option<sled::IVec>, sled::Error> {
    let mut key = block_key(first);
    if let Some(value) = tree.get(key)? {
        return Ok(Some(value));
    }
    key[0] = LEGACY_PREFIX;
    tree.get(key)
}

/// The block holding `seq` and every block after it, in order (`seq` 0: all).
pub(super) fn blocks_from(tree: &sled::Tree, seq: u64) -> Blocks<'_> {
    // Where to start under `prefix`: the last key at or before `seq`. If that
    // lookup fails, scanning from the prefix's start reports the same error.
    let start = |prefix: u8| -> Vec<u8> {
        let mut at = block_key(seq);
        at[0] = prefix;
        match tree.range(vec![prefix]..=at.to_vec()).next_back() {
            Some(Ok((key, _))) => key.to_vec(),
            _ => vec![prefix],
        }
    };
    let legacy = tree.range(start(LEGACY_PREFIX)..vec![LEGACY_PREFIX + 1]);
    let blocks = tree.range(start(BLOCK_PREFIX)..vec![BLOCK_PREFIX + 1]);
    with_seq(legacy.chain(blocks))
}

/// Every block, newest first.
pub(super) fn newest_first(tree: &sled::Tree) -> Blocks<'_> {
    with_seq(tree.scan_prefix([BLOCK_PREFIX]).rev().chain(tree.scan_prefix([LEGACY_PREFIX]).rev()))
}

/// Every stored record as (sequence number, stored bytes), in order. The
/// number is the record's position as stored (block start + place in the
/// block), which verification compares with the number inside the record.
pub fn stored_records(tree: &sled::Tree) -> impl Iterator<Item = Result<(u64, Vec<u8>), AuditError>> + '_ {
    blocks_from(tree, 0).flat_map(|block| -> Vec<Result<(u64, Vec<u8>), AuditError>> {
        match block {
            Ok((first, value)) => {
                split_block(&value).enumerate().map(|(i, r)| Ok((first + i as u64, r.to_vec()))).collect()
            }
            Err(e) => vec![Err(e)],
        }
    })
}

/// Removes what a crash in the middle of a commit can leave: blocks past the
/// head, and index entries for them. Returns how many blocks went.
pub(super) fn drop_uncommitted(tree: &sled::Tree, head: &Head) -> Result<usize, sled::Error> {
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
pub(super) struct BlockWriter {
    /// Keys and values to write, in order.
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    first: u64,
    bytes: Vec<u8>,
    /// Per service: sequence numbers of its records, and of its outcomes.
    services: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl BlockWriter {
    pub(super) fn new(first: u64) -> BlockWriter {
        BlockWriter { writes: Vec::new(), first, bytes: Vec::new(), services: Vec::new() }
    }

    pub(super) fn push(&mut self, record: &AuditRecord, stored: &[u8]) {
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
            if record.entry.kind == RecordKind::Outcome {
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

    pub(super) fn finish(mut self, head: &Head) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.close_block(head.seq + 1);
        self.writes.push((HEAD_KEY.to_vec(), serde_json::to_vec(head).expect("head serialises")));
        self.writes
    }
}
