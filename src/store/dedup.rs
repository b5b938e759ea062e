//! Exactly-once delivery: which event keys (Slack `event_id`s, `trigger_id`s,
//! interaction ids…) were already taken.
//!
//! Keys live in one window of [`DEDUP_WINDOW`] of time. A key counts as seen if
//! it is in the current or the previous window, so it is remembered for at
//! least one window and at most two. Each open window keeps its keys twice:
//!
//! * in memory, as 64-bit keyed hashes (8 bytes a key, see [`HashedKeys`]):
//!   the decision is a lookup and an insert under a mutex, so two copies of
//!   a key arriving at once (even across a window boundary) cannot both be
//!   taken;
//! * in its sled tree `dedup-<n>`: new keys are queued, and the audit
//!   writer stores the queue as one value (under a fresh id) in each commit,
//!   so they are durable before any reply that waited for that commit goes
//!   out. On start the sets are rebuilt from the trees.
//!
//! The set is the source of truth while the process runs, so the trees are
//! only appended to, once per commit. The compare-and-swap per key that this
//! replaced cost ~14% of the bot's CPU under load (each a sled write that
//! split leaves all over the tree). Forgetting a window is one `drop_tree`.
//!
//! The hash is SipHash with a per-process random key: a sender cannot craft
//! two keys that collide, and a chance collision (which would drop a genuine
//! delivery) is about n/2⁶⁴ per key for n remembered keys.

use super::StoreError;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

/// How long one dedup window collects keys; keys are kept one to two windows,
/// longer than Slack's retry schedule (about 5 minutes).
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
const TREE_PREFIX: &str = "dedup-";

pub(super) fn window_of(now: DateTime<Utc>) -> u64 {
    (now.timestamp().max(0) as u64) / DEDUP_WINDOW.as_secs()
}

/// The set's hasher: its items are already SipHash values.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than panic.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One window's hashes, spread over [`SHARDS`] shards by bits 32..38.
///
/// A shard keeps its newest hashes in a small set and the rest in sorted
/// runs: 8 bytes per key. A hash set alone costs ~14 bytes per key (9 per
/// slot at 44–87% load), which at the 650k keys of the load benchmark was
/// ~9 MiB. Growing moves one shard's keys at a time, so no insert pays for
/// moving every key and the peak never holds all of them twice.
struct HashedKeys(Vec<Shard>);

const SHARDS: usize = 64;

impl Default for HashedKeys {
    fn default() -> Self {
        HashedKeys((0..SHARDS).map(|_| Shard::default()).collect())
    }
}

impl HashedKeys {
    fn shard(&self, hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    fn contains(&self, hash: u64) -> bool {
        self.0[self.shard(hash)].contains(hash)
    }

    /// Adds `hash`; false if it was already there.
    fn insert(&mut self, hash: u64) -> bool {
        let shard = self.shard(hash);
        self.0[shard].insert(hash)
    }
}

/// Newest hashes in a set of at most [`RECENT`]; older ones in sorted runs,
/// each more than [`RUN_RATIO`] times as long as the next, so there are
/// O(log n) of them (3 for the ~10k keys a shard holds at 650k keys) and
/// every hash is moved O(log n) times. Runs never share a hash.
struct Shard {
    recent: HashSet<u64, BuildHasherDefault<Prehashed>>,
    runs: Vec<Box<[u64]>>,
}

/// The set stays within its first table (256 slots, 7/8 usable).
const RECENT: usize = 224;

/// How much longer than the next each run is. Every delivery searches every
/// run (most keys are new, so the search runs to the end), and each search
/// of a long run costs a few cache misses; with a ratio of 2 a shard held ~6
/// runs and the searches were ~2% of the bot's CPU. A larger ratio moves each
/// hash a few more times in merges, which are sequential copies.
const RUN_RATIO: usize = 8;

impl Default for Shard {
    fn default() -> Self {
        Shard { recent: HashSet::with_capacity_and_hasher(RECENT, Default::default()), runs: Vec::new() }
    }
}

impl Shard {
    fn contains(&self, hash: u64) -> bool {
        self.recent.contains(&hash) || self.in_runs(hash)
    }

    fn in_runs(&self, hash: u64) -> bool {
        self.runs.iter().any(|run| run_contains(run, hash))
    }

    fn insert(&mut self, hash: u64) -> bool {
        // One probe of the set: `insert` is also its lookup.
        if self.in_runs(hash) || !self.recent.insert(hash) {
            return false;
        }
        if self.recent.len() >= RECENT {
            let mut run: Vec<u64> = self.recent.drain().collect();
            run.sort_unstable();
            let mut run = run.into_boxed_slice();
            while self.runs.last().is_some_and(|last| last.len() <= RUN_RATIO * run.len()) {
                let last = self.runs.pop().expect("checked above");
                run = merge(&last, &run);
            }
            self.runs.push(run);
        }
        true
    }
}

/// Whether the sorted `run` holds `hash`. The hashes are uniform over `u64`,
/// so where `hash` would sit is first estimated from its value, then a
/// window around that spot is widened until it brackets `hash` and searched.
/// The estimate is off by about √n/2 places, so a search touches a few cache
/// lines near one spot instead of ~log₂ n lines spread over the whole run.
fn run_contains(run: &[u64], hash: u64) -> bool {
    const SHORT: usize = 64;
    if run.len() <= SHORT {
        return run.binary_search(&hash).is_ok();
    }
    let guess = ((u128::from(hash) * run.len() as u128) >> 64) as usize;
    let (mut lo, mut hi) = (guess, guess + 1);
    let mut step = 16;
    // Invariant once done: run[lo] <= hash < run[hi] (with the ends as ±∞).
    while lo > 0 && run[lo] > hash {
        lo = lo.saturating_sub(step);
        step *= 2;
    }
    step = 16;
    while hi < run.len() && run[hi] <= hash {
        hi = (hi + step).min(run.len());
        step *= 2;
    }
    run[lo..hi].binary_search(&hash).is_ok()
}

/// Two sorted runs with no hash in common, as one.
fn merge(a: &[u64], b: &[u64]) -> Box<[u64]> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out.into_boxed_slice()
}

struct Window {
    n: u64,
    tree: sled::Tree,
    seen: HashedKeys,
}

/// The dedup windows of one store.
pub struct Dedup {
    db: sled::Db,
    hasher: RandomState,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    current: Option<Window>,
    previous: Option<Window>,
    /// Keys taken but not yet written: (window, its tree, packed keys).
    queued: Vec<(u64, sled::Tree, Vec<u8>)>,
}

/// Appends `key` (at most 64 KiB - 1, see [`Dedup::first_delivery`]) to a
/// packed list: a 2-byte big-endian length, then the bytes.
fn pack(packed: &mut Vec<u8>, key: &[u8]) {
    packed.extend_from_slice(&(key.len() as u16).to_be_bytes());
    packed.extend_from_slice(key);
}

/// The keys in a packed list; a truncated tail (never written by `pack`) ends it.
fn unpack(mut packed: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u16::from_be_bytes(packed.get(..2)?.try_into().ok()?) as usize;
        let key = packed.get(2..2 + len)?;
        packed = &packed[2 + len..];
        Some(key)
    })
}

impl Dedup {
    pub fn new(db: sled::Db) -> Dedup {
        Dedup { db, hasher: RandomState::new(), windows: Mutex::new(Windows::default()) }
    }

    /// Records `key` as delivered at `now`; false if it was already delivered
    /// within the current or previous window (a retry or duplicate delivery).
    ///
    /// A new key is queued for its window's tree; the audit writer stores the
    /// queue in its next commit ([`Dedup::persist_queued`]), which is the one
    /// any reply to this delivery waits for.
    pub fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        // Keys are Slack ids, far below 64 KiB; a longer one is cut (here, so
        // the hash and the stored form agree), which can only make two such
        // keys look alike, never lose one.
        let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
        let hash = self.hasher.hash_one(key);
        let mut windows = self.windows.lock().expect("dedup lock");
        self.advance(&mut windows, window_of(now))?;
        if windows.previous.as_ref().is_some_and(|w| w.seen.contains(hash)) {
            return Ok(false);
        }
        let windows = &mut *windows;
        let current = windows.current.as_mut().expect("advance opened the current window");
        if !current.seen.insert(hash) {
            return Ok(false);
        }
        match windows.queued.last_mut() {
            Some((n, _, packed)) if *n == current.n => pack(packed, key),
            _ => {
                let mut packed = Vec::with_capacity(256);
                pack(&mut packed, key);
                windows.queued.push((current.n, current.tree.clone(), packed));
            }
        }
        Ok(true)
    }

    /// Loads the current and previous windows' keys now, so the first
    /// delivery after a start does not pay for reading them.
    pub fn warm(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut windows = self.windows.lock().expect("dedup lock");
        self.advance(&mut windows, window_of(now))
    }

    /// Writes the queued keys, one value per window under a fresh id; the
    /// audit writer calls this in each commit, before its flush. Returns
    /// whether anything was written. On error the keys stay queued.
    pub fn persist_queued(&self) -> Result<bool, sled::Error> {
        let queued = std::mem::take(&mut self.windows.lock().expect("dedup lock").queued);
        if queued.is_empty() {
            return Ok(false);
        }
        for (i, (_, tree, packed)) in queued.iter().enumerate() {
            if let Err(e) = self.db.generate_id().and_then(|id| tree.insert(id.to_be_bytes(), &packed[..])) {
                let mut windows = self.windows.lock().expect("dedup lock");
                let newer = std::mem::take(&mut windows.queued);
                windows.queued = queued.into_iter().skip(i).chain(newer).collect();
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Forgets dedup windows older than the previous one; returns how many.
    pub fn sweep(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let keep_from = window_of(now).saturating_sub(1);
        let expired = |n: &u64| *n < keep_from;
        // Deliveries never touch these windows, so the trees are dropped
        // without holding the deliveries' lock.
        let mut removed = 0;
        for name in self.db.tree_names() {
            let window = std::str::from_utf8(&name).ok().and_then(|n| n.strip_prefix(TREE_PREFIX)?.parse().ok());
            if window.as_ref().is_some_and(expired) {
                self.db.drop_tree(&name)?;
                removed += 1;
            }
        }
        // Free the sets of expired windows now rather than at the next delivery
        // (`previous` is older than `current`, so it goes whenever `current` does).
        let mut guard = self.windows.lock().expect("dedup lock");
        let windows = &mut *guard;
        for slot in [&mut windows.current, &mut windows.previous] {
            if slot.as_ref().is_some_and(|w| expired(&w.n)) {
                *slot = None;
            }
        }
        windows.queued.retain(|(n, _, _)| !expired(n));
        Ok(removed)
    }

    fn open(&self, n: u64) -> Result<Window, StoreError> {
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{n}"))?;
        let mut seen = HashedKeys::default();
        for item in tree.iter() {
            let (_, keys) = item?;
            for key in unpack(&keys) {
                seen.insert(self.hasher.hash_one(key));
            }
        }
        Ok(Window { n, tree, seen })
    }

    fn advance(&self, windows: &mut Windows, n: u64) -> Result<(), StoreError> {
        if windows.current.as_ref().is_some_and(|w| w.n == n) {
            return Ok(());
        }
        windows.previous = match windows.current.take() {
            Some(w) if w.n + 1 == n => Some(w),
            _ => Some(self.open(n.saturating_sub(1))?),
        };
        windows.current = Some(self.open(n)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: distinct, well-spread test hashes without a dependency.
    fn hashes(seed: u64, n: usize) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::repeat_with(move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .take(n)
    }

    #[test]
    fn every_hash_is_taken_once_across_runs_and_merges() {
        let mut keys = HashedKeys::default();
        let all: Vec<u64> = hashes(7, 100_000).collect();
        for (i, &h) in all.iter().enumerate() {
            assert!(!keys.contains(h));
            assert!(keys.insert(h), "first insert of #{i}");
            assert!(!keys.insert(h), "second insert of #{i}");
            // An older hash, by now in a run or a merged run, is still found.
            assert!(!keys.insert(all[i / 2]));
        }
        assert!(all.iter().all(|&h| keys.contains(h)));
        assert!(hashes(8, 10_000).all(|h| !keys.contains(h)));
        for shard in &keys.0 {
            let stored = shard.recent.len() + shard.runs.iter().map(|r| r.len()).sum::<usize>();
            assert!(shard.recent.len() < RECENT);
            // Each run sorted, and more than RUN_RATIO times the next: O(log n) runs.
            for run in &shard.runs {
                assert!(run.windows(2).all(|w| w[0] < w[1]));
            }
            for pair in shard.runs.windows(2) {
                assert!(pair[0].len() > RUN_RATIO * pair[1].len());
            }
            let bound = 1 + (stored / RECENT).max(1).ilog(RUN_RATIO) as usize;
            assert!(shard.runs.len() <= bound, "{} runs", shard.runs.len());
        }
        let total: usize = keys.0.iter().map(|s| s.recent.len() + s.runs.iter().map(|r| r.len()).sum::<usize>()).sum();
        assert_eq!(total, all.len());
    }

    #[test]
    fn warming_loads_the_stored_windows_before_any_delivery() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let now = Utc::now();
        let earlier = Dedup::new(db.clone());
        for i in 0..500 {
            assert!(earlier.first_delivery(&format!("slack:trigger:{i}"), now).unwrap());
        }
        assert!(earlier.persist_queued().unwrap());

        // A restart: a new Dedup over the same database.
        let dedup = Dedup::new(db);
        assert!(dedup.windows.lock().unwrap().current.is_none(), "nothing is loaded before warming");
        dedup.warm(now).unwrap();
        {
            let windows = dedup.windows.lock().unwrap();
            let current = windows.current.as_ref().expect("warming opened the current window");
            assert_eq!(current.n, window_of(now));
            let hash = |i: usize| dedup.hasher.hash_one(format!("slack:trigger:{i}").as_bytes());
            assert!((0..500).all(|i| current.seen.contains(hash(i))));
            assert!(windows.previous.is_some());
        }
        // The loaded keys answer as duplicates; a new key does not.
        assert!(!dedup.first_delivery("slack:trigger:7", now).unwrap());
        assert!(dedup.first_delivery("slack:trigger:500", now).unwrap());
    }

    #[test]
    fn a_run_search_finds_exactly_what_is_there_whatever_the_spread() {
        let uniform: Vec<u64> = {
            let mut v: Vec<u64> = hashes(11, 5_000).collect();
            v.sort_unstable();
            v
        };
        // Far from uniform, so the first estimate is far off.
        let mut bunched: Vec<u64> = (0..5_000u64).map(|i| i * 3).chain((0..100).map(|i| u64::MAX - i * 7)).collect();
        bunched.sort_unstable();
        for run in [&uniform[..], &bunched[..], &uniform[..65], &uniform[..10], &[][..]] {
            for (i, &h) in run.iter().enumerate() {
                assert!(run_contains(run, h), "#{i} of {}", run.len());
                for miss in [h.wrapping_add(1), h.wrapping_sub(1)] {
                    assert_eq!(run_contains(run, miss), run.binary_search(&miss).is_ok());
                }
            }
            for h in hashes(12, 2_000).chain([0, 1, u64::MAX, u64::MAX - 1]) {
                assert_eq!(run_contains(run, h), run.binary_search(&h).is_ok(), "{h}");
            }
        }
    }

    #[test]
    fn merge_keeps_order() {
        assert_eq!(&*merge(&[1, 4, 9], &[2, 3, 10, 11]), &[1, 2, 3, 4, 9, 10, 11]);
        assert_eq!(&*merge(&[], &[5]), &[5]);
        assert_eq!(&*merge(&[5], &[]), &[5]);
    }
}
