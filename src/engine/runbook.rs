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
        // The steps first, to learn what they name; then the plan again
        // with those configuration entries in its digest.
        let draft = runbook.plan(params, &known, &serde_json::Value::Null).map_err(refuse)?;
        let mut problems = Vec::new();
        for step in &draft.steps {
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
        let targets = self.runbook_targets(&draft);
        let plan = runbook.plan(params, &known, &targets).map_err(refuse)?;
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

    /// `/runbook list`.
    pub(super) fn runbook_list_text(&self) -> String {
        let mut runbooks = self.registry.runbooks().peekable();
        if runbooks.peek().is_none() {
            return "No runbooks are configured (`[bot] runbooks_dir`; see docs/runbooks.md).".into();
        }
        let mut out = String::from("Runbooks (`/runbook run <name> [name=value]… [--dry-run]`):");
        for runbook in runbooks {
            out.push_str(&format!("\n• {} ({}) — {}", runbook.name, runbook.environment, runbook.summary));
            for p in &runbook.params {
                out.push_str(&format!("\n    {}", p.describe()));
            }
            let steps: Vec<&str> = runbook.steps.iter().map(Step::kind).collect();
            out.push_str(&format!("\n    steps: {}", steps.join(" → ")));
        }
        out
    }

    /// What step `index` (from 0) of `plan` will do, in one or more lines.
    fn describe_step(&self, plan: &Plan, index: usize, id: &str, requester: &Actor) -> String {
        let n = plan.steps.len();
        let head = format!("{}/{n}", index + 1);
        match &plan.steps[index] {
            step @ (Step::Restart { service } | Step::Rollback { service } | Step::Scale { service, .. }) => {
                let label = self
                    .config
                    .services
                    .get(service)
                    .and_then(|s| self.executors.for_service(s).label())
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default();
                let what = match step {
                    Step::Scale { replicas, .. } => format!("scale {service} to {replicas} replicas"),
                    Step::Rollback { .. } => format!("rollback {service} to the previous revision"),
                    _ => format!("restart {service}"),
                };
                format!("{head} {what}{label}")
            }
            Step::WaitHealthy { service, timeout } => {
                format!("{head} wait until {service} is healthy (at most {timeout})")
            }
            step @ Step::Sql { target, params, read_only, max_rows, timeout, .. } => {
                let statement = statement(step, &plan.values).expect("an sql step");
                let values: Vec<String> = statement
                    .params
                    .iter()
                    .zip(params)
                    .enumerate()
                    .map(|(i, (v, name))| format!("${} = {} ({name})", i + 1, v.shown()))
                    .collect();
                let simulated =
                    if self.config.databases.get(target).is_some_and(|d| d.simulated) { " [simulated]" } else { "" };
                format!(
                    "{head} sql on database {target}{simulated}{}, at most {max_rows} row(s), timeout {timeout}:\n    {}\n    with {}",
                    if *read_only { " (read-only)" } else { "" },
                    statement.text,
                    if values.is_empty() { "no parameters".to_string() } else { values.join(", ") }
                )
            }
            Step::Http { target, body } => {
                let configured = self.config.http.get(target);
                let (method, url) =
                    configured.map(|t| (t.method.as_str(), t.url.as_str())).unwrap_or(("POST", "(not configured)"));
                let key = configured
                    .and_then(|t| t.api_key_env.as_ref().zip(t.api_key_header.as_ref()))
                    .map(|(var, header)| format!(", {header} from ${var}"))
                    .unwrap_or_default();
                let simulated = if configured.is_some_and(|t| t.simulated) { " [simulated]" } else { "" };
                let body = body.as_ref().map(|b| toml_to_json(b).to_string()).unwrap_or_else(|| "no body".into());
                format!("{head} http {target}{simulated}: {method} {url}{key}\n    body {body}")
            }
            Step::K8sJob { template, env } => match self.config.jobs.get(template) {
                Some(t) => {
                    let name = crate::action::kubernetes::job_name(template, id, index + 1);
                    let spec = crate::action::kubernetes::job_spec(&name, t, env, id, requester.as_str());
                    let simulated = if t.simulated { " [simulated]" } else { "" };
                    format!(
                        "{head} k8s_job {template}{simulated}: Job {}/{name}, image {}, command {:?}, env {:?}, deadline {}, no retries\n    {}",
                        t.namespace,
                        t.image,
                        t.command,
                        env,
                        crate::clock::format_duration(t.deadline),
                        spec
                    )
                }
                None => format!("{head} k8s_job {template} (not configured)"),
            },
        }
    }

    /// Every step as it would run, with each SQL step's read-only preview
    /// run now (the rows it would touch). Changes nothing.
    pub(super) async fn plan_text(&self, runbook: &Runbook, plan: &Plan, id: &str, requester: &Actor) -> String {
        let gated: Vec<String> =
            plan.gated.iter().enumerate().filter(|(_, g)| **g).map(|(i, _)| (i + 1).to_string()).collect();
        let approval = if gated.is_empty() {
            "no step needs approval".to_string()
        } else {
            format!("approval covers step(s) {}", gated.join(", "))
        };
        let mut out =
            format!("runbook {} in {} — plan {}, {approval}:", runbook.name, runbook.environment, plan.short_digest());
        for index in 0..plan.steps.len() {
            out.push('\n');
            out.push_str(&self.describe_step(plan, index, id, requester));
            let step = &plan.steps[index];
            let Step::Sql { target, preview, read_only, .. } = step else { continue };
            if preview.is_none() && !read_only {
                continue;
            }
            let Some(database) = self.config.databases.get(target) else { continue };
            if database.simulated {
                out.push_str("\n    preview: [simulated] no database to ask");
                continue;
            }
            let statement = statement(step, &plan.values).expect("an sql step");
            let found = match database.url(target) {
                Ok(url) => crate::action::sql::preview(&url, &statement).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match found {
                Ok(rows) => out.push_str(&format!(
                    "\n    preview: {} row(s) would be touched{}",
                    rows.rows,
                    rows_text(&rows, 10)
                )),
                Err(e) => out.push_str(&format!("\n    preview failed: {e}")),
            }
        }
        out
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

    /// Takes the run locks (the runbook's, then each service's it touches,
    /// in name order), makes the intent durable, announces, and runs the
    /// steps in a tracked task. Anything busy refuses the whole run.
    pub(super) async fn start_runbook(self: &Arc<Self>, start: RunbookStart<'_>) -> Result<()> {
        let RunbookStart { id, requester, parsed, runbook, plan, reply, approved_by, break_glass, announce } = start;
        let run = Run { id: Some(id), requester, parsed, reply, runbook: &runbook, plan: &plan };
        let now = self.clock.now();
        // The locks outlive the longest the run may take: every step's budget.
        let budget: Duration = plan.steps.iter().map(|s| self.step_budget(s)).sum();
        let until = now
            + chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::hours(1))
            + chrono::Duration::minutes(1);
        let mut keys = vec![format!("{LOCK_PREFIX}{}", runbook.name)];
        let mut touched: Vec<String> = plan.steps.iter().filter_map(Step::service).map(str::to_string).collect();
        touched.sort();
        touched.dedup();
        keys.extend(touched.iter().cloned());
        let mut held = Vec::new();
        for key in &keys {
            let lock = RunLock { request_id: id.to_string(), holder: requester.to_string(), until };
            match self.store.acquire_run_lock(key, lock, now) {
                Ok(Ok(())) => held.push(key.clone()),
                Ok(Err(busy)) => {
                    self.release_held(&held, id);
                    let what = key.strip_prefix(LOCK_PREFIX).map(|r| format!("runbook {r}")).unwrap_or(key.clone());
                    let busy = Error::Busy { service: what, request_id: busy.request_id, holder: busy.holder };
                    let record = self
                        .run_entry(&run, RecordKind::Outcome)
                        .outcome(Verdict::Refused)
                        .detail(format!("did not run: {busy}"));
                    self.audit.append(AuditEntry { args: None, ..record }).await?;
                    if !approved_by.is_empty() {
                        let text =
                            format!("{id} was approved but did not run: {busy}; request it again when it is free");
                        self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text })
                            .await;
                    }
                    return Err(busy);
                }
                Err(e) => {
                    self.release_held(&held, id);
                    return Err(e.into());
                }
            }
        }
        let (loud, approvals) = super::start_notes(requester, break_glass.as_deref(), &approved_by);
        let started = format!(
            "{loud}▶ {id}: runbook {} started, {} step(s), plan {} (requested by {requester}{approvals})",
            runbook.name,
            plan.steps.len(),
            plan.short_digest()
        );
        let intent = AuditEntry { args: serde_json::to_value(&plan).ok(), ..self.run_entry(&run, RecordKind::Intent) }
            .outcome(if break_glass.is_some() { Verdict::BreakGlass } else { Verdict::Started })
            .detail(&started);
        if let Err(e) = self.audit.append(intent).await {
            self.release_held(&held, id);
            if !approved_by.is_empty() {
                tracing::error!(error = %e, request = %id, "an approved run's start was not recorded; it did not run");
                let text = format!("{id} was approved but did not run: the audit trail could not record its start; opsbot needs attention (see its log)");
                self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text }).await;
            }
            return Err(e.into());
        }
        let running = Running { environment: runbook.environment.clone(), aborted_by: None, stopping: false };
        self.running.lock().expect("running runs").insert(id.to_string(), running);
        if let Err(panic) = self.announce_start(reply, id, announce, started).await {
            // A bug while announcing (in a chat adapter, say): no step ran
            // and none will. The run gets its outcome now and everything it
            // holds is freed, then the panic goes on to the request's handler.
            tracing::error!(request = %id, panic = %crate::tasks::panic_text(&panic), "announcing a run's start panicked; it did not run");
            self.running.lock().expect("running runs").remove(id);
            let record =
                AuditEntry { args: Some(run_marker(&runbook.name)), ..self.run_entry(&run, RecordKind::Outcome) }
                    .outcome(Verdict::Refused)
                    .detail("did not run: opsbot hit an internal error announcing its start (a bug; see its log)");
            let release = self.release_all(&held, id, &[], Verdict::Refused);
            if let Err(e) = self.audit.commit(vec![record], Some(release)).await {
                tracing::error!(error = %e, request = %id, "the outcome of an unannounced run was not recorded");
                self.release_held(&held, id);
            }
            std::panic::resume_unwind(panic);
        }
        let engine = self.clone();
        let (id, requester, parsed, reply) = (id.to_string(), requester.clone(), parsed.clone(), reply.clone());
        self.tracker.spawn(async move {
            let run = Run {
                id: Some(&id),
                requester: &requester,
                parsed: &parsed,
                reply: &reply,
                runbook: &runbook,
                plan: &plan,
            };
            let recorded = AtomicBool::new(false);
            let steps = engine.clone().run_steps(&run, &held, &recorded);
            if let Err(panic) = std::panic::AssertUnwindSafe(steps).catch_unwind().await {
                // A bug: the run's end is unknown. Recorded so, every lock
                // freed — unless its outcome is recorded already (the panic
                // came while telling it): a second would contradict it.
                let what = format!("running {id} panicked: {}", crate::tasks::panic_text(&panic));
                tracing::error!(request = %id, "{what}");
                engine.health.mark_dead(what);
                engine.running.lock().expect("running runs").remove(&id);
                if recorded.load(Ordering::Acquire) {
                    return;
                }
                let record =
                    AuditEntry { args: Some(run_marker(&runbook.name)), ..engine.run_entry(&run, RecordKind::Outcome) }
                        .outcome(Verdict::Unknown)
                        .detail(
                            "unknown: opsbot hit an internal error while running this; check every service it touches",
                        );
                let release = engine.release_all(&held, &id, &plan.changed_services(), Verdict::Unknown);
                if let Err(e) = engine.audit.commit(vec![record], Some(release)).await {
                    tracing::error!(error = %e, request = %id, "the outcome of a panicked run was not recorded");
                    engine.release_held(&held, &id);
                }
            }
        });
        Ok(())
    }

    /// Frees every lock a run holds, noting each service it changed as
    /// changed by it (so a `--of` rollback of an older deploy is refused).
    /// The runbook's own lock goes last: while it is held, recovery finds
    /// the run and frees whatever else it still holds.
    fn release_all(&self, keys: &[String], id: &str, changed: &[String], verdict: Verdict) -> crate::audit::Effect {
        let releases: Vec<crate::audit::Effect> = keys
            .iter()
            .rev()
            .map(|key| {
                if changed.contains(key) {
                    self.release_noting(key, id, "runbook", verdict)
                } else {
                    self.store.run_lock_release(key, id)
                }
            })
            .collect();
        Box::new(move || {
            let mut first_error = None;
            for release in releases {
                if let Err(e) = release() {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    /// The steps, in order: each one's intent recorded, run, its outcome
    /// recorded; the first that does not succeed (or an abort) stops the run.
    async fn run_steps(self: Arc<Self>, run: &Run<'_>, held: &[String], recorded: &AtomicBool) {
        let Run { requester, reply, runbook, plan, .. } = *run;
        let id = run.id.unwrap_or_default();
        let n = plan.steps.len();
        let mut ran: Vec<String> = Vec::new();
        // The services of the change steps that started: what the run may
        // have changed (noted so a `--of` rollback of an older deploy is refused).
        let mut started_changes: Vec<String> = Vec::new();
        // How the run stopped early, and the first step that did not run.
        let mut end: Option<(Verdict, String, usize)> = None;
        for index in 0..n {
            let step = &plan.steps[index];
            let stop = self.running.lock().expect("running runs").get(id).and_then(|r| match &r.aborted_by {
                Some(by) => Some((Verdict::Aborted, format!("aborted by {by} before step {}/{n}", index + 1))),
                None if r.stopping => Some((
                    Verdict::Interrupted,
                    format!("opsbot shut down before step {}/{n}; nothing is run again by itself", index + 1),
                )),
                None => None,
            });
            if let Some((verdict, why)) = stop {
                end = Some((verdict, why, index));
                break;
            }
            let what = self.describe_step(plan, index, id, requester);
            let headline = step_headline(plan, index);
            // A step's records carry its kind as their command and its
            // service (the run's first for sql, http and Jobs). A change to
            // a service ends in an outcome of that service, with the live
            // state read back, as a /restart's does; other steps in a step record.
            let step_entry = |kind: RecordKind, verdict: Verdict, detail: String| {
                AuditEntry {
                    args: None,
                    command: Some(step.kind().to_string()),
                    service: step.service().map(str::to_string).or_else(|| plan.primary_service()),
                    ..self.run_entry(run, kind)
                }
                .outcome(verdict)
                .detail(detail)
            };
            if let Err(e) =
                self.audit.append(step_entry(RecordKind::Step, Verdict::Started, format!("step {what}"))).await
            {
                // No intent, no step.
                tracing::error!(error = %e, request = %id, "a step's intent was not recorded; stopping the run");
                let why = format!("step {headline} did not start: the audit trail could not record it");
                end = Some((Verdict::Failed, why, index));
                break;
            }
            if let Some(service) = step.changes_service() {
                started_changes.push(service.to_string());
            }
            self.say(reply, Reply::Progress { request_id: id.to_string(), text: format!("▶ step {headline}") }).await;
            let budget = self.step_budget(step);
            let result = match tokio::time::timeout(budget, self.run_step(run, index)).await {
                Ok(result) => result,
                Err(_) => Err(ActionError::Unknown(format!(
                    "no outcome within {}; it may have acted, and may still be acting",
                    crate::clock::format_duration(budget)
                ))),
            };
            let (verdict, text, live) = match result {
                Ok(done) => (Verdict::Succeeded, done.summary, done.live),
                Err(ActionError::Unknown(text)) => (Verdict::Unknown, format!("unknown: {text}"), None),
                Err(e) => (Verdict::Failed, e.to_string(), None),
            };
            let detail = format!("step {headline}: {text}");
            let kind = if step.changes_service().is_some() { RecordKind::Outcome } else { RecordKind::Step };
            let record = AuditEntry { live, ..step_entry(kind, verdict, detail.clone()) };
            if let Err(e) = self.audit.append(record).await {
                // Not recorded, not told: the run stops, its end unknown.
                tracing::error!(error = %e, request = %id, "a step's outcome was not recorded; stopping the run");
                let why = format!("step {headline} ended, but the audit trail could not record how");
                end = Some((Verdict::Unknown, why, index + 1));
                break;
            }
            let mark = match verdict {
                Verdict::Succeeded => "✔",
                Verdict::Unknown => "❔",
                _ => "✖",
            };
            self.say(reply, Reply::Progress { request_id: id.to_string(), text: format!("{mark} {detail}") }).await;
            if verdict == Verdict::Succeeded {
                ran.push(headline);
            } else {
                end = Some((verdict, format!("step {headline} {}: {text}", verdict.name()), index + 1));
                break;
            }
        }
        let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join("; ") };
        let (verdict, text) = match end {
            None => (
                Verdict::Succeeded,
                format!("runbook {} done: all {n} step(s) succeeded ({})", runbook.name, list(ran)),
            ),
            Some((verdict, why, first_not_run)) => {
                let not_run = (first_not_run..n).map(|i| step_headline(plan, i)).collect();
                // Where things stand: what the steps that ran (and the one
                // that stopped the run) acted on.
                let mut acted: Vec<&str> = plan.steps[..first_not_run.min(n)].iter().map(Step::target).collect();
                acted.dedup();
                let check = if acted.is_empty() {
                    "No step ran; nothing was changed.".to_string()
                } else {
                    format!("Check {} before going on.", acted.join(", "))
                };
                let text = format!(
                    "runbook {} stopped — {why}. Ran: {}. Not run: {}. {check}",
                    runbook.name,
                    list(ran),
                    list(not_run)
                );
                (verdict, text)
            }
        };
        self.metrics.action(verdict.name());
        let record = AuditEntry { args: Some(run_marker(&runbook.name)), ..self.run_entry(run, RecordKind::Outcome) }
            .outcome(verdict)
            .detail(&text);
        let release = self.release_all(held, id, &started_changes, verdict);
        let committed = self.audit.commit(vec![record], Some(release)).await;
        recorded.store(committed.is_ok(), Ordering::Release);
        self.running.lock().expect("running runs").remove(id);
        match committed {
            Ok(_) => self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict, text }).await,
            Err(e) => {
                tracing::error!(error = %e, request = %id, "a run's outcome was not recorded");
                self.release_held(held, id);
                let text = "finished, but opsbot could not record the outcome; check what it touches".to_string();
                self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Unknown, text }).await;
            }
        }
        started_changes.sort();
        started_changes.dedup();
        for service in started_changes {
            self.refresh_summaries(&service).await;
        }
    }

    /// At shutdown: no running run starts another step (the one running
    /// may finish within the grace period).
    pub(super) fn stop_runs(&self) {
        for run in self.running.lock().expect("running runs").values_mut() {
            run.stopping = true;
        }
    }

    /// How long a step may take before its outcome is unknown: its own
    /// limit, and a margin for the calls around it.
    fn step_budget(&self, step: &Step) -> Duration {
        let margin = Duration::from_secs(30);
        let parse =
            |text: &str, default: u64| crate::clock::parse_duration(text).unwrap_or(Duration::from_secs(default));
        match step {
            // The engine's own cut-off for an action applies inside.
            Step::Restart { .. } | Step::Rollback { .. } | Step::Scale { .. } => self.config.action_timeout + margin,
            Step::WaitHealthy { timeout, .. } => parse(timeout, 300) + margin,
            // Connect, preview, statement, commit.
            Step::Sql { timeout, .. } => parse(timeout, 30) * 2 + margin,
            Step::Http { target, .. } => {
                self.config.http.get(target).map(|t| t.timeout).unwrap_or(Duration::from_secs(10)) + margin
            }
            Step::K8sJob { template, .. } => {
                self.config.jobs.get(template).map(|t| t.deadline).unwrap_or(Duration::from_secs(600))
                    + crate::action::kubernetes::JOB_GRACE
                    + margin
            }
        }
    }

    /// Frees every lock in `held` now (when the commit that would have
    /// freed them failed).
    fn release_held(&self, held: &[String], id: &str) {
        for key in held.iter().rev() {
            let _ = self.store.release_run_lock(key, id);
        }
    }

    /// Runs one step; the text says what it did.
    async fn run_step(&self, run: &Run<'_>, index: usize) -> std::result::Result<crate::action::Outcome, ActionError> {
        let Run { requester, parsed, reply, plan, .. } = *run;
        let id = run.id.unwrap_or_default();
        let step = &plan.steps[index];
        match step {
            Step::Restart { service } | Step::Rollback { service } | Step::Scale { service, .. } => {
                let service = self
                    .config
                    .services
                    .get(service)
                    .ok_or_else(|| ActionError::NotFound { service: service.clone() })?;
                let action = step_action(step).ok_or_else(|| ActionError::Failed("not a number of replicas".into()))?;
                let outcome = self.execute_recorded(id, requester, parsed, reply, service, &action).await?;
                Ok(outcome)
            }
            Step::WaitHealthy { service, timeout } => {
                let service = self
                    .config
                    .services
                    .get(service)
                    .ok_or_else(|| ActionError::NotFound { service: service.clone() })?;
                let limit = crate::clock::parse_duration(timeout).unwrap_or(Duration::from_secs(300));
                self.wait_healthy(service, limit).await.map(Outcome::new)
            }
            Step::Sql { target, .. } => {
                let database = self
                    .config
                    .databases
                    .get(target)
                    .ok_or_else(|| ActionError::Failed(format!("database `{target}` is not configured")))?;
                let statement = statement(step, &plan.values).expect("an sql step");
                if database.simulated {
                    return Ok(Outcome::new(format!("[simulated] would run on {target}: {}", statement.text)));
                }
                let url = database.url(target).map_err(ActionError::Failed)?;
                let done = crate::action::sql::run(&url, &statement).await?;
                Ok(Outcome::new(format!("{} row(s){}", done.rows, rows_text(&done, 10))))
            }
            Step::Http { target, body } => {
                let configured = self
                    .config
                    .http
                    .get(target)
                    .ok_or_else(|| ActionError::Failed(format!("http target `{target}` is not configured")))?;
                let body = body.as_ref().map(toml_to_json);
                if configured.simulated {
                    return Ok(Outcome::new(format!(
                        "[simulated] would {} {} with {}",
                        configured.method,
                        configured.url,
                        body.map(|b| b.to_string()).unwrap_or_default()
                    )));
                }
                crate::action::http::send(target, configured, body.as_ref()).await.map(Outcome::new)
            }
            Step::K8sJob { template, env } => {
                let configured = self
                    .config
                    .jobs
                    .get(template)
                    .ok_or_else(|| ActionError::Failed(format!("job template `{template}` is not configured")))?;
                let name = crate::action::kubernetes::job_name(template, id, index + 1);
                if configured.simulated {
                    return Ok(Outcome::new(format!(
                        "[simulated] would create Job {}/{name} ({:?})",
                        configured.namespace, env
                    )));
                }
                let spec = crate::action::kubernetes::job_spec(&name, configured, env, id, requester.as_str());
                let (progress, mut milestones) = crate::action::Progress::channel(8);
                let recorder = async {
                    // Recorded, then shown, as an action's milestones are.
                    while let Some(text) = milestones.recv().await {
                        let record = AuditEntry {
                            args: None,
                            command: Some(step.kind().to_string()),
                            ..self.run_entry(run, RecordKind::Progress)
                        }
                        .detail(text.clone());
                        match self.audit.append(record).await {
                            Ok(_) => self.say(reply, Reply::Progress { request_id: id.to_string(), text }).await,
                            Err(e) => tracing::error!(error = %e, request = %id, "progress not recorded; not shown"),
                        }
                    }
                };
                let run = async {
                    let result = self.executors.jobs.run_job(spec, configured, &progress).await;
                    drop(progress);
                    result
                };
                let (result, ()) = tokio::join!(run, recorder);
                result.map(Outcome::new)
            }
        }
    }

    /// Polls the service's health URL (when configured) or its backend's
    /// rollout until healthy, or until `limit` has passed.
    async fn wait_healthy(
        &self,
        service: &crate::config::Service,
        limit: Duration,
    ) -> std::result::Result<String, ActionError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last: String;
        loop {
            let seen = match &service.health_url {
                Some(url) => {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .map_err(|e| ActionError::Failed(format!("cannot build an HTTP client: {e}")))?;
                    match client.get(url).send().await {
                        Ok(response) => Ok((
                            response.status().is_success(),
                            format!("{url} answered {}", response.status().as_u16()),
                        )),
                        Err(e) => Ok((false, format!("{url}: {}", e.without_url()))),
                    }
                }
                None => self.executors.for_service(service).healthy(service).await,
            };
            match seen {
                Ok((true, text)) => return Ok(format!("{} is healthy: {text}", service.name)),
                Ok((false, text)) => last = text,
                Err(
                    e @ (ActionError::Failed(_)
                    | ActionError::Forbidden(_)
                    | ActionError::NotFound { .. }
                    | ActionError::WrongBackend { .. }),
                ) => return Err(e),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ActionError::Failed(format!(
                    "{} was not healthy within {}; last seen: {last}",
                    service.name,
                    crate::clock::format_duration(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
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

    /// At start: a run left holding locks was interrupted. One outcome
    /// records it (with what the trail says ran), every lock is freed, and
    /// nothing runs again. Returns the request ids handled so.
    pub(super) async fn record_interrupted_runs(&self, why: &str, locks: &[(String, RunLock)]) -> Vec<String> {
        let mut handled = Vec::new();
        for (key, lock) in locks {
            let Some(name) = key.strip_prefix(LOCK_PREFIX) else { continue };
            let id = lock.request_id.clone();
            let keys: Vec<String> = locks.iter().filter(|(_, l)| l.request_id == id).map(|(k, _)| k.clone()).collect();
            let query = crate::audit::AuditQuery {
                request_id: Some(id.clone()),
                limit: Some(500),
                look_back: Some(crate::audit::LOOK_BACK),
                ..Default::default()
            };
            let intent_query =
                crate::audit::AuditQuery { kind: Some(RecordKind::Intent), limit: Some(1), ..query.clone() };
            let (records, intent) = match (self.audit.read(&query), self.audit.read(&intent_query)) {
                (Ok(records), Ok(intent)) => (records, intent.into_iter().next()),
                (Err(e), _) | (_, Err(e)) => {
                    // Without its records, opsbot cannot tell how it ended:
                    // nothing is written or freed (the locks expire), and it says so.
                    tracing::error!(error = %e, request = %id, runbook = %name, "cannot read an unfinished run's records; its locks are left to expire");
                    handled.push(id);
                    continue;
                }
            };
            // What it may have changed: the services of the change steps
            // that started.
            let mut changed: Vec<String> = records
                .iter()
                .filter(|r| r.entry.kind == RecordKind::Step && r.entry.outcome == Some(Verdict::Started))
                .filter(|r| matches!(r.entry.command.as_deref(), Some("restart" | "scale" | "rollback")))
                .filter_map(|r| r.entry.service.clone())
                .collect();
            changed.sort();
            changed.dedup();
            let finished = records.iter().find(|r| is_run_outcome(r)).and_then(|r| r.entry.outcome);
            let release = self.release_all(&keys, &id, &changed, finished.unwrap_or(Verdict::Interrupted));
            let entries = if finished.is_some() {
                Vec::new()
            } else {
                // A step's records: its intent (a step record, started),
                // then how it ended (a step record, or an outcome for a
                // change to a service).
                let of_steps: Vec<_> = records
                    .iter()
                    .filter(|r| {
                        r.entry.kind == RecordKind::Step || (r.entry.kind == RecordKind::Outcome && !is_run_outcome(r))
                    })
                    .collect();
                let ended: Vec<String> = of_steps
                    .iter()
                    .filter(|r| r.entry.outcome != Some(Verdict::Started))
                    .map(|r| r.entry.detail.clone())
                    .collect();
                let running = of_steps
                    .last()
                    .filter(|r| r.entry.outcome == Some(Verdict::Started))
                    .map(|r| format!(" It was in the middle of: {}; check it.", r.entry.detail))
                    .unwrap_or_default();
                let base = intent.map(|r| r.entry).unwrap_or_else(|| AuditEntry {
                    actor: Some(lock.holder.clone()),
                    ..AuditEntry::new(RecordKind::Outcome)
                });
                vec![AuditEntry {
                    kind: RecordKind::Outcome,
                    service: None,
                    request_id: Some(id.clone()),
                    args: Some(run_marker(name)),
                    live: None,
                    ..base
                }
                .outcome(Verdict::Interrupted)
                .detail(format!(
                    "runbook {name}: {why}. Steps that ended: {}.{running} Nothing is run again by itself.",
                    if ended.is_empty() { "none".to_string() } else { ended.join("; ") }
                ))]
            };
            match self.audit.commit(entries, Some(release)).await {
                Ok(_) => {
                    tracing::warn!(request = %id, runbook = %name, "an interrupted runbook run was recorded and its locks freed")
                }
                Err(e) => tracing::error!(error = %e, request = %id, "cannot record an interrupted runbook run"),
            }
            handled.push(id);
        }
        handled
    }
}
