//! The fake's deployment controller. Like the real one: a changed pod
//! template gets a ReplicaSet (a new one, or the old one whose template it
//! matches, which then gets the next revision); the Deployment's annotations
//! are copied onto that ReplicaSet except the ones that stay with the
//! Deployment (so a change-cause follows the template, and
//! `kubectl rollout history` shows it); a paused Deployment makes no new
//! ReplicaSet and rolls nothing out until resumed; scaling emits
//! `ScalingReplicaSet` events.

use super::{Shared, World, CRASHING, DEADLINE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;

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

pub(super) fn crashing(template: &Value) -> bool {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["image"].as_str().unwrap_or("").contains(CRASHING))
}

/// Records an event about a Deployment (core v1 shape).
pub(super) fn record_event(world: &mut World, ns: &str, deployment: &str, kind: &str, reason: &str, message: &str) {
    world.rv += 1;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let uid = world.deployments.get(&(ns.to_string(), deployment.to_string())).map(|d| d["metadata"]["uid"].clone());
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{deployment}.{:x}", world.rv), "namespace": ns, "resourceVersion": world.rv.to_string(), "creationTimestamp": now},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "namespace": ns, "uid": uid.unwrap_or(Value::Null)},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": "deployment-controller"}, "reportingComponent": "deployment-controller", "reportingInstance": ""
    });
    world.events.push(event);
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
        let owned: Vec<(String, String)> = world
            .replicasets
            .iter()
            .filter(|(k, rs)| k.0 == ns && rs["metadata"]["ownerReferences"][0]["name"] == name)
            .map(|(k, _)| k.clone())
            .collect();
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
                    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = json!(old.to_string());
                }
                k
            }
            None => {
                let rs_name = format!("{name}-{hash}");
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut labels = template["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let mut annotations = Value::Object(copied);
                annotations[REVISION] = json!((max_revision + 1).to_string());
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
        };
        let rev = revision(&world.replicasets[&rs_key]);
        let d = world.deployments.get_mut(&key).unwrap();
        d["metadata"]["annotations"][REVISION] = json!(rev.to_string());
        world.rollout_started.insert(key, Instant::now());
        let message = format!("Scaled up replica set {} to 1", rs_key.1);
        record_event(world, ns, name, "Normal", "ScalingReplicaSet", &message);
    }

    /// One controller step for every deployment: new pods come up one at a
    /// time (unless they crash), old ones go away, status follows. A paused
    /// Deployment only scales the ReplicaSet of its current revision.
    pub(super) fn tick(&self) {
        let mut world = self.world.lock().unwrap();
        let keys: Vec<(String, String)> = world.deployments.keys().cloned().collect();
        for (ns, name) in keys {
            let key = (ns.clone(), name.clone());
            let d = world.deployments[&key].clone();
            let desired = d["spec"]["replicas"].as_u64().unwrap_or(1);
            let generation = d["metadata"]["generation"].as_u64().unwrap_or(1);
            let paused = d["spec"]["paused"] == true;
            let owned: Vec<(String, String)> = world
                .replicasets
                .iter()
                .filter(|(k, rs)| k.0 == ns && rs["metadata"]["ownerReferences"][0]["name"] == name.as_str())
                .map(|(k, _)| k.clone())
                .collect();
            let newest = owned.iter().find(|k| revision(&world.replicasets[*k]) == revision(&d)).cloned();
            let (hash, crash) = match (&newest, paused) {
                (Some(k), true) => {
                    let rs = &world.replicasets[k];
                    (
                        rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("").to_string(),
                        crashing(&rs["spec"]["template"]),
                    )
                }
                _ => (template_hash(&d["spec"]["template"]), crashing(&d["spec"]["template"])),
            };
            let before = world.deployments[&key]["status"].clone();
            let mut changed = false;
            let (mut total, mut updated, mut ready) = (0, 0, 0);
            for rs_key in &owned {
                let is_new = world.replicasets[rs_key]["metadata"]["labels"]["pod-template-hash"] == hash.as_str();
                let rs = world.replicasets.get_mut(rs_key).unwrap();
                let have = rs["spec"]["replicas"].as_u64().unwrap_or(0);
                let want = if is_new {
                    if have < desired {
                        have + 1
                    } else {
                        desired
                    }
                } else if crash {
                    have // old pods keep serving while the new ones crash
                } else {
                    have.saturating_sub(1)
                };
                if want != have {
                    changed = true;
                }
                let ready_here = if is_new && crash { 0 } else { want };
                rs["spec"]["replicas"] = json!(want);
                rs["status"] = json!({"replicas": want, "readyReplicas": ready_here, "availableReplicas": ready_here, "observedGeneration": 1});
                total += want;
                ready += ready_here;
                if is_new {
                    updated = want;
                }
            }
            let started = world.rollout_started.get(&key).copied();
            let complete = updated == desired && total == desired && ready == desired;
            let deadline_exceeded = crash && !paused && started.is_some_and(|s| s.elapsed() > DEADLINE);
            let progressing = if paused {
                json!({"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused", "message": "Deployment is paused"})
            } else if complete {
                world.rollout_started.remove(&key);
                json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."})
            } else if deadline_exceeded {
                json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": format!("ReplicaSet \"{name}-{hash}\" has timed out progressing.")})
            } else {
                json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"})
            };
            let status = json!({
                "observedGeneration": generation, "replicas": total, "updatedReplicas": updated,
                "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": total.saturating_sub(ready),
                "conditions": [{"type": "Available", "status": if ready >= desired.saturating_sub(desired / 4) { "True" } else { "False" }}, progressing]
            });
            if status != before || changed {
                world.deployments.get_mut(&key).unwrap()["status"] = status;
                self.publish(&mut world, &ns, &name);
            }
        }
    }
}
