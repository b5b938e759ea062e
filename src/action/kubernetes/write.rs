//! Writes whose answer may be lost. A 409, 429 or a refused connection is
//! retried with backoff; a write that got no answer (timeout, broken
//! connection, 5xx) may still have been applied, so the live Deployment is
//! re-read and decides: landed → carry on from there; not landed → the write
//! (idempotent) is tried again, and after the last try the outcome is
//! `unknown` (an API server can commit a write after its client gave up);
//! unreadable → `unknown`, never a guess. All of it, and the rollout watch
//! after it, share one deadline: the action's.
//!
//! Also the two simple writes, restart and scale.

use super::call::{timed, Backoff, CallError, Failure, Patience};
use super::fence::Kind;
use super::rollout::{describe_live, Expect, WatchEnd};
use super::{live_facts, refuse_if_paused, Kubernetes, Target, RESTARTED_AT};
use crate::action::{ActionError, Outcome, Progress};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::future::Future;
use tokio::time::Instant;

/// Tries at one write.
const WRITE_ATTEMPTS: u32 = 4;

/// How a write that did not fail ended.
pub(super) enum Written<T> {
    /// The server answered.
    Answered(T),
    /// No answer came, but re-reading shows the write landed.
    ReadBack(Box<Deployment>),
}

impl Written<Deployment> {
    pub(super) fn deployment(self) -> Deployment {
        match self {
            Written::Answered(d) => d,
            Written::ReadBack(d) => *d,
        }
    }
}

/// What re-reading after a lost answer showed.
enum Reread {
    Landed(Box<Deployment>),
    NotYet(Box<Deployment>),
}

/// Ends a watch of a change other than a deploy (whose failure may roll back).
pub(super) fn settle(t: &Target<'_>, what: &str, end: WatchEnd) -> Result<Deployment, ActionError> {
    match end {
        WatchEnd::Complete(d) => Ok(*d),
        WatchEnd::Failed(why) => Err(ActionError::Failed(format!("{what} failed: {why}"))),
        WatchEnd::Superseded(by) => Err(ActionError::Failed(format!("{what}: {by}"))),
        WatchEnd::StillRolling(why) => {
            Err(ActionError::Unknown(format!("{what} was applied, but the rollout has not finished: {why}")))
        }
        WatchEnd::Unreadable(why) => Err(ActionError::Unknown(format!(
            "{what} was applied, but its rollout could not be read until the deadline ({why}); check deployment {}",
            t.path()
        ))),
    }
}

impl Kubernetes {
    /// Runs `call` until answered, a few tries and never past `deadline`;
    /// settles a lost answer by re-reading (`landed` says whether the live
    /// Deployment holds the write).
    pub(super) async fn write<T, F, Fut>(
        &self,
        t: &Target<'_>,
        what: &str,
        deadline: Instant,
        mut call: F,
        landed: impl Fn(&Deployment) -> bool,
        progress: &Progress,
    ) -> Result<Written<T>, ActionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut backoff = Backoff::default();
        let (mut attempt, mut conflicts) = (0, 0);
        loop {
            attempt += 1;
            let mut error = match call().await {
                Ok(value) => return Ok(Written::Answered(value)),
                Err(e) => e,
            };
            error.attempts = attempt + conflicts;
            // In a term every write is conditional: a rollout's status
            // updates make conflicts routine, so a few more are ridden out.
            if t.term.is_some() && error.failure == Failure::Conflict && conflicts < super::fence::CONFLICTS {
                conflicts += 1;
                attempt -= 1;
            }
            let wait = backoff.next_wait();
            let last = attempt >= WRITE_ATTEMPTS || Instant::now() + wait >= deadline;
            if error.failure.may_have_landed() {
                match self.after_lost_answer(t, what, &error, deadline, &landed, progress).await? {
                    Reread::Landed(d) => return Ok(Written::ReadBack(d)),
                    // The API server may still commit a write its client
                    // gave up on: "not applied" is never certain.
                    Reread::NotYet(d) if last => {
                        return Err(ActionError::Unknown(format!(
                            "{what}: {}; re-read: not applied yet ({}), but the API server may still apply it; check deployment {} before trying again",
                            error.explain(t),
                            describe_live(t, &d),
                            t.path()
                        )))
                    }
                    Reread::NotYet(_) => {}
                }
            } else if last
                || !matches!(
                    error.failure,
                    Failure::Conflict | Failure::Refused | Failure::Throttled | Failure::NotSent(_)
                )
            {
                // Nothing was applied (a 409, 429 or refused connection says
                // so), or retrying cannot help.
                return Err(error.into_action(t));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// A write got no answer: what the live Deployment shows; `unknown`
    /// when it cannot be read.
    async fn after_lost_answer(
        &self,
        t: &Target<'_>,
        what: &str,
        error: &CallError,
        deadline: Instant,
        landed: &impl Fn(&Deployment) -> bool,
        progress: &Progress,
    ) -> Result<Reread, ActionError> {
        match self.read(t, Patience::until(deadline)).await {
            Ok(d) if landed(&d) => {
                let lost = error.explain(t);
                progress.report(format!("{}: {what} got no answer ({lost}); re-read: it was applied", t.service)).await;
                Ok(Reread::Landed(Box::new(d)))
            }
            Ok(d) => Ok(Reread::NotYet(Box::new(d))),
            Err(read) => Err(ActionError::Unknown(format!(
                "{what}: {}, and the live state cannot be read ({}); check deployment {} before trying again",
                error.explain(t),
                read.explain(t),
                t.path()
            ))),
        }
    }

    pub(super) async fn restart(
        &self,
        t: &Target<'_>,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let before = self.read_now(t).await?;
        refuse_if_paused(t, &before, "restart")?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
        let api = self.deployments(t).await?;
        let written = self
            .write(
                t,
                "restart",
                deadline,
                || self.patch(t, &api, Kind::Strategic, &patch),
                |d| {
                    super::template_of(d)
                        .and_then(|tpl| tpl.metadata.as_ref())
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get(RESTARTED_AT))
                        == Some(&now)
                },
                progress,
            )
            .await?;
        progress.report(format!("{}: restart requested; watching the rollout", t.service)).await;
        let end = self.watch(t, &Expect::template_of(&written.deployment()), deadline, progress).await;
        let d = settle(t, &format!("restart of {}", t.service), end)?;
        Ok(Outcome {
            summary: format!("{} restarted ({})", t.service, describe_live(t, &d)),
            live: Some(live_facts(t, &d)),
        })
    }

    pub(super) async fn scale(
        &self,
        t: &Target<'_>,
        replicas: u32,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let before = self.read_now(t).await?;
        let from = before.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let wanted =
            i32::try_from(replicas).map_err(|_| ActionError::Failed(format!("{replicas} replicas is too many")))?;
        let api = self.deployments(t).await?;
        let body = json!({"spec": {"replicas": wanted}});
        let (patch, params) = (Patch::Merge(&body), PatchParams::default());
        // In a term, the Deployment itself (the scale subresource cannot
        // carry the term's annotation); else the subresource, as kubectl.
        let call = || async {
            match t.term {
                Some(_) => self.patch(t, &api, Kind::Merge, &body).await.map(drop),
                None => timed(t, "patch", "deployments/scale", api.patch_scale(t.deployment, &params, &patch))
                    .await
                    .map(drop),
            }
        };
        self.write(t, "scale", deadline, call, |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(wanted), progress)
            .await?;
        progress.report(format!("{}: scaling to {replicas}", t.service)).await;
        let expect = Expect { template: None, replicas: Some(wanted) };
        let end = self.watch(t, &expect, deadline, progress).await;
        let d = settle(t, &format!("scale of {} to {replicas}", t.service), end)?;
        Ok(Outcome {
            summary: format!("{} runs {replicas} replicas (was {from}; {})", t.service, describe_live(t, &d)),
            live: Some(live_facts(t, &d)),
        })
    }
}
