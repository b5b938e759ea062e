//! The embedded store: one sled database in the data directory holding the audit
//! trail (`audit` tree) and the state that must survive a restart — pending
//! approvals, service locks, dedup keys and counters. Only this module and
//! `audit` import sled.
//!
//! State writes are not flushed here: the caller follows each with an audit
//! append, whose group-commit flush makes the state durable too.

use crate::approval::PendingRequest;
use crate::audit::{AuditError, SledAuditLog};
use crate::policy::Hold;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data directory {path} is in use by another opsbot process (sled holds an exclusive lock); stop it first, or point --data-dir at a copy")]
    Locked { path: String },
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store error: {0}")]
    Io(String),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// sled page cache size.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// How long one dedup tree collects keys; keys are kept one to two windows,
/// longer than Slack's retry schedule (about 5 minutes).
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
const DEDUP_TREE_PREFIX: &str = "dedup-";
/// The single dedup tree of earlier builds (key → expiry in ms); its
/// unexpired keys are moved into the current window once, then it is dropped.
const LEGACY_DEDUP_TREE: &str = "dedup";

fn dedup_window(now: DateTime<Utc>) -> u64 {
    (now.timestamp().max(0) as u64) / DEDUP_WINDOW.as_secs()
}

/// The open trees of the current and previous dedup windows.
#[derive(Default)]
struct DedupWindows {
    current: Option<(u64, sled::Tree)>,
    previous: Option<(u64, sled::Tree)>,
}

impl DedupWindows {
    fn advance(&mut self, db: &sled::Db, window: u64, now_ms: i64) -> Result<(), StoreError> {
        if self.current.as_ref().is_some_and(|(n, _)| *n == window) {
            return Ok(());
        }
        let open = |n: u64| db.open_tree(format!("{DEDUP_TREE_PREFIX}{n}")).map(|tree| (n, tree));
        let first_use = self.current.is_none();
        self.previous = match self.current.take() {
            Some((n, tree)) if n + 1 == window => Some((n, tree)),
            _ => Some(open(window.saturating_sub(1))?),
        };
        self.current = Some(open(window)?);
        if first_use && db.tree_names().iter().any(|n| n == LEGACY_DEDUP_TREE.as_bytes()) {
            let legacy = db.open_tree(LEGACY_DEDUP_TREE)?;
            let (_, current) = self.current.as_ref().expect("just opened");
            for item in legacy.iter() {
                let (key, expiry) = item?;
                let expiry = expiry.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(i64::MAX);
                if expiry > now_ms {
                    current.insert(key, &[])?;
                }
            }
            db.drop_tree(LEGACY_DEDUP_TREE)?;
        }
        Ok(())
    }
}

/// The per-service run lock: one mutating action at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLock {
    pub request_id: String,
    pub holder: String,
    pub until: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Every approval request ever opened, by id (open or closed).
    requests: sled::Tree,
    /// Index of the open ones, so the periodic expiry check never scans history.
    open: sled::Tree,
    locks: sled::Tree,
    dedup: Arc<std::sync::Mutex<DedupWindows>>,
    meta: sled::Tree,
    links: sled::Tree,
    audit: Arc<SledAuditLog>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        // sled's default page cache is 1 GiB; opsbot's working set is small
        // (recent records, open requests), so keep memory flat as the trail grows.
        let db = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).open().map_err(|e| match &e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
                StoreError::Locked { path: dir.display().to_string() }
            }
            _ => StoreError::Open { path: dir.display().to_string(), reason: e.to_string() },
        })?;
        Store::from_db(db)
    }

    /// A throw-away store (deleted on drop), for tests and benchmarks.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Store::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            requests: db.open_tree("requests")?,
            open: db.open_tree("open_requests")?,
            locks: db.open_tree("locks")?,
            dedup: Arc::new(std::sync::Mutex::new(DedupWindows::default())),
            meta: db.open_tree("meta")?,
            links: db.open_tree("links")?,
            audit: Arc::new(SledAuditLog::open(&db)?),
            db,
        })
    }

    pub fn audit(&self) -> Arc<SledAuditLog> {
        self.audit.clone()
    }

    /// Verifies the audit chain.
    pub fn verify_audit(&self) -> Result<crate::audit::VerifySummary, crate::audit::VerifyFailure> {
        self.audit.verify()
    }

    /// Next request id, `r-1`, `r-2` … (never reused, also across restarts).
    pub fn next_request_id(&self) -> Result<String, StoreError> {
        let next = self.meta.update_and_fetch("request_counter", |old| {
            let n = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        let n = next.and_then(|b| b.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(1);
        Ok(format!("r-{n}"))
    }

    pub fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.requests.insert(request.id.as_bytes(), bytes)?;
        if request.state.is_open() {
            self.open.insert(request.id.as_bytes(), &[])?;
        } else {
            self.open.remove(request.id.as_bytes())?;
        }
        Ok(())
    }

    pub fn get_pending(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        match self.requests.get(id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt(format!("request {id}: {e}")))
            }
        }
    }

    /// Requests still open (state pending), via the open index.
    pub fn open_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        let mut out = Vec::new();
        for item in self.open.iter() {
            let (id, _) = item?;
            let id = String::from_utf8_lossy(&id).to_string();
            if let Some(request) = self.get_pending(&id)?.filter(|r| r.state.is_open()) {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Takes the run lock on `service` unless someone else holds an unexpired one.
    pub fn acquire_run_lock(
        &self,
        service: &str,
        lock: RunLock,
        now: DateTime<Utc>,
    ) -> Result<Result<(), RunLock>, StoreError> {
        let key = format!("run:{service}");
        loop {
            let current = self.locks.get(&key)?;
            if let Some(bytes) = &current {
                let held: RunLock = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if held.until > now && held.request_id != lock.request_id {
                    return Ok(Err(held));
                }
            }
            let new = serde_json::to_vec(&lock).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self.locks.compare_and_swap(&key, current, Some(new))? {
                Ok(()) => return Ok(Ok(())),
                Err(_) => continue,
            }
        }
    }

    /// Releases the run lock if `request_id` still holds it.
    pub fn release_run_lock(&self, service: &str, request_id: &str) -> Result<(), StoreError> {
        let key = format!("run:{service}");
        if let Some(bytes) = self.locks.get(&key)? {
            let held: RunLock = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if held.request_id == request_id {
                let _ = self.locks.compare_and_swap(&key, Some(bytes), None::<Vec<u8>>)?;
            }
        }
        Ok(())
    }

    /// Every run lock currently stored, as (service, lock).
    pub fn run_locks(&self) -> Result<Vec<(String, RunLock)>, StoreError> {
        let mut out = Vec::new();
        for item in self.locks.scan_prefix("run:") {
            let (key, bytes) = item?;
            let service = String::from_utf8_lossy(&key[4..]).to_string();
            let lock: RunLock = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((service, lock));
        }
        Ok(out)
    }

    pub fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(hold).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.locks.insert(format!("hold:{service}"), bytes)?;
        Ok(())
    }

    /// The `/lock` on `service`, if one is in force at `now`.
    pub fn active_hold(&self, service: &str, now: DateTime<Utc>) -> Result<Option<Hold>, StoreError> {
        match self.locks.get(format!("hold:{service}"))? {
            None => Ok(None),
            Some(bytes) => {
                let hold: Hold = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((hold.until > now).then_some(hold))
            }
        }
    }

    pub fn remove_hold(&self, service: &str) -> Result<Option<Hold>, StoreError> {
        match self.locks.remove(format!("hold:{service}"))? {
            None => Ok(None),
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        }
    }

    /// Records `key` as delivered; false if it was already delivered within
    /// the dedup window (a retry or duplicate delivery).
    ///
    /// Keys live in one tree per [`DEDUP_WINDOW`] of time (`dedup-<n>`). A key
    /// counts as seen if it is in the current or the previous window's tree,
    /// so it is remembered for at least one window and at most two. Checking is
    /// one compare-and-swap plus one read; forgetting a whole window is one
    /// `drop_tree` ([`Store::sweep_dedup`]), however many keys it holds.
    pub fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let window = dedup_window(now);
        // One decision at a time, so two copies of a key arriving across a
        // window boundary cannot each miss the other.
        let mut windows = self.dedup.lock().expect("dedup lock");
        windows.advance(&self.db, window, now.timestamp_millis())?;
        if let Some((_, previous)) = &windows.previous {
            if previous.contains_key(key)? {
                return Ok(false);
            }
        }
        let (_, current) = windows.current.as_ref().expect("advance opened the current window");
        Ok(current.compare_and_swap(key, None::<&[u8]>, Some(&[][..]))?.is_ok())
    }

    /// Forgets dedup windows older than the previous one.
    pub fn sweep_dedup(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let keep_from = dedup_window(now).saturating_sub(1);
        let mut windows = self.dedup.lock().expect("dedup lock");
        let mut removed = 0;
        for name in self.db.tree_names() {
            let old = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(DEDUP_TREE_PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < keep_from);
            if old {
                self.db.drop_tree(&name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            // Never keep using a handle to a dropped tree; reopen on next use.
            *windows = DedupWindows::default();
        }
        Ok(removed)
    }

    /// Remembers a small adapter-owned mapping (e.g. which Slack message is the
    /// card of which request), so it survives a restart.
    pub fn link(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.links.insert(key.as_bytes(), value.as_bytes())?;
        Ok(())
    }

    pub fn resolve(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.links.get(key.as_bytes())?.map(|v| String::from_utf8_lossy(&v).to_string()))
    }

    /// Flushes everything (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        // A window boundary: 2026-01-01T00:00:00Z is a multiple of 15 minutes.
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn a_key_is_a_duplicate_for_one_to_two_windows_then_forgotten() {
        let store = Store::temporary().unwrap();
        assert!(store.first_delivery("k1", at(14)).unwrap());
        assert!(!store.first_delivery("k1", at(14)).unwrap(), "same window");
        assert!(!store.first_delivery("k1", at(16)).unwrap(), "next window, two minutes later");
        assert!(!store.first_delivery("k1", at(29)).unwrap(), "15 minutes later");
        assert!(store.first_delivery("k1", at(30)).unwrap(), "two windows on, it is forgotten");
        // Sweeping drops whole windows older than the previous one.
        assert!(store.first_delivery("k2", at(31)).unwrap());
        // Windows -1 (opened as "previous" on first use), 0 and 1 go; 2 and 3 stay.
        assert_eq!(store.sweep_dedup(at(50)).unwrap(), 3);
        assert!(!store.first_delivery("k2", at(50)).unwrap());
        assert!(!store.first_delivery("k1", at(50)).unwrap(), "k1 was seen again at minute 30");
    }

    #[test]
    fn keys_from_the_single_tree_of_earlier_builds_are_kept() {
        let store = Store::temporary().unwrap();
        let legacy = store.db.open_tree(LEGACY_DEDUP_TREE).unwrap();
        let expires = |m: i64| at(m).timestamp_millis().to_be_bytes();
        legacy.insert("live", &expires(20)).unwrap();
        legacy.insert("expired", &expires(5)).unwrap();
        assert!(!store.first_delivery("live", at(10)).unwrap());
        assert!(store.first_delivery("expired", at(10)).unwrap());
        assert!(!store.db.tree_names().iter().any(|n| n == LEGACY_DEDUP_TREE.as_bytes()));
    }
}
