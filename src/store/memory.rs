//! The [`Store`] contract in memory, for tests of the core that need no disk.
//! The contract tests (`contract.rs`) run against it and the sled store alike.

use super::{RunLock, Store, StoreError};
use crate::approval::PendingRequest;
use crate::audit::{BoxFuture, Effect};
use crate::policy::Hold;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    counter: u64,
    requests: BTreeMap<String, PendingRequest>,
    run_locks: BTreeMap<String, RunLock>,
    holds: HashMap<String, Hold>,
    /// Dedup window number → the keys taken in it.
    windows: BTreeMap<u64, HashSet<String>>,
    links: HashMap<String, String>,
    incident_counter: u64,
    incidents: BTreeMap<u64, crate::incident::Incident>,
    alert_counter: u64,
    alerts: BTreeMap<u64, crate::alert::group::AlertGroup>,
    alert_keys: HashMap<String, String>,
}

#[derive(Default, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }
}

fn release(state: &mut State, service: &str, request_id: &str) {
    if state.run_locks.get(service).is_some_and(|held| held.request_id == request_id) {
        state.run_locks.remove(service);
    }
}

/// `INC-12` → 12, the order incidents are kept in.
fn incident_number(id: &str) -> u64 {
    id.strip_prefix("INC-").and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl Store for MemoryStore {
    fn next_alert_id(&self) -> Result<String, StoreError> {
        let mut state = self.state();
        state.alert_counter += 1;
        Ok(format!("A-{}", state.alert_counter))
    }

    fn put_alert(&self, group: &crate::alert::group::AlertGroup) -> Result<(), StoreError> {
        let number = super::alert_number(&group.id)
            .ok_or_else(|| StoreError::Corrupt(format!("`{}` is not an alert id", group.id)))?;
        let mut state = self.state();
        state.alerts.insert(number, group.clone());
        state.alert_keys.insert(super::alert_key(group.source, &group.key), group.id.clone());
        Ok(())
    }

    fn get_alert(&self, id: &str) -> Result<Option<crate::alert::group::AlertGroup>, StoreError> {
        let Some(number) = super::alert_number(id) else { return Ok(None) };
        Ok(self.state().alerts.get(&number).filter(|g| g.id == id).cloned())
    }

    fn alert_for(
        &self,
        source: crate::alert::Source,
        key: &str,
    ) -> Result<Option<crate::alert::group::AlertGroup>, StoreError> {
        let state = self.state();
        let id = state.alert_keys.get(&super::alert_key(source, key));
        Ok(id.and_then(|id| super::alert_number(id)).and_then(|n| state.alerts.get(&n)).cloned())
    }

    fn next_incident_id(&self) -> Result<String, StoreError> {
        let mut state = self.state();
        state.incident_counter += 1;
        Ok(format!("INC-{}", state.incident_counter))
    }

    fn put_incident(&self, incident: &crate::incident::Incident) -> Result<(), StoreError> {
        self.state().incidents.insert(incident_number(&incident.id), incident.clone());
        Ok(())
    }

    fn get_incident(&self, id: &str) -> Result<Option<crate::incident::Incident>, StoreError> {
        Ok(self.state().incidents.get(&incident_number(id)).filter(|i| i.id == id).cloned())
    }

    fn open_incidents(&self) -> Result<Vec<crate::incident::Incident>, StoreError> {
        Ok(self.state().incidents.values().filter(|i| i.is_open()).cloned().collect())
    }

    fn next_request_id(&self) -> Result<String, StoreError> {
        let mut state = self.state();
        state.counter += 1;
        Ok(format!("r-{}", state.counter))
    }

    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError> {
        self.state().requests.insert(request.id.clone(), request.clone());
        Ok(())
    }

    fn get_pending(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        Ok(self.state().requests.get(id).cloned())
    }

    fn open_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        Ok(self.state().requests.values().filter(|r| r.state.is_open()).cloned().collect())
    }

    fn open_count(&self) -> usize {
        self.state().requests.values().filter(|r| r.state.is_open()).count()
    }

    fn acquire_run_lock(
        &self,
        service: &str,
        lock: RunLock,
        now: DateTime<Utc>,
    ) -> Result<Result<(), RunLock>, StoreError> {
        let mut state = self.state();
        if let Some(held) = state.run_locks.get(service) {
            if held.until > now && held.request_id != lock.request_id {
                return Ok(Err(held.clone()));
            }
        }
        state.run_locks.insert(service.to_string(), lock);
        Ok(Ok(()))
    }

    fn release_run_lock(&self, service: &str, request_id: &str) -> Result<(), StoreError> {
        release(&mut self.state(), service, request_id);
        Ok(())
    }

    fn run_lock_release(&self, service: &str, request_id: &str) -> Effect {
        let (state, service, request_id) = (self.state.clone(), service.to_string(), request_id.to_string());
        Box::new(move || {
            release(&mut state.lock().expect("memory store lock"), &service, &request_id);
            Ok(())
        })
    }

    fn run_locks(&self) -> Result<Vec<(String, RunLock)>, StoreError> {
        Ok(self.state().run_locks.iter().map(|(s, l)| (s.clone(), l.clone())).collect())
    }

    fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError> {
        self.state().holds.insert(service.to_string(), hold.clone());
        Ok(())
    }

    fn active_hold(&self, service: &str, now: DateTime<Utc>) -> Result<Option<Hold>, StoreError> {
        Ok(self.state().holds.get(service).filter(|h| h.until > now).cloned())
    }

    fn remove_hold(&self, service: &str) -> Result<Option<Hold>, StoreError> {
        Ok(self.state().holds.remove(service))
    }

    fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = super::dedup::window_of(now);
        let mut state = self.state();
        if n > 0 && state.windows.get(&(n - 1)).is_some_and(|keys| keys.contains(key)) {
            return Ok(false);
        }
        Ok(state.windows.entry(n).or_default().insert(key.to_string()))
    }

    fn sweep_dedup(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let keep_from = super::dedup::window_of(now).saturating_sub(1);
        let mut state = self.state();
        let before = state.windows.len();
        state.windows.retain(|n, _| *n >= keep_from);
        Ok(before - state.windows.len())
    }

    fn link(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.state().links.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn resolve(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().links.get(key).cloned())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
