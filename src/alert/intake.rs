//! What the alert endpoints check before they read a body: each enabled
//! source's secret, read from the environment once at start (a missing one
//! stops the start, naming the variable), and the check of a request's
//! headers against it, in constant time. PagerDuty's signature covers the
//! body, so it is checked on the raw bytes before they are parsed.

use super::{pagerduty_signed, same_secret, Source};
use crate::config::alerts::AlertSettings;

/// How Alertmanager authenticates.
#[derive(Clone)]
enum AlertmanagerAuth {
    Bearer(String),
    Basic(String),
}

/// The enabled sources and their secrets. Never printed.
#[derive(Clone, Default)]
pub struct AlertSecrets {
    alertmanager: Option<AlertmanagerAuth>,
    datadog: Option<(String, String)>,
    pagerduty: Option<Vec<String>>,
}

impl std::fmt::Debug for AlertSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertSecrets(<secrets>)")
    }
}

/// Why a request was refused before its body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The source is not configured (404).
    Off,
    /// Missing or wrong credentials (401).
    Unauthorized(&'static str),
}

fn secret(var: &str) -> Result<String, String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("the environment variable {var} is not set"))
}

impl AlertSecrets {
    /// Reads each configured source's secret; every one missing is named.
    pub fn from_env(settings: &AlertSettings) -> Result<AlertSecrets, Vec<String>> {
        let mut missing = Vec::new();
        let mut out = AlertSecrets::default();
        if let Some(am) = &settings.alertmanager {
            if let Some(var) = &am.token_env {
                match secret(var) {
                    Ok(token) => out.alertmanager = Some(AlertmanagerAuth::Bearer(token)),
                    Err(e) => missing.push(format!("[alerts.alertmanager] token_env: {e}")),
                }
            } else if let Some((user, password)) = &am.basic_env {
                match (secret(user), secret(password)) {
                    (Ok(u), Ok(p)) => {
                        use base64::Engine as _;
                        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                        out.alertmanager = Some(AlertmanagerAuth::Basic(pair));
                    }
                    (u, p) => missing.extend(
                        [u.err(), p.err()].into_iter().flatten().map(|e| format!("[alerts.alertmanager]: {e}")),
                    ),
                }
            }
        }
        if let Some(dd) = &settings.datadog {
            match secret(&dd.secret_env) {
                Ok(s) => out.datadog = Some((dd.header.clone(), s)),
                Err(e) => missing.push(format!("[alerts.datadog] secret_env: {e}")),
            }
        }
        if let Some(pd) = &settings.pagerduty {
            match secret(&pd.secrets_env) {
                Ok(s) => {
                    out.pagerduty =
                        Some(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                }
                Err(e) => missing.push(format!("[alerts.pagerduty] secrets_env: {e}")),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }

    /// Checks a request's headers for `source` (all but PagerDuty's
    /// signature, which needs the body: [`AlertSecrets::check_signature`]).
    pub fn check_headers(&self, source: Source, header: impl Fn(&str) -> Option<String>) -> Result<(), Refusal> {
        match source {
            Source::Alertmanager => {
                let auth = self.alertmanager.as_ref().ok_or(Refusal::Off)?;
                let given = header("authorization").unwrap_or_default();
                let ok = match auth {
                    AlertmanagerAuth::Bearer(token) => {
                        given.strip_prefix("Bearer ").is_some_and(|g| same_secret(g.trim(), token))
                    }
                    AlertmanagerAuth::Basic(pair) => {
                        given.strip_prefix("Basic ").is_some_and(|g| same_secret(g.trim(), pair))
                    }
                };
                ok.then_some(()).ok_or(Refusal::Unauthorized("missing or wrong Authorization"))
            }
            Source::Datadog => {
                let (name, expected) = self.datadog.as_ref().ok_or(Refusal::Off)?;
                let given = header(name).unwrap_or_default();
                same_secret(&given, expected)
                    .then_some(())
                    .ok_or(Refusal::Unauthorized("missing or wrong shared secret header"))
            }
            Source::Pagerduty => {
                self.pagerduty.as_ref().ok_or(Refusal::Off)?;
                header("x-pagerduty-signature")
                    .filter(|s| s.contains("v1="))
                    .map(|_| ())
                    .ok_or(Refusal::Unauthorized("no X-PagerDuty-Signature"))
            }
        }
    }

    /// PagerDuty's `X-PagerDuty-Signature` over the raw body, under any of
    /// the configured secrets (several while one is rotated).
    pub fn check_signature(&self, signature: &str, body: &[u8]) -> Result<(), Refusal> {
        let secrets = self.pagerduty.as_ref().ok_or(Refusal::Off)?;
        pagerduty_signed(signature, body, secrets)
            .then_some(())
            .ok_or(Refusal::Unauthorized("X-PagerDuty-Signature does not match the body"))
    }
}
