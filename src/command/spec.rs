//! The serde shape of `commands/*.toml`: one file per command. These types are
//! data only; `registry` checks them against the actions the bot knows.

use serde::Deserialize;

/// One command file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// What users type after the slash: `deploy` for `/deploy`. In a
    /// group, the word after the group's (`declare` in `/incident declare`);
    /// the registry then keeps the whole invocation (`incident declare`) here.
    pub name: String,
    /// The group this command belongs to: `incident` makes this file's
    /// command `/incident <name>` (one slash command with subcommands).
    #[serde(default)]
    pub group: Option<String>,
    /// Other names for the same command (`ship` for `deploy`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line for `/help`.
    pub summary: String,
    /// The usage line shown on errors, e.g. `/deploy <service> <version>`.
    pub usage: String,
    #[serde(default)]
    pub examples: Vec<String>,
    /// Longer help text for `/help <command>`.
    #[serde(default)]
    pub description: Option<String>,
    /// Which built-in action this command runs.
    pub action: ActionKind,
    /// Whether it changes infrastructure (and so needs locks and the audit intent).
    #[serde(default)]
    pub mutates: bool,
    /// The key `[[rules]]` and `[[freeze]]` in config refer to. Defaults to
    /// `name`, or to the group's name for a command in a group.
    #[serde(default)]
    pub policy: Option<String>,
    /// Positional arguments, in order.
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// `--name value` options.
    #[serde(default)]
    pub flags: Vec<FlagSpec>,
}

impl CommandSpec {
    pub fn policy_key(&self) -> &str {
        self.policy.as_deref().or(self.group.as_deref()).unwrap_or(&self.name)
    }
}

/// A positional argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawArg")]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    pub required: bool,
    pub help: Option<String>,
}

/// A `--flag`. A flag of type `switch` takes no value.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawArg")]
pub struct FlagSpec {
    pub name: String,
    pub kind: ArgKind,
    pub help: Option<String>,
}

/// The file shape of an argument or flag: `type` plus the options that type
/// takes. Unknown keys and options that do not fit the type are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    required: Option<bool>,
    help: Option<String>,
    min: Option<i64>,
    max: Option<toml::Value>,
    values: Option<Vec<String>>,
    max_len: Option<usize>,
}

impl TryFrom<RawArg> for ArgSpec {
    type Error = String;
    fn try_from(raw: RawArg) -> Result<Self, String> {
        let required = raw.required.unwrap_or(true);
        let (name, help) = (raw.name.clone(), raw.help.clone());
        Ok(ArgSpec { name, help, required, kind: raw.into_kind()? })
    }
}

impl TryFrom<RawArg> for FlagSpec {
    type Error = String;
    fn try_from(raw: RawArg) -> Result<Self, String> {
        if raw.required.is_some() {
            return Err(format!("flag `{}`: flags are always optional; drop `required`", raw.name));
        }
        let (name, help) = (raw.name.clone(), raw.help.clone());
        Ok(FlagSpec { name, help, kind: raw.into_kind()? })
    }
}

impl RawArg {
    fn into_kind(self) -> Result<ArgKind, String> {
        let name = &self.name;
        let refuse =
            |option: &str| Err(format!("argument `{name}`: `{option}` does not apply to type `{}`", self.kind));
        let kind = match self.kind.as_str() {
            "service" => ArgKind::Service,
            "version" => ArgKind::Version,
            "request_id" => ArgKind::RequestId,
            "command" => ArgKind::Command,
            "incident" => ArgKind::IncidentId,
            "alert" => ArgKind::AlertId,
            "person" => ArgKind::Person,
            "runbook" => ArgKind::Runbook,
            "switch" => ArgKind::Switch,
            "integer" => {
                let max = match &self.max {
                    None => None,
                    Some(toml::Value::Integer(n)) => Some(*n),
                    Some(_) => return Err(format!("argument `{name}`: `max` of an integer is a whole number")),
                };
                ArgKind::Integer { min: self.min, max }
            }
            "duration" => {
                let max = match &self.max {
                    None => None,
                    Some(toml::Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(format!("argument `{name}`: `max` of a duration is text like \"7d\"")),
                };
                ArgKind::Duration { max }
            }
            "text" => ArgKind::Text { max_len: self.max_len.unwrap_or_else(default_text_max) },
            "choice" => ArgKind::Choice { values: self.values.clone().unwrap_or_default() },
            other => {
                return Err(format!(
                    "argument `{name}`: unknown type `{other}`; use service, version, integer, duration, text, choice, request_id, incident, person, runbook, command or switch"
                ))
            }
        };
        if self.min.is_some() && !matches!(kind, ArgKind::Integer { .. }) {
            return refuse("min");
        }
        if self.max.is_some() && !matches!(kind, ArgKind::Integer { .. } | ArgKind::Duration { .. }) {
            return refuse("max");
        }
        if self.values.is_some() && !matches!(kind, ArgKind::Choice { .. }) {
            return refuse("values");
        }
        if self.max_len.is_some() && !matches!(kind, ArgKind::Text { .. }) {
            return refuse("max_len");
        }
        Ok(kind)
    }
}

/// The value types arguments can have. Every value is checked here, so nothing a
/// user types reaches an executor unvalidated.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgKind {
    /// A service named in config.
    Service,
    /// An image tag / version: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    Version,
    /// A whole number within bounds.
    Integer { min: Option<i64>, max: Option<i64> },
    /// A duration such as `30m` or `2h`, optionally bounded.
    Duration { max: Option<String> },
    /// Free text (a reason). Kept as data; never interpreted.
    Text { max_len: usize },
    /// One of a fixed list of words.
    Choice { values: Vec<String> },
    /// An approval request id such as `r-12` (or just `12`).
    RequestId,
    /// The name of another command (for `/help deploy`), or of a group.
    Command,
    /// An incident id such as `INC-3`.
    IncidentId,
    /// An alert group id such as `A-7`.
    AlertId,
    /// Someone on a chat platform: a mention (`<@U024BE7LH>`, `<@80351110224678912>`)
    /// or a platform-qualified identity (`slack:U024BE7LH`, `console:alice`).
    Person,
    /// The name of a runbook (`commands/runbooks/*.toml`).
    Runbook,
    /// A flag with no value.
    Switch,
}

fn default_text_max() -> usize {
    500
}

impl ArgKind {
    pub fn describe(&self) -> String {
        match self {
            ArgKind::Service => "a service name".into(),
            ArgKind::Version => "a version tag like v1.4.2".into(),
            ArgKind::Integer { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("a whole number from {a} to {b}"),
                (Some(a), None) => format!("a whole number of at least {a}"),
                (None, Some(b)) => format!("a whole number up to {b}"),
                (None, None) => "a whole number".into(),
            },
            ArgKind::Duration { .. } => "a duration like 30m or 2h".into(),
            ArgKind::Text { .. } => "text".into(),
            ArgKind::Choice { values } => format!("one of {}", values.join(", ")),
            ArgKind::RequestId => "a request id like r-12".into(),
            ArgKind::Command => "a command name".into(),
            ArgKind::IncidentId => "an incident id like INC-3".into(),
            ArgKind::AlertId => "an alert id like A-7".into(),
            ArgKind::Person => "a person: an @mention or an id like slack:U024BE7LH".into(),
            ArgKind::Runbook => "a runbook name (`/runbook list` shows them)".into(),
            ArgKind::Switch => "nothing (a switch)".into(),
        }
    }
}

/// An argument an action reads: its name, a check of its kind, whether required.
pub type NeededArg = (&'static str, fn(&ArgKind) -> bool, bool);

/// The closed set of things a command can do. Command files pick one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Deploy,
    Rollback,
    Restart,
    Scale,
    Status,
    Lock,
    Unlock,
    Approve,
    Deny,
    Audit,
    Help,
    IncidentDeclare,
    IncidentLead,
    IncidentUpdate,
    IncidentSeverity,
    IncidentNote,
    IncidentStatus,
    IncidentResolve,
    IncidentTimeline,
    RunbookList,
    RunbookRun,
    RunbookAbort,
    AlertAck,
    AlertSilence,
    AlertAct,
    AlertNoisy,
    Report,
}

/// A flag an action reads: its name, a check of its kind, and whether it may
/// be given more than once.
pub type NeededFlag = (&'static str, fn(&ArgKind) -> bool, bool);

impl ActionKind {
    /// The arguments (name, kind check, required) each action reads. The registry
    /// refuses a command file that does not provide them.
    pub fn needed_args(self) -> &'static [NeededArg] {
        fn service(k: &ArgKind) -> bool {
            *k == ArgKind::Service
        }
        fn version(k: &ArgKind) -> bool {
            *k == ArgKind::Version
        }
        fn integer(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Integer { .. })
        }
        fn text(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Text { .. })
        }
        fn duration(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Duration { .. })
        }
        fn request(k: &ArgKind) -> bool {
            *k == ArgKind::RequestId
        }
        fn command(k: &ArgKind) -> bool {
            *k == ArgKind::Command
        }
        fn incident(k: &ArgKind) -> bool {
            *k == ArgKind::IncidentId
        }
        fn person(k: &ArgKind) -> bool {
            *k == ArgKind::Person
        }
        fn severity(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Integer { min: Some(min), max: Some(max) } if *min >= 1 && *max <= 4)
        }
        fn runbook(k: &ArgKind) -> bool {
            *k == ArgKind::Runbook
        }
        fn alert(k: &ArgKind) -> bool {
            *k == ArgKind::AlertId
        }
        fn choice(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Choice { .. })
        }
        match self {
            ActionKind::Deploy => &[("service", service, true), ("version", version, true)],
            ActionKind::Rollback => &[("service", service, true), ("revision", integer, false)],
            ActionKind::Restart | ActionKind::Status | ActionKind::Unlock => &[("service", service, true)],
            ActionKind::Scale => &[("service", service, true), ("replicas", integer, true)],
            ActionKind::Lock => &[("service", service, true), ("reason", text, true), ("ttl", duration, false)],
            ActionKind::Approve => &[("request", request, true)],
            ActionKind::Deny => &[("request", request, true), ("reason", text, false)],
            ActionKind::Audit => &[("service", service, false), ("limit", integer, false)],
            ActionKind::Help => &[("command", command, false)],
            ActionKind::IncidentDeclare => &[("title", text, true)],
            ActionKind::IncidentLead => &[("incident", incident, false), ("person", person, true)],
            ActionKind::IncidentUpdate | ActionKind::IncidentNote => {
                &[("incident", incident, false), ("text", text, true)]
            }
            ActionKind::IncidentSeverity => &[("incident", incident, false), ("severity", severity, true)],
            ActionKind::IncidentStatus | ActionKind::IncidentTimeline => &[("incident", incident, false)],
            ActionKind::IncidentResolve => &[("incident", incident, false), ("summary", text, false)],
            ActionKind::RunbookList => &[],
            ActionKind::RunbookRun => &[("runbook", runbook, true), ("params", text, false)],
            ActionKind::RunbookAbort => &[("request", request, true)],
            ActionKind::AlertAck => &[("alert", alert, true)],
            ActionKind::AlertSilence => &[("alert", alert, true), ("duration", duration, true)],
            ActionKind::AlertAct => &[("alert", alert, true), ("what", choice, true)],
            ActionKind::AlertNoisy => &[("period", duration, false)],
            ActionKind::Report => &[("service", service, false), ("period", duration, false)],
        }
    }

    /// The flags each action reads (all optional).
    pub fn flags(self) -> &'static [NeededFlag] {
        fn text(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Text { .. })
        }
        fn severity(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Integer { min: Some(min), max: Some(max) } if *min >= 1 && *max <= 4)
        }
        fn service(k: &ArgKind) -> bool {
            *k == ArgKind::Service
        }
        fn request(k: &ArgKind) -> bool {
            *k == ArgKind::RequestId
        }
        fn switch(k: &ArgKind) -> bool {
            *k == ArgKind::Switch
        }
        fn number(k: &ArgKind) -> bool {
            matches!(k, ArgKind::Integer { .. })
        }
        fn tag(k: &ArgKind) -> bool {
            *k == ArgKind::Version
        }
        match self {
            ActionKind::Rollback => &[("emergency", text, false), ("of", request, false)],
            ActionKind::Deploy => &[("emergency", text, false), ("commit", tag, false)],
            ActionKind::Restart | ActionKind::Scale => &[("emergency", text, false)],
            ActionKind::IncidentDeclare => &[("sev", severity, false), ("service", service, true)],
            ActionKind::RunbookRun => &[("dry-run", switch, false), ("emergency", text, false)],
            ActionKind::AlertAck | ActionKind::AlertSilence => &[("version", number, false)],
            ActionKind::AlertAct => &[("version", number, false), ("of", request, false)],
            _ => &[],
        }
    }

    /// Whether this action changes infrastructure. A command file cannot make a
    /// mutating action look read-only (the registry checks `mutates` against this).
    pub fn mutates_infrastructure(self) -> bool {
        matches!(
            self,
            ActionKind::Deploy
                | ActionKind::Rollback
                | ActionKind::Restart
                | ActionKind::Scale
                | ActionKind::RunbookRun
        )
    }
}
