//! Alerts in the core: notices from the intake endpoints become alert
//! groups (one message per group and channel, edited in place) and audit
//! records (one per state change), and an alert's buttons become commands
//! the clicker could have typed, each under its usual gates.
//!
//! Intake is serialised (one lock), so two copies of a delivery (an HA
//! Alertmanager pair, a sender's retry) arriving at once cannot both change
//! a group. A delivery's records and the groups they change land in one
//! commit: the sender is answered 2xx only once both are durable, and a
//! delivery that failed to commit is retried whole and taken then.

use super::{reply, Engine, Error, Result};
use crate::action::ActionError;
use crate::alert::group::{Acknowledgement, AlertGroup, Silence, Transition};
use crate::alert::{Notice, State};
use crate::audit::{AuditEntry, RecordKind, Verdict};
use crate::command::parse::{AlertOp, ParsedCommand};
use crate::engine::reply::{AlertAction, AlertButton, Reply};
use crate::event::{Actor, ReplyTarget};
use crate::incident::{human, Change};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A deploy an alert's message offers to roll back.
struct RecentDeploy {
    request_id: String,
    version: String,
    by: Option<String>,
    at: DateTime<Utc>,
}

impl Engine {
    /// Takes one delivery's notices: returns how many changed something.
    /// An error means nothing of it was recorded (the sender should retry).
    pub async fn take_alerts(self: &Arc<Self>, notices: Vec<Notice>) -> Result<usize> {
        let Some(settings) = self.config.alerts.as_ref() else {
            return Err(Error::Invalid("alert intake is not configured ([alerts])".into()));
        };
        let _intake = self.alerts.lock().await;
        let now = self.clock.now();
        let mut groups: Vec<(AlertGroup, bool)> = Vec::new();
        let mut records = Vec::new();
        for notice in notices {
            let at = match groups.iter().position(|(g, _)| g.source == notice.source && g.key == notice.group) {
                Some(at) => at,
                None => {
                    let stored = self.store.alert_for(notice.source, &notice.group)?;
                    let group = match stored {
                        Some(g) if g.takes_more(now, settings.flap_window) => g,
                        // A resolve opens no thread: nothing was shown
                        // firing to resolve (an old group's resolve, resent,
                        // or an alert opsbot never saw fire).
                        _ if notice.state == State::Resolved => continue,
                        _ => {
                            let (service, channels) = settings.route(&notice.labels, &self.config.services);
                            AlertGroup::open(self.store.next_alert_id()?, &notice, service, channels, now)
                        }
                    };
                    groups.push((group, false));
                    groups.len() - 1
                }
            };
            let (group, changed) = &mut groups[at];
            if let Some(transition) = group.apply(&notice, now, settings.flap_window) {
                records.push(self.alert_record(group, &notice, &transition));
                *changed = true;
            }
        }
        let changed: Vec<AlertGroup> = groups.into_iter().filter(|(_, c)| *c).map(|(g, _)| g).collect();
        if records.is_empty() {
            return Ok(0);
        }
        let count = records.len();
        let store = self.store.clone();
        let stored = changed.clone();
        let effect: crate::audit::Effect =
            Box::new(move || stored.iter().try_for_each(|g| store.put_alert(g)).map_err(|e| e.to_string()));
        self.audit.commit(records, Some(effect)).await?;
        for group in &changed {
            self.show_alert(group).await;
        }
        Ok(count)
    }

    /// One alert's state change as an audit record.
    fn alert_record(&self, group: &AlertGroup, notice: &Notice, transition: &Transition) -> AuditEntry {
        let service = group.service.as_deref().and_then(|s| self.config.services.get(s));
        AuditEntry {
            request_id: Some(group.id.clone()),
            channel: group.channels.first().cloned(),
            command: Some("alert".into()),
            args: Some(serde_json::json!({
                "source": notice.source,
                "group": notice.group,
                "fingerprint": notice.fingerprint,
                "name": notice.name,
                "alert": group.name,
                "state": notice.state,
                "event": transition.event,
                "labels": notice.labels,
                "starts_at": notice.starts_at,
                "ends_at": notice.ends_at,
                "flaps": group.flaps,
            })),
            service: service.map(|s| s.name.clone()),
            environment: service.map(|s| s.environment.clone()),
            ..AuditEntry::new(RecordKind::Alert)
        }
        .detail(format!("{} {}: {}", notice.name, transition.event, notice.summary))
    }

    /// Shows `group`'s message, as it stands, in each of its channels.
    pub(super) async fn show_alert(&self, group: &AlertGroup) {
        let now = self.clock.now();
        let deploy = if group.firing() { self.recent_deploy(group, now) } else { None };
        let text = alert_text(group, deploy.as_ref(), now);
        let buttons = self.alert_buttons(group, deploy.as_ref());
        for channel in &group.channels {
            let reply = Reply::Alert { key: group.id.clone(), text: text.clone(), buttons: buttons.clone() };
            self.say(&ReplyTarget::channel(channel.clone()), reply).await;
        }
    }

    /// The service's newest change, when it is a deploy that took effect
    /// within `[alerts] recent_change`.
    fn recent_deploy(&self, group: &AlertGroup, now: DateTime<Utc>) -> Option<RecentDeploy> {
        let settings = self.config.alerts.as_ref()?;
        let service = group.service.as_deref()?;
        let records = match self.audit.newest_outcomes(service, 8) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, alert = %group.id, "reading recent changes for an alert failed");
                return None;
            }
        };
        let newest = records.iter().rev().find(|r| Change::from_record(r).is_some())?;
        let change = Change::from_record(newest)?;
        let window = chrono::Duration::from_std(settings.recent_change).unwrap_or(chrono::Duration::MAX);
        let fresh = now - change.at <= window;
        if !(change.command == "deploy" && change.verdict == Some(Verdict::Succeeded) && fresh) {
            return None;
        }
        // The version is in the deploy's request record (outcomes carry
        // the live state, not the request).
        let asked = crate::audit::AuditQuery {
            request_id: Some(change.request_id.clone()),
            kind: Some(RecordKind::Request),
            limit: Some(1),
            look_back: Some(crate::audit::LOOK_BACK),
            ..Default::default()
        };
        let version = self.audit.read(&asked).ok().and_then(|records| {
            records.first().and_then(|r| r.entry.args.as_ref()?["version"].as_str().map(str::to_string))
        })?;
        Some(RecentDeploy { request_id: change.request_id, version, by: change.by, at: change.at })
    }

    /// The runbook an alert's "Run runbook" button offers: its own
    /// `runbook` annotation, else `[alerts.runbooks]`; only one loaded.
    fn alert_runbook(&self, group: &AlertGroup) -> Option<Arc<crate::runbook::Runbook>> {
        let settings = self.config.alerts.as_ref()?;
        let name = group.runbook.as_ref().or_else(|| settings.runbooks.get(&group.name))?;
        self.registry.runbook(name).cloned()
    }

    fn alert_buttons(&self, group: &AlertGroup, deploy: Option<&RecentDeploy>) -> Vec<AlertButton> {
        if !group.firing() {
            return Vec::new();
        }
        let button = |action, label: String| AlertButton {
            action,
            alert: group.id.clone(),
            version: group.version,
            label,
            deploy: None,
        };
        let mut buttons = Vec::new();
        if group.acknowledged.is_none() {
            buttons.push(button(AlertAction::Acknowledge, "Acknowledge".into()));
        }
        let silences =
            self.config.alerts.as_ref().and_then(|s| s.alertmanager.as_ref()).and_then(|a| a.api_url.as_ref());
        if group.source == crate::alert::Source::Alertmanager && silences.is_some() {
            buttons.push(button(AlertAction::Silence1h, "Silence 1h".into()));
            buttons.push(button(AlertAction::Silence4h, "Silence 4h".into()));
        }
        buttons.push(button(AlertAction::DeclareIncident, "Declare incident".into()));
        if let Some(runbook) = self.alert_runbook(group) {
            buttons.push(button(AlertAction::RunRunbook, format!("Run runbook {}", runbook.name)));
        }
        if let Some(deploy) = deploy {
            let mut rollback = button(AlertAction::RollBack, format!("Roll back {}", deploy.version));
            rollback.deploy = Some(deploy.request_id.clone());
            buttons.push(rollback);
        }
        buttons
    }

    /// `/alerts ack|silence|act` the policy allowed.
    pub(super) async fn run_alert(
        self: &Arc<Self>,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        op: &AlertOp,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let id = op.alert().unwrap_or_default();
        let guard = self.alerts.lock().await;
        let version = match op {
            AlertOp::Ack { version, .. } | AlertOp::Silence { version, .. } | AlertOp::Act { version, .. } => *version,
            AlertOp::Noisy { .. } => None,
        };
        let mut group = self.current_alert(id, version)?;
        let now = self.clock.now();
        let request = self.entry(RecordKind::Request, Some(id), actor, parsed, reply).outcome(Verdict::Allowed);
        let said = |group: &AlertGroup, event: &str, detail: String| {
            AuditEntry {
                args: Some(
                    serde_json::json!({"event": event, "alert": group.name, "source": group.source, "by": actor}),
                ),
                ..self.button_entry(group, actor, parsed, reply)
            }
            .detail(detail)
            .outcome(Verdict::Allowed)
        };
        match op {
            AlertOp::Ack { .. } => {
                if !group.firing() {
                    return Err(Error::Invalid(format!("{id} is resolved; there is nothing to acknowledge")));
                }
                if let Some(ack) = &group.acknowledged {
                    return Err(Error::Invalid(format!("{id} was acknowledged by {} already", ack.by)));
                }
                let text = format!("👀 {id} ({}) acknowledged by {actor}", reply::typed(&group.name));
                let record = said(&group, "acknowledged", text.clone());
                group.acknowledged = Some(Acknowledgement { by: actor.clone(), at: now });
                group.version += 1;
                self.commit_alert(&group, vec![request, record]).await?;
                // Shown under the lock: the messages reach the channel in
                // the order of the changes, so the last one shows the last.
                self.show_alert(&group).await;
                drop(guard);
                self.say(reply, Reply::Text(text)).await;
                Ok(())
            }
            AlertOp::Silence { duration, version, .. } => {
                let duration = duration.unwrap_or(std::time::Duration::from_secs(3600));
                drop(guard);
                self.silence(actor, parsed, reply, id, *version, duration, request).await
            }
            AlertOp::Act { what, of, .. } => {
                let text = self.act_command(&group, what, of.as_deref())?;
                // Claimed first: the message moves on, so a second click on
                // it (a double click, a teammate's) is refused as stale
                // rather than declaring a second incident.
                let claim = said(&group, &format!("act:{what}"), format!("{actor} asks for {text} from {id}"));
                group.version += 1;
                self.commit_alert(&group, vec![request, claim]).await?;
                self.show_alert(&group).await;
                drop(guard);
                // The clicker asking for it, under its own gates; recorded
                // as acted on once it was taken (ran, or waits for approval).
                if let Err(e) = Box::pin(self.on_command(actor, roles, &text, reply)).await {
                    // Refused under its own gates (recorded there), or
                    // before them (a runbook's missing parameter): the
                    // alert's story says it did not happen either way.
                    let verdict = if e.is_internal() { Verdict::Failed } else { Verdict::Denied };
                    let refused = said(&group, "act refused", format!("{text}: {}", e.user_message()));
                    self.audit.append_all(vec![AuditEntry { outcome: Some(verdict), ..refused }]).await?;
                    return Err(Error::Recorded(Box::new(e)));
                }
                let record = said(&group, &format!("acted:{what}"), format!("{actor} asked for {text} from {id}"));
                self.audit.append_all(vec![record]).await?;
                Ok(())
            }
            AlertOp::Noisy { .. } => Err(Error::Invalid("not a change to an alert".into())),
        }
    }

    /// The alert group `id` as stored, refused when a button drawn at
    /// `version` is out of date.
    fn current_alert(&self, id: &str, version: Option<u32>) -> Result<AlertGroup> {
        let Some(group) = self.store.get_alert(id)? else {
            return Err(Error::Invalid(format!("there is no alert {id}")));
        };
        if let Some(v) = version.filter(|v| *v != group.version) {
            return Err(Error::Invalid(format!(
                "{id} changed since that button was drawn (version {v}, now {}); look at its message again",
                group.version
            )));
        }
        Ok(group)
    }

    /// An alert record of what `actor` did about `group` (under the alert's
    /// id and service, so incident timelines and reports find it).
    fn button_entry(
        &self,
        group: &AlertGroup,
        actor: &Actor,
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
    ) -> AuditEntry {
        let service = group.service.as_deref().and_then(|s| self.config.services.get(s));
        AuditEntry {
            service: service.map(|s| s.name.clone()),
            environment: service.map(|s| s.environment.clone()),
            ..self.entry(RecordKind::Alert, Some(&group.id), actor, parsed, reply)
        }
    }

    /// The command an "act" button stands for.
    fn act_command(&self, group: &AlertGroup, what: &str, of: Option<&str>) -> Result<String> {
        let id = &group.id;
        if !group.firing() {
            return Err(Error::Invalid(format!("{id} is resolved; its buttons are gone")));
        }
        if of.is_some() && what != "rollback" {
            return Err(Error::Invalid("--of goes with rollback only".into()));
        }
        match what {
            "incident" => {
                // The alert's name as the title: quotes and line breaks out,
                // so it stays one argument.
                let name: String = group.name.chars().filter(|c| !c.is_control() && *c != '"').take(150).collect();
                let services = group.service.iter().map(|s| format!(" --service {s}")).collect::<String>();
                Ok(format!("/incident declare \"{name} ({id})\" --sev 3{services}"))
            }
            "runbook" => {
                let runbook = self
                    .alert_runbook(group)
                    .ok_or_else(|| Error::Invalid(format!("{id} names no runbook opsbot has loaded")))?;
                let service_param =
                    runbook.params.iter().any(|p| p.name == "service" && p.kind == crate::runbook::ParamKind::Service);
                let given = match (&group.service, service_param) {
                    (Some(service), true) => format!(" service={service}"),
                    _ => String::new(),
                };
                Ok(format!("/runbook run {}{given}", runbook.name))
            }
            "rollback" => {
                let Some(service) = group.service.as_deref() else {
                    return Err(Error::Invalid(format!("{id} names no configured service to roll back")));
                };
                // The deploy the button showed (the rollback is refused if
                // the service changed since), else the one shown now.
                let deploy = match of {
                    Some(deploy) => deploy.to_string(),
                    None => self
                        .recent_deploy(group, self.clock.now())
                        .map(|d| d.request_id)
                        .ok_or_else(|| Error::Invalid(format!("{id}'s service has no recent deploy to roll back")))?,
                };
                Ok(format!("/rollback {service} --of {deploy}"))
            }
            other => Err(Error::Invalid(format!("`{other}` is not something an alert's button does"))),
        }
    }

    /// Commits `records` with `group` stored in the same commit.
    async fn commit_alert(&self, group: &AlertGroup, records: Vec<AuditEntry>) -> Result<()> {
        let store = self.store.clone();
        let stored = group.clone();
        let effect: crate::audit::Effect = Box::new(move || store.put_alert(&stored).map_err(|e| e.to_string()));
        self.audit.commit(records, Some(effect)).await?;
        Ok(())
    }

    /// Silences alert `id` in Alertmanager. The intent is durable before
    /// the request; "silenced" is said only of a silence read back active.
    /// The intake lock is not held while Alertmanager answers, so a slow
    /// one never holds up alerts; the group is read again to record it.
    #[allow(clippy::too_many_arguments)]
    async fn silence(
        &self,
        actor: &Actor,
        parsed: &ParsedCommand,
        reply: &ReplyTarget,
        id: &str,
        version: Option<u32>,
        duration: std::time::Duration,
        request: AuditEntry,
    ) -> Result<()> {
        let guard = self.alerts.lock().await;
        let mut group = self.current_alert(id, version)?;
        let matchers = self.silence_matchers(&group, duration)?;
        let api = self.config.alerts.as_ref().and_then(|s| s.alertmanager.as_ref()).and_then(|a| a.api_url.clone());
        let api = api.unwrap_or_default();
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::hours(1));
        let span = crate::clock::format_duration(duration);
        let shown: Vec<String> = matchers.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let shown = reply::typed(&shown.join(", "));
        let base = self.button_entry(&group, actor, parsed, reply);
        let (name, source) = (group.name.clone(), group.source);
        let record = |event: &str, verdict: Verdict, detail: String, live: Option<serde_json::Value>| {
            AuditEntry {
                args: Some(serde_json::json!({"event": event, "alert": name, "source": source,
                "matchers": matchers, "until": until, "by": actor})),
                live,
                ..base.clone()
            }
            .outcome(verdict)
            .detail(detail)
        };
        let intent = record("silence", Verdict::Started, format!("silence {id} for {span} in Alertmanager"), None);
        // Claimed with its intent: a second click on the same message is
        // refused as stale rather than making a second silence.
        group.version += 1;
        self.commit_alert(&group, vec![request, intent]).await?;
        self.show_alert(&group).await;
        drop(guard);
        let comment = format!("opsbot {id}: {} (silenced from chat by {actor})", group.name);
        let made = crate::action::alertmanager::create_silence(&api, &matchers, now, until, actor.as_str(), &comment);
        let silence = match made.await {
            Ok(silence) => silence,
            Err(e) => {
                let verdict = if matches!(e, ActionError::Unknown(_)) { Verdict::Unknown } else { Verdict::Failed };
                let text = format!("{id} was not silenced: {e}");
                self.audit.append_all(vec![record("silence failed", verdict, text.clone(), None)]).await?;
                return Err(Error::Recorded(Box::new(Error::Invalid(text))));
            }
        };
        let live = match crate::action::alertmanager::read_silence(&api, &silence).await {
            Ok(live) if live.state == "active" => live,
            other => {
                // Made, but not seen active: say what is known, with its id.
                let seen = match other {
                    Ok(live) => format!("it is {} in Alertmanager, not active", live.state),
                    Err(e) => format!("it could not be read back ({e})"),
                };
                let text = format!("{id}: Alertmanager made silence {silence}, but {seen}; look at it there");
                let state = serde_json::json!({"silence": silence});
                self.audit
                    .append_all(vec![record("silence unknown", Verdict::Unknown, text.clone(), Some(state))])
                    .await?;
                return Err(Error::Recorded(Box::new(Error::Invalid(text))));
            }
        };
        let text = format!(
            "🔕 {id} ({}) silenced for {span} by {actor}, until {} (Alertmanager silence {}, matching {shown})",
            reply::typed(&group.name),
            until.format("%H:%M UTC"),
            live.id
        );
        let state = serde_json::json!({"silence": live.id, "state": live.state, "ends_at": live.ends_at,
            "matchers": live.matchers});
        // The silence exists: its record first, on its own, so nothing
        // that goes wrong with the group can leave it unrecorded.
        let done = record("silenced", Verdict::Succeeded, text.clone(), Some(state));
        if let Err(e) = self.audit.append_all(vec![done]).await {
            tracing::error!(error = %e, alert = %id, silence = %live.id, "a silence Alertmanager made could not be recorded");
            return Err(Error::Recorded(Box::new(Error::Invalid(format!(
                "Alertmanager made silence {} for {id}, but opsbot could not record it (see its logs); look at it in Alertmanager",
                live.id
            )))));
        }
        let guard = self.alerts.lock().await;
        // The group as it stands now (alerts may have come meanwhile).
        let recorded = |e: Error| Error::Recorded(Box::new(e));
        let mut group = self.store.get_alert(id).map_err(|e| recorded(e.into()))?.unwrap_or(group);
        group.silences.push(Silence { id: live.id, by: actor.clone(), until });
        group.version += 1;
        self.commit_alert(&group, Vec::new()).await.map_err(recorded)?;
        self.show_alert(&group).await;
        drop(guard);
        self.say(reply, Reply::Text(text)).await;
        Ok(())
    }

    /// What a silence of `group` matches: the labels all its alerts share,
    /// which must include `alertname` (else one click could silence every
    /// alert of a severity or an environment).
    fn silence_matchers(
        &self,
        group: &AlertGroup,
        duration: std::time::Duration,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let id = &group.id;
        let api = self.config.alerts.as_ref().and_then(|s| s.alertmanager.as_ref()).and_then(|a| a.api_url.as_ref());
        if api.is_none() || group.source != crate::alert::Source::Alertmanager {
            return Err(Error::Invalid(format!(
                "{id} came from {}; opsbot silences only Alertmanager alerts, with [alerts.alertmanager] api_url set",
                group.source.name()
            )));
        }
        if !group.firing() {
            return Err(Error::Invalid(format!("{id} is resolved; there is nothing to silence")));
        }
        if duration > std::time::Duration::from_secs(7 * 24 * 3600) {
            return Err(Error::Invalid("a silence from chat lasts at most 7d".into()));
        }
        let matchers = group.common_labels();
        if !matchers.contains_key("alertname") {
            return Err(Error::Invalid(format!(
                "the alerts in {id} share no alertname, so a silence of what they share would reach other alerts; silence them in Alertmanager"
            )));
        }
        Ok(matchers)
    }
}

/// An alert group's message.
fn alert_text(group: &AlertGroup, deploy: Option<&RecentDeploy>, now: DateTime<Utc>) -> String {
    let (firing, all) = group.counts();
    let service = group.service.as_deref().map(|s| format!(" · {s}")).unwrap_or_default();
    let head = if group.firing() { "🔥 FIRING" } else { "✅ RESOLVED" };
    let mut out =
        format!("{head} {} — {}{service}\n{}", group.id, reply::typed(&group.name), reply::typed(&group.summary));
    let mut facts = vec![format!("{firing} of {all} firing")];
    if group.fired > 1 {
        facts.push(format!("fired {}×", group.fired));
    }
    if group.flaps > 0 {
        facts.push(format!("flapping ×{}", group.flaps));
    }
    facts.push(format!("since {}", group.opened_at.format("%H:%M UTC")));
    facts.push(format!("last change {}", group.changed_at.format("%H:%M UTC")));
    if let Some(at) = group.resolved_at {
        facts.push(format!("resolved {}", at.format("%H:%M UTC")));
    }
    facts.push(group.source.name().to_string());
    out.push_str(&format!("\n{}", facts.join(" · ")));
    if let Some(ack) = &group.acknowledged {
        out.push_str(&format!("\n👀 acknowledged by {} at {}", ack.by, ack.at.format("%H:%M UTC")));
    }
    if let Some(silence) = group.silences.iter().rev().find(|s| s.until > now) {
        out.push_str(&format!(
            "\n🔕 silenced by {} until {} (silence {})",
            silence.by,
            silence.until.format("%H:%M UTC"),
            silence.id
        ));
    }
    if let Some(deploy) = deploy {
        let by = deploy.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
        out.push_str(&format!(
            "\n🚀 {} deployed {} ago{by} ({})",
            reply::typed(&deploy.version),
            human(now - deploy.at),
            deploy.request_id
        ));
    }
    // Alerts in it besides the first, newest change first (a few).
    let mut others: Vec<(&String, &crate::alert::group::Member)> = group.members.iter().collect();
    others.sort_by_key(|(_, m)| std::cmp::Reverse(m.changed_at));
    if all > 1 {
        for (_, m) in others.iter().take(5) {
            let mark = if m.state == State::Firing { "🔥" } else { "✅" };
            let instance = m.labels.get("instance").map(|i| format!(" {}", reply::typed(i))).unwrap_or_default();
            out.push_str(&format!("\n{mark} {}{instance}", reply::typed(&m.name)));
        }
        if all > 5 {
            out.push_str(&format!("\n… and {} more", all - 5));
        }
    }
    out
}
