//! `/incident …`: declaring an incident and keeping its record. Each change
//! and its `incident` audit record are made durable in one commit, and only
//! then is it announced and the summary message (posted once in the channel
//! it was declared in, edited in place afterwards) brought up to date.

use super::Engine;
use crate::approval::PendingRequest;
use crate::audit::{AuditEntry, AuditQuery, RecordKind};
use crate::command::{IncidentOp, ParsedCommand};
use crate::engine::reply::{typed, Reply, RollbackOffer};
use crate::error::{Error, Result};
use crate::event::{Actor, Platform, ReplyTarget};
use crate::incident::{self, sev, Change, Incident, Timeline};
use crate::policy::Required;
use std::sync::Arc;

/// Changes listed in a summary.
const RECENT_CHANGES: usize = 3;
/// Newest records read at start for an incident record a crash may have cut.
const RECONCILE_LOOK_BACK: usize = 64;
/// Timeline lines `/incident timeline` shows in chat.
const TIMELINE_LINES: usize = 40;

impl Engine {
    /// `/incident declare|lead|update|sev|note|resolve`, allowed by the
    /// policy. Serialised; the incident is stored in the same commit as its
    /// record, then announced; then waiting deploys on its services get the
    /// lead requirement the incidents ask now.
    pub(super) async fn run_incident(
        self: &Arc<Self>,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        op: &IncidentOp,
        id: Option<&str>,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let guard = self.incidents.lock().await;
        let now = self.clock.now();
        let commander = self.is_commander(actor, roles);
        let (incident, detail, announce) = match op {
            IncidentOp::Declare { title, severity, services } => {
                self.may_declare(reply, *severity, services, commander)?;
                let id = self.store.next_incident_id()?;
                let from_seq = self.audit.head()?.seq;
                let here = ReplyTarget::channel(reply.channel.clone());
                // Its own channel, when the configuration asks for one: opened
                // before the incident is recorded (one the record then fails to
                // follow is left, and logged). When it cannot be opened, the
                // incident lives here, and says why.
                let (home, own) = if self.config.incident_channels {
                    let name = incident::channel_name(&id, title);
                    match self.chat.open_channel(&here, &name, std::slice::from_ref(actor)).await {
                        Ok(home) => (home, Some(Ok(name))),
                        Err(crate::engine::reply::ChatError::Delivery(why)) => (here.clone(), Some(Err(why))),
                    }
                } else {
                    (here.clone(), None)
                };
                let incident = Incident {
                    declared_in: matches!(own, Some(Ok(_))).then(|| reply.channel.clone()),
                    id,
                    title: title.clone(),
                    severity: *severity,
                    services: services.clone(),
                    lead: actor.clone(),
                    declared_by: actor.clone(),
                    declared_at: now,
                    from_seq,
                    channel: home,
                    last_update: None,
                    resolved_at: None,
                    resolved_by: None,
                    resolution: None,
                };
                let on = if services.is_empty() { String::new() } else { format!(" on {}", services.join(", ")) };
                let (in_channel, said_channel) = match &own {
                    Some(Ok(name)) => (
                        format!("; its channel {} ({name})", incident.channel.channel),
                        format!(" It has its own channel, #{name}: its summary is pinned there, and commands about it are taken there."),
                    ),
                    Some(Err(why)) => (
                        format!("; no channel of its own: {why}"),
                        format!(" It could not get a channel of its own ({why}); it lives here."),
                    ),
                    None => (String::new(), String::new()),
                };
                let detail = format!("declared {}{on}: {title}; lead {actor}{in_channel}", sev(*severity));
                let gate = if *severity <= 2 && !services.is_empty() {
                    " Deploys to its services now wait for the lead's approval too (break-glass aside)."
                } else {
                    ""
                };
                let announce = format!(
                    "🚨 {} declared by {actor}: {} ({}{on}). {actor} leads it; `/incident lead @someone` hands it over.{gate}{said_channel}",
                    incident.id,
                    typed(title),
                    sev(*severity)
                );
                (incident, detail, announce)
            }
            _ => {
                // A commander may take over an incident from any channel.
                let mut incident = self.incident_for(op.incident().or(id), reply, commander)?;
                if let Some(at) = incident.resolved_at {
                    return Err(Error::Invalid(format!(
                        "{} was resolved at {}; declare a new incident if it is back",
                        incident.id,
                        at.format("%Y-%m-%d %H:%M UTC")
                    )));
                }
                self.may_steer(actor, commander, op, &incident)?;
                let id = incident.id.clone();
                let (detail, announce) = match op {
                    IncidentOp::Lead { person, .. } => {
                        let lead = self.person(actor, person)?;
                        let before = std::mem::replace(&mut incident.lead, lead.clone());
                        (
                            format!("lead {lead} (was {before})"),
                            format!("{id}: {lead} leads it now (was {before}), set by {actor}"),
                        )
                    }
                    IncidentOp::Update { text, .. } => {
                        incident.last_update = Some(text.clone());
                        (format!("update: {text}"), format!("📣 {id} update from {actor}: {}", typed(text)))
                    }
                    IncidentOp::Severity { severity, .. } => {
                        if incident.severity > 2 && *severity <= 2 && !commander {
                            // Raised to a hold: the same rule as declaring one.
                            self.not_held_elsewhere(&incident.services, Some(&incident.id))?;
                        }
                        let before = std::mem::replace(&mut incident.severity, *severity);
                        let gate = match (before <= 2, *severity <= 2, incident.services.is_empty()) {
                            (false, true, false) => " Deploys to its services now wait for the lead's approval too.",
                            (true, false, false) => " Deploys to its services no longer wait for the lead.",
                            _ => "",
                        };
                        (
                            format!("severity {} (was {})", sev(*severity), sev(before)),
                            format!("{id} is {} now (was {}), set by {actor}.{gate}", sev(*severity), sev(before)),
                        )
                    }
                    IncidentOp::Note { text, .. } => {
                        (format!("note: {text}"), format!("📝 {id} note from {actor}: {}", typed(text)))
                    }
                    IncidentOp::Resolve { summary, .. } => {
                        incident.resolved_at = Some(now);
                        incident.resolved_by = Some(actor.clone());
                        incident.resolution = summary.clone();
                        let took = incident::human(now - incident.declared_at);
                        let said = summary.as_deref().map(|s| format!(": {}", typed(s))).unwrap_or_default();
                        let noted = summary.as_deref().map(|s| format!(": {s}")).unwrap_or_default();
                        (
                            format!("resolved after {took}{noted}"),
                            format!("✅ {id} resolved by {actor} after {took}{said}. `/incident timeline {id}` has the whole story."),
                        )
                    }
                    IncidentOp::Declare { .. } | IncidentOp::Status { .. } | IncidentOp::Timeline { .. } => {
                        return Err(Error::Invalid("not a change to an incident".into()))
                    }
                };
                (incident, detail, announce)
            }
        };
        let services = &incident.services;
        let first = services.first().and_then(|s| self.config.services.get(s));
        let record = AuditEntry {
            request_id: Some(incident.id.clone()),
            actor: Some(actor.to_string()),
            channel: Some(reply.channel.clone()),
            command: Some(parsed.command.clone()),
            // The incident as it stands after this change: the trail alone
            // can tell its story (`opsbot incident export`).
            args: serde_json::to_value(&incident).ok(),
            service: first.map(|s| s.name.clone()),
            environment: first.map(|s| s.environment.clone()),
            ..AuditEntry::new(RecordKind::Incident)
        }
        .outcome(crate::audit::Verdict::Allowed)
        .detail(detail);
        // The change and its record land in one commit: neither without the other.
        let store = self.store.clone();
        let stored = incident.clone();
        let effect: crate::audit::Effect = Box::new(move || store.put_incident(&stored).map_err(|e| e.to_string()));
        if let Err(e) = self.audit.commit(vec![record], Some(effect)).await {
            if matches!(op, IncidentOp::Declare { .. }) && incident.declared_in.is_some() {
                tracing::error!(error = %e, incident = %incident.id, channel = %incident.channel.channel,
                    "an incident's channel was opened but the incident was not recorded; archive the channel");
            }
            return Err(e.into());
        }
        self.metrics.request(actor.platform(), &parsed.command, "allowed");
        if incident.channel.channel == reply.channel {
            self.say(reply, Reply::Text(announce)).await;
        } else if matches!(op, IncidentOp::Declare { .. }) {
            // Declared into a channel of its own: said where it was
            // declared (which learns where it went) and in its channel.
            self.say(&incident.channel, Reply::Announcement(announce.clone())).await;
            self.say(reply, Reply::Text(announce)).await;
        } else {
            // A commander acting from elsewhere: the incident's channel is
            // told; where they typed it, only they hear that it was done.
            self.say(&incident.channel, Reply::Announcement(announce)).await;
            let done = format!("done: {} (announced in its channel)", parsed.request.describe());
            self.say(reply, Reply::Private { to: actor.clone(), text: done }).await;
        }
        // Said under the lock: summaries reach the channel in the order of
        // the changes, so the pinned one ends showing the last.
        self.show_summary(&incident).await;
        drop(guard);
        self.refresh_waiting(&incident.services, actor).await;
        Ok(())
    }

    /// Handing the lead over, changing the severity and resolving steer
    /// the deploy hold: they are the lead's, or (to take over) someone's in
    /// `[incidents] commanders`.
    fn may_steer(&self, actor: &Actor, commander: bool, op: &IncidentOp, incident: &Incident) -> Result<()> {
        if !matches!(op, IncidentOp::Lead { .. } | IncidentOp::Severity { .. } | IncidentOp::Resolve { .. }) {
            return Ok(());
        }
        if commander || self.config.person(actor) == self.config.person(&incident.lead) {
            return Ok(());
        }
        let takers = &self.config.incident_commanders;
        let who = if takers.is_empty() { String::new() } else { format!(" or someone in {}", takers.join(", ")) };
        Err(Error::Denied(format!(
            "only {}'s lead ({}){who} may hand it over, change its severity or resolve it",
            incident.id, incident.lead
        )))
    }

    /// At start: an incident record and its stored state land in one commit,
    /// the record first; a crash inside that commit can keep the record and
    /// lose the state. Only the newest commit can be cut so, so the newest
    /// incident record is compared with the store and, where they differ,
    /// the trail's state is put back.
    pub(super) fn reconcile_incident(&self) {
        // The cut commit is the newest: a short look back finds its record
        // (and keeps start-up from reading thousands of records for it).
        let query = AuditQuery {
            kind: Some(RecordKind::Incident),
            limit: Some(1),
            look_back: Some(RECONCILE_LOOK_BACK),
            ..Default::default()
        };
        let newest = match self.audit.read(&query) {
            Ok(records) => records.into_iter().last(),
            Err(e) => {
                tracing::warn!(error = %e, "the newest incident record is unreadable; incidents not reconciled");
                return;
            }
        };
        let Some(stated) = newest.and_then(|r| r.entry.args).and_then(|a| serde_json::from_value::<Incident>(a).ok())
        else {
            return;
        };
        match self.store.get_incident(&stated.id) {
            Ok(Some(stored)) if stored == stated => {}
            Ok(_) => {
                tracing::warn!(incident = %stated.id, "the stored incident lagged its newest record (a crash); restored from the trail");
                if let Err(e) = self.store.put_incident(&stated) {
                    tracing::error!(error = %e, incident = %stated.id, "could not restore the incident from the trail");
                }
            }
            Err(e) => tracing::error!(error = %e, incident = %stated.id, "the stored incident is unreadable"),
        }
    }

    /// Whether `actor` (with the platform `roles`) is in `[incidents] commanders`.
    fn is_commander(&self, actor: &Actor, roles: &[String]) -> bool {
        let commanders = &self.config.incident_commanders;
        !commanders.is_empty() && self.config.in_any_with(actor, &self.config.granted_to(actor, roles), commanders)
    }

    /// A declaration that would hold deploys must be one others can reach
    /// and steer: never in a direct message, and never a second hold on a
    /// service another incident holds already (unless a commander asks).
    fn may_declare(&self, reply: &ReplyTarget, severity: u8, services: &[String], commander: bool) -> Result<()> {
        if reply.channel.starts_with("slack:D") {
            return Err(Error::Invalid(
                "declare incidents in a channel the team can see, not in a direct message".into(),
            ));
        }
        if severity > 2 || commander {
            return Ok(());
        }
        self.not_held_elsewhere(services, None)
    }

    /// Refuses a hold on `services` that another open incident (not
    /// `except`) holds already: its lead would be overridden by whoever
    /// made the second one.
    fn not_held_elsewhere(&self, services: &[String], except: Option<&str>) -> Result<()> {
        for open in self.store.open_incidents()?.into_iter().filter(|i| Some(i.id.as_str()) != except) {
            if let Some(service) = services.iter().find(|s| open.gates_deploys(s)) {
                return Err(Error::Invalid(format!(
                    "{service} is held by {} ({}, lead {}) already: add to that incident, or ask an incident commander",
                    open.id,
                    sev(open.severity),
                    open.lead
                )));
            }
        }
        Ok(())
    }

    /// For a deploy: the open SEV1/SEV2 incident that holds it for its lead
    /// (the most severe, if several name the service).
    pub(super) fn incident_gate(&self, request: &crate::command::Request) -> Result<Option<Incident>> {
        let crate::command::Request::Deploy { service, .. } = request else { return Ok(None) };
        let open = self.store.open_incidents()?;
        Ok(open.into_iter().filter(|i| i.gates_deploys(service)).min_by_key(|i| i.severity))
    }

    /// Whose approval the open incidents ask of `request` now.
    pub(super) fn requirement_now(&self, request: &PendingRequest) -> Result<Option<Required>> {
        let gate = self.incident_gate(&request.request)?;
        let gate =
            gate.as_ref().map(|i| crate::policy::IncidentGate { id: &i.id, severity: i.severity, lead: &i.lead });
        Ok(crate::policy::required_by(&self.config, &request.requester, gate, &request.service, self.clock.now()))
    }

    /// Brings the summaries of the open incidents naming `service` up to date
    /// (after a change to it ended).
    pub(super) async fn refresh_summaries(&self, service: &str) {
        // Read and said under the lock, so a change made meanwhile is never
        // overwritten by an older state.
        let _guard = self.incidents.lock().await;
        let open = match self.store.open_incidents() {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "open incidents unreadable; their summaries were not refreshed");
                return;
            }
        };
        for incident in open.iter().filter(|i| i.services.iter().any(|s| s == service)) {
            self.show_summary(incident).await;
        }
    }

    /// Posts or edits `incident`'s summary message.
    async fn show_summary(&self, incident: &Incident) {
        let recent = match self.recent_changes(incident) {
            Ok(recent) => recent,
            Err(e) => {
                tracing::warn!(error = %e, incident = %incident.id, "reading recent changes for a summary failed");
                Vec::new()
            }
        };
        let text = incident::summary_text(incident, &recent, self.clock.now());
        // While it is open, a Roll back button per service whose newest
        // change is a deploy that took effect (never one that would undo a
        // rollback, or retry a failure).
        let rollbacks: Vec<RollbackOffer> = if incident.is_open() {
            incident::rollback_offers(&recent, self.clock.now())
                .into_iter()
                .filter(|(service, _)| crate::engine::reply::button_service(service))
                .map(|(service, deploy)| RollbackOffer { service, deploy })
                .collect()
        } else {
            Vec::new()
        };
        self.say(&incident.channel, Reply::Summary { key: incident.summary_key(), text, rollbacks }).await;
    }

    /// The newest changes to `incident`'s services, newest first.
    fn recent_changes(&self, incident: &Incident) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for service in &incident.services {
            // A few more than shown: refusals among them are not changes.
            let records = self.audit.newest_outcomes(service, RECENT_CHANGES * 4)?;
            let mut real: Vec<Change> = records.iter().filter_map(Change::from_record).collect();
            let keep = real.len().saturating_sub(RECENT_CHANGES);
            changes.extend(real.drain(keep..));
        }
        changes.sort_by_key(|c| std::cmp::Reverse(c.at));
        changes.truncate(RECENT_CHANGES);
        Ok(changes)
    }

    /// `/incident status` and `/incident timeline`.
    pub(super) async fn incident_read(&self, op: &IncidentOp, reply: &ReplyTarget) -> Result<String> {
        match op {
            IncidentOp::Status { incident: None } if self.channel_incidents(reply)?.is_empty() => {
                Ok("No incident is open in this channel (incidents are shown in the channel they were declared in)."
                    .into())
            }
            IncidentOp::Status { incident } => {
                let found = self.incident_for(incident.as_deref(), reply, false)?;
                let mut text = incident::summary_text(&found, &self.recent_changes(&found)?, self.clock.now());
                text.push_str(&self.open_actions(&found)?);
                Ok(text)
            }
            IncidentOp::Timeline { incident } => {
                let found = self.incident_for(incident.as_deref(), reply, false)?;
                Ok(self.timeline(&found).await?.chat_lines(TIMELINE_LINES))
            }
            _ => Err(Error::Invalid("not a read of an incident".into())),
        }
    }

    /// Approvals waiting and actions running on `incident`'s services.
    fn open_actions(&self, incident: &Incident) -> Result<String> {
        let mut lines = Vec::new();
        for request in self.store.open_requests()? {
            if incident.services.contains(&request.service) {
                lines.push(format!(
                    "{} {} by {}: waiting for approval",
                    request.id,
                    request.request.describe(),
                    request.requester
                ));
            }
        }
        for (service, lock) in self.store.run_locks()? {
            if incident.services.contains(&service) {
                lines.push(format!("{} on {service}: running", lock.request_id));
            }
        }
        Ok(if lines.is_empty() {
            "\nopen actions: none".into()
        } else {
            format!("\nopen actions:\n• {}", lines.join("\n• "))
        })
    }

    /// The incident's timeline from the trail: read from its declaration
    /// to just after its resolve, on a blocking thread, at most
    /// [`incident::SCAN_LIMIT`] records.
    pub async fn timeline(&self, incident: &Incident) -> Result<Timeline> {
        let audit = self.audit.clone();
        let mut scan = incident::TimelineScan::new(incident);
        // From the record before its declaration: never the whole trail.
        let query = AuditQuery {
            since: Some(incident.declared_at),
            after_seq: (incident.from_seq > 0).then_some(incident.from_seq),
            ..Default::default()
        };
        let read = tokio::task::spawn_blocking(move || {
            audit.each(&query, &mut |record| scan.take(record))?;
            Ok::<_, crate::audit::AuditError>(scan.finish())
        })
        .await
        .map_err(|e| Error::Invalid(format!("reading the timeline failed: {e}")))?;
        Ok(read?)
    }

    /// The incident `named`, or else the one open incident declared in
    /// `reply`'s channel.
    pub(super) fn incident_for(&self, named: Option<&str>, reply: &ReplyTarget, anywhere: bool) -> Result<Incident> {
        if let Some(id) = named {
            let found = self.store.get_incident(id)?;
            // An incident is worked on in its own channel: one declared in a
            // private channel is not shown or changed from anywhere else
            // (commanders aside, who may take over from anywhere).
            return match found {
                Some(incident) if anywhere || incident.worked_on_in(&reply.channel) => Ok(incident),
                _ => Err(Error::Invalid(format!(
                    "there is no incident {id} in this channel; incident commands work in the incident's channel"
                ))),
            };
        }
        let mut here = self.channel_incidents(reply)?;
        match here.len() {
            1 => Ok(here.remove(0)),
            0 => Err(Error::Invalid(
                "no open incident lives in this channel; run incident commands in the incident's channel".into(),
            )),
            _ => Err(Error::Invalid(format!(
                "{} incidents are open in this channel ({}); name the one you mean",
                here.len(),
                here.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The open incidents worked on in `reply`'s channel: those living
    /// there, and those declared there that live in a channel of their own
    /// (so an incident whose channel was archived can still be run).
    fn channel_incidents(&self, reply: &ReplyTarget) -> Result<Vec<Incident>> {
        Ok(self.store.open_incidents()?.into_iter().filter(|i| i.worked_on_in(&reply.channel)).collect())
    }

    /// Who `typed` names, as `actor` sees it: an identity or a mention the
    /// parser checked; a bare `@name` is an identity only in the console.
    /// Only someone the configuration knows may lead (the lead approves
    /// deploys during a SEV1/SEV2).
    fn person(&self, actor: &Actor, typed_name: &str) -> Result<Actor> {
        let qualified = match typed_name.strip_prefix('@') {
            Some(name) if actor.platform() == Platform::Console => format!("console:{name}"),
            Some(_) if actor.platform() == Platform::Slack => {
                return Err(Error::Invalid(format!(
                    "Slack sent `{typed_name}` as a name, not an id: the app's /incident command needs \"Escape channels, users, and links\" on (`opsbot slack-manifest` sets it); meanwhile write the id, like slack:U024BE7LH"
                )))
            }
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "`{typed_name}` is a name, not an id: pick the person from the member list so Discord sends their id, or write it like discord:<their id>"
                )))
            }
            None => typed_name.to_string(),
        };
        let person = Actor::parse(&qualified).map_err(Error::Invalid)?;
        if !self.config.is_known(&person) {
            return Err(Error::Invalid(format!(
                "{person} is not in any group of this opsbot; an incident lead must be (they approve deploys during a SEV1 or SEV2)"
            )));
        }
        Ok(person)
    }
}
