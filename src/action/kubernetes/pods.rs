//! The pods of a rollout and what is wrong with them. Only the pods of the
//! Deployment's *new* ReplicaSet (the one whose pod template the Deployment
//! holds, found by its `pod-template-hash`) count: the old ReplicaSet's pods
//! are the ones still serving. A pod fails when it cannot be scheduled
//! (`PodScheduled=False`: quota, capacity), when a container waits for a
//! reason other than starting up (CrashLoopBackOff, ImagePullBackOff …), or
//! has terminated or restarted; a pod that is only slow to become ready is
//! not failing.

use super::call::{timed, CallError, Failure};
use super::{selector_of, template_of, without_hash, Kubernetes, Target, POD_TEMPLATE_HASH};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};

/// Failing pods named in a message.
const SHOWN: usize = 3;

/// Waiting reasons of a container that is still starting, not failing.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// A pod of the new ReplicaSet that fails, and why.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FailingPod {
    pub(super) name: String,
    pub(super) why: String,
}

/// "; failing pods: a: CrashLoopBackOff (4 restarts); b: …", or that they
/// could not be read and why; empty when none fail.
pub(super) fn pods_text(t: &Target<'_>, pods: &Result<Vec<FailingPod>, CallError>) -> String {
    match pods {
        Ok(pods) if pods.is_empty() => String::new(),
        Ok(pods) => {
            let mut shown: Vec<String> = pods.iter().take(SHOWN).map(|p| format!("{}: {}", p.name, p.why)).collect();
            if pods.len() > SHOWN {
                shown.push(format!("and {} more", pods.len() - SHOWN));
            }
            format!("; failing pods: {}", shown.join("; "))
        }
        Err(e) => format!("; the new pods could not be read ({})", e.explain(t)),
    }
}

/// Why `pod` fails, if it does.
fn problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unscheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        let reason = c.reason.as_deref().unwrap_or("not scheduled");
        return Some(format!("{reason}: {}", c.message.as_deref().unwrap_or("no reason given").trim()));
    }
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!("Failed: {}", status.message.as_deref().or(status.reason.as_deref()).unwrap_or("")));
    }
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    containers.filter(|cs| !cs.ready).find_map(container_problem)
}

fn container_problem(cs: &ContainerStatus) -> Option<String> {
    let restarts = cs.restart_count;
    let state = cs.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or("Waiting");
        if STARTING.contains(&reason) && restarts == 0 {
            return None;
        }
        return Some(format!("{reason} ({restarts} restarts)"));
    }
    if let Some(done) = state.and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
        return Some(format!("{} ({restarts} restarts)", done.reason.as_deref().unwrap_or("Terminated")));
    }
    if restarts > 0 {
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.reason.clone());
        return Some(format!("{} ({restarts} restarts)", last.as_deref().unwrap_or("restarting")));
    }
    None
}

/// The ReplicaSet of the template `d` holds, among `replicasets`.
pub(super) fn newest<'r>(d: &Deployment, replicasets: &'r [ReplicaSet]) -> Option<&'r ReplicaSet> {
    let ours = template_of(d).map(without_hash)?;
    replicasets
        .iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(without_hash) == Some(ours.clone()))
}

fn client_failure(verb: &'static str, resource: &'static str, e: crate::action::ActionError) -> CallError {
    CallError { verb, resource, failure: Failure::Client(e.to_string()), attempts: 1 }
}

impl Kubernetes {
    /// The ReplicaSets `d` owns (one try: callers bound their own time).
    pub(super) async fn owned_replicasets(&self, t: &Target<'_>, d: &Deployment) -> Result<Vec<ReplicaSet>, CallError> {
        let client = self.client(t).await.map_err(|e| client_failure("list", "replicasets", e))?;
        let api: Api<ReplicaSet> = Api::namespaced(client, t.namespace);
        let params = ListParams::default().labels(&selector_of(d));
        let list = timed(t, "list", "replicasets", api.list(&params)).await?;
        let uid = d.metadata.uid.as_ref();
        Ok(list
            .items
            .into_iter()
            .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == uid))
            .collect())
    }

    /// The failing pods of `rs`, a ReplicaSet of `d`.
    pub(super) async fn failing_pods_of(
        &self,
        t: &Target<'_>,
        d: &Deployment,
        rs: &ReplicaSet,
    ) -> Result<Vec<FailingPod>, CallError> {
        let Some(hash) = rs.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH)) else {
            return Ok(Vec::new());
        };
        let client = self.client(t).await.map_err(|e| client_failure("list", "pods", e))?;
        let pods: Api<Pod> = Api::namespaced(client, t.namespace);
        let selector = match selector_of(d) {
            labels if labels.is_empty() => format!("{POD_TEMPLATE_HASH}={hash}"),
            labels => format!("{labels},{POD_TEMPLATE_HASH}={hash}"),
        };
        let list = timed(t, "list", "pods", pods.list(&ListParams::default().labels(&selector))).await?;
        Ok(list
            .items
            .iter()
            .filter_map(|pod| {
                let why = problem(pod)?;
                Some(FailingPod { name: pod.metadata.name.clone().unwrap_or_default(), why })
            })
            .collect())
    }

    /// The failing pods of the rollout `d` is in (none before the controller
    /// made its ReplicaSet).
    pub(super) async fn failing_pods(&self, t: &Target<'_>, d: &Deployment) -> Result<Vec<FailingPod>, CallError> {
        let replicasets = self.owned_replicasets(t, d).await?;
        match newest(d, &replicasets) {
            Some(rs) => self.failing_pods_of(t, d, rs).await,
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "api-1"}, "status": status})).unwrap()
    }

    #[test]
    fn a_pod_fails_when_it_cannot_be_scheduled_or_its_container_fails_not_when_it_is_slow() {
        let cases = [
            (
                serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
                Some("Unschedulable: 0/3 nodes are available"),
            ),
            (
                serde_json::json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                Some("CrashLoopBackOff (4 restarts)"),
            ),
            (
                serde_json::json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
                Some("ImagePullBackOff (0 restarts)"),
            ),
            (
                serde_json::json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
                Some("OOMKilled (2 restarts)"),
            ),
            (
                serde_json::json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                None,
            ),
            (
                serde_json::json!({"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}]}),
                None,
            ),
            (serde_json::json!({"phase": "Pending"}), None),
        ];
        for (status, want) in cases {
            assert_eq!(problem(&pod(status.clone())).as_deref(), want, "{status}");
        }
    }
}
