//! Watching a rollout this request started, to its end: complete by
//! kubectl's rule; failed (the controller's progress deadline, or opsbot's
//! own deadline *with failing pods named*); still rolling out at opsbot's
//! deadline (slow but healthy, or pods that cannot be read: never a failure);
//! superseded by another writer; or unreadable. Reads that fail transiently
//! are retried until the deadline, so one 500 or one slow answer never turns
//! a healthy rollout into a failure.

use super::call::Patience;
use super::pods::pods_text;
use super::{containers_of, image_in, revision_of, template_of, without_hash, Kubernetes, Target};
use super::{CHANGE_CAUSE, REVISION};
use crate::action::Progress;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
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
    /// A real rollout failure: the controller's progress deadline, or
    /// opsbot's own deadline with failing pods named.
    Failed(String),
    /// opsbot's deadline passed and nothing says the rollout failed: it is
    /// slow, the controller has not observed it, or its pods cannot be read.
    StillRolling(String),
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
    let counts = format!(
        "{} desired, {} updated, {} available",
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0)
    );
    // Until the controller has observed the newest generation, its counts
    // describe the previous template, not the one the spec holds.
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let counts = if observed {
        format!(": {counts}")
    } else {
        format!("; its status is not updated for this change yet (last: {counts})")
    };
    format!(
        "deployment {} holds {} (revision {}){counts}",
        t.path(),
        images.join(", "),
        revision_of(d.metadata.annotations.as_ref()).unwrap_or(0),
    )
}

impl Kubernetes {
    /// Polls until the rollout `expect` describes completes, fails, is
    /// superseded, or `deadline` passes; reports changes.
    pub(super) async fn watch(
        &self,
        t: &Target<'_>,
        expect: &Expect,
        deadline: Instant,
        progress: &Progress,
    ) -> WatchEnd {
        let mut last = None;
        loop {
            let d = match self.read(t, Patience::until(deadline)).await {
                Ok(d) => d,
                Err(e) => return WatchEnd::Unreadable(e.explain(t)),
            };
            if let Some(by) = superseded(t, expect, &d) {
                return WatchEnd::Superseded(by);
            }
            let state = rollout_state(&d);
            match &state {
                Rollout::Complete => return WatchEnd::Complete(Box::new(d)),
                Rollout::NotObserved => {}
                Rollout::DeadlineExceeded(message) => {
                    let pods = pods_text(t, &self.failing_pods(t, &d).await);
                    return WatchEnd::Failed(format!("rollout exceeded its progress deadline ({message}){pods}"));
                }
                Rollout::Progressing { updated, available, desired } => {
                    let now = (*updated, *available, *desired);
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
                return self.at_deadline(t, &d, &state).await;
            }
            tokio::time::sleep(t.poll.min(deadline - now)).await;
        }
    }

    /// opsbot's own deadline passed: a failure only when failing pods are
    /// named; else the rollout is still under way, as far as anyone can tell.
    async fn at_deadline(&self, t: &Target<'_>, d: &Deployment, state: &Rollout) -> WatchEnd {
        let waited = crate::clock::format_duration(t.rollout_timeout);
        let pods = self.failing_pods(t, d).await;
        let named = pods_text(t, &pods);
        if pods.as_ref().is_ok_and(|p| !p.is_empty()) {
            return WatchEnd::Failed(format!("the rollout did not complete within {waited}{named}"));
        }
        let seen = if pods.is_ok() { "; no failing pods seen" } else { "" };
        let where_ = match state {
            Rollout::NotObserved => format!(
                "the deployment controller has not observed generation {} yet",
                d.metadata.generation.unwrap_or(0)
            ),
            _ => "still rolling out".to_string(),
        };
        WatchEnd::StillRolling(format!("{where_} after {waited}; live state: {}{named}{seen}", describe_live(t, d)))
    }

    /// What runs now, in words, for a message about a failure (best effort:
    /// a couple of tries within one call timeout each).
    pub(super) async fn live_now(&self, t: &Target<'_>) -> String {
        let patience = Patience { attempts: 2, until: Instant::now() + 2 * t.call_timeout };
        match self.read(t, patience).await {
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
