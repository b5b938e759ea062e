//! One API call and what can go wrong with it, as a closed set: retry
//! decisions match on [`Failure`], never on an error's text. Reads that fail
//! transiently are retried with backoff and jitter; a write that may have
//! landed is settled by the caller re-reading the live state.

use super::Target;
use crate::action::ActionError;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Why one call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// 409: someone else wrote first; re-read and try again.
    Conflict,
    /// 403: RBAC does not grant the verb.
    Forbidden,
    /// 404.
    NotFound,
    /// 429: the server asks to slow down; nothing was applied.
    Throttled,
    /// 5xx: the server failed; a write may or may not have been applied.
    ServerError { code: u16, message: String },
    /// Any other answer: the request itself is wrong and retrying cannot help.
    Rejected { code: u16, message: String },
    /// The connection was refused: nothing reached the server.
    Refused,
    /// The connection broke or could not be made for another reason; a write
    /// may or may not have been applied.
    Transport(String),
    /// No answer within `call_timeout`; a write may or may not have been applied.
    TimedOut,
    /// The client could not build the request or read the answer.
    Client(String),
    /// An opsbot leader of a newer term wrote the Deployment: this replica
    /// no longer leads, and its write is refused (see `fence`).
    Fenced { newer: u64, ours: u64 },
    /// The read a fenced write starts with failed (this says how): the
    /// write was not sent.
    NotSent(String),
}

impl Failure {
    /// Worth another try: the same request may well succeed in a moment.
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Throttled
                | Failure::ServerError { .. }
                | Failure::Refused
                | Failure::Transport(_)
                | Failure::TimedOut
        )
    }

    /// For a write: the server may have applied it although no success came
    /// back, so only the live state can say.
    pub(super) fn may_have_landed(&self) -> bool {
        matches!(self, Failure::ServerError { .. } | Failure::Transport(_) | Failure::TimedOut)
    }

    fn classify(error: kube::Error) -> Failure {
        match error {
            kube::Error::Api(status) => match status.code {
                409 => Failure::Conflict,
                403 => Failure::Forbidden,
                404 => Failure::NotFound,
                429 => Failure::Throttled,
                code @ 500..=599 => Failure::ServerError { code, message: status.message },
                code => Failure::Rejected { code, message: status.message },
            },
            kube::Error::HyperError(e) => Failure::transport(&e),
            kube::Error::Service(e) => Failure::transport(e.as_ref()),
            other => Failure::Client(chain(&other)),
        }
    }

    fn transport(error: &(dyn std::error::Error + 'static)) -> Failure {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return Failure::Refused;
                }
            }
            source = e.source();
        }
        Failure::Transport(chain(error))
    }
}

/// An error and its causes, each by its Display text ("a: b: c").
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// A failed call: which verb on which resource, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallError {
    pub(super) verb: &'static str,
    pub(super) resource: &'static str,
    pub(super) failure: Failure,
    /// How many times it was tried.
    pub(super) attempts: u32,
}

impl CallError {
    /// The text the on-call engineer reads.
    pub(super) fn explain(&self, t: &Target<'_>) -> String {
        let (verb, resource) = (self.verb, self.resource);
        let tries = if self.attempts > 1 { format!(" (tried {} times)", self.attempts) } else { String::new() };
        let server =
            format!("the Kubernetes API server{}", t.context.map(|c| format!(" of context {c}")).unwrap_or_default());
        match &self.failure {
            Failure::Forbidden => format!(
                "Kubernetes refused to let opsbot {verb} {resource} in namespace {} (403 Forbidden): grant its service account `{verb}` on `{resource}` (see deploy/kubernetes/base/rbac.yaml)",
                t.namespace
            ),
            Failure::NotFound if resource == "deployments" => {
                format!("deployment {} not found in namespace {} (404)", t.deployment, t.namespace)
            }
            Failure::NotFound => format!("{resource} not found in namespace {} (404)", t.namespace),
            Failure::Conflict => format!(
                "Kubernetes kept answering 409 Conflict to {verb} {resource}{tries}: another writer keeps changing deployment {}",
                t.deployment
            ),
            Failure::Throttled => format!("Kubernetes kept answering 429 Too Many Requests to {verb} {resource}{tries}"),
            Failure::ServerError { code, message } | Failure::Rejected { code, message } => {
                format!("Kubernetes answered {code} to {verb} {resource}{tries}: {message}")
            }
            Failure::Refused => format!("cannot reach {server}: connection refused{tries}"),
            Failure::Transport(text) => format!("cannot reach {server}{tries}: {text}"),
            Failure::TimedOut => format!(
                "{server} did not answer `{verb} {resource}` within {}{tries}",
                crate::clock::format_duration(t.call_timeout)
            ),
            Failure::Client(text) => format!("opsbot could not {verb} {resource}: {text}"),
            Failure::NotSent(read) => format!("{read}; the {verb} of {resource} was not sent{tries}"),
            Failure::Fenced { newer, ours } => format!(
                "refused: deployment {} was written by opsbot's leader in term {newer}, after this replica's term {ours}; this replica no longer leads, and nothing was changed",
                t.path()
            ),
        }
    }

    /// As an action's error: permissions (403), the API server not
    /// answering usefully (unreachable, timed out, 429, 5xx), or the request
    /// itself is wrong.
    pub(super) fn into_action(self, t: &Target<'_>) -> ActionError {
        let text = self.explain(t);
        match self.failure {
            Failure::Forbidden => ActionError::Forbidden(text),
            Failure::Refused
            | Failure::Transport(_)
            | Failure::TimedOut
            | Failure::Throttled
            | Failure::ServerError { .. }
            | Failure::NotSent(_) => ActionError::Unreachable(text),
            Failure::Conflict
            | Failure::NotFound
            | Failure::Rejected { .. }
            | Failure::Client(_)
            | Failure::Fenced { .. } => ActionError::Failed(text),
        }
    }
}

/// One call, bounded by the service's `call_timeout`.
pub(super) async fn timed<T>(
    t: &Target<'_>,
    verb: &'static str,
    resource: &'static str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    let failure = match tokio::time::timeout(t.call_timeout, call).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => Failure::classify(e),
        Err(_) => Failure::TimedOut,
    };
    Err(CallError { verb, resource, failure, attempts: 1 })
}

pub(super) use crate::action::backoff::Backoff;

/// How long to keep retrying a transient failure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    pub(super) attempts: u32,
    pub(super) until: Instant,
}

impl Patience {
    /// A few tries: enough to ride out a blip (a restarting API server, one
    /// 500), short enough that a dead server is reported promptly.
    pub(super) fn few() -> Patience {
        Patience { attempts: 4, until: Instant::now() + Duration::from_secs(60) }
    }

    /// Until `until`, however many tries that takes (a rollout's deadline).
    pub(super) fn until(until: Instant) -> Patience {
        Patience { attempts: u32::MAX, until }
    }
}

/// Runs `call` until it succeeds, fails for good, or patience runs out.
pub(super) async fn retrying<T, F, Fut>(patience: Patience, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut backoff = Backoff::default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(mut e) => {
                let wait = backoff.next_wait();
                if !e.failure.is_transient() || attempts >= patience.attempts || Instant::now() + wait > patience.until
                {
                    e.attempts = attempts;
                    return Err(e);
                }
                tracing::debug!(verb = e.verb, resource = e.resource, failure = ?e.failure, "retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_decisions_follow_the_kind_of_failure() {
        let server = Failure::ServerError { code: 500, message: "etcd timeout".into() };
        let rejected = Failure::Rejected { code: 422, message: "invalid".into() };
        let cases = [
            (Failure::Conflict, false, false),
            (Failure::Forbidden, false, false),
            (Failure::NotFound, false, false),
            (Failure::Throttled, true, false),
            (server, true, true),
            (rejected, false, false),
            (Failure::Refused, true, false),
            (Failure::Transport("reset".into()), true, true),
            (Failure::TimedOut, true, true),
            (Failure::Client("bad json".into()), false, false),
            (Failure::Fenced { newer: 3, ours: 2 }, false, false),
            (Failure::NotSent("timed out".into()), false, false),
        ];
        for (failure, transient, landed) in cases {
            assert_eq!(failure.is_transient(), transient, "{failure:?}");
            assert_eq!(failure.may_have_landed(), landed, "{failure:?}");
        }
    }

    #[test]
    fn api_statuses_are_classified_by_code() {
        let status = |code| kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed());
        assert_eq!(Failure::classify(status(409)), Failure::Conflict);
        assert_eq!(Failure::classify(status(403)), Failure::Forbidden);
        assert_eq!(Failure::classify(status(503)), Failure::ServerError { code: 503, message: "m".into() });
        assert_eq!(Failure::classify(status(400)), Failure::Rejected { code: 400, message: "m".into() });
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::classify(kube::Error::Service(Box::new(refused))), Failure::Refused);
    }
}
