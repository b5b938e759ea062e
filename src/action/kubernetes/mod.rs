//! The Kubernetes backend, through kube-rs: deploy (set the configured
//! container's image), rollback (`kubectl rollout undo` semantics), restart
//! (kubectl's `restartedAt` annotation), scale (the `scale` subresource), and
//! status. Rollouts are judged the way `kubectl rollout status` judges them,
//! and only while the Deployment still holds what this request wrote.
//!
//! - `call`: one API call, its typed failures, timeouts, backoff and retries.
//! - `write`: writes whose answer may be lost, settled by re-reading.
//! - `rollout`: watching a rollout this request started, to its end.
//! - `pods`: the new ReplicaSet's pods and why they fail.
//! - `deploy`, `undo`: the two template changes, with automatic rollback.
//! - `status`: `/status`, showing what is readable and naming what is not.
//! - `access`: `opsbot check --live`.
//!
//! Nothing typed in chat becomes a resource name: names come from config, and
//! the version was checked as an image tag by the parser.

mod access;
mod call;
mod deploy;
mod fence;
mod job;
mod pods;
mod rollout;
mod status;
mod undo;
mod write;

pub use access::{rbac_rules, Permission, ACCESS_REVIEW, JOB_NEEDED, NEEDED};
pub use fence::TERM;
pub use job::{job_name, job_spec, JOB_GRACE};

use super::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use crate::audit::BoxFuture;
use crate::config::{Backend, Service};
use call::{retrying, timed, CallError, Patience};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Who paused a Deployment, if the team records it (kubectl does not).
pub const PAUSED_BY: &str = "opsbot/paused-by";

/// One client per kubeconfig context, made on first use.
#[derive(Default)]
pub struct Kubernetes {
    clients: tokio::sync::Mutex<HashMap<Option<String>, Client>>,
    /// Where contexts are read from; `None`: `KUBECONFIG` or `~/.kube/config`.
    kubeconfig: Option<std::path::PathBuf>,
}

impl Kubernetes {
    /// A backend reading its contexts from the kubeconfig at `path` (not
    /// from the environment): for a process that talks to clusters other
    /// than its own, and for tests that run it in-process.
    pub fn with_kubeconfig(path: impl Into<std::path::PathBuf>) -> Kubernetes {
        Kubernetes { kubeconfig: Some(path.into()), ..Kubernetes::default() }
    }
}

/// The Kubernetes half of a service's config.
struct Target<'a> {
    service: &'a str,
    context: Option<&'a str>,
    namespace: &'a str,
    deployment: &'a str,
    container: &'a str,
    image: &'a str,
    auto_rollback: bool,
    poll: Duration,
    rollout_timeout: Duration,
    call_timeout: Duration,
    /// The term writes are made in (see `fence`); `None`: no fence.
    term: Option<u64>,
}

impl Target<'_> {
    fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.deployment)
    }
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
            service: &service.name,
            context: context.as_deref(),
            namespace,
            deployment,
            container,
            image,
            auto_rollback: *auto_rollback,
            poll: *poll,
            rollout_timeout: *rollout_timeout,
            call_timeout: *call_timeout,
            term: None,
        }),
        _ => Err(ActionError::WrongBackend { service: service.name.clone() }),
    }
}

fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> Option<u64> {
    annotations.and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok())
}

fn selector_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn template_of(d: &Deployment) -> Option<&PodTemplateSpec> {
    d.spec.as_ref().map(|s| &s.template)
}

/// (name, image) of each container in a pod template.
fn containers_of(template: Option<&PodTemplateSpec>) -> Vec<(String, String)> {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect())
        .unwrap_or_default()
}

fn images_of(template: Option<&PodTemplateSpec>) -> String {
    containers_of(template).into_iter().map(|(_, image)| image).collect::<Vec<_>>().join(", ")
}

/// The image of the configured container, if the template has it.
fn image_in(template: Option<&PodTemplateSpec>, container: &str) -> Option<String> {
    containers_of(template).into_iter().find(|(name, _)| name == container).map(|(_, image)| image)
}

/// A pod template as the deployment controller compares them: without the
/// hash label the controller adds to ReplicaSets.
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    template
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// "paused (by alice: incident 42)" when the annotation says who.
fn paused_note(d: &Deployment) -> String {
    match d.metadata.annotations.as_ref().and_then(|a| a.get(PAUSED_BY)) {
        Some(who) => format!("paused (by {who}, per its {PAUSED_BY} annotation)"),
        None => "paused (no annotation says by whom)".to_string(),
    }
}

/// Refuses a template change on a paused Deployment: it would not roll out
/// now, and would roll out unwatched the moment someone resumes it.
fn refuse_if_paused(t: &Target<'_>, d: &Deployment, verb: &str) -> Result<(), ActionError> {
    if is_paused(d) {
        return Err(ActionError::Failed(format!(
            "deployment {} is {}: a {verb} would not roll out now and would roll out unwatched on `kubectl rollout resume`; resume it first, then {verb} again",
            t.path(),
            paused_note(d)
        )));
    }
    Ok(())
}

/// Refuses when the configured container is not in the pod template (a
/// strategic-merge patch would add a second container instead).
fn check_container(t: &Target<'_>, d: &Deployment) -> Result<(), ActionError> {
    let containers = containers_of(template_of(d));
    if containers.iter().any(|(name, _)| name == t.container) {
        return Ok(());
    }
    Err(ActionError::Failed(format!(
        "deployment {} has no container `{}`; its containers: {}; fix `container` in the service's config",
        t.path(),
        t.container,
        list_names(&containers)
    )))
}

fn list_names(containers: &[(String, String)]) -> String {
    if containers.is_empty() {
        return "none".into();
    }
    containers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
}

/// What runs now, as facts for the audit trail.
fn live_facts(t: &Target<'_>, d: &Deployment) -> serde_json::Value {
    let status = d.status.clone().unwrap_or_default();
    serde_json::json!({
        "backend": "kubernetes",
        "deployment": t.path(),
        "revision": revision_of(d.metadata.annotations.as_ref()),
        "generation": d.metadata.generation,
        "containers": containers_of(template_of(d)).into_iter().collect::<BTreeMap<_, _>>(),
        "replicas": d.spec.as_ref().and_then(|s| s.replicas),
        "available": status.available_replicas.unwrap_or(0),
    })
}

impl Kubernetes {
    async fn client(&self, t: &Target<'_>) -> Result<Client, ActionError> {
        self.client_for(t.context).await
    }

    /// The client for a kubeconfig context (the current one, or in-cluster
    /// credentials, when none), made once.
    pub async fn client_for(&self, context: Option<&str>) -> Result<Client, ActionError> {
        let key = context.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let config = match context {
            Some(context) => {
                let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
                // A kubeconfig that cannot be read, or lacks the context, is
                // a configuration problem, not an unreachable cluster.
                let kubeconfig = match &self.kubeconfig {
                    Some(path) => Kubeconfig::read_from(path).map_err(|e| {
                        ActionError::Failed(format!("cannot read the kubeconfig {}: {e}", path.display()))
                    }),
                    None => Kubeconfig::read().map_err(|e| {
                        ActionError::Failed(format!("cannot read the kubeconfig (KUBECONFIG or ~/.kube/config): {e}"))
                    }),
                }?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| ActionError::Failed(format!("kubeconfig context {context}: {e}")))?
            }
            None => Config::infer()
                .await
                .map_err(|e| ActionError::Failed(format!("no in-cluster or kubeconfig credentials: {e}")))?,
        };
        let client = Client::try_from(config)
            .map_err(|e| ActionError::Unreachable(format!("cannot build a Kubernetes client: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn deployments(&self, t: &Target<'_>) -> Result<Api<Deployment>, ActionError> {
        Ok(Api::namespaced(self.client(t).await?, t.namespace))
    }

    /// Reads the Deployment, retrying transient failures within `patience`.
    async fn read(&self, t: &Target<'_>, patience: Patience) -> Result<Deployment, CallError> {
        let api = match self.deployments(t).await {
            Ok(api) => api,
            Err(e) => {
                let failure = call::Failure::Client(e.to_string());
                return Err(CallError { verb: "get", resource: "deployments", failure, attempts: 1 });
            }
        };
        retrying(patience, || timed(t, "get", "deployments", api.get(t.deployment))).await
    }

    /// Reads the Deployment before a change (a few tries).
    async fn read_now(&self, t: &Target<'_>) -> Result<Deployment, ActionError> {
        self.read(t, Patience::few()).await.map_err(|e| e.into_action(t))
    }

    async fn run(
        &self,
        service: &Service,
        action: &Action,
        context: &RunContext,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let t = Target { term: context.term, ..target(service)? };
        // One deadline for the change: its write (settling a lost answer
        // included) and its rollout. An automatic rollback gets its own.
        let deadline = tokio::time::Instant::now() + t.rollout_timeout;
        match action {
            Action::Deploy { version } => self.deploy(&t, version, context, deadline, progress).await,
            Action::Rollback { revision } => self.rollback(&t, revision.map(u64::from), deadline, progress).await,
            Action::Restart => self.restart(&t, deadline, progress).await,
            Action::Scale { replicas } => self.scale(&t, *replicas, deadline, progress).await,
        }
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

    fn fence<'a>(&'a self, service: &'a Service, term: u64) -> BoxFuture<'a, Result<Option<String>, ActionError>> {
        Box::pin(async move { self.stamp(&target(service)?, term).await.map(Some) })
    }

    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(self.describe(service))
    }
    fn healthy<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(bool, String), ActionError>> {
        Box::pin(async move {
            let t = target(service)?;
            let d = self.read_now(&t).await?;
            let status = d.status.clone().unwrap_or_default();
            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let complete = matches!(rollout::rollout_state(&d), rollout::Rollout::Complete);
            let ready = status.ready_replicas.unwrap_or(0);
            let healthy = complete && ready >= desired;
            Ok((
                healthy,
                format!(
                    "deployment {}: {ready}/{desired} ready, rollout {}",
                    t.path(),
                    if complete { "complete" } else { "not complete" }
                ),
            ))
        })
    }
}
