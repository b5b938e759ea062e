//! Text → typed [`ParsedCommand`]. Pure: no I/O, no clock. Every value is checked
//! against its declared type here; what comes out is data the executors can trust.

use super::registry::Registry;
use super::spec::{ActionKind, ArgKind, CommandSpec};
use crate::clock::parse_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A command after parsing: which command, its policy key, and the typed request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParsedCommand {
    /// Canonical command name (aliases resolved).
    pub command: String,
    pub policy: String,
    pub mutates: bool,
    pub request: Request,
    /// `--emergency "reason"`: a break-glass request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
}

impl ParsedCommand {
    pub fn service(&self) -> Option<&str> {
        self.request.service()
    }
}

/// The typed request, one variant per action kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    Deploy {
        service: String,
        version: String,
        /// `--commit SHA`: the commit the version was built from (the
        /// delivery report's lead time joins it with CI's commit records).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    Rollback {
        service: String,
        revision: Option<u32>,
        /// `--of r-N`: only while that deploy is the service's newest change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<String>,
    },
    Restart {
        service: String,
    },
    Scale {
        service: String,
        replicas: u32,
    },
    Status {
        service: String,
    },
    Lock {
        service: String,
        reason: String,
        #[serde(with = "opt_secs")]
        ttl: Option<Duration>,
    },
    Unlock {
        service: String,
    },
    Approve {
        request: String,
    },
    Deny {
        request: String,
        reason: Option<String>,
    },
    Audit {
        service: Option<String>,
        limit: Option<u32>,
    },
    Help {
        command: Option<String>,
    },
    /// `/incident …`: see [`IncidentOp`].
    Incident {
        #[serde(flatten)]
        op: IncidentOp,
    },
    /// `/runbook …`: see [`RunbookOp`].
    Runbook {
        #[serde(flatten)]
        op: RunbookOp,
    },
    /// `/alerts …`: see [`AlertOp`].
    Alert {
        #[serde(flatten)]
        op: AlertOp,
    },
    /// `/report [service] [period]`: delivery numbers from the trail.
    Report {
        service: Option<String>,
        #[serde(with = "opt_secs")]
        period: Option<Duration>,
    },
}

/// What an `/alerts` command does. `version` is the alert's version a
/// button was drawn with: a click on an older form of the message is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AlertOp {
    Ack {
        alert: String,
        version: Option<u32>,
    },
    Silence {
        alert: String,
        #[serde(with = "opt_secs")]
        duration: Option<Duration>,
        version: Option<u32>,
    },
    /// A button's follow-up: `incident` (declare one from the alert),
    /// `runbook` (run its runbook), `rollback` (undo its service's recent
    /// deploy), each then under that command's own gates.
    Act {
        alert: String,
        what: String,
        version: Option<u32>,
        /// `rollback --of r-N`: the deploy the button showed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<String>,
    },
    Noisy {
        #[serde(with = "opt_secs")]
        period: Option<Duration>,
    },
}

impl AlertOp {
    pub fn alert(&self) -> Option<&str> {
        match self {
            AlertOp::Ack { alert, .. } | AlertOp::Silence { alert, .. } | AlertOp::Act { alert, .. } => Some(alert),
            AlertOp::Noisy { .. } => None,
        }
    }
}

/// What a `/runbook` command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RunbookOp {
    List,
    /// `params` are as typed (`name` → `value`): the runbook's parameter
    /// types check them when the engine plans the run.
    Run {
        runbook: String,
        params: BTreeMap<String, String>,
        dry_run: bool,
    },
    Abort {
        request: String,
    },
}

/// What an `/incident` command does. `incident` is the id given (`INC-3`);
/// without one the engine picks the open incident of the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IncidentOp {
    Declare { title: String, severity: u8, services: Vec<String> },
    Lead { incident: Option<String>, person: String },
    Update { incident: Option<String>, text: String },
    Severity { incident: Option<String>, severity: u8 },
    Note { incident: Option<String>, text: String },
    Status { incident: Option<String> },
    Resolve { incident: Option<String>, summary: Option<String> },
    Timeline { incident: Option<String> },
}

impl IncidentOp {
    /// The incident named, if one was.
    pub fn incident(&self) -> Option<&str> {
        match self {
            IncidentOp::Declare { .. } => None,
            IncidentOp::Lead { incident, .. }
            | IncidentOp::Update { incident, .. }
            | IncidentOp::Severity { incident, .. }
            | IncidentOp::Note { incident, .. }
            | IncidentOp::Status { incident }
            | IncidentOp::Resolve { incident, .. }
            | IncidentOp::Timeline { incident } => incident.as_deref(),
        }
    }

    /// The verb, as typed after `/incident`.
    pub fn verb(&self) -> &'static str {
        match self {
            IncidentOp::Declare { .. } => "declare",
            IncidentOp::Lead { .. } => "lead",
            IncidentOp::Update { .. } => "update",
            IncidentOp::Severity { .. } => "sev",
            IncidentOp::Note { .. } => "note",
            IncidentOp::Status { .. } => "status",
            IncidentOp::Resolve { .. } => "resolve",
            IncidentOp::Timeline { .. } => "timeline",
        }
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => crate::clock::parse_duration(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&crate::clock::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

impl Request {
    pub fn service(&self) -> Option<&str> {
        match self {
            Request::Deploy { service, .. }
            | Request::Rollback { service, .. }
            | Request::Restart { service }
            | Request::Scale { service, .. }
            | Request::Status { service }
            | Request::Lock { service, .. }
            | Request::Unlock { service } => Some(service),
            Request::Audit { service, .. } => service.as_deref(),
            Request::Approve { .. }
            | Request::Deny { .. }
            | Request::Help { .. }
            | Request::Incident { .. }
            | Request::Runbook { .. }
            | Request::Alert { .. } => None,
            Request::Report { service, .. } => service.as_deref(),
        }
    }

    /// What the request is, which decides what the engine may do with it.
    pub fn kind(&self) -> Kind<'_> {
        use crate::action::Action;
        match self {
            Request::Deploy { service, version, .. } => {
                Kind::Change { service, action: Action::Deploy { version: version.clone() } }
            }
            Request::Rollback { service, revision, .. } => {
                Kind::Change { service, action: Action::Rollback { revision: *revision } }
            }
            Request::Restart { service } => Kind::Change { service, action: Action::Restart },
            Request::Scale { service, replicas } => {
                Kind::Change { service, action: Action::Scale { replicas: *replicas } }
            }
            Request::Lock { service, reason, ttl } => Kind::Admin(Admin::Lock { service, reason, ttl: *ttl }),
            Request::Unlock { service } => Kind::Admin(Admin::Unlock { service }),
            Request::Status { service } => Kind::Read(Read::Status { service }),
            Request::Audit { service, limit } => Kind::Read(Read::Audit { service: service.as_deref(), limit: *limit }),
            Request::Help { command } => Kind::Read(Read::Help { command: command.as_deref() }),
            Request::Approve { request } => Kind::Vote { request, approve: true, reason: None },
            Request::Deny { request, reason } => Kind::Vote { request, approve: false, reason: reason.as_deref() },
            Request::Incident { op: op @ (IncidentOp::Status { .. } | IncidentOp::Timeline { .. }) } => {
                Kind::Read(Read::Incident(op))
            }
            Request::Incident { op } => Kind::Admin(Admin::Incident(op)),
            Request::Runbook { op: RunbookOp::List } => Kind::Read(Read::Runbooks),
            // A dry run too: the run's own path plans it, and reads for it.
            Request::Runbook { op: RunbookOp::Run { runbook, params, .. } } => Kind::Runbook { runbook, params },
            Request::Runbook { op: RunbookOp::Abort { request } } => Kind::Admin(Admin::Abort { request }),
            Request::Alert { op: AlertOp::Noisy { period } } => Kind::Read(Read::NoisyAlerts { period: *period }),
            Request::Alert { op } => Kind::Admin(Admin::Alert(op)),
            Request::Report { service, period } => {
                Kind::Read(Read::Report { service: service.as_deref(), period: *period })
            }
        }
    }

    /// One line a human reads in approval cards and replies.
    pub fn describe(&self) -> String {
        match self {
            Request::Deploy { service, version, commit: None } => format!("deploy {service} {version}"),
            Request::Deploy { service, version, commit: Some(commit) } => {
                format!("deploy {service} {version} (commit {commit})")
            }
            Request::Rollback { service, revision: Some(r), .. } => format!("rollback {service} to revision {r}"),
            Request::Rollback { service, revision: None, of: Some(of) } => format!("rollback {service}, undoing {of}"),
            Request::Rollback { service, revision: None, of: None } => {
                format!("rollback {service} to the previous revision")
            }
            Request::Restart { service } => format!("restart {service}"),
            Request::Scale { service, replicas } => {
                format!("scale {service} to {replicas} replicas")
            }
            Request::Status { service } => format!("status of {service}"),
            Request::Lock { service, .. } => format!("lock {service}"),
            Request::Unlock { service } => format!("unlock {service}"),
            Request::Approve { request } => format!("approve {request}"),
            Request::Deny { request, .. } => format!("deny {request}"),
            Request::Audit { .. } => "audit".into(),
            Request::Help { .. } => "help".into(),
            Request::Incident { op } => match op.incident() {
                Some(id) => format!("incident {} {id}", op.verb()),
                None => format!("incident {}", op.verb()),
            },
            Request::Runbook { op: RunbookOp::List } => "runbook list".into(),
            Request::Runbook { op: RunbookOp::Run { runbook, params, dry_run } } => {
                let given: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let given = if given.is_empty() { String::new() } else { format!(" {}", given.join(" ")) };
                format!("runbook {runbook}{given}{}", if *dry_run { " (dry run)" } else { "" })
            }
            Request::Runbook { op: RunbookOp::Abort { request } } => format!("abort runbook run {request}"),
            Request::Alert { op: AlertOp::Ack { alert, .. } } => format!("acknowledge {alert}"),
            Request::Alert { op: AlertOp::Silence { alert, duration, .. } } => {
                let d = duration.map(crate::clock::format_duration).unwrap_or_default();
                format!("silence {alert} for {d}")
            }
            Request::Alert { op: AlertOp::Act { alert, what, .. } } => format!("{what} from {alert}"),
            Request::Alert { op: AlertOp::Noisy { .. } } => "noisy alerts".into(),
            Request::Report { .. } => "delivery report".into(),
        }
    }
}

/// The classes of request, and what each carries. The engine matches on
/// this, so a request reaches only the paths its class has: only a change
/// becomes an action (behind the run lock, possibly after approvals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Changes infrastructure through an executor.
    Change { service: &'a str, action: crate::action::Action },
    /// Runs a runbook's steps in order (each a change, a statement, a Job,
    /// a request or a wait), behind the run locks of everything it touches;
    /// or, as a dry run, shows them (then `ParsedCommand::mutates` is false).
    Runbook { runbook: &'a str, params: &'a BTreeMap<String, String> },
    /// Changes opsbot's own state (a `/lock`), at once when allowed.
    Admin(Admin<'a>),
    /// Reads, answered at once when allowed.
    Read(Read<'a>),
    /// A vote on a pending request.
    Vote { request: &'a str, approve: bool, reason: Option<&'a str> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin<'a> {
    Lock {
        service: &'a str,
        reason: &'a str,
        ttl: Option<Duration>,
    },
    Unlock {
        service: &'a str,
    },
    /// Declaring an incident and keeping its record.
    Incident(&'a IncidentOp),
    /// Stopping a running runbook before its next step.
    Abort {
        request: &'a str,
    },
    /// Acknowledging, silencing or acting on an alert.
    Alert(&'a AlertOp),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<'a> {
    Status {
        service: &'a str,
    },
    Audit {
        service: Option<&'a str>,
        limit: Option<u32>,
    },
    Help {
        command: Option<&'a str>,
    },
    /// `/incident status` and `/incident timeline`.
    Incident(&'a IncidentOp),
    /// `/runbook list`.
    Runbooks,
    /// `/alerts noisy [period]`.
    NoisyAlerts {
        period: Option<Duration>,
    },
    /// `/report [service] [period]`.
    Report {
        service: Option<&'a str>,
        period: Option<Duration>,
    },
}

/// The class of what a command file's action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Change,
    Admin,
    Read,
    Vote,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Change => "a change",
            Class::Admin => "an admin action",
            Class::Read => "a read",
            Class::Vote => "a vote",
        }
    }
}

impl ActionKind {
    /// Which class of request this action makes.
    pub fn class(self) -> Class {
        match self {
            ActionKind::Deploy
            | ActionKind::Rollback
            | ActionKind::Restart
            | ActionKind::Scale
            | ActionKind::RunbookRun => Class::Change,
            ActionKind::Lock
            | ActionKind::Unlock
            | ActionKind::IncidentDeclare
            | ActionKind::IncidentLead
            | ActionKind::IncidentUpdate
            | ActionKind::IncidentSeverity
            | ActionKind::IncidentNote
            | ActionKind::IncidentResolve
            | ActionKind::RunbookAbort
            | ActionKind::AlertAck
            | ActionKind::AlertSilence
            | ActionKind::AlertAct => Class::Admin,
            ActionKind::Status
            | ActionKind::Audit
            | ActionKind::Help
            | ActionKind::IncidentStatus
            | ActionKind::IncidentTimeline
            | ActionKind::RunbookList
            | ActionKind::AlertNoisy
            | ActionKind::Report => Class::Read,
            ActionKind::Approve | ActionKind::Deny => Class::Vote,
        }
    }
}

/// Why a line did not parse; rendered with usage and a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnbalancedQuote,
    UnknownCommand {
        typed: String,
        suggestion: Option<String>,
    },
    MissingArgument {
        command: String,
        usage: String,
        argument: String,
        expected: String,
    },
    BadValue {
        command: String,
        usage: String,
        argument: String,
        value: String,
        problem: String,
        suggestion: Option<String>,
    },
    TooManyArguments {
        command: String,
        usage: String,
        extra: String,
    },
    UnknownFlag {
        command: String,
        usage: String,
        flag: String,
        suggestion: Option<String>,
    },
    FlagNeedsValue {
        command: String,
        usage: String,
        flag: String,
    },
    /// A flag given twice that takes one value.
    FlagRepeated {
        usage: String,
        flag: String,
    },
    /// A group (`/incident`) without one of its commands after it.
    MissingSubcommand {
        group: String,
        choices: Vec<String>,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = |f: &mut fmt::Formatter<'_>, s: &Option<String>| match s {
            Some(s) => write!(f, " Did you mean `{s}`?"),
            None => Ok(()),
        };
        match self {
            ParseError::Empty => write!(f, "Type a command, for example `/help`."),
            ParseError::UnbalancedQuote => write!(f, "A quote is not closed; close it or drop it."),
            ParseError::UnknownCommand { typed, suggestion } => {
                write!(f, "Unknown command `/{}`.", shorten(typed))?;
                hint(f, &suggestion.as_ref().map(|s| format!("/{s}")))?;
                write!(f, " Type `/help` to list commands.")
            }
            ParseError::MissingArgument { usage, argument, expected, .. } => {
                write!(f, "Missing <{argument}> ({expected}). Usage: `{usage}`")
            }
            ParseError::BadValue { usage, argument, value, problem, suggestion, .. } => {
                write!(f, "`{}` is not a valid <{argument}>: {problem}.", shorten(value))?;
                hint(f, suggestion)?;
                write!(f, " Usage: `{usage}`")
            }
            ParseError::TooManyArguments { usage, extra, .. } => {
                write!(f, "Unexpected `{}`. Usage: `{usage}` (quote text that has spaces)", shorten(extra))
            }
            ParseError::UnknownFlag { usage, flag, suggestion, .. } => {
                write!(f, "Unknown option `--{}`.", shorten(flag))?;
                hint(f, &suggestion.as_ref().map(|s| format!("--{s}")))?;
                write!(f, " Usage: `{usage}`")
            }
            ParseError::FlagNeedsValue { usage, flag, .. } => {
                write!(f, "`--{flag}` needs a value. Usage: `{usage}`")
            }
            ParseError::FlagRepeated { usage, flag } => {
                write!(f, "`--{flag}` takes one value; give it once. Usage: `{usage}`")
            }
            ParseError::MissingSubcommand { group, choices } => {
                write!(f, "`/{group}` needs one of: {}. Type `/help {group}` for details.", choices.join(", "))
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Echoing user text back: cut it short, strip backticks so it cannot break
/// out of the code span it is shown in, and mark it as typed (adapters
/// render it inert; see [`crate::engine::reply::typed`]).
fn shorten(text: &str) -> String {
    let clean: String = text.chars().filter(|c| *c != '`' && !c.is_control()).collect();
    if clean.chars().count() > 40 {
        crate::engine::reply::typed(&format!("{}…", clean.chars().take(40).collect::<String>()))
    } else {
        crate::engine::reply::typed(&clean)
    }
}

/// Splits on whitespace, honouring "double", 'single' and Slack's “curly” quotes.
pub fn tokenize(text: &str) -> Result<Vec<String>, ParseError> {
    Ok(tokenize_marked(text)?.into_iter().map(|t| t.text).collect())
}

/// One token, and whether it began with a quote: a quoted token is always
/// a value, never a flag, even if it reads `--emergency`.
struct Token {
    text: String,
    quoted: bool,
}

fn tokenize_marked(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(close) if c == close => quote = None,
            Some(_) => current.push(c),
            None if c.is_whitespace() => {
                if in_token {
                    tokens.push(Token { text: std::mem::take(&mut current), quoted });
                    in_token = false;
                }
            }
            None => {
                if !in_token {
                    quoted = matches!(c, '"' | '\'' | '“' | '‘');
                }
                in_token = true;
                match c {
                    '"' => quote = Some('"'),
                    '\'' => quote = Some('\''),
                    '“' => quote = Some('”'),
                    '‘' => quote = Some('’'),
                    _ => current.push(c),
                }
            }
        }
    }
    if quote.is_some() {
        return Err(ParseError::UnbalancedQuote);
    }
    if in_token {
        tokens.push(Token { text: current, quoted });
    }
    Ok(tokens)
}

/// A parsed value before it is fitted into a [`Request`].
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Int(i64),
    Duration(Duration),
}

/// Parses one line: `/deploy api-service v1.4.2` (the slash is optional, so
/// mentions like `@opsbot status api-service` use the same grammar).
pub fn parse(registry: &Registry, services: &[String], text: &str) -> Result<ParsedCommand, ParseError> {
    let tokens = tokenize_marked(text)?;
    let Some((first, rest)) = tokens.split_first() else {
        return Err(ParseError::Empty);
    };
    let mut typed = first.text.strip_prefix('/').unwrap_or(&first.text).to_lowercase();
    let mut rest = rest;
    if registry.is_group(&typed) {
        // `/incident declare …`: the group's command is the next word.
        let Some((word, after)) = rest.split_first().filter(|(w, _)| !w.quoted && !w.text.starts_with("--")) else {
            let choices = registry
                .group_members(&typed)
                .iter()
                .map(|c| c.name.rsplit(' ').next().unwrap_or(&c.name).to_string())
                .collect();
            return Err(ParseError::MissingSubcommand { group: typed, choices });
        };
        let word_text = word.text.to_lowercase();
        // A runbook's name (or a near miss of one, which the runbook
        // argument then names) is short for `run <name>`.
        let runbook_like = registry.runbook(&word.text).is_some()
            || super::registry::closest(&word.text, registry.runbook_names()).is_some();
        if registry.find(&format!("{typed} {word_text}")).is_none()
            && runbook_like
            && registry.find(&format!("{typed} run")).is_some()
        {
            // `/runbook connection-pool …` is `/runbook run connection-pool …`.
            typed = format!("{typed} run");
        } else {
            typed = format!("{typed} {word_text}");
            rest = after;
        }
    }
    let spec = registry
        .find(&typed)
        .ok_or_else(|| ParseError::UnknownCommand { suggestion: registry.suggest(&typed), typed: typed.clone() })?;
    let (positional, flags) = split_flags(spec, rest)?;
    let values = bind_positional(spec, services, registry, &positional)?;
    let mut checked: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, given) in flags {
        let kind = &spec.flags.iter().find(|f| f.name == name).expect("split_flags found it").kind;
        for value in given {
            checked.entry(name.clone()).or_default().push(check_value(spec, &name, kind, &value, services, registry)?);
        }
    }
    build(spec, values, checked)
}

/// Each flag given, with its values in the order typed.
type FlagValues = BTreeMap<String, Vec<String>>;

fn split_flags(spec: &CommandSpec, tokens: &[Token]) -> Result<(Vec<String>, FlagValues), ParseError> {
    let mut positional = Vec::new();
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut iter = tokens.iter();
    while let Some(token) = iter.next() {
        let flag_body = (!token.quoted)
            .then(|| token.text.strip_prefix("--"))
            .flatten()
            .filter(|b| b.starts_with(|c: char| c.is_ascii_alphabetic()));
        let Some(body) = flag_body else {
            positional.push(token.text.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = spec.flags.iter().find(|f| f.name == name) else {
            let names: Vec<&str> = spec.flags.iter().map(|f| f.name.as_str()).collect();
            return Err(ParseError::UnknownFlag {
                command: spec.name.clone(),
                usage: spec.usage.clone(),
                flag: name.to_string(),
                suggestion: super::registry::closest(name, names.iter().copied()),
            });
        };
        let value = if flag.kind == ArgKind::Switch {
            "true".to_string()
        } else {
            match inline.or_else(|| iter.next().map(|t| t.text.clone())) {
                Some(v) if !v.trim().is_empty() => v,
                _ => {
                    return Err(ParseError::FlagNeedsValue {
                        command: spec.name.clone(),
                        usage: spec.usage.clone(),
                        flag: flag.name.clone(),
                    })
                }
            }
        };
        let repeatable = spec.action.flags().iter().any(|(n, _, many)| *n == flag.name && *many);
        let values = flags.entry(flag.name.clone()).or_default();
        if !values.is_empty() && !repeatable {
            return Err(ParseError::FlagRepeated { usage: spec.usage.clone(), flag: flag.name.clone() });
        }
        values.push(value);
    }
    Ok((positional, flags))
}

/// Fits tokens to the declared positional arguments. A `text` argument takes the
/// words left over once the arguments after it have taken theirs from the end
/// (`/lock api-service db migration running 2h`).
fn bind_positional(
    spec: &CommandSpec,
    services: &[String],
    registry: &Registry,
    tokens: &[String],
) -> Result<BTreeMap<String, Value>, ParseError> {
    let mut values = BTreeMap::new();
    let mut index = 0;
    for (position, arg) in spec.args.iter().enumerate() {
        if let ArgKind::Text { max_len } = &arg.kind {
            let after = &spec.args[position + 1..];
            let mut end = tokens.len();
            let mut trailing = Vec::new();
            for later in after.iter().rev() {
                let can_take = end > index + 1 || (end > index && !arg.required);
                if can_take {
                    let token = &tokens[end - 1];
                    match check_value(spec, &later.name, &later.kind, token, services, registry) {
                        Ok(v) => {
                            trailing.push((later.name.clone(), v));
                            end -= 1;
                            continue;
                        }
                        // `/lock svc reason 400d`: clearly meant as the TTL, so
                        // say what is wrong rather than fold it into the text.
                        Err(e) if looks_like(&later.kind, token) => return Err(e),
                        Err(_) => {}
                    }
                }
                if later.required {
                    return Err(missing(spec, later));
                }
            }
            let text = tokens[index..end].join(" ");
            if text.is_empty() {
                if arg.required {
                    return Err(missing(spec, arg));
                }
            } else {
                if text.chars().count() > *max_len {
                    return Err(bad(spec, &arg.name, &text, format!("longer than {max_len} characters"), None));
                }
                values.insert(arg.name.clone(), Value::Str(text));
            }
            values.extend(trailing);
            return Ok(values);
        }
        match tokens.get(index) {
            Some(token) => {
                match check_value(spec, &arg.name, &arg.kind, token, services, registry) {
                    Ok(value) => {
                        values.insert(arg.name.clone(), value);
                        index += 1;
                    }
                    // An optional argument may be left out: `/audit 20` skips the
                    // service when a later argument accepts the word, or has
                    // its shape (then that argument says what is wrong).
                    Err(_)
                        if !arg.required
                            && spec.args[position + 1..].iter().any(|later| {
                                check_value(spec, &later.name, &later.kind, token, services, registry).is_ok()
                                    || looks_like(&later.kind, token)
                            }) => {}
                    Err(e) => return Err(e),
                }
            }
            None if arg.required => return Err(missing(spec, arg)),
            None => {}
        }
    }
    if let Some(extra) = tokens.get(index) {
        return Err(ParseError::TooManyArguments {
            command: spec.name.clone(),
            usage: spec.usage.clone(),
            extra: extra.clone(),
        });
    }
    Ok(values)
}

/// Whether `token` has the shape of `kind` even if its value is refused.
fn looks_like(kind: &ArgKind, token: &str) -> bool {
    let digits = token.trim_start_matches('-');
    let starts_numeric = digits.starts_with(|c: char| c.is_ascii_digit());
    match kind {
        ArgKind::Integer { .. } => starts_numeric && digits.chars().all(|c| c.is_ascii_digit()),
        ArgKind::Duration { .. } => {
            starts_numeric
                && token.chars().all(|c| c.is_ascii_alphanumeric())
                && token.ends_with(|c: char| c.is_ascii_alphabetic())
        }
        ArgKind::Person => token.starts_with(['<', '@']) || token.contains(':'),
        ArgKind::IncidentId => token.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("inc-")),
        ArgKind::AlertId => normalize_alert_id(token).is_some(),
        _ => false,
    }
}

fn missing(spec: &CommandSpec, arg: &super::spec::ArgSpec) -> ParseError {
    ParseError::MissingArgument {
        command: spec.name.clone(),
        usage: spec.usage.clone(),
        argument: arg.name.clone(),
        expected: arg.kind.describe(),
    }
}

fn bad(spec: &CommandSpec, argument: &str, value: &str, problem: String, suggestion: Option<String>) -> ParseError {
    ParseError::BadValue {
        command: spec.name.clone(),
        usage: spec.usage.clone(),
        argument: argument.to_string(),
        value: value.to_string(),
        problem,
        suggestion,
    }
}

/// Whether `text` is a valid image tag (the OCI tag grammar).
pub fn is_valid_version(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_value(
    spec: &CommandSpec,
    name: &str,
    kind: &ArgKind,
    token: &str,
    services: &[String],
    registry: &Registry,
) -> Result<Value, ParseError> {
    let fail = |problem: String, suggestion: Option<String>| Err(bad(spec, name, token, problem, suggestion));
    match kind {
        ArgKind::Service => {
            if services.iter().any(|s| s == token) {
                Ok(Value::Str(token.to_string()))
            } else {
                fail(
                    "no such service in the configuration".into(),
                    super::registry::closest(token, services.iter().map(String::as_str)),
                )
            }
        }
        ArgKind::Version => {
            if is_valid_version(token) {
                Ok(Value::Str(token.to_string()))
            } else {
                fail("a version is a tag of letters, digits, `.`, `_` and `-` (at most 128), like v1.4.2".into(), None)
            }
        }
        ArgKind::Integer { min, max } => {
            let Ok(n) = token.parse::<i64>() else {
                return fail(format!("expected {}", kind.describe()), None);
            };
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return fail(format!("expected {}", kind.describe()), None);
            }
            Ok(Value::Int(n))
        }
        ArgKind::Duration { max } => {
            let d = match parse_duration(token) {
                Ok(d) => d,
                Err(e) => return fail(e, None),
            };
            if let Some(limit) = max.as_deref().and_then(|m| parse_duration(m).ok()) {
                if d > limit {
                    return fail(format!("at most {}", crate::clock::format_duration(limit)), None);
                }
            }
            Ok(Value::Duration(d))
        }
        ArgKind::Text { max_len } => {
            if token.chars().count() > *max_len {
                return fail(format!("longer than {max_len} characters"), None);
            }
            Ok(Value::Str(token.to_string()))
        }
        ArgKind::Choice { values } => {
            if values.iter().any(|v| v == token) {
                Ok(Value::Str(token.to_string()))
            } else {
                fail(
                    format!("expected {}", kind.describe()),
                    super::registry::closest(token, values.iter().map(String::as_str)),
                )
            }
        }
        ArgKind::RequestId => match normalize_request_id(token) {
            Some(id) => Ok(Value::Str(id)),
            None => fail("a request id looks like r-12".into(), None),
        },
        ArgKind::Command => {
            let name = token.strip_prefix('/').unwrap_or(token).to_lowercase();
            match registry.find(&name) {
                Some(found) => Ok(Value::Str(found.name.clone())),
                None if registry.is_group(&name) => Ok(Value::Str(name)),
                None => fail("no such command".into(), registry.suggest(&name)),
            }
        }
        ArgKind::IncidentId => match normalize_incident_id(token) {
            Some(id) => Ok(Value::Str(id)),
            None => fail("an incident id looks like INC-3".into(), None),
        },
        ArgKind::AlertId => match normalize_alert_id(token) {
            Some(id) => Ok(Value::Str(id)),
            None => fail("an alert id looks like A-7".into(), None),
        },
        ArgKind::Person => match normalize_person(token) {
            Some(person) => Ok(Value::Str(person)),
            None => fail(
                "name a person with an @mention, or by id like slack:U024BE7LH or discord:80351110224678912".into(),
                None,
            ),
        },
        ArgKind::Runbook => match registry.runbook(token) {
            Some(runbook) => Ok(Value::Str(runbook.name.clone())),
            None => fail("no such runbook".into(), super::registry::closest(token, registry.runbook_names())),
        },
        ArgKind::Switch => Ok(Value::Str("true".into())),
    }
}

/// `INC-3` and `inc-3` name incident `INC-3` (the prefix is required, so a
/// number is never mistaken for an incident).
pub fn normalize_incident_id(token: &str) -> Option<String> {
    let digits = token.get(..4).filter(|p| p.eq_ignore_ascii_case("inc-")).map(|_| &token[4..])?;
    let n: u64 = digits.parse().ok()?;
    (n > 0 && digits.len() <= 18 && digits.chars().all(|c| c.is_ascii_digit())).then(|| format!("INC-{n}"))
}

/// A commit id as given (`3F2A9C1` → `3f2a9c1`): 7 to 40 hexadecimal digits.
pub fn commit_sha(text: &str) -> Option<String> {
    (7..=40).contains(&text.len()).then_some(())?;
    text.chars().all(|c| c.is_ascii_hexdigit()).then(|| text.to_ascii_lowercase())
}

/// `A-7` and `a-7` name alert group `A-7`.
pub fn normalize_alert_id(token: &str) -> Option<String> {
    let digits = token.strip_prefix("A-").or_else(|| token.strip_prefix("a-"))?;
    let n: u64 = digits.parse().ok()?;
    (n > 0 && digits.len() <= 18 && digits.chars().all(|c| c.is_ascii_digit())).then(|| format!("A-{n}"))
}

/// A person as typed: a Slack mention (`<@U024BE7LH>`, `<@U024BE7LH|bob>`)
/// or a Discord one (`<@80351110224678912>`, `<@!…>`) becomes the
/// platform-qualified identity; an identity (`slack:U…`, `discord:…`,
/// `console:alice`) is kept; a bare `@name` is kept as typed, for the
/// engine to resolve where names are identities (the console).
pub fn normalize_person(token: &str) -> Option<String> {
    let id_chars = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(inner) = token.strip_prefix("<@").and_then(|t| t.strip_suffix('>')) {
        let id = inner.split('|').next().unwrap_or("").trim_start_matches('!');
        if !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit()) {
            return Some(format!("discord:{id}"));
        }
        if id.len() <= 20
            && id.starts_with(['U', 'W'])
            && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Some(format!("slack:{id}"));
        }
        return None;
    }
    if let Some(name) = token.strip_prefix('@') {
        return id_chars(name, 64).then(|| token.to_string());
    }
    let (platform, id) = token.split_once(':')?;
    (matches!(platform, "slack" | "discord" | "console") && id_chars(id, 64)).then(|| token.to_string())
}

/// `r-12`, `R-12` and `12` all name request `r-12`.
pub fn normalize_request_id(token: &str) -> Option<String> {
    let digits = token.strip_prefix("r-").or_else(|| token.strip_prefix("R-")).unwrap_or(token);
    let n: u64 = digits.parse().ok()?;
    (n > 0 && digits.len() <= 18).then(|| format!("r-{n}"))
}

fn build(
    spec: &CommandSpec,
    mut values: BTreeMap<String, Value>,
    mut flags: BTreeMap<String, Vec<Value>>,
) -> Result<ParsedCommand, ParseError> {
    let mut flag_strs = |name: &str| -> Vec<String> {
        flags
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s),
                _ => None,
            })
            .collect()
    };
    let emergency = flag_strs("emergency").pop();
    let dry_run = !flag_strs("dry-run").is_empty();
    let flag_services = flag_strs("service");
    let flag_of = flag_strs("of").pop();
    let flag_commit = flag_strs("commit").pop();
    let flag_version = flags.remove("version").and_then(|mut v| v.pop()).and_then(|v| match v {
        Value::Int(n) => u32::try_from(n).ok(),
        _ => None,
    });
    let flag_sev = flags.remove("sev").and_then(|mut v| v.pop()).and_then(|v| match v {
        Value::Int(n) => u8::try_from(n).ok(),
        _ => None,
    });
    let mut take_str = |name: &str| match values.remove(name) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    };
    // The registry guarantees each action's required arguments exist with the
    // right kind, so a missing required value here is unreachable; fall back to
    // an empty string rather than panic.
    let service = take_str("service");
    let version = take_str("version");
    let reason = take_str("reason");
    let request_id = take_str("request");
    let command = take_str("command");
    let incident = take_str("incident");
    let person = take_str("person");
    let title = take_str("title");
    let text = take_str("text");
    let summary = take_str("summary");
    let runbook = take_str("runbook");
    let params_text = take_str("params");
    let alert = take_str("alert");
    let what = take_str("what");
    let int = |name: &str| match values.get(name) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let to_u32 = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
    let duration_of = |name: &str| match values.get(name) {
        Some(Value::Duration(d)) => Some(*d),
        _ => None,
    };
    let ttl = duration_of("ttl");
    let need = |v: Option<String>| v.unwrap_or_default();
    let request = match spec.action {
        ActionKind::Deploy => {
            if let Some(commit) = flag_commit.as_deref().filter(|c| crate::command::parse::commit_sha(c).is_none()) {
                return Err(bad(spec, "commit", commit, "a commit is 7 to 40 hexadecimal digits".into(), None));
            }
            Request::Deploy {
                service: need(service),
                version: need(version),
                commit: flag_commit.as_deref().and_then(commit_sha),
            }
        }
        ActionKind::Rollback => {
            let revision = to_u32(int("revision"));
            if let (Some(_), Some(of)) = (revision, &flag_of) {
                return Err(bad(spec, "of", of, "give a revision or --of, not both".into(), None));
            }
            Request::Rollback { service: need(service), revision, of: flag_of }
        }
        ActionKind::Restart => Request::Restart { service: need(service) },
        ActionKind::Scale => {
            let Some(replicas) = to_u32(int("replicas")) else {
                return Err(bad(
                    spec,
                    "replicas",
                    &int("replicas").unwrap_or_default().to_string(),
                    "expected a whole number of at least 0".into(),
                    None,
                ));
            };
            Request::Scale { service: need(service), replicas }
        }
        ActionKind::Status => Request::Status { service: need(service) },
        ActionKind::Lock => Request::Lock { service: need(service), reason: need(reason), ttl },
        ActionKind::Unlock => Request::Unlock { service: need(service) },
        ActionKind::Approve => Request::Approve { request: need(request_id) },
        ActionKind::Deny => Request::Deny { request: need(request_id), reason },
        ActionKind::Audit => Request::Audit { service, limit: to_u32(int("limit")) },
        ActionKind::Help => Request::Help { command },
        ActionKind::IncidentDeclare => {
            let mut services: Vec<String> = Vec::new();
            for service in flag_services {
                if !services.contains(&service) {
                    services.push(service);
                }
            }
            Request::Incident {
                op: IncidentOp::Declare { title: need(title), severity: flag_sev.unwrap_or(3), services },
            }
        }
        ActionKind::IncidentLead => Request::Incident { op: IncidentOp::Lead { incident, person: need(person) } },
        ActionKind::IncidentUpdate => Request::Incident { op: IncidentOp::Update { incident, text: need(text) } },
        ActionKind::IncidentNote => Request::Incident { op: IncidentOp::Note { incident, text: need(text) } },
        ActionKind::IncidentSeverity => {
            let severity = int("severity").and_then(|n| u8::try_from(n).ok()).unwrap_or(3);
            Request::Incident { op: IncidentOp::Severity { incident, severity } }
        }
        ActionKind::IncidentStatus => Request::Incident { op: IncidentOp::Status { incident } },
        ActionKind::IncidentResolve => Request::Incident { op: IncidentOp::Resolve { incident, summary } },
        ActionKind::IncidentTimeline => Request::Incident { op: IncidentOp::Timeline { incident } },
        ActionKind::RunbookList => Request::Runbook { op: RunbookOp::List },
        ActionKind::AlertAck => Request::Alert { op: AlertOp::Ack { alert: need(alert), version: flag_version } },
        ActionKind::AlertSilence => Request::Alert {
            op: AlertOp::Silence { alert: need(alert), duration: duration_of("duration"), version: flag_version },
        },
        ActionKind::AlertAct => Request::Alert {
            op: AlertOp::Act { alert: need(alert), what: need(what), version: flag_version, of: flag_of.clone() },
        },
        ActionKind::AlertNoisy => Request::Alert { op: AlertOp::Noisy { period: duration_of("period") } },
        ActionKind::Report => Request::Report { service, period: duration_of("period") },
        ActionKind::RunbookAbort => Request::Runbook { op: RunbookOp::Abort { request: need(request_id) } },
        ActionKind::RunbookRun => {
            let mut params = BTreeMap::new();
            let typed = params_text.unwrap_or_default();
            for pair in typed.split_whitespace() {
                let Some((name, value)) = pair.split_once('=').filter(|(n, v)| !n.is_empty() && !v.is_empty()) else {
                    return Err(bad(spec, "params", pair, "write each parameter as name=value".into(), None));
                };
                if params.insert(name.to_string(), value.to_string()).is_some() {
                    return Err(bad(spec, "params", pair, format!("`{name}` is given twice; give it once"), None));
                }
            }
            Request::Runbook { op: RunbookOp::Run { runbook: need(runbook), params, dry_run } }
        }
    };
    // A dry run changes nothing: no run lock, no approval, no hold applies.
    let mutates = spec.mutates && !dry_run;
    Ok(ParsedCommand { command: spec.name.clone(), policy: spec.policy_key().to_string(), mutates, request, emergency })
}
