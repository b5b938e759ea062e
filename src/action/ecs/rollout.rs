//! Following the rollout an update started (see `update`).
//!
//! opsbot follows the deployment its update created, by id. Success: that
//! deployment completes while the service runs the task definition opsbot
//! set. A failure is ECS's own verdict (FAILED), or tasks of that deployment
//! stopped by opsbot's deadline (see `failure`); a deadline with nothing
//! stopped is "still rolling out", not a failure. Another deployment taking
//! over is "superseded"; a deployment that vanished is judged by what it
//! left (events, stopped tasks), else unknown.

use super::definitions::short;
use super::Ctx;
use crate::action::Progress;
use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Service};
use tokio::time::Instant;

/// Which rollout a request follows.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Track {
    /// The deployment an update created, which must complete with the
    /// service running `arn`.
    Deployment { id: String, arn: String },
    /// A desired-count change (no new deployment): the service must settle
    /// at `desired` running tasks of `arn`.
    Count { desired: i32, arn: String },
}

/// How following a rollout ended.
#[derive(Debug)]
pub(super) enum RolloutEnd {
    Complete(Box<Service>),
    /// The deployment failed; `why` says why (reason, stopped tasks, recent
    /// events) and, in `then`, what ECS or another writer did about it.
    Failed {
        why: String,
        then: Aftermath,
    },
    Superseded(String),
    /// opsbot's deadline passed and nothing says the rollout failed.
    StillRolling(String),
    Unreadable(String),
    /// What happened to the rollout cannot be told.
    Unknown(String),
}

/// What followed a failed deployment, which decides whether opsbot may roll
/// back on top of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Aftermath {
    /// Nothing yet: the service still points at the failed revision.
    Nothing,
    /// The deployment circuit breaker rolled back (or is rolling back).
    CircuitBreaker,
    /// Another deployment, not a rollback, took over: leave it alone.
    OtherDeployment,
}

/// One look at the service, against the tracked rollout.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Complete,
    Failed {
        deployment: String,
        reason: String,
    },
    Superseded(String),
    /// The tracked deployment is no longer listed.
    Gone {
        deployment: String,
    },
    Progress {
        running: i32,
        desired: i32,
        state: String,
    },
    /// The tracked deployment is not the rollout this request started.
    NotOurs(String),
}

pub(super) fn deployments(s: &Service) -> &[Deployment] {
    s.deployments.as_deref().unwrap_or_default()
}

/// "ecs-svc/1 PRIMARY api:7 COMPLETED, …" for a message.
pub(super) fn list_deployments(s: &Service) -> String {
    let each: Vec<String> = deployments(s)
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {}",
                d.id.as_deref().unwrap_or("?"),
                d.status.as_deref().unwrap_or("?"),
                d.task_definition.as_deref().map(short).unwrap_or("?"),
                state_name(d)
            )
        })
        .collect();
    if each.is_empty() {
        "none".into()
    } else {
        each.join(", ")
    }
}

pub(super) fn primary(s: &Service) -> Option<&Deployment> {
    deployments(s).iter().find(|d| d.status.as_deref() == Some("PRIMARY"))
}

pub(super) fn state_name(d: &Deployment) -> String {
    d.rollout_state.as_ref().map(|s| s.as_str().to_string()).unwrap_or_else(|| "IN_PROGRESS".into())
}

pub(super) fn failure_reason(d: &Deployment) -> String {
    let reason = d.rollout_state_reason.clone().unwrap_or_else(|| "the deployment failed".into());
    format!("{reason} ({} task(s) failed)", d.failed_tasks)
}

pub(super) fn judge(live: &Service, track: &Track) -> Verdict {
    let running_now = live.task_definition.as_deref().map(short).unwrap_or("?").to_string();
    match track {
        Track::Deployment { id, arn } => {
            let Some(ours) = deployments(live).iter().find(|d| d.id.as_deref() == Some(id.as_str())) else {
                return Verdict::Gone { deployment: id.clone() };
            };
            if ours.task_definition.as_deref() != Some(arn.as_str()) {
                let runs = ours.task_definition.as_deref().map(short).unwrap_or("?");
                return Verdict::NotOurs(format!(
                    "deployment {id} runs {runs}, not {}: it is not the rollout this request started",
                    short(arn)
                ));
            }
            if ours.rollout_state == Some(DeploymentRolloutState::Failed) {
                return Verdict::Failed { deployment: id.clone(), reason: failure_reason(ours) };
            }
            if ours.status.as_deref() != Some("PRIMARY") {
                let by = primary(live)
                    .map(|p| {
                        let what = p.task_definition.as_deref().map(short).unwrap_or("?");
                        format!("deployment {} of {what}", p.id.as_deref().unwrap_or("?"))
                    })
                    .unwrap_or_else(|| "another deployment".into());
                return Verdict::Superseded(format!("deployment {id} was replaced by {by} before it completed"));
            }
            if live.task_definition.as_deref() != Some(arn.as_str()) {
                return Verdict::Superseded(format!("the service was pointed at {running_now} meanwhile"));
            }
            let done = match ours.rollout_state {
                Some(DeploymentRolloutState::Completed) => true,
                None => deployments(live).len() == 1 && ours.running_count == ours.desired_count,
                _ => false,
            };
            if done {
                Verdict::Complete
            } else {
                Verdict::Progress { running: ours.running_count, desired: ours.desired_count, state: state_name(ours) }
            }
        }
        Track::Count { desired, arn } => {
            if live.desired_count != *desired {
                return Verdict::Superseded(format!("another writer set the desired count to {}", live.desired_count));
            }
            if live.task_definition.as_deref() != Some(arn.as_str()) {
                return Verdict::Superseded(format!("the service was pointed at {running_now} meanwhile"));
            }
            let Some(p) = primary(live) else {
                return Verdict::Progress {
                    running: live.running_count,
                    desired: *desired,
                    state: "no primary deployment yet".into(),
                };
            };
            if p.rollout_state == Some(DeploymentRolloutState::Failed) {
                return Verdict::Failed { deployment: p.id.clone().unwrap_or_default(), reason: failure_reason(p) };
            }
            let settled = matches!(p.rollout_state, Some(DeploymentRolloutState::Completed) | None);
            if live.running_count == *desired && deployments(live).len() == 1 && settled {
                Verdict::Complete
            } else {
                Verdict::Progress { running: live.running_count, desired: *desired, state: state_name(p) }
            }
        }
    }
}

impl Ctx<'_> {
    /// Follows `track` until it completes, fails, is superseded, or
    /// `deadline` passes; reports progress.
    pub(super) async fn wait(
        &self,
        service: &str,
        track: &Track,
        deadline: Instant,
        progress: &Progress,
    ) -> RolloutEnd {
        let mut last = None;
        loop {
            let live = match self.describe_until(service, deadline).await {
                Ok(live) => live,
                Err(e) => return RolloutEnd::Unreadable(e.explain(self)),
            };
            match judge(&live, track) {
                Verdict::Complete => return RolloutEnd::Complete(Box::new(live)),
                Verdict::Superseded(by) => return RolloutEnd::Superseded(by),
                Verdict::NotOurs(why) => return RolloutEnd::Unknown(why),
                Verdict::Failed { deployment, reason } => {
                    return self.failed(service, &live, &deployment, &reason, deadline, progress).await
                }
                Verdict::Gone { deployment } => {
                    return self.gone(service, &live, track, &deployment, deadline, progress).await
                }
                Verdict::Progress { running, desired, state } => {
                    let now = (running, desired, state.clone());
                    if last.as_ref() != Some(&now) {
                        progress.report(format!("{service}: {running}/{desired} tasks running ({state})")).await;
                        last = Some(now);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return self.at_deadline(service, &live, track).await;
            }
            tokio::time::sleep(self.t.poll.min(deadline - now)).await;
        }
    }
}

/// One deployment, not in progress.
pub(super) fn settled(s: &Service) -> bool {
    deployments(s).len() == 1
        && matches!(primary(s).and_then(|p| p.rollout_state.clone()), Some(DeploymentRolloutState::Completed) | None)
}

impl Verdict {
    pub(super) fn text(&self) -> String {
        match self {
            Verdict::Complete => "completed".into(),
            Verdict::Failed { deployment, reason } => format!("deployment {deployment} failed: {reason}"),
            Verdict::Superseded(text) | Verdict::NotOurs(text) => text.clone(),
            Verdict::Gone { deployment } => format!("deployment {deployment} is gone"),
            Verdict::Progress { running, desired, state } => format!("{running}/{desired} tasks running ({state})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Deployment;

    fn deployment(id: &str, status: &str, td: &str, state: DeploymentRolloutState) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .task_definition(td)
            .desired_count(2)
            .running_count(2)
            .rollout_state(state)
            .build()
    }

    fn service(td: &str, deployments: Vec<Deployment>) -> Service {
        Service::builder()
            .task_definition(td)
            .desired_count(2)
            .running_count(2)
            .set_deployments(Some(deployments))
            .build()
    }

    #[test]
    fn only_the_tracked_deployment_completing_on_the_new_definition_is_success() {
        use DeploymentRolloutState::*;
        let ours = Track::Deployment { id: "d2".into(), arn: "td/api:8".into() };
        let done = service("td/api:8", vec![deployment("d2", "PRIMARY", "td/api:8", Completed)]);
        assert_eq!(judge(&done, &ours), Verdict::Complete);
        // The circuit breaker failed ours and made the old deployment PRIMARY again.
        let rolled_back = service(
            "td/api:7",
            vec![deployment("d1", "PRIMARY", "td/api:7", Completed), deployment("d2", "ACTIVE", "td/api:8", Failed)],
        );
        assert!(matches!(judge(&rolled_back, &ours), Verdict::Failed { .. }));
        let replaced = service(
            "td/api:9",
            vec![
                deployment("d3", "PRIMARY", "td/api:9", Completed),
                deployment("d2", "ACTIVE", "td/api:8", InProgress),
            ],
        );
        assert!(matches!(judge(&replaced, &ours), Verdict::Superseded(_)));
        let gone = service("td/api:7", vec![deployment("d1", "PRIMARY", "td/api:7", Completed)]);
        assert_eq!(judge(&gone, &ours), Verdict::Gone { deployment: "d2".into() });
        // The old deployment, COMPLETED on the old revision, is never our success.
        let old = Track::Deployment { id: "d1".into(), arn: "td/api:8".into() };
        let pointed = service("td/api:8", vec![deployment("d1", "PRIMARY", "td/api:7", Completed)]);
        assert!(matches!(judge(&pointed, &old), Verdict::NotOurs(_)));
    }
}
