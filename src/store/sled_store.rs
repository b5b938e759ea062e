//! The store on sled: one database in the data directory holding the audit
//! trail (`audit` tree) and the state that must survive a restart — pending
//! approvals, service locks, dedup keys and counters.
//!
//! State writes are not flushed here: the caller follows each with an audit
//! append, whose group-commit flush makes the state durable too.
//!
//! The few open requests and `/lock` holds are also kept in memory, written
//! through on every change: `/status` and every change's policy check ask for
//! them, and the process owns the database (sled locks it), so the copy
//! cannot go stale. Reading them from sled cost ~2.5% of the bot's CPU under
//! load, most of it iterating an empty tree.

use super::{dedup, RunLock, Store, StoreError};
use crate::approval::PendingRequest;
use crate::audit::sled_log::Durable;
use crate::audit::{BoxFuture, Effect, SledAuditLog};
use crate::config::Durability;
use crate::policy::Hold;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// sled page cache size. The hot path only appends (audit blocks, dedup
/// keys) and reads the newest blocks, so a small cache is enough: measured on
/// the load benchmark, 16 → 4 MiB cut resident memory by ~15 MiB at 1 and 16
/// connections at the same throughput, and 4 → 2 MiB (once the vendored
/// sled's LRU honoured the bound, see vendor/sled/OPSBOT.md) another 0.5–2.5
/// MiB at 64 connections, CPU per command unchanged within noise.
const CACHE_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Clone)]
pub struct SledStore {
    /// Every approval request ever opened, by id (open or closed).
    requests: sled::Tree,
    /// Index of the open ones, so the periodic expiry check never scans history.
    open: sled::Tree,
    /// The ids in `open`; the lock is held across each change to both.
    open_ids: Arc<Mutex<BTreeSet<String>>>,
    locks: sled::Tree,
    /// The `hold:` entries of `locks` by service, each decoded or the reason
    /// it cannot be (reported when the hold is asked for, as from sled). The
    /// lock is held across each change to both.
    holds: Arc<RwLock<HashMap<String, Result<Hold, String>>>>,
    dedup: Arc<dedup::Dedup>,
    meta: sled::Tree,
    links: sled::Tree,
    /// Incidents by number (big-endian), each its JSON.
    incidents: sled::Tree,
    /// Alert groups by number (big-endian), each its JSON; and each
    /// sender's group key → the id of its newest group.
    alerts: sled::Tree,
    alert_keys: sled::Tree,
    /// The open ones, decoded (or why one cannot be: then every question
    /// about open incidents fails, closed), kept in memory because every
    /// change request asks.
    open_incidents: Arc<RwLock<std::collections::BTreeMap<u64, Result<crate::incident::Incident, String>>>>,
    audit: Arc<SledAuditLog>,
    /// How every flush, the audit writer's and [`Store::flush`], is made
    /// durable (with `durability = "fdatasync"`, `fdatasync` on sled's log).
    durable: Durable,
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, with the default
    /// durability (`fdatasync` after every commit).
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, Durability::default())
    }

    /// Opens (creating if needed) the store in `dir`; with
    /// [`Durability::Fdatasync`] every audit commit also `fdatasync`s sled's
    /// log file.
    pub fn open_with(dir: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        // A trail whose end no crash explains is refused before anything is
        // written, not even sled's own recovery: the directory stays as it
        // was found, as evidence.
        // Any other failure to read it (a corrupt log, say) refuses too,
        // rather than letting a writing open run recovery over it.
        if let Some(read) = ReadOnly::probe(dir)? {
            if let crate::audit::end::End::Broken { problem } = read.trail.end()? {
                return Err(crate::audit::AuditError::Damaged(problem).into());
            }
        }
        let db = open_db(dir)?;
        let sync = match durability {
            Durability::Flush => None,
            // sled 0.34 keeps its whole log in this one file; a second handle
            // on it is enough for fdatasync, which acts on the file, not the fd.
            Durability::Fdatasync => {
                let log = dir.join("db");
                Some(Arc::new(std::fs::File::open(&log).map_err(|e| StoreError::Open {
                    path: log.display().to_string(),
                    reason: format!("cannot open sled's log file for fdatasync: {e}"),
                })?))
            }
        };
        SledStore::from_db(db, sync)
    }

    /// A throw-away store (deleted on drop), for tests and benchmarks.
    pub fn temporary() -> Result<SledStore, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        SledStore::from_db(db, None)
    }

    fn from_db(db: sled::Db, sync: Option<Arc<std::fs::File>>) -> Result<SledStore, StoreError> {
        let dedup = Arc::new(dedup::Dedup::new(db.clone()));
        let durable = Durable { db: db.clone(), sync };
        let open = db.open_tree("open_requests")?;
        let mut open_ids = BTreeSet::new();
        for item in open.iter() {
            let (id, _) = item?;
            open_ids.insert(String::from_utf8_lossy(&id).to_string());
        }
        let locks = db.open_tree("locks")?;
        let mut holds = HashMap::new();
        for item in locks.scan_prefix(HOLD_PREFIX) {
            let (key, bytes) = item?;
            let service = String::from_utf8_lossy(&key[HOLD_PREFIX.len()..]).to_string();
            holds.insert(service, decode_hold(&bytes));
        }
        let incidents = db.open_tree("incidents")?;
        let mut open_incidents = std::collections::BTreeMap::new();
        for item in incidents.iter() {
            let (key, bytes) = item?;
            let number = key.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            match serde_json::from_slice::<crate::incident::Incident>(&bytes) {
                Ok(incident) if !incident.is_open() => {}
                Ok(incident) => {
                    open_incidents.insert(number, Ok(incident));
                }
                Err(e) => {
                    open_incidents.insert(number, Err(format!("incident {number}: {e}")));
                }
            }
        }
        Ok(SledStore {
            incidents,
            alerts: db.open_tree("alerts")?,
            alert_keys: db.open_tree("alert_keys")?,
            open_incidents: Arc::new(RwLock::new(open_incidents)),
            requests: db.open_tree("requests")?,
            open,
            open_ids: Arc::new(Mutex::new(open_ids)),
            locks,
            holds: Arc::new(RwLock::new(holds)),
            dedup: dedup.clone(),
            meta: db.open_tree("meta")?,
            links: db.open_tree("links")?,
            audit: Arc::new(SledAuditLog::open_with_hook(
                &db,
                Box::new(move || dedup.persist_queued()),
                durable.clone(),
            )?),
            durable,
        })
    }

    pub fn audit(&self) -> Arc<SledAuditLog> {
        self.audit.clone()
    }

    /// Verifies the audit chain.
    pub fn verify_audit(&self) -> Result<crate::audit::VerifySummary, crate::audit::VerifyFailure> {
        self.audit.verify()
    }

    /// Everything besides the trail and the dedup windows, for `opsbot store
    /// migrate`. Fails on the first value that cannot be read.
    pub fn state(&self) -> Result<super::migrate::SledState, StoreError> {
        fn all<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<T>, StoreError> {
            tree.iter()
                .map(|item| {
                    let (key, value) = item?;
                    serde_json::from_slice(&value)
                        .map_err(|e| StoreError::Corrupt(format!("{what} {}: {e}", String::from_utf8_lossy(&key))))
                })
                .collect()
        }
        let mut run_locks = Vec::new();
        let mut holds = Vec::new();
        for item in self.locks.iter() {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let unreadable = |e: serde_json::Error| StoreError::Corrupt(format!("{key}: {e}"));
            if let Some(service) = key.strip_prefix("run:") {
                run_locks.push((service.to_string(), serde_json::from_slice(&value).map_err(unreadable)?));
            } else if let Some(service) = key.strip_prefix(HOLD_PREFIX) {
                holds.push((service.to_string(), serde_json::from_slice(&value).map_err(unreadable)?));
            }
        }
        let links = self
            .links
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((String::from_utf8_lossy(&key).into_owned(), String::from_utf8_lossy(&value).into_owned()))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let counter = |key: &str| -> Result<u64, StoreError> {
            Ok(self.meta.get(key)?.and_then(|b| b.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
        };
        Ok(super::migrate::SledState {
            requests: all(&self.requests, "request")?,
            run_locks,
            holds,
            incidents: all(&self.incidents, "incident")?,
            alerts: all(&self.alerts, "alert group")?,
            links,
            counters: [counter("request_counter")?, counter("incident_counter")?, counter("alert_counter")?],
        })
    }

    /// Loads the dedup windows now rather than at the first delivery.
    pub fn warm_dedup(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.dedup.warm(now)
    }
}

impl SledStore {
    /// The next value of the counter `key` in `meta`: 1, 2 … never reused.
    fn count_up(&self, key: &str) -> Result<u64, StoreError> {
        let next = self.meta.update_and_fetch(key, |old| {
            let n = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(next.and_then(|b| b.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(1))
    }
}

/// `INC-12` → 12, the key incidents are kept under.
fn incident_number(id: &str) -> Option<u64> {
    id.strip_prefix("INC-").and_then(|n| n.parse().ok())
}

impl Store for SledStore {
    fn next_alert_id(&self) -> Result<String, StoreError> {
        Ok(format!("A-{}", self.count_up("alert_counter")?))
    }

    fn put_alert(&self, group: &crate::alert::group::AlertGroup) -> Result<(), StoreError> {
        let number = super::alert_number(&group.id)
            .ok_or_else(|| StoreError::Corrupt(format!("`{}` is not an alert id", group.id)))?;
        let bytes = serde_json::to_vec(group).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.alerts.insert(number.to_be_bytes(), bytes)?;
        self.alert_keys.insert(super::alert_key(group.source, &group.key), group.id.as_bytes())?;
        Ok(())
    }

    fn get_alert(&self, id: &str) -> Result<Option<crate::alert::group::AlertGroup>, StoreError> {
        let Some(number) = super::alert_number(id) else { return Ok(None) };
        match self.alerts.get(number.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("alert group {id}: {e}"))),
        }
    }

    fn alert_for(
        &self,
        source: crate::alert::Source,
        key: &str,
    ) -> Result<Option<crate::alert::group::AlertGroup>, StoreError> {
        match self.alert_keys.get(super::alert_key(source, key))? {
            None => Ok(None),
            Some(id) => self.get_alert(&String::from_utf8_lossy(&id)),
        }
    }

    fn next_incident_id(&self) -> Result<String, StoreError> {
        Ok(format!("INC-{}", self.count_up("incident_counter")?))
    }

    fn put_incident(&self, incident: &crate::incident::Incident) -> Result<(), StoreError> {
        let Some(number) = incident_number(&incident.id) else {
            return Err(StoreError::Corrupt(format!("`{}` is not an incident id", incident.id)));
        };
        let bytes = serde_json::to_vec(incident).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut open = self.open_incidents.write().expect("open incidents lock");
        self.incidents.insert(number.to_be_bytes(), bytes)?;
        if incident.is_open() {
            open.insert(number, Ok(incident.clone()));
        } else {
            open.remove(&number);
        }
        Ok(())
    }

    fn get_incident(&self, id: &str) -> Result<Option<crate::incident::Incident>, StoreError> {
        let Some(number) = incident_number(id) else { return Ok(None) };
        match self.incidents.get(number.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))
            }
        }
    }

    fn open_incidents(&self) -> Result<Vec<crate::incident::Incident>, StoreError> {
        let open = self.open_incidents.read().expect("open incidents lock");
        open.values().map(|i| i.clone().map_err(StoreError::Corrupt)).collect()
    }

    /// Next request id, `r-1`, `r-2` … (never reused, also across restarts).
    fn next_request_id(&self) -> Result<String, StoreError> {
        Ok(format!("r-{}", self.count_up("request_counter")?))
    }

    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut open_ids = self.open_ids.lock().expect("open ids lock");
        self.requests.insert(request.id.as_bytes(), bytes)?;
        if request.state.is_open() {
            self.open.insert(request.id.as_bytes(), &[])?;
            open_ids.insert(request.id.clone());
        } else {
            self.open.remove(request.id.as_bytes())?;
            open_ids.remove(&request.id);
        }
        Ok(())
    }

    fn get_pending(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        match self.requests.get(id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt(format!("request {id}: {e}")))
            }
        }
    }

    /// Requests still open (state pending), via the open ids kept in memory.
    fn open_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        let ids: Vec<String> = self.open_ids.lock().expect("open ids lock").iter().cloned().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(request) = self.get_pending(&id)?.filter(|r| r.state.is_open()) {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// How many requests are open, without reading them.
    fn open_count(&self) -> usize {
        self.open_ids.lock().expect("open ids lock").len()
    }

    /// Takes the run lock on `service` unless someone else holds an unexpired one.
    fn acquire_run_lock(
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
    fn release_run_lock(&self, service: &str, request_id: &str) -> Result<(), StoreError> {
        release_run_lock(&self.locks, service, request_id)
    }

    /// [`Store::release_run_lock`] as an [`Effect`], for the audit writer to
    /// make in the same commit as the action's outcome record, after it: a
    /// crash can keep the outcome and lose the release (recovery releases
    /// the lock, seeing the outcome), never the other way round.
    fn run_lock_release(&self, service: &str, request_id: &str) -> Effect {
        let (locks, service, request_id) = (self.locks.clone(), service.to_string(), request_id.to_string());
        Box::new(move || release_run_lock(&locks, &service, &request_id).map_err(|e| e.to_string()))
    }

    /// Every run lock currently stored, as (service, lock).
    fn run_locks(&self) -> Result<Vec<(String, RunLock)>, StoreError> {
        let mut out = Vec::new();
        for item in self.locks.scan_prefix("run:") {
            let (key, bytes) = item?;
            let service = String::from_utf8_lossy(&key[4..]).to_string();
            let lock: RunLock = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((service, lock));
        }
        Ok(out)
    }

    fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(hold).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut holds = self.holds.write().expect("holds lock");
        self.locks.insert(format!("{HOLD_PREFIX}{service}"), bytes)?;
        holds.insert(service.to_string(), Ok(hold.clone()));
        Ok(())
    }

    /// The `/lock` on `service`, if one is in force at `now`.
    fn active_hold(&self, service: &str, now: DateTime<Utc>) -> Result<Option<Hold>, StoreError> {
        match self.holds.read().expect("holds lock").get(service) {
            None => Ok(None),
            Some(Ok(hold)) => Ok((hold.until > now).then(|| hold.clone())),
            Some(Err(problem)) => Err(StoreError::Corrupt(problem.clone())),
        }
    }

    fn remove_hold(&self, service: &str) -> Result<Option<Hold>, StoreError> {
        let mut holds = self.holds.write().expect("holds lock");
        let removed = self.locks.remove(format!("{HOLD_PREFIX}{service}"))?;
        holds.remove(service);
        Ok(removed.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Records `key` as delivered; false if it was already delivered within
    /// the dedup window (a retry or duplicate delivery). See [`dedup`].
    fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.dedup.first_delivery(key, now)
    }

    /// Forgets dedup windows older than the previous one.
    fn sweep_dedup(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.dedup.sweep(now)
    }

    /// Remembers a small adapter-owned mapping (e.g. which Slack message is the
    /// card of which request), so it survives a restart.
    fn link(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.links.insert(key.as_bytes(), value.as_bytes())?;
        Ok(())
    }

    fn resolve(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.links.get(key.as_bytes())?.map(|v| String::from_utf8_lossy(&v).to_string()))
    }

    /// Flushes everything (used at shutdown) as the audit writer does after
    /// each commit, `fdatasync` included if configured.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let durable = self.durable.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || durable.flush())
                .await
                .map_err(|e| StoreError::Io(format!("the flush did not finish: {e}")))??;
            Ok(())
        })
    }
}

/// Opens sled in `dir` (which must exist), or says another process holds it.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    open_sled(dir, false)
}

/// `open` for a store this process has just closed: sled lets go of its
/// file lock only once its IO jobs for the old handle have run (a moment,
/// longer on a busy machine), so a lock still held is waited out, up to
/// five seconds. Another process holding it is then still reported.
fn again<T>(mut open: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open() {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            result => return result,
        }
    }
}

impl SledStore {
    /// [`SledStore::open`] right after this process closed the same store.
    pub fn reopen(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::reopen_with(dir, Durability::default())
    }

    /// [`SledStore::open_with`] right after this process closed the same store.
    pub fn reopen_with(dir: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        again(|| SledStore::open_with(dir, durability))
    }
}

/// Opens sled in `dir`; `read_only` recovers in memory and writes nothing
/// (the vendored sled's read-only open: no snapshot, no zeroing of a torn
/// log tail, no flush; see vendor/sled/OPSBOT.md).
fn open_sled(dir: &Path, read_only: bool) -> Result<sled::Db, StoreError> {
    // sled's default page cache is 1 GiB; opsbot's working set is small
    // (recent records, open requests), so keep memory flat as the trail grows.
    let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
    let config = if read_only { config.read_only(true).flush_every_ms(None) } else { config };
    config.open().map_err(|e| match &e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
            StoreError::Locked { path: dir.display().to_string() }
        }
        _ => StoreError::Open { path: dir.display().to_string(), reason: e.to_string() },
    })
}

/// An existing store opened only to be read (`audit verify`, `export`,
/// `tail` with no bot running): not a byte of the data directory changes —
/// not even sled's own crash recovery (snapshot, torn tail) is written. It
/// still holds sled's lock on the directory while it lives.
pub struct ReadOnly {
    pub db: sled::Db,
    pub trail: crate::audit::sled_log::Trail,
}

impl ReadOnly {
    pub fn open(dir: &Path) -> Result<ReadOnly, StoreError> {
        ReadOnly::probe(dir)?.ok_or_else(|| StoreError::Open {
            path: dir.display().to_string(),
            reason: "there is no opsbot store here (nothing has been recorded yet); check --config or --data-dir"
                .into(),
        })
    }

    /// `None` when `dir` holds no trail yet: no sled log, one that never
    /// got its first byte, or a store whose trees were created but hold
    /// nothing and no audit tree yet (a first start cut short). Every other
    /// failure to open it is an error: a log without sled's config file,
    /// or opsbot state with no audit trail (deleted), is not a new store.
    fn probe(dir: &Path) -> Result<Option<ReadOnly>, StoreError> {
        let log = dir.join("db");
        if !log.is_file() || std::fs::metadata(&log).map(|m| m.len() == 0).unwrap_or(false) {
            return Ok(None);
        }
        let conf = dir.join("conf");
        if !conf.is_file() || std::fs::metadata(&conf).map(|m| m.len() <= 8).unwrap_or(true) {
            return Err(StoreError::Open {
                path: dir.display().to_string(),
                reason: "sled's log is here but its config file `conf` is missing or empty (a power cut in a new store's first seconds can do that); opsbot will not recover a store it cannot check. Copy `conf` from a backup, a copy of this store, or any store made by the same opsbot version (its contents are the same), or move this directory aside to start a new trail".into(),
            });
        }
        let db = open_sled(dir, true)?;
        let tree = crate::audit::sled_log::existing_tree(&db)?;
        let trail = tree.map(crate::audit::sled_log::Trail::new);
        let deleted = match &trail {
            None => true,
            Some(trail) => trail.newest_seq()? == 0 && !trail.has_layout_version()?,
        };
        if deleted {
            // Every store opsbot opened has its audit tree, with the layout
            // version in it, before any other state is written: state
            // without them is a trail deleted (its tree dropped or emptied).
            for name in STATE_TREES {
                let names = db.tree_names();
                if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
                    continue;
                }
                if db.open_tree(name).map(|t| !t.is_empty()).unwrap_or(true) {
                    return Err(crate::audit::AuditError::Damaged(format!(
                        "the store holds opsbot state (`{name}`) but no audit trail: the trail was deleted. Keep this directory as evidence; move it aside to start a new trail"
                    ))
                    .into());
                }
            }
        }
        Ok(trail.map(|trail| ReadOnly { db, trail }))
    }
}

/// The trees of opsbot's state besides the trail (the dedup windows are
/// left out: the first commit's hook may fill one before its records land).
const STATE_TREES: [&str; 8] =
    ["requests", "open_requests", "locks", "meta", "links", "incidents", "alerts", "alert_keys"];

/// `opsbot audit repair` on the store in `dir` (no bot may be running).
/// Verifies first on a read-only open: a store that needs no repair, or
/// that no repair can fix (a broken chain), is left exactly as it was.
pub fn repair(dir: &Path) -> Result<crate::audit::sled_log::Repaired, StoreError> {
    let planned = {
        let read = ReadOnly::open(dir)?;
        crate::audit::sled_log::repair(&read.db, false)?
    };
    if planned.problem.is_none() {
        return Ok(planned);
    }
    let db = again(|| open_db(dir))?;
    Ok(crate::audit::sled_log::repair(&db, true)?)
}

fn release_run_lock(locks: &sled::Tree, service: &str, request_id: &str) -> Result<(), StoreError> {
    let key = format!("run:{service}");
    if let Some(bytes) = locks.get(&key)? {
        let ours = match serde_json::from_slice::<RunLock>(&bytes) {
            Ok(held) => held.request_id == request_id,
            // An unreadable lock is nobody's: releasing it frees the service
            // (and keeps this release, made in an outcome's commit, from failing it).
            Err(e) => {
                tracing::warn!(%service, error = %e, "an unreadable run lock was released");
                true
            }
        };
        if ours {
            let _ = locks.compare_and_swap(&key, Some(bytes), None::<Vec<u8>>)?;
        }
    }
    Ok(())
}

/// Keys of `/lock` holds in the `locks` tree: this, then the service.
const HOLD_PREFIX: &str = "hold:";

fn decode_hold(bytes: &[u8]) -> Result<Hold, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the stored lock is unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Actor;
    use crate::store::contract::pending;
    use chrono::TimeZone;

    /// Opens a store dropped earlier in this process. sled lets go of its
    /// file lock only once its IO jobs for the old handle have run, on a thread
    /// pool shared with the tests running alongside, so the lock can still be
    /// held for a moment.
    fn reopen(dir: &Path) -> SledStore {
        SledStore::reopen(dir).unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        // A window boundary: 2026-01-01T00:00:00Z is a multiple of 15 minutes.
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn open_requests_and_holds_follow_every_change_and_survive_a_restart() {
        use crate::approval::RequestState::{Denied, Pending};
        let dir = tempfile::tempdir().unwrap();
        let hold = Hold { by: Actor::parse("slack:UBOB").unwrap(), reason: "migration".into(), until: at(60) };
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_pending(&pending("r-1", Pending)).unwrap();
            store.put_pending(&pending("r-2", Pending)).unwrap();
            store.put_pending(&pending("r-3", Pending)).unwrap();
            store.put_pending(&pending("r-2", Denied)).unwrap();
            store.set_hold("api", &hold).unwrap();
            store.set_hold("web", &hold).unwrap();
            assert_eq!(store.remove_hold("web").unwrap(), Some(hold.clone()));
            assert_eq!(store.open_count(), 2);
            assert_eq!(store.active_hold("web", at(1)).unwrap(), None);
        }
        let store = reopen(dir.path());
        let open: Vec<String> = store.open_requests().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(open, ["r-1", "r-3"]);
        assert_eq!(store.open_count(), 2);
        assert_eq!(store.active_hold("api", at(1)).unwrap(), Some(hold.clone()));
        assert_eq!(store.active_hold("api", at(61)).unwrap(), None, "an expired hold is not in force");
        assert_eq!(store.active_hold("web", at(1)).unwrap(), None);
        store.put_pending(&pending("r-1", Denied)).unwrap();
        assert_eq!(store.open_count(), 1);
        assert_eq!(store.remove_hold("api").unwrap(), Some(hold));
        assert_eq!(store.active_hold("api", at(1)).unwrap(), None);
    }

    #[test]
    fn an_unreadable_stored_hold_is_an_error_not_an_unlocked_service() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.locks.insert("hold:api", &b"{not json"[..]).unwrap();
        }
        let store = reopen(dir.path());
        match store.active_hold("api", at(1)) {
            Err(StoreError::Corrupt(problem)) => assert!(problem.contains("unreadable"), "{problem}"),
            other => panic!("expected a corrupt-store error, got {other:?}"),
        }
        assert_eq!(store.active_hold("web", at(1)).unwrap(), None);
    }

    #[test]
    fn open_incidents_survive_a_restart_and_an_unreadable_one_fails_closed() {
        use crate::store::contract::incident;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.next_incident_id().unwrap(), "INC-1");
            store.put_incident(&incident("INC-1", 1)).unwrap();
            let mut resolved = incident("INC-2", 2);
            resolved.resolved_at = Some(at(5));
            store.put_incident(&resolved).unwrap();
        }
        let store = reopen(dir.path());
        let open: Vec<String> = store.open_incidents().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(open, ["INC-1"]);
        assert_eq!(store.next_incident_id().unwrap(), "INC-2", "the counter survives too");
        store.incidents.insert(3u64.to_be_bytes(), &b"{not json"[..]).unwrap();
        drop(store);
        // An incident that cannot be read might be an open SEV1: every
        // question about open incidents fails rather than answer "none".
        let store = reopen(dir.path());
        match store.open_incidents() {
            Err(StoreError::Corrupt(problem)) => assert!(problem.contains("incident 3"), "{problem}"),
            other => panic!("expected a corrupt-store error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn fdatasync_durability_syncs_sleds_log_file_and_commits_as_usual() {
        use crate::audit::{AuditEntry, AuditLog, AuditQuery, RecordKind};
        let dir = tempfile::tempdir().unwrap();
        let log_len = || std::fs::metadata(dir.path().join("db")).map(|m| m.len()).unwrap_or(0);
        {
            // Opening needs sled's log file to be where the sync handle looks.
            let store = SledStore::open_with(dir.path(), Durability::Fdatasync).unwrap();
            let before = log_len();
            let audit: Arc<dyn AuditLog> = store.audit();
            for _ in 0..3 {
                audit.append(AuditEntry::new(RecordKind::Request)).await.unwrap();
            }
            assert!(log_len() > before, "the commits went to the file that is synced");
            store.audit().close();
        }
        let store = reopen(dir.path());
        assert_eq!(store.audit().read(&AuditQuery::default()).unwrap().len(), 3);
        assert!(store.verify_audit().is_ok());
    }

    #[tokio::test]
    async fn keys_ride_on_the_next_audit_commit_and_survive_a_restart() {
        use crate::audit::{AuditEntry, AuditLog, RecordKind};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store.first_delivery("t1", at(3)).unwrap());
            assert!(store.first_delivery("t2", at(3)).unwrap());
            let audit: Arc<dyn AuditLog> = store.audit();
            audit.append(AuditEntry::new(RecordKind::Request)).await.unwrap();
            // Stored as packed lists (2-byte length + key), one per commit.
            let tree = store.durable.db.open_tree(format!("dedup-{}", dedup::window_of(at(3)))).unwrap();
            let stored: usize = tree.iter().values().map(|v| v.unwrap().len()).sum();
            assert_eq!(stored, 2 * (2 + 2), "both keys, durable when the append returned");
            // Taken after the commit: only the writer's close stores it.
            assert!(store.first_delivery("t3", at(3)).unwrap());
            store.audit().close();
        }
        let store = reopen(dir.path());
        for key in ["t1", "t2", "t3"] {
            assert!(!store.first_delivery(key, at(20)).unwrap(), "{key} is remembered after a restart");
        }
        assert!(store.first_delivery("t4", at(20)).unwrap());
    }

    /// Opens `dir` until sled has let go of it, returning the error.
    fn open_err(dir: &Path) -> StoreError {
        match SledStore::reopen(dir) {
            Err(e) => e,
            Ok(_) => panic!("{} was opened", dir.display()),
        }
    }

    /// Every byte of the files in `dir`, by name.
    fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
            .collect()
    }

    /// Only a store with nothing in it is new. A first start cut off before
    /// sled's log got a byte opens as a new store; a log whose `conf` is
    /// missing or garbage, and opsbot state whose audit trail was deleted,
    /// are refused as found, never handed to a writing open (which would
    /// write a new `conf`, run recovery, or start a new trail at record 1).
    #[test]
    fn only_an_empty_store_is_new_and_an_unreadable_or_trail_less_one_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"").unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        drop(SledStore::open(dir.path()).expect("a log with no byte yet is a new store"));

        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        let conf = std::fs::read(dir.path().join("conf")).unwrap();
        std::fs::remove_file(dir.path().join("conf")).unwrap();
        let before = files(dir.path());
        let refused = open_err(dir.path());
        assert!(refused.to_string().contains("`conf` is missing"), "{refused}");
        assert_eq!(files(dir.path()), before, "nothing was written, no conf created");
        std::fs::write(dir.path().join("conf"), b"\xff\xfe not sled's config").unwrap();
        let before = files(dir.path());
        assert!(matches!(open_err(dir.path()), StoreError::Open { .. }));
        assert_eq!(files(dir.path()), before, "nothing was written");
        std::fs::write(dir.path().join("conf"), conf).unwrap();

        // opsbot state, but the audit tree is gone.
        {
            let store = reopen(dir.path());
            let hold = Hold { by: Actor::parse("slack:U1").unwrap(), reason: "x".into(), until: at(60) };
            store.set_hold("api", &hold).unwrap();
            store.audit().close();
            store.durable.db.drop_tree("audit").unwrap();
            store.durable.db.flush().unwrap();
        }
        let before = files(dir.path());
        let refused = open_err(dir.path());
        assert!(refused.to_string().contains("no audit trail"), "{refused}");
        assert_eq!(files(dir.path()), before, "nothing was written");

        // The same with the audit tree emptied rather than dropped.
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let hold = Hold { by: Actor::parse("slack:U1").unwrap(), reason: "x".into(), until: at(60) };
            store.set_hold("api", &hold).unwrap();
            store.audit().close();
            store.durable.db.open_tree("audit").unwrap().clear().unwrap();
            store.durable.db.flush().unwrap();
        }
        let refused = open_err(dir.path());
        assert!(refused.to_string().contains("no audit trail"), "{refused}");
    }
}
