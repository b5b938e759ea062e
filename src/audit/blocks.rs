//! How the trail lies in sled's `audit` tree.
//!
//! Records are stored in blocks: `b` + the first record's sequence number
//! (big-endian) → that record and the ones after it, one `hash + JSON body`
//! line each (compact JSON never holds a raw newline). A commit writes as many
//! blocks as it needs (each closed at about 6 KiB, see
//! [`BLOCK_BYTES`]), so sled handles a few keys per
//! commit rather than several per record. The last block of every commit ends
//! with a seal line, `=` + sequence number + space + hash of the commit's last
//! record: a block without a seal can only belong to a commit that has not
//! finished. `i` keys index each block's records by service (not part of the
//! chain; they only speed up lookups).
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
/// Written after a commit that failed (a write or the flush returned an
/// error): the head before it. Whatever that commit wrote is dropped at the
/// next open, like a crash leftover: its callers were told it failed.
pub(super) const FAILED_KEY: &[u8] = b"f";
/// Outcomes of a failed commit that an open dropped, kept until the bot has
/// recorded them again (a JSON [`super::sled_log::Unrecorded`]): written in
/// the open's flush, before the records it drops.
pub(super) const UNRECORDED_KEY: &[u8] = b"u";
/// The layout's version, written when a trail is created.
pub(super) const FORMAT_KEY: &[u8] = b"v";
/// Sealed commits, `h` and `c` (this module's layout).
pub(super) const FORMAT: &[u8] = b"2";
/// A block is closed once it holds this many bytes. sled packs up to 17
/// keys into a leaf and writes a leaf bigger than 128 KiB (a quarter of its
/// 512 KiB segment) to a blob file, and it counts a blob-backed leaf in its
/// page cache by the size of the pointer, not of the leaf: such leaves were
/// never evicted, so reading a large trail (export, verify) kept all of it
/// in memory (~500 MiB for a million records with 32 KiB blocks). With 6 KiB
/// blocks a leaf stays under the blob threshold (17 × 6 KiB) unless records
/// themselves are larger than a block, and the cache bound holds (see
/// docs/benchmarks.md, "Audit trail at scale").
pub(super) const BLOCK_BYTES: usize = 6 * 1024;
/// Most records one commit takes (the writer's batch limit). An unsealed
/// tail longer than this cannot be a commit cut short.
pub const MAX_COMMIT: usize = 4096;

/// The service index: `i` + the block's first sequence number → one entry per
/// record in the block that names a service: its place in the block (u16,
/// big-endian), a flag byte (1 = an outcome), the service name's length and
/// the name. `/status` and `/audit <service>` walk these small values
/// backwards and decode only the records they show. One key per block (not
/// one per service per block) keeps sled's page table, and so the memory of
/// a bot with a long trail, small.
pub(super) const INDEX_PREFIX: u8 = b'i';
const OUTCOME_FLAG: u8 = 1;

pub(super) fn index_key(first_seq: u64) -> [u8; 9] {
    let mut key = block_key(first_seq);
    key[0] = INDEX_PREFIX;
    key
}

/// One indexed record: its place in its block, whether it is an outcome,
/// and its service.
pub(super) struct Indexed<'a> {
    pub offset: u64,
    pub outcome: bool,
    pub service: &'a [u8],
}

/// The entries of an index value; a truncated tail ends it.
pub(super) fn index_entries(mut value: &[u8]) -> impl Iterator<Item = Indexed<'_>> {
    std::iter::from_fn(move || {
        let offset = u16::from_be_bytes(value.get(..2)?.try_into().ok()?);
        let flags = *value.get(2)?;
        let len = *value.get(3)? as usize;
        let service = value.get(4..4 + len)?;
        value = &value[4 + len..];
        Some(Indexed { offset: u64::from(offset), outcome: flags & OUTCOME_FLAG != 0, service })
    })
}

fn push_index(index: &mut Vec<u8>, offset: u64, record: &AuditRecord) {
    let Some(service) = &record.entry.service else { return };
    // Blocks hold far fewer than 65,536 records, and service names are config
    // names of at most 63 bytes; longer ones are simply not indexed.
    let (Ok(offset), Ok(len)) = (u16::try_from(offset), u8::try_from(service.len())) else { return };
    index.extend_from_slice(&offset.to_be_bytes());
    index.push(if record.entry.kind == RecordKind::Outcome { OUTCOME_FLAG } else { 0 });
    index.push(len);
    index.extend_from_slice(service.as_bytes());
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
    /// The current block's index value, and how many records it holds.
    services: Vec<u8>,
    records: u64,
}

impl BlockWriter {
    pub(super) fn new(first: u64) -> BlockWriter {
        BlockWriter {
            blocks: Vec::new(),
            index: Vec::new(),
            first,
            bytes: Vec::new(),
            services: Vec::new(),
            records: 0,
        }
    }

    pub(super) fn push(&mut self, record: &AuditRecord, stored: &[u8]) {
        if !self.bytes.is_empty() && self.bytes.len() + stored.len() >= BLOCK_BYTES {
            self.close_block(record.seq);
        }
        self.bytes.extend_from_slice(stored);
        self.bytes.push(b'\n');
        push_index(&mut self.services, self.records, record);
        self.records += 1;
    }

    /// Ends the current block; the next one starts at `next`.
    fn close_block(&mut self, next: u64) {
        if self.bytes.is_empty() {
            return;
        }
        self.blocks.push((block_key(self.first).to_vec(), std::mem::take(&mut self.bytes)));
        if !self.services.is_empty() {
            self.index.push((index_key(self.first).to_vec(), std::mem::take(&mut self.services)));
        }
        self.first = next;
        self.records = 0;
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

/// The index value for a block's records (for `audit repair`).
pub(super) fn index_of(records: &[AuditRecord]) -> Vec<u8> {
    let mut index = Vec::new();
    for (offset, record) in records.iter().enumerate() {
        push_index(&mut index, offset as u64, record);
    }
    index
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
    let index: Vec<sled::IVec> =
        tree.range(index_key(head.seq + 1).to_vec()..vec![INDEX_PREFIX + 1]).keys().collect::<Result<_, _>>()?;
    for key in index {
        tree.remove(key)?;
    }
    Ok(past.len())
}
