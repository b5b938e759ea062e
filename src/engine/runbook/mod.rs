//! Runbooks: `/runbook list`, dry runs, and running one's steps in order.
//!
//! A run is one request (`r-N`) decided by the `runbook` rule of the
//! runbook's environment, checked against every service it changes (their
//! channels and `/lock`s). Approval binds to the plan's digest (runbook,
//! values, resolved steps and the configuration entries they name), checked
//! again before it runs. Running takes the run lock of every service it
//! touches and of the runbook itself; each step's intent and outcome are in
//! the trail before and after it runs; the first step that does not succeed
//! stops the run; the outcome says what ran, what did not and where things
//! stand. A crash mid-run is recorded as interrupted at the next start, with
//! every lock freed and nothing run again.
//!
//! - `mod.rs`: planning, deciding, asking for approval, aborts;
//! - `run.rs`: running the steps (locks, records, budgets), recovery;
//! - `text.rs`: what a step or a plan says (dry runs, cards, `/runbook list`).

mod run;
mod text;

use super::Engine;
use crate::action::sql::{SqlValue, Statement};
use crate::action::{Action, ActionError, Outcome};
use crate::approval::{self, PendingRequest};
use crate::audit::{AuditEntry, RecordKind, Verdict};
use crate::command::ParsedCommand;
use crate::engine::reply::Reply;
use crate::error::{Error, Result};
use crate::event::{Actor, ReplyTarget};
use crate::policy::{self, Decision, Subject};
use crate::runbook::{KnownOwned, Plan, Runbook, Step, Value};
use crate::store::RunLock;
use futures_util::FutureExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A run as its records name it: the request, who asked and where, the plan.
#[derive(Clone, Copy)]
struct Run<'a> {
    /// `r-N`; none for a dry run.
    id: Option<&'a str>,
    requester: &'a Actor,
    parsed: &'a ParsedCommand,
    reply: &'a ReplyTarget,
    runbook: &'a Runbook,
    plan: &'a Plan,
}

/// A run under way, as `/runbook abort` finds it.
pub(super) struct Running {
    /// The runbook's environment, whose `runbook-abort` rule decides.
    environment: String,
    /// Who asked to abort it, once someone did.
    aborted_by: Option<Actor>,
    /// Set when opsbot shuts down: no further step starts.
    stopping: bool,
}

/// The key of the `args` that mark a run's own outcome (its steps' carry
/// none), naming the runbook it ran.
const RUN_OF: &str = "runbook_run_of";

fn run_marker(name: &str) -> serde_json::Value {
    serde_json::json!({ RUN_OF: name })
}

/// Whether `record` is a run's own outcome, not one of its steps'.
fn is_run_outcome(record: &crate::audit::AuditRecord) -> bool {
    record.entry.kind == RecordKind::Outcome && record.entry.args.as_ref().is_some_and(|a| a.get(RUN_OF).is_some())
}

/// The run lock a runbook holds on itself (one run of it at a time).
const LOCK_PREFIX: &str = "runbook:";

/// Everything [`Engine::start_runbook`] needs.
pub(super) struct RunbookStart<'a> {
    pub id: &'a str,
    pub requester: &'a Actor,
    pub parsed: &'a ParsedCommand,
    pub runbook: Arc<Runbook>,
    pub plan: Plan,
    pub reply: &'a ReplyTarget,
    pub approved_by: Vec<Actor>,
    pub break_glass: Option<String>,
    pub announce: Option<String>,
}

/// A step in a few words: `2/3 restart payment-service`, `3/3 sql on main`.
fn step_headline(plan: &Plan, index: usize) -> String {
    let head = format!("{}/{}", index + 1, plan.steps.len());
    match &plan.steps[index] {
        Step::Restart { service } => format!("{head} restart {service}"),
        Step::Rollback { service } => format!("{head} rollback {service}"),
        Step::Scale { service, replicas } => format!("{head} scale {service} to {replicas}"),
        Step::WaitHealthy { service, .. } => format!("{head} wait until {service} is healthy"),
        Step::Sql { target, .. } => format!("{head} sql on {target}"),
        Step::Http { target, .. } => format!("{head} http {target}"),
        Step::K8sJob { template, .. } => format!("{head} k8s_job {template}"),
    }
}

/// The action a service step runs.
fn step_action(step: &Step) -> Option<Action> {
    match step {
        Step::Restart { .. } => Some(Action::Restart),
        Step::Rollback { .. } => Some(Action::Rollback { revision: None }),
        Step::Scale { replicas, .. } => replicas.parse().ok().map(|replicas| Action::Scale { replicas }),
        _ => None,
    }
}

/// The values an SQL step binds, in `$n` order.
fn bound(params: &[String], values: &BTreeMap<String, Value>) -> Vec<SqlValue> {
    params
        .iter()
        .filter_map(|name| values.get(name))
        .map(|value| match value {
            Value::Text(text) => SqlValue::Text(text.clone()),
            Value::Integer(n) => SqlValue::Integer(*n),
            Value::Duration(d) => SqlValue::Interval(*d),
        })
        .collect()
}

fn statement(step: &Step, values: &BTreeMap<String, Value>) -> Option<Statement> {
    let Step::Sql { statement, preview, params, read_only, max_rows, timeout, .. } = step else { return None };
    Some(Statement {
        text: statement.clone(),
        params: bound(params, values),
        read_only: *read_only,
        max_rows: *max_rows,
        timeout: crate::clock::parse_duration(timeout).unwrap_or(Duration::from_secs(30)),
        preview: preview.clone(),
    })
}

fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Rows as `column=value` lines.
fn rows_text(outcome: &crate::action::sql::SqlOutcome, limit: usize) -> String {
    let mut out = String::new();
    for row in outcome.sample.iter().take(limit) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            // The database's text is shown inert (never a mention or a link).
            .map(|(i, v)| match outcome.columns.get(i) {
                Some(c) => format!("{}={}", super::reply::typed(c), super::reply::typed(v)),
                None => super::reply::typed(v),
            })
            .collect();
        out.push_str(&format!("\n      {}", cells.join(" ")));
    }
    if outcome.rows as usize > limit.min(outcome.sample.len()) {
        out.push_str(&format!("\n      … {} row(s) in all", outcome.rows));
    }
    out
}

impl Engine {
    /// The plan for `/runbook <name> <params>` under the configuration now;
    /// every problem with the values is one clear refusal.
    pub(super) fn runbook_plan(&self, name: &str, params: &BTreeMap<String, String>) -> Result<(Arc<Runbook>, Plan)> {
        let runbook = self
            .registry
            .runbook(name)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("there is no runbook `{name}`; `/runbook list` shows them")))?;
        let owned = KnownOwned::from_config(&self.config);
        let known = owned.known();
        let refuse = |problems: Vec<String>| {
            Error::Invalid(format!(
                "/runbook {name}: {}. Nothing ran; `/runbook list` shows its parameters",
                problems.join("; ")
            ))
        };
        // The steps first, to learn what they name; then the digest, with
        // those configuration entries in it.
        let mut plan = runbook.plan(params, &known, &serde_json::Value::Null).map_err(refuse)?;
        let mut problems = Vec::new();
        for step in &plan.steps {
            if let Some(service) = step.service() {
                match self.config.services.get(service) {
                    Some(s) if s.environment == runbook.environment => {}
                    Some(s) => problems.push(format!(
                        "{service} is in {}, not this runbook's environment {}",
                        s.environment, runbook.environment
                    )),
                    None => problems.push(format!("{service} is not a configured service")),
                }
            }
            // What a step will need when it runs, checked before any runs:
            // a run must not stop half-way for want of a secret.
            match step {
                Step::Sql { target, .. } => {
                    if let Some(Err(e)) =
                        self.config.databases.get(target).filter(|d| !d.simulated).map(|d| d.url(target))
                    {
                        problems.push(e);
                    }
                }
                Step::Http { target, .. } => {
                    let key =
                        self.config.http.get(target).filter(|t| !t.simulated).and_then(|t| t.api_key_env.as_ref());
                    if let Some(var) = key.filter(|var| std::env::var(var).map_or(true, |v| v.is_empty())) {
                        problems.push(format!("http `{target}`: the environment variable {var} is not set"));
                    }
                }
                Step::WaitHealthy { service, .. } => {
                    let ecs = |s: &crate::config::Service| matches!(s.backend, crate::config::Backend::Ecs { .. });
                    if self.config.services.get(service).is_some_and(|s| s.health_url.is_none() && ecs(s)) {
                        problems.push(format!(
                            "wait_healthy on {service}: its backend (ECS) cannot say whether it is healthy; give it a health_url"
                        ));
                    }
                }
                _ => {}
            }
            if let Step::Scale { service, replicas } = step {
                match (replicas.parse::<u32>(), self.config.services.get(service)) {
                    (Ok(n), Some(s)) if n < s.min_replicas || n > s.max_replicas => problems.push(format!(
                        "{service} allows {} to {} replicas; {n} is outside that",
                        s.min_replicas, s.max_replicas
                    )),
                    (Err(_), _) => problems.push(format!("`{replicas}` is not a number of replicas")),
                    _ => {}
                }
            }
        }
        if !problems.is_empty() {
            return Err(refuse(problems));
        }
        let targets = self.runbook_targets(&plan);
        plan.bind(&targets);
        Ok((runbook, plan))
    }

    /// The configuration entries a plan's steps name, as its digest covers them.
    fn runbook_targets(&self, plan: &Plan) -> serde_json::Value {
        let mut targets = serde_json::Map::new();
        for step in &plan.steps {
            let (key, value) = match step {
                Step::Sql { target, .. } => {
                    (format!("databases.{target}"), serde_json::to_value(self.config.databases.get(target)))
                }
                Step::Http { target, .. } => {
                    (format!("http.{target}"), serde_json::to_value(self.config.http.get(target)))
                }
                Step::K8sJob { template, .. } => {
                    (format!("jobs.{template}"), serde_json::to_value(self.config.jobs.get(template)))
                }
                other => match other.service() {
                    Some(service) => (
                        format!("services.{service}"),
                        serde_json::to_value(self.config.services.get(service).map(|s| &s.backend)),
                    ),
                    None => continue,
                },
            };
            targets.insert(key, value.unwrap_or(serde_json::Value::Null));
        }
        serde_json::Value::Object(targets)
    }

    /// The policy's answer for a runbook run: the `runbook` rule of its
    /// environment, and for each service it changes, that service's
    /// channels and `/lock` (the first refusal wins).
    pub(super) fn decide_runbook(
        &self,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        runbook: &Runbook,
        plan: &Plan,
        channel: &str,
    ) -> Result<Decision> {
        let now = self.clock.now();
        let granted = self.config.granted_to(actor, roles);
        // A freeze on `restart` (say) holds a runbook's restart steps too.
        let mut kinds: Vec<&str> =
            plan.steps.iter().filter(|s| s.changes_service().is_some()).map(Step::kind).collect();
        kinds.sort();
        kinds.dedup();
        let services = if parsed.mutates { plan.changed_services() } else { Vec::new() };
        let holds = services
            .iter()
            .map(|name| Ok((self.config.services.get(name), self.store.active_hold(name, now)?)))
            .collect::<Result<Vec<_>>>()?;
        let subject = |service, hold| Subject {
            actor,
            granted: &granted,
            policy: &parsed.policy,
            mutates: parsed.mutates,
            service,
            environment: Some(runbook.environment.as_str()),
            frozen_with: &kinds,
            channel,
            emergency: parsed.emergency.as_deref(),
            hold,
            incident: None,
            now,
        };
        let mut decision = policy::evaluate(&self.config, &subject(None, None));
        // Each service it changes, as a change to it would be: its
        // channels, its `/lock`; the first refusal wins.
        for (service, hold) in &holds {
            if matches!(decision, Decision::Deny(_)) {
                return Ok(decision);
            }
            if let Some(service) = service {
                decision = policy::evaluate(&self.config, &subject(Some(service), hold.as_ref()));
            }
        }
        // Only steps that need approval make a run wait for the rule's —
        // never for a freeze's, which holds whatever the file says.
        match decision {
            Decision::NeedsApproval(ref need)
                if need.freeze.is_none() && need.required.is_none() && !plan.gated.contains(&true) =>
            {
                Ok(Decision::Allow)
            }
            other => Ok(other),
        }
    }

    /// An audit entry about a run (its request, decision, intent, steps, outcome).
    /// The run's own outcome names no service: it is not a change to one
    /// (its steps' records name theirs); an incident's timeline keeps it
    /// with the run's earlier records.
    fn run_entry(&self, run: &Run<'_>, kind: RecordKind) -> AuditEntry {
        AuditEntry {
            service: if kind == RecordKind::Outcome { None } else { run.plan.primary_service() },
            environment: Some(run.runbook.environment.clone()),
            ..self.entry(kind, run.id, run.requester, run.parsed, run.reply)
        }
    }

    /// `/runbook run …` (and `--dry-run`): planned, decided, recorded, then
    /// answered, held for approval or started.
    pub(super) async fn on_runbook(
        self: &Arc<Self>,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        name: &str,
        params: &BTreeMap<String, String>,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let (runbook, plan) = self.runbook_plan(name, params)?;
        let decision = self.decide_runbook(actor, roles, parsed, &runbook, &plan, &reply.channel)?;
        let mut run = Run { id: None, requester: actor, parsed, reply, runbook: &runbook, plan: &plan };
        if !parsed.mutates {
            // A dry run: a read, allowed wherever running it could be asked for.
            let record = self.run_entry(&run, RecordKind::Request);
            if let Decision::Deny(reason) = decision {
                self.metrics.request(actor.platform(), &parsed.command, Verdict::Denied.name());
                self.audit.append(record.outcome(Verdict::Denied).detail(&reason)).await?;
                return Err(Error::Denied(reason));
            }
            self.metrics.request(actor.platform(), &parsed.command, Verdict::Allowed.name());
            self.audit
                .append(record.outcome(Verdict::Allowed).detail(format!("dry run, plan {}", plan.digest)))
                .await?;
            let text = self.plan_text(&runbook, &plan, "dry-run", actor).await;
            self.say(reply, Reply::Text(format!("Dry run — nothing was changed.\n{text}"))).await;
            return Ok(());
        }
        let id = self.store.next_request_id()?;
        run.id = Some(&id);
        let request_record = self.run_entry(&run, RecordKind::Request);
        let roles_note = self.config.roles_note(actor, roles);
        let decided = |verdict: Verdict, detail: String| {
            self.metrics.request(actor.platform(), &parsed.command, verdict.name());
            let detail = match &roles_note {
                Some(note) => format!("{detail}; {note}"),
                None => detail,
            };
            AuditEntry { args: None, ..self.run_entry(&run, RecordKind::Decision) }.outcome(verdict).detail(detail)
        };
        match decision {
            Decision::Deny(reason) => {
                let record = decided(Verdict::Denied, reason.clone());
                self.audit.append_all(vec![request_record, record]).await?;
                Err(Error::Denied(reason))
            }
            Decision::NeedsApproval(need) => {
                let detail = format!(
                    "needs {} approval(s) from {} for plan {}",
                    need.approvals,
                    need.approver_groups.join(", "),
                    plan.digest
                );
                let record = decided(Verdict::Pending, detail);
                let shown = self.plan_text(&runbook, &plan, &id, actor).await;
                let asked = super::votes::Asked { id: &id, actor, roles, parsed, reply };
                let digest = self.run_digest(&id, actor, &runbook, &plan);
                let service = plan.primary_service().unwrap_or_default();
                let pending = self.pending_request(asked, need, &service, &runbook.environment, digest, Some(shown));
                self.store.put_pending(&pending)?;
                self.audit.append_all(vec![request_record, record]).await?;
                self.announce_pending(&pending, actor, reply).await;
                Ok(())
            }
            decision @ (Decision::Allow | Decision::BreakGlass { .. }) => {
                let record = match &decision {
                    Decision::BreakGlass { reason } => {
                        decided(Verdict::BreakGlass, format!("BREAK-GLASS by {actor}: {reason}; plan {}", plan.digest))
                    }
                    _ => decided(Verdict::Allowed, format!("plan {}", plan.digest)),
                };
                self.audit.append_all(vec![request_record, record]).await?;
                let announce = super::runs_now(&parsed.request.describe(), actor, &id, parsed.emergency.as_deref());
                let start = RunbookStart {
                    id: &id,
                    requester: actor,
                    parsed,
                    runbook,
                    plan,
                    reply,
                    approved_by: Vec::new(),
                    break_glass: parsed.emergency.clone(),
                    announce: Some(announce),
                };
                self.start_runbook(start).await
            }
        }
    }

    /// The digest a run's approvals bind to: the request, who asked, and
    /// the plan (its own digest covers the runbook, the values, the
    /// resolved steps and the configuration entries they name).
    pub(super) fn run_digest(&self, id: &str, requester: &Actor, runbook: &Runbook, plan: &Plan) -> String {
        let request = crate::command::Request::Runbook {
            op: crate::command::RunbookOp::Run {
                runbook: runbook.name.clone(),
                params: BTreeMap::new(),
                dry_run: false,
            },
        };
        let target = serde_json::json!({ "plan": plan.digest });
        approval::action_digest(
            id,
            requester,
            &format!("{LOCK_PREFIX}{}", runbook.name),
            &runbook.environment,
            &request,
            &target,
        )
    }

    /// The plan an approved run request stands for now, if it still
    /// matches what was approved.
    pub(super) fn approved_plan(&self, request: &PendingRequest) -> std::result::Result<(Arc<Runbook>, Plan), String> {
        let crate::command::Request::Runbook { op: crate::command::RunbookOp::Run { runbook, params, .. } } =
            &request.request
        else {
            return Err("it is not a runbook run".into());
        };
        let (runbook, plan) = self.runbook_plan(runbook, params).map_err(|e| e.user_message())?;
        if self.run_digest(&request.id, &request.requester, &runbook, &plan) != request.digest {
            return Err("the runbook, its steps or the configuration they name changed since it was requested; approvals do not carry over — request it again".into());
        }
        Ok((runbook, plan))
    }

    /// `/runbook abort r-N`: decided by the `runbook-abort` rule of the
    /// run's environment; the run stops before its next step. Nothing to
    /// abort is refused, recorded without the id (it names no run).
    pub(super) async fn on_abort(
        &self,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        request: &str,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let environment = self.running.lock().expect("running runs").get(request).map(|r| r.environment.clone());
        let records = |id: Option<&str>, verdict: Verdict, reason: String| {
            self.metrics.request(actor.platform(), &parsed.command, verdict.name());
            let record = self.entry(RecordKind::Request, id, actor, parsed, reply);
            let decision = AuditEntry { args: None, ..self.entry(RecordKind::Decision, id, actor, parsed, reply) }
                .outcome(verdict)
                .detail(reason);
            vec![record, decision]
        };
        let Some(environment) = environment else {
            let why = format!("{request} is not a runbook running now; `/audit` shows how it ended");
            self.audit.append_all(records(None, Verdict::Denied, why.clone())).await?;
            return Err(Error::Invalid(why));
        };
        let granted = self.config.granted_to(actor, roles);
        let decision = policy::evaluate(
            &self.config,
            &Subject {
                actor,
                granted: &granted,
                policy: &parsed.policy,
                mutates: false,
                service: None,
                environment: Some(&environment),
                frozen_with: &[],
                channel: &reply.channel,
                emergency: None,
                hold: None,
                incident: None,
                now: self.clock.now(),
            },
        );
        let marked = match decision {
            Decision::Deny(reason) => Err(Error::Denied(reason)),
            Decision::NeedsApproval(_) => Err(Error::Denied(
                "an abort cannot wait for approvals; an admin must fix the rules (`opsbot check` names the rule)"
                    .into(),
            )),
            Decision::Allow | Decision::BreakGlass { .. } => {
                let mut running = self.running.lock().expect("running runs");
                match running.get_mut(request) {
                    Some(Running { aborted_by: Some(by), .. }) => {
                        Err(Error::Invalid(format!("{request} is already being aborted (by {by})")))
                    }
                    Some(run) => {
                        run.aborted_by = Some(actor.clone());
                        Ok(())
                    }
                    None => Err(Error::Invalid(format!("{request} ended meanwhile; `/audit` shows how"))),
                }
            }
        };
        if let Err(e) = marked {
            self.audit.append_all(records(Some(request), Verdict::Denied, e.user_message())).await?;
            return Err(e);
        }
        let text = format!("⏹ {request}: abort asked by {actor}; the step running now finishes, no later step starts");
        self.audit.append_all(records(Some(request), Verdict::Aborted, text.clone())).await?;
        self.say(reply, Reply::Text(text)).await;
        Ok(())
    }
}
