//! The Kubernetes backend, through kube-rs: deploy (set the configured
//! container's image), rollback (`kubectl rollout undo` semantics), restart
//! (kubectl's `restartedAt` annotation), scale (the `scale` subresource), and
//! status. Rollouts are judged the way `kubectl rollout status` judges them.
//! Every API call has a timeout; 409s are retried against fresh state; 403s
//! name the verb and resource; an unreachable API server is said plainly.
//! Nothing typed in chat becomes a resource name: names come from config, and
//! the version was checked as an image tag by the parser.

use super::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use crate::audit::BoxFuture;
use crate::config::{Backend, Service};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Attempts at a write that keeps meeting 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 4;
const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// One client per kubeconfig context, made on first use.
#[derive(Default)]
pub struct Kubernetes {
    clients: tokio::sync::Mutex<HashMap<Option<String>, Client>>,
}

/// The Kubernetes half of a service's config.
struct Target<'a> {
    context: Option<&'a str>,
    namespace: &'a str,
    deployment: &'a str,
    container: &'a str,
    image: &'a str,
    auto_rollback: bool,
    poll: Duration,
    rollout_timeout: Duration,
    call_timeout: Duration,
}

fn target(service: &Service) -> Result<Target<'_>, ActionError> {
    match &service.backend {
        Backend::Kubernetes {
            context,
            namespace,
            deployment,
            container,
            image,
            auto_rollback,
            poll,
            rollout_timeout,
            call_timeout,
        } => Ok(Target {
            context: context.as_deref(),
            namespace,
            deployment,
            container,
            image,
            auto_rollback: *auto_rollback,
            poll: *poll,
            rollout_timeout: *rollout_timeout,
            call_timeout: *call_timeout,
        }),
        _ => Err(ActionError::WrongBackend { service: service.name.clone() }),
    }
}

/// Turns a kube error into what the on-call engineer needs to read.
fn explain(error: kube::Error, verb: &str, resource: &str, t: &Target<'_>) -> ActionError {
    match error {
        kube::Error::Api(status) if status.code == 403 => ActionError::Forbidden(format!(
            "Kubernetes refused to let opsbot {verb} {resource} in namespace {} (403 Forbidden): grant its service account `{verb}` on `{resource}` (see deploy/kubernetes-rbac.yaml)",
            t.namespace
        )),
        kube::Error::Api(status) if status.code == 404 => {
            ActionError::Failed(format!("{resource} {} not found in namespace {} ({})", t.deployment, t.namespace, status.message))
        }
        kube::Error::Api(status) => ActionError::Failed(format!("Kubernetes answered {} to {verb} {resource}: {}", status.code, status.message)),
        other => ActionError::Unreachable(format!(
            "cannot reach the Kubernetes API server{}: {other}",
            t.context.map(|c| format!(" of context {c}")).unwrap_or_default()
        )),
    }
}

async fn timed<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
    verb: &str,
    resource: &str,
    t: &Target<'_>,
) -> Result<T, ActionError> {
    match tokio::time::timeout(t.call_timeout, call).await {
        Ok(result) => result.map_err(|e| explain(e, verb, resource, t)),
        Err(_) => Err(ActionError::Unreachable(format!(
            "Kubernetes did not answer `{verb} {resource}` within {}",
            crate::clock::format_duration(t.call_timeout)
        ))),
    }
}

fn is_conflict(error: &ActionError) -> bool {
    matches!(error, ActionError::Failed(text) if text.starts_with("Kubernetes answered 409"))
}

/// Where a rollout stands, by kubectl's rule.
#[derive(Debug, PartialEq)]
enum Rollout {
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

fn rollout_state(d: &Deployment) -> Rollout {
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
    let observed = status.observed_generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if observed >= generation && updated == spec_replicas && total == updated && available == updated {
        Rollout::Complete
    } else {
        Rollout::Progressing { updated, available, desired: spec_replicas }
    }
}

fn revision_of(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<u64> {
    annotations.and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok())
}

fn selector_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn images_of(template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> String {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.image.clone().unwrap_or_default()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

impl Kubernetes {
    async fn client(&self, t: &Target<'_>) -> Result<Client, ActionError> {
        let key = t.context.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let config = match t.context {
            Some(context) => {
                let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
                let kubeconfig = Kubeconfig::read().map_err(|e| {
                    ActionError::Unreachable(format!("cannot read the kubeconfig (KUBECONFIG or ~/.kube/config): {e}"))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| ActionError::Unreachable(format!("kubeconfig context {context}: {e}")))?
            }
            None => Config::infer()
                .await
                .map_err(|e| ActionError::Unreachable(format!("no in-cluster or kubeconfig credentials: {e}")))?,
        };
        let client = Client::try_from(config)
            .map_err(|e| ActionError::Unreachable(format!("cannot build a Kubernetes client: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn deployments(&self, t: &Target<'_>) -> Result<Api<Deployment>, ActionError> {
        Ok(Api::namespaced(self.client(t).await?, t.namespace))
    }

    /// A patch, retried on 409 Conflict.
    async fn patch_deployment(&self, t: &Target<'_>, patch: serde_json::Value) -> Result<Deployment, ActionError> {
        let api = self.deployments(t).await?;
        let params = PatchParams::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match timed(api.patch(t.deployment, &params, &Patch::Strategic(&patch)), "patch", "deployments", t).await {
                Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// Polls until the rollout completes, fails, or times out, reporting changes.
    async fn watch(&self, t: &Target<'_>, progress: &Progress) -> Result<Deployment, ActionError> {
        let api = self.deployments(t).await?;
        let started = tokio::time::Instant::now();
        let mut last = None;
        loop {
            let d = timed(api.get(t.deployment), "get", "deployments", t).await?;
            match rollout_state(&d) {
                Rollout::Complete => return Ok(d),
                Rollout::NotObserved => {}
                Rollout::DeadlineExceeded(message) => {
                    let pods = self.failing_pods(t, &d).await.unwrap_or_default();
                    return Err(ActionError::Failed(format!(
                        "rollout exceeded its progress deadline ({message}){pods}"
                    )));
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
            if started.elapsed() > t.rollout_timeout {
                let pods = self.failing_pods(t, &d).await.unwrap_or_default();
                return Err(ActionError::Timeout(format!(
                    "{}s waiting for the rollout{pods}",
                    t.rollout_timeout.as_secs()
                )));
            }
            tokio::time::sleep(t.poll).await;
        }
    }

    /// "; pod x: CrashLoopBackOff (3 restarts)" for pods that are not ready.
    async fn failing_pods(&self, t: &Target<'_>, d: &Deployment) -> Result<String, ActionError> {
        let pods: Api<Pod> = Api::namespaced(self.client(t).await?, t.namespace);
        let list = timed(pods.list(&ListParams::default().labels(&selector_of(d))), "list", "pods", t).await?;
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

    /// `kubectl rollout undo`: restore a ReplicaSet's pod template. Uses
    /// replace with the read resourceVersion, so a concurrent change is a 409,
    /// retried against fresh state.
    async fn undo(&self, t: &Target<'_>, to: Option<u64>) -> Result<u64, ActionError> {
        let api = self.deployments(t).await?;
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client(t).await?, t.namespace);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut d = timed(api.get(t.deployment), "get", "deployments", t).await?;
            let current = revision_of(d.metadata.annotations.as_ref()).unwrap_or(0);
            let uid = d.metadata.uid.clone();
            let list =
                timed(replicasets.list(&ListParams::default().labels(&selector_of(&d))), "list", "replicasets", t)
                    .await?;
            let mut owned: Vec<(u64, ReplicaSet)> = list
                .items
                .into_iter()
                .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == uid.as_ref()))
                .filter_map(|rs| revision_of(rs.metadata.annotations.as_ref()).map(|r| (r, rs)))
                .collect();
            owned.sort_by_key(|(r, _)| *r);
            let chosen = match to {
                Some(wanted) if wanted == current => {
                    return Err(ActionError::Failed(format!("revision {wanted} is already the current one")))
                }
                Some(wanted) => owned.into_iter().find(|(r, _)| *r == wanted),
                None => owned.into_iter().rev().find(|(r, _)| *r < current),
            };
            let Some((revision, rs)) = chosen else {
                let what = to.map(|n| format!("revision {n}")).unwrap_or_else(|| "an earlier revision".into());
                return Err(ActionError::Failed(format!("{} has no {what} to roll back to", t.deployment)));
            };
            let mut template = rs
                .spec
                .and_then(|s| s.template)
                .ok_or_else(|| ActionError::Failed(format!("revision {revision} has no pod template")))?;
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove("pod-template-hash");
            }
            if let Some(spec) = d.spec.as_mut() {
                spec.template = template;
            }
            match timed(api.replace(t.deployment, &PostParams::default(), &d), "update", "deployments", t).await {
                Ok(_) => return Ok(revision),
                Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn run(
        &self,
        service: &Service,
        action: &Action,
        context: &RunContext,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let t = target(service)?;
        let name = &service.name;
        match action {
            Action::Deploy { version } => {
                let image = format!("{}:{version}", t.image);
                let cause =
                    format!("opsbot {}: deploy {version} requested by {}", context.request_id, context.requester);
                let before = timed(self.deployments(&t).await?.get(t.deployment), "get", "deployments", &t).await?;
                let before_revision = revision_of(before.metadata.annotations.as_ref());
                self.patch_deployment(
                    &t,
                    json!({
                        "metadata": {"annotations": {CHANGE_CAUSE: cause}},
                        "spec": {"template": {"spec": {"containers": [{"name": t.container, "image": image}]}}}
                    }),
                )
                .await?;
                progress.report(format!("{name}: image set to {image}; watching the rollout")).await;
                match self.watch(&t, progress).await {
                    Ok(d) => Ok(Outcome::new(format!(
                        "{name} runs {image} (revision {})",
                        revision_of(d.metadata.annotations.as_ref()).unwrap_or(0)
                    ))),
                    Err(failure) if t.auto_rollback && before_revision.is_some() => {
                        progress.report(format!("{name}: deploy failed ({failure}); rolling back automatically")).await;
                        let restored = self.undo(&t, before_revision).await?;
                        self.watch(&t, progress).await?;
                        Err(ActionError::Failed(format!(
                            "deploy of {image} failed: {failure}; rolled back automatically to revision {restored}"
                        )))
                    }
                    Err(failure) => Err(ActionError::Failed(format!(
                        "deploy of {image} failed: {failure}; `/rollback {name}` restores the previous revision"
                    ))),
                }
            }
            Action::Rollback { revision } => {
                let restored = self.undo(&t, revision.map(u64::from)).await?;
                progress.report(format!("{name}: restoring revision {restored}")).await;
                let d = self.watch(&t, progress).await?;
                Ok(Outcome::new(format!(
                    "{name} rolled back to revision {restored} ({}), now revision {}",
                    images_of(d.spec.as_ref().map(|s| &s.template)),
                    revision_of(d.metadata.annotations.as_ref()).unwrap_or(0)
                )))
            }
            Action::Restart => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                self.patch_deployment(
                    &t,
                    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}),
                )
                .await?;
                progress.report(format!("{name}: restart requested; watching the rollout")).await;
                self.watch(&t, progress).await?;
                Ok(Outcome::new(format!("{name} restarted")))
            }
            Action::Scale { replicas } => {
                let api = self.deployments(&t).await?;
                let patch = json!({"spec": {"replicas": replicas}});
                timed(
                    api.patch_scale(t.deployment, &PatchParams::default(), &Patch::Merge(&patch)),
                    "patch",
                    "deployments/scale",
                    &t,
                )
                .await?;
                progress.report(format!("{name}: scaling to {replicas}")).await;
                self.watch(&t, progress).await?;
                Ok(Outcome::new(format!("{name} runs {replicas} replicas")))
            }
        }
    }

    async fn describe(&self, service: &Service) -> Result<String, ActionError> {
        let t = target(service)?;
        let d = timed(self.deployments(&t).await?.get(t.deployment), "get", "deployments", &t).await?;
        let status = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let state = match rollout_state(&d) {
            Rollout::Complete => "rollout complete".to_string(),
            Rollout::Progressing { .. } | Rollout::NotObserved => "rollout in progress".to_string(),
            Rollout::DeadlineExceeded(_) => "ProgressDeadlineExceeded".to_string(),
        };
        let mut out = format!(
            "{} ({}) — deployment {}/{}: {}\n  replicas: {desired} desired, {} updated, {} ready, {} available — {state}\n  revision {}",
            service.name,
            service.environment,
            t.namespace,
            t.deployment,
            images_of(d.spec.as_ref().map(|s| &s.template)),
            status.updated_replicas.unwrap_or(0),
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            revision_of(d.metadata.annotations.as_ref()).unwrap_or(0),
        );
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client(&t).await?, t.namespace);
        let list =
            timed(replicasets.list(&ListParams::default().labels(&selector_of(&d))), "list", "replicasets", &t).await?;
        let mut history: Vec<(u64, String)> = list
            .items
            .iter()
            .filter_map(|rs| {
                let revision = revision_of(rs.metadata.annotations.as_ref())?;
                Some((revision, images_of(rs.spec.as_ref().and_then(|s| s.template.as_ref()))))
            })
            .collect();
        history.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
        out.push_str("\n  revisions:");
        for (revision, image) in history.iter().take(5) {
            out.push_str(&format!(" {revision} {image};"));
        }
        let pods = self.failing_pods(&t, &d).await?;
        if !pods.is_empty() {
            out.push_str(&format!("\n  {}", pods.trim_start_matches("; ")));
        }
        Ok(out)
    }
}

impl Executor for Kubernetes {
    fn execute<'a>(
        &'a self,
        service: &'a Service,
        action: &'a Action,
        context: &'a RunContext,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move { self.run(service, action, context, &progress).await })
    }

    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(self.describe(service))
    }
}

/// One permission opsbot needs on a service's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
}

/// Everything the backend does, as RBAC verbs.
pub const NEEDED: [Permission; 6] = [
    Permission { verb: "get", resource: "deployments", subresource: None },
    Permission { verb: "patch", resource: "deployments", subresource: None },
    Permission { verb: "update", resource: "deployments", subresource: None },
    Permission { verb: "patch", resource: "deployments", subresource: Some("scale") },
    Permission { verb: "list", resource: "replicasets", subresource: None },
    Permission { verb: "list", resource: "pods", subresource: None },
];

impl Kubernetes {
    /// `opsbot check --live`: can opsbot see the deployment, and which of the
    /// verbs it needs are missing (asked with SelfSubjectAccessReview)?
    pub async fn check_access(&self, service: &Service) -> Result<Vec<Permission>, ActionError> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let t = target(service)?;
        timed(self.deployments(&t).await?.get(t.deployment), "get", "deployments", &t).await?;
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client(&t).await?);
        let mut missing = Vec::new();
        for permission in NEEDED {
            let group = if permission.resource == "pods" { "" } else { "apps" };
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(t.namespace.to_string()),
                        verb: Some(permission.verb.to_string()),
                        group: Some(group.to_string()),
                        resource: Some(permission.resource.to_string()),
                        subresource: permission.subresource.map(str::to_string),
                        name: Some(t.deployment.to_string()).filter(|_| permission.resource == "deployments"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer =
                timed(reviews.create(&PostParams::default(), &review), "create", "selfsubjectaccessreviews", &t)
                    .await?;
            if !answer.status.map(|s| s.allowed).unwrap_or(false) {
                missing.push(permission);
            }
        }
        Ok(missing)
    }
}

/// The RBAC rules that would grant `missing`, as Role YAML lines.
pub fn rbac_rules(missing: &[Permission]) -> String {
    let mut out = String::from("rules:\n");
    for p in missing {
        let group = if p.resource == "pods" { "\"\"" } else { "apps" };
        let resource = match p.subresource {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.to_string(),
        };
        out.push_str(&format!("- apiGroups: [{group}]\n  resources: [\"{resource}\"]\n  verbs: [\"{}\"]\n", p.verb));
    }
    out
}
