//! What runbook steps act on besides services: `[databases.NAME]` (an `sql`
//! step's target), `[http.NAME]` (an `http` step's request) and
//! `[jobs.NAME]` (a `k8s_job` step's template). Secrets never live here:
//! a database URL and an API key come from an environment variable or a
//! file, read when a step runs.

use super::Problem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[databases.NAME]`: where an `sql` step connects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Database {
    /// The environment variable holding the URL (`postgres://…`).
    pub url_env: Option<String>,
    /// Or a file holding it (a mounted secret).
    pub url_file: Option<PathBuf>,
    /// Nothing is connected to: a step says what it would run (the demo).
    pub simulated: bool,
}

impl Database {
    /// The URL, read now from the environment or the file. The error names
    /// where it looked, never the URL.
    pub fn url(&self, name: &str) -> Result<String, String> {
        if let Some(var) = &self.url_env {
            return std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("database `{name}`: the environment variable {var} is not set"));
        }
        if let Some(file) = &self.url_file {
            return std::fs::read_to_string(file)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("database `{name}`: cannot read {}: {e}", file.display()));
        }
        Err(format!("database `{name}` has neither url_env nor url_file"))
    }
}

/// `[http.NAME]`: a request an `http` step makes (an event to Datadog, say).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpTarget {
    pub url: String,
    /// POST or PUT.
    pub method: String,
    /// The environment variable holding the API key, sent in `api_key_header`.
    pub api_key_env: Option<String>,
    pub api_key_header: Option<String>,
    /// Statuses that count as success; any 2xx when empty.
    pub expect_status: Vec<u16>,
    pub timeout: Duration,
    pub simulated: bool,
}

/// `[jobs.NAME]`: a Kubernetes Job a `k8s_job` step creates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobTemplate {
    /// The kubeconfig context (the current one, or in-cluster, when absent).
    pub context: Option<String>,
    pub namespace: String,
    /// Pinned by digest (`…@sha256:…`): what was approved is what runs.
    pub image: String,
    /// The fixed command; parameters reach it only as environment variables.
    pub command: Vec<String>,
    pub service_account: Option<String>,
    /// Node paths mounted at the same place (`/var/log` for a clean-up);
    /// each must be absolute. The pod then runs on whichever node the
    /// scheduler picks: pin it with the namespace's defaults if it matters.
    pub host_paths: Vec<String>,
    /// `activeDeadlineSeconds`; the step waits this long, then reports.
    pub deadline: Duration,
    /// How many lines of its log the thread gets.
    pub log_lines: u32,
    pub simulated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    url_env: Option<String>,
    url_file: Option<String>,
    #[serde(default)]
    simulated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    url: Option<String>,
    method: Option<String>,
    api_key_env: Option<String>,
    api_key_header: Option<String>,
    #[serde(default)]
    expect_status: Vec<u16>,
    timeout: Option<String>,
    #[serde(default)]
    simulated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    context: Option<String>,
    namespace: String,
    image: String,
    command: Vec<String>,
    service_account: Option<String>,
    #[serde(default)]
    host_paths: Vec<String>,
    deadline: Option<String>,
    log_lines: Option<u32>,
    #[serde(default)]
    simulated: bool,
}

fn env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn duration(path: &Path, key: &str, text: Option<&str>, default: Duration, problems: &mut Vec<Problem>) -> Duration {
    match text.map(crate::clock::parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            problems.push(Problem::new(path, key, "not a positive duration".into(), "write it like 30s or 10m"));
            default
        }
    }
}

pub(super) fn databases(
    path: &Path,
    base: &Path,
    raw: BTreeMap<String, RawDatabase>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Database> {
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("databases.{name}");
        let sources = usize::from(raw.url_env.is_some()) + usize::from(raw.url_file.is_some());
        if raw.simulated && sources > 0 {
            problems.push(Problem::new(
                path,
                &key,
                "a simulated database has no URL".into(),
                "drop url_env/url_file, or drop simulated",
            ));
        } else if !raw.simulated && sources != 1 {
            problems.push(Problem::new(
                path,
                &key,
                "a database needs exactly one of url_env and url_file".into(),
                "url_env = \"DATABASE_URL\" (the URL is never written in this file)",
            ));
        }
        if let Some(var) = raw.url_env.as_deref().filter(|v| !env_name(v)) {
            problems.push(Problem::new(
                path,
                &format!("{key}.url_env"),
                format!("`{var}` is not an environment variable name"),
                "like DATABASE_URL",
            ));
        }
        let url_file = raw.url_file.map(|f| base.join(f));
        out.insert(name, Database { url_env: raw.url_env, url_file, simulated: raw.simulated });
    }
    out
}

pub(super) fn http(
    path: &Path,
    raw: BTreeMap<String, RawHttp>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, HttpTarget> {
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("http.{name}");
        let url = raw.url.unwrap_or_default();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        if !scheme_ok && !raw.simulated {
            problems.push(Problem::new(
                path,
                &format!("{key}.url"),
                format!("`{url}` is not an http(s) URL"),
                "like https://api.datadoghq.com/api/v1/events",
            ));
        }
        let method = raw.method.unwrap_or_else(|| "POST".into()).to_uppercase();
        if !matches!(method.as_str(), "POST" | "PUT") {
            problems.push(Problem::new(path, &format!("{key}.method"), format!("`{method}`"), "POST or PUT"));
        }
        match (&raw.api_key_env, &raw.api_key_header) {
            (Some(var), Some(_)) if !env_name(var) => problems.push(Problem::new(
                path,
                &format!("{key}.api_key_env"),
                format!("`{var}` is not an environment variable name"),
                "like DD_API_KEY",
            )),
            (Some(_), None) | (None, Some(_)) => problems.push(Problem::new(
                path,
                &key,
                "api_key_env and api_key_header go together".into(),
                "api_key_env = \"DD_API_KEY\" with api_key_header = \"DD-API-KEY\"",
            )),
            _ => {}
        }
        if let Some(bad) = raw.expect_status.iter().find(|s| !(200..600).contains(*s)) {
            problems.push(Problem::new(path, &format!("{key}.expect_status"), format!("{bad}"), "HTTP statuses"));
        }
        let timeout =
            duration(path, &format!("{key}.timeout"), raw.timeout.as_deref(), Duration::from_secs(10), problems);
        out.insert(
            name,
            HttpTarget {
                url,
                method,
                api_key_env: raw.api_key_env,
                api_key_header: raw.api_key_header,
                expect_status: raw.expect_status,
                timeout,
                simulated: raw.simulated,
            },
        );
    }
    out
}

pub(super) fn jobs(
    path: &Path,
    raw: BTreeMap<String, RawJob>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, JobTemplate> {
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("jobs.{name}");
        if !raw.image.contains("@sha256:") && !raw.simulated {
            problems.push(Problem::new(
                path,
                &format!("{key}.image"),
                format!("`{}` is not pinned by digest", raw.image),
                "write image@sha256:… so what was approved is what runs",
            ));
        }
        if raw.command.is_empty() {
            problems.push(Problem::new(path, &format!("{key}.command"), "empty".into(), "the Job's fixed command"));
        }
        let dns = |v: &str| {
            !v.is_empty()
                && v.len() <= 63
                && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !dns(&raw.namespace) {
            problems.push(Problem::new(path, &format!("{key}.namespace"), "not a namespace name".into(), "like ops"));
        }
        if !dns(&name) || name.len() > 40 {
            problems.push(Problem::new(
                path,
                &key,
                "a template's name starts the Job's name".into(),
                "use lowercase letters, digits and `-` (at most 40)",
            ));
        }
        for host in &raw.host_paths {
            if !host.starts_with('/') || host.contains("..") {
                problems.push(Problem::new(
                    path,
                    &format!("{key}.host_paths"),
                    format!("`{host}` is not an absolute path"),
                    "like /var/log",
                ));
            }
        }
        let deadline =
            duration(path, &format!("{key}.deadline"), raw.deadline.as_deref(), Duration::from_secs(600), problems);
        out.insert(
            name,
            JobTemplate {
                context: raw.context,
                namespace: raw.namespace,
                image: raw.image,
                command: raw.command,
                service_account: raw.service_account,
                host_paths: raw.host_paths,
                deadline,
                log_lines: raw.log_lines.unwrap_or(20).clamp(1, 500),
                simulated: raw.simulated,
            },
        );
    }
    out
}
