//! Incidents: the record of one (who leads it, how severe, which services,
//! open or resolved) and what is derived from the audit trail about it: the
//! recent changes its summary lists, and the timeline a postmortem starts
//! from. Pure: the engine stores incidents and reads the trail; this module
//! only shapes what they hold. It knows no chat platform.
//!
//! An open SEV1 or SEV2 incident is a policy input ([`Incident::gates_deploys`]):
//! a `/deploy` to one of its services waits for its lead's approval unless
//! the lead asked for it or it is break-glass.

use crate::audit::{AuditRecord, RecordKind, Verdict};
use crate::event::{Actor, ReplyTarget};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod timeline;
pub use timeline::{markdown_text, Format, Timeline, TimelineScan, SCAN_LIMIT};

/// Severities run from 1 (the worst) to this.
pub const LOWEST_SEVERITY: u8 = 4;

/// One incident, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `INC-3`.
    pub id: String,
    pub title: String,
    /// 1 (worst) to 4.
    pub severity: u8,
    /// Configured services it affects (possibly none).
    pub services: Vec<String>,
    pub lead: Actor,
    pub declared_by: Actor,
    pub declared_at: DateTime<Utc>,
    /// The trail's last record before its declaration: reading its timeline
    /// starts after it (0: from the start).
    #[serde(default)]
    pub from_seq: u64,
    /// Where it lives: its summary is posted (and edited) there, and
    /// commands about it are taken there. Where it was declared, or its own
    /// channel (see `declared_in`).
    pub channel: ReplyTarget,
    /// When opsbot opened the incident a channel of its own: the channel it
    /// was declared in. Changes to its services are taken in its own channel
    /// as they would be in that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_in: Option<String>,
    /// The newest `/incident update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

impl Incident {
    /// Whether its commands are taken in `channel`: where it lives, or
    /// where it was declared when it has a channel of its own.
    pub fn worked_on_in(&self, channel: &str) -> bool {
        self.channel.channel == channel || self.declared_in.as_deref() == Some(channel)
    }

    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    /// Whether a `/deploy` to `service` must wait for this incident's lead:
    /// it is open, SEV1 or SEV2, and names the service.
    pub fn gates_deploys(&self, service: &str) -> bool {
        self.is_open() && self.severity <= 2 && self.services.iter().any(|s| s == service)
    }

    /// The key its summary message is remembered under by the adapters.
    pub fn summary_key(&self) -> String {
        format!("summary:{}", self.id)
    }
}

/// `SEV1` …
pub fn sev(severity: u8) -> String {
    format!("SEV{severity}")
}

/// A duration as people say it: `4m`, `1h 12m`, `2d 3h`.
pub fn human(duration: chrono::Duration) -> String {
    let minutes = duration.num_minutes().max(0);
    match minutes {
        0 => format!("{}s", duration.num_seconds().max(0)),
        1..=59 => format!("{minutes}m"),
        60..=1439 => format!("{}h {}m", minutes / 60, minutes % 60),
        _ => format!("{}d {}h", minutes / 1440, (minutes % 1440) / 60),
    }
}

/// A change to a service as the trail records it: the outcome of a
/// deploy, rollback, restart or scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub request_id: String,
    pub service: String,
    /// `deploy api-service`, from the record's command and service.
    pub what: String,
    /// The command (`deploy`, `rollback` …).
    pub command: String,
    /// What the outcome said (the live state read back), first line.
    pub said: String,
    pub by: Option<String>,
    pub at: DateTime<Utc>,
    pub verdict: Option<Verdict>,
}

impl Change {
    /// From an outcome record, if it is one of a change.
    pub fn from_record(record: &AuditRecord) -> Option<Change> {
        let entry = &record.entry;
        // A refusal (busy, stale) ran nothing: not a change.
        if entry.kind != RecordKind::Outcome || entry.outcome == Some(Verdict::Refused) {
            return None;
        }
        let service = entry.service.clone()?;
        let command = entry.command.as_deref().unwrap_or("change");
        let said: String = entry.detail.lines().next().unwrap_or("").chars().take(160).collect();
        Some(Change {
            request_id: entry.request_id.clone().unwrap_or_default(),
            what: format!("{command} {service}"),
            command: command.to_string(),
            said,
            service,
            by: entry.actor.clone(),
            at: record.ts,
            verdict: entry.outcome,
        })
    }

    pub fn line(&self, now: DateTime<Utc>) -> String {
        let by = self.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
        let verdict = self.verdict.map(|v| v.name()).unwrap_or("recorded");
        let said = if self.said.is_empty() { String::new() } else { format!(" — {}", self.said) };
        format!("{} {}{by}, {} ago: {verdict}{said}", self.request_id, self.what, human(now - self.at))
    }
}

/// How old a deploy may be and still be offered for a rollback.
pub const OFFER_WITHIN_HOURS: i64 = 24;

/// The deploys that are their service's newest change in `recent` (newest
/// first), took effect and are under a day old at `now`: what a Roll back
/// offer may undo, as (service, request id).
pub fn rollback_offers(recent: &[Change], now: DateTime<Utc>) -> Vec<(String, String)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut offers = Vec::new();
    for change in recent {
        if seen.contains(&change.service.as_str()) {
            continue;
        }
        seen.push(&change.service);
        let fresh = now - change.at <= chrono::Duration::hours(OFFER_WITHIN_HOURS);
        if change.command == "deploy" && change.verdict == Some(Verdict::Succeeded) && fresh {
            offers.push((change.service.clone(), change.request_id.clone()));
        }
    }
    offers
}

/// The summary message: what anyone joining the channel needs first.
/// `recent` is newest first.
pub fn summary_text(incident: &Incident, recent: &[Change], now: DateTime<Utc>) -> String {
    let state = match incident.resolved_at {
        None => format!("open for {}", human(now - incident.declared_at)),
        Some(at) => format!("resolved after {}", human(at - incident.declared_at)),
    };
    let mut out = format!(
        "🚨 {} {} — {}\n{state} · lead {} · declared by {} at {}",
        incident.id,
        sev(incident.severity),
        crate::engine::reply::typed(&incident.title),
        incident.lead,
        incident.declared_by,
        incident.declared_at.format("%Y-%m-%d %H:%M UTC"),
    );
    if incident.services.is_empty() {
        out.push_str("\nservices: none named");
    } else {
        out.push_str(&format!("\nservices: {}", incident.services.join(", ")));
        if incident.is_open() && incident.severity <= 2 {
            out.push_str(" — deploys to them wait for the lead's approval");
        }
    }
    if let Some(update) = &incident.last_update {
        out.push_str(&format!("\nlatest: {}", crate::engine::reply::typed(update)));
    }
    if let Some(resolution) = &incident.resolution {
        out.push_str(&format!("\nresolution: {}", crate::engine::reply::typed(resolution)));
    }
    if !incident.services.is_empty() {
        if recent.is_empty() {
            out.push_str("\nrecent changes: none in the trail");
        } else {
            out.push_str("\nrecent changes:");
            for change in recent {
                out.push_str(&format!("\n• {}", change.line(now)));
            }
            for (service, deploy) in rollback_offers(recent, now).iter().filter(|_| incident.is_open()) {
                out.push_str(&format!("\nto undo {deploy}: /rollback {service} --of {deploy} (gated as always)"));
            }
        }
    }
    out
}

/// An incident's own channel's name: `inc-3-pool-exhausted` (lowercase
/// letters, digits and `-`, as Slack and Discord both take; at most 60).
pub fn channel_name(id: &str, title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-');
    let id = id.to_ascii_lowercase();
    if slug.is_empty() {
        id
    } else {
        format!("{id}-{slug}")
    }
}

#[cfg(test)]
mod tests;
