//! Following the rollout an update started (see `update`).
//!
//! `UpdateService`'s answer names the deployment it created (the PRIMARY
//! one); opsbot follows that deployment by id. Success: that deployment
//! completes while the service runs the task definition opsbot set. FAILED
//! (the circuit breaker's verdict) is a failure, and if the circuit breaker
//! rolls the service back, opsbot follows that rollback to its end and says
//! where it stands. Another deployment taking over is "superseded".

use super::definitions::short;
use super::Ctx;
use crate::action::Progress;
use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, DesiredStatus, Service};
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
    /// events) and where a circuit-breaker rollback stands.
    Failed {
        why: String,
        rolled_back: bool,
    },
    Superseded(String),
    TimedOut(String),
    Unreadable(String),
    /// What happened to the rollout cannot be told.
    Unknown(String),
}

/// One look at the service, against the tracked rollout.
#[derive(Debug, PartialEq)]
enum Verdict {
    Complete,
    Failed {
        deployment: String,
        reason: String,
    },
    Superseded(String),
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

fn state_name(d: &Deployment) -> String {
    d.rollout_state.as_ref().map(|s| s.as_str().to_string()).unwrap_or_else(|| "IN_PROGRESS".into())
}

fn failure_reason(d: &Deployment) -> String {
    let reason = d.rollout_state_reason.clone().unwrap_or_else(|| "the deployment failed".into());
    format!("{reason} ({} task(s) failed)", d.failed_tasks)
}

fn judge(live: &Service, track: &Track) -> Verdict {
    let running_now = live.task_definition.as_deref().map(short).unwrap_or("?").to_string();
    match track {
        Track::Deployment { id, arn } => {
            let Some(ours) = deployments(live).iter().find(|d| d.id.as_deref() == Some(id.as_str())) else {
                return Verdict::Superseded(format!("deployment {id} is gone; the service now runs {running_now}"));
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
                let details = match track {
                    Track::Deployment { id, .. } => self.failure_details(service, &live, id).await,
                    Track::Count { .. } => String::new(),
                };
                return RolloutEnd::TimedOut(format!(
                    "timed out after {} waiting for {service} to become stable{details}",
                    crate::clock::format_duration(self.t.rollout_timeout)
                ));
            }
            tokio::time::sleep(self.t.poll.min(deadline - now)).await;
        }
    }

    /// A FAILED deployment: why, and — when the circuit breaker rolls the
    /// service back — that rollback followed until it completes or the
    /// deadline passes.
    async fn failed(
        &self,
        service: &str,
        live: &Service,
        deployment: &str,
        reason: &str,
        deadline: Instant,
        progress: &Progress,
    ) -> RolloutEnd {
        let details = self.failure_details(service, live, deployment).await;
        let failed = format!("deployment {deployment} failed: {reason}{details}");
        let breaker = live
            .deployment_configuration
            .as_ref()
            .and_then(|c| c.deployment_circuit_breaker.as_ref())
            .is_some_and(|b| b.enable && b.rollback);
        let rollback = primary(live).filter(|p| p.id.as_deref() != Some(deployment)).cloned();
        let (true, Some(rollback)) = (breaker, rollback) else {
            return RolloutEnd::Failed { why: failed, rolled_back: false };
        };
        let to = rollback.task_definition.as_deref().map(short).unwrap_or("?").to_string();
        progress.report(format!("{service}: {failed}; the circuit breaker is rolling back to {to}")).await;
        let track = Track::Deployment {
            id: rollback.id.clone().unwrap_or_default(),
            arn: rollback.task_definition.clone().unwrap_or_default(),
        };
        let mut now_text = format!("{}/{} task(s) running", rollback.running_count, rollback.desired_count);
        loop {
            match self.describe_until(service, deadline).await.map(|l| (judge(&l, &track), l)) {
                Ok((Verdict::Complete, l)) => {
                    return RolloutEnd::Failed {
                        why: format!(
                            "{failed}; the deployment circuit breaker rolled the service back to {to}, which runs now ({}/{} tasks)",
                            l.running_count, l.desired_count
                        ),
                        rolled_back: true,
                    }
                }
                Ok((Verdict::Progress { running, desired, .. }, _)) => now_text = format!("{running}/{desired} task(s) running"),
                Ok((other, _)) => {
                    let why = format!("{failed}; the circuit breaker's rollback to {to} did not complete: {}", other.text());
                    return RolloutEnd::Failed { why, rolled_back: true };
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return RolloutEnd::Failed {
                    why: format!(
                        "{failed}; the deployment circuit breaker is rolling the service back to {to} ({now_text})"
                    ),
                    rolled_back: true,
                };
            }
            tokio::time::sleep(self.t.poll).await;
        }
    }

    /// "; stopped tasks: …; recent events: …" for a deployment (best effort).
    pub(super) async fn failure_details(&self, service: &str, live: &Service, deployment: &str) -> String {
        let mut out = String::new();
        let stopped = self
            .call(
                "ecs:ListTasks",
                self.ecs
                    .list_tasks()
                    .cluster(self.t.cluster)
                    .service_name(service)
                    .desired_status(DesiredStatus::Stopped)
                    .send(),
            )
            .await;
        match stopped {
            Ok(list) if list.task_arns.as_ref().is_some_and(|a| !a.is_empty()) => {
                let described = self
                    .call(
                        "ecs:DescribeTasks",
                        self.ecs.describe_tasks().cluster(self.t.cluster).set_tasks(list.task_arns).send(),
                    )
                    .await;
                match described {
                    Ok(d) => {
                        let reasons: Vec<String> = d
                            .tasks
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|task| task.started_by.as_deref() == Some(deployment))
                            .take(3)
                            .map(|task| {
                                let id = task.task_arn.as_deref().map(short).unwrap_or("?").to_string();
                                format!("{id}: {}", task.stopped_reason.unwrap_or_else(|| "no reason given".into()))
                            })
                            .collect();
                        if !reasons.is_empty() {
                            out.push_str(&format!("; stopped tasks: {}", reasons.join("; ")));
                        }
                    }
                    Err(e) => out.push_str(&format!("; stopped tasks not readable ({})", e.explain(self))),
                }
            }
            Ok(_) => {}
            Err(e) => out.push_str(&format!("; stopped tasks not readable ({})", e.explain(self))),
        }
        let events: Vec<String> = live.events.iter().flatten().take(3).filter_map(|e| e.message.clone()).collect();
        if !events.is_empty() {
            out.push_str(&format!("; recent events: {}", events.join("; ")));
        }
        out
    }
}

/// One deployment, not in progress.
pub(super) fn settled(s: &Service) -> bool {
    deployments(s).len() == 1
        && matches!(primary(s).and_then(|p| p.rollout_state.clone()), Some(DeploymentRolloutState::Completed) | None)
}

impl Verdict {
    fn text(&self) -> String {
        match self {
            Verdict::Complete => "completed".into(),
            Verdict::Failed { deployment, reason } => format!("deployment {deployment} failed: {reason}"),
            Verdict::Superseded(text) | Verdict::NotOurs(text) => text.clone(),
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
        assert!(matches!(judge(&gone, &ours), Verdict::Superseded(_)));
        // The old deployment, COMPLETED on the old revision, is never our success.
        let old = Track::Deployment { id: "d1".into(), arn: "td/api:8".into() };
        let pointed = service("td/api:8", vec![deployment("d1", "PRIMARY", "td/api:7", Completed)]);
        assert!(matches!(judge(&pointed, &old), Verdict::NotOurs(_)));
    }
}
