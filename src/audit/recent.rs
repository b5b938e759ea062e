//! The newest outcomes of each service, for `/status`, kept in memory by the
//! sled log's writer (see [`super::AuditLog::newest_outcomes`]).

use super::{AuditError, AuditRecord, RecordKind};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many outcomes per service are kept: `/status` shows 3.
pub(super) const KEEP: usize = 3;

/// The newest [`KEEP`] outcomes of each service asked about. The first
/// question per service loads them from the store; after that the writer
/// adds each committed outcome before it acknowledges the commit, so the
/// answer never comes from the store again. (In sled that load is a reverse
/// index scan, which cost ~2.5% of the bot's CPU under load even when it
/// found nothing.)
#[derive(Default)]
pub(super) struct RecentOutcomes(pub(super) Mutex<HashMap<String, VecDeque<AuditRecord>>>);

impl RecentOutcomes {
    /// The newest `n` (at most [`KEEP`]) outcomes of `service`, oldest first;
    /// `load` reads its newest [`KEEP`] from the store the first time. The
    /// lock is held while it does, so a commit landing meanwhile is either
    /// in what it reads or noted after.
    pub(super) fn newest(
        &self,
        service: &str,
        n: usize,
        load: impl FnOnce() -> Result<Vec<AuditRecord>, AuditError>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        debug_assert!(n <= KEEP);
        let mut services = self.0.lock().expect("recent outcomes lock");
        if !services.contains_key(service) {
            services.insert(service.to_string(), load()?.into());
        }
        let recent = &services[service];
        Ok(recent.iter().skip(recent.len().saturating_sub(n)).cloned().collect())
    }

    /// Adds a durable commit's outcomes to the services already asked about.
    pub(super) fn note<'a>(&self, records: impl IntoIterator<Item = &'a AuditRecord>) {
        let mut services = None;
        for record in records.into_iter().filter(|r| r.entry.kind == RecordKind::Outcome) {
            let Some(service) = &record.entry.service else { continue };
            let services = services.get_or_insert_with(|| self.0.lock().expect("recent outcomes lock"));
            if let Some(recent) = services.get_mut(service) {
                // A first question answered after the commit's inserts
                // already read this one.
                if recent.back().is_none_or(|last| last.seq < record.seq) {
                    recent.push_back(record.clone());
                    if recent.len() > KEEP {
                        recent.pop_front();
                    }
                }
            }
        }
    }

    /// After a failed commit: a first question may have read its records.
    pub(super) fn forget(&self) {
        self.0.lock().expect("recent outcomes lock").clear();
    }
}
