//! The four actions on one ECS service. Each outcome is what the service
//! runs after the rollout it started, read back; automatic rollback (when
//! configured) follows a failed rollout or smoke test — never a rollout the
//! circuit breaker already rolled back — and its own failure is reported with
//! the deploy's.

use super::definitions::{image_of, short, Definition};
use super::rollout::{primary, Aftermath, RolloutEnd, Track};
use super::update::Change;
use super::{smoke_at, Ctx};
use crate::action::{Action, ActionError, Outcome, Progress, Verified};
use aws_sdk_ecs::types::Service;
use tokio::time::Instant;

/// What runs now, as facts for the audit trail: the service read back at
/// the end of the rollout, and the definition it runs as read before the
/// change (a definition never changes; reading it again after a completed
/// rollout could only turn a verified success into an error).
pub(super) fn facts(
    service: &str,
    live: &Service,
    track: &Track,
    definition: &Definition,
    container: &str,
) -> serde_json::Value {
    let deployment = match track {
        Track::Deployment { id, .. } => Some(id.clone()),
        Track::Count { .. } => primary(live).and_then(|p| p.id.clone()),
    };
    serde_json::json!({
        "backend": "ecs",
        "service": service,
        "task_definition": definition.arn(),
        "revision": definition.name(),
        "image": image_of(&definition.definition, container),
        "deployment": deployment,
        "desired": live.desired_count,
        "running": live.running_count,
    })
}

/// A rollout that did not complete: a failure (why, and what followed it),
/// or the error that says it was superseded (❌) or cannot be judged
/// (unknown: still rolling out, unreadable).
pub(super) fn not_completed(what: &str, end: RolloutEnd) -> Result<(String, Aftermath), ActionError> {
    match end {
        RolloutEnd::Complete(_) => Ok((format!("{what} completed"), Aftermath::Nothing)),
        RolloutEnd::Failed { why, then } => Ok((why, then)),
        RolloutEnd::Superseded(by) => Err(ActionError::Failed(format!("{what} did not finish: superseded: {by}"))),
        RolloutEnd::StillRolling(why) => Err(ActionError::Unknown(format!("{what} was applied: {why}"))),
        RolloutEnd::Unreadable(why) => Err(ActionError::Unknown(format!(
            "{what} was applied, but its rollout could not be read until the deadline ({why})"
        ))),
        RolloutEnd::Unknown(why) => Err(ActionError::Unknown(format!("{what} was applied, but {why}"))),
    }
}

impl Ctx<'_> {
    pub(super) async fn single(
        &self,
        service: &str,
        action: &Action,
        history: &[Verified],
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        match action {
            Action::Deploy { version } => self.deploy_single(service, version, progress).await,
            Action::Rollback { revision } => self.rollback_single(service, *revision, history, progress).await,
            Action::Restart => {
                let deadline = Instant::now() + self.t.rollout_timeout;
                let live = self.describe(service).await?;
                let definition = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
                let arn = definition.arn();
                let change = Change { arn: &arn, desired: None, force: true, deadline };
                let track = self.update(service, change, progress).await?;
                progress.report(format!("{service}: new deployment forced")).await;
                let what = format!("restart of {}", self.t.name);
                let live = self.completed(&what, service, &track, deadline, progress).await?;
                Ok(Outcome {
                    summary: format!("{} restarted ({})", self.t.name, short(&arn)),
                    live: Some(facts(service, &live, &track, &definition, self.t.container)),
                })
            }
            Action::Scale { replicas } => self.scale_single(service, *replicas, progress).await,
        }
    }

    async fn scale_single(&self, service: &str, replicas: u32, progress: &Progress) -> Result<Outcome, ActionError> {
        let deadline = Instant::now() + self.t.rollout_timeout;
        let desired =
            i32::try_from(replicas).map_err(|_| ActionError::Failed(format!("{replicas} tasks is too many")))?;
        let live = self.describe(service).await?;
        let definition = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
        let arn = definition.arn();
        let change = Change { arn: &arn, desired: Some(desired), force: false, deadline };
        let track = self.update(service, change, progress).await?;
        progress.report(format!("{service}: desired count {replicas}")).await;
        let what = format!("scale of {} to {replicas}", self.t.name);
        let live = self.completed(&what, service, &track, deadline, progress).await?;
        Ok(Outcome {
            summary: format!("{} runs {replicas} tasks of {}", self.t.name, short(&arn)),
            live: Some(facts(service, &live, &track, &definition, self.t.container)),
        })
    }

    /// Waits for `track`; anything but completion is an error that says so.
    pub(super) async fn completed(
        &self,
        what: &str,
        service: &str,
        track: &Track,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Service, ActionError> {
        match self.wait(service, track, deadline, progress).await {
            RolloutEnd::Complete(live) => Ok(*live),
            end => {
                let (why, _) = not_completed(what, end)?;
                Err(ActionError::Failed(format!("{what} failed: {why}")))
            }
        }
    }

    /// Runs the smoke test, if one is configured, against `url` (else the
    /// service's own URL).
    pub(super) async fn smoke(&self, url: Option<&str>, progress: &Progress) -> Result<(), ActionError> {
        let Some(spec) = self.t.smoke else { return Ok(()) };
        let Some(url) = spec.url.as_deref().or(url).or(self.t.health_url) else { return Ok(()) };
        smoke_at(url, spec, progress).await
    }
}
