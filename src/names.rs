//! Display names of the people opsbot hears from, so the audit trail says who
//! did something in words a reader outside the chat understands.
//!
//! Identities (`slack:U…`) stay what policy and approvals use; a name is only
//! a label. Adapters learn names (Slack through `users.info`) and tell the
//! registry; every audit record about a known actor then carries `actor_name`.

use crate::audit::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture, Effect};
use crate::event::Actor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most names kept; past that the registry starts over (names are re-learned
/// on the next message from each person).
const MAX_NAMES: usize = 10_000;

/// The latest display name known for each actor.
#[derive(Default)]
pub struct DisplayNames {
    names: Mutex<HashMap<String, String>>,
}

impl DisplayNames {
    pub fn set(&self, actor: &Actor, name: &str) {
        let mut names = self.names.lock().expect("names lock");
        if names.len() >= MAX_NAMES {
            names.clear();
        }
        names.insert(actor.as_str().to_string(), name.to_string());
    }

    pub fn get(&self, actor: &str) -> Option<String> {
        self.names.lock().expect("names lock").get(actor).cloned()
    }
}

/// An audit log that labels each entry's actor with their display name, if
/// one is known, before passing it on.
pub struct Named {
    pub inner: Arc<dyn AuditLog>,
    pub names: Arc<DisplayNames>,
}

impl AuditLog for Named {
    fn commit(
        &self,
        mut entries: Vec<AuditEntry>,
        then: Option<Effect>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        for entry in &mut entries {
            if entry.actor_name.is_none() {
                entry.actor_name = entry.actor.as_deref().and_then(|a| self.names.get(a));
            }
        }
        self.inner.commit(entries, then)
    }

    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.read(query)
    }

    fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError> {
        self.inner.each(query, visit)
    }

    fn head(&self) -> Result<crate::audit::chain::Head, AuditError> {
        self.inner.head()
    }

    fn newest_outcomes(&self, service: &str, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.newest_outcomes(service, n)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AuditRecord> {
        self.inner.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{MemoryAuditLog, RecordKind};

    #[tokio::test]
    async fn records_of_known_actors_carry_their_name() {
        let names = Arc::new(DisplayNames::default());
        names.set(&Actor::parse("slack:U1").unwrap(), "alice");
        let log: Arc<dyn AuditLog> =
            Arc::new(Named { inner: Arc::new(MemoryAuditLog::default()), names: names.clone() });
        let entry = |actor: &str| AuditEntry { actor: Some(actor.into()), ..AuditEntry::new(RecordKind::Request) };
        let records = log.append_all(vec![entry("slack:U1"), entry("slack:U2")]).await.unwrap();
        assert_eq!(records[0].entry.actor_name.as_deref(), Some("alice"));
        assert_eq!(records[1].entry.actor_name, None);
    }
}
