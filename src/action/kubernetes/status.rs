//! `/status`: the Deployment (images per container, replicas, rollout state,
//! paused), then each thing opsbot may or may not be allowed to read —
//! revisions (ReplicaSets), pods that are not ready, the Deployment's recent
//! events (Warning first). What cannot be read is named, with why, and the
//! rest is still shown.

use super::call::{retrying, timed, CallError, Failure, Patience};
use super::rollout::{rollout_state, Rollout};
use super::{containers_of, images_of, is_paused, paused_note, revision_of, selector_of, target, template_of};
use super::{Kubernetes, Target};
use crate::action::ActionError;
use crate::config::Service;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

/// Events shown.
const EVENTS: usize = 5;

fn unreadable(t: &Target<'_>, e: &CallError) -> String {
    match e.failure {
        Failure::Forbidden => format!(
            "not readable: opsbot may not {} {} in namespace {} (403; see deploy/kubernetes-rbac.yaml)",
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

impl Kubernetes {
    async fn revisions(&self, t: &Target<'_>, d: &Deployment) -> Result<Vec<(u64, String)>, CallError> {
        let client = self.client(t).await.map_err(|e| client_error("list", "replicasets", e))?;
        let replicasets: Api<ReplicaSet> = Api::namespaced(client, t.namespace);
        let params = ListParams::default().labels(&selector_of(d));
        let list = retrying(Patience::few(), || timed(t, "list", "replicasets", replicasets.list(&params))).await?;
        let mut history: Vec<(u64, String)> = list
            .items
            .iter()
            .filter_map(|rs| {
                let revision = revision_of(rs.metadata.annotations.as_ref())?;
                Some((revision, images_of(rs.spec.as_ref().and_then(|s| s.template.as_ref()))))
            })
            .collect();
        history.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
        Ok(history)
    }

    async fn events(&self, t: &Target<'_>) -> Result<Vec<String>, CallError> {
        let client = self.client(t).await.map_err(|e| client_error("list", "events", e))?;
        let events: Api<Event> = Api::namespaced(client, t.namespace);
        let params = ListParams::default()
            .fields(&format!("involvedObject.kind=Deployment,involvedObject.name={}", t.deployment));
        let list = retrying(Patience::few(), || timed(t, "list", "events", events.list(&params))).await?;
        Ok(event_lines(list.items))
    }

    pub(super) async fn describe(&self, service: &Service) -> Result<String, ActionError> {
        let t = target(service)?;
        let d = self.read_now(&t).await?;
        let status = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let state = if is_paused(&d) {
            paused_note(&d)
        } else {
            match rollout_state(&d) {
                Rollout::Complete => "rollout complete".to_string(),
                Rollout::Progressing { .. } | Rollout::NotObserved => "rollout in progress".to_string(),
                Rollout::DeadlineExceeded(_) => "ProgressDeadlineExceeded".to_string(),
            }
        };
        let containers = containers_of(template_of(&d))
            .into_iter()
            .map(|(name, image)| format!("{name}={image}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = format!(
            "{} ({}) — deployment {}: {}\n  containers: {containers}\n  replicas: {desired} desired, {} updated, {} ready, {} available — {state}\n  revision {}",
            service.name,
            service.environment,
            t.path(),
            images_of(template_of(&d)),
            status.updated_replicas.unwrap_or(0),
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            revision_of(d.metadata.annotations.as_ref()).unwrap_or(0),
        );
        match self.revisions(&t, &d).await {
            Ok(history) => {
                out.push_str("\n  revisions:");
                for (revision, image) in history.iter().take(5) {
                    out.push_str(&format!(" {revision} {image};"));
                }
            }
            Err(e) => out.push_str(&format!("\n  revisions: {}", unreadable(&t, &e))),
        }
        match self.failing_pods(&t, &d).await {
            Ok(pods) if pods.is_empty() => {}
            Ok(pods) => out.push_str(&format!("\n  {}", pods.trim_start_matches("; "))),
            Err(e) => out.push_str(&format!("\n  pods: {}", unreadable(&t, &e))),
        }
        match self.events(&t).await {
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
