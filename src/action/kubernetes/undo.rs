//! `/rollback` with `kubectl rollout undo` semantics (kubectl's
//! `polymorphichelpers/rollback.go`): refuse a paused Deployment; pick the
//! named revision's ReplicaSet, or the one before the newest; skip when the
//! template already matches; restore that ReplicaSet's pod template without
//! its hash label, and its annotations (change-cause included) except the
//! ones that stay with the Deployment — so `kubectl rollout history` reads
//! the same as after kubectl's own undo.

use super::call::{retrying, timed, Patience};
use super::rollout::{describe_live, Expect};
use super::write::settle;
use super::{images_of, live_facts, revision_of, selector_of, template_of, without_hash, Kubernetes, Target};
use super::{is_paused, paused_note, REVISION};
use crate::action::{ActionError, Outcome, Progress};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeMap;
use tokio::time::Instant;

/// Annotations that stay on the Deployment rather than come back from the
/// ReplicaSet (kubectl's `annotationsToSkip`).
const KEPT_ON_DEPLOYMENT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The Deployment's annotations after an undo to `rs`.
fn restored_annotations(d: &Deployment, rs: &ReplicaSet) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| KEPT_ON_DEPLOYMENT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !KEPT_ON_DEPLOYMENT.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    annotations
}

/// The ReplicaSet to restore: revision `to`, or the one before the newest.
fn choose(
    t: &Target<'_>,
    d: &Deployment,
    items: Vec<ReplicaSet>,
    to: Option<u64>,
) -> Result<(u64, ReplicaSet), ActionError> {
    let uid = d.metadata.uid.clone();
    let mut owned: Vec<(u64, ReplicaSet)> = items
        .into_iter()
        .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == uid.as_ref()))
        .filter_map(|rs| revision_of(rs.metadata.annotations.as_ref()).map(|r| (r, rs)))
        .collect();
    owned.sort_by_key(|(r, _)| *r);
    let known = owned.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>().join(", ");
    let chosen = match to {
        Some(wanted) => owned.into_iter().find(|(r, _)| *r == wanted),
        None => owned.into_iter().rev().nth(1),
    };
    chosen.ok_or_else(|| {
        let what = to.map(|n| format!("revision {n}")).unwrap_or_else(|| "earlier revision".into());
        ActionError::Failed(format!("deployment {} has no {what} to roll back to (revisions: {known})", t.path()))
    })
}

impl Kubernetes {
    pub(super) async fn rollback(
        &self,
        t: &Target<'_>,
        to: Option<u64>,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let (restored, expect) = match self.undo(t, to, deadline, progress).await? {
            Undo::Restored { revision, expect } => (revision, *expect),
            // As kubectl ("skipped rollback"): not an error, nothing written,
            // and no facts, so the last real change stays what counts.
            Undo::AlreadyThere { revision, live } => {
                return Ok(Outcome::new(format!(
                    "{}: nothing to roll back, {} already runs the pod template of revision {revision}; nothing changed ({})",
                    t.service,
                    t.path(),
                    describe_live(t, &live)
                )))
            }
        };
        progress.report(format!("{}: restoring revision {restored}", t.service)).await;
        let end = self.watch(t, &expect, deadline, progress).await;
        let d = settle(t, &format!("rollback of {} to revision {restored}", t.service), end)?;
        Ok(Outcome {
            summary: format!(
                "{} rolled back to revision {restored} ({}), now revision {}",
                t.service,
                images_of(template_of(&d)),
                revision_of(d.metadata.annotations.as_ref()).unwrap_or(0)
            ),
            live: Some(live_facts(t, &d)),
        })
    }

    /// Restores a revision's pod template, unless the Deployment already
    /// holds it.
    pub(super) async fn undo(
        &self,
        t: &Target<'_>,
        to: Option<u64>,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Undo, ActionError> {
        let api = self.deployments(t).await?;
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client(t).await?, t.namespace);
        let d = self.read_now(t).await?;
        if is_paused(&d) {
            return Err(ActionError::Failed(format!(
                "deployment {} is {}: a paused deployment cannot be rolled back; resume it first",
                t.path(),
                paused_note(&d)
            )));
        }
        let params = ListParams::default().labels(&selector_of(&d));
        let list = retrying(Patience::few(), || timed(t, "list", "replicasets", replicasets.list(&params)))
            .await
            .map_err(|e| e.into_action(t))?;
        let (revision, rs) = choose(t, &d, list.items, to)?;
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(without_hash)
            .ok_or_else(|| ActionError::Failed(format!("revision {revision} has no pod template")))?;
        if template_of(&d).map(without_hash).as_ref() == Some(&template) {
            return Ok(Undo::AlreadyThere { revision, live: Box::new(d) });
        }
        // Replace against the resourceVersion just read, so a concurrent
        // change is a 409 and the next attempt starts from fresh state.
        let call = || async {
            let mut fresh = timed(t, "get", "deployments", api.get(t.deployment)).await?;
            fresh.metadata.annotations = Some(restored_annotations(&fresh, &rs));
            if let Some(term) = t.term {
                super::fence::admit(term, &fresh, "update")?;
                fresh.metadata.labels.get_or_insert_with(Default::default).insert(super::TERM.into(), term.to_string());
            }
            if let Some(spec) = fresh.spec.as_mut() {
                spec.template = template.clone();
            }
            timed(t, "update", "deployments", api.replace(t.deployment, &PostParams::default(), &fresh)).await
        };
        let landed = |live: &Deployment| template_of(live).map(without_hash).as_ref() == Some(&template);
        let what = format!("rollback to revision {revision}");
        let written = self.write(t, &what, deadline, call, landed, progress).await?;
        Ok(Undo::Restored { revision, expect: Box::new(Expect::template_of(&written.deployment())) })
    }
}

/// What an undo did.
pub(super) enum Undo {
    /// The revision's template was written; the rollout must hold `expect`.
    Restored { revision: u64, expect: Box<Expect> },
    /// The Deployment already holds that revision's template: nothing written.
    AlreadyThere { revision: u64, live: Box<Deployment> },
}
