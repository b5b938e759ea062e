//! `/status`: the Deployment (images per container, replicas, rollout state,
//! paused), then each thing opsbot may or may not be allowed to read —
//! revisions (ReplicaSets), the new ReplicaSet's failing pods, and recent
//! events (Warning first) of the objects where trouble is recorded: the
//! Deployment (scaling), its newest ReplicaSets (`FailedCreate`: quota) and
//! the failing pods (`BackOff`, `FailedScheduling`, `Unhealthy`). What cannot
//! be read is named, with why, and the rest is still shown.

use super::call::{retrying, timed, CallError, Failure, Patience};
use super::pods::{newest, FailingPod};
use super::rollout::{rollout_state, Rollout};
use super::{containers_of, images_of, is_paused, paused_note, revision_of, target, template_of};
use super::{Kubernetes, Target};
use crate::action::ActionError;
use crate::config::Service;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

/// Events shown.
const EVENTS: usize = 5;
/// ReplicaSets whose events are read: the newest revisions.
const REPLICASETS_WITH_EVENTS: usize = 2;

fn unreadable(t: &Target<'_>, e: &CallError) -> String {
    match e.failure {
        Failure::Forbidden => format!(
            "not readable: opsbot may not {} {} in namespace {} (403; see deploy/kubernetes/base/rbac.yaml)",
            e.verb, e.resource, t.namespace
        ),
        _ => format!("not readable: {}", e.explain(t)),
    }
}

fn client_error(verb: &'static str, resource: &'static str, e: ActionError) -> CallError {
    CallError { verb, resource, failure: Failure::Client(e.to_string()), attempts: 1 }
}

/// Newest first, Warning before Normal.
fn event_lines(mut events: Vec<Event>) -> Vec<String> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by(|a, b| {
        let warning = |e: &Event| e.type_.as_deref() != Some("Warning");
        warning(a).cmp(&warning(b)).then_with(|| when(b).cmp(&when(a)))
    });
    events
        .into_iter()
        .take(EVENTS)
        .map(|e| {
            let times = e.count.filter(|c| *c > 1).map(|c| format!(" ×{c}")).unwrap_or_default();
            format!(
                "{} {}{times}: {}",
                e.type_.as_deref().unwrap_or("Normal"),
                e.reason.as_deref().unwrap_or("?"),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}

/// (revision, images) of each ReplicaSet, newest first.
fn revisions(replicasets: &[ReplicaSet]) -> Vec<(u64, String)> {
    let mut history: Vec<(u64, String)> = replicasets
        .iter()
        .filter_map(|rs| {
            let revision = revision_of(rs.metadata.annotations.as_ref())?;
            Some((revision, images_of(rs.spec.as_ref().and_then(|s| s.template.as_ref()))))
        })
        .collect();
    history.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
    history
}

/// The objects whose events `/status` shows: (kind, name).
fn with_events(t: &Target<'_>, replicasets: &[ReplicaSet], pods: &[FailingPod]) -> Vec<(&'static str, String)> {
    let mut newest_first: Vec<&ReplicaSet> = replicasets.iter().collect();
    newest_first.sort_by_key(|rs| std::cmp::Reverse(revision_of(rs.metadata.annotations.as_ref())));
    let mut objects = vec![("Deployment", t.deployment.to_string())];
    objects.extend(
        newest_first
            .iter()
            .take(REPLICASETS_WITH_EVENTS)
            .filter_map(|rs| rs.metadata.name.clone())
            .map(|n| ("ReplicaSet", n)),
    );
    objects.extend(pods.iter().take(3).map(|p| ("Pod", p.name.clone())));
    objects
}

impl Kubernetes {
    async fn events(&self, t: &Target<'_>, objects: &[(&'static str, String)]) -> Result<Vec<String>, CallError> {
        let client = self.client(t).await.map_err(|e| client_error("list", "events", e))?;
        let api: Api<Event> = Api::namespaced(client, t.namespace);
        let mut events = Vec::new();
        for (kind, name) in objects {
            let params =
                ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}"));
            events.extend(retrying(Patience::few(), || timed(t, "list", "events", api.list(&params))).await?.items);
        }
        Ok(event_lines(events))
    }

    pub(super) async fn describe(&self, service: &Service) -> Result<String, ActionError> {
        let t = target(service)?;
        let d = self.read_now(&t).await?;
        let mut out = headline(&t, service, &d);
        let replicasets = retrying(Patience::few(), || self.owned_replicasets(&t, &d)).await;
        let pods = match &replicasets {
            Ok(all) => match newest(&d, all) {
                Some(rs) => self.failing_pods_of(&t, &d, rs).await.map(Some),
                None => Ok(None),
            },
            Err(_) => Ok(None),
        };
        match &replicasets {
            Ok(all) => {
                out.push_str("\n  revisions:");
                for (revision, image) in revisions(all).iter().take(5) {
                    out.push_str(&format!(" {revision} {image};"));
                }
            }
            Err(e) => out.push_str(&format!(
                "\n  revisions: {}\n  pods: the new ReplicaSet is not known, so neither are its pods",
                unreadable(&t, e)
            )),
        }
        match &pods {
            Ok(Some(failing)) if !failing.is_empty() => {
                let names: Vec<String> = failing.iter().take(5).map(|p| format!("{}: {}", p.name, p.why)).collect();
                out.push_str(&format!("\n  failing pods: {}", names.join("; ")));
            }
            Ok(_) => {}
            Err(e) => out.push_str(&format!("\n  pods: {}", unreadable(&t, e))),
        }
        let failing = pods.ok().flatten().unwrap_or_default();
        let objects = with_events(&t, replicasets.as_deref().unwrap_or_default(), &failing);
        match self.events(&t, &objects).await {
            Ok(lines) if lines.is_empty() => out.push_str("\n  events: none recent"),
            Ok(lines) => {
                out.push_str("\n  events:");
                for line in lines {
                    out.push_str(&format!("\n    {line}"));
                }
            }
            Err(e) => out.push_str(&format!("\n  events: {}", unreadable(&t, &e))),
        }
        Ok(out)
    }
}

/// The Deployment itself: images, replicas, rollout state, revision.
fn headline(t: &Target<'_>, service: &Service, d: &Deployment) -> String {
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let state = if is_paused(d) {
        paused_note(d)
    } else {
        match rollout_state(d) {
            Rollout::Complete => "rollout complete".to_string(),
            Rollout::Progressing { .. } | Rollout::NotObserved => "rollout in progress".to_string(),
            Rollout::DeadlineExceeded(_) => "ProgressDeadlineExceeded".to_string(),
        }
    };
    let containers = containers_of(template_of(d))
        .into_iter()
        .map(|(name, image)| format!("{name}={image}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} ({}) — deployment {}: {}\n  containers: {containers}\n  replicas: {desired} desired, {} updated, {} ready, {} available — {state}\n  revision {}",
        service.name,
        service.environment,
        t.path(),
        images_of(template_of(d)),
        status.updated_replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        revision_of(d.metadata.annotations.as_ref()).unwrap_or(0),
    )
}
