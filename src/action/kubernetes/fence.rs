//! The leader's term as a fencing token on Deployment writes (PostgreSQL
//! store, several replicas). Every write in a term reads the Deployment
//! first, refuses when an opsbot leader of a newer term wrote it, and is sent
//! conditional on the resourceVersion it read, stamping the term into the
//! Deployment's `opsbot.dev/term` label (a label, not an annotation: the
//! controller copies a Deployment's annotations onto its ReplicaSets, and
//! `kubectl rollout undo` copies them back, which could lower the term). A
//! new leader stamps the targets
//! of the actions it records as interrupted ([`Kubernetes::fence`]). So a
//! deposed leader's late write (it read before the new term's stamp: 409,
//! re-read, refused; it reads after: refused) is never applied.
//!
//! On sled there is one process and no term: writes are sent as before.

use super::call::{timed, Backoff, CallError, Failure};
use super::{Kubernetes, Target};
use crate::action::ActionError;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

/// The label holding the term of the opsbot leader that last wrote the
/// Deployment.
pub const TERM: &str = "opsbot.dev/term";

/// Conflicts a write in a term rides out (a rollout's status updates change
/// the resourceVersion), on top of its ordinary attempts.
pub(super) const CONFLICTS: u32 = 10;

/// The term the Deployment was last written in by an opsbot leader.
pub(super) fn term_of(d: &Deployment) -> Option<u64> {
    d.metadata.labels.as_ref().and_then(|l| l.get(TERM)).and_then(|v| v.parse().ok())
}

/// Refuses a write in `term` to `live` when a newer term wrote it.
pub(super) fn admit(term: u64, live: &Deployment, verb: &'static str) -> Result<(), CallError> {
    match term_of(live) {
        Some(newer) if newer > term => Err(CallError {
            verb,
            resource: "deployments",
            failure: Failure::Fenced { newer, ours: term },
            attempts: 1,
        }),
        _ => Ok(()),
    }
}

/// `body` (a merge or strategic-merge patch) stamped with `term` and made
/// conditional on the resourceVersion of `live` (an API server always sends
/// one; without it the write would not be conditional, so it is not sent).
fn stamped(mut body: Value, term: u64, live: &Deployment) -> Result<Value, CallError> {
    let Some(version) = live.metadata.resource_version.as_deref() else {
        let failure = Failure::Client("the Deployment was read without a resourceVersion; nothing was sent".into());
        return Err(CallError { verb: "patch", resource: "deployments", failure, attempts: 1 });
    };
    body["metadata"]["labels"][TERM] = json!(term.to_string());
    body["metadata"]["resourceVersion"] = json!(version);
    Ok(body)
}

/// Whether `body` is a strategic-merge patch (else a JSON merge patch).
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Strategic,
    Merge,
}

impl Kubernetes {
    /// One patch of the Deployment: in a term, read, admitted, stamped and
    /// conditional (a 409 means another write came between: the caller's
    /// next attempt reads again); without one, sent as is.
    pub(super) async fn patch(
        &self,
        t: &Target<'_>,
        api: &Api<Deployment>,
        kind: Kind,
        body: &Value,
    ) -> Result<Deployment, CallError> {
        let body = match t.term {
            Some(term) => {
                // A read that failed sent nothing: never "may have landed".
                let live = timed(t, "get", "deployments", api.get(t.deployment)).await.map_err(|e| {
                    if e.failure.may_have_landed() {
                        let failure = Failure::NotSent(e.explain(t));
                        CallError { verb: "patch", resource: "deployments", failure, attempts: 1 }
                    } else {
                        e
                    }
                })?;
                admit(term, &live, "patch")?;
                stamped(body.clone(), term, &live)?
            }
            None => body.clone(),
        };
        let params = PatchParams::default();
        let patch = match kind {
            Kind::Strategic => Patch::Strategic(body),
            Kind::Merge => Patch::Merge(body),
        };
        timed(t, "patch", "deployments", api.patch(t.deployment, &params, &patch)).await
    }

    /// A new leader's mark on the Deployment of an action its predecessor
    /// left running: the term, so that predecessor's late writes are
    /// refused. Says what it did.
    pub(super) async fn stamp(&self, t: &Target<'_>, term: u64) -> Result<String, ActionError> {
        let api = self.deployments(t).await?;
        let (mut conflicts, mut backoff) = (0, Backoff::default());
        loop {
            let live = self.read_now(t).await?;
            if term_of(&live).is_some_and(|held| held >= term) {
                return Ok(format!("deployment {} already carries term {}", t.path(), term_of(&live).unwrap_or(term)));
            }
            let body = stamped(json!({}), term, &live).map_err(|e| e.into_action(t))?;
            match timed(
                t,
                "patch",
                "deployments",
                api.patch(t.deployment, &PatchParams::default(), &Patch::Merge(body)),
            )
            .await
            {
                Ok(_) => return Ok(format!("deployment {} now carries term {term}", t.path())),
                Err(e) if e.failure == Failure::Conflict && conflicts < CONFLICTS => {
                    conflicts += 1;
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e.into_action(t)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn deployment(term: Option<&str>, rv: &str) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.resource_version = Some(rv.into());
        d.metadata.labels = term.map(|t| BTreeMap::from([(TERM.to_string(), t.to_string())]));
        d
    }

    #[test]
    fn a_write_is_refused_only_when_a_newer_term_wrote_the_deployment() {
        assert!(admit(2, &deployment(None, "1"), "patch").is_ok());
        assert!(admit(2, &deployment(Some("1"), "1"), "patch").is_ok());
        assert!(admit(2, &deployment(Some("2"), "1"), "patch").is_ok());
        let refused = admit(2, &deployment(Some("3"), "1"), "patch").unwrap_err();
        assert_eq!(refused.failure, Failure::Fenced { newer: 3, ours: 2 });
        // Not a number: not opsbot's, not a fence.
        assert!(admit(2, &deployment(Some("x"), "1"), "patch").is_ok());
    }

    #[test]
    fn a_stamped_patch_carries_the_term_and_the_version_it_read() {
        let body = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "c"}}, "spec": {"replicas": 3}});
        let out = stamped(body.clone(), 7, &deployment(Some("6"), "42")).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "c"}, "labels": {TERM: "7"}, "resourceVersion": "42"},
                   "spec": {"replicas": 3}})
        );
        let mut unversioned = deployment(None, "1");
        unversioned.metadata.resource_version = None;
        assert!(matches!(stamped(body, 7, &unversioned).unwrap_err().failure, Failure::Client(_)));
    }
}
