//! A runbook's `k8s_job` step: a Job from a configured template (image
//! pinned, fixed command, parameters only as environment variables, a
//! deadline, no retries), watched until it completes, fails or outlives its
//! deadline, with its log tail for the thread.
//!
//! RBAC it needs in the template's namespace: `create` and `get` on
//! `jobs` (group `batch`), `list` on `pods` and `get` on `pods/log`.

use super::Kubernetes;
use crate::action::{ActionError, Progress};
use crate::config::targets::JobTemplate;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the Job's status is read while it runs.
const POLL: Duration = Duration::from_millis(500);
/// How long after its deadline the Job is still waited for (the API server
/// marks it failed shortly after).
pub const JOB_GRACE: Duration = Duration::from_secs(30);

/// The Job's name for step `step` of request `request_id`: unique per run
/// and step, so nothing a crash left behind is mistaken for this run's.
pub fn job_name(template: &str, request_id: &str, step: usize) -> String {
    format!("{template}-{}-{step}", request_id.to_ascii_lowercase())
}

/// The Job object as it will be created (shown by a dry run, too).
pub fn job_spec(
    name: &str,
    template: &JobTemplate,
    env: &BTreeMap<String, String>,
    request_id: &str,
    requester: &str,
) -> serde_json::Value {
    let env: Vec<serde_json::Value> = env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect();
    let mut pod = serde_json::json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "step",
            "image": template.image,
            "command": template.command,
            "env": env,
        }],
    });
    if !template.host_paths.is_empty() {
        let volumes: Vec<serde_json::Value> = template
            .host_paths
            .iter()
            .enumerate()
            .map(|(i, path)| serde_json::json!({"name": format!("host-{i}"), "hostPath": {"path": path}}))
            .collect();
        let mounts: Vec<serde_json::Value> = template
            .host_paths
            .iter()
            .enumerate()
            .map(|(i, path)| serde_json::json!({"name": format!("host-{i}"), "mountPath": path}))
            .collect();
        pod["volumes"] = serde_json::json!(volumes);
        pod["containers"][0]["volumeMounts"] = serde_json::json!(mounts);
    }
    if let Some(account) = &template.service_account {
        pod["serviceAccountName"] = serde_json::json!(account);
    }
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": template.namespace,
            "labels": {"app.kubernetes.io/managed-by": "opsbot", "opsbot/request": request_id.to_ascii_lowercase()},
            "annotations": {"opsbot/requested-by": requester},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": template.deadline.as_secs().max(1),
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": {"app.kubernetes.io/managed-by": "opsbot"}}, "spec": pod},
        },
    })
}

fn api_error(what: &str, e: kube::Error) -> ActionError {
    match &e {
        kube::Error::Api(status) if status.code == 403 => ActionError::Forbidden(format!(
            "{what}: forbidden ({}); grant the Role in deploy/kubernetes/base/rbac.yaml (opsbot-runbook-jobs)",
            status.message
        )),
        kube::Error::Api(status) => ActionError::Failed(format!("{what}: {} ({})", status.message, status.code)),
        _ => ActionError::Unreachable(format!("{what}: {e}")),
    }
}

impl Kubernetes {
    /// Creates the Job and waits for it; the text is its ending and log tail.
    pub async fn run_job(
        &self,
        spec: serde_json::Value,
        template: &JobTemplate,
        progress: &Progress,
    ) -> Result<String, ActionError> {
        let name = spec["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let job: Job = serde_json::from_value(spec)
            .map_err(|e| ActionError::Failed(format!("the Job for template {name} is not valid: {e}")))?;
        let client = self.client_for(template.context.as_deref()).await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &template.namespace);
        let path = format!("{}/{name}", template.namespace);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // The API server answered: it refused, and nothing was created.
            Err(e @ kube::Error::Api(_)) => return Err(api_error(&format!("creating Job {path}"), e)),
            // No answer: whether it was created is settled by reading it
            // (its name is this run's own), never by sending it again.
            Err(e) => match jobs.get_opt(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ActionError::Unreachable(format!("creating Job {path}: {e}; it was not created")))
                }
                Err(read) => {
                    return Err(ActionError::Unknown(format!(
                        "creating Job {path}: {e}, and reading it back failed too ({read}); check it with kubectl"
                    )))
                }
            },
        }
        progress.report(format!("Job {path} created")).await;
        let until = Instant::now() + template.deadline + JOB_GRACE;
        let ended = loop {
            let job = match jobs.get(&name).await {
                Ok(job) => job,
                // A read that fails is retried until the deadline: the Job runs on regardless.
                Err(e) if Instant::now() < until => {
                    tracing::debug!(error = %e, job = %path, "reading the Job failed; retrying");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(e) => {
                    return Err(ActionError::Unknown(format!(
                        "Job {path}: cannot read it ({e}); check it with kubectl"
                    )))
                }
            };
            let status = job.status.unwrap_or_default();
            let failed_condition = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| c.reason.unwrap_or_default() + &c.message.map(|m| format!(": {m}")).unwrap_or_default());
            if status.succeeded.unwrap_or(0) > 0 {
                break Ok(());
            }
            if let Some(why) = failed_condition {
                break Err(why);
            }
            if status.failed.unwrap_or(0) > 0 {
                break Err("its pod failed".to_string());
            }
            if Instant::now() >= until {
                return Err(ActionError::Unknown(format!(
                    "Job {path} had not finished {} after its deadline; check it with kubectl",
                    crate::clock::format_duration(JOB_GRACE)
                )));
            }
            tokio::time::sleep(POLL).await;
        };
        let logs = self.log_tail(&client, &template.namespace, &name, template.log_lines).await;
        match ended {
            Ok(()) => Ok(format!("Job {path} completed; log tail:\n{logs}")),
            Err(why) => Err(ActionError::Failed(format!("Job {path} failed ({why}); log tail:\n{logs}"))),
        }
    }

    /// The last lines of the Job's pod's log, or why there are none.
    async fn log_tail(&self, client: &kube::Client, namespace: &str, job: &str, lines: u32) -> String {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let listed = match pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await {
            Ok(listed) => listed,
            Err(e) => return format!("(no log: listing its pods failed: {e})"),
        };
        let Some(pod) = listed.items.into_iter().filter_map(|p| p.metadata.name).next() else {
            return "(no log: it has no pod)".into();
        };
        let params = LogParams { tail_lines: Some(i64::from(lines)), ..Default::default() };
        match pods.logs(&pod, &params).await {
            // The pod's words, shown inert in chat (never a mention or a link).
            Ok(text) => crate::engine::reply::typed(
                &text.trim_end().chars().filter(|c| *c == '\n' || !c.is_control()).collect::<String>(),
            ),
            Err(e) => format!("(no log: {e})"),
        }
    }
}
