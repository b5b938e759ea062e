//! Policy: who may do what, where, and with how many approvals. Pure functions
//! over the config and a snapshot of state; no I/O, tested with tables.
//!
//! [`evaluate`] checks, in this order, and stops at the first that decides:
//! 1. the actor is a member of some group — else deny (unknown user);
//! 2. for a change, the channel is one the service lists (if it lists any);
//! 3. a rule matches the command's policy key and the environment — else deny;
//! 4. the actor is in that rule's requesters — else deny;
//! 5. for a change, the service is not held by `/lock` — else deny;
//! 6. `--emergency`: the actor is in the rule's break-glass groups → break-glass
//!    (skips the approval wait and any freeze), else deny;
//! 7. an active freeze denies, or raises the approvals needed;
//! 8. for a deploy, an open SEV1/SEV2 incident on the service asks for its
//!    lead's approval besides the approvals the rule asks (a lead outside
//!    the approver groups does not count towards them), unless the lead is
//!    the requester;
//! 9. approvals needed → pending (if enough eligible approvers exist besides the
//!    requester, else deny); otherwise allow.

pub mod freeze;

#[cfg(test)]
mod tests;

use crate::config::{Config, Service};
use crate::event::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A `/lock` on a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub by: Actor,
    pub reason: String,
    pub until: DateTime<Utc>,
}

/// What the policy is asked about.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub actor: &'a Actor,
    /// Groups the platform granted the actor for this request (Discord roles).
    pub granted: &'a [String],
    pub policy: &'a str,
    pub mutates: bool,
    pub service: Option<&'a Service>,
    /// The environment when no service says it (a runbook's).
    pub environment: Option<&'a str>,
    /// More policy keys whose freezes apply: a runbook run's step kinds
    /// (`restart`), so freezing restarts freezes a runbook's restart steps.
    pub frozen_with: &'a [&'a str],
    /// Platform-qualified channel the request came from.
    pub channel: &'a str,
    pub emergency: Option<&'a str>,
    /// The active `/lock` on the service, if any.
    pub hold: Option<&'a Hold>,
    /// For a deploy: the open SEV1/SEV2 incident on the service, if any.
    pub incident: Option<IncidentGate<'a>>,
    pub now: DateTime<Utc>,
}

/// An open SEV1 or SEV2 incident on the service a deploy names.
#[derive(Debug, Clone, Copy)]
pub struct IncidentGate<'a> {
    pub id: &'a str,
    pub severity: u8,
    pub lead: &'a Actor,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Deny(String),
    Allow,
    /// Break-glass: runs now, recorded and announced as such.
    BreakGlass {
        reason: String,
    },
    NeedsApproval(ApprovalNeed),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalNeed {
    pub approvals: u32,
    pub approver_groups: Vec<String>,
    pub ttl: Duration,
    /// The freeze that raised the count, if one did.
    pub freeze: Option<String>,
    /// Whose approval is asked besides the count (an incident's lead), and why.
    pub required: Option<Required>,
}

/// One person whose approval a request needs besides the count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Required {
    pub approver: Actor,
    /// `INC-3 (SEV1) is open on api-service`.
    pub because: String,
    /// When it began to be asked: only an approval given since counts as
    /// the lead's (one given before the hold was not given as its lead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Whose approval an incident asks of `actor`'s deploy to `service`
/// besides the rule's count: the lead's, unless the lead is `actor`.
pub fn required_by(
    config: &Config,
    actor: &Actor,
    gate: Option<IncidentGate<'_>>,
    service: &str,
    now: DateTime<Utc>,
) -> Option<Required> {
    let gate = gate.filter(|gate| config.person(gate.lead) != config.person(actor))?;
    Some(Required {
        approver: gate.lead.clone(),
        because: format!("{} (SEV{}) is open on {service}", gate.id, gate.severity),
        since: Some(now),
    })
}

/// Decides; see the module docs for the order.
pub fn evaluate(config: &Config, subject: &Subject<'_>) -> Decision {
    let actor = subject.actor;
    let granted = subject.granted;
    if !config.is_known_with(actor, granted) {
        return Decision::Deny(format!(
            "{actor} is not in any group of this opsbot; ask an admin to add you to the configuration"
        ));
    }
    let environment = subject.service.map(|s| s.environment.as_str()).or(subject.environment).unwrap_or("");
    if let Some(service) = subject.service.filter(|_| subject.mutates) {
        if !service.channels.is_empty() && !service.channels.iter().any(|c| c == subject.channel) {
            return Decision::Deny(format!(
                "changes to {} are only taken in {}",
                service.name,
                service.channels.join(", ")
            ));
        }
    }
    let where_ = if environment.is_empty() { String::new() } else { format!(" in {environment}") };
    let Some(rule) = config.rule_for(subject.policy, environment) else {
        return Decision::Deny(format!("no rule allows `{}`{where_}", subject.policy));
    };
    if !config.in_any_with(actor, granted, &rule.requesters) {
        return Decision::Deny(format!("only {} may use `{}`{where_}", rule.requesters.join(", "), subject.policy));
    }
    if subject.mutates {
        if let Some(hold) = subject.hold.filter(|h| h.until > subject.now) {
            return Decision::Deny(format!(
                "{} is locked by {} until {}: {} — `/unlock {}` first",
                subject.service.map(|s| s.name.as_str()).unwrap_or("the service"),
                hold.by,
                hold.until.format("%Y-%m-%d %H:%M UTC"),
                crate::engine::reply::typed(&hold.reason),
                subject.service.map(|s| s.name.as_str()).unwrap_or("")
            ));
        }
    }
    if let Some(reason) = subject.emergency {
        if rule.break_glass.is_empty() || !config.in_any_with(actor, granted, &rule.break_glass) {
            let who = if rule.break_glass.is_empty() { "nobody".to_string() } else { rule.break_glass.join(", ") };
            return Decision::Deny(format!("--emergency is only for {who} here; ask for an approval instead"));
        }
        return Decision::BreakGlass { reason: reason.to_string() };
    }
    let mut approvals = rule.approvals;
    let mut freeze_name = None;
    let applies = |w: &crate::policy::freeze::FreezeWindow| {
        std::iter::once(subject.policy)
            .chain(subject.frozen_with.iter().copied())
            .any(|key| w.applies(key, environment, subject.now))
    };
    for window in config.freezes.iter().filter(|w| applies(w)) {
        match window.approvals {
            None => {
                return Decision::Deny(format!(
                    "`{}`{where_} is frozen ({}); break-glass with --emergency if you must",
                    subject.policy, window.name
                ));
            }
            Some(n) if n > approvals => {
                approvals = n;
                freeze_name = Some(window.name.clone());
            }
            Some(_) => {}
        }
    }
    // People, not accounts: the requester's linked accounts are not
    // approvers, and one person's accounts are one approver.
    let requester = config.person(actor);
    let service_name = subject.service.map(|s| s.name.as_str()).unwrap_or("the service");
    let required = required_by(config, actor, subject.incident, service_name, subject.now);
    // The lead's approval is asked for besides the rule's count, never in it.
    if approvals == 0 && required.is_none() {
        return Decision::Allow;
    }
    let approver_groups = if rule.approvers.is_empty() { Vec::new() } else { rule.approvers.clone() };
    let eligible = config
        .members(&approver_groups)
        .iter()
        .map(|a| config.person(a))
        .filter(|person| *person != requester)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u32;
    // Who holds a Discord role is known only when they act: a group roles
    // can grant may have approvers the configuration does not list.
    let role_mapped = approver_groups.iter().any(|g| config.role_mapped(g));
    if eligible < approvals && !role_mapped {
        return Decision::Deny(format!(
            "this needs {approvals} approval(s) from {} but only {eligible} eligible approver(s) besides you exist",
            approver_groups.join(", ")
        ));
    }
    Decision::NeedsApproval(ApprovalNeed { approvals, approver_groups, ttl: rule.ttl, freeze: freeze_name, required })
}
