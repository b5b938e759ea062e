//! Every environment variable a configuration reads a secret from: what
//! `opsbot serve` checks before it opens anything, and what the Kubernetes
//! manifests must pass in from a Secret (tests/it/manifests.rs holds them to
//! this list, so they cannot drift apart).

use super::Config;

/// An environment variable holding a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVar {
    pub name: String,
    /// The configuration section that turns it on.
    pub section: String,
    /// What it is for, said when it is missing.
    pub why: &'static str,
    /// `opsbot serve` refuses to start without it. The others are read when
    /// they are used (a runbook step's target) or turn something optional on
    /// (audit checkpoints).
    pub required: bool,
}

fn var(name: &str, section: &str, why: &'static str, required: bool) -> SecretVar {
    SecretVar { name: name.to_string(), section: section.to_string(), why, required }
}

impl Config {
    /// The secrets this configuration reads, in the order `serve` names them.
    pub fn secret_variables(&self) -> Vec<SecretVar> {
        let mut out = Vec::new();
        if let super::StoreSettings::Postgres { url_env } = &self.store {
            out.push(var(url_env, "store", "the URL of the PostgreSQL database the store lives in", true));
        }
        if let Some(slack) = &self.slack {
            out.push(var("SLACK_BOT_TOKEN", "slack", "the bot token, xoxb-…, to post replies", true));
            if slack.mode.http() {
                out.push(var("SLACK_SIGNING_SECRET", "slack", "to verify Slack's requests", true));
            }
            if slack.mode.socket() {
                out.push(var("SLACK_APP_TOKEN", "slack", "the app-level token, xapp-…, for Socket Mode", true));
            }
        }
        if let Some(discord) = &self.discord {
            out.push(var("DISCORD_TOKEN", "discord", "the bot token, to post replies and hold the gateway", true));
            out.push(var("DISCORD_APPLICATION_ID", "discord", "the application's id, to answer interactions", true));
            if discord.mode.http() {
                out.push(var(
                    "DISCORD_PUBLIC_KEY",
                    "discord",
                    "the application's public key, to verify interactions",
                    true,
                ));
            }
        }
        if let Some(alerts) = &self.alerts {
            const WHY: &str = "the sender's shared secret; it never goes in the config file";
            if let Some(am) = &alerts.alertmanager {
                if let Some(token) = &am.token_env {
                    out.push(var(token, "alerts.alertmanager", WHY, true));
                } else if let Some((user, password)) = &am.basic_env {
                    out.push(var(user, "alerts.alertmanager", WHY, true));
                    out.push(var(password, "alerts.alertmanager", WHY, true));
                }
            }
            if let Some(dd) = &alerts.datadog {
                out.push(var(&dd.secret_env, "alerts.datadog", WHY, true));
            }
            if let Some(pd) = &alerts.pagerduty {
                out.push(var(&pd.secrets_env, "alerts.pagerduty", WHY, true));
            }
        }
        if let Some(ci) = &self.ci {
            out.push(var(&ci.secret_env, "ci", "the secret CI signs its commit records with", true));
        }
        if self.audit.key_file.is_none() {
            out.push(var(
                crate::checkpoints::KEY_VARIABLE,
                "audit",
                "the key signed audit checkpoints are made with; without it there are none",
                false,
            ));
        }
        for (name, db) in &self.databases {
            if let Some(url) = &db.url_env {
                out.push(var(
                    url,
                    &format!("databases.{name}"),
                    "the database URL a runbook `sql` step connects to",
                    false,
                ));
            }
        }
        for (name, http) in &self.http {
            // A simulated target sends nothing, so reads no key.
            if let Some(key) = http.api_key_env.as_ref().filter(|_| !http.simulated) {
                out.push(var(key, &format!("http.{name}"), "the API key a runbook `http` step sends", false));
            }
        }
        out
    }
}
