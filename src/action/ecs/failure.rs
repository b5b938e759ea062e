//! What a rollout that did not complete left behind, and what it means:
//! FAILED (the circuit breaker's verdict) is a failure, and a circuit-breaker
//! rollback is followed to its end; at opsbot's deadline, tasks of the
//! deployment that stopped make it a failure, and nothing stopped means it is
//! still rolling out; a deployment that vanished is a failure only if its
//! stopped tasks or the service's events say so — rolled back by the circuit
//! breaker, or replaced by another deployment — and unknown otherwise.

use super::definitions::short;
use super::rollout::{deployments, judge, primary, state_name, Aftermath, RolloutEnd, Track, Verdict};
use super::Ctx;
use crate::action::Progress;
use aws_sdk_ecs::types::{Deployment, DesiredStatus, Service};
use tokio::time::Instant;

/// Stopped tasks named in a message.
const STOPPED_SHOWN: usize = 3;

/// What a deployment left: its stopped tasks (or why they cannot be read)
/// and the service's recent events.
pub(super) struct Details {
    stopped: Result<Vec<String>, String>,
    events: Vec<String>,
}

impl Details {
    /// Tasks of the deployment that stopped.
    fn any_stopped(&self) -> bool {
        self.stopped.as_ref().is_ok_and(|s| !s.is_empty())
    }

    /// "; stopped tasks: …; recent events: …".
    pub(super) fn text(&self) -> String {
        let mut out = match &self.stopped {
            Ok(stopped) if stopped.is_empty() => String::new(),
            Ok(stopped) => format!("; stopped tasks: {}", stopped.join("; ")),
            Err(why) => format!("; stopped tasks not readable ({why})"),
        };
        if !self.events.is_empty() {
            out.push_str(&format!("; recent events: {}", self.events.join("; ")));
        }
        out
    }
}

/// The circuit breaker rolls back when it fails a deployment.
fn breaker_rolls_back(live: &Service) -> bool {
    live.deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref())
        .is_some_and(|b| b.enable && b.rollback)
}

/// The PRIMARY deployment, if it is the circuit breaker's rollback of
/// `failed`: its reason says it rolls back, or (once it completed, when ECS
/// rewrites the reason) the breaker rolls back and it runs another revision.
fn breaker_rollback(live: &Service, failed: &str, failed_arn: Option<&str>) -> Option<Deployment> {
    let p = primary(live).filter(|p| p.id.as_deref() != Some(failed))?;
    let says_so = p.rollout_state_reason.as_deref().is_some_and(|r| r.to_lowercase().contains("rolling back"));
    let other_revision = failed_arn.is_some_and(|arn| p.task_definition.as_deref() != Some(arn));
    (says_so || (breaker_rolls_back(live) && other_revision)).then(|| p.clone())
}

/// "deployment ecs-svc/9 of api:9".
fn named(p: Option<&Deployment>) -> String {
    match p {
        Some(p) => format!(
            "deployment {} of {}",
            p.id.as_deref().unwrap_or("?"),
            p.task_definition.as_deref().map(short).unwrap_or("?")
        ),
        None => "no deployment".into(),
    }
}

impl Ctx<'_> {
    /// The stopped tasks `deployment` started, and the service's recent events.
    pub(super) async fn details(&self, service: &str, live: &Service, deployment: &str) -> Details {
        let events = live.events.iter().flatten().take(3).filter_map(|e| e.message.clone()).collect();
        Details { stopped: self.stopped_tasks(service, deployment).await, events }
    }

    async fn stopped_tasks(&self, service: &str, deployment: &str) -> Result<Vec<String>, String> {
        let list = self
            .call(
                "ecs:ListTasks",
                self.ecs
                    .list_tasks()
                    .cluster(self.t.cluster)
                    .service_name(service)
                    .desired_status(DesiredStatus::Stopped)
                    .send(),
            )
            .await
            .map_err(|e| e.explain(self))?;
        if list.task_arns.as_ref().is_none_or(|a| a.is_empty()) {
            return Ok(Vec::new());
        }
        let described = self
            .call(
                "ecs:DescribeTasks",
                self.ecs.describe_tasks().cluster(self.t.cluster).set_tasks(list.task_arns).send(),
            )
            .await
            .map_err(|e| e.explain(self))?;
        Ok(described
            .tasks
            .unwrap_or_default()
            .into_iter()
            .filter(|task| task.started_by.as_deref() == Some(deployment))
            .take(STOPPED_SHOWN)
            .map(|task| {
                let id = task.task_arn.as_deref().map(short).unwrap_or("?").to_string();
                format!("{id}: {}", task.stopped_reason.unwrap_or_else(|| "no reason given".into()))
            })
            .collect())
    }

    /// opsbot's deadline passed: a failure only if tasks of the deployment
    /// stopped; else still rolling out (no automatic rollback follows).
    pub(super) async fn at_deadline(&self, service: &str, live: &Service, track: &Track) -> RolloutEnd {
        let waited = crate::clock::format_duration(self.t.rollout_timeout);
        let Track::Deployment { id, .. } = track else {
            return RolloutEnd::StillRolling(format!(
                "{service} has not settled after {waited}: {}/{} tasks running",
                live.running_count, live.desired_count
            ));
        };
        let details = self.details(service, live, id).await;
        if details.any_stopped() {
            return RolloutEnd::Failed {
                why: format!("deployment {id} did not complete within {waited}{}", details.text()),
                then: Aftermath::Nothing,
            };
        }
        let ours = deployments(live).iter().find(|d| d.id.as_deref() == Some(id.as_str()));
        let (running, desired, state) =
            ours.map(|d| (d.running_count, d.desired_count, state_name(d))).unwrap_or((0, 0, "?".into()));
        let none = if details.stopped.is_ok() { "; none of its tasks stopped" } else { "" };
        RolloutEnd::StillRolling(format!(
            "deployment {id} is still rolling out after {waited}: {running}/{desired} tasks running ({state}){none}{}",
            details.text()
        ))
    }

    /// A FAILED deployment: why, and what followed — a circuit-breaker
    /// rollback (followed until it completes or the deadline passes),
    /// another deployment, or nothing yet.
    pub(super) async fn failed(
        &self,
        service: &str,
        live: &Service,
        deployment: &str,
        reason: &str,
        deadline: Instant,
        progress: &Progress,
    ) -> RolloutEnd {
        let details = self.details(service, live, deployment).await;
        let failed = format!("deployment {deployment} failed: {reason}{}", details.text());
        let failed_arn = deployments(live)
            .iter()
            .find(|d| d.id.as_deref() == Some(deployment))
            .and_then(|d| d.task_definition.clone());
        if let Some(rollback) = breaker_rollback(live, deployment, failed_arn.as_deref()) {
            return self.follow_breaker(service, &failed, &rollback, deadline, progress).await;
        }
        match primary(live).filter(|p| p.id.as_deref() != Some(deployment)) {
            Some(other) => RolloutEnd::Failed {
                why: format!(
                    "{failed}; {} is primary now, not a circuit-breaker rollback: opsbot leaves it alone",
                    named(Some(other))
                ),
                then: Aftermath::OtherDeployment,
            },
            None => RolloutEnd::Failed { why: failed, then: Aftermath::Nothing },
        }
    }

    /// The tracked deployment is no longer listed (opsbot missed its end):
    /// a failure if its stopped tasks or the service's events say so, else
    /// unknown — it may have completed before another replaced it.
    pub(super) async fn gone(
        &self,
        service: &str,
        live: &Service,
        track: &Track,
        deployment: &str,
        deadline: Instant,
        progress: &Progress,
    ) -> RolloutEnd {
        let details = self.details(service, live, deployment).await;
        let events_say = live
            .events
            .iter()
            .flatten()
            .filter_map(|e| e.message.as_deref())
            .any(|m| m.contains(&format!("(deployment {deployment})")) && m.contains("failed"));
        let runs = live.task_definition.as_deref().map(short).unwrap_or("?");
        if !(events_say || details.any_stopped()) {
            return RolloutEnd::Unknown(format!(
                "deployment {deployment} is no longer listed and nothing says whether it completed before another replaced it or failed; the service runs {runs} now ({}/{} tasks)",
                live.running_count, live.desired_count
            ));
        }
        let failed = format!("deployment {deployment} failed and is gone{}", details.text());
        let arn = match track {
            Track::Deployment { arn, .. } | Track::Count { arn, .. } => arn.as_str(),
        };
        match breaker_rollback(live, deployment, Some(arn)) {
            Some(rollback) => self.follow_breaker(service, &failed, &rollback, deadline, progress).await,
            None => RolloutEnd::Failed {
                why: format!("{failed}; {} is primary now: opsbot leaves it alone", named(primary(live))),
                then: Aftermath::OtherDeployment,
            },
        }
    }

    /// Follows the circuit breaker's rollback until it completes or the
    /// deadline passes, and says where it stands.
    async fn follow_breaker(
        &self,
        service: &str,
        failed: &str,
        rollback: &Deployment,
        deadline: Instant,
        progress: &Progress,
    ) -> RolloutEnd {
        let to = rollback.task_definition.as_deref().map(short).unwrap_or("?").to_string();
        progress.report(format!("{service}: {failed}; the circuit breaker is rolling back to {to}")).await;
        let track = Track::Deployment {
            id: rollback.id.clone().unwrap_or_default(),
            arn: rollback.task_definition.clone().unwrap_or_default(),
        };
        let breaker = |why: String| RolloutEnd::Failed { why, then: Aftermath::CircuitBreaker };
        let mut now_text = format!("{}/{} task(s) running", rollback.running_count, rollback.desired_count);
        loop {
            match self.describe_until(service, deadline).await.map(|l| (judge(&l, &track), l)) {
                Ok((Verdict::Complete, l)) => {
                    return breaker(format!(
                        "{failed}; the deployment circuit breaker rolled the service back to {to}, which runs now ({}/{} tasks)",
                        l.running_count, l.desired_count
                    ))
                }
                Ok((Verdict::Progress { running, desired, .. }, _)) => {
                    now_text = format!("{running}/{desired} task(s) running")
                }
                Ok((other, _)) => {
                    return breaker(format!(
                        "{failed}; the circuit breaker's rollback to {to} did not complete: {}",
                        other.text()
                    ))
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return breaker(format!(
                    "{failed}; the deployment circuit breaker is rolling the service back to {to} ({now_text})"
                ));
            }
            tokio::time::sleep(self.t.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState};

    fn deployment(id: &str, status: &str, td: &str, reason: &str) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .task_definition(td)
            .rollout_state(DeploymentRolloutState::InProgress)
            .rollout_state_reason(reason)
            .build()
    }

    fn service(rolls_back: bool, deployments: Vec<Deployment>) -> Service {
        let breaker = DeploymentCircuitBreaker::builder().enable(true).rollback(rolls_back).build();
        Service::builder()
            .deployment_configuration(DeploymentConfiguration::builder().deployment_circuit_breaker(breaker).build())
            .set_deployments(Some(deployments))
            .build()
    }

    #[test]
    fn only_a_primary_that_rolls_back_is_taken_for_the_circuit_breakers_rollback() {
        let failed = deployment("d2", "ACTIVE", "td/api:8", "ECS deployment circuit breaker: tasks failed to start.");
        let says =
            deployment("d3", "PRIMARY", "td/api:7", "ECS deployment circuit breaker: rolling back to deploymentId d1.");
        let other = deployment("d3", "PRIMARY", "td/api:9", "ECS deployment d3 in progress.");
        let back = |rolls_back, primary: &Deployment| {
            breaker_rollback(&service(rolls_back, vec![primary.clone(), failed.clone()]), "d2", Some("td/api:8"))
                .and_then(|d| d.id)
        };
        assert_eq!(back(true, &says), Some("d3".into()));
        assert_eq!(back(false, &says), Some("d3".into()), "its reason says so");
        assert_eq!(back(false, &other), None, "another writer's deployment");
        let completed = deployment("d3", "PRIMARY", "td/api:7", "ECS deployment d3 completed.");
        assert_eq!(back(true, &completed), Some("d3".into()), "the breaker rolls back, to another revision");
    }
}
