//! Pending requests and votes. The rules here are pure functions over a
//! [`PendingRequest`]; the engine stores requests (in sled, so they survive a
//! restart) and calls these under one lock.
//!
//! Invariants, each enforced in [`cast_vote`] or [`valid_approvals`]:
//! - the requester never approves their own request;
//! - votes from outside the approver groups are refused with a reason;
//! - one deny from an eligible approver rejects the request;
//! - nothing is approved after `expires_at`;
//! - an approval counts only for the action digest it was given for.

use crate::command::Request;
use crate::event::{Actor, ReplyTarget};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    /// Enough approvals; handed to the executor.
    Approved,
    Denied,
    /// The requester withdrew it.
    Withdrawn,
    Expired,
    /// Approved, but the re-check before running refused it (config or policy changed).
    Invalidated,
}

impl RequestState {
    pub fn is_open(self) -> bool {
        self == RequestState::Pending
    }

    /// Its name, as stored and shown (`pending`, `approved` …).
    pub fn name(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Withdrawn => "withdrawn",
            RequestState::Expired => "expired",
            RequestState::Invalidated => "invalidated",
        }
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub voter: Actor,
    pub approve: bool,
    pub at: DateTime<Utc>,
    /// The action digest this vote was cast on.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The role ids the platform said the voter held when voting (Discord's);
    /// mapped to groups under the configuration of each count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// A request waiting for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub id: String,
    pub requester: Actor,
    pub command: String,
    pub policy: String,
    pub request: Request,
    pub service: String,
    pub environment: String,
    /// Digest of the exact action; see [`action_digest`].
    pub digest: String,
    pub approvals_needed: u32,
    pub approver_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reply: ReplyTarget,
    /// The role ids the platform said the requester held when asking, for
    /// the policy's re-check before running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requester_roles: Vec<String>,
    pub votes: Vec<Vote>,
    /// Someone whose approval must be among those counted (an open
    /// incident's lead), who may approve whatever their groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<crate::policy::Required>,
    /// For a runbook run: its steps as they will run, with the previews
    /// taken when it was requested (shown on the card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub state: RequestState,
    /// Who closed it (denied, withdrew) and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
}

/// SHA-256 over the exact action: request id, requester, service, environment,
/// the typed request (version, replicas …) and the backend target from config.
/// If any of it changes, approvals given for the old digest stop counting.
pub fn action_digest(
    id: &str,
    requester: &Actor,
    service: &str,
    environment: &str,
    request: &Request,
    target: &serde_json::Value,
) -> String {
    let canonical = serde_json::json!({
        "id": id,
        "requester": requester,
        "service": service,
        "environment": environment,
        "request": request,
        "target": target,
    });
    hex::encode(Sha256::digest(serde_json::to_vec(&canonical).expect("digest input serialises")))
}

/// Why a vote was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefusal {
    #[error("you cannot approve your own request; ask someone in {groups}")]
    OwnRequest { groups: String },
    #[error("only {groups} can vote on {id}")]
    NotApprover { id: String, groups: String },
    #[error("{id} expired at {at}; nothing ran. Request it again if it is still needed")]
    Expired { id: String, at: String },
    #[error("{id} is already {state}")]
    Closed { id: String, state: String },
    #[error("you already voted on {id}")]
    AlreadyVoted { id: String },
    #[error("that button belongs to an earlier state of {id} (opsbot's data was reset, or the request changed); vote on its current message, or with `/approve {id}`")]
    Stale { id: String },
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteEffect {
    /// Counted; still waiting for `remaining` approvals.
    Counted { remaining: u32 },
    /// Counted, and enough approvals are in.
    Approved,
    /// An eligible approver denied: the request is rejected.
    Denied,
    /// The requester withdrew their own request.
    Withdrawn,
}

/// Who may vote, under the *current* configuration.
pub trait Voters {
    /// Whether an identity is in the request's approver groups, by
    /// configuration or by the platform roles it held (`roles`).
    fn is_approver(&self, actor: &Actor, roles: &[String]) -> bool;
    /// Who the identity is: linked accounts of one person give the same
    /// answer, so a person is one requester and one approver across
    /// platforms.
    fn person(&self, actor: &Actor) -> String;
}

/// Applies one vote to `request` (mutating it) or refuses it.
pub fn cast_vote(
    request: &mut PendingRequest,
    voter: &Actor,
    approve: bool,
    reason: Option<String>,
    roles: &[String],
    now: DateTime<Utc>,
    voters: &impl Voters,
) -> Result<VoteEffect, VoteRefusal> {
    let mut groups = request.approver_groups.join(", ");
    if let Some(required) = &request.required {
        groups = if groups.is_empty() {
            required.approver.to_string()
        } else {
            format!("{groups} (and {} must approve: {})", required.approver, required.because)
        };
    }
    if !request.state.is_open() {
        return Err(VoteRefusal::Closed { id: request.id.clone(), state: request.state.name().to_string() });
    }
    if now >= request.expires_at {
        return Err(VoteRefusal::Expired {
            id: request.id.clone(),
            at: request.expires_at.format("%H:%M:%S UTC").to_string(),
        });
    }
    let person = voters.person(voter);
    if person == voters.person(&request.requester) {
        if approve {
            return Err(VoteRefusal::OwnRequest { groups });
        }
        request.state = RequestState::Withdrawn;
        request.closed_by = Some(voter.clone());
        request.closed_at = Some(now);
        return Ok(VoteEffect::Withdrawn);
    }
    // The required approver (an incident's lead) may vote whatever their
    // groups; their approval is asked for besides the count, never in it.
    let required = is_required(request, voter, voters);
    if !voters.is_approver(voter, roles) && !required {
        return Err(VoteRefusal::NotApprover { id: request.id.clone(), groups });
    }
    // Approving twice (from any of one person's accounts) counts once and is
    // refused; denying after approving is a change of mind and always
    // taken — the safe direction.
    // (The person asked for as lead whose approval as lead is still
    // missing — they approved before the hold began — may approve again.)
    let lead_missing = required && !required_approved(request, voters);
    if approve
        && !lead_missing
        && request.votes.iter().any(|v| {
            v.approve
                && v.digest == request.digest
                && (voters.is_approver(&v.voter, &v.roles) || is_required(request, &v.voter, voters))
                && voters.person(&v.voter) == person
        })
    {
        return Err(VoteRefusal::AlreadyVoted { id: request.id.clone() });
    }
    request.votes.push(Vote {
        voter: voter.clone(),
        approve,
        at: now,
        digest: request.digest.clone(),
        reason,
        roles: roles.to_vec(),
    });
    if !approve {
        request.state = RequestState::Denied;
        request.closed_by = Some(voter.clone());
        request.closed_at = Some(now);
        return Ok(VoteEffect::Denied);
    }
    let have = valid_approvals(request, voters);
    let missing = request.approvals_needed.saturating_sub(have);
    match (missing, required_approved(request, voters)) {
        (0, true) => Ok(VoteEffect::Approved),
        (0, false) => Ok(VoteEffect::Counted { remaining: 1 }),
        (n, _) => Ok(VoteEffect::Counted { remaining: n }),
    }
}

/// Whether `voter` may approve `request` now: not its requester, and in its
/// approver groups or the person whose approval it requires. (A request
/// whose rule asks no approval and that nothing holds any more is its
/// requester's to run.)
pub fn may_approve(request: &PendingRequest, voter: &Actor, roles: &[String], voters: &impl Voters) -> bool {
    if voters.person(voter) == voters.person(&request.requester) {
        return request.approvals_needed == 0 && request.required.is_none();
    }
    voters.is_approver(voter, roles) || is_required(request, voter, voters)
}

/// Whether `actor` is the person whose approval the request requires.
fn is_required(request: &PendingRequest, actor: &Actor, voters: &impl Voters) -> bool {
    request.required.as_ref().is_some_and(|r| voters.person(&r.approver) == voters.person(actor))
}

/// Whether the person whose approval the request requires (if any) has
/// approved its current form.
pub fn required_approved(request: &PendingRequest, voters: &impl Voters) -> bool {
    if request.required.is_none() {
        return true;
    }
    request_approval_by_required(request, voters).is_some()
}

/// The required approver's approval of the current form, if given.
pub fn request_approval_by_required<'a>(request: &'a PendingRequest, voters: &'a impl Voters) -> Option<&'a Vote> {
    let requester = voters.person(&request.requester);
    let since = request.required.as_ref().and_then(|r| r.since);
    request.votes.iter().find(|v| {
        v.approve
            && v.digest == request.digest
            && since.is_none_or(|since| v.at >= since)
            && is_required(request, &v.voter, voters)
            && voters.person(&v.voter) != requester
    })
}

/// Approvals that count: distinct eligible people other than the
/// requester, cast on the current digest.
pub fn valid_approvals(request: &PendingRequest, voters: &impl Voters) -> u32 {
    let people: std::collections::BTreeSet<String> =
        counted_votes(request, voters).map(|v| voters.person(&v.voter)).collect();
    people.len() as u32
}

/// The approving votes that count: on the current digest, by an approver
/// who is not the requester (one person may have several).
pub fn counted_votes<'a>(request: &'a PendingRequest, voters: &'a impl Voters) -> impl Iterator<Item = &'a Vote> {
    let requester = voters.person(&request.requester);
    request.votes.iter().filter(move |v| {
        v.approve
            && v.digest == request.digest
            && voters.is_approver(&v.voter, &v.roles)
            && voters.person(&v.voter) != requester
    })
}

/// Whether the request may run now: open, not expired, enough valid approvals.
pub fn may_execute(request: &PendingRequest, needed: u32, now: DateTime<Utc>, voters: &impl Voters) -> bool {
    request.state.is_open()
        && now < request.expires_at
        && valid_approvals(request, voters) >= needed
        && required_approved(request, voters)
}
