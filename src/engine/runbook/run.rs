//! Running a runbook's steps: the run locks, each step's intent and end
//! recorded before it is told, step budgets, aborts and shutdown, and
//! recovering a run a crash interrupted.

use super::*;

impl Engine {
    /// Takes the run locks (the runbook's, then each service's it touches,
    /// in name order), makes the intent durable, announces, and runs the
    /// steps in a tracked task. Anything busy refuses the whole run.
    pub(in crate::engine) async fn start_runbook(self: &Arc<Self>, start: RunbookStart<'_>) -> Result<()> {
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
        let (loud, approvals) = crate::engine::start_notes(requester, break_glass.as_deref(), &approved_by);
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
    pub(super) fn release_all(
        &self,
        keys: &[String],
        id: &str,
        changed: &[String],
        verdict: Verdict,
    ) -> crate::audit::Effect {
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
    pub(super) async fn run_steps(self: Arc<Self>, run: &Run<'_>, held: &[String], recorded: &AtomicBool) {
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
    pub(in crate::engine) fn stop_runs(&self) {
        for run in self.running.lock().expect("running runs").values_mut() {
            run.stopping = true;
        }
    }

    /// How long a step may take before its outcome is unknown: its own
    /// limit, and a margin for the calls around it.
    pub(super) fn step_budget(&self, step: &Step) -> Duration {
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
    pub(super) fn release_held(&self, held: &[String], id: &str) {
        for key in held.iter().rev() {
            let _ = self.store.release_run_lock(key, id);
        }
    }

    /// Runs one step; the text says what it did.
    pub(super) async fn run_step(
        &self,
        run: &Run<'_>,
        index: usize,
    ) -> std::result::Result<crate::action::Outcome, ActionError> {
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
    pub(super) async fn wait_healthy(
        &self,
        service: &crate::config::Service,
        limit: Duration,
    ) -> std::result::Result<String, ActionError> {
        let deadline = tokio::time::Instant::now() + limit;
        let client = match &service.health_url {
            Some(_) => Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| ActionError::Failed(format!("cannot build an HTTP client: {e}")))?,
            ),
            None => None,
        };
        let mut last: String;
        loop {
            let seen = match (&service.health_url, &client) {
                (Some(url), Some(client)) => match client.get(url).send().await {
                    Ok(response) => {
                        Ok((response.status().is_success(), format!("{url} answered {}", response.status().as_u16())))
                    }
                    Err(e) => Ok((false, format!("{url}: {}", e.without_url()))),
                },
                _ => self.executors.for_service(service).healthy(service).await,
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

    /// At start: a run left holding locks was interrupted. One outcome
    /// records it (with what the trail says ran), every lock is freed, and
    /// nothing runs again. Returns the request ids handled so.
    pub(in crate::engine) async fn record_interrupted_runs(
        &self,
        why: &str,
        locks: &[(String, RunLock)],
        fenced: &std::collections::HashMap<String, String>,
    ) -> Vec<String> {
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
                let fenced: String = changed
                    .iter()
                    .filter_map(|s| fenced.get(s).filter(|d| !d.is_empty()).map(|d| (s, d)))
                    .map(|(service, done)| format!(" {service}: {}.", done.trim_start_matches("; ")))
                    .collect();
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
                    "runbook {name}: {why}. Steps that ended: {}.{running} Nothing is run again by itself.{fenced}",
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
