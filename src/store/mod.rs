//! Durable state besides the audit trail: pending approvals, service locks,
//! `/lock` holds, dedup keys, request ids and adapter links. [`Store`] is the
//! seam the core and the adapters use; [`SledStore`] keeps it in the same sled
//! database as the trail (so an audit commit's flush makes it durable), and
//! [`MemoryStore`] in memory for tests of the core. One contract test suite
//! runs against both, so the in-memory one cannot drift. Only this module and
//! `audit` import sled.

use crate::alert::group::AlertGroup;
use crate::approval::PendingRequest;
use crate::audit::{AuditError, BoxFuture, Effect};
use crate::incident::Incident;
use crate::policy::Hold;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod dedup;
mod memory;
pub mod migrate;
pub mod postgres;
mod sled_store;

/// The contract every [`Store`] keeps, as checks any store can be given
/// (tests only; public so the PostgreSQL tests can run it too).
#[doc(hidden)]
pub mod contract;

pub use memory::MemoryStore;
pub use sled_store::{repair, ReadOnly, SledStore};

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

/// The key a sender's group key is looked up by.
fn alert_key(source: crate::alert::Source, key: &str) -> String {
    format!("{}:{key}", source.name())
}

/// `A-12` → 12, the key alert groups are kept under.
fn alert_number(id: &str) -> Option<u64> {
    id.strip_prefix("A-").and_then(|n| n.parse().ok())
}

/// The per-service run lock: one mutating action at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLock {
    pub request_id: String,
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// The state the core keeps besides the trail. Writes are made durable by the
/// audit commit that follows them (see [`SledStore`]).
pub trait Store: Send + Sync {
    /// The leader's term this process writes in, when replicas share the
    /// store (PostgreSQL); `None` for a store only one process opens.
    fn term(&self) -> Option<u64> {
        None
    }
    /// Next request id, `r-1`, `r-2` … (never reused, also across restarts).
    fn next_request_id(&self) -> Result<String, StoreError>;
    /// Stores an approval request (open or closed).
    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError>;
    fn get_pending(&self, id: &str) -> Result<Option<PendingRequest>, StoreError>;
    /// Requests still open (state pending).
    fn open_requests(&self) -> Result<Vec<PendingRequest>, StoreError>;
    /// How many requests are open, without reading them.
    fn open_count(&self) -> usize;
    /// Takes the run lock on `service` unless someone else holds an unexpired one.
    fn acquire_run_lock(
        &self,
        service: &str,
        lock: RunLock,
        now: DateTime<Utc>,
    ) -> Result<Result<(), RunLock>, StoreError>;
    /// Releases the run lock if `request_id` still holds it.
    fn release_run_lock(&self, service: &str, request_id: &str) -> Result<(), StoreError>;
    /// [`Store::release_run_lock`] as an [`Effect`], to be made in the same
    /// commit as the action's outcome record.
    fn run_lock_release(&self, service: &str, request_id: &str) -> Effect;
    /// Every run lock currently stored, as (service, lock).
    fn run_locks(&self) -> Result<Vec<(String, RunLock)>, StoreError>;
    fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError>;
    /// The `/lock` on `service`, if one is in force at `now`.
    fn active_hold(&self, service: &str, now: DateTime<Utc>) -> Result<Option<Hold>, StoreError>;
    fn remove_hold(&self, service: &str) -> Result<Option<Hold>, StoreError>;
    /// Records `key` as delivered; false if it was already delivered within
    /// the dedup window (a retry or duplicate delivery).
    fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Forgets dedup windows older than the previous one; returns how many.
    fn sweep_dedup(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;
    /// Next incident id, `INC-1`, `INC-2` … (never reused).
    fn next_incident_id(&self) -> Result<String, StoreError>;
    /// Stores an incident (open or resolved).
    fn put_incident(&self, incident: &Incident) -> Result<(), StoreError>;
    fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;
    /// Incidents not yet resolved, oldest first (read on every change
    /// request, so kept in memory).
    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError>;
    /// Next alert group id, `A-1`, `A-2` … (never reused).
    fn next_alert_id(&self) -> Result<String, StoreError>;
    /// Stores an alert group, and makes it the newest of its sender's group key.
    fn put_alert(&self, group: &AlertGroup) -> Result<(), StoreError>;
    fn get_alert(&self, id: &str) -> Result<Option<AlertGroup>, StoreError>;
    /// The newest group stored for `source`'s group key `key`.
    fn alert_for(&self, source: crate::alert::Source, key: &str) -> Result<Option<AlertGroup>, StoreError>;
    /// Remembers a small adapter-owned mapping (which Slack message is the
    /// card of which request), so it survives a restart.
    fn link(&self, key: &str, value: &str) -> Result<(), StoreError>;
    fn resolve(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
