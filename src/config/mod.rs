//! Configuration: `config/*.toml` → a validated [`Config`]. Every field is parsed,
//! every problem is collected with its file, key and a hint, and the caller exits
//! 64 before opening any connection. Secrets never live here (see the README).
//!
//! `mod.rs` holds the validated types; `parse.rs` reads and checks the TOML.

pub mod alerts;
mod backends;
mod chat;
mod parse;
mod secrets;
pub mod targets;

pub use secrets::SecretVar;

pub use backends::Budget;
pub use parse::from_str;

use crate::command::Registry;
use crate::event::Actor;
use crate::policy::freeze::FreezeWindow;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing wrong with a configuration or command file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
    pub hint: String,
}

impl Problem {
    pub fn new(file: &Path, key: &str, message: String, hint: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), key: key.to_string(), message, hint: hint.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() { String::new() } else { format!(" [{}]", self.key) };
        write!(f, "{}{key}: {}", self.file.display(), self.message)?;
        if !self.hint.is_empty() {
            write!(f, " — hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found, for `opsbot check` and start-up.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub data_dir: PathBuf,
    /// `[store]`: where the trail and the state live.
    pub store: StoreSettings,
    /// `[bot] durability`: what a commit waits for before anyone is told.
    pub durability: Durability,
    pub commands_dir: PathBuf,
    /// `[bot] runbooks_dir`: runbook files; none are loaded when absent.
    pub runbooks_dir: Option<PathBuf>,
    /// How long a `/lock` lasts when no TTL is given.
    pub lock_ttl: Duration,
    /// How long one action may run; also the TTL of the per-service run lock, so a
    /// crash cannot wedge a service for longer than this.
    pub action_timeout: Duration,
    pub environments: BTreeMap<String, Environment>,
    pub groups: BTreeMap<String, BTreeSet<Actor>>,
    /// `[people]`: each linked account's person.
    pub person_of: BTreeMap<Actor, String>,
    pub services: BTreeMap<String, Service>,
    pub rules: Vec<Rule>,
    pub freezes: Vec<FreezeWindow>,
    /// `[incidents] commanders`: groups who may take over any incident
    /// (hand over its lead, change its severity, resolve it) besides its lead.
    pub incident_commanders: Vec<String>,
    /// `[incidents] dedicated_channels`: each incident gets a channel of its
    /// own (`inc-3-<title>`), where the platform and the bot's permissions allow.
    pub incident_channels: bool,
    /// `[alerts]`: alert intake from monitoring; absent means it is off.
    pub alerts: Option<alerts::AlertSettings>,
    /// `[ci]`: commit records from CI (`POST /ci/commits`); absent means off.
    pub ci: Option<alerts::CiSettings>,
    /// `[reports]`: the targets the delivery numbers are held against.
    pub reports: crate::report::delivery::Targets,
    /// `[databases]`, `[http]`, `[jobs]`: what runbook steps act on.
    pub databases: BTreeMap<String, targets::Database>,
    pub http: BTreeMap<String, targets::HttpTarget>,
    pub jobs: BTreeMap<String, targets::JobTemplate>,
    /// `[server] listen`: the one HTTP listener of `opsbot serve`.
    pub listen: String,
    /// `[slack]`: absent means Slack is off.
    pub slack: Option<SlackSettings>,
    /// `[discord]`: absent means Discord is off.
    pub discord: Option<DiscordSettings>,
    /// `[audit]`: signed checkpoints of the trail.
    pub audit: AuditSettings,
}

/// `[store]`: the embedded sled store in `data_dir` (one replica), or a
/// PostgreSQL database every replica shares (docs/production.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSettings {
    #[default]
    Sled,
    /// The URL (`postgres://…` or key=value) is read from `url_env`.
    Postgres { url_env: String },
}

impl StoreSettings {
    pub const DEFAULT_URL_ENV: &'static str = "OPSBOT_STORE_URL";
}

/// `[audit]`: where the checkpoint signing key comes from and where each
/// checkpoint is published (see docs/audit.md). The key itself is a secret:
/// `OPSBOT_AUDIT_KEY`, or a file outside the data directory.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    pub key_file: Option<PathBuf>,
    /// How often a checkpoint is made while the trail grows.
    pub checkpoint_every: Duration,
    /// Append each checkpoint as a line to this file (outside the data directory).
    pub checkpoint_file: Option<PathBuf>,
    /// Post each checkpoint to this platform-qualified channel.
    pub checkpoint_channel: Option<String>,
    /// Log each checkpoint (target `opsbot::checkpoint`) for a log collector.
    pub checkpoint_log: bool,
    /// Public keys `audit verify --checkpoints` trusts besides the configured key's.
    pub public_keys: Vec<crate::audit::checkpoint::PublicKey>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            key_file: None,
            checkpoint_every: Duration::from_secs(3600),
            checkpoint_file: None,
            checkpoint_channel: None,
            checkpoint_log: true,
            public_keys: Vec::new(),
        }
    }
}

/// What an audit commit (and so every reply) waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// sled's flush only: the commit is written and `sync_file_range` waits
    /// for the disk to take it. Survives the bot crashing or being killed; a
    /// power loss or kernel crash can lose the last seconds (the disk's write
    /// cache is not flushed and the log's new size not journalled). An
    /// explicit opt-out; see docs/operations.md.
    Flush,
    /// sled's flush, then `fdatasync` on its log file: also survives power
    /// loss. The default: "durable before acting" means this.
    #[default]
    Fdatasync,
}

impl Durability {
    /// The name used in `[bot] durability` and in the trail's start record.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Flush => "flush",
            Durability::Fdatasync => "fdatasync",
        }
    }

    pub fn from_name(name: &str) -> Option<Durability> {
        [Durability::Flush, Durability::Fdatasync].into_iter().find(|d| d.name() == name)
    }
}

/// How opsbot talks to Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    /// Slack calls `/slack/*` on opsbot's public URL.
    Http,
    /// opsbot dials Slack (no public URL needed; needs `SLACK_APP_TOKEN`).
    Socket,
    Both,
}

impl SlackMode {
    pub fn http(self) -> bool {
        matches!(self, SlackMode::Http | SlackMode::Both)
    }
    pub fn socket(self) -> bool {
        matches!(self, SlackMode::Socket | SlackMode::Both)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlackSettings {
    pub mode: SlackMode,
    /// Steady pace of one channel's send queue (Slack allows about 1/s).
    pub channel_interval: Duration,
    /// Messages a channel may get at once before the pace applies.
    pub channel_burst: u32,
    /// How long a channel's send queue lives without messages.
    pub channel_idle: Duration,
    /// Socket Mode: how often opsbot pings Slack; with no frame for three
    /// times this, the connection is taken for dead and replaced.
    pub socket_ping: Duration,
    /// At shutdown, how long queued messages may take to be delivered.
    pub shutdown_grace: Duration,
}

/// How Discord reaches opsbot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscordMode {
    /// Discord POSTs interactions to `/discord/interactions` (commands and
    /// buttons; no reactions).
    Http,
    /// opsbot holds a gateway connection (commands, buttons and ✅/❌
    /// reactions; no public URL needed).
    Gateway,
    Both,
}

impl DiscordMode {
    pub fn http(self) -> bool {
        matches!(self, DiscordMode::Http | DiscordMode::Both)
    }
    pub fn gateway(self) -> bool {
        matches!(self, DiscordMode::Gateway | DiscordMode::Both)
    }
}

/// Where `serve` registers the application commands at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Global,
    Guild(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiscordSettings {
    pub mode: DiscordMode,
    /// Steady pace of one channel's send queue (Discord allows 5 messages
    /// per 5 s per channel).
    pub channel_interval: Duration,
    pub channel_burst: u32,
    pub channel_idle: Duration,
    pub shutdown_grace: Duration,
    /// Register the commands at start (`None`: only `opsbot discord-register`).
    pub register: Option<Registration>,
    /// New gateway sessions (IDENTIFYs) allowed per hour.
    pub identify_budget: u32,
    /// `[discord.roles]`: role id → the groups its members are in.
    pub roles: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub environment: String,
    /// Platform-qualified channels allowed to change it; empty means any channel.
    pub channels: Vec<String>,
    pub health_url: Option<String>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub backend: Backend,
}

/// Where a service runs. Closed set; more variants arrive with their backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // configuration, built once at start
pub enum Backend {
    /// The in-memory cluster for the demo and tests.
    Simulated {
        /// Version running at start.
        version: String,
        /// Replicas at start.
        replicas: u32,
        /// Time per rollout step (one replica).
        #[serde(default = "default_step", with = "duration_text")]
        step: Duration,
        /// Versions whose pods crash on start, to rehearse a failed rollout.
        #[serde(default)]
        crashing_versions: Vec<String>,
    },
    /// A Deployment in a Kubernetes cluster, through kube-rs.
    Kubernetes {
        /// kubeconfig context (`KUBECONFIG` or ~/.kube/config); leave out to
        /// use the in-cluster service account (or the current context).
        #[serde(default)]
        context: Option<String>,
        namespace: String,
        deployment: String,
        /// The container whose image `/deploy` changes.
        container: String,
        /// Image repository without a tag; `/deploy svc v1.2.3` sets `image:v1.2.3`.
        image: String,
        /// Roll back by itself when a deploy fails (else the failure offers `/rollback`).
        #[serde(default)]
        auto_rollback: bool,
        /// How often a rollout is checked.
        #[serde(default = "default_poll", with = "duration_text")]
        poll: Duration,
        /// How long a rollout may take before it counts as failed.
        #[serde(default = "default_rollout_timeout", with = "duration_text")]
        rollout_timeout: Duration,
        /// Longest one API call may take before it counts as unanswered (a
        /// write is then re-read to see whether it landed).
        #[serde(default = "default_k8s_call_timeout", with = "duration_text")]
        call_timeout: Duration,
    },
    /// An ECS service (or a blue-green pair), through the AWS SDK.
    Ecs {
        cluster: String,
        /// The service; leave out when `blue_green` names the two services.
        #[serde(default)]
        service: Option<String>,
        /// The container whose image `/deploy` changes.
        container: String,
        /// Image repository without a tag.
        image: String,
        /// Defaults to the standard chain (`AWS_REGION`, profile).
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        auto_rollback: bool,
        #[serde(default = "default_ecs_poll", with = "duration_text")]
        poll: Duration,
        #[serde(default = "default_ecs_timeout", with = "duration_text")]
        rollout_timeout: Duration,
        /// Longest one AWS call may take (the SDK's own retries included).
        #[serde(default = "default_ecs_call_timeout", with = "duration_text")]
        call_timeout: Duration,
        #[serde(default)]
        blue_green: Option<BlueGreen>,
        #[serde(default)]
        smoke: Option<SmokeTest>,
    },
}

/// Blue-green on ECS: two services behind one listener; the live colour is
/// the target group the listener forwards to (each named by a `Color` tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreen {
    pub listener_arn: String,
    pub blue_service: String,
    pub green_service: String,
    /// Health URL of each colour, for the smoke test before traffic moves.
    pub blue_url: String,
    pub green_url: String,
    /// Traffic steps to the new colour in percent, e.g. [10, 50, 100]; a smoke
    /// test runs after each. Default: straight to 100.
    #[serde(default)]
    pub steps: Vec<u8>,
}

/// An HTTP smoke test: GET with a timeout and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeTest {
    /// Defaults to the service's `health_url`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub expect_body: Option<String>,
    #[serde(default = "default_smoke_timeout", with = "duration_text")]
    pub timeout: Duration,
    #[serde(default = "default_smoke_retries")]
    pub retries: u32,
    #[serde(default = "default_smoke_interval", with = "duration_text")]
    pub interval: Duration,
}

fn default_expect_status() -> u16 {
    200
}
fn default_smoke_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_smoke_retries() -> u32 {
    3
}
fn default_smoke_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_ecs_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_ecs_timeout() -> Duration {
    Duration::from_secs(900)
}

fn default_ecs_call_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_k8s_call_timeout() -> Duration {
    Duration::from_secs(15)
}

fn default_poll() -> Duration {
    Duration::from_secs(2)
}

fn default_rollout_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_step() -> Duration {
    Duration::from_millis(500)
}

/// A policy rule: who may run which commands in which environments, and who
/// must approve.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub commands: Vec<String>,
    pub environments: Vec<String>,
    pub requesters: Vec<String>,
    pub approvers: Vec<String>,
    pub approvals: u32,
    pub ttl: Duration,
    pub break_glass: Vec<String>,
}

impl Rule {
    pub fn matches(&self, policy: &str, environment: &str) -> bool {
        self.commands.iter().any(|c| c == policy) && self.environments.iter().any(|e| e == "*" || e == environment)
    }
}

/// Durations written as text (`500ms`, `30m`) in TOML.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::format_duration(*d))
    }
    /// A duration in the configuration is never zero: a zero poll would spin,
    /// a zero timeout would fail everything at once.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        match crate::clock::parse_duration(&text).map_err(serde::de::Error::custom)? {
            zero if zero.is_zero() => {
                Err(serde::de::Error::custom(format!("`{text}` is zero; write a duration longer than zero")))
            }
            duration => Ok(duration),
        }
    }
}

/// [`Config::person`] over a `[people]` map (also while parsing).
pub(crate) fn person_key(person_of: &BTreeMap<Actor, String>, actor: &Actor) -> String {
    match person_of.get(actor) {
        Some(person) => format!("person:{person}"),
        None => actor.to_string(),
    }
}

impl Config {
    /// Who `actor` is, for self-approval and for counting approvals: the
    /// person it is linked to in `[people]` (`person:alice`), else itself.
    pub fn person(&self, actor: &Actor) -> String {
        person_key(&self.person_of, actor)
    }

    pub fn is_known(&self, actor: &Actor) -> bool {
        self.groups.values().any(|members| members.contains(actor))
    }

    /// The groups `actor`'s platform roles grant: Discord roles, mapped by
    /// `[discord.roles]`; nothing for any other platform's identity.
    pub fn granted_to(&self, actor: &Actor, roles: &[String]) -> Vec<String> {
        if actor.platform() != crate::event::Platform::Discord {
            return Vec::new();
        }
        self.granted_by_roles(roles)
    }

    /// What the audit trail says of an actor's platform roles, if they grant
    /// anything: the groups and the role ids they came from.
    pub fn roles_note(&self, actor: &Actor, roles: &[String]) -> Option<String> {
        let granted = self.granted_to(actor, roles);
        (!granted.is_empty())
            .then(|| format!("groups from Discord roles: {} (roles {})", granted.join(", "), roles.join(", ")))
    }

    /// The groups `[discord.roles]` grants to a member with these role ids.
    pub fn granted_by_roles(&self, roles: &[String]) -> Vec<String> {
        let Some(discord) = &self.discord else { return Vec::new() };
        let mut groups: Vec<String> = roles.iter().filter_map(|r| discord.roles.get(r)).flatten().cloned().collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Whether members of `group` can come from Discord roles (so who is
    /// in it is known only from each event).
    pub fn role_mapped(&self, group: &str) -> bool {
        self.discord.as_ref().is_some_and(|d| d.roles.values().flatten().any(|g| g == group))
    }

    /// Whether `actor` is known: in a configured group, or granted one by
    /// the platform for this event.
    pub fn is_known_with(&self, actor: &Actor, granted: &[String]) -> bool {
        self.is_known(actor) || !granted.is_empty()
    }

    /// [`Config::in_any`], counting the groups the platform granted `actor`
    /// for this event (`granted`) too.
    pub fn in_any_with(&self, actor: &Actor, granted: &[String], groups: &[String]) -> bool {
        self.in_any(actor, groups) || groups.iter().any(|g| (g == "*" && !granted.is_empty()) || granted.contains(g))
    }

    /// Whether `actor` belongs to any of `groups` (`*` means any known user).
    pub fn in_any(&self, actor: &Actor, groups: &[String]) -> bool {
        groups.iter().any(|g| {
            if g == "*" {
                self.is_known(actor)
            } else {
                self.groups.get(g).is_some_and(|m| m.contains(actor))
            }
        })
    }

    /// Everyone in `groups`.
    pub fn members(&self, groups: &[String]) -> BTreeSet<Actor> {
        groups
            .iter()
            .flat_map(|g| {
                if g == "*" {
                    self.groups.values().flatten().cloned().collect::<Vec<_>>()
                } else {
                    self.groups.get(g).map(|m| m.iter().cloned().collect()).unwrap_or_default()
                }
            })
            .collect()
    }

    pub fn rule_for(&self, policy: &str, environment: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(policy, environment))
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }
}

/// The configuration and the commands it is checked against.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub registry: Registry,
}

/// Reads and checks a config file and the command files it points at.
impl Config {
    /// Replaces the data directory (`--data-dir`, `OPSBOT_DATA_DIR`) and
    /// re-checks what must stay outside it.
    pub fn set_data_dir(&mut self, dir: PathBuf) -> Result<(), Problems> {
        let mut problems = Vec::new();
        for (key, file) in
            [("audit.key_file", &self.audit.key_file), ("audit.checkpoint_file", &self.audit.checkpoint_file)]
        {
            if let Some(file) = file {
                parse::outside_data_dir(&self.source, key, file, &dir, &mut problems);
            }
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        self.data_dir = dir;
        Ok(())
    }
}

pub fn load(path: &Path) -> Result<Loaded, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem::new(
            path,
            "",
            format!("cannot read: {e}"),
            "pass --config with the path of a TOML file such as config/demo.toml",
        )])
    })?;
    let mut problems = Vec::new();
    let config = from_str(path, &text, &mut problems);
    let registry = match &config {
        Some(config) => match Registry::load_dir(&config.commands_dir) {
            Ok(mut registry) => match config.runbooks_dir.as_deref().map(|dir| registry.load_runbooks(dir)) {
                Some(Err(more)) => {
                    problems.extend(more);
                    None
                }
                _ => Some(registry),
            },
            Err(more) => {
                problems.extend(more);
                None
            }
        },
        None => None,
    };
    if let (Some(config), Some(registry)) = (&config, &registry) {
        parse::cross_check(path, config, registry, &mut problems);
    }
    match (config, registry) {
        (Some(config), Some(registry)) if problems.is_empty() => Ok(Loaded { config, registry }),
        _ => Err(Problems(problems)),
    }
}

#[cfg(test)]
mod tests;
