//! Reading a config text: each section and entry is decoded on its own so one
//! typo does not hide the problems after it, then every value is checked.

use super::{AuditSettings, Backend, Config, Durability, Environment, Problem, Rule, Service};
use crate::clock::parse_duration;
use crate::command::Registry;
use crate::event::{qualified_id, Actor};
use crate::policy::freeze::{FreezeWindow, WindowSpec};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBot {
    data_dir: Option<String>,
    durability: Option<String>,
    commands_dir: Option<String>,
    runbooks_dir: Option<String>,
    lock_ttl: Option<String>,
    action_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    environment: String,
    #[serde(default)]
    channels: Vec<String>,
    health_url: Option<String>,
    min_replicas: Option<u32>,
    max_replicas: Option<u32>,
    backend: Backend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    commands: Vec<String>,
    environments: Vec<String>,
    requesters: Vec<String>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    approvals: u32,
    ttl: Option<String>,
    #[serde(default)]
    break_glass: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    name: String,
    environments: Vec<String>,
    commands: Vec<String>,
    from: String,
    to: String,
    /// Raise the approvals needed to this many; leave out to deny outright.
    approvals: Option<u32>,
}

const TOP_LEVEL: [&str; 19] = [
    "store",
    "ci",
    "reports",
    "alerts",
    "bot",
    "server",
    "slack",
    "discord",
    "audit",
    "environments",
    "groups",
    "people",
    "services",
    "rules",
    "freeze",
    "incidents",
    "databases",
    "http",
    "jobs",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(rename = "type")]
    kind: Option<String>,
    url_env: Option<String>,
}

/// `[store]`: sled (the default) or PostgreSQL with its URL from the environment.
fn check_store(path: &Path, raw: RawStore, problems: &mut Vec<Problem>) -> super::StoreSettings {
    match raw.kind.as_deref() {
        None | Some("sled") => {
            if raw.url_env.is_some() {
                problems.push(Problem::new(
                    path,
                    "store.url_env",
                    "the sled store is a directory (bot.data_dir) and has no URL".to_string(),
                    "set type = \"postgres\", or drop url_env",
                ));
            }
            super::StoreSettings::Sled
        }
        Some("postgres") => super::StoreSettings::Postgres {
            url_env: raw.url_env.unwrap_or_else(|| super::StoreSettings::DEFAULT_URL_ENV.to_string()),
        },
        Some(other) => {
            problems.push(Problem::new(
                path,
                "store.type",
                format!("unknown store `{other}`"),
                "use \"sled\" (the default: one replica, a local directory) or \"postgres\" (docs/production.md)",
            ));
            super::StoreSettings::Sled
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    key_file: Option<String>,
    checkpoint_every: Option<String>,
    checkpoint_file: Option<String>,
    checkpoint_channel: Option<String>,
    checkpoint_log: Option<bool>,
    #[serde(default)]
    public_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIncidents {
    #[serde(default)]
    commanders: Vec<String>,
    #[serde(default)]
    dedicated_channels: bool,
}

/// Parses and validates one config text. Each section and each entry is
/// deserialised on its own, so one typo does not hide the problems after it.
pub fn from_str(path: &Path, text: &str, problems: &mut Vec<Problem>) -> Option<Config> {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(path, "", e.message().to_string(), "fix the TOML syntax"));
            return None;
        }
    };
    let start = problems.len();
    for key in table.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            problems.push(Problem::new(
                path,
                key,
                format!("unknown section `{key}`"),
                format!("known sections: {}", TOP_LEVEL.join(", ")),
            ));
        }
    }
    let section = |key: &str| table.get(key).cloned();
    let bot: RawBot = decode(path, "bot", section("bot"), problems).unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    let data_dir = base.join(bot.data_dir.as_deref().unwrap_or("../data"));
    let commands_dir = base.join(bot.commands_dir.as_deref().unwrap_or("../commands"));
    let runbooks_dir = bot.runbooks_dir.as_deref().map(|d| base.join(d));
    // Every duration in the file must be positive: a zero TTL or timeout
    // would make each request expire, or each action time out, at once.
    let mut duration = |key: &str, value: Option<&str>, default: Duration, problems: &mut Vec<Problem>| match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                problems.push(Problem::new(
                    path,
                    key,
                    format!("`{text}` is zero"),
                    "it must be longer than zero; leave the key out for the default",
                ));
                default
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(Problem::new(path, key, e, "write durations like 30m, 2h or 1h30m"));
                default
            }
        },
    };
    let durability = match bot.durability.as_deref() {
        None => Durability::default(),
        Some(name) => Durability::from_name(name).unwrap_or_else(|| {
            problems.push(Problem::new(
                path,
                "bot.durability",
                format!("unknown durability `{name}`"),
                "use \"fdatasync\" (the default) or \"flush\"",
            ));
            Durability::default()
        }),
    };
    let lock_ttl = duration("bot.lock_ttl", bot.lock_ttl.as_deref(), Duration::from_secs(3600), problems);
    let action_timeout =
        duration("bot.action_timeout", bot.action_timeout.as_deref(), Duration::from_secs(900), problems);

    let environments: BTreeMap<String, Environment> = entries(path, "environments", section("environments"), problems);
    if environments.is_empty() {
        problems.push(Problem::new(
            path,
            "environments",
            "no environments defined".into(),
            "add [environments.staging] and [environments.production]",
        ));
    }
    for name in environments.keys() {
        check_name(path, &format!("environments.{name}"), name, problems);
    }

    let raw_groups: BTreeMap<String, Vec<String>> = entries(path, "groups", section("groups"), problems);
    let mut groups = BTreeMap::new();
    for (name, members) in raw_groups {
        check_name(path, &format!("groups.{name}"), &name, problems);
        let mut set = BTreeSet::new();
        for (i, member) in members.iter().enumerate() {
            match Actor::parse(member) {
                Ok(actor) => {
                    set.insert(actor);
                }
                Err(e) => {
                    problems.push(Problem::new(path, &format!("groups.{name}[{i}]"), e, "identities are platform:id"))
                }
            }
        }
        groups.insert(name, set);
    }

    // One person's accounts on several platforms: votes and approvals count
    // people, not accounts.
    let raw_people: BTreeMap<String, Vec<String>> = entries(path, "people", section("people"), problems);
    let mut person_of: BTreeMap<Actor, String> = BTreeMap::new();
    for (name, accounts) in raw_people {
        check_name(path, &format!("people.{name}"), &name, problems);
        for (i, account) in accounts.iter().enumerate() {
            let key = format!("people.{name}[{i}]");
            match Actor::parse(account) {
                Ok(actor) => {
                    if let Some(other) = person_of.get(&actor).filter(|other| **other != name) {
                        problems.push(Problem::new(
                            path,
                            &key,
                            format!("{actor} is already one of {other}'s accounts"),
                            "an account belongs to one person; list it once",
                        ));
                        continue;
                    }
                    person_of.insert(actor, name.clone());
                }
                Err(e) => problems.push(Problem::new(path, &key, e, "accounts are platform:id")),
            }
        }
    }

    // Before the rules: Discord roles may grant approver groups.
    let discord = decode::<super::chat::RawDiscord>(path, "discord", section("discord"), problems)
        .map(|raw| super::chat::discord(path, raw, &groups, &mut duration, problems));

    let raw_services: BTreeMap<String, RawService> = entries(path, "services", section("services"), problems);
    let mut services = BTreeMap::new();
    for (name, raw) in raw_services {
        let key = format!("services.{name}");
        check_name(path, &key, &name, problems);
        if let Some(service) = check_service(path, &key, name.clone(), raw, &environments, problems) {
            services.insert(name, service);
        }
    }

    // Every service's longest action must fit in it (see fit_action_timeout).
    let set = bot.action_timeout.is_some().then_some(action_timeout);
    let action_timeout = super::backends::fit_action_timeout(path, set, action_timeout, &services, problems);

    let raw_rules: Vec<RawRule> = list(path, "rules", section("rules"), problems);
    let rules: Vec<Rule> = raw_rules
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let role_groups: BTreeSet<&String> = discord.iter().flat_map(|d| d.roles.values().flatten()).collect();
            let who = Who { groups: &groups, person_of: &person_of, role_groups: &role_groups };
            check_rule(path, &format!("rules[{i}]"), raw, &environments, who, &mut duration, problems)
        })
        .collect();
    if rules.is_empty() {
        problems.push(Problem::new(
            path,
            "rules",
            "no rules: every command would be denied".into(),
            "add [[rules]]; see config/demo.toml",
        ));
    }

    let raw_freezes: Vec<RawFreeze> = list(path, "freeze", section("freeze"), problems);
    let mut freezes = Vec::new();
    for (i, raw) in raw_freezes.into_iter().enumerate() {
        let key = format!("freeze[{i}]");
        for env in &raw.environments {
            check_environment(path, &format!("{key}.environments"), env, &environments, problems);
        }
        let from = WindowSpec::parse(&raw.from).map_err(|e| {
            problems.push(Problem::new(
                path,
                &format!("{key}.from"),
                e,
                "write `Fri 15:00` (weekly, UTC) or an RFC 3339 time like 2026-12-24T00:00:00Z",
            ))
        });
        let to = WindowSpec::parse(&raw.to).map_err(|e| {
            problems.push(Problem::new(
                path,
                &format!("{key}.to"),
                e,
                "write `Mon 06:00` (weekly, UTC) or an RFC 3339 time",
            ))
        });
        if raw.approvals == Some(0) {
            problems.push(Problem::new(
                path,
                &format!("{key}.approvals"),
                "approvals = 0 would let the frozen commands through unapproved".into(),
                "leave approvals out to deny during the freeze, or set it to 1 or more",
            ));
        }
        if let (Ok(from), Ok(to)) = (from, to) {
            match FreezeWindow::new(raw.name, raw.environments, raw.commands, from, to, raw.approvals) {
                Ok(window) => freezes.push(window),
                Err(e) => problems.push(Problem::new(
                    path,
                    &key,
                    e,
                    "use two weekly times or two absolute times, the end after the start",
                )),
            }
        }
    }

    let server: RawServer = decode(path, "server", section("server"), problems).unwrap_or_default();
    let listen = server.listen.unwrap_or_else(|| "0.0.0.0:3000".to_string());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(Problem::new(
            path,
            "server.listen",
            format!("`{listen}` is not an address"),
            "write it like 0.0.0.0:3000",
        ));
    }
    let slack = decode::<super::chat::RawSlack>(path, "slack", section("slack"), problems)
        .map(|raw| super::chat::slack(path, raw, &mut duration, problems));
    let raw_incidents: RawIncidents = decode(path, "incidents", section("incidents"), problems).unwrap_or_default();
    for group in &raw_incidents.commanders {
        if !groups.contains_key(group) {
            let known: Vec<&str> = groups.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                path,
                "incidents.commanders",
                format!("unknown group `{group}`"),
                format!("known groups: {}", known.join(", ")),
            ));
        }
    }
    let incident_commanders = raw_incidents.commanders;
    let incident_channels = raw_incidents.dedicated_channels;
    let databases =
        super::targets::databases(path, base, entries(path, "databases", section("databases"), problems), problems);
    let http = super::targets::http(path, entries(path, "http", section("http"), problems), problems);
    let jobs = super::targets::jobs(path, entries(path, "jobs", section("jobs"), problems), problems);
    let alerts = decode::<super::alerts::RawAlerts>(path, "alerts", section("alerts"), problems)
        .map(|raw| super::alerts::alerts(path, raw, &services, &mut duration, problems));
    let ci = decode::<super::alerts::RawCi>(path, "ci", section("ci"), problems)
        .map(|raw| super::alerts::ci(path, raw, problems));
    let raw_reports =
        decode::<super::alerts::RawReports>(path, "reports", section("reports"), problems).unwrap_or_default();
    let reports = super::alerts::reports(path, raw_reports, &environments, &mut duration, problems);
    let raw_store: RawStore = decode(path, "store", section("store"), problems).unwrap_or_default();
    let store = check_store(path, raw_store, problems);
    let raw_audit: RawAudit = decode(path, "audit", section("audit"), problems).unwrap_or_default();
    let audit = check_audit(path, base, &data_dir, raw_audit, &mut duration, problems);

    if problems.len() > start {
        return None;
    }
    Some(Config {
        source: path.to_path_buf(),
        data_dir,
        store,
        durability,
        commands_dir,
        runbooks_dir,
        lock_ttl,
        action_timeout,
        listen,
        slack,
        discord,
        audit,
        environments,
        groups,
        person_of,
        services,
        rules,
        freezes,
        incident_commanders,
        incident_channels,
        alerts,
        ci,
        reports,
        databases,
        http,
        jobs,
    })
}

fn decode<T: DeserializeOwned>(
    path: &Path,
    key: &str,
    value: Option<toml::Value>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = value?;
    match value.try_into() {
        Ok(v) => Some(v),
        Err(e) => {
            let e: toml::de::Error = e;
            problems.push(Problem::new(
                path,
                key,
                e.message().trim().to_string(),
                "see the configuration reference, docs/configuration.md",
            ));
            None
        }
    }
}

/// A table of named entries, each decoded on its own.
fn entries<T: DeserializeOwned>(
    path: &Path,
    key: &str,
    value: Option<toml::Value>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match value {
        None => {}
        Some(toml::Value::Table(table)) => {
            for (name, v) in table {
                if let Some(decoded) = decode(path, &format!("{key}.{name}"), Some(v), problems) {
                    out.insert(name, decoded);
                }
            }
        }
        Some(_) => problems.push(Problem::new(
            path,
            key,
            format!("`{key}` must be a table"),
            format!("write [{key}.NAME] sections"),
        )),
    }
    out
}

/// An array of tables, each decoded on its own.
fn list<T: DeserializeOwned>(
    path: &Path,
    key: &str,
    value: Option<toml::Value>,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| decode(path, &format!("{key}[{i}]"), Some(v), problems))
            .collect(),
        Some(_) => {
            problems.push(Problem::new(
                path,
                key,
                format!("`{key}` must be a list"),
                format!("write [[{key}]] entries"),
            ));
            Vec::new()
        }
    }
}

fn check_name(path: &Path, key: &str, name: &str, problems: &mut Vec<Problem>) {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        problems.push(Problem::new(
            path,
            key,
            format!("`{name}` is not a valid name"),
            "use lowercase letters, digits and `-`, starting with a letter (at most 63)",
        ));
    }
}

fn check_environment(
    path: &Path,
    key: &str,
    env: &str,
    environments: &BTreeMap<String, Environment>,
    problems: &mut Vec<Problem>,
) {
    if env != "*" && !environments.contains_key(env) {
        let known: Vec<&str> = environments.keys().map(String::as_str).collect();
        problems.push(Problem::new(
            path,
            key,
            format!("unknown environment `{env}`"),
            format!("known: {} (or `*` for all)", known.join(", ")),
        ));
    }
}

fn check_service(
    path: &Path,
    key: &str,
    name: String,
    raw: RawService,
    environments: &BTreeMap<String, Environment>,
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let before = problems.len();
    if !environments.contains_key(&raw.environment) {
        check_environment(path, &format!("{key}.environment"), &raw.environment, environments, problems);
    }
    for (i, channel) in raw.channels.iter().enumerate() {
        if let Err(e) = qualified_id(channel, "channel") {
            problems.push(Problem::new(
                path,
                &format!("{key}.channels[{i}]"),
                e,
                "channels are platform:id, like slack:C0123456",
            ));
        }
    }
    if let Some(url) = &raw.health_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(Problem::new(
                path,
                &format!("{key}.health_url"),
                format!("`{url}` is not an http(s) URL"),
                "write http://host:port/path",
            ));
        }
    }
    let min = raw.min_replicas.unwrap_or(0);
    let max = raw.max_replicas.unwrap_or(50);
    if min > max {
        problems.push(Problem::new(
            path,
            &format!("{key}.min_replicas"),
            format!("min_replicas {min} is above max_replicas {max}"),
            "swap them",
        ));
    }
    super::backends::check(path, key, &raw.backend, min, max, raw.health_url.is_some(), problems);
    (problems.len() == before).then_some(Service {
        name,
        environment: raw.environment,
        channels: raw.channels,
        health_url: raw.health_url,
        min_replicas: min,
        max_replicas: max,
        backend: raw.backend,
    })
}

/// The groups and the linked accounts, for checking a rule.
#[derive(Clone, Copy)]
struct Who<'a> {
    groups: &'a BTreeMap<String, BTreeSet<Actor>>,
    person_of: &'a BTreeMap<Actor, String>,
    /// Groups Discord roles can grant: who is in them is known per event.
    role_groups: &'a BTreeSet<&'a String>,
}

fn check_rule(
    path: &Path,
    key: &str,
    raw: RawRule,
    environments: &BTreeMap<String, Environment>,
    who: Who,
    duration: &mut impl FnMut(&str, Option<&str>, Duration, &mut Vec<Problem>) -> Duration,
    problems: &mut Vec<Problem>,
) -> Rule {
    let Who { groups, person_of, role_groups } = who;
    for env in &raw.environments {
        check_environment(path, &format!("{key}.environments"), env, environments, problems);
    }
    for (field, list) in
        [("requesters", &raw.requesters), ("approvers", &raw.approvers), ("break_glass", &raw.break_glass)]
    {
        for group in list {
            if group != "*" && !groups.contains_key(group) {
                let known: Vec<&str> = groups.keys().map(String::as_str).collect();
                problems.push(Problem::new(
                    path,
                    &format!("{key}.{field}"),
                    format!("unknown group `{group}`"),
                    format!("known groups: {}", known.join(", ")),
                ));
            }
        }
    }
    if raw.commands.is_empty() {
        problems.push(Problem::new(
            path,
            &format!("{key}.commands"),
            "a rule needs at least one command".into(),
            "list policy keys like \"deploy\"",
        ));
    }
    if raw.requesters.is_empty() {
        problems.push(Problem::new(
            path,
            &format!("{key}.requesters"),
            "a rule needs requesters".into(),
            "name groups, or \"*\" for every known user",
        ));
    }
    if raw.approvals == 0 && !raw.approvers.is_empty() {
        problems.push(Problem::new(
            path,
            &format!("{key}.approvals"),
            format!("approvers ({}) are listed but approvals = 0, so nobody would be asked", raw.approvers.join(", ")),
            "set approvals = 1 (or more), or remove approvers if the rule needs no approval",
        ));
    }
    if raw.approvals > 0 {
        // People, not accounts: two linked accounts are one approver.
        let approvers: BTreeSet<String> = raw
            .approvers
            .iter()
            .flat_map(|g| groups.get(g).into_iter().flatten())
            .map(|a| super::person_key(person_of, a))
            .collect();
        if raw.approvers.is_empty() || raw.approvers.iter().any(|g| g == "*") {
            problems.push(Problem::new(
                path,
                &format!("{key}.approvers"),
                "approvals need a named approver group".into(),
                "set approvers = [\"sre\"]",
            ));
        } else if (approvers.len() as u32) < raw.approvals && !raw.approvers.iter().any(|g| role_groups.contains(g)) {
            problems.push(Problem::new(
                path,
                &format!("{key}.approvals"),
                format!("{} approvals needed but the approver groups hold {} people", raw.approvals, approvers.len()),
                "add approvers or lower approvals",
            ));
        }
    }
    let ttl = duration(&format!("{key}.ttl"), raw.ttl.as_deref(), Duration::from_secs(1800), problems);
    Rule {
        commands: raw.commands,
        environments: raw.environments,
        requesters: raw.requesters,
        approvers: raw.approvers,
        approvals: raw.approvals,
        ttl,
        break_glass: raw.break_glass,
    }
}

/// Policy keys named in rules and freezes must exist in the command files, or a
/// typo would silently leave a command unconfigured (and so denied).
pub(super) fn cross_check(path: &Path, config: &Config, registry: &Registry, problems: &mut Vec<Problem>) {
    // An alert's "Run runbook" button offers only a loaded runbook.
    for (alert, runbook) in config.alerts.iter().flat_map(|a| a.runbooks.iter()) {
        if registry.runbook(runbook).is_none() {
            let hint = if config.runbooks_dir.is_none() {
                "set [bot] runbooks_dir so runbooks are loaded".to_string()
            } else {
                format!("loaded runbooks: {}", registry.runbook_names().collect::<Vec<_>>().join(", "))
            };
            problems.push(Problem::new(
                path,
                &format!("alerts.runbooks.{alert}"),
                format!("no runbook `{runbook}`"),
                hint,
            ));
        }
    }
    let keys = registry.policy_keys();
    let mut check = |key: String, policy: &str| {
        if !keys.iter().any(|k| k == policy) {
            problems.push(Problem::new(
                path,
                &key,
                format!("no command uses the policy key `{policy}`"),
                format!("known keys: {}", keys.join(", ")),
            ));
        }
    };
    for (i, rule) in config.rules.iter().enumerate() {
        for policy in &rule.commands {
            check(format!("rules[{i}].commands"), policy);
        }
    }
    for (i, freeze) in config.freezes.iter().enumerate() {
        for policy in &freeze.commands {
            check(format!("freeze[{i}].commands"), policy);
        }
    }
    honourable(path, config, registry, problems);
    runbooks(config, registry, problems);
}

/// Every runbook checked against the configuration: its environment,
/// services, database targets, requests and Job templates must exist.
fn runbooks(config: &Config, registry: &Registry, problems: &mut Vec<Problem>) {
    let owned = crate::runbook::KnownOwned::from_config(config);
    let known = owned.known();
    for runbook in registry.runbooks() {
        let dir = config.runbooks_dir.clone().unwrap_or_default();
        let file = dir.join(format!("{}.toml", runbook.name));
        for problem in runbook.check(&known) {
            let (key, text) = problem.split_once(": ").unwrap_or(("", &problem));
            problems.push(Problem::new(&file, key, text.to_string(), "see docs/runbooks.md for the runbook format"));
        }
        if config.rule_for("runbook", &runbook.environment).is_none() {
            problems.push(Problem::new(
                &file,
                "environment",
                format!("no rule allows `runbook` in {}, so nobody could run it", runbook.environment),
                "add a [[rules]] entry with commands = [\"runbook\"] for that environment",
            ));
        }
    }
}

/// Rules the engine could not honour are refused rather than ignored (or,
/// before this check, crashed on): only changes can wait for approvals or be
/// forced with `--emergency`; reads and `/lock` run at once when allowed;
/// votes are governed by each request's approver groups, never by rules.
fn honourable(path: &Path, config: &Config, registry: &Registry, problems: &mut Vec<Problem>) {
    use crate::command::Class;
    let not_changes = |policy: &str| -> Vec<(String, Class)> {
        registry.classes_of(policy).into_iter().filter(|(_, class)| *class != Class::Change).collect()
    };
    let names = |found: &[(String, Class)]| {
        found.iter().map(|(name, class)| format!("{name} ({})", class.name())).collect::<Vec<_>>().join(", ")
    };
    for (i, rule) in config.rules.iter().enumerate() {
        for policy in &rule.commands {
            let found = not_changes(policy);
            if found.iter().any(|(_, class)| *class == Class::Vote) {
                problems.push(Problem::new(
                    path,
                    &format!("rules[{i}].commands"),
                    format!(
                        "`{policy}` is the policy key of {}: votes follow each request's approver groups, not rules",
                        names(&found)
                    ),
                    format!("remove `{policy}` from this rule"),
                ));
                continue;
            }
            if found.is_empty() {
                continue;
            }
            if rule.approvals > 0 {
                problems.push(Problem::new(
                    path,
                    &format!("rules[{i}].approvals"),
                    format!("`{policy}` covers {}, which opsbot runs at once: it cannot hold them for {} approval(s)", names(&found), rule.approvals),
                    format!("move `{policy}` to a rule without approvals; only deploy, rollback, restart and scale can wait for approval"),
                ));
            }
            if !rule.break_glass.is_empty() {
                problems.push(Problem::new(
                    path,
                    &format!("rules[{i}].break_glass"),
                    format!(
                        "`{policy}` covers {}, which take no --emergency: break_glass would never apply",
                        names(&found)
                    ),
                    format!("move `{policy}` to a rule without break_glass"),
                ));
            }
        }
    }
    for (i, freeze) in config.freezes.iter().enumerate() {
        if freeze.approvals.is_none() {
            continue;
        }
        for policy in &freeze.commands {
            let found = not_changes(policy);
            if !found.is_empty() {
                problems.push(Problem::new(
                    path,
                    &format!("freeze[{i}].approvals"),
                    format!("`{policy}` covers {}, which cannot wait for approval during a freeze", names(&found)),
                    "leave approvals out to deny them during the freeze, or list only changes",
                ));
            }
        }
    }
}

/// `[audit]`: the checkpoint key file and publication file must live outside
/// the data directory (whoever can write the store must not be able to
/// rewrite them); the channel is platform-qualified; keys are Ed25519.
fn check_audit(
    path: &Path,
    base: &Path,
    data_dir: &Path,
    raw: RawAudit,
    duration: &mut impl FnMut(&str, Option<&str>, Duration, &mut Vec<Problem>) -> Duration,
    problems: &mut Vec<Problem>,
) -> AuditSettings {
    let defaults = AuditSettings::default();
    let outside = |key: &str, file: Option<String>, problems: &mut Vec<Problem>| {
        let file = base.join(file?);
        outside_data_dir(path, key, &file, data_dir, problems);
        Some(file)
    };
    let key_file = outside("audit.key_file", raw.key_file, problems);
    let checkpoint_file = outside("audit.checkpoint_file", raw.checkpoint_file, problems);
    if let Some(file) = &key_file {
        match std::fs::read_to_string(file) {
            // Never echo the key itself.
            Ok(text) => {
                if let Err(e) = crate::audit::checkpoint::Signer::from_seed_hex(&text) {
                    problems.push(Problem::new(path, "audit.key_file", e, "`opsbot audit keygen` makes a key"));
                }
            }
            Err(e) => problems.push(Problem::new(
                path,
                "audit.key_file",
                format!("cannot read {}: {e}", file.display()),
                "create it with `opsbot audit keygen`, readable only by opsbot",
            )),
        }
    }
    if let Some(channel) = &raw.checkpoint_channel {
        if let Err(e) = qualified_id(channel, "channel") {
            problems.push(Problem::new(path, "audit.checkpoint_channel", e, "like slack:C0123456"));
        }
    }
    let mut public_keys = Vec::new();
    for (i, key) in raw.public_keys.iter().enumerate() {
        match crate::audit::checkpoint::PublicKey::parse(key) {
            Ok(key) => public_keys.push(key),
            Err(e) => problems.push(Problem::new(
                path,
                &format!("audit.public_keys[{i}]"),
                e,
                "`opsbot audit keygen` prints the public key",
            )),
        }
    }
    let checkpoint_every =
        duration("audit.checkpoint_every", raw.checkpoint_every.as_deref(), defaults.checkpoint_every, problems);
    // Each checkpoint is a record, a chat message and a file sync.
    at_least(path, "audit.checkpoint_every", checkpoint_every, Duration::from_secs(1), problems);
    AuditSettings {
        key_file,
        checkpoint_every,
        checkpoint_file,
        checkpoint_channel: raw.checkpoint_channel,
        checkpoint_log: raw.checkpoint_log.unwrap_or(defaults.checkpoint_log),
        public_keys,
    }
}

/// Refuses a duration shorter than `min` (one that would make the bot busy
/// with itself).
pub(super) fn at_least(config: &Path, key: &str, value: Duration, min: Duration, problems: &mut Vec<Problem>) {
    if !value.is_zero() && value < min {
        problems.push(Problem::new(
            config,
            key,
            format!("{} is too short", crate::clock::format_duration(value)),
            format!("use at least {}, or leave the key out for the default", crate::clock::format_duration(min)),
        ));
    }
}

/// The audit key file and checkpoint file must not be where the store is:
/// whoever can rewrite the store could then rewrite them too.
pub(super) fn outside_data_dir(config: &Path, key: &str, file: &Path, data_dir: &Path, problems: &mut Vec<Problem>) {
    if lexically_within(file, data_dir) {
        problems.push(Problem::new(
            config,
            key,
            format!("{} is inside the data directory {}", file.display(), data_dir.display()),
            "put it where whoever can write the store cannot (another disk, another owner)",
        ));
    }
}

/// Whether `path` lies within `dir`, comparing normalised absolute paths
/// (neither needs to exist yet; symlinks are resolved where they do).
fn lexically_within(path: &Path, dir: &Path) -> bool {
    fn normal(p: &Path) -> std::path::PathBuf {
        let absolute =
            if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
        // Resolve the longest existing prefix (symlinks), then the rest lexically.
        let mut existing = absolute.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = existing.canonicalize().unwrap_or(existing);
        for part in rest.into_iter().rev() {
            out.push(part);
        }
        let mut clean = std::path::PathBuf::new();
        for part in out.components() {
            match part {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                other => clean.push(other),
            }
        }
        clean
    }
    normal(path).starts_with(normal(dir))
}
