//! Running a mutating action: run lock → durable intent → tracked task that
//! records every milestone before showing it → durable outcome → lock released.

use super::{Engine, Start};
use crate::action::{Action, ActionError, Progress, Verified};
use crate::audit::{AuditEntry, AuditQuery, RecordKind, Verdict, LOOK_BACK};
use crate::command::ParsedCommand;
use crate::engine::reply::Reply;
use crate::error::{Error, Result};
use crate::event::{Actor, ReplyTarget};
use crate::store::RunLock;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The request an action runs for.
struct RunOf {
    id: String,
    requester: Actor,
    parsed: ParsedCommand,
    reply: ReplyTarget,
    service: crate::config::Service,
}

impl Engine {
    /// Starts an allowed (or approved, or break-glass) change: takes the
    /// service's run lock, makes the intent durable, then says so (first
    /// `announce`, if any, then the start message). Returns once the intent
    /// is durable and the start announced; the action runs on. A busy
    /// service is refused, and nothing is said in the channel.
    pub(super) async fn start_action(self: &Arc<Self>, start: Start<'_>) -> Result<()> {
        let Start { id, requester, parsed, service: service_name, action, reply, approved_by, break_glass, announce } =
            start;
        let Some(service) = self.config.services.get(service_name).cloned() else {
            return Err(Error::Invalid(format!("{service_name} is not a configured service")));
        };
        let now = self.clock.now();
        let until = now
            + chrono::Duration::from_std(self.config.action_timeout).unwrap_or(chrono::Duration::minutes(15))
            + chrono::Duration::minutes(1);
        let lock = RunLock { request_id: id.to_string(), holder: requester.to_string(), until };
        if let Err(held) = self.store.acquire_run_lock(service_name, lock, now)? {
            let busy = Error::Busy {
                service: service_name.to_string(),
                request_id: held.request_id.clone(),
                holder: held.holder.clone(),
            };
            let record = self
                .entry(RecordKind::Outcome, Some(id), requester, parsed, reply)
                .outcome(Verdict::Refused)
                .detail(busy.to_string());
            self.audit.append(AuditEntry { args: None, ..record }).await?;
            if !approved_by.is_empty() {
                // An approved request has a card and a thread the channel
                // watches: close them with what happened, not only the voter.
                let text = format!("{id} was approved but did not run: {busy}; request it again when it is free");
                self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text }).await;
            }
            return Err(busy);
        }
        // `/rollback --of r-N`: checked again under the run lock, so nothing
        // changed the service between this check and the rollback. Every
        // way out releases the lock and closes the request in its thread.
        let stale = match self.undo_is_stale(&parsed.request) {
            Ok(stale) => stale,
            Err(e) => Some(format!("opsbot could not read {service_name}'s newest change ({e})")),
        };
        if let Some(stale) = stale {
            return self.refuse_under_lock(id, requester, parsed, reply, service_name, &stale).await;
        }
        // A deploy's incident hold is checked again under the incidents
        // lock, held until the intent is durable: an incident declared
        // between the decision and now holds it (break-glass aside).
        let deploy = matches!(parsed.request, crate::command::Request::Deploy { .. });
        let incident_guard = if deploy && break_glass.is_none() { Some(self.incidents.lock().await) } else { None };
        if incident_guard.is_some() {
            let gate = self.incident_gate(&parsed.request)?;
            let gate =
                gate.as_ref().map(|i| crate::policy::IncidentGate { id: &i.id, severity: i.severity, lead: &i.lead });
            let required = crate::policy::required_by(&self.config, requester, gate, service_name, now);
            let given = |lead: &Actor| approved_by.iter().any(|a| self.config.person(a) == self.config.person(lead));
            if let Some(required) = required.filter(|r| !given(&r.approver)) {
                let why = format!(
                    "{} — it needs {}'s approval, which it does not have; request it again",
                    required.because, required.approver
                );
                return self.refuse_under_lock(id, requester, parsed, reply, service_name, &why).await;
            }
        }
        let (loud, approvals) = super::start_notes(requester, break_glass.as_deref(), &approved_by);
        let label = self.executors.for_service(&service).label().map(|l| format!("{l} ")).unwrap_or_default();
        let started =
            format!("{loud}▶ {id}: {label}{} started (requested by {requester}{approvals})", parsed.request.describe());
        let intent = self
            .entry(RecordKind::Intent, Some(id), requester, parsed, reply)
            .outcome(if break_glass.is_some() { Verdict::BreakGlass } else { Verdict::Started })
            .detail(&started);
        if let Err(e) = self.audit.append(intent).await {
            // No intent record, no action.
            let _ = self.store.release_run_lock(service_name, id);
            if !approved_by.is_empty() {
                // As for a busy service: the card says approved and the
                // channel watches its thread, so close it with the truth.
                // The store's error (paths, OS errors) goes to the log, not the channel.
                tracing::error!(error = %e, request = %id, "an approved request's start was not recorded; it did not run");
                let text = format!(
                    "{id} was approved but did not run: the audit trail could not record its start; opsbot needs attention (see its log)"
                );
                self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text }).await;
            }
            return Err(e.into());
        }
        drop(incident_guard);
        if let Err(panic) = self.announce_start(reply, id, announce, started).await {
            // A bug while announcing the start (in a chat adapter, say):
            // the action has not started and will not, so its intent gets
            // an outcome now and the service is freed, rather than a run
            // left open until the lock expires. Then the panic goes on to
            // the request's handler, which counts it.
            tracing::error!(request = %id, panic = %crate::tasks::panic_text(&panic), "announcing a start panicked; the action did not run");
            let record =
                AuditEntry { args: None, ..self.entry(RecordKind::Outcome, Some(id), requester, parsed, reply) }
                    .outcome(Verdict::Refused)
                    .detail("did not run: opsbot hit an internal error announcing its start (a bug; see its log)");
            let release = self.store.run_lock_release(service_name, id);
            if let Err(e) = self.audit.commit(vec![record], Some(release)).await {
                tracing::error!(error = %e, request = %id, "the outcome of an unannounced start was not recorded");
                let _ = self.store.release_run_lock(service_name, id);
            }
            // Tell the channel (a card may say approved), unless the same
            // bug strikes again.
            let text =
                format!("{id} did not run: opsbot hit an internal error announcing its start (a bug; see its log)");
            let told = AssertUnwindSafe(
                self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text }),
            )
            .catch_unwind()
            .await;
            if told.is_err() {
                tracing::error!(request = %id, "telling the channel that it did not run panicked too");
            }
            std::panic::resume_unwind(panic);
        }

        let engine = self.clone();
        let (id, requester, parsed, reply) = (id.to_string(), requester.clone(), parsed.clone(), reply.clone());
        self.tracker.spawn(async move {
            let recorded = Arc::new(AtomicBool::new(false));
            let run = engine.clone().run_to_completion(
                RunOf {
                    id: id.clone(),
                    requester: requester.clone(),
                    parsed: parsed.clone(),
                    reply: reply.clone(),
                    service: service.clone(),
                },
                action,
                recorded.clone(),
            );
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                // A bug outside the backend (recording, replying): the action's
                // end is unknown; say so, free the service, and go unready.
                let what = format!("running {id} panicked: {}", crate::tasks::panic_text(&panic));
                tracing::error!(request = %id, "{what}");
                engine.health.mark_dead(what);
                if recorded.load(Ordering::Acquire) {
                    // The outcome (and the lock's release) is in the trail
                    // already: the panic came while announcing it. A second
                    // outcome would contradict the first.
                    return;
                }
                let record = AuditEntry {
                    args: None,
                    ..engine.entry(RecordKind::Outcome, Some(&id), &requester, &parsed, &reply)
                }
                .outcome(Verdict::Unknown)
                .detail("unknown: opsbot hit an internal error while running this; check the service's live state");
                let release = engine.release_noting(&service.name, &id, &parsed.command, Verdict::Unknown);
                if let Err(e) = engine.audit.commit(vec![record], Some(release)).await {
                    tracing::error!(error = %e, request = %id, "the outcome of a panicked action was not recorded");
                }
            }
        });
        Ok(())
    }

    /// Says a start: the announcement (if any), then the start message. A
    /// panic while saying it (a bug in an adapter, say) comes back to the
    /// caller, which closes what it opened before passing the panic on.
    pub(super) async fn announce_start(
        &self,
        reply: &ReplyTarget,
        id: &str,
        announce: Option<String>,
        started: String,
    ) -> std::thread::Result<()> {
        AssertUnwindSafe(async {
            if let Some(announce) = announce {
                self.say(reply, Reply::Text(announce)).await;
            }
            self.say(reply, Reply::Started { request_id: id.to_string(), text: started }).await;
        })
        .catch_unwind()
        .await
    }

    /// Runs `action` on `service` for request `id`: each milestone recorded,
    /// then shown; a backend panic or the action timeout is an unknown
    /// outcome (the change may have landed), never a plain failure.
    pub(super) async fn execute_recorded(
        &self,
        id: &str,
        requester: &Actor,
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
        service: &crate::config::Service,
        action: &Action,
    ) -> std::result::Result<crate::action::Outcome, ActionError> {
        let (progress, mut milestones) = Progress::channel(8);
        // Milestones are recorded, then shown, in the same task as the run
        // (the executor's progress sender ends with it, which ends this loop).
        let recorder = async {
            let mut last = None;
            while let Some(text) = milestones.recv().await {
                last = Some(text.clone());
                let record = AuditEntry {
                    args: None,
                    service: Some(service.name.clone()),
                    ..self.entry(RecordKind::Progress, Some(id), requester, parsed, reply)
                }
                .detail(text.clone());
                match self.audit.append(record).await {
                    Ok(_) => self.say(reply, Reply::Progress { request_id: id.to_string(), text }).await,
                    Err(e) => tracing::error!(error = %e, request = %id, "progress not recorded; not shown"),
                }
            }
            last
        };
        let executor = self.executors.for_service(service);
        let run_context = crate::action::RunContext {
            request_id: id.to_string(),
            requester: requester.to_string(),
            history: self.verified_history(&service.name),
            term: self.store.term(),
        };
        let timeout = self.config.action_timeout;
        let run = async {
            // A panic in a backend ends this action, not the bot: it is
            // recorded as unknown (the live state was not read), logged, and
            // makes readiness false, since it is a bug.
            let execute = AssertUnwindSafe(executor.execute(service, action, &run_context, progress)).catch_unwind();
            match tokio::time::timeout(timeout, execute).await {
                Ok(Ok(result)) => Some(result),
                Ok(Err(panic)) => {
                    let what = format!("the {} backend panicked running {id}", action.verb());
                    tracing::error!(request = %id, panic = %crate::tasks::panic_text(&panic), "{what}");
                    self.health.mark_dead(what);
                    Some(Err(ActionError::Unknown(
                        "opsbot hit an internal error while running this (a bug); check the service's live state"
                            .into(),
                    )))
                }
                Err(_) => None,
            }
        };
        let (result, last_seen) = tokio::join!(run, recorder);
        // Cut off, the backend may have applied its change, and a rollout
        // may still be running: that is unknown, never a plain failure.
        result.unwrap_or_else(|| {
            Err(ActionError::Unknown(format!(
                "no outcome within {} (bot.action_timeout); {} may have been changed and may still be changing{}; check it before trying again",
                crate::clock::format_duration(timeout),
                service.name,
                last_seen.map(|text| format!("; last seen: {text}")).unwrap_or_default()
            )))
        })
    }

    async fn run_to_completion(self: Arc<Self>, run: RunOf, action: Action, outcome_recorded: Arc<AtomicBool>) {
        let RunOf { id, requester, parsed, reply, service } = run;
        let result = self.execute_recorded(&id, &requester, &parsed, &reply, &service, &action).await;
        let (verdict, text, live) = match result {
            Ok(outcome) => (Verdict::Succeeded, outcome.summary, outcome.live),
            Err(ActionError::Unknown(text)) => (Verdict::Unknown, format!("unknown: {text}"), None),
            Err(e) => (Verdict::Failed, e.to_string(), None),
        };
        self.metrics.action(verdict.name());
        let record =
            AuditEntry { args: None, live, ..self.entry(RecordKind::Outcome, Some(&id), &requester, &parsed, &reply) }
                .outcome(verdict)
                .detail(text.clone());
        // The lock's release rides on the outcome's commit, written after
        // the outcome and flushed with it: a crash can leave the outcome
        // without the release (recovery then only releases the lock, seeing
        // the outcome), never the release without the outcome. A commit
        // that fails can (the release landed, the open drops the outcome):
        // the next start records that outcome again, as unknown.
        let effect = self.release_noting(&service.name, &id, &parsed.command, verdict);
        let recorded = self.audit.commit(vec![record], Some(effect)).await;
        outcome_recorded.store(recorded.is_ok(), Ordering::Release);
        if recorded.is_err() {
            if let Err(e) = self.store.release_run_lock(&service.name, &id) {
                tracing::error!(error = %e, request = %id, "run lock not released; it expires on its own");
            }
        }
        match recorded {
            Ok(_) => {
                self.say(&reply, Reply::Outcome { request_id: id, verdict, text }).await;
                // An open incident on the service lists its recent changes.
                self.refresh_summaries(&service.name).await;
            }
            Err(e) => {
                tracing::error!(error = %e, request = %id, "outcome not recorded");
                self.say(
                    &reply,
                    Reply::Outcome {
                        request_id: id,
                        verdict: Verdict::Unknown,
                        text: "finished, but opsbot could not record the outcome; check the service".into(),
                    },
                )
                .await;
            }
        }
    }

    /// A change refused once its run lock was taken: the refusal is
    /// recorded with the lock's release (released anyway if that commit
    /// fails), and the request is closed in its thread.
    async fn refuse_under_lock(
        &self,
        id: &str,
        requester: &Actor,
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
        service: &str,
        why: &str,
    ) -> Result<()> {
        let record = self
            .entry(RecordKind::Outcome, Some(id), requester, parsed, reply)
            .outcome(Verdict::Refused)
            .detail(format!("did not run: {why}"));
        let release = self.store.run_lock_release(service, id);
        if let Err(e) = self.audit.commit(vec![AuditEntry { args: None, ..record }], Some(release)).await {
            tracing::error!(error = %e, request = %id, "a refused change's outcome was not recorded");
            let _ = self.store.release_run_lock(service, id);
        }
        let text = format!("{id} did not run: {why}");
        self.say(reply, Reply::Outcome { request_id: id.to_string(), verdict: Verdict::Refused, text }).await;
        Ok(())
    }

    /// The run lock's release, with the service's newest change noted in the
    /// store (`r-7 deploy succeeded`) in the same step, so a rollback of one
    /// deploy (`--of`) that takes the lock next sees it even before the
    /// trail's reads do. Every path that ends an action releases through it.
    pub(super) fn release_noting(
        &self,
        service: &str,
        id: &str,
        command: &str,
        verdict: Verdict,
    ) -> crate::audit::Effect {
        let release = self.store.run_lock_release(service, id);
        let (store, key, note) =
            (self.store.clone(), newest_change_key(service), format!("{id} {command} {}", verdict.name()));
        Box::new(move || {
            store.link(&key, &note).map_err(|e| e.to_string())?;
            release()
        })
    }

    /// For `/rollback <service> --of r-N`: why it must not run, when r-N is
    /// not (or no longer) the service's newest change, a deploy that took effect.
    pub(super) fn undo_is_stale(&self, request: &crate::command::Request) -> Result<Option<String>> {
        let crate::command::Request::Rollback { service, of: Some(of), .. } = request else { return Ok(None) };
        // Both must name r-N: the store's note, written with the lock's
        // release (the trail's reads may lag it by a flush), and the trail
        // (which also holds outcomes written without a note: an interrupted
        // action recorded at start, say).
        if let Some(note) = self.store.resolve(&newest_change_key(service))? {
            let mut parts = note.split(' ');
            let (newest, command, verdict) = (parts.next(), parts.next(), parts.next());
            if (newest, command, verdict) != (Some(of.as_str()), Some("deploy"), Some(Verdict::Succeeded.name())) {
                return Ok(Some(format!(
                    "{service} changed since {of}: its newest change is {} ({} {}); nothing was rolled back",
                    newest.unwrap_or("?"),
                    command.unwrap_or("change"),
                    verdict.unwrap_or("recorded")
                )));
            }
        }
        // A refusal ran nothing: the newest change is the newest other outcome.
        let newest = self.audit.newest_outcomes(service, 8)?;
        let stale = match newest.iter().rev().find(|r| r.entry.outcome != Some(Verdict::Refused)) {
            Some(r)
                if r.entry.request_id.as_deref() == Some(of.as_str())
                    && r.entry.command.as_deref() == Some("deploy")
                    && r.entry.outcome == Some(Verdict::Succeeded) =>
            {
                return Ok(None)
            }
            Some(r) => format!(
                "{service} changed since {of}: its newest change is {} ({} {}); nothing was rolled back",
                r.entry.request_id.as_deref().unwrap_or("?"),
                r.entry.command.as_deref().unwrap_or("change"),
                r.entry.outcome.map(|o| o.name()).unwrap_or("recorded"),
            ),
            None => format!("{of} is not a change of {service} opsbot recorded; nothing was rolled back"),
        };
        Ok(Some(stale))
    }

    /// The service's earlier successful outcomes with live facts, newest
    /// first, for the executor (a failed read gives none: executors that
    /// need history then refuse rather than guess).
    fn verified_history(&self, service: &str) -> Vec<Verified> {
        let query = AuditQuery {
            service: Some(service.to_string()),
            kind: Some(RecordKind::Outcome),
            limit: Some(50),
            look_back: Some(LOOK_BACK),
            ..Default::default()
        };
        match self.audit.read(&query) {
            Ok(records) => records
                .into_iter()
                .rev()
                .filter(|r| r.entry.outcome == Some(Verdict::Succeeded))
                .filter_map(|r| {
                    Some(Verified {
                        request_id: r.entry.request_id.clone().unwrap_or_default(),
                        command: r.entry.command.clone().unwrap_or_default(),
                        at: r.ts,
                        live: r.entry.live?,
                    })
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, %service, "cannot read the service's history from the trail");
                Vec::new()
            }
        }
    }

    /// Writes an `interrupted` outcome for every action whose run lock is still
    /// held, and frees those services. An action whose outcome is already in
    /// the trail finished: its lock is only released.
    /// After a takeover (`takeover`: a new leader's recovery), each service
    /// an interrupted action was changing is marked with the new term in its
    /// backend ([`Engine::fence_backend`]).
    pub(super) async fn record_interrupted(self: &Arc<Self>, why: &str, takeover: bool) {
        let locks = match self.store.run_locks() {
            Ok(locks) => locks,
            Err(e) => return tracing::error!(error = %e, "cannot list run locks"),
        };
        // After a takeover, every locked service is marked first, all at once.
        let fenced = if takeover { self.fence_all(&locks).await } else { HashMap::new() };
        // Runbook runs first: one outcome each, every lock they hold freed.
        let runs = self.record_interrupted_runs(why, &locks, &fenced).await;
        for (service, lock) in locks.into_iter().filter(|(_, l)| !runs.contains(&l.request_id)) {
            let finished = self
                .audit
                .newest_outcomes(&service, 3)
                .map(|o| o.into_iter().find(|r| r.entry.request_id.as_deref() == Some(lock.request_id.as_str())));
            if let Ok(Some(outcome)) = finished {
                tracing::info!(request = %lock.request_id, %service, "the action's outcome is recorded; releasing its run lock");
                // The note may have been lost with the release: written again from the trail.
                let command = outcome.entry.command.clone().unwrap_or_else(|| "change".into());
                let verdict = outcome.entry.outcome.unwrap_or(Verdict::Unknown);
                let release = self.release_noting(&service, &lock.request_id, &command, verdict);
                if let Err(e) = self.audit.commit(Vec::new(), Some(release)).await {
                    tracing::error!(error = %e, "cannot release a finished action's run lock");
                }
                continue;
            }
            let fenced = fenced.get(&service).map(String::as_str).unwrap_or_default();
            let record = AuditEntry {
                request_id: Some(lock.request_id.clone()),
                actor: Some(lock.holder.clone()),
                service: Some(service.clone()),
                environment: self.config.services.get(&service).map(|s| s.environment.clone()),
                ..AuditEntry::new(RecordKind::Outcome)
            }
            .outcome(Verdict::Interrupted)
            .detail(format!("{why}{fenced}"));
            let release = self.release_noting(&service, &lock.request_id, "change", Verdict::Interrupted);
            match self.audit.commit(vec![record], Some(release)).await {
                Ok(_) => tracing::warn!(request = %lock.request_id, %service, "{why}"),
                Err(e) => tracing::error!(error = %e, "cannot record an interrupted action"),
            }
        }
    }
}

impl Engine {
    /// [`Engine::fence_backend`] for every configured service a run lock
    /// names, concurrently (so a takeover waits for the slowest, not the
    /// sum): service → what was done.
    async fn fence_all(&self, locks: &[(String, RunLock)]) -> HashMap<String, String> {
        let services: std::collections::BTreeSet<&str> =
            locks.iter().map(|(s, _)| s.as_str()).filter(|s| self.config.services.contains_key(*s)).collect();
        let marked = futures_util::future::join_all(
            services.into_iter().map(|s| async move { (s.to_string(), self.fence_backend(s).await) }),
        )
        .await;
        marked.into_iter().collect()
    }

    /// After a takeover (the store has a term): marks `service` in its
    /// backend with this leader's term, so a write its predecessor still
    /// sends is refused there. Says what was done, for the interrupted
    /// record ("" when there is no term or nothing to mark).
    async fn fence_backend(&self, service: &str) -> String {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
        let (Some(term), Some(config)) = (self.store.term(), self.config.services.get(service)) else {
            return String::new();
        };
        let marked = tokio::time::timeout(PATIENCE, self.executors.for_service(config).fence(config, term)).await;
        match marked {
            Ok(Ok(Some(done))) => format!("; {done}, so a write the previous leader still sends is refused"),
            Ok(Ok(None)) => String::new(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %service, term, "cannot mark the service with the new term");
                format!("; could not mark it with term {term} ({e}), so a write the previous leader still sends is not refused by the backend")
            }
            Err(_) => {
                tracing::warn!(%service, term, "marking the service with the new term timed out");
                format!("; could not mark it with term {term} within {}s, so a write the previous leader still sends is not refused by the backend", PATIENCE.as_secs())
            }
        }
    }
}

/// Where the store keeps a service's newest change (`r-7 deploy succeeded`).
fn newest_change_key(service: &str) -> String {
    format!("core:newest-change:{service}")
}
