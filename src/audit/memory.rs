//! The audit contract in memory, for tests of the core that need no disk.

use super::chain::{self, GENESIS};
use super::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture, Effect};
use chrono::Utc;
use std::sync::Mutex;
use tokio::sync::broadcast;

pub struct MemoryAuditLog {
    records: Mutex<Vec<(AuditRecord, Vec<u8>)>>,
    committed: broadcast::Sender<AuditRecord>,
    /// Set when a commit failed: like the sled log, it then takes nothing more.
    failed: Mutex<Option<String>>,
}

impl Default for MemoryAuditLog {
    fn default() -> Self {
        Self { records: Mutex::new(Vec::new()), committed: broadcast::channel(1024).0, failed: Mutex::new(None) }
    }
}

impl MemoryAuditLog {
    pub fn verify(&self) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        let records = self.records.lock().expect("audit lock");
        chain::verify(records.iter().map(|(r, b)| (r.seq, b.clone())), None)
    }
}

impl AuditLog for MemoryAuditLog {
    fn commit(
        &self,
        entries: Vec<AuditEntry>,
        then: Option<Effect>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        let mut records = self.records.lock().expect("audit lock");
        if let Some(problem) = self.failed.lock().expect("audit lock").clone() {
            return Box::pin(async move {
                Err(AuditError::Store(format!("the audit store failed earlier ({problem}) and takes no more records")))
            });
        }
        // The state change first: if it fails, nothing is appended (one commit).
        if let Some(Err(e)) = then.map(|effect| effect()) {
            *self.failed.lock().expect("audit lock") = Some(format!("state change: {e}"));
            return Box::pin(async move { Err(AuditError::Store(format!("state change: {e}"))) });
        }
        let mut out = Vec::new();
        for entry in entries {
            let (seq, prev) = match records.last() {
                Some((r, _)) => (r.seq + 1, r.hash.clone()),
                None => (1, GENESIS.to_string()),
            };
            let (record, stored) = chain::seal(seq, Utc::now(), entry, &prev);
            let _ = self.committed.send(record.clone());
            records.push((record.clone(), stored));
            out.push(record);
        }
        Box::pin(async move { Ok(out) })
    }

    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let records = self.records.lock().expect("audit lock");
        let skip = match (query.limit, query.look_back) {
            (Some(_), Some(look_back)) => records.len().saturating_sub(look_back),
            _ => 0,
        };
        let mut out: Vec<AuditRecord> =
            records.iter().skip(skip).map(|(r, _)| r).filter(|r| query.matches(r)).cloned().collect();
        if let Some(limit) = query.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        Ok(out)
    }

    fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError> {
        let matching: Vec<AuditRecord> = {
            let records = self.records.lock().expect("audit lock");
            records.iter().map(|(r, _)| r).filter(|r| query.matches(r)).cloned().collect()
        };
        for record in matching {
            if !visit(record) {
                break;
            }
        }
        Ok(())
    }

    fn head(&self) -> Result<chain::Head, AuditError> {
        let records = self.records.lock().expect("audit lock");
        Ok(records
            .last()
            .map(|(r, _)| chain::Head { seq: r.seq, hash: r.hash.clone() })
            .unwrap_or_else(chain::Head::genesis))
    }

    fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.committed.subscribe()
    }
}
