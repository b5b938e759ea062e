//! Alert intake: the three senders' payloads as they send them, each turned into
//! [`Notice`]s — one per alert, with a stable group key, fingerprint and
//! state — and the checks that run before a body is parsed (PagerDuty's
//! HMAC signatures, during key rotation several; bearer/basic auth and a
//! shared-secret header, compared in constant time). Pure: no I/O.
//!
//! - Prometheus Alertmanager webhook, payload version 4.
//! - Datadog webhooks, with the template opsbot documents ([`DATADOG_TEMPLATE`]).
//! - PagerDuty v3 webhooks (`X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`).

pub mod group;
pub mod intake;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::BTreeMap;

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Datadog,
    Pagerduty,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Datadog => "datadog",
            Source::Pagerduty => "pagerduty",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Resolved,
}

/// One alert's state as one delivery tells it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Notice {
    pub source: Source,
    /// What groups notifications into one thread (Alertmanager's groupKey,
    /// Datadog's aggregation key, PagerDuty's incident id).
    pub group: String,
    /// This alert within the group (Alertmanager's fingerprint, Datadog's
    /// alert id with its cycle, PagerDuty's incident id).
    pub fingerprint: String,
    pub name: String,
    pub state: State,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// What a person reads first (a summary or title).
    pub summary: String,
    /// The sender's id of this delivery, when it has one (PagerDuty's
    /// event id): a retry carries the same.
    pub delivery: Option<String>,
}

/// Why a body was refused (400: the sender must not retry it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(source: &str, e: impl std::fmt::Display) -> Malformed {
    Malformed(format!("not a {source} payload: {e}"))
}

// Alertmanager, version 4 (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmPayload {
    version: String,
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    status: String,
    #[serde(default)]
    alerts: Vec<AmAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    fingerprint: String,
}

/// Alertmanager sends `0001-01-01T00:00:00Z` for "not ended".
fn am_time(text: &Option<String>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text.as_deref()?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

fn state_of(text: &str, what: &str) -> Result<State, Malformed> {
    match text {
        "firing" => Ok(State::Firing),
        "resolved" => Ok(State::Resolved),
        other => Err(Malformed(format!("{what}: status `{other}` is neither firing nor resolved"))),
    }
}

/// An Alertmanager webhook body: one notice per alert, and how many alerts
/// Alertmanager left out (`truncatedAlerts`, when `max_alerts` cut it).
pub fn alertmanager(body: &[u8]) -> Result<(Vec<Notice>, u64), Malformed> {
    let payload: AmPayload = serde_json::from_slice(body).map_err(|e| malformed("Alertmanager", e))?;
    if payload.version != "4" {
        return Err(Malformed(format!("Alertmanager payload version {} (opsbot reads version 4)", payload.version)));
    }
    state_of(&payload.status, "the group")?;
    let mut notices = Vec::new();
    for (i, alert) in payload.alerts.into_iter().enumerate() {
        let state = state_of(&alert.status, &format!("alerts[{i}]"))?;
        if alert.fingerprint.is_empty() {
            return Err(Malformed(format!("alerts[{i}] has no fingerprint")));
        }
        let name = alert.labels.get("alertname").cloned().unwrap_or_else(|| "alert".into());
        let summary = alert
            .annotations
            .get("summary")
            .or_else(|| alert.annotations.get("description"))
            .cloned()
            .unwrap_or_else(|| name.clone());
        notices.push(Notice {
            source: Source::Alertmanager,
            group: payload.group_key.clone(),
            fingerprint: alert.fingerprint,
            name,
            state,
            starts_at: am_time(&alert.starts_at),
            ends_at: am_time(&alert.ends_at),
            labels: alert.labels,
            annotations: alert.annotations,
            summary,
            delivery: None,
        });
    }
    Ok((notices, payload.truncated_alerts))
}

// Datadog: the body is whatever the webhook's template makes of its
// variables; opsbot reads the one it documents.

/// The payload template to paste into Datadog's webhook integration.
pub const DATADOG_TEMPLATE: &str = r#"{
  "alert_id": "$ALERT_ID",
  "alert_cycle_key": "$ALERT_CYCLE_KEY",
  "alert_transition": "$ALERT_TRANSITION",
  "aggreg_key": "$AGGREG_KEY",
  "title": "$EVENT_TITLE",
  "body": "$EVENT_MSG",
  "tags": "$TAGS",
  "date": "$DATE",
  "link": "$LINK"
}"#;

#[derive(Debug, Deserialize)]
struct DdPayload {
    alert_id: String,
    #[serde(default)]
    alert_cycle_key: String,
    alert_transition: String,
    #[serde(default)]
    aggreg_key: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    date: String,
}

/// A Datadog webhook body made from [`DATADOG_TEMPLATE`]. Tags
/// (`service:api,env:prod`) become labels; a tag without `:` is a label
/// with an empty value.
pub fn datadog(body: &[u8]) -> Result<Notice, Malformed> {
    let p: DdPayload =
        serde_json::from_slice(body).map_err(|e| malformed("Datadog (see the documented template)", e))?;
    if p.alert_id.is_empty() || p.alert_id.starts_with('$') {
        return Err(Malformed("alert_id is empty or was not filled in: paste the documented template".into()));
    }
    // Recovered resolves; Triggered, Re-Triggered, Warn, Re-Warn, No Data
    // fire, and so does a transition opsbot does not know (Datadog never
    // retries a refusal: an alert shown firing is better than one lost).
    let state = match p.alert_transition.as_str() {
        "Recovered" => State::Resolved,
        "" => return Err(Malformed("alert_transition is empty: paste the documented template".into())),
        _ => State::Firing,
    };
    let mut labels = BTreeMap::new();
    for tag in p.tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = tag.split_once(':').unwrap_or((tag, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let cycle = if p.alert_cycle_key.is_empty() { p.alert_id.clone() } else { p.alert_cycle_key.clone() };
    let group = if p.aggreg_key.is_empty() { p.alert_id.clone() } else { p.aggreg_key.clone() };
    // $DATE is epoch milliseconds.
    let at = p.date.parse::<i64>().ok().and_then(DateTime::<Utc>::from_timestamp_millis);
    let mut annotations = BTreeMap::new();
    if !p.body.is_empty() {
        annotations.insert("description".into(), p.body);
    }
    Ok(Notice {
        source: Source::Datadog,
        group,
        fingerprint: format!("{}:{cycle}", p.alert_id),
        name: if p.title.is_empty() { format!("Datadog monitor {}", p.alert_id) } else { p.title.clone() },
        state,
        labels,
        annotations,
        starts_at: if state == State::Firing { at } else { None },
        ends_at: if state == State::Resolved { at } else { None },
        summary: p.title,
        delivery: None,
    })
}

// PagerDuty v3 webhooks (https://developer.pagerduty.com/docs/webhooks/v3-overview).

#[derive(Debug, Deserialize)]
struct PdEnvelope {
    event: PdEvent,
}

#[derive(Debug, Deserialize)]
struct PdEvent {
    id: String,
    event_type: String,
    occurred_at: Option<String>,
    data: serde_json::Value,
}

/// A PagerDuty v3 webhook body: an incident event becomes a notice (other
/// events — services, pings — none).
pub fn pagerduty(body: &[u8]) -> Result<Option<Notice>, Malformed> {
    let p: PdEnvelope = serde_json::from_slice(body).map_err(|e| malformed("PagerDuty v3", e))?;
    // Events about an incident's state; the others (a note added, a
    // priority changed, a workflow, a ping) carry no incident's state, and
    // their `data` is not an incident: they are taken and change nothing.
    let state = match p.event.event_type.as_str() {
        "incident.triggered"
        | "incident.reopened"
        | "incident.escalated"
        | "incident.acknowledged"
        | "incident.unacknowledged"
        | "incident.reassigned" => State::Firing,
        "incident.resolved" => State::Resolved,
        _ => return Ok(None),
    };
    let data = &p.event.data;
    if data["type"].as_str().is_some_and(|t| t != "incident") {
        return Ok(None);
    }
    let incident = data["id"].as_str().ok_or_else(|| Malformed("event.data.id is missing".into()))?.to_string();
    let title = data["title"].as_str().unwrap_or("PagerDuty incident").to_string();
    let mut labels = BTreeMap::new();
    if let Some(service) = data["service"]["summary"].as_str() {
        labels.insert("service".into(), service.to_string());
    }
    if let Some(urgency) = data["urgency"].as_str() {
        labels.insert("urgency".into(), urgency.to_string());
    }
    let at = p
        .event
        .occurred_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Some(Notice {
        source: Source::Pagerduty,
        group: incident.clone(),
        fingerprint: incident,
        name: title.clone(),
        state,
        labels,
        annotations: BTreeMap::new(),
        starts_at: if state == State::Firing { at } else { None },
        ends_at: if state == State::Resolved { at } else { None },
        summary: title,
        delivery: Some(p.event.id),
    }))
}

/// Whether `header` (`v1=<hex>,v1=<hex>`) holds an HMAC-SHA256 of `body`
/// under any of `secrets` (PagerDuty signs with each secret a
/// subscription has while one is rotated). Constant-time per comparison.
pub fn pagerduty_signed(header: &str, body: &[u8], secrets: &[String]) -> bool {
    let sent: Vec<Vec<u8>> = header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    secrets.iter().any(|secret| {
        sent.iter().any(|signature| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
            mac.update(body);
            mac.verify_slice(signature).is_ok()
        })
    })
}

/// Constant-time equality of two secrets (a bearer token, a shared header).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests;
