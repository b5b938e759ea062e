//! Approval requests: opening them, votes, the re-check before running, expiry.

use super::Engine;
use crate::approval::{self, PendingRequest, RequestState, VoteEffect};
use crate::audit::{AuditEntry, RecordKind, Verdict};
use crate::command::ParsedCommand;
use crate::engine::reply::{ApprovalView, Reply, VERSION_LEN};
use crate::error::{Error, Result};
use crate::event::{Actor, ReplyTarget};
use crate::policy::{ApprovalNeed, Decision};
use std::sync::Arc;

/// Who asked for a request, and where (for [`Engine::pending_request`]).
pub(super) struct Asked<'a> {
    pub id: &'a str,
    pub actor: &'a Actor,
    pub roles: &'a [String],
    pub parsed: &'a ParsedCommand,
    pub reply: &'a ReplyTarget,
}

/// The card people see for `request`.
pub fn view(request: &PendingRequest, approvals_have: u32) -> ApprovalView {
    ApprovalView {
        id: request.id.clone(),
        version: request.digest.chars().take(VERSION_LEN).collect(),
        action: request.request.describe(),
        service: request.service.clone(),
        environment: request.environment.clone(),
        requester: request.requester.clone(),
        approvals_needed: request.approvals_needed,
        approvals_have,
        approver_groups: request.approver_groups.clone(),
        expires_at: request.expires_at,
        freeze: request.freeze.clone(),
        also_needs: request.required.as_ref().map(|r| {
            // Shown as given once that person approved this form (their
            // accounts linked under `[people]` aside, which the count knows).
            let given = request.votes.iter().any(|v| {
                v.approve
                    && v.digest == request.digest
                    && v.voter == r.approver
                    && r.since.is_none_or(|since| v.at >= since)
            });
            if given {
                format!("{} approved, as asked: {}", r.approver, r.because)
            } else {
                format!("{} must approve too: {}", r.approver, r.because)
            }
        }),
        plan: request.plan.clone(),
        state: request.state,
        decided_by: request.closed_by.clone(),
    }
}

impl Engine {
    /// The digest of the action as the configuration describes it now.
    fn current_digest(
        &self,
        id: &str,
        requester: &Actor,
        parsed_service: &str,
        request: &crate::command::Request,
    ) -> Option<String> {
        let service = self.config.services.get(parsed_service)?;
        let target = serde_json::to_value(&service.backend).ok()?;
        Some(approval::action_digest(id, requester, &service.name, &service.environment, request, &target))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_request(
        &self,
        id: &str,
        actor: &Actor,
        roles: &[String],
        parsed: &ParsedCommand,
        service: &str,
        reply: &ReplyTarget,
        need: ApprovalNeed,
    ) -> Result<PendingRequest> {
        let (Some(configured), Some(digest)) =
            (self.config.services.get(service), self.current_digest(id, actor, service, &parsed.request))
        else {
            return Err(Error::Invalid(format!("{service} is not a configured service")));
        };
        let asked = Asked { id, actor, roles, parsed, reply };
        Ok(self.pending_request(asked, need, service, &configured.environment, digest, None))
    }

    /// A new open request: who asked what, where; what it needs; what its
    /// approvals bind to (`digest`); for a runbook run, its plan as shown.
    pub(super) fn pending_request(
        &self,
        asked: Asked<'_>,
        need: ApprovalNeed,
        service: &str,
        environment: &str,
        digest: String,
        plan: Option<String>,
    ) -> PendingRequest {
        let now = self.clock.now();
        PendingRequest {
            id: asked.id.to_string(),
            requester: asked.actor.clone(),
            command: asked.parsed.command.clone(),
            policy: asked.parsed.policy.clone(),
            request: asked.parsed.request.clone(),
            environment: environment.to_string(),
            service: service.to_string(),
            digest,
            approvals_needed: need.approvals,
            approver_groups: need.approver_groups,
            freeze: need.freeze,
            created_at: now,
            expires_at: now + chrono::Duration::from_std(need.ttl).unwrap_or(chrono::Duration::minutes(30)),
            reply: asked.reply.clone(),
            requester_roles: asked.roles.to_vec(),
            votes: Vec::new(),
            required: need.required,
            plan,
            state: RequestState::Pending,
            closed_by: None,
            closed_at: None,
        }
    }

    fn parsed_of(request: &PendingRequest) -> ParsedCommand {
        ParsedCommand {
            command: request.command.clone(),
            policy: request.policy.clone(),
            mutates: true,
            request: request.request.clone(),
            emergency: None,
        }
    }

    fn vote_entry(
        &self,
        request: &PendingRequest,
        voter: &Actor,
        reply: &ReplyTarget,
        outcome: Verdict,
        detail: String,
    ) -> AuditEntry {
        request_entry(RecordKind::Vote, request, Some(voter), reply, outcome, &detail)
    }

    /// A decision about `request` (its requirement changed, a re-check, a
    /// run its approvals completed), by `by` (opsbot itself when none).
    fn decision_entry(
        &self,
        request: &PendingRequest,
        by: Option<&Actor>,
        reply: &ReplyTarget,
        outcome: Verdict,
        detail: &str,
    ) -> AuditEntry {
        request_entry(RecordKind::Decision, request, by, reply, outcome, detail)
    }

    /// A vote from `/approve`, `/deny`, a button or a reaction.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn vote(
        self: &Arc<Self>,
        voter: &Actor,
        roles: &[String],
        id: &str,
        approve: bool,
        reason: Option<String>,
        version: Option<&str>,
        reply: &ReplyTarget,
    ) -> Result<()> {
        self.metrics.request(voter.platform(), if approve { "approve" } else { "deny" }, "vote");
        let _guard = self.votes.lock().await;
        let mut request = self.store.get_pending(id)?.ok_or_else(|| Error::UnknownRequest(id.to_string()))?;
        let now = self.clock.now();
        if request.state.is_open() && now >= request.expires_at {
            self.expire(&mut request).await?;
        }
        // An approval is checked against what the incidents ask now (the
        // lead may have changed, or the hold lifted). A deny needs no
        // incident at all: the safe direction never waits on their state.
        let current = version.is_none_or(|v| v.len() == VERSION_LEN && request.digest.starts_with(v));
        if approve && request.state.is_open() && current {
            // Brought up to date by opsbot itself, whoever voted.
            self.sync_requirement(&mut request, None).await?;
            let config = self.config.clone();
            let voters = Voters::of(&config, &request);
            let eligible = approval::may_approve(&request, voter, roles, &voters);
            if eligible && approval::may_execute(&request, request.approvals_needed, now, &voters) {
                // Complete already (a hold was lifted after the last
                // approval): this approver's word runs it, on the record.
                let requester = self.config.person(voter) == self.config.person(&request.requester);
                let voted = request.votes.iter().any(|v| {
                    v.approve && v.digest == request.digest && self.config.person(&v.voter) == self.config.person(voter)
                });
                let record = if requester {
                    // Not an approval of one's own request: the rule asks none.
                    self.decision_entry(
                        &request,
                        Some(voter),
                        reply,
                        Verdict::Pending,
                        "run by its requester: its rule asks no approval and nothing holds it now",
                    )
                } else if voted {
                    self.decision_entry(
                        &request,
                        Some(voter),
                        reply,
                        Verdict::Pending,
                        "confirmed: its approvals were complete",
                    )
                } else {
                    request.votes.push(approval::Vote {
                        voter: voter.clone(),
                        approve: true,
                        at: now,
                        digest: request.digest.clone(),
                        reason: None,
                        roles: roles.to_vec(),
                    });
                    self.store.put_pending(&request)?;
                    self.vote_entry(&request, voter, reply, Verdict::Approve, "approved".to_string())
                };
                self.audit.append(record).await?;
                return self.run_approved(request, voter).await;
            }
        }
        let config = self.config.clone();
        let mut updated = request.clone();
        let voters = Voters::of(&config, &request);
        let cast = match version {
            // A button made for another request that had this id (a reset
            // store), or for an older form of it: never applied to this one.
            Some(version) if version.len() != VERSION_LEN || !request.digest.starts_with(version) => {
                Err(approval::VoteRefusal::Stale { id: request.id.clone() })
            }
            _ => approval::cast_vote(&mut updated, voter, approve, reason.clone(), roles, now, &voters),
        };
        let effect = match cast {
            Ok(effect) => effect,
            Err(refusal) => {
                let record = self.vote_entry(
                    &request,
                    voter,
                    reply,
                    Verdict::Refused,
                    match config.roles_note(voter, roles) {
                        Some(note) => {
                            format!("{} vote refused: {refusal}; {note}", if approve { "approve" } else { "deny" })
                        }
                        None => format!("{} vote refused: {refusal}", if approve { "approve" } else { "deny" }),
                    },
                );
                self.audit.append(record).await?;
                return Err(refusal.into());
            }
        };
        let request = updated;
        let have = approval::valid_approvals(&request, &Voters::of(&config, &request));
        let detail = match (&effect, &reason) {
            (VoteEffect::Denied, Some(r)) => format!("denied: {r}"),
            (VoteEffect::Withdrawn, _) => "withdrawn by the requester".into(),
            _ => format!("{} ({have}/{})", if approve { "approved" } else { "denied" }, request.approvals_needed),
        };
        // Why someone the configuration does not list could vote.
        let detail = match config.roles_note(voter, roles) {
            Some(note) => format!("{detail}; {note}"),
            None => detail,
        };
        let outcome = match effect {
            VoteEffect::Counted { .. } | VoteEffect::Approved => Verdict::Approve,
            VoteEffect::Denied => Verdict::Deny,
            VoteEffect::Withdrawn => Verdict::Withdraw,
        };
        self.store.put_pending(&request)?;
        self.audit.append(self.vote_entry(&request, voter, reply, outcome, detail)).await?;
        let target = request.reply.clone();
        match effect {
            VoteEffect::Counted { remaining } => {
                let lead_missing = !approval::required_approved(&request, &Voters::of(&config, &request));
                let text = match &request.required {
                    Some(required) if lead_missing && have >= request.approvals_needed => format!(
                        "{voter} approved {id}; waiting for {}'s approval ({})",
                        required.approver, required.because
                    ),
                    Some(required) if lead_missing => format!(
                        "{voter} approved {id}; {} more approval(s) needed, and {}'s ({})",
                        request.approvals_needed - have,
                        required.approver,
                        required.because
                    ),
                    _ => format!("{voter} approved {id}; {remaining} more approval(s) needed"),
                };
                self.say(&target, Reply::Text(text)).await;
                self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
                Ok(())
            }
            VoteEffect::Denied | VoteEffect::Withdrawn => {
                let what = if effect == VoteEffect::Denied { "denied" } else { "withdrawn" };
                let why = reason.map(|r| format!(": {}", crate::engine::reply::typed(&r))).unwrap_or_default();
                self.say(&target, Reply::Text(format!("{id} {what} by {voter}{why}; nothing will run"))).await;
                self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
                Ok(())
            }
            VoteEffect::Approved => self.run_approved(request, voter).await,
        }
    }

    /// Enough votes are in. Check everything again — digest, policy, expiry —
    /// and only then run.
    async fn run_approved(self: &Arc<Self>, mut request: PendingRequest, last_voter: &Actor) -> Result<()> {
        let parsed = Self::parsed_of(&request);
        let target = request.reply.clone();
        let now = self.clock.now();
        let config = self.config.clone();
        // A runbook run: its plan now, which must be the one approved.
        let run =
            matches!(request.request, crate::command::Request::Runbook { .. }).then(|| self.approved_plan(&request));
        let digest_now = self.current_digest(&request.id, &request.requester, &request.service, &request.request);
        let changed = match &run {
            Some(Err(why)) => Some(why.clone()),
            Some(Ok(_)) => None,
            None if digest_now.as_deref() != Some(request.digest.as_str()) => Some("the action changed since it was requested (the service's configuration differs); approvals do not carry over — request it again".to_string()),
            None => None,
        };
        let decision = match &run {
            Some(Ok((runbook, plan))) => self.decide_runbook(
                &request.requester,
                &request.requester_roles,
                &parsed,
                runbook,
                plan,
                &request.reply.channel,
            )?,
            _ => self.decide(&request.requester, &request.requester_roles, &parsed, &request.reply.channel, None)?,
        };
        let refusal = if changed.is_some() {
            changed
        } else {
            match decision {
                Decision::Deny(reason) => Some(reason),
                Decision::NeedsApproval(ApprovalNeed { required: Some(needed), .. })
                    if request.required.as_ref().is_none_or(|r| r.approver != needed.approver) =>
                {
                    // An incident was declared on the service while it waited.
                    let text = format!(
                        "{} now needs {}'s approval too ({}); approvals so far still count",
                        request.id, needed.approver, needed.because
                    );
                    request.required = Some(needed);
                    self.store.put_pending(&request)?;
                    let have = approval::valid_approvals(&request, &Voters::of(&config, &request));
                    if approval::may_execute(&request, request.approvals_needed, now, &Voters::of(&config, &request)) {
                        // The lead's approval is already among them.
                        return Box::pin(self.run_approved(request, last_voter)).await;
                    }
                    self.audit
                        .append(self.decision_entry(&request, Some(last_voter), &target, Verdict::Pending, &text))
                        .await?;
                    self.say(&target, Reply::Text(text)).await;
                    self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
                    return Ok(());
                }
                Decision::NeedsApproval(need) if need.approvals > request.approvals_needed => {
                    // A freeze began while it waited: it needs more approvals now.
                    request.approvals_needed = need.approvals;
                    request.freeze = need.freeze;
                    self.store.put_pending(&request)?;
                    let have = approval::valid_approvals(&request, &Voters::of(&config, &request));
                    let text = format!(
                        "{} now needs {} approvals ({} in force); {have} so far",
                        request.id,
                        request.approvals_needed,
                        request.freeze.as_deref().unwrap_or("policy changed")
                    );
                    self.audit
                        .append(self.decision_entry(&request, Some(last_voter), &target, Verdict::Pending, &text))
                        .await?;
                    self.say(&target, Reply::Text(text)).await;
                    self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
                    return Ok(());
                }
                _ => None,
            }
        };
        let groups = request.approver_groups.clone();
        let voters = Voters { config: &config, groups: &groups };
        let have = approval::valid_approvals(&request, &voters);
        if refusal.is_none() && !approval::may_execute(&request, request.approvals_needed, now, &voters) {
            return Err(Error::Denied(format!(
                "{} cannot run: it is not open with enough valid approvals",
                request.id
            )));
        }
        request.state = if refusal.is_some() { RequestState::Invalidated } else { RequestState::Approved };
        request.closed_at = Some(now);
        request.closed_by = Some(last_voter.clone());
        self.store.put_pending(&request)?;
        if let Some(reason) = refusal {
            let record = self.decision_entry(&request, Some(last_voter), &target, Verdict::Invalidated, &reason);
            self.audit.append(record).await?;
            self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
            return Err(Error::Denied(format!("{} will not run: {reason}", request.id)));
        }
        let detail = format!("{have}/{} approvals; policy re-checked", request.approvals_needed);
        self.audit.append(self.decision_entry(&request, Some(last_voter), &target, Verdict::Approved, &detail)).await?;
        self.say(&target, Reply::ApprovalUpdate(view(&request, have))).await;
        let mut approvers: Vec<Actor> = approval::counted_votes(&request, &voters).map(|v| v.voter.clone()).collect();
        if let Some(lead) = approval::request_approval_by_required(&request, &voters) {
            if !approvers.contains(&lead.voter) {
                approvers.push(lead.voter.clone());
            }
        }
        if let Some(Ok((runbook, plan))) = run {
            let start = super::runbook::RunbookStart {
                id: &request.id,
                requester: &request.requester,
                parsed: &parsed,
                runbook,
                plan,
                reply: &target,
                approved_by: approvers,
                break_glass: None,
                announce: None,
            };
            return self.start_runbook(start).await;
        }
        let crate::command::Kind::Change { service, action } = request.request.kind() else {
            // Only changes are ever held for approval; a stored request that is
            // not one (from a store written by a build that allowed it) is refused.
            return Err(Error::Denied(format!("{} is not a change and cannot run as one", request.id)));
        };
        let start = super::Start {
            id: &request.id,
            requester: &request.requester,
            parsed: &parsed,
            service,
            action,
            reply: &target,
            approved_by: approvers,
            break_glass: None,
            announce: None,
        };
        self.start_action(start).await
    }

    /// Brings `request`'s lead requirement in line with the open incidents
    /// now: stored, recorded (a decision, by whoever changed the incident
    /// or voted), then said. Returns whether whose approval is asked changed.
    pub(super) async fn sync_requirement(&self, request: &mut PendingRequest, by: Option<&Actor>) -> Result<bool> {
        let required = self.requirement_now(request)?;
        let person = |r: &Option<crate::policy::Required>| r.as_ref().map(|r| self.config.person(&r.approver));
        if person(&required) == person(&request.required) {
            // The same person, perhaps for a changed reason (SEV1 to SEV2):
            // kept quietly, and since when it is asked is kept too.
            if let (Some(now), Some(kept)) = (&required, &mut request.required) {
                if now.because != kept.because {
                    kept.because = now.because.clone();
                    self.store.put_pending(request)?;
                }
            }
            return Ok(false);
        }
        let config = self.config.clone();
        let have = approval::valid_approvals(request, &Voters::of(&config, request));
        let before = std::mem::replace(&mut request.required, required.clone());
        // Who can make it run now, once it is complete.
        let complete =
            approval::may_execute(request, request.approvals_needed, self.clock.now(), &Voters::of(&config, request));
        let next = match (complete, request.approvals_needed, &request.required) {
            (false, _, _) => String::new(),
            // A rule that asks no approval: nothing but the hold stood in its way.
            (true, 0, None) => format!("; its rule asks no approval, so {}'s `/approve` runs it", request.requester),
            (true, _, _) => "; its approvals are complete, so an approver's `/approve` runs it".to_string(),
        };
        let text = match (&before, &required) {
            (_, Some(now)) => {
                format!("{} now needs {}'s approval too ({}){next}", request.id, now.approver, now.because)
            }
            (Some(before), None) => {
                let why = if self.config.person(&request.requester) == self.config.person(&before.approver) {
                    format!("{} leads the incident now", request.requester)
                } else {
                    format!("no open SEV1/SEV2 incident holds deploys to {} now", request.service)
                };
                format!("{} no longer needs {}'s approval: {why}{next}", request.id, before.approver)
            }
            (None, None) => return Ok(false),
        };
        self.store.put_pending(request)?;
        let target = request.reply.clone();
        self.audit.append(self.decision_entry(request, by, &target, Verdict::Pending, &text)).await?;
        self.say(&target, Reply::Text(text)).await;
        self.say(&target, Reply::ApprovalUpdate(view(request, have))).await;
        Ok(true)
    }

    /// After an incident changed: every deploy waiting on `services` is
    /// told whose approval it needs now. Nothing is run from here: a
    /// request the change completed runs on an approver's next `/approve`.
    pub(super) async fn refresh_waiting(&self, services: &[String], by: &Actor) {
        let _guard = self.votes.lock().await;
        let now = self.clock.now();
        let open = match self.store.open_requests() {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "open requests unreadable; their approvals were not brought up to date");
                return;
            }
        };
        for mut request in open {
            let deploy = matches!(request.request, crate::command::Request::Deploy { .. });
            if deploy && services.contains(&request.service) && now < request.expires_at {
                if let Err(e) = self.sync_requirement(&mut request, Some(by)).await {
                    tracing::warn!(error = %e, request = %request.id, "a waiting request's approvals could not be brought up to date");
                }
            }
        }
    }

    /// Marks one open request expired, records it and says so.
    async fn expire(&self, request: &mut PendingRequest) -> Result<()> {
        request.state = RequestState::Expired;
        request.closed_at = Some(request.expires_at);
        self.store.put_pending(request)?;
        let record = AuditEntry {
            request_id: Some(request.id.clone()),
            actor: Some(request.requester.to_string()),
            command: Some(request.command.clone()),
            service: Some(request.service.clone()),
            environment: Some(request.environment.clone()),
            ..AuditEntry::new(RecordKind::Expired)
        }
        .outcome(Verdict::Expired)
        .detail("no decision before the deadline; nothing ran");
        self.audit.append(record).await?;
        let config = self.config.clone();
        let have = approval::valid_approvals(request, &Voters::of(&config, request));
        self.say(
            &request.reply,
            Reply::Text(format!("⌛ {} expired without enough approvals; nothing ran", request.id)),
        )
        .await;
        self.say(&request.reply, Reply::ApprovalUpdate(view(request, have))).await;
        Ok(())
    }

    /// Expires every open request past its deadline.
    pub(super) async fn expire_due(&self) -> Result<()> {
        let _guard = self.votes.lock().await;
        let now = self.clock.now();
        for mut request in self.store.open_requests()? {
            if now >= request.expires_at {
                self.expire(&mut request).await?;
            }
        }
        Ok(())
    }
}

/// A record about `request` by `by` (opsbot itself when none).
fn request_entry(
    kind: RecordKind,
    request: &PendingRequest,
    by: Option<&Actor>,
    reply: &ReplyTarget,
    outcome: Verdict,
    detail: &str,
) -> AuditEntry {
    AuditEntry {
        request_id: Some(request.id.clone()),
        actor: by.map(Actor::to_string),
        channel: Some(reply.channel.clone()),
        command: Some(request.command.clone()),
        service: Some(request.service.clone()),
        environment: Some(request.environment.clone()),
        ..AuditEntry::new(kind)
    }
    .outcome(outcome)
    .detail(detail)
}

/// The voters of one request under the current configuration: its approver
/// groups, and `[people]` linking one person's accounts.
struct Voters<'a> {
    config: &'a crate::config::Config,
    groups: &'a [String],
}

impl<'a> Voters<'a> {
    fn of(config: &'a crate::config::Config, request: &'a PendingRequest) -> Voters<'a> {
        Voters { config, groups: &request.approver_groups }
    }
}

impl approval::Voters for Voters<'_> {
    fn is_approver(&self, actor: &Actor, roles: &[String]) -> bool {
        // Roles are mapped under the current configuration: removing a
        // mapping revokes the votes it allowed, as removing a member does.
        self.config.in_any_with(actor, &self.config.granted_to(actor, roles), self.groups)
    }
    fn person(&self, actor: &Actor) -> String {
        self.config.person(actor)
    }
}
