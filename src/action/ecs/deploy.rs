//! `/deploy` on one ECS service: register (or reuse) a revision with the new
//! image, update the service, follow the deployment that update started,
//! smoke-test it. Automatic rollback (when configured) follows only a real
//! failure — the deployment FAILED, tasks of it stopped by the deadline, or
//! the smoke test failed — never a rollout that is merely slow, and never on
//! top of the circuit breaker's rollback or another writer's deployment.
//! When where the rollback stands cannot be known, the outcome is unknown.

use super::definitions::{short, Definition};
use super::rollout::{Aftermath, RolloutEnd, Track};
use super::single::{facts, not_completed};
use super::update::Change;
use super::Ctx;
use crate::action::{ActionError, Outcome, Progress};
use tokio::time::Instant;

/// How an automatic rollback that did not complete ended.
enum Rollback {
    /// It failed, or another writer took over.
    Failed(String),
    /// Whether it took effect, or will, cannot be told.
    Unknown(String),
}

impl Ctx<'_> {
    pub(super) async fn deploy_single(
        &self,
        service: &str,
        version: &str,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let deadline = Instant::now() + self.t.rollout_timeout;
        let image = format!("{}:{version}", self.t.image);
        let live = self.describe(service).await?;
        let current = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
        self.check_container(&current.definition)?;
        if self.t.auto_rollback && current.is_inactive() {
            progress
                .report(format!(
                    "automatic rollback is off for this deploy: {} (what runs now) is deregistered (INACTIVE), and ECS starts no tasks from it",
                    current.name()
                ))
                .await;
        }
        let (definition, registered) = self.definition_for(&current, &image).await?;
        let arn = definition.arn();
        if registered {
            progress.report(format!("registered {} with {image}", short(&arn))).await;
        }
        let what = format!("deploy of {image}");
        let track = self.update(service, Change { arn: &arn, desired: None, force: false, deadline }, progress).await?;
        if let Track::Deployment { id, .. } = &track {
            progress.report(format!("{service}: updating to {} (deployment {id})", short(&arn))).await;
        }
        let failure = match self.wait(service, &track, deadline, progress).await {
            RolloutEnd::Complete(live) => match self.smoke(None, progress).await {
                Ok(()) => {
                    return Ok(Outcome {
                        summary: format!("{} runs {image} ({})", self.t.name, short(&arn)),
                        live: Some(facts(service, &live, &track, &definition, self.t.container)),
                    });
                }
                Err(e) => (e.to_string(), Aftermath::Nothing),
            },
            // Slow is not failed: nothing is rolled back.
            RolloutEnd::StillRolling(why) => {
                return Err(ActionError::Unknown(format!(
                    "{what} was applied: {why}; nothing was rolled back; check ECS service {service}"
                )))
            }
            end => not_completed(&what, end)?,
        };
        Err(self.after_failed_deploy(service, &what, failure, &current, progress).await)
    }

    /// The deploy's rollout (or smoke test) failed: say why, roll back if
    /// configured and nothing else has, and say what runs now.
    async fn after_failed_deploy(
        &self,
        service: &str,
        what: &str,
        (why, then): (String, Aftermath),
        previous: &Definition,
        progress: &Progress,
    ) -> ActionError {
        let failed = format!("{what} failed: {why}");
        if then != Aftermath::Nothing {
            return ActionError::Failed(failed);
        }
        if !self.t.auto_rollback {
            return ActionError::Failed(format!(
                "{failed}; `/rollback {}` returns to {}",
                self.t.name,
                previous.name()
            ));
        }
        if previous.is_inactive() {
            return ActionError::Failed(format!(
                "{failed}; no automatic rollback: {} is deregistered (INACTIVE) and ECS starts no tasks from it; `/rollback {} <revision>` names an active revision",
                previous.name(),
                self.t.name
            ));
        }
        progress.report(format!("{what} failed ({why}); rolling back to {}", previous.name())).await;
        let rollback = match self.roll_back_to(service, previous, progress).await {
            Ok(()) => {
                return ActionError::Failed(format!("{failed}; rolled back automatically to {}", previous.name()))
            }
            Err(rollback) => rollback,
        };
        let now = match self.describe(service).await {
            Ok(live) => format!("the service now runs {}", live.task_definition.as_deref().map(short).unwrap_or("?")),
            Err(e) => format!("the service cannot be read ({e})"),
        };
        match rollback {
            Rollback::Failed(text) => ActionError::Failed(format!("{failed}; {text}; {now}")),
            Rollback::Unknown(text) => ActionError::Unknown(format!("{failed}; {text}; {now}")),
        }
    }

    /// The automatic rollback to `previous`, with its own deadline.
    async fn roll_back_to(&self, service: &str, previous: &Definition, progress: &Progress) -> Result<(), Rollback> {
        let (arn, name) = (previous.arn(), previous.name());
        let deadline = Instant::now() + self.t.rollout_timeout;
        let change = Change { arn: &arn, desired: None, force: false, deadline };
        let track = match self.update(service, change, progress).await {
            Ok(track) => track,
            Err(ActionError::Unknown(e)) => {
                return Err(Rollback::Unknown(format!(
                    "the automatic rollback to {name} may or may not have been applied ({e})"
                )))
            }
            Err(e) => return Err(Rollback::Failed(format!("the automatic rollback to {name} failed too: {e}"))),
        };
        match self.wait(service, &track, deadline, progress).await {
            RolloutEnd::Complete(_) => Ok(()),
            RolloutEnd::Failed { why, .. } => {
                Err(Rollback::Failed(format!("the automatic rollback to {name} failed too: {why}")))
            }
            RolloutEnd::Superseded(by) => {
                Err(Rollback::Failed(format!("the automatic rollback to {name} was superseded: {by}")))
            }
            RolloutEnd::StillRolling(why) | RolloutEnd::Unknown(why) => {
                Err(Rollback::Unknown(format!("the automatic rollback to {name} was applied: {why}")))
            }
            RolloutEnd::Unreadable(why) => Err(Rollback::Unknown(format!(
                "the automatic rollback to {name} was applied, but its rollout could not be read ({why})"
            ))),
        }
    }
}
