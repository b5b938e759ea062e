//! Watching a rollout this request started, to its end: complete by
//! kubectl's rule, failed (progress deadline, or opsbot's own deadline with
//! the failing pods named), superseded by another writer, or unreadable.
//! Reads that fail transiently are retried until the deadline, so one 500 or
//! one slow answer never turns a healthy rollout into a failure.

use super::call::{timed, CallError, Patience};
use super::{containers_of, image_in, revision_of, selector_of, template_of, without_hash, Kubernetes, Target};
use super::{CHANGE_CAUSE, REVISION};
use crate::action::Progress;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, ListParams};
use tokio::time::Instant;

/// Where a rollout stands, by kubectl's rule.
#[derive(Debug, PartialEq)]
pub(super) enum Rollout {
    /// The controller has not yet seen the latest spec; its status is stale.
    NotObserved,
    Complete,
    Progressing {
        updated: i32,
        available: i32,
        desired: i32,
    },
    DeadlineExceeded(String),
}

pub(super) fn rollout_state(d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    // Like kubectl: nothing in the status counts until the controller has
    // observed the current generation (a stale deadline condition included).
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::NotObserved;
    }
    if let Some(condition) = status.conditions.iter().flatten().find(|c| c.type_ == "Progressing") {
        if condition.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Rollout::DeadlineExceeded(condition.message.clone().unwrap_or_default());
        }
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated == spec_replicas && total == updated && available == updated {
        Rollout::Complete
    } else {
        Rollout::Progressing { updated, available, desired: spec_replicas }
    }
}

/// What this request's write made the Deployment hold. The rollout is this
/// request's only while the Deployment still holds it.
#[derive(Debug, Clone)]
pub(super) struct Expect {
    /// The pod template written (without the hash label); `None` when the
    /// request does not change the template (scale).
    pub(super) template: Option<PodTemplateSpec>,
    /// The replica count written.
    pub(super) replicas: Option<i32>,
}

impl Expect {
    pub(super) fn template_of(d: &Deployment) -> Expect {
        Expect { template: template_of(d).map(without_hash), replicas: None }
    }
}

/// How a watch ended.
#[derive(Debug)]
pub(super) enum WatchEnd {
    Complete(Box<Deployment>),
    /// A real rollout failure: the progress deadline, or opsbot's own.
    Failed(String),
    /// Another writer changed what this request wrote.
    Superseded(String),
    /// The state could not be read until the deadline.
    Unreadable(String),
}

/// Says how `d` no longer holds what this request wrote, if it does not.
fn superseded(t: &Target<'_>, expect: &Expect, d: &Deployment) -> Option<String> {
    if let Some(ours) = &expect.template {
        if template_of(d).map(without_hash).as_ref() != Some(ours) {
            let annotations = d.metadata.annotations.as_ref();
            let cause = annotations.and_then(|a| a.get(CHANGE_CAUSE)).map(String::as_str).unwrap_or("none recorded");
            let revision = annotations.and_then(|a| a.get(REVISION)).map(String::as_str).unwrap_or("?");
            let image = image_in(template_of(d), t.container).unwrap_or_else(|| "?".into());
            return Some(format!(
                "superseded by another change to deployment {} (revision {revision}, change-cause: {cause}, image {image})",
                t.path()
            ));
        }
    }
    if let Some(ours) = expect.replicas {
        let now = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if now != ours {
            return Some(format!("superseded: another writer set deployment {} to {now} replicas", t.path()));
        }
    }
    None
}

/// "registry/api:v2 (revision 3): 3 desired, 3 updated, 0 available".
pub(super) fn describe_live(t: &Target<'_>, d: &Deployment) -> String {
    let status = d.status.clone().unwrap_or_default();
    let images = containers_of(template_of(d)).into_iter().map(|(n, i)| format!("{n}={i}")).collect::<Vec<_>>();
    format!(
        "deployment {} holds {} (revision {}): {} desired, {} updated, {} available",
        t.path(),
        images.join(", "),
        revision_of(d.metadata.annotations.as_ref()).unwrap_or(0),
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0)
    )
}

impl Kubernetes {
    /// Polls until the rollout `expect` describes completes, fails, is
    /// superseded, or cannot be read until the deadline; reports changes.
    pub(super) async fn watch(&self, t: &Target<'_>, expect: &Expect, progress: &Progress) -> WatchEnd {
        let deadline = Instant::now() + t.rollout_timeout;
        let mut last = None;
        loop {
            let d = match self.read(t, Patience::until(deadline)).await {
                Ok(d) => d,
                Err(e) => return WatchEnd::Unreadable(e.explain(t)),
            };
            if let Some(by) = superseded(t, expect, &d) {
                return WatchEnd::Superseded(by);
            }
            match rollout_state(&d) {
                Rollout::Complete => return WatchEnd::Complete(Box::new(d)),
                Rollout::NotObserved => {}
                Rollout::DeadlineExceeded(message) => {
                    let pods = self.failing_pods(t, &d).await.unwrap_or_default();
                    return WatchEnd::Failed(format!("rollout exceeded its progress deadline ({message}){pods}"));
                }
                Rollout::Progressing { updated, available, desired } => {
                    let now = (updated, available, desired);
                    if last != Some(now) {
                        progress
                            .report(format!("{}: {updated}/{desired} updated, {available} available", t.deployment))
                            .await;
                        last = Some(now);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let pods = self.failing_pods(t, &d).await.unwrap_or_default();
                return WatchEnd::Failed(format!(
                    "timed out after {} waiting for the rollout{pods}",
                    crate::clock::format_duration(t.rollout_timeout)
                ));
            }
            tokio::time::sleep(t.poll.min(deadline - now)).await;
        }
    }

    /// "; failing pods: x: CrashLoopBackOff (3 restarts)" for pods that are not ready.
    pub(super) async fn failing_pods(&self, t: &Target<'_>, d: &Deployment) -> Result<String, CallError> {
        let client = self.client(t).await.map_err(|e| CallError {
            verb: "list",
            resource: "pods",
            failure: super::call::Failure::Client(e.to_string()),
            attempts: 1,
        })?;
        let pods: Api<Pod> = Api::namespaced(client, t.namespace);
        let list = timed(t, "list", "pods", pods.list(&ListParams::default().labels(&selector_of(d)))).await?;
        let mut reasons = Vec::new();
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            for cs in pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default() {
                if cs.ready {
                    continue;
                }
                let state = cs.state.as_ref();
                let reason = state
                    .and_then(|s| s.waiting.as_ref().and_then(|w| w.reason.clone()))
                    .or_else(|| state.and_then(|s| s.terminated.as_ref().and_then(|t| t.reason.clone())))
                    .or_else(|| {
                        cs.last_state.as_ref().and_then(|s| s.terminated.as_ref().and_then(|t| t.reason.clone()))
                    })
                    .unwrap_or_else(|| {
                        pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "not ready".into())
                    });
                reasons.push(format!("{name}: {reason} ({} restarts)", cs.restart_count));
            }
        }
        reasons.truncate(5);
        Ok(if reasons.is_empty() { String::new() } else { format!("; failing pods: {}", reasons.join("; ")) })
    }

    /// What runs now, in words, for a message about a failure (best effort).
    pub(super) async fn live_now(&self, t: &Target<'_>) -> String {
        match self.read(t, Patience::few()).await {
            Ok(d) => format!("live now: {}", describe_live(t, &d)),
            Err(e) => format!("the live state cannot be read ({})", e.explain(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, observed: i64, replicas: i32, updated: i32, available: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": updated, "updatedReplicas": updated, "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn kubectls_rollout_rule() {
        assert_eq!(rollout_state(&deployment(3, 2, 2, 2, 2)), Rollout::NotObserved);
        assert_eq!(rollout_state(&deployment(3, 3, 2, 2, 2)), Rollout::Complete);
        assert_eq!(
            rollout_state(&deployment(3, 3, 3, 2, 1)),
            Rollout::Progressing { updated: 2, available: 1, desired: 3 }
        );
    }
}
