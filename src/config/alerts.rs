//! `[alerts]`: which monitoring systems may post alerts to opsbot, how an
//! alert finds its service and channel, and what its buttons offer. The
//! senders' secrets never live here: each source names the environment
//! variable that holds its own, and a source without one is off (its
//! endpoint answers 404).

use super::Problem;
use crate::event::qualified_id;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `[alerts]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Where an alert no route or service claims goes (never dropped).
    pub default_channel: String,
    /// Label names (Datadog tag names) that may name a configured service,
    /// tried in order.
    pub service_labels: Vec<String>,
    /// A group that resolved and fires again within this time keeps its
    /// thread and counts a flap; later, a firing is a new thread.
    pub flap_window: Duration,
    /// "Roll back" is offered when the alert's service changed this recently.
    pub recent_change: Duration,
    pub routes: Vec<AlertRoute>,
    /// Alert name → the runbook its "Run runbook" button offers (an alert's
    /// own `runbook` annotation or label wins).
    pub runbooks: BTreeMap<String, String>,
    pub alertmanager: Option<AlertmanagerSource>,
    pub datadog: Option<DatadogSource>,
    pub pagerduty: Option<PagerdutySource>,
}

/// `[[alerts.routes]]`: alerts whose labels all equal `labels` go to
/// `service` (and its channels) or to `channel`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRoute {
    pub labels: BTreeMap<String, String>,
    pub service: Option<String>,
    pub channel: Option<String>,
}

/// `[alerts.alertmanager]`: bearer (`token_env`) or basic
/// (`username_env` + `password_env`) auth, as Alertmanager's
/// `http_config` sends it; `api_url` is where silences go.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSource {
    pub token_env: Option<String>,
    pub basic_env: Option<(String, String)>,
    pub api_url: Option<String>,
}

/// `[alerts.datadog]`: a shared secret Datadog's webhook sends in `header`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatadogSource {
    pub secret_env: String,
    pub header: String,
}

/// `[alerts.pagerduty]`: the subscription's signing secrets, comma-separated
/// while one is rotated.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerdutySource {
    pub secrets_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    default_channel: Option<String>,
    service_labels: Option<Vec<String>>,
    flap_window: Option<String>,
    recent_change: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    runbooks: BTreeMap<String, String>,
    alertmanager: Option<RawAlertmanager>,
    datadog: Option<RawDatadog>,
    pagerduty: Option<RawPagerduty>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    labels: BTreeMap<String, String>,
    service: Option<String>,
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    token_env: Option<String>,
    username_env: Option<String>,
    password_env: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatadog {
    secret_env: String,
    header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerduty {
    secrets_env: String,
}

fn env_name(path: &Path, key: &str, name: &str, problems: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        problems.push(Problem::new(
            path,
            key,
            format!("`{name}` is not an environment variable name"),
            "name the variable that holds the secret, like OPSBOT_ALERTMANAGER_TOKEN (the secret never goes in this file)",
        ));
    }
}

pub(super) fn alerts(
    path: &Path,
    raw: RawAlerts,
    services: &BTreeMap<String, super::Service>,
    duration: &mut super::chat::DurationOf,
    problems: &mut Vec<Problem>,
) -> AlertSettings {
    let channel_ok = |key: &str, channel: &str, problems: &mut Vec<Problem>| {
        if let Err(e) = qualified_id(channel, "channel") {
            problems.push(Problem::new(path, key, e, "channels are platform:id, like slack:C0123456"));
        }
    };
    let default_channel = raw.default_channel.unwrap_or_default();
    if default_channel.is_empty() {
        problems.push(Problem::new(
            path,
            "alerts.default_channel",
            "alerts need a default channel: an alert no route claims goes there, never nowhere".into(),
            "default_channel = \"slack:C0123456\"",
        ));
    } else {
        channel_ok("alerts.default_channel", &default_channel, problems);
    }
    let mut routes = Vec::new();
    for (i, route) in raw.routes.into_iter().enumerate() {
        let key = format!("alerts.routes[{i}]");
        if route.labels.is_empty() {
            problems.push(Problem::new(
                path,
                &key,
                "a route matches no labels".into(),
                "match = { team = \"payments\" }",
            ));
        }
        if route.service.is_none() && route.channel.is_none() {
            problems.push(Problem::new(
                path,
                &key,
                "a route names neither a service nor a channel".into(),
                "add service = \"…\" or channel = \"…\"",
            ));
        }
        if let Some(service) = route.service.as_deref().filter(|s| !services.contains_key(*s)) {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                path,
                &format!("{key}.service"),
                format!("unknown service `{service}`"),
                format!("known services: {}", known.join(", ")),
            ));
        }
        if let Some(channel) = &route.channel {
            channel_ok(&format!("{key}.channel"), channel, problems);
        }
        routes.push(AlertRoute { labels: route.labels, service: route.service, channel: route.channel });
    }
    let alertmanager = raw.alertmanager.map(|am| {
        let basic = match (am.username_env, am.password_env) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                problems.push(Problem::new(
                    path,
                    "alerts.alertmanager",
                    "basic auth needs both username_env and password_env".into(),
                    "or use token_env for bearer auth",
                ));
                None
            }
        };
        if am.token_env.is_some() == basic.is_some() {
            problems.push(Problem::new(
                path,
                "alerts.alertmanager",
                "give exactly one of token_env (bearer) and username_env + password_env (basic)".into(),
                "Alertmanager's http_config sends one of them; an endpoint without auth is refused",
            ));
        }
        for (what, name) in am
            .token_env
            .iter()
            .map(|n| ("token_env", n))
            .chain(basic.iter().flat_map(|(u, p)| [("username_env", u), ("password_env", p)]))
        {
            env_name(path, &format!("alerts.alertmanager.{what}"), name, problems);
        }
        if let Some(url) = am.api_url.as_deref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            problems.push(Problem::new(
                path,
                "alerts.alertmanager.api_url",
                format!("`{url}` is not an http(s) URL"),
                "like http://alertmanager.monitoring:9093 (silences are created there)",
            ));
        }
        AlertmanagerSource {
            token_env: am.token_env,
            basic_env: basic,
            api_url: am.api_url.map(|u| u.trim_end_matches('/').to_string()),
        }
    });
    let datadog = raw.datadog.map(|dd| {
        env_name(path, "alerts.datadog.secret_env", &dd.secret_env, problems);
        let header = dd.header.unwrap_or_else(|| "X-Opsbot-Token".into());
        if header.is_empty() || !header.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            problems.push(Problem::new(
                path,
                "alerts.datadog.header",
                format!("`{header}` is not a header name"),
                "like X-Opsbot-Token",
            ));
        }
        DatadogSource { secret_env: dd.secret_env, header: header.to_ascii_lowercase() }
    });
    let pagerduty = raw.pagerduty.map(|pd| {
        env_name(path, "alerts.pagerduty.secrets_env", &pd.secrets_env, problems);
        PagerdutySource { secrets_env: pd.secrets_env }
    });
    let service_labels = raw.service_labels.unwrap_or_else(|| vec!["service".into()]);
    AlertSettings {
        default_channel,
        service_labels,
        flap_window: duration("alerts.flap_window", raw.flap_window.as_deref(), Duration::from_secs(30 * 60), problems),
        recent_change: duration(
            "alerts.recent_change",
            raw.recent_change.as_deref(),
            Duration::from_secs(60 * 60),
            problems,
        ),
        routes,
        runbooks: raw.runbooks,
        alertmanager,
        datadog,
        pagerduty,
    }
}

impl AlertSettings {
    /// Where an alert with `labels` goes: the first route that matches,
    /// else the configured service a service label names (and its
    /// channels), else the default channel.
    pub fn route(
        &self,
        labels: &BTreeMap<String, String>,
        services: &BTreeMap<String, super::Service>,
    ) -> (Option<String>, Vec<String>) {
        let home = |service: &str| -> Vec<String> {
            services
                .get(service)
                .map(|s| s.channels.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| vec![self.default_channel.clone()])
        };
        for route in &self.routes {
            if route.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                let channels = match (&route.channel, &route.service) {
                    (Some(channel), _) => vec![channel.clone()],
                    (None, Some(service)) => home(service),
                    (None, None) => vec![self.default_channel.clone()],
                };
                return (route.service.clone(), channels);
            }
        }
        for label in &self.service_labels {
            if let Some(service) = labels.get(label).filter(|s| services.contains_key(*s)) {
                return (Some(service.clone()), home(service));
            }
        }
        (None, vec![self.default_channel.clone()])
    }
}

/// `[reports]`: what the delivery numbers are held against.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    environments: Option<Vec<String>>,
    failure_window: Option<String>,
    deploys_per_week: Option<f64>,
    success_rate: Option<f64>,
    change_failure_rate: Option<f64>,
    time_to_restore: Option<String>,
}

pub(super) fn reports(
    path: &Path,
    raw: RawReports,
    environments: &BTreeMap<String, super::Environment>,
    duration: &mut super::chat::DurationOf,
    problems: &mut Vec<Problem>,
) -> crate::report::delivery::Targets {
    let defaults = crate::report::delivery::Targets::default();
    let chosen = raw.environments.unwrap_or_else(|| {
        // Production when there is one; else every environment.
        if environments.contains_key("production") {
            defaults.environments.clone()
        } else {
            environments.keys().cloned().collect()
        }
    });
    for env in chosen.iter().filter(|e| !environments.contains_key(*e)) {
        let known: Vec<&str> = environments.keys().map(String::as_str).collect();
        problems.push(Problem::new(
            path,
            "reports.environments",
            format!("unknown environment `{env}`"),
            format!("known environments: {}", known.join(", ")),
        ));
    }
    let mut percent = |key: &str, value: Option<f64>| {
        if let Some(v) = value.filter(|v| !(0.0..=100.0).contains(v)) {
            problems.push(Problem::new(path, key, format!("{v} is not a percentage"), "a number from 0 to 100"));
        }
    };
    percent("reports.success_rate", raw.success_rate);
    percent("reports.change_failure_rate", raw.change_failure_rate);
    if let Some(v) = raw.deploys_per_week.filter(|v| !v.is_finite() || *v < 0.0) {
        problems.push(Problem::new(path, "reports.deploys_per_week", format!("{v} is not a count"), "like 10"));
    }
    crate::report::delivery::Targets {
        environments: chosen,
        failure_window: duration(
            "reports.failure_window",
            raw.failure_window.as_deref(),
            defaults.failure_window,
            problems,
        ),
        deploys_per_week: raw.deploys_per_week.unwrap_or(defaults.deploys_per_week),
        success_rate: raw.success_rate.unwrap_or(defaults.success_rate),
        change_failure_rate: raw.change_failure_rate,
        time_to_restore: duration(
            "reports.time_to_restore",
            raw.time_to_restore.as_deref(),
            defaults.time_to_restore,
            problems,
        ),
    }
}

/// `[ci]`: CI posts which commit each version was built from, and when it
/// was committed (`POST /ci/commits`, signed with the secret in `secret_env`):
/// the delivery report's lead time for changes.
#[derive(Debug, Clone, PartialEq)]
pub struct CiSettings {
    pub secret_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCi {
    secret_env: String,
}

pub(super) fn ci(path: &Path, raw: RawCi, problems: &mut Vec<Problem>) -> CiSettings {
    env_name(path, "ci.secret_env", &raw.secret_env, problems);
    CiSettings { secret_env: raw.secret_env }
}
