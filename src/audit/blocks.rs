//! How the trail lies in sled's `audit` tree.
//!
//! Records are stored in blocks: `b` + the first record's sequence number
//! (big-endian) → that record and the ones after it, one `hash + JSON body`
//! line each (compact JSON never holds a raw newline). A commit writes as many
//! blocks as it needs (each up to 32 KiB), so sled handles a few keys per
//! commit rather than several per record. The last block of every commit ends
//! with a seal line, `=` + sequence number + space + hash of the commit's last
//! record: a block without a seal can only belong to a commit that has not
//! finished. `s`/`o` keys index blocks by service (not part of the chain; they
//! only speed up lookups).
//!
//! Two keys name the chain's end, written around each commit's sealed block:
//! `h` (the head) just before it and `c` (committed) just after it. sled
//! recovers a prefix of its log after a crash, so the only states a crash can
//! leave are: an unsealed tail of the commit being written (with `h` at or
//! past the last seal), or the sealed block written but `c` one commit behind.
//! Everything else — a head behind the last seal, a head missing while records
//! exist, records missing below the head, more unsealed records than a commit
//! holds — is tampering or corruption; see [`super::end`], which tells them
//! apart.

use super::chain::Head;
use super::{AuditRecord, RecordKind};

/// Blocks of records: `b` + the first record's sequence number (big-endian).
pub(super) const BLOCK_PREFIX: u8 = b'b';
/// The head: written in each commit just before its sealed block.
pub(super) const HEAD_KEY: &[u8] = b"h";
/// The committed head: written in each commit just after its sealed block.
pub(super) const COMMITTED_KEY: &[u8] = b"c";
/// The layout's version, written when a trail is created.
pub(super) const FORMAT_KEY: &[u8] = b"v";
/// Sealed commits, `h` and `c` (this module's layout).
pub(super) const FORMAT: &[u8] = b"2";
/// A block is closed once it holds this many bytes, so a value stays well
/// below the size at which sled moves it to a separate blob file.
pub(super) const BLOCK_BYTES: usize = 32 * 1024;
/// Most records one commit takes (the writer's batch limit). An unsealed
/// tail longer than this cannot be a commit cut short.
pub const MAX_COMMIT: usize = 4096;

/// Index keys: `s`, service, 0, block for every block holding records about
/// a service, and the same under `o` for blocks holding its outcomes. The
/// value lists the sequence numbers of those records (8 bytes each,
/// big-endian), so `/status` and `/audit <service>` decode only the records
/// they show.
pub(super) const SERVICE_INDEX: u8 = b's';
pub(super) const OUTCOME_INDEX: u8 = b'o';

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

/// The block an index key points at.
pub(super) fn index_block(key: &[u8]) -> Option<u64> {
    key.len().checked_sub(8).map(|at| u64::from_be_bytes(key[at..].try_into().expect("8 bytes")))
}

pub(super) fn block_key(first_seq: u64) -> [u8; 9] {
    let mut key = [BLOCK_PREFIX; 9];
    key[1..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

/// The first sequence number of a block key.
pub(super) fn key_seq(key: &[u8]) -> u64 {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// One block's value, split into its record lines and its seal (if it is
/// the last block of a commit).
pub(super) struct Block<'a> {
    pub records: Vec<&'a [u8]>,
    pub seal: Option<Result<Head, String>>,
}

pub(super) fn parse_block(value: &[u8]) -> Block<'_> {
    let body = value.strip_suffix(b"\n").unwrap_or(value);
    let mut records: Vec<&[u8]> = if body.is_empty() { Vec::new() } else { body.split(|&b| b == b'\n').collect() };
    let seal = match records.last() {
        Some(line) if line.first() == Some(&b'=') => {
            let seal = parse_seal(&line[1..]);
            records.pop();
            Some(seal)
        }
        _ => None,
    };
    Block { records, seal }
}

fn parse_seal(text: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the commit seal is not text".to_string())?;
    let (seq, hash) = text.split_once(' ').ok_or_else(|| format!("the commit seal `{text}` is malformed"))?;
    let seq = seq.parse().map_err(|_| format!("the commit seal `{text}` has no sequence number"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("the commit seal `{text}` has no hash"));
    }
    Ok(Head { seq, hash: hash.to_string() })
}

fn seal_line(head: &Head) -> Vec<u8> {
    format!("={} {}\n", head.seq, head.hash).into_bytes()
}

/// The stored records of one block, without its seal.
pub(super) fn records_of(value: &[u8]) -> Vec<&[u8]> {
    parse_block(value).records
}

/// `value` with a seal naming `head` appended (for `audit repair`).
pub(super) fn sealed(value: &[u8], head: &Head) -> Vec<u8> {
    let mut out = value.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(&seal_line(head));
    out
}

/// The writes of one commit, in the order they must reach sled.
pub(super) struct Commit {
    /// Unsealed blocks and every index entry: first.
    pub before_head: Vec<(Vec<u8>, Vec<u8>)>,
    /// `h`, then the sealed last block, then `c`.
    pub head: Head,
    pub sealed_block: (Vec<u8>, Vec<u8>),
}

impl Commit {
    /// Every write, in order.
    pub fn writes(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        let head = serde_json::to_vec(&self.head).expect("head serialises");
        self.before_head.into_iter().chain([
            (HEAD_KEY.to_vec(), head.clone()),
            self.sealed_block,
            (COMMITTED_KEY.to_vec(), head),
        ])
    }
}

/// Builds the blocks of one commit.
pub(super) struct BlockWriter {
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    index: Vec<(Vec<u8>, Vec<u8>)>,
    first: u64,
    bytes: Vec<u8>,
    /// Per service: sequence numbers of its records, and of its outcomes.
    services: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl BlockWriter {
    pub(super) fn new(first: u64) -> BlockWriter {
        BlockWriter { blocks: Vec::new(), index: Vec::new(), first, bytes: Vec::new(), services: Vec::new() }
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
        self.blocks.push((block_key(self.first).to_vec(), std::mem::take(&mut self.bytes)));
        for (service, all, outcomes) in self.services.drain(..) {
            self.index.push((index_key(SERVICE_INDEX, &service, self.first), all));
            if !outcomes.is_empty() {
                self.index.push((index_key(OUTCOME_INDEX, &service, self.first), outcomes));
            }
        }
        self.first = next;
    }

    /// The commit's writes; `head` is the commit's last record. Panics if
    /// nothing was pushed (the writer never commits an empty batch).
    pub(super) fn finish(mut self, head: Head) -> Commit {
        self.close_block(head.seq + 1);
        let (key, mut value) = self.blocks.pop().expect("a commit holds at least one record");
        value.extend_from_slice(&seal_line(&head));
        let mut before_head = self.blocks;
        before_head.extend(self.index);
        Commit { before_head, head, sealed_block: (key, value) }
    }
}

/// Removes every block past `head` and the index entries that point at
/// them (what a commit cut short by a crash, or a failed commit, left).
/// Returns how many blocks went.
pub(super) fn remove_past(tree: &sled::Tree, head: &Head) -> Result<usize, sled::Error> {
    let past: Vec<sled::IVec> =
        tree.range(block_key(head.seq + 1).to_vec()..vec![BLOCK_PREFIX + 1]).keys().collect::<Result<_, _>>()?;
    for key in &past {
        tree.remove(key)?;
    }
    for kind in [SERVICE_INDEX, OUTCOME_INDEX] {
        for key in tree.scan_prefix([kind]).keys() {
            let key = key?;
            if index_block(&key).is_some_and(|b| b > head.seq) {
                tree.remove(key)?;
            }
        }
    }
    Ok(past.len())
}
