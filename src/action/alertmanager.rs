//! Silences in Prometheus Alertmanager (API v2): created for an alert
//! group's shared labels, then read back by id, so "silenced" is said only
//! of a silence Alertmanager itself holds as active. Matchers are labels
//! the alerts carried (equality, never regex); nothing typed in chat
//! reaches the URL or a matcher.

use super::ActionError;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> Result<reqwest::Client, ActionError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ActionError::Failed(format!("cannot build an HTTP client: {e}")))
}

/// What Alertmanager holds for a silence.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceState {
    pub id: String,
    /// `active`, `pending` or `expired`.
    pub state: String,
    pub ends_at: Option<DateTime<Utc>>,
    pub matchers: BTreeMap<String, String>,
}

/// Creates a silence matching exactly `labels` until `until`; returns its id.
pub async fn create_silence(
    api_url: &str,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    created_by: &str,
    comment: &str,
) -> Result<String, ActionError> {
    if labels.is_empty() {
        return Err(ActionError::Failed(
            "the alerts in this group share no label, so a silence would match every alert; silence it in Alertmanager"
                .into(),
        ));
    }
    let matchers: Vec<_> = labels
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value, "isRegex": false, "isEqual": true}))
        .collect();
    let body = json!({
        "matchers": matchers,
        "startsAt": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "endsAt": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "createdBy": created_by,
        "comment": comment,
    });
    let url = format!("{api_url}/api/v2/silences");
    let response = client()?.post(&url).json(&body).send().await.map_err(|e| {
        if e.is_connect() {
            ActionError::Unreachable(format!("cannot reach Alertmanager at {api_url}; no silence was made"))
        } else {
            ActionError::Unknown(format!(
                "the request to Alertmanager at {api_url} broke off; a silence may have been made (look in its silences)"
            ))
        }
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let shown: String = text.chars().take(200).filter(|c| !c.is_control()).collect();
        return Err(ActionError::Failed(format!("Alertmanager refused the silence ({status}): {shown}")));
    }
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| ActionError::Unknown("Alertmanager answered without a silence id; look in its silences".into()))?;
    answer["silenceID"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ActionError::Unknown("Alertmanager answered without a silence id; look in its silences".into()))
}

/// Reads a silence back by id.
pub async fn read_silence(api_url: &str, id: &str) -> Result<SilenceState, ActionError> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ActionError::Failed(format!("`{id}` is not a silence id")));
    }
    let url = format!("{api_url}/api/v2/silence/{id}");
    let response = client()?
        .get(&url)
        .send()
        .await
        .map_err(|_| ActionError::Unreachable(format!("cannot read silence {id} back from {api_url}")))?;
    if !response.status().is_success() {
        return Err(ActionError::Failed(format!("Alertmanager has no silence {id} ({})", response.status())));
    }
    let silence: serde_json::Value =
        response.json().await.map_err(|e| ActionError::Failed(format!("silence {id}: unreadable answer: {e}")))?;
    let matchers = silence["matchers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["value"].as_str()?.to_string())))
        .collect();
    Ok(SilenceState {
        id: id.to_string(),
        state: silence["status"]["state"].as_str().unwrap_or("unknown").to_string(),
        ends_at: silence["endsAt"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        matchers,
    })
}
