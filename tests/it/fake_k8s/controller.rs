//! The fake's deployment controller. Like the real one: a changed pod
//! template gets a ReplicaSet (a new one, or the old one whose template it
//! matches, which then gets the next revision); the Deployment's annotations
//! are copied onto that ReplicaSet except the ones that stay with the
//! Deployment (so a change-cause follows the template, and
//! `kubectl rollout history` shows it, and `revision-history` lists the
//! revisions a reused ReplicaSet had); a paused Deployment makes no new
//! ReplicaSet and rolls nothing out until resumed; scaling emits
//! `ScalingReplicaSet` events on the Deployment. A rollout that makes no
//! progress (new pods that crash or cannot be scheduled) for the Deployment's
//! `progressDeadlineSeconds` is `ProgressDeadlineExceeded`; a slow one that
//! keeps progressing never is. Like the real controllers, trouble is recorded
//! where it happens: `BackOff` and `FailedScheduling` on the pods.

use super::{Shared, World, CRASHING, UNSCHEDULABLE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotations the controller does not copy from a Deployment to its
/// ReplicaSets (its `skipCopyAnnotation`).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

fn template_hash(template: &Value) -> String {
    let mut template = template.clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    hex::encode(&Sha256::digest(template.to_string().as_bytes())[..5])
}

pub(super) fn revision(object: &Value) -> u64 {
    object["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// What the pods of a pod template do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fate {
    Runs,
    /// An image tag containing [`CRASHING`]: CrashLoopBackOff.
    Crashes,
    /// An image tag containing [`UNSCHEDULABLE`]: Pending, no node fits.
    Unschedulable,
}

pub(super) fn fate(template: &Value) -> Fate {
    let images: Vec<&str> =
        template["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["image"].as_str()).collect();
    if images.iter().any(|i| i.contains(CRASHING)) {
        Fate::Crashes
    } else if images.iter().any(|i| i.contains(UNSCHEDULABLE)) {
        Fate::Unschedulable
    } else {
        Fate::Runs
    }
}

/// The message the scheduler records for a pod no node fits.
pub(super) const NO_NODE: &str = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";

/// Records an event about an object (core v1 shape), by the component that
/// would record it: `kind` is the involved object's kind (Deployment,
/// ReplicaSet, Pod).
pub(super) fn record_event(
    world: &mut World,
    ns: &str,
    (kind, name): (&str, &str),
    type_: &str,
    reason: &str,
    message: &str,
) {
    world.rv += 1;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let key = (ns.to_string(), name.to_string());
    let (api_version, uid, component) = match kind {
        "Deployment" => {
            ("apps/v1", world.deployments.get(&key).map(|d| d["metadata"]["uid"].clone()), "deployment-controller")
        }
        "ReplicaSet" => {
            ("apps/v1", world.replicasets.get(&key).map(|r| r["metadata"]["uid"].clone()), "replicaset-controller")
        }
        _ if reason == "FailedScheduling" => ("v1", None, "default-scheduler"),
        _ => ("v1", None, "kubelet"),
    };
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", world.rv), "namespace": ns, "resourceVersion": world.rv.to_string(), "creationTimestamp": now},
        "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name, "namespace": ns, "uid": uid.unwrap_or(Value::Null)},
        "reason": reason, "message": message, "type": type_, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": ""
    });
    world.events.push(event);
}

/// The events the kubelet or the scheduler records for a new pod that fails.
fn record_pod_trouble(world: &mut World, ns: &str, pod: &str, fate: Fate, container: &str) {
    match fate {
        Fate::Runs => {}
        Fate::Crashes => record_event(
            world,
            ns,
            ("Pod", pod),
            "Warning",
            "BackOff",
            &format!("Back-off restarting failed container {container} in pod {pod}"),
        ),
        Fate::Unschedulable => record_event(world, ns, ("Pod", pod), "Warning", "FailedScheduling", NO_NODE),
    }
}

/// A new ReplicaSet for `deployment`'s pod template (hash `hash`), with the
/// Deployment's copied annotations and revision `revision`; its key.
/// The keys of the ReplicaSets deployment `ns/name` owns.
fn owned_replicasets(world: &World, ns: &str, name: &str) -> Vec<(String, String)> {
    world
        .replicasets
        .iter()
        .filter(|(k, rs)| k.0 == ns && rs["metadata"]["ownerReferences"][0]["name"] == name)
        .map(|(k, _)| k.clone())
        .collect()
}

fn new_replicaset(
    world: &mut World,
    ns: &str,
    deployment: &Value,
    hash: &str,
    copied: serde_json::Map<String, Value>,
    revision: u64,
) -> (String, String) {
    let name = deployment["metadata"]["name"].as_str().unwrap_or("");
    let template = &deployment["spec"]["template"];
    let rs_name = format!("{name}-{hash}");
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut labels = template["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!(hash);
    let mut annotations = Value::Object(copied);
    annotations[REVISION] = json!(revision.to_string());
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations, "uid": format!("uid-{rs_name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": deployment["metadata"]["uid"], "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": rs_template},
        "status": {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0}
    });
    world.replicasets.insert((ns.to_string(), rs_name.clone()), rs);
    (ns.to_string(), rs_name)
}

/// How long a rollout may go without progress (`progressDeadlineSeconds`,
/// 600 when unset, as the API server defaults it).
fn progress_deadline(d: &Value) -> Duration {
    Duration::from_secs_f64(d["spec"]["progressDeadlineSeconds"].as_f64().unwrap_or(600.0))
}

impl Shared {
    fn bump(&self, world: &mut World) -> String {
        world.rv += 1;
        world.rv.to_string()
    }

    pub(super) fn publish(&self, world: &mut World, ns: &str, name: &str) {
        let rv = self.bump(world);
        if let Some(d) = world.deployments.get_mut(&(ns.to_string(), name.to_string())) {
            d["metadata"]["resourceVersion"] = json!(rv);
            let _ = self.events.send(json!({"type": "MODIFIED", "object": d.clone()}));
        }
    }

    /// The deployment controller's reaction to a changed pod template.
    pub(super) fn reconcile(&self, world: &mut World, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        let deployment = world.deployments[&key].clone();
        let template = deployment["spec"]["template"].clone();
        let hash = template_hash(&template);
        let owned = owned_replicasets(world, ns, name);
        let max_revision = owned.iter().map(|k| revision(&world.replicasets[k])).max().unwrap_or(0);
        let current = owned
            .iter()
            .find(|k| world.replicasets[*k]["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            .cloned();
        let copied: serde_json::Map<String, Value> = deployment["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rs_key = match current {
            Some(k) => {
                // The template's ReplicaSet exists (a rollback, or no change):
                // it takes the Deployment's annotations, and the next revision
                // unless it is already the newest.
                let rs = world.replicasets.get_mut(&k).unwrap();
                let old = revision(rs);
                for (k, v) in &copied {
                    rs["metadata"]["annotations"][k] = v.clone();
                }
                if old != max_revision {
                    rs["metadata"]["annotations"][REVISION] = json!((max_revision + 1).to_string());
                    // Every revision this ReplicaSet had, comma-joined.
                    let history = &mut rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"];
                    *history = match history.as_str() {
                        Some(earlier) if !earlier.is_empty() => json!(format!("{earlier},{old}")),
                        _ => json!(old.to_string()),
                    };
                }
                k
            }
            None => new_replicaset(world, ns, &deployment, &hash, copied, max_revision + 1),
        };
        let rev = revision(&world.replicasets[&rs_key]);
        let d = world.deployments.get_mut(&key).unwrap();
        d["metadata"]["annotations"][REVISION] = json!(rev.to_string());
        world.progressed.insert(key, Instant::now());
        let message = format!("Scaled up replica set {} to 1", rs_key.1);
        record_event(world, ns, ("Deployment", name), "Normal", "ScalingReplicaSet", &message);
    }

    /// One controller step for every deployment: new pods come up one at a
    /// time (unless they fail), old ones go away, status follows. A paused
    /// Deployment only scales the ReplicaSet of its current revision.
    pub(super) fn tick(&self) {
        let mut world = self.world.lock().unwrap();
        let keys: Vec<(String, String)> = world.deployments.keys().cloned().collect();
        for key in keys {
            self.step(&mut world, &key);
        }
        super::jobs::tick(&mut world);
    }

    fn step(&self, world: &mut World, key: &(String, String)) {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let d = world.deployments[key].clone();
        let desired = d["spec"]["replicas"].as_u64().unwrap_or(1);
        let paused = d["spec"]["paused"] == true;
        let owned = owned_replicasets(world, ns, name);
        let newest = owned.iter().find(|k| revision(&world.replicasets[*k]) == revision(&d)).cloned();
        let (hash, fate) = match (&newest, paused) {
            (Some(k), true) => {
                let rs = &world.replicasets[k];
                (
                    rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("").to_string(),
                    fate(&rs["spec"]["template"]),
                )
            }
            _ => (template_hash(&d["spec"]["template"]), fate(&d["spec"]["template"])),
        };
        let counts = scale_replicasets(world, ns, &owned, &hash, fate, desired);
        // Progress: more new pods, or more of them ready.
        let before = &world.deployments[key]["status"];
        let progressed = counts.updated > before["updatedReplicas"].as_u64().unwrap_or(0)
            || counts.ready > before["readyReplicas"].as_u64().unwrap_or(0);
        if progressed && world.progressed.contains_key(key) {
            world.progressed.insert(key.clone(), Instant::now());
        }
        let complete = counts.updated == desired && counts.total == desired && counts.ready == desired;
        let stalled = world.progressed.get(key).is_some_and(|at| at.elapsed() > progress_deadline(&d));
        let progressing = if paused {
            json!({"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused", "message": "Deployment is paused"})
        } else if complete {
            world.progressed.remove(key);
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."})
        } else if stalled {
            json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": format!("ReplicaSet \"{name}-{hash}\" has timed out progressing.")})
        } else {
            json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"})
        };
        let (total, ready) = (counts.total, counts.ready);
        let status = json!({
            "observedGeneration": d["metadata"]["generation"].as_u64().unwrap_or(1), "replicas": total, "updatedReplicas": counts.updated,
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": total.saturating_sub(ready),
            "conditions": [{"type": "Available", "status": if ready >= desired.saturating_sub(desired / 4) { "True" } else { "False" }}, progressing]
        });
        if status != world.deployments[key]["status"] || counts.changed {
            world.deployments.get_mut(key).unwrap()["status"] = status;
            self.publish(world, ns, name);
        }
    }
}

/// Pod counts over a Deployment's ReplicaSets after one step.
struct Counts {
    total: u64,
    updated: u64,
    ready: u64,
    changed: bool,
}

/// Moves each ReplicaSet one pod toward where it should be: the new one up
/// (its failing pods never ready), old ones down (unless the new pods fail:
/// then the old pods keep serving).
fn scale_replicasets(
    world: &mut World,
    ns: &str,
    owned: &[(String, String)],
    hash: &str,
    fate: Fate,
    desired: u64,
) -> Counts {
    let mut counts = Counts { total: 0, updated: 0, ready: 0, changed: false };
    for rs_key in owned {
        let is_new = world.replicasets[rs_key]["metadata"]["labels"]["pod-template-hash"] == hash;
        let have = world.replicasets[rs_key]["spec"]["replicas"].as_u64().unwrap_or(0);
        let want = if is_new {
            (have + 1).min(desired)
        } else if fate != Fate::Runs {
            have
        } else {
            have.saturating_sub(1)
        };
        counts.changed |= want != have;
        let ready_here = if is_new && fate != Fate::Runs { 0 } else { want };
        let rs = world.replicasets.get_mut(rs_key).unwrap();
        rs["spec"]["replicas"] = json!(want);
        rs["status"] = json!({"replicas": want, "readyReplicas": ready_here, "availableReplicas": ready_here, "observedGeneration": 1});
        let container = rs["spec"]["template"]["spec"]["containers"][0]["name"].as_str().unwrap_or("app").to_string();
        if is_new {
            for i in have..want {
                record_pod_trouble(world, ns, &format!("{}-{i}", rs_key.1), fate, &container);
            }
            counts.updated = want;
        }
        counts.total += want;
        counts.ready += ready_here;
    }
    counts
}
