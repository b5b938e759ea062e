//! The [`Store`] contract, run against every implementation: what the core
//! relies on, whichever store it is given.

use super::{RunLock, Store};
use crate::approval::{PendingRequest, RequestState};
use crate::event::Actor;
use crate::policy::Hold;
use chrono::{DateTime, TimeZone, Utc};

fn at(minutes: i64) -> DateTime<Utc> {
    // A window boundary: 2026-01-01T00:00:00Z is a multiple of 15 minutes.
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

pub fn pending(id: &str, state: RequestState) -> PendingRequest {
    PendingRequest {
        id: id.into(),
        requester: Actor::parse("slack:UALICE").unwrap(),
        command: "restart".into(),
        policy: "change".into(),
        request: crate::command::Request::Restart { service: "api".into() },
        service: "api".into(),
        environment: "production".into(),
        digest: "d".into(),
        approvals_needed: 1,
        approver_groups: vec!["sre".into()],
        freeze: None,
        created_at: at(0),
        expires_at: at(30),
        reply: crate::event::ReplyTarget::channel("slack:C1"),
        requester_roles: vec![],
        votes: vec![],
        required: None,
        plan: None,
        state,
        closed_by: None,
        closed_at: None,
    }
}

/// One check of the contract: it is given a new, empty store.
pub type Check = fn(&str, &dyn Store);

/// Every check, by name: the unit tests run them against the memory and
/// sled stores, tests/it/store.rs against PostgreSQL.
pub const CHECKS: [(&str, Check); 8] = [
    ("request_ids_count_up_and_never_repeat", request_ids_count_up_and_never_repeat),
    ("open_requests_follow_every_change", open_requests_follow_every_change),
    ("a_run_lock_is_held_until_released_or_expired", a_run_lock_is_held_until_released_or_expired),
    ("holds_are_in_force_until_removed_or_over", holds_are_in_force_until_removed_or_over),
    (
        "a_key_is_a_duplicate_for_one_to_two_windows_then_forgotten",
        a_key_is_a_duplicate_for_one_to_two_windows_then_forgotten,
    ),
    ("links_are_remembered", links_are_remembered),
    ("incidents_count_up_and_only_open_ones_are_open", incidents_count_up_and_only_open_ones_are_open),
    (
        "alert_groups_are_found_by_id_and_by_their_senders_newest_group_key",
        alert_groups_are_found_by_id_and_by_their_senders_newest_group_key,
    ),
];

#[cfg(test)]
#[test]
fn the_memory_and_sled_stores_keep_the_contract() {
    use super::{MemoryStore, SledStore};
    for (check_name, check) in CHECKS {
        check(&format!("memory: {check_name}"), &MemoryStore::default());
        check(&format!("sled: {check_name}"), &SledStore::temporary().unwrap());
    }
}

pub fn request_ids_count_up_and_never_repeat(name: &str, store: &dyn Store) {
    let ids: Vec<String> = (0..5).map(|_| store.next_request_id().unwrap()).collect();
    assert_eq!(ids, ["r-1", "r-2", "r-3", "r-4", "r-5"], "{name}");
}

pub fn open_requests_follow_every_change(name: &str, store: &dyn Store) {
    use RequestState::{Approved, Denied, Pending};
    for id in ["r-1", "r-2", "r-3"] {
        store.put_pending(&pending(id, Pending)).unwrap();
    }
    store.put_pending(&pending("r-2", Denied)).unwrap();
    let open: Vec<String> = store.open_requests().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(open, ["r-1", "r-3"], "{name}");
    assert_eq!(store.open_count(), 2, "{name}");
    assert_eq!(store.get_pending("r-2").unwrap().unwrap().state, Denied, "{name}: closed ones are kept");
    store.put_pending(&pending("r-1", Approved)).unwrap();
    assert_eq!(store.open_count(), 1, "{name}");
    assert_eq!(store.get_pending("r-9").unwrap(), None, "{name}");
}

pub fn a_run_lock_is_held_until_released_or_expired(name: &str, store: &dyn Store) {
    let lock = |id: &str, until: i64| RunLock { request_id: id.into(), holder: "slack:U1".into(), until: at(until) };
    assert_eq!(store.acquire_run_lock("api", lock("r-1", 10), at(0)).unwrap(), Ok(()), "{name}");
    let refused = store.acquire_run_lock("api", lock("r-2", 10), at(1)).unwrap().unwrap_err();
    assert_eq!(refused.request_id, "r-1", "{name}");
    assert_eq!(store.acquire_run_lock("web", lock("r-2", 10), at(1)).unwrap(), Ok(()), "{name}: per service");
    // Releasing someone else's lock does nothing.
    store.release_run_lock("api", "r-2").unwrap();
    assert!(store.acquire_run_lock("api", lock("r-3", 10), at(2)).unwrap().is_err(), "{name}");
    // An effect releases it when run (by the audit writer, in a commit).
    let effect = store.run_lock_release("api", "r-1");
    assert!(store.acquire_run_lock("api", lock("r-3", 10), at(2)).unwrap().is_err(), "{name}: not before it runs");
    effect().unwrap();
    assert_eq!(store.acquire_run_lock("api", lock("r-3", 10), at(2)).unwrap(), Ok(()), "{name}");
    // An expired lock is taken over.
    assert_eq!(store.acquire_run_lock("web", lock("r-4", 20), at(11)).unwrap(), Ok(()), "{name}");
    let mut locks: Vec<(String, String)> =
        store.run_locks().unwrap().into_iter().map(|(s, l)| (s, l.request_id)).collect();
    locks.sort();
    assert_eq!(locks, [("api".to_string(), "r-3".to_string()), ("web".to_string(), "r-4".to_string())], "{name}");
}

pub fn holds_are_in_force_until_removed_or_over(name: &str, store: &dyn Store) {
    let hold = Hold { by: Actor::parse("slack:UBOB").unwrap(), reason: "migration".into(), until: at(60) };
    store.set_hold("api", &hold).unwrap();
    store.set_hold("web", &hold).unwrap();
    assert_eq!(store.remove_hold("web").unwrap(), Some(hold.clone()), "{name}");
    assert_eq!(store.remove_hold("web").unwrap(), None, "{name}");
    assert_eq!(store.active_hold("api", at(1)).unwrap(), Some(hold.clone()), "{name}");
    assert_eq!(store.active_hold("api", at(61)).unwrap(), None, "{name}: an expired hold is not in force");
    assert_eq!(store.active_hold("web", at(1)).unwrap(), None, "{name}");
}

pub fn a_key_is_a_duplicate_for_one_to_two_windows_then_forgotten(name: &str, store: &dyn Store) {
    assert!(store.first_delivery("k1", at(14)).unwrap(), "{name}");
    assert!(!store.first_delivery("k1", at(14)).unwrap(), "{name}: same window");
    assert!(!store.first_delivery("k1", at(16)).unwrap(), "{name}: next window, two minutes later");
    assert!(!store.first_delivery("k1", at(29)).unwrap(), "{name}: 15 minutes later");
    assert!(store.first_delivery("k1", at(30)).unwrap(), "{name}: two windows on, it is forgotten");
    assert!(store.first_delivery("k2", at(31)).unwrap(), "{name}");
    assert!(store.sweep_dedup(at(50)).unwrap() > 0, "{name}: old windows go");
    assert!(!store.first_delivery("k2", at(50)).unwrap(), "{name}");
    assert!(!store.first_delivery("k1", at(50)).unwrap(), "{name}: k1 was seen again at minute 30");
    let keys: Vec<String> = (0..5_000).map(|i| format!("{i}.{}", i * 7919)).collect();
    assert!(keys.iter().all(|k| store.first_delivery(k, at(61)).unwrap()), "{name}");
    assert!(keys.iter().all(|k| !store.first_delivery(k, at(62)).unwrap()), "{name}");
}

pub fn links_are_remembered(name: &str, store: &dyn Store) {
    assert_eq!(store.resolve("slack:card:C1:1.2").unwrap(), None, "{name}");
    store.link("slack:card:C1:1.2", "r-7").unwrap();
    assert_eq!(store.resolve("slack:card:C1:1.2").unwrap().as_deref(), Some("r-7"), "{name}");
}

pub fn incident(id: &str, severity: u8) -> crate::incident::Incident {
    let alice = Actor::parse("slack:UALICE").unwrap();
    crate::incident::Incident {
        declared_in: None,
        id: id.into(),
        title: "pool exhausted".into(),
        severity,
        services: vec!["api".into()],
        lead: alice.clone(),
        declared_by: alice,
        declared_at: at(0),
        from_seq: 0,
        channel: crate::event::ReplyTarget::channel("slack:C1"),
        last_update: None,
        resolved_at: None,
        resolved_by: None,
        resolution: None,
    }
}

pub fn incidents_count_up_and_only_open_ones_are_open(name: &str, store: &dyn Store) {
    assert_eq!(store.next_incident_id().unwrap(), "INC-1", "{name}");
    assert_eq!(store.next_incident_id().unwrap(), "INC-2", "{name}");
    // Request ids are a sequence of their own.
    assert_eq!(store.next_request_id().unwrap(), "r-1", "{name}");
    assert_eq!(store.get_incident("INC-1").unwrap(), None, "{name}");
    store.put_incident(&incident("INC-1", 1)).unwrap();
    store.put_incident(&incident("INC-2", 3)).unwrap();
    let open: Vec<String> = store.open_incidents().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(open, ["INC-1", "INC-2"], "{name}");
    let mut resolved = incident("INC-1", 1);
    resolved.resolved_at = Some(at(30));
    store.put_incident(&resolved).unwrap();
    let open: Vec<String> = store.open_incidents().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(open, ["INC-2"], "{name}");
    assert_eq!(store.get_incident("INC-1").unwrap(), Some(resolved), "{name}");
    assert_eq!(store.get_incident("INC-9").unwrap(), None, "{name}");
    assert_eq!(store.get_incident("nonsense").unwrap(), None, "{name}");
}

pub fn alert_groups_are_found_by_id_and_by_their_senders_newest_group_key(name: &str, store: &dyn Store) {
    use crate::alert::{group::AlertGroup, Notice, Source, State};
    let notice = Notice {
        source: Source::Alertmanager,
        group: "{}:{alertname=\"X\"}".into(),
        fingerprint: "f1".into(),
        name: "X".into(),
        state: State::Firing,
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: Some(at(0)),
        ends_at: None,
        summary: "x".into(),
        delivery: None,
    };
    assert_eq!(store.next_alert_id().unwrap(), "A-1", "{name}");
    let mut first = AlertGroup::open("A-1".into(), &notice, None, vec!["slack:C1".into()], at(0));
    first.apply(&notice, at(0), std::time::Duration::from_secs(60));
    store.put_alert(&first).unwrap();
    assert_eq!(store.alert_for(Source::Alertmanager, &notice.group).unwrap(), Some(first.clone()), "{name}");
    // The same key from another sender is another group.
    assert_eq!(store.alert_for(Source::Datadog, &notice.group).unwrap(), None, "{name}");
    assert_eq!(store.next_alert_id().unwrap(), "A-2", "{name}");
    let second = AlertGroup::open("A-2".into(), &notice, None, vec!["slack:C1".into()], at(90));
    store.put_alert(&second).unwrap();
    assert_eq!(store.alert_for(Source::Alertmanager, &notice.group).unwrap().unwrap().id, "A-2", "{name}");
    assert_eq!(store.get_alert("A-1").unwrap(), Some(first), "{name}");
    assert_eq!(store.get_alert("A-9").unwrap(), None, "{name}");
    assert_eq!(store.get_alert("r-1").unwrap(), None, "{name}");
}
