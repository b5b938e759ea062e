//! Runbooks as data: the files of `[bot] runbooks_dir` read into a [`Runbook`] (typed
//! parameters, ordered steps of a closed set of kinds), checked against
//! the configuration, and resolved with the values a person gave into a
//! [`Plan`] whose digest an approval binds to. Pure: no I/O, no clock.
//!
//! Parameters are never free text: a service from the configuration, a
//! bounded integer or duration, or one of a list of words. Their values
//! reach a step only where the file says (`{name}` in a service field, an
//! HTTP body or a Job's environment; `$n` in SQL through `params`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// One runbook file.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRunbook")]
pub struct Runbook {
    pub name: String,
    pub summary: String,
    pub description: Option<String>,
    /// The environment whose rules decide who may run it and what
    /// approvals it needs; every service it touches must be in it.
    pub environment: String,
    pub params: Vec<Param>,
    pub steps: Vec<Step>,
    /// For each step, whether it needs the rule's approvals: a step that
    /// changes something does unless its file says `approval = false`; a
    /// read-only `sql` step and `wait_healthy` never do. A run waits for
    /// approval when any of its steps needs it.
    pub gated: Vec<bool>,
}

/// The file's shape: each step a table, whose `approval` key is read here
/// and the rest decoded as a [`Step`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: String,
    summary: String,
    #[serde(default)]
    description: Option<String>,
    environment: String,
    #[serde(default)]
    params: Vec<Param>,
    steps: Vec<toml::Table>,
}

impl TryFrom<RawRunbook> for Runbook {
    type Error = String;
    fn try_from(raw: RawRunbook) -> Result<Runbook, String> {
        let mut steps = Vec::new();
        let mut gated = Vec::new();
        for (i, mut table) in raw.steps.into_iter().enumerate() {
            let approval = match table.remove("approval") {
                None => None,
                Some(toml::Value::Boolean(b)) => Some(b),
                Some(_) => return Err(format!("steps[{i}].approval: write true or false")),
            };
            let step: Step = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| format!("steps[{i}]: {}", e.message().trim()))?;
            gated.push(step.mutates() && approval.unwrap_or(true));
            steps.push(step);
        }
        Ok(Runbook {
            name: raw.name,
            summary: raw.summary,
            description: raw.description,
            environment: raw.environment,
            params: raw.params,
            steps,
            gated,
        })
    }
}

/// A typed parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamKind,
    #[serde(default)]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub min: Option<toml::Value>,
    #[serde(default)]
    pub max: Option<toml::Value>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub help: Option<String>,
}

impl Param {
    /// `idle_for=<duration 1m..24h, default 10m>`, for `/runbook list`.
    pub fn describe(&self) -> String {
        let text = |v: &Option<toml::Value>| v.as_ref().map(default_text);
        let kind = match self.kind {
            ParamKind::Service => "service".to_string(),
            ParamKind::Integer => "integer".to_string(),
            ParamKind::Duration => "duration".to_string(),
            ParamKind::Choice => format!("one of {}", self.values.join(", ")),
        };
        let bounds = match (text(&self.min), text(&self.max)) {
            (Some(min), Some(max)) => format!(" {min}..{max}"),
            (Some(min), None) => format!(" at least {min}"),
            (None, Some(max)) => format!(" at most {max}"),
            (None, None) => String::new(),
        };
        let default = text(&self.default).map(|d| format!(", default {d}")).unwrap_or_else(|| ", required".into());
        let help = self.help.as_ref().map(|h| format!(" — {h}")).unwrap_or_default();
        format!("{}=<{kind}{bounds}{default}>{help}", self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Service,
    Integer,
    Duration,
    Choice,
}

/// One step, of a closed set of kinds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Restart {
        service: String,
    },
    Scale {
        service: String,
        replicas: String,
    },
    Rollback {
        service: String,
    },
    Sql {
        target: String,
        statement: String,
        #[serde(default)]
        preview: Option<String>,
        #[serde(default)]
        params: Vec<String>,
        #[serde(default)]
        read_only: bool,
        max_rows: u64,
        #[serde(default = "default_sql_timeout")]
        timeout: String,
    },
    Http {
        target: String,
        #[serde(default)]
        body: Option<toml::Value>,
    },
    K8sJob {
        template: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    WaitHealthy {
        service: String,
        #[serde(default = "default_wait")]
        timeout: String,
    },
}

fn default_sql_timeout() -> String {
    "30s".into()
}

fn default_wait() -> String {
    "5m".into()
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Restart { .. } => "restart",
            Step::Scale { .. } => "scale",
            Step::Rollback { .. } => "rollback",
            Step::Sql { .. } => "sql",
            Step::Http { .. } => "http",
            Step::K8sJob { .. } => "k8s_job",
            Step::WaitHealthy { .. } => "wait_healthy",
        }
    }

    /// Whether it changes anything (a read-only `sql` step and waiting do not).
    pub fn mutates(&self) -> bool {
        !matches!(self, Step::WaitHealthy { .. } | Step::Sql { read_only: true, .. })
    }

    /// The service it acts on or waits for (none for sql, http and Jobs).
    pub fn service(&self) -> Option<&str> {
        match self {
            Step::Restart { service }
            | Step::Scale { service, .. }
            | Step::Rollback { service }
            | Step::WaitHealthy { service, .. } => Some(service),
            Step::Sql { .. } | Step::Http { .. } | Step::K8sJob { .. } => None,
        }
    }

    /// The service it changes (restart, scale, rollback).
    pub fn changes_service(&self) -> Option<&str> {
        self.service().filter(|_| !matches!(self, Step::WaitHealthy { .. }))
    }

    /// What it acts on, in a few words: `api-service`, `main`, `datadog-events`.
    pub fn target(&self) -> &str {
        match self {
            Step::Sql { target, .. } | Step::Http { target, .. } => target,
            Step::K8sJob { template, .. } => template,
            other => other.service().unwrap_or_default(),
        }
    }
}

impl Plan {
    /// The services its steps change, each once, in name order.
    pub fn changed_services(&self) -> Vec<String> {
        let mut out: Vec<String> = self.steps.iter().filter_map(Step::changes_service).map(str::to_string).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The service its own records name: the first it changes or waits for
    /// (so an incident on that service tells the run's story).
    pub fn primary_service(&self) -> Option<String> {
        self.steps.iter().find_map(Step::service).map(str::to_string)
    }

    /// The digest's start, as cards show it.
    pub fn short_digest(&self) -> &str {
        self.digest.get(..12).unwrap_or(&self.digest)
    }
}

/// What the runbook checks need to know of the configuration.
pub struct Known<'a> {
    /// Configured services and their environments.
    pub services: &'a BTreeMap<String, String>,
    pub environments: &'a [String],
    pub databases: &'a [String],
    pub http_targets: &'a [String],
    pub job_templates: &'a [String],
}

/// [`Known`] as owned data, built from the configuration.
pub struct KnownOwned {
    pub services: BTreeMap<String, String>,
    pub environments: Vec<String>,
    pub databases: Vec<String>,
    pub http_targets: Vec<String>,
    pub job_templates: Vec<String>,
}

impl KnownOwned {
    pub fn from_config(config: &crate::config::Config) -> KnownOwned {
        KnownOwned {
            services: config.services.iter().map(|(name, s)| (name.clone(), s.environment.clone())).collect(),
            environments: config.environments.keys().cloned().collect(),
            databases: config.databases.keys().cloned().collect(),
            http_targets: config.http.keys().cloned().collect(),
            job_templates: config.jobs.keys().cloned().collect(),
        }
    }

    pub fn known(&self) -> Known<'_> {
        Known {
            services: &self.services,
            environments: &self.environments,
            databases: &self.databases,
            http_targets: &self.http_targets,
            job_templates: &self.job_templates,
        }
    }
}

/// Functions that act even inside `BEGIN READ ONLY`.
const SIDE_EFFECTS: [&str; 9] = [
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_promote",
    "pg_notify",
    "pg_log_backend_memory_contexts",
    "dblink",
];

/// `{name}` references in `text`.
fn references(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

fn strings_in(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        toml::Value::Table(table) => table.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

impl Runbook {
    /// Every problem with this runbook under `known`, as `key: problem — hint`.
    pub fn check(&self, known: &Known<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut report = |key: &str, text: String| problems.push(format!("{key}: {text}"));
        if !known.environments.iter().any(|e| e == &self.environment) {
            report("environment", format!("`{}` is not a configured environment", self.environment));
        }
        let param = |name: &str| self.params.iter().find(|p| p.name == name);
        for (i, p) in self.params.iter().enumerate() {
            let key = format!("params[{i}]");
            if self.params[..i].iter().any(|q| q.name == p.name) {
                report(&key, format!("`{}` is declared twice", p.name));
            }
            if p.kind == ParamKind::Choice && p.values.is_empty() {
                report(&key, "a choice needs `values`".into());
            }
            if p.kind != ParamKind::Choice && !p.values.is_empty() {
                report(&key, "`values` is only for a choice".into());
            }
            // Bounds of the parameter's own type, or none: a bound that does
            // not parse would otherwise be no bound at all.
            let bounds: Vec<(&str, &toml::Value)> = [("min", &p.min), ("max", &p.max)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
            let mut parsed = Vec::new();
            for (which, bound) in &bounds {
                let as_number = match (p.kind, bound) {
                    (ParamKind::Integer, toml::Value::Integer(n)) => Some(*n as i128),
                    (ParamKind::Duration, toml::Value::String(s)) => {
                        crate::clock::parse_duration(s).ok().map(|d| d.as_millis() as i128)
                    }
                    _ => None,
                };
                match as_number {
                    Some(n) => parsed.push(n),
                    None => report(
                        &format!("{key}.{which}"),
                        match p.kind {
                            ParamKind::Integer => "write a whole number, like 7".into(),
                            ParamKind::Duration => "write a duration in quotes, like \"10m\"".into(),
                            _ => format!("a {:?} parameter takes no {which}", p.kind).to_lowercase(),
                        },
                    ),
                }
            }
            if let [min, max] = parsed[..] {
                if bounds.len() == 2 && min > max {
                    report(&key, "min is above max".into());
                }
            }
            if let Some(default) = &p.default {
                if let Err(e) = value_of(p, &default_text(default), known) {
                    report(&key, format!("its default is refused: {e}"));
                }
            }
        }
        // A field naming a service: a configured one (in the runbook's
        // environment), or `{param}` of a service parameter.
        let service_field = |key: &str, value: &str, problems: &mut Vec<String>| match value
            .strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
        {
            Some(name) => match param(name) {
                Some(p) if p.kind == ParamKind::Service => {}
                Some(_) => problems.push(format!("{key}: `{{{name}}}` is not a service parameter")),
                None => problems.push(format!("{key}: `{{{name}}}` names no parameter")),
            },
            None => match known.services.get(value) {
                Some(env) if env == &self.environment => {}
                Some(env) => problems
                    .push(format!("{key}: {value} is in {env}, not this runbook's environment {}", self.environment)),
                None => problems.push(format!("{key}: `{value}` is not a configured service")),
            },
        };
        let mut more = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let key = format!("steps[{i}]");
            let mut texts = Vec::new();
            match step {
                Step::Restart { service } | Step::Rollback { service } | Step::WaitHealthy { service, .. } => {
                    service_field(&format!("{key}.service"), service, &mut more)
                }
                Step::Scale { service, replicas } => {
                    service_field(&format!("{key}.service"), service, &mut more);
                    if replicas.parse::<u32>().is_err() {
                        match replicas.strip_prefix('{').and_then(|r| r.strip_suffix('}')).and_then(param) {
                            Some(p) if p.kind == ParamKind::Integer => {}
                            _ => more.push(format!("{key}.replicas: a number, or `{{param}}` of an integer parameter")),
                        }
                    }
                }
                Step::Sql { target, statement, preview, params, timeout, read_only, .. } => {
                    if !known.databases.contains(target) {
                        more.push(format!("{key}.target: `{target}` is not a [databases] target in the configuration"));
                    }
                    for name in params {
                        if param(name).is_none() {
                            more.push(format!("{key}.params: `{name}` names no parameter"));
                        }
                    }
                    if preview.is_none() && !read_only {
                        more.push(format!(
                            "{key}.preview: a step that changes something needs a read-only `preview` with the same parameters (what it would touch, checked against max_rows and shown on the card)"
                        ));
                    }
                    for (field, text) in
                        std::iter::once(("statement", statement)).chain(preview.iter().map(|p| ("preview", p)))
                    {
                        // A read-only transaction does not stop these: a
                        // preview or a read-only step must not call them.
                        let reads_only = field == "preview" || *read_only;
                        // What runs: a word in a comment neither calls nor guards.
                        let lower = crate::action::sql::without_comments(text).to_lowercase();
                        if let Some(f) = SIDE_EFFECTS.iter().find(|f| reads_only && lower.contains(*f)) {
                            more.push(format!(
                                "{key}.{field}: `{f}` acts even in a read-only transaction; a preview or read-only statement must not call it"
                            ));
                        }
                        if let Err(e) = crate::action::sql::check_binding(text, params.len()) {
                            more.push(format!("{key}.{field}: {e}"));
                        }
                        let signals = lower.contains("pg_terminate_backend") || lower.contains("pg_cancel_backend");
                        if signals && !lower.contains("pg_backend_pid()") {
                            more.push(format!(
                                "{key}.{field}: a statement that signals backends must leave opsbot's own out (`pid <> pg_backend_pid()`)"
                            ));
                        }
                    }
                    if crate::clock::parse_duration(timeout).is_err() {
                        more.push(format!("{key}.timeout: write it like 30s"));
                    }
                }
                Step::Http { target, body } => {
                    if !known.http_targets.contains(target) {
                        more.push(format!("{key}.target: `{target}` is not an [http] target in the configuration"));
                    }
                    if let Some(body) = body {
                        strings_in(body, &mut texts);
                    }
                }
                Step::K8sJob { template, env } => {
                    if !known.job_templates.contains(template) {
                        more.push(format!(
                            "{key}.template: `{template}` is not a [jobs] template in the configuration"
                        ));
                    }
                    for (name, value) in env {
                        if !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                            more.push(format!("{key}.env: `{name}` is not an environment variable name"));
                        }
                        texts.push(value.clone());
                    }
                }
            }
            if let Step::WaitHealthy { timeout, .. } = step {
                if crate::clock::parse_duration(timeout).is_err() {
                    more.push(format!("{key}.timeout: write it like 5m"));
                }
            }
            for text in texts {
                for name in references(&text) {
                    if param(name).is_none() {
                        more.push(format!("{key}: `{{{name}}}` names no parameter"));
                    }
                }
            }
        }
        if self.steps.is_empty() {
            more.push("steps: a runbook needs at least one step".into());
        }
        problems.extend(more);
        problems
    }
}

fn default_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parameter's value, checked against its type and bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Integer(i64),
    #[serde(serialize_with = "seconds")]
    Duration(Duration),
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::format_duration(*d))
}

impl Value {
    /// As it is put into a service field, a body or an environment variable.
    pub fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Integer(n) => n.to_string(),
            Value::Duration(d) => crate::clock::format_duration(*d),
        }
    }
}

fn value_of(param: &Param, given: &str, known: &Known<'_>) -> Result<Value, String> {
    // What was typed is echoed inert (never a mention, a link or markup).
    let shown = crate::engine::reply::typed(given);
    let bound_int = |v: &Option<toml::Value>| v.as_ref().and_then(|v| v.as_integer());
    let bound_dur = |v: &Option<toml::Value>| {
        v.as_ref().and_then(|v| v.as_str()).and_then(|s| crate::clock::parse_duration(s).ok())
    };
    match param.kind {
        ParamKind::Service => {
            if known.services.contains_key(given) {
                Ok(Value::Text(given.to_string()))
            } else {
                Err(format!("`{shown}` is not a configured service"))
            }
        }
        ParamKind::Integer => {
            let n: i64 = given.parse().map_err(|_| format!("`{shown}` is not a whole number"))?;
            if bound_int(&param.min).is_some_and(|m| n < m) || bound_int(&param.max).is_some_and(|m| n > m) {
                return Err(format!("{n} is outside the allowed range ({})", param.describe()));
            }
            Ok(Value::Integer(n))
        }
        ParamKind::Duration => {
            let d = crate::clock::parse_duration(given)
                .map_err(|e| format!("`{shown}`: {}", crate::engine::reply::typed(&e)))?;
            if bound_dur(&param.min).is_some_and(|m| d < m) || bound_dur(&param.max).is_some_and(|m| d > m) {
                return Err(format!("{shown} is outside the allowed range ({})", param.describe()));
            }
            Ok(Value::Duration(d))
        }
        ParamKind::Choice => {
            if param.values.iter().any(|v| v == given) {
                Ok(Value::Text(given.to_string()))
            } else {
                Err(format!("`{shown}` is not one of {}", param.values.join(", ")))
            }
        }
    }
}

/// A runbook with its values: what an approval binds to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub runbook: String,
    pub values: BTreeMap<String, Value>,
    /// Each step with its references filled in.
    pub steps: Vec<Step>,
    /// Which steps need the rule's approvals ([`Runbook::gated`]).
    pub gated: Vec<bool>,
    /// SHA-256 over the runbook's name, the values and the resolved steps
    /// (with the targets they name, from the caller): changed, approvals
    /// given for the old one stop counting.
    pub digest: String,
}

impl Runbook {
    /// Resolves the values given (`name` → typed text), defaults for the
    /// rest; every problem is reported.
    pub fn plan(
        &self,
        given: &BTreeMap<String, String>,
        known: &Known<'_>,
        targets: &serde_json::Value,
    ) -> Result<Plan, Vec<String>> {
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                problems.push(format!("`{}` is not a parameter of {}", crate::engine::reply::typed(name), self.name));
            }
        }
        let mut values = BTreeMap::new();
        for p in &self.params {
            let text = match (given.get(&p.name), &p.default) {
                (Some(text), _) => text.clone(),
                (None, Some(default)) => default_text(default),
                (None, None) => {
                    problems.push(format!("`{}` is needed ({:?})", p.name, p.kind));
                    continue;
                }
            };
            match value_of(p, &text, known) {
                Ok(value) => {
                    values.insert(p.name.clone(), value);
                }
                Err(e) => problems.push(format!("`{}`: {e}", p.name)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let fill = |text: &str| -> String {
            let mut out = text.to_string();
            for (name, value) in &values {
                out = out.replace(&format!("{{{name}}}", name = name), &value.text());
            }
            out
        };
        let fill_value = |value: &toml::Value| -> toml::Value {
            fn walk(v: &toml::Value, f: &dyn Fn(&str) -> String) -> toml::Value {
                match v {
                    toml::Value::String(s) => toml::Value::String(f(s)),
                    toml::Value::Array(items) => toml::Value::Array(items.iter().map(|i| walk(i, f)).collect()),
                    toml::Value::Table(t) => {
                        toml::Value::Table(t.iter().map(|(k, v)| (k.clone(), walk(v, f))).collect())
                    }
                    other => other.clone(),
                }
            }
            walk(value, &fill)
        };
        let steps: Vec<Step> = self
            .steps
            .iter()
            .map(|step| match step {
                Step::Restart { service } => Step::Restart { service: fill(service) },
                Step::Rollback { service } => Step::Rollback { service: fill(service) },
                Step::WaitHealthy { service, timeout } => {
                    Step::WaitHealthy { service: fill(service), timeout: timeout.clone() }
                }
                Step::Scale { service, replicas } => Step::Scale { service: fill(service), replicas: fill(replicas) },
                // SQL text is never filled: values are bound as $n.
                sql @ Step::Sql { .. } => sql.clone(),
                Step::Http { target, body } => {
                    Step::Http { target: target.clone(), body: body.as_ref().map(fill_value) }
                }
                Step::K8sJob { template, env } => Step::K8sJob {
                    template: template.clone(),
                    env: env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
                },
            })
            .collect();
        let mut plan =
            Plan { runbook: self.name.clone(), values, steps, gated: self.gated.clone(), digest: String::new() };
        plan.bind(targets);
        Ok(plan)
    }
}

impl Plan {
    /// Sets the digest over the plan and `targets` (the configuration
    /// entries its steps name, which the caller learns from the steps).
    pub fn bind(&mut self, targets: &serde_json::Value) {
        let canonical = serde_json::json!({
            "runbook": self.runbook, "values": self.values, "steps": self.steps, "gated": self.gated, "targets": targets,
        });
        self.digest = hex::encode(Sha256::digest(serde_json::to_vec(&canonical).expect("a plan serialises")));
    }
}

#[cfg(test)]
mod tests;
