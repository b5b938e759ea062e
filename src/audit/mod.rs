//! The audit trail: append-only, hash-chained records of every request,
//! decision, vote, intent, progress milestone and outcome.
//!
//! - `chain`: how a record is sealed (SHA-256 over its exact bytes, chained to
//!   the previous record's hash) and how a sequence of stored records is verified.
//! - `blocks`: how records lie in sled (blocks, commit seals, the head marks);
//!   `end`: where a stored trail ends and whether a crash explains it.
//! - `sled_log`: the durable log. One writer thread takes appends from any number
//!   of tasks, writes them as one batch and flushes once (group commit); an
//!   append returns only when sled's flush has written its record to disk.
//!   Its [`sled_log::Trail`] reads without writing; `repair` mends an end no
//!   crash explains, keeping every record.
//! - `memory`: the same contract in memory, for tests.
//! - `checkpoint`: signed checkpoints that anchor the chain outside the store.
//!
//! Callers write the intent record and await it *before* an action starts, and
//! tell users something happened only after its record is durable.

mod blocks;
pub mod chain;
pub mod checkpoint;
pub mod contract;
pub mod end;
pub mod memory;
pub(crate) mod queue;
mod recent;
pub mod sled_log;

pub use blocks::MAX_COMMIT;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

pub use chain::{verify, VerifyFailure, VerifySummary};
pub use memory::MemoryAuditLog;
pub use sled_log::SledAuditLog;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A command was received and parsed.
    #[default]
    Request,
    /// The policy decided (allow, deny, pending, break-glass).
    Decision,
    /// Somebody voted on a pending request (accepted or refused).
    Vote,
    /// An action is about to run. Durable before the executor starts.
    Intent,
    /// A milestone while an action runs.
    Progress,
    /// How an action ended.
    Outcome,
    /// A pending request expired; nothing ran.
    Expired,
    /// A `/lock` or `/unlock`.
    Lock,
    /// An incident declared, led, updated, re-graded, noted or resolved
    /// (`request_id` is its id, `INC-3`; `args` the incident as it stands
    /// after the change, so the trail alone can tell its story).
    Incident,
    /// One step of a runbook run (`request_id` is the run's): its intent
    /// (`started`) before it runs, then how it ended.
    Step,
    /// An alert's state changed (fired, re-fired, resolved; `request_id`
    /// is its group, `A-7`), or someone acknowledged, silenced or acted on it.
    Alert,
    /// CI said which commit a service's version was built from, and when
    /// it was committed (`POST /ci/commits`): what lead time is measured from.
    Commit,
    /// Process lifecycle: start, stop.
    System,
}

/// What a caller appends; the log adds sequence number, time and hashes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Platform-qualified identity of who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The actor's display name when the record was written (a label only;
    /// policy uses `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// Platform-qualified channel where it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The parsed arguments (typed request), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// What came of it: the decision, the vote, or how an action ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Verdict>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// On an action's outcome: what the backend read back as running when
    /// the outcome was decided (backend-specific facts, e.g. image and
    /// revision, or which colour takes traffic). Later actions on the service
    /// read it (a blue-green rollback goes to the colour last verified live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<serde_json::Value>,
}

/// The `outcome` of a record: a closed set, stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    // Decisions on a request.
    Allowed,
    Denied,
    Pending,
    BreakGlass,
    // Votes, and what they decided.
    Approve,
    Deny,
    Withdraw,
    Approved,
    Invalidated,
    Expired,
    /// A vote that did not count, or an action refused (the service was busy).
    Refused,
    // Actions.
    Started,
    Succeeded,
    Failed,
    /// The bot could not tell how the action ended (an ambiguous write, or a
    /// state it could not read back); the detail says what it saw.
    Unknown,
    /// opsbot stopped while the action ran.
    Interrupted,
    /// A runbook run stopped by `/runbook abort` before its next step.
    Aborted,
    // Locks.
    Locked,
    Unlocked,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Pending => "pending",
            Verdict::BreakGlass => "break_glass",
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
            Verdict::Withdraw => "withdraw",
            Verdict::Approved => "approved",
            Verdict::Invalidated => "invalidated",
            Verdict::Expired => "expired",
            Verdict::Refused => "refused",
            Verdict::Started => "started",
            Verdict::Succeeded => "succeeded",
            Verdict::Failed => "failed",
            Verdict::Unknown => "unknown",
            Verdict::Interrupted => "interrupted",
            Verdict::Aborted => "aborted",
            Verdict::Locked => "locked",
            Verdict::Unlocked => "unlocked",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuditEntry {
    pub fn new(kind: RecordKind) -> Self {
        Self { kind, ..Default::default() }
    }
    pub fn outcome(mut self, outcome: Verdict) -> Self {
        self.outcome = Some(outcome);
        self
    }
    /// The detail, as plain text: the marks of person-typed text in replies
    /// ([`crate::engine::reply::typed`]) never reach the trail.
    pub fn detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = crate::engine::reply::plain(detail.as_ref()).into_owned();
        self
    }
}

/// A sealed record as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hash of the previous record (all zeros for the first).
    pub prev: String,
    /// SHA-256 of this record's stored body; filled in on read and export.
    #[serde(default)]
    pub hash: String,
}

/// Which records to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub service: Option<String>,
    pub request_id: Option<String>,
    pub kind: Option<RecordKind>,
    pub since: Option<DateTime<Utc>>,
    /// Only records with a greater sequence number.
    pub after_seq: Option<u64>,
    /// Keep only the newest `limit` matches (still returned oldest first).
    pub limit: Option<usize>,
    /// With `limit`: examine at most this many of the newest records, so a
    /// rare match cannot turn a chat reply into a scan of the whole trail.
    pub look_back: Option<usize>,
}

impl AuditQuery {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.service.as_ref().is_none_or(|s| record.entry.service.as_ref() == Some(s))
            && self.request_id.as_ref().is_none_or(|r| record.entry.request_id.as_ref() == Some(r))
            && self.kind.is_none_or(|k| record.entry.kind == k)
            && self.since.is_none_or(|t| record.ts >= t)
            && self.after_seq.is_none_or(|n| record.seq > n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit store failed: {0}")]
    Store(String),
    #[error("the audit writer has stopped")]
    Closed,
    #[error("audit record {seq} cannot be read: {problem}")]
    Corrupt { seq: u64, problem: String },
    /// The stored trail's end is not one a crash can leave: opsbot will not
    /// write to it until `opsbot audit repair` has been run.
    #[error("the audit trail is damaged: {0}")]
    Damaged(String),
}

/// A change to other state that must land in the same commit as an append:
/// the writer runs it after the commit's records and before its flush (a run
/// lock released with its action's outcome). An error fails the commit.
pub type Effect = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The seam the core writes the trail through.
pub trait AuditLog: Send + Sync {
    /// Appends records in order, and makes `then` (if any) in the same
    /// commit; resolves once both are durable.
    fn commit(
        &self,
        entries: Vec<AuditEntry>,
        then: Option<Effect>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>>;
    /// Appends records in order; resolves once they are durable.
    fn append_all(&self, entries: Vec<AuditEntry>) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        self.commit(entries, None)
    }
    /// Reads matching records, oldest first. Meant for bounded questions
    /// (with `limit`); [`AuditLog::each`] streams the whole trail.
    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError>;
    /// Calls `visit` with each committed record matching `query` (its
    /// `limit` ignored), oldest first, one at a time, until it returns false.
    fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError>;
    /// The newest `n` outcome records about `service`, oldest first (what
    /// `/status` shows). A log may answer it without reading the store.
    fn newest_outcomes(&self, service: &str, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.read(&newest_outcomes_query(service, n))
    }
    /// Follow new records as they are committed.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AuditRecord>;
    /// The last durable record (genesis for an empty trail): what a
    /// checkpoint may sign.
    fn head(&self) -> Result<chain::Head, AuditError>;
    /// Why the log takes no more records, once a commit failed in a way
    /// that leaves the store in doubt (liveness reports it).
    fn failed(&self) -> Option<String> {
        None
    }
    /// How many commits were made and the time they took, where the log
    /// measures it (`/metrics`).
    fn commits(&self) -> Option<(u64, std::time::Duration)> {
        None
    }
}

/// How far back chat replies (`/status`, `/audit`) look in the trail
/// (`opsbot audit export` reads all of it).
pub const LOOK_BACK: usize = 20_000;

/// [`AuditLog::newest_outcomes`] as a query.
pub fn newest_outcomes_query(service: &str, n: usize) -> AuditQuery {
    AuditQuery {
        service: Some(service.to_string()),
        kind: Some(RecordKind::Outcome),
        limit: Some(n),
        look_back: Some(LOOK_BACK),
        ..Default::default()
    }
}

impl dyn AuditLog {
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut records = self.append_all(vec![entry]).await?;
        records.pop().ok_or(AuditError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_is_stored_under_its_name() {
        use Verdict::*;
        let all = [
            Allowed,
            Denied,
            Pending,
            BreakGlass,
            Approve,
            Deny,
            Withdraw,
            Approved,
            Invalidated,
            Expired,
            Refused,
            Started,
            Succeeded,
            Failed,
            Unknown,
            Interrupted,
            Locked,
            Unlocked,
        ];
        for verdict in all {
            let stored = serde_json::to_value(verdict).unwrap();
            assert_eq!(stored, verdict.name(), "{verdict:?}");
            assert_eq!(serde_json::from_value::<Verdict>(stored).unwrap(), verdict);
        }
    }
}
