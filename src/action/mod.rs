//! Actions on infrastructure: the closed [`Action`] enum and the [`Executor`]
//! trait each backend implements. Only this module talks to clusters.
//!
//! An executor reports milestones through a [`Progress`] channel; the engine
//! writes each to the audit trail before showing it to anyone.

pub mod alertmanager;
pub mod backoff;
pub mod ecs;
pub mod http;
pub mod kubernetes;
pub mod simulated;
pub mod smoke;
pub mod sql;

use crate::audit::BoxFuture;
use crate::config::Service;
use serde::Serialize;
use tokio::sync::mpsc;

/// What can be done to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Deploy { version: String },
    Rollback { revision: Option<u32> },
    Restart,
    Scale { replicas: u32 },
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Deploy { .. } => "deploy",
            Action::Rollback { .. } => "rollback",
            Action::Restart => "restart",
            Action::Scale { .. } => "scale",
        }
    }
}

/// Where an executor sends milestones.
#[derive(Clone)]
pub struct Progress(mpsc::Sender<String>);

impl Progress {
    pub fn channel(capacity: usize) -> (Progress, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Progress(tx), rx)
    }
    /// Sends a milestone; waits while the engine records the previous ones, so
    /// a fast executor cannot outrun the audit trail.
    pub async fn report(&self, milestone: impl Into<String>) {
        let _ = self.0.send(milestone.into()).await;
    }
}

/// Who asked for an action and under which request (backends record it, e.g.
/// as a Deployment's change-cause), and what the trail says was verified live
/// on this service before.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunContext {
    pub request_id: String,
    pub requester: String,
    /// The service's earlier successful outcomes that recorded live facts
    /// ([`Outcome::live`]), newest first (a bounded look back).
    pub history: Vec<Verified>,
    /// The leader's term this replica acts in (PostgreSQL store, several
    /// replicas): a fencing token the backend writes with the change and
    /// checks, so a deposed leader's late write is refused. `None` on sled
    /// (one process).
    pub term: Option<u64>,
}

/// An earlier successful action and the live state it read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub request_id: String,
    /// The action's verb (`deploy`, `rollback`, …).
    pub command: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The facts the backend recorded in [`Outcome::live`].
    pub live: serde_json::Value,
}

/// How an action ended when it did not fail: the live state, read back after
/// the change (DESIGN: "an outcome is the live state").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// What runs now, in words.
    pub summary: String,
    /// The same as facts, recorded with the outcome in the audit trail for
    /// later actions to read (see [`RunContext::history`]).
    pub live: Option<serde_json::Value>,
}

impl Outcome {
    pub fn new(summary: impl Into<String>) -> Outcome {
        Outcome { summary: summary.into(), live: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Failed(String),
    /// The bot cannot tell whether the action took effect (a write timed out
    /// and the live state could not settle it, say). Recorded as `unknown`,
    /// never as success; the text says what the live state shows.
    #[error("{0}")]
    Unknown(String),
    #[error("{service} is not known to its backend")]
    NotFound { service: String },
    /// The backend refused for lack of permission (or of credentials); says
    /// which verb on what.
    #[error("{0}")]
    Forbidden(String),
    /// The backend could not be reached, or could not answer (an outage,
    /// throttling, a timeout).
    #[error("{0}")]
    Unreachable(String),
    /// The service's backend is not this executor's kind (a wiring bug).
    #[error("{service} is not configured for this backend")]
    WrongBackend { service: String },
}

/// Something `opsbot check --live` found wrong with one service. The kind
/// decides the exit code (sysexits, like `check`'s 64 for configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveFinding {
    /// The configuration names something the backend does not have (a
    /// container, a deployment, a cluster): fix the configuration.
    Misconfigured(String),
    /// opsbot lacks permissions it needs; the text says which and how to grant them.
    MissingPermissions(String),
    /// The backend could not be asked.
    Unreachable(String),
}

impl LiveFinding {
    /// What an error met while checking says: refused → permissions;
    /// unreachable or unknown (an outage, throttling, a timeout) → the
    /// backend could not be asked; anything else names something the
    /// configuration got wrong.
    pub fn from_error(error: ActionError) -> LiveFinding {
        match error {
            ActionError::Forbidden(text) => LiveFinding::MissingPermissions(text),
            ActionError::Unreachable(text) | ActionError::Unknown(text) => LiveFinding::Unreachable(text),
            other @ (ActionError::Failed(_) | ActionError::NotFound { .. } | ActionError::WrongBackend { .. }) => {
                LiveFinding::Misconfigured(other.to_string())
            }
        }
    }

    /// 64 (configuration), 77 (EX_NOPERM), 69 (EX_UNAVAILABLE).
    pub fn exit_code(&self) -> u8 {
        match self {
            LiveFinding::Misconfigured(_) => 64,
            LiveFinding::MissingPermissions(_) => 77,
            LiveFinding::Unreachable(_) => 69,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            LiveFinding::Misconfigured(text)
            | LiveFinding::MissingPermissions(text)
            | LiveFinding::Unreachable(text) => text,
        }
    }

    /// When several are found, the one whose exit code is reported: a wrong
    /// configuration first, then permissions, then reachability.
    pub fn rank(&self) -> u8 {
        match self {
            LiveFinding::Misconfigured(_) => 3,
            LiveFinding::MissingPermissions(_) => 2,
            LiveFinding::Unreachable(_) => 1,
        }
    }
}

/// A backend that can carry out actions and report status.
pub trait Executor: Send + Sync {
    /// Carries out `action` on `service`, reporting milestones, until it
    /// completes or fails.
    fn execute<'a>(
        &'a self,
        service: &'a Service,
        action: &'a Action,
        context: &'a RunContext,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>>;
    /// A tag the engine puts on its own messages about this backend's actions
    /// (the simulated backend says so everywhere).
    fn label(&self) -> Option<&'static str> {
        None
    }
    /// After a takeover: marks `service` in its backend with the new
    /// leader's `term`, so writes the previous leader still sends (in an
    /// older term) are refused there. Says what it marked; `None` when the
    /// backend has nothing to mark.
    fn fence<'a>(&'a self, service: &'a Service, term: u64) -> BoxFuture<'a, Result<Option<String>, ActionError>> {
        let _ = (service, term);
        Box::pin(async { Ok(None) })
    }
    /// A readable status report.
    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>>;
    /// Whether the service is healthy now (its rollout complete, every
    /// replica ready), with what was seen: a runbook's `wait_healthy` step
    /// polls it. A backend that cannot tell says so (give the service a
    /// `health_url` instead).
    fn healthy<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(bool, String), ActionError>> {
        Box::pin(async move {
            Err(ActionError::Failed(format!(
                "{}'s backend cannot say whether it is healthy; give the service a health_url",
                service.name
            )))
        })
    }
}
