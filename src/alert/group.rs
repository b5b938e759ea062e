//! One alert group as opsbot keeps it: the thread it lives in, each alert
//! (fingerprint) in it with its state, and what people did about it. A
//! notice either changes it (a [`Transition`], which becomes one audit
//! record and one edit of its message) or changes nothing: a repeat, a
//! duplicate from the other half of an HA pair, a sender's retry, or a
//! delivery older than what is already known. Pure: no I/O, no clock.

use super::{Notice, Source, State};
use crate::event::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many sender delivery ids (PagerDuty's event ids) a group remembers.
const DELIVERIES_KEPT: usize = 64;

/// An Alertmanager firing that started before the resolve opsbot shows is
/// the late copy of the episode just ended (an HA twin's, a retry) when it
/// comes within this of the resolve. Later it is the alert firing again:
/// Alertmanager re-sends an alert it resolved by its `resolve_timeout`
/// with its first `startsAt`, and an alert that fires must never stay
/// shown resolved. (Datadog and PagerDuty stamp each event with its own
/// time: an older one is always a late copy.)
const LATE_COPY: chrono::Duration = chrono::Duration::minutes(2);

/// One alert in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub state: State,
    pub summary: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// When opsbot saw it change last.
    pub changed_at: DateTime<Utc>,
}

impl Member {
    /// The sender's time of the state it is in (when it started firing,
    /// or when it ended), when the sender gave one.
    fn sender_time(&self) -> Option<DateTime<Utc>> {
        match self.state {
            State::Firing => self.starts_at,
            State::Resolved => self.ends_at.or(self.starts_at),
        }
    }
}

/// Who acknowledged a group, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: Actor,
    pub at: DateTime<Utc>,
}

/// A silence opsbot created in Alertmanager for a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub by: Actor,
    pub until: DateTime<Utc>,
}

/// An alert group: one thread, edited in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertGroup {
    /// `A-7`: what buttons, commands and the trail call it.
    pub id: String,
    pub source: Source,
    /// The sender's group key (Alertmanager's groupKey, Datadog's
    /// aggregation key, PagerDuty's incident id).
    pub key: String,
    /// The first alert's name (what the noise report counts by).
    pub name: String,
    pub summary: String,
    /// The configured service it was routed to, if any.
    pub service: Option<String>,
    /// Where its message is.
    pub channels: Vec<String>,
    pub members: BTreeMap<String, Member>,
    pub opened_at: DateTime<Utc>,
    pub changed_at: DateTime<Utc>,
    /// When its last firing alert resolved (none while any fires).
    pub resolved_at: Option<DateTime<Utc>>,
    /// How many times it started firing.
    pub fired: u32,
    /// How many times an alert in it re-fired within the flap window of
    /// resolving.
    pub flaps: u32,
    /// Bumped on every change; buttons carry it, so a click on an older
    /// form of the message is refused.
    pub version: u32,
    pub acknowledged: Option<Acknowledgement>,
    #[serde(default)]
    pub silences: Vec<Silence>,
    /// A runbook its alerts name (a `runbook` annotation or label).
    pub runbook: Option<String>,
    /// The sender's delivery ids already taken (newest last).
    #[serde(default)]
    pub deliveries: Vec<String>,
}

/// What one notice changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub fingerprint: String,
    pub name: String,
    pub state: State,
    /// `fired`, `refired` (a flap), `resolved`.
    pub event: &'static str,
}

impl AlertGroup {
    /// A new group for `notice`'s group key (it changes nothing yet:
    /// [`AlertGroup::apply`] the notice next).
    pub fn open(
        id: String,
        notice: &Notice,
        service: Option<String>,
        channels: Vec<String>,
        now: DateTime<Utc>,
    ) -> AlertGroup {
        AlertGroup {
            id,
            source: notice.source,
            key: notice.group.clone(),
            name: notice.name.clone(),
            summary: notice.summary.clone(),
            service,
            channels,
            members: BTreeMap::new(),
            opened_at: now,
            changed_at: now,
            resolved_at: None,
            fired: 0,
            flaps: 0,
            version: 0,
            acknowledged: None,
            silences: Vec::new(),
            runbook: None,
            deliveries: Vec::new(),
        }
    }

    pub fn firing(&self) -> bool {
        self.members.values().any(|m| m.state == State::Firing)
    }

    /// Whether a notice for this group key, arriving at `now`, belongs in
    /// this group's thread: while it fires, and within `flap_window` of its
    /// resolving (a flap); after that, a new firing is a new thread.
    pub fn takes_more(&self, now: DateTime<Utc>, flap_window: std::time::Duration) -> bool {
        match self.resolved_at {
            None => true,
            Some(at) => now - at <= chrono::Duration::from_std(flap_window).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Applies `notice`: the transition it makes, or `None` when it
    /// changes nothing (a repeat, a duplicate, a retry, or older than what
    /// is known — the sender's own times decide the order).
    pub fn apply(
        &mut self,
        notice: &Notice,
        now: DateTime<Utc>,
        flap_window: std::time::Duration,
    ) -> Option<Transition> {
        if let Some(id) = &notice.delivery {
            if self.deliveries.contains(id) {
                return None;
            }
        }
        let notice_time = match notice.state {
            State::Firing => notice.starts_at,
            State::Resolved => notice.ends_at.or(notice.starts_at),
        };
        let window = chrono::Duration::from_std(flap_window).unwrap_or(chrono::Duration::MAX);
        let older = |m: &Member| matches!((notice_time, m.sender_time()), (Some(new), Some(old)) if new <= old);
        let event = match self.members.get(&notice.fingerprint) {
            Some(m) if m.state == notice.state => None,
            // A resolve older than the firing shown: an earlier episode's.
            Some(m) if notice.state == State::Resolved && older(m) => None,
            Some(m)
                if notice.state == State::Firing
                    && older(m)
                    && (notice.source != Source::Alertmanager || now - m.changed_at < LATE_COPY) =>
            {
                None
            }
            Some(m) if notice.state == State::Firing => {
                // It resolved and fires again: a flap when it comes back
                // within the window (and the same group takes it).
                if now - m.changed_at <= window {
                    self.flaps += 1;
                }
                Some("refired")
            }
            Some(_) => Some("resolved"),
            None if notice.state == State::Firing => Some("fired"),
            None => Some("resolved"),
        };
        let event = event?;
        let was_firing = self.firing();
        self.members.insert(
            notice.fingerprint.clone(),
            Member {
                name: notice.name.clone(),
                state: notice.state,
                summary: notice.summary.clone(),
                labels: notice.labels.clone(),
                starts_at: notice.starts_at,
                ends_at: notice.ends_at,
                changed_at: now,
            },
        );
        if self.runbook.is_none() {
            self.runbook = notice
                .annotations
                .get("runbook")
                .or_else(|| notice.labels.get("runbook"))
                .filter(|r| !r.is_empty())
                .cloned();
        }
        let firing = self.firing();
        if firing && !was_firing {
            if self.resolved_at.is_some() && event == "fired" {
                // A new alert brought a quiet group back within the window.
                self.flaps += 1;
            }
            self.fired += 1;
            self.resolved_at = None;
            self.summary = notice.summary.clone();
            // A new episode is acknowledged anew.
            self.acknowledged = None;
        } else if !firing && (was_firing || self.resolved_at.is_none()) {
            self.resolved_at = Some(now);
        }
        if let Some(id) = &notice.delivery {
            self.deliveries.push(id.clone());
            if self.deliveries.len() > DELIVERIES_KEPT {
                self.deliveries.remove(0);
            }
        }
        self.version += 1;
        self.changed_at = now;
        Some(Transition {
            fingerprint: notice.fingerprint.clone(),
            name: notice.name.clone(),
            state: notice.state,
            event,
        })
    }

    /// Labels every alert in the group shares: what a silence matches.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return BTreeMap::new() };
        let mut common = first.labels.clone();
        for m in members {
            common.retain(|k, v| m.labels.get(k) == Some(v));
        }
        common
    }

    /// Alerts firing, of all.
    pub fn counts(&self) -> (usize, usize) {
        (self.members.values().filter(|m| m.state == State::Firing).count(), self.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_558_000 + minute * 60, 0).unwrap()
    }

    fn notice(fingerprint: &str, state: State, starts: i64, ends: Option<i64>) -> Notice {
        Notice {
            source: Source::Alertmanager,
            group: "{}:{alertname=\"PoolSaturated\"}".into(),
            fingerprint: fingerprint.into(),
            name: "PoolSaturated".into(),
            state,
            labels: [("alertname".to_string(), "PoolSaturated".to_string()), ("fp".to_string(), fingerprint.into())]
                .into(),
            annotations: [("runbook".to_string(), "connection-pool".to_string())].into(),
            starts_at: Some(at(starts)),
            ends_at: ends.map(at),
            summary: "pool saturated".into(),
            delivery: None,
        }
    }

    const WINDOW: Duration = Duration::from_secs(30 * 60);

    #[test]
    fn repeats_duplicates_and_late_deliveries_change_nothing() {
        let first = notice("a", State::Firing, 0, None);
        let mut g = AlertGroup::open("A-1".into(), &first, None, vec!["slack:C1".into()], at(0));
        assert_eq!(g.apply(&first, at(0), WINDOW).unwrap().event, "fired");
        assert_eq!((g.version, g.fired, g.runbook.as_deref()), (1, 1, Some("connection-pool")));
        // The HA twin and Alertmanager's repeat_interval resend: nothing.
        assert_eq!(g.apply(&first, at(1), WINDOW), None);
        let resolved = notice("a", State::Resolved, 0, Some(5));
        assert_eq!(g.apply(&resolved, at(5), WINDOW).unwrap().event, "resolved");
        assert_eq!(g.resolved_at, Some(at(5)));
        // The twin's late "firing" of the same episode is older than the end.
        assert_eq!(g.apply(&first, at(6), WINDOW), None);
        assert_eq!(g.apply(&resolved, at(6), WINDOW), None);
        assert_eq!((g.version, g.fired, g.flaps), (2, 1, 0));
        // Minutes later the same start means it fires again (Alertmanager
        // re-sends an alert its resolve_timeout ended with its first start).
        assert_eq!(g.apply(&first, at(9), WINDOW).unwrap().event, "refired");
        assert!(g.firing());
        // A resolve of the episode before, arriving late, changes nothing.
        let mut fresh = notice("a", State::Firing, 9, None);
        fresh.starts_at = Some(at(9));
        let mut g2 = g.clone();
        g2.apply(&notice("a", State::Resolved, 9, Some(10)), at(10), WINDOW);
        g2.apply(&fresh, at(20), WINDOW);
        assert_eq!(g2.apply(&notice("a", State::Resolved, 0, Some(5)), at(21), WINDOW), None);
    }

    #[test]
    fn an_alert_that_comes_back_within_the_window_flaps_in_the_same_group() {
        let mut g = AlertGroup::open("A-1".into(), &notice("a", State::Firing, 0, None), None, vec![], at(0));
        g.apply(&notice("a", State::Firing, 0, None), at(0), WINDOW);
        g.acknowledged = Some(Acknowledgement { by: Actor::parse("slack:U1").unwrap(), at: at(1) });
        g.apply(&notice("a", State::Resolved, 0, Some(3)), at(3), WINDOW);
        assert!(g.takes_more(at(20), WINDOW));
        let again = g.apply(&notice("a", State::Firing, 10, None), at(10), WINDOW).unwrap();
        assert_eq!(again.event, "refired");
        assert_eq!((g.fired, g.flaps, g.resolved_at), (2, 1, None));
        assert_eq!(g.acknowledged, None, "a new episode is acknowledged anew");
        g.apply(&notice("a", State::Resolved, 10, Some(12)), at(12), WINDOW);
        // Past the window, a firing starts a new thread.
        assert!(!g.takes_more(at(12 + 31), WINDOW));
    }

    #[test]
    fn a_group_fires_while_any_alert_fires_and_silences_match_what_all_share() {
        let mut g = AlertGroup::open("A-1".into(), &notice("a", State::Firing, 0, None), None, vec![], at(0));
        g.apply(&notice("a", State::Firing, 0, None), at(0), WINDOW);
        g.apply(&notice("b", State::Firing, 1, None), at(1), WINDOW);
        assert_eq!(g.counts(), (2, 2));
        g.apply(&notice("a", State::Resolved, 0, Some(2)), at(2), WINDOW);
        assert!(g.firing());
        assert_eq!(g.resolved_at, None);
        assert_eq!(g.common_labels(), [("alertname".to_string(), "PoolSaturated".to_string())].into());
        g.apply(&notice("b", State::Resolved, 1, Some(4)), at(4), WINDOW);
        assert_eq!((g.firing(), g.resolved_at), (false, Some(at(4))));
    }

    #[test]
    fn an_older_pagerduty_or_datadog_event_is_always_a_late_copy() {
        let mut n = notice("P1", State::Firing, 0, None);
        n.source = Source::Pagerduty;
        let mut g = AlertGroup::open("A-1".into(), &n, None, vec![], at(0));
        g.apply(&n, at(0), WINDOW);
        let mut resolved = notice("P1", State::Resolved, 0, Some(5));
        resolved.source = Source::Pagerduty;
        g.apply(&resolved, at(5), WINDOW);
        // The first trigger retried much later (its first attempt was
        // refused, so its id was never taken): older than the resolve.
        assert_eq!(g.apply(&n, at(20), WINDOW), None);
        assert!(!g.firing());
    }

    #[test]
    fn a_sender_retry_with_the_same_delivery_id_is_taken_once() {
        // PagerDuty's events carry no start or end times opsbot orders by
        // here: only the event id tells a retry.
        let mut n = notice("P1", State::Firing, 0, None);
        n.starts_at = None;
        n.delivery = Some("evt-1".into());
        let mut g = AlertGroup::open("A-1".into(), &n, None, vec![], at(0));
        assert!(g.apply(&n, at(0), WINDOW).is_some());
        let mut resolved = notice("P1", State::Resolved, 0, None);
        resolved.starts_at = None;
        resolved.delivery = Some("evt-2".into());
        assert!(g.apply(&resolved, at(2), WINDOW).is_some());
        // A replay of the first event: its id is known.
        assert_eq!(g.apply(&n, at(3), WINDOW), None);
        assert!(!g.firing());
    }
}
