//! The core: takes platform-neutral [`Event`]s, parses, asks the policy, opens
//! approval requests, runs actions and replies through the [`ChatSink`].
//!
//! - `mod.rs`: construction, event dispatch, commands that run at once;
//! - `votes.rs`: approvals, denials, expiry;
//! - `run.rs`: executing a mutating action (run lock, intent, progress, outcome);
//! - `render.rs`: status and audit text;
//! - `answer.rs`: the immediate answer (with its deadline) and how the
//!   engine speaks;
//! - `reply.rs`: the reply port adapters implement ([`reply::ChatSink`]).
//!
//! Ordering rule everywhere: state is written, then its audit record is
//! appended and awaited (durable, and the flush covers the state), and only
//! then is anyone told.

mod alerts;
mod answer;
mod incident;
mod render;
pub mod reply;
mod report;
pub use answer::Handled;
pub use report::CommitRecord;
mod run;
mod runbook;
mod votes;

use crate::action::simulated::Simulated;
use crate::action::Executor;
use crate::audit::{AuditEntry, AuditLog, RecordKind, Verdict};
use crate::clock::Clock;
use crate::command::{self, Admin, IncidentOp, Kind, ParsedCommand, Read, Registry, Request};
use crate::config::{Backend, Config, Service};
use crate::engine::reply::{ChatSink, Reply};
use crate::error::{Error, Result};
use crate::event::{Actor, Event, ReplyTarget};
use crate::metrics::Metrics;
use crate::policy::{self, Decision, Hold, Subject};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// The backends, by kind: the executor port the engine owns. Tests may put
/// their own executor in any slot.
pub struct Executors {
    pub simulated: Arc<dyn Executor>,
    pub kubernetes: Arc<dyn Executor>,
    pub ecs: Arc<dyn Executor>,
    /// Runbook `k8s_job` steps (its own kubeconfig clients).
    pub jobs: Arc<crate::action::kubernetes::Kubernetes>,
}

impl Executors {
    pub fn from_config(config: &Config) -> Executors {
        Executors {
            simulated: Arc::new(Simulated::new(config.services.values())),
            kubernetes: Arc::new(crate::action::kubernetes::Kubernetes::default()),
            ecs: Arc::new(crate::action::ecs::Ecs::default()),
            jobs: Arc::new(crate::action::kubernetes::Kubernetes::default()),
        }
    }
    pub fn for_service(&self, service: &Service) -> &dyn Executor {
        match service.backend {
            Backend::Simulated { .. } => self.simulated.as_ref(),
            Backend::Kubernetes { .. } => self.kubernetes.as_ref(),
            Backend::Ecs { .. } => self.ecs.as_ref(),
        }
    }
}

/// Said when a request runs without waiting: who asked, and why it need not wait.
fn runs_now(what: &str, actor: &Actor, id: &str, emergency: Option<&str>) -> String {
    let why = match emergency {
        Some(reason) => format!("🚨 break-glass by {actor} ({})", reply::typed(reason)),
        None => "no approval needed".to_string(),
    };
    format!("{what} requested by {actor} — {id} runs now, {why}")
}

/// A start message's parts: the break-glass banner (empty without), and
/// who approved (`, approved by …`, empty without).
fn start_notes(requester: &Actor, break_glass: Option<&str>, approved_by: &[Actor]) -> (String, String) {
    let loud = break_glass
        .map(|reason| format!("🚨 BREAK-GLASS by {requester}: {} — no approval was waited for. ", reply::typed(reason)))
        .unwrap_or_default();
    let approvals = if approved_by.is_empty() {
        String::new()
    } else {
        format!(", approved by {}", approved_by.iter().map(Actor::to_string).collect::<Vec<_>>().join(", "))
    };
    (loud, approvals)
}

/// What an allowed or pending request will do, with the id it gets.
enum Plan<'a> {
    Change {
        id: String,
        service: &'a str,
        action: crate::action::Action,
    },
    /// `id` is the request's (`r-N`) for a lock, the incident's for an
    /// incident command when known.
    Admin {
        id: Option<String>,
        admin: Admin<'a>,
    },
    Read(Read<'a>),
}

impl Plan<'_> {
    fn id(&self) -> Option<&str> {
        match self {
            Plan::Change { id, .. } => Some(id),
            Plan::Admin { id, .. } => id.as_deref(),
            Plan::Read(_) => None,
        }
    }
}

/// Everything [`Engine::start_action`] needs to run one change.
pub(super) struct Start<'a> {
    pub id: &'a str,
    pub requester: &'a Actor,
    pub parsed: &'a ParsedCommand,
    pub service: &'a str,
    pub action: crate::action::Action,
    pub reply: &'a ReplyTarget,
    pub approved_by: Vec<Actor>,
    pub break_glass: Option<String>,
    /// Said (as a channel message) once the run lock is held and the intent
    /// is durable, before the start message.
    pub announce: Option<String>,
}

pub struct Engine {
    config: Arc<Config>,
    registry: Arc<Registry>,
    service_names: Vec<String>,
    store: Arc<dyn Store>,
    audit: Arc<dyn AuditLog>,
    executors: Executors,
    chat: Arc<dyn ChatSink>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    /// Set once shutdown has stopped waiting for the tracker: work started
    /// after that would run unwaited.
    stopped: std::sync::atomic::AtomicBool,
    /// Serialises read-modify-write of pending requests (votes, expiry).
    votes: tokio::sync::Mutex<()>,
    /// Serialises read-modify-write of incidents.
    incidents: tokio::sync::Mutex<()>,
    /// Serialises read-modify-write of alert groups (intake and buttons).
    alerts: tokio::sync::Mutex<()>,
    names: Arc<crate::names::DisplayNames>,
    /// Marked when an action's backend panics (a bug): readiness reads it.
    health: Arc<crate::tasks::Health>,
    /// Runbook runs under way, each with who asked to abort it (if anyone).
    running: std::sync::Mutex<std::collections::HashMap<String, runbook::Running>>,
}

/// Everything [`Engine::new`] needs.
pub struct Parts {
    pub config: Config,
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    pub audit: Arc<dyn AuditLog>,
    pub executors: Executors,
    pub chat: Arc<dyn ChatSink>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(parts: Parts) -> Arc<Engine> {
        let names = Arc::new(crate::names::DisplayNames::default());
        Arc::new(Engine {
            service_names: parts.config.service_names(),
            config: Arc::new(parts.config),
            registry: Arc::new(parts.registry),
            store: parts.store,
            audit: Arc::new(crate::names::Named { inner: parts.audit, names: names.clone() }),
            executors: parts.executors,
            chat: parts.chat,
            clock: parts.clock,
            metrics: parts.metrics,
            tracker: TaskTracker::new(),
            stopped: Default::default(),
            votes: tokio::sync::Mutex::new(()),
            incidents: tokio::sync::Mutex::new(()),
            alerts: tokio::sync::Mutex::new(()),
            names,
            health: Default::default(),
            running: Default::default(),
        })
    }

    /// Whether an action's backend has panicked (a bug), for readiness.
    pub fn health(&self) -> &Arc<crate::tasks::Health> {
        &self.health
    }

    /// Where adapters record the display names they learn.
    pub fn display_names(&self) -> &Arc<crate::names::DisplayNames> {
        &self.names
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn audit(&self) -> &Arc<dyn AuditLog> {
        &self.audit
    }

    pub fn executors(&self) -> &Executors {
        &self.executors
    }

    /// The durable state the engine keeps (approvals, locks, dedup).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Open approval requests (for the pending-approvals gauge).
    pub fn open_requests(&self) -> usize {
        self.store.open_count()
    }

    /// Handles one event to the point where its reply is sent; actions keep
    /// running in tracked background tasks. Returns false when the event was
    /// a duplicate delivery and nothing was done.
    pub async fn handle(self: &Arc<Self>, event: Event) -> bool {
        let actor = event.actor().clone();
        let reply = match &event {
            Event::Command { reply, .. } | Event::Vote { reply, .. } => reply.clone(),
        };
        if let Some(key) = event.dedup_key() {
            match self.store.first_delivery(key, self.clock.now()) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(key, "duplicate delivery ignored");
                    return false;
                }
                Err(e) => {
                    self.reply_error(&actor, &reply, e.into()).await;
                    return true;
                }
            }
        }
        let result = match event {
            Event::Command { actor, text, reply, roles, .. } => self.on_command(&actor, &roles, &text, &reply).await,
            Event::Vote { actor, request_id, approve, reply, version, roles, .. } => {
                Box::pin(self.vote(&actor, &roles, &request_id, approve, None, version.as_deref(), &reply)).await
            }
        };
        if let Err(error) = result {
            self.reply_error(&actor, &reply, error).await;
        }
        true
    }

    /// The one place errors become replies.
    async fn reply_error(&self, actor: &Actor, reply: &ReplyTarget, error: Error) {
        if error.is_internal() {
            tracing::error!(error = %error, actor = %actor, "request failed");
        } else {
            tracing::debug!(error = %error, actor = %actor, "request refused");
        }
        self.say(reply, Reply::Private { to: actor.clone(), text: error.user_message() }).await;
    }

    async fn on_command(
        self: &Arc<Self>,
        actor: &Actor,
        roles: &[String],
        text: &str,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let parsed = match command::parse(&self.registry, &self.service_names, text) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.metrics.request(actor.platform(), "unparsed", "invalid");
                return Err(e.into());
            }
        };
        match parsed.request.kind() {
            // Votes and actions are boxed: their futures are large and rare,
            // and inline they made every command's future (a /status too)
            // ~6 KiB, copied on each move.
            Kind::Vote { request, approve, reason } => {
                Box::pin(self.vote(actor, roles, request, approve, reason.map(str::to_string), None, reply)).await
            }
            Kind::Read(Read::Help { command }) => {
                // Help reveals nothing but the command files; still deny unknown users.
                if let Decision::Deny(reason) = self.decide(actor, roles, &parsed, &reply.channel, None)? {
                    return Err(Error::Denied(reason));
                }
                self.say(reply, Reply::Text(self.registry.render_help(command))).await;
                Ok(())
            }
            _ => self.on_request(actor, roles, &parsed, reply).await,
        }
    }

    fn service(&self, name: Option<&str>) -> Option<&Service> {
        name.and_then(|n| self.config.services.get(n))
    }

    /// The policy's answer for `actor` asking for `parsed` now.
    fn decide(
        &self,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        channel: &str,
        emergency: Option<&str>,
    ) -> Result<Decision> {
        let now = self.clock.now();
        // The groups the actor's platform roles grant under the current configuration.
        let granted = self.config.granted_to(actor, roles);
        // An alert's buttons are decided under the alert's service.
        let alert_service = match &parsed.request {
            command::Request::Alert { op } => {
                op.alert().and_then(|id| self.store.get_alert(id).ok().flatten()).and_then(|g| g.service)
            }
            _ => None,
        };
        let service = self.service(parsed.service().or(alert_service.as_deref()));
        let hold: Option<Hold> = match (service, parsed.mutates) {
            (Some(s), true) => self.store.active_hold(&s.name, now)?,
            _ => None,
        };
        // An open SEV1/SEV2 on the service holds a deploy for its lead.
        let gate = self.incident_gate(&parsed.request)?;
        let incident = gate.as_ref().map(|i| policy::IncidentGate { id: &i.id, severity: i.severity, lead: &i.lead });
        Ok(policy::evaluate(
            &self.config,
            &Subject {
                actor,
                granted: &granted,
                policy: &parsed.policy,
                mutates: parsed.mutates,
                service,
                environment: None,
                frozen_with: &[],
                channel,
                emergency,
                hold: hold.as_ref(),
                incident,
                now,
            },
        ))
    }

    /// An audit entry describing `parsed`, by `actor`, in `reply`'s channel.
    fn entry(
        &self,
        kind: RecordKind,
        id: Option<&str>,
        actor: &Actor,
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
    ) -> AuditEntry {
        let service = self.service(parsed.service());
        AuditEntry {
            kind,
            request_id: id.map(str::to_string),
            actor: Some(actor.to_string()),
            actor_name: None,
            channel: Some(reply.channel.clone()),
            command: Some(parsed.command.clone()),
            args: serde_json::to_value(&parsed.request).ok(),
            service: service.map(|s| s.name.clone()),
            environment: service.map(|s| s.environment.clone()),
            outcome: None,
            detail: String::new(),
            live: None,
        }
    }

    /// A request that is not a vote or `/help`: decided by the policy, then,
    /// by its kind, held for approval, run, or answered.
    async fn on_request(
        self: &Arc<Self>,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
    ) -> Result<()> {
        // Runbook runs and aborts are decided on their own path (the
        // runbook's environment, every service it changes).
        match parsed.request.kind() {
            Kind::Runbook { runbook, params } => {
                return Box::pin(self.on_runbook(actor, roles, parsed, runbook, params, reply)).await;
            }
            Kind::Admin(Admin::Abort { request }) => return self.on_abort(actor, roles, parsed, request, reply).await,
            _ => {}
        }
        self.check_bounds(parsed)?;
        let decision = self.decide(actor, roles, parsed, &reply.channel, parsed.emergency.as_deref())?;
        // A rollback of one deploy that is no longer the newest change is
        // refused (and recorded so) before anyone is asked to approve it;
        // only those the policy lets ask learn what changed since.
        let decision = match decision {
            Decision::Deny(_) => decision,
            allowed => match self.undo_is_stale(&parsed.request)? {
                Some(stale) => Decision::Deny(stale),
                None => allowed,
            },
        };
        let plan = match parsed.request.kind() {
            Kind::Change { service, action } => Plan::Change { id: self.store.next_request_id()?, service, action },
            Kind::Admin(Admin::Incident(op)) => {
                // Incident records carry the incident's id, not a request's
                // (a new incident's is taken only once it is declared).
                let id = match op {
                    IncidentOp::Declare { .. } => None,
                    _ => self.incident_for(op.incident(), reply, false).ok().map(|i| i.id),
                };
                Plan::Admin { id, admin: Admin::Incident(op) }
            }
            // Alert records carry the alert's id (`A-7`).
            Kind::Admin(Admin::Alert(op)) => {
                Plan::Admin { id: op.alert().map(str::to_string), admin: Admin::Alert(op) }
            }
            Kind::Admin(admin) => Plan::Admin { id: Some(self.store.next_request_id()?), admin },
            Kind::Read(read) => Plan::Read(read),
            Kind::Vote { .. } => return Err(Error::Invalid("a vote is not a request".into())),
            Kind::Runbook { .. } => return Err(Error::Invalid("a runbook run is planned on its own path".into())),
        };
        let id = plan.id().map(str::to_string);
        let id = id.as_deref();
        let request_record = self.entry(RecordKind::Request, id, actor, parsed, reply);
        // Why someone the configuration does not list was allowed (or not).
        let roles_note = self.config.roles_note(actor, roles);
        let decided = |outcome: Verdict, detail: String| {
            self.metrics.request(actor.platform(), &parsed.command, outcome.name());
            let detail = match &roles_note {
                Some(note) => format!("{detail}; {note}"),
                None => detail,
            };
            AuditEntry { args: None, ..self.entry(RecordKind::Decision, id, actor, parsed, reply) }
                .outcome(outcome)
                .detail(detail)
        };
        match (decision, plan) {
            (Decision::Deny(reason), _) => {
                let record = decided(Verdict::Denied, reason.clone());
                self.audit.append_all(vec![request_record, record]).await?;
                Err(Error::Denied(reason))
            }
            // A rule asking approvals of something that cannot wait for them
            // is refused by `opsbot check`; should one slip through, the
            // request is denied, never run unapproved or crashed on.
            (Decision::NeedsApproval(need), Plan::Admin { .. } | Plan::Read(_)) => {
                let reason = format!(
                    "{} cannot wait for approval, but a rule asks {} approval(s) for it; an admin must fix the rules (`opsbot check` names the rule)",
                    parsed.request.describe(),
                    need.approvals
                );
                let record = decided(Verdict::Denied, reason.clone());
                self.audit.append_all(vec![request_record, record]).await?;
                Err(Error::Denied(reason))
            }
            (Decision::NeedsApproval(need), Plan::Change { id, service, .. }) => {
                let detail = format!("needs {} approval(s) from {}", need.approvals, need.approver_groups.join(", "));
                let record = decided(Verdict::Pending, detail);
                let pending = self.open_request(&id, actor, roles, parsed, service, reply, need)?;
                self.store.put_pending(&pending)?;
                self.audit.append_all(vec![request_record, record]).await?;
                self.announce_pending(&pending, actor, reply).await;
                Ok(())
            }
            (decision @ (Decision::Allow | Decision::BreakGlass { .. }), Plan::Change { id, service, action }) => {
                let record = match &decision {
                    Decision::BreakGlass { reason } => {
                        decided(Verdict::BreakGlass, format!("BREAK-GLASS by {actor}: {reason}"))
                    }
                    _ => decided(Verdict::Allowed, String::new()),
                };
                self.audit.append_all(vec![request_record, record]).await?;
                // Said only once the run lock is taken and the intent is
                // durable (decide, then announce).
                let announce = runs_now(&parsed.request.describe(), actor, &id, parsed.emergency.as_deref());
                let start = Start {
                    id: &id,
                    requester: actor,
                    parsed,
                    service,
                    action,
                    reply,
                    approved_by: Vec::new(),
                    break_glass: parsed.emergency.clone(),
                    announce: Some(announce),
                };
                Box::pin(self.start_action(start)).await
            }
            (Decision::Allow | Decision::BreakGlass { .. }, Plan::Admin { id, admin: Admin::Incident(op) }) => {
                // One record says what was done (an incident record carries
                // its decision, as an allowed read does); a refusal after
                // the policy (no such incident, not the lead's to change)
                // is recorded as any refused request is.
                match self.run_incident(actor, roles, parsed, op, id.as_deref(), reply).await {
                    Err(e @ (Error::Invalid(_) | Error::Denied(_))) => {
                        let record = decided(Verdict::Denied, e.user_message());
                        self.audit.append_all(vec![request_record, record]).await?;
                        Err(e)
                    }
                    other => other,
                }
            }
            (Decision::Allow | Decision::BreakGlass { .. }, Plan::Admin { admin: Admin::Alert(op), .. }) => {
                // The alert's records say what was done; a refusal after the
                // policy (no such alert, a stale button) is recorded as any
                // refused request is.
                match self.run_alert(actor, roles, parsed, op, reply).await {
                    Err(e @ (Error::Invalid(_) | Error::Denied(_))) => {
                        let record = decided(Verdict::Denied, e.user_message());
                        self.audit.append_all(vec![request_record, record]).await?;
                        Err(e)
                    }
                    other => other,
                }
            }
            (Decision::Allow | Decision::BreakGlass { .. }, Plan::Admin { id, admin }) => {
                let record = decided(Verdict::Allowed, String::new());
                self.audit.append_all(vec![request_record, record]).await?;
                self.run_admin(actor, parsed, id.as_deref().unwrap_or_default(), admin, reply).await
            }
            (Decision::Allow | Decision::BreakGlass { .. }, Plan::Read(read)) => {
                // An allowed read is one record carrying its decision.
                self.metrics.request(actor.platform(), &parsed.command, Verdict::Allowed.name());
                self.audit.append(request_record.outcome(Verdict::Allowed)).await?;
                self.run_read(read, reply).await
            }
        }
    }

    /// Says that a request waits for approval, and shows its card.
    async fn announce_pending(&self, pending: &crate::approval::PendingRequest, actor: &Actor, reply: &ReplyTarget) {
        let view = votes::view(pending, 0);
        let groups = pending.approver_groups.join(", ");
        let waits_for = match (&pending.required, pending.approvals_needed) {
            (Some(r), 0) => format!("{}'s approval ({})", r.approver, r.because),
            (Some(r), n) => format!("{n} approval(s) from {groups} and {}'s ({})", r.approver, r.because),
            (None, n) => format!("{n} approval(s) from {groups}"),
        };
        self.say(
            reply,
            Reply::Text(format!(
                "{} requested by {actor} — {} is waiting for {waits_for}",
                pending.request.describe(),
                pending.id
            )),
        )
        .await;
        self.say(reply, Reply::Approval(view)).await;
    }

    /// Limits the configuration sets per service, checked before anything is
    /// asked or recorded. Every `/scale` reaches an executor through here; a
    /// runbook's scale steps are held to the same bounds when it is planned
    /// (`runbook_plan`).
    fn check_bounds(&self, parsed: &ParsedCommand) -> Result<()> {
        if let Request::Scale { service, replicas } = &parsed.request {
            let Some(s) = self.config.services.get(service) else {
                return Err(Error::Invalid(format!("{service} is not a configured service")));
            };
            if *replicas < s.min_replicas || *replicas > s.max_replicas {
                return Err(Error::Invalid(format!(
                    "{service} allows {} to {} replicas; {replicas} is outside that",
                    s.min_replicas, s.max_replicas
                )));
            }
        }
        Ok(())
    }

    /// A read the policy allowed.
    async fn run_read(&self, read: Read<'_>, reply: &ReplyTarget) -> Result<()> {
        let text = match read {
            Read::Status { service } => {
                let Some(service) = self.config.services.get(service) else {
                    return Err(Error::Invalid(format!("{service} is not a configured service")));
                };
                self.status_text(service).await?
            }
            Read::Audit { service, limit } => self.audit_text(service, limit.unwrap_or(10) as usize)?,
            Read::Help { command } => self.registry.render_help(command),
            Read::Incident(op) => self.incident_read(op, reply).await?,
            Read::Runbooks => self.runbook_list_text(),
            Read::NoisyAlerts { period } => self.noisy_alerts_text(period).await?,
            Read::Report { service, period } => return self.report_reply(service, period, reply).await,
        };
        self.say(reply, Reply::Text(text)).await;
        Ok(())
    }

    /// A `/lock` or `/unlock` the policy allowed.
    async fn run_admin(
        &self,
        actor: &Actor,
        parsed: &ParsedCommand,
        id: &str,
        admin: Admin<'_>,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let now = self.clock.now();
        let (verdict, text) = match admin {
            Admin::Incident(_) | Admin::Abort { .. } | Admin::Alert(_) => {
                return Err(Error::Invalid("only /lock and /unlock are answered here".into()))
            }
            Admin::Lock { service, reason, ttl } => {
                let ttl = ttl.unwrap_or(self.config.lock_ttl);
                let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
                self.store.set_hold(service, &Hold { by: actor.clone(), reason: reason.to_string(), until })?;
                let until = until.format("%Y-%m-%d %H:%M UTC");
                (Verdict::Locked, format!("🔒 {service} locked by {actor} until {until}: {}", reply::typed(reason)))
            }
            Admin::Unlock { service } => {
                let text = match self.store.remove_hold(service)? {
                    Some(hold) => format!(
                        "🔓 {service} unlocked by {actor} (was locked by {}: {})",
                        hold.by,
                        reply::typed(&hold.reason)
                    ),
                    None => format!("{service} was not locked"),
                };
                (Verdict::Unlocked, text)
            }
        };
        let record = self.entry(RecordKind::Lock, Some(id), actor, parsed, reply).outcome(verdict).detail(&text);
        self.audit.append(record).await?;
        self.say(reply, Reply::Text(text)).await;
        Ok(())
    }

    /// Expires due requests; called periodically by the app and before votes.
    pub async fn tick(self: &Arc<Self>) {
        if let Err(e) = self.expire_due().await {
            tracing::error!(error = %e, "expiring requests failed");
        }
        if let Err(e) = self.store.sweep_dedup(self.clock.now()) {
            tracing::warn!(error = %e, "sweeping dedup keys failed");
        }
    }

    /// Stops taking work and waits up to `grace` for running actions; whatever
    /// is still running then is recorded as interrupted. Flushes the store.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.tracker.close();
        self.stop_runs();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!("actions still running after the grace period; recording them as interrupted");
            self.record_interrupted("opsbot shut down before it finished", false).await;
        }
        self.stopped.store(true, std::sync::atomic::Ordering::Release);
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Waits until no action is running (the console's `/wait`).
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// At start: a run lock left behind means an action was running when the
    /// process died. Record that, and free the service.
    pub async fn recover(self: &Arc<Self>) {
        self.record_interrupted("opsbot stopped while this was running (crash or kill); check the service", true).await;
        self.reconcile_incident();
    }
}
