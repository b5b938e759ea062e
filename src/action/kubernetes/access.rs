//! `opsbot check --live` for Kubernetes: the Deployment is visible, the
//! configured container is in its pod template, and every verb opsbot uses is
//! granted (asked with SelfSubjectAccessReview).

use super::call::{timed, Failure};
use super::{check_container, target, Kubernetes, Target};
use crate::action::{ActionError, LiveFinding};
use crate::config::Service;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

/// One permission opsbot needs on a service's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
}

impl Permission {
    /// The API group: pods and events are in the core group, Jobs in batch.
    pub fn group(&self) -> &'static str {
        match self.resource {
            "pods" | "events" => "",
            "jobs" => "batch",
            "selfsubjectaccessreviews" => "authorization.k8s.io",
            _ => "apps",
        }
    }
}

/// Everything the backend does, as RBAC verbs.
pub const NEEDED: [Permission; 7] = [
    Permission { verb: "get", resource: "deployments", subresource: None },
    Permission { verb: "patch", resource: "deployments", subresource: None },
    Permission { verb: "update", resource: "deployments", subresource: None },
    Permission { verb: "patch", resource: "deployments", subresource: Some("scale") },
    Permission { verb: "list", resource: "replicasets", subresource: None },
    Permission { verb: "list", resource: "pods", subresource: None },
    Permission { verb: "list", resource: "events", subresource: None },
];

/// Everything a runbook `k8s_job` step does, in its template's namespace.
pub const JOB_NEEDED: [Permission; 4] = [
    Permission { verb: "create", resource: "jobs", subresource: None },
    Permission { verb: "get", resource: "jobs", subresource: None },
    Permission { verb: "list", resource: "pods", subresource: None },
    Permission { verb: "get", resource: "pods", subresource: Some("log") },
];

/// What `check --live` itself needs, cluster-wide: to ask the API server
/// what opsbot may do.
pub const ACCESS_REVIEW: Permission =
    Permission { verb: "create", resource: "selfsubjectaccessreviews", subresource: None };

/// The RBAC rules that would grant `missing`, as Role YAML lines.
pub fn rbac_rules(missing: &[Permission]) -> String {
    let mut out = String::from("rules:\n");
    for p in missing {
        let group = if p.group().is_empty() { "\"\"" } else { p.group() };
        let resource = match p.subresource {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.to_string(),
        };
        out.push_str(&format!("- apiGroups: [{group}]\n  resources: [\"{resource}\"]\n  verbs: [\"{}\"]\n", p.verb));
    }
    out
}

impl Kubernetes {
    /// What is wrong with one service, live; empty when all is well.
    pub async fn check_live(&self, service: &Service) -> Result<Vec<LiveFinding>, ActionError> {
        let t = target(service)?;
        // No client (a kubeconfig context that is not there, say) is a
        // configuration problem, told apart from an API server that is down.
        if let Err(e) = self.client(&t).await {
            return Ok(vec![LiveFinding::from_error(e)]);
        }
        let d = match self.read(&t, super::call::Patience::few()).await {
            Ok(d) => d,
            Err(e) => {
                return Ok(vec![match e.failure {
                    Failure::NotFound => LiveFinding::Misconfigured(e.explain(&t)),
                    Failure::Forbidden => LiveFinding::MissingPermissions(format!(
                        "missing permissions in namespace {}; add to opsbot's Role:\n{}",
                        t.namespace,
                        rbac_rules(&NEEDED[..1])
                    )),
                    _ => LiveFinding::from_error(e.into_action(&t)),
                }]);
            }
        };
        let mut findings = Vec::new();
        if let Err(e) = check_container(&t, &d) {
            findings.push(LiveFinding::Misconfigured(e.to_string()));
        }
        let missing = match self.ungranted(&t).await? {
            Ok(missing) => missing,
            Err(finding) => {
                findings.push(finding);
                return Ok(findings);
            }
        };
        if !missing.is_empty() {
            findings.push(LiveFinding::MissingPermissions(format!(
                "missing permissions in namespace {}; add to opsbot's Role:\n{}",
                t.namespace,
                rbac_rules(&missing)
            )));
        }
        Ok(findings)
    }

    /// What is wrong with a runbook Job template's namespace, live: the
    /// verbs a `k8s_job` step uses ([`JOB_NEEDED`]); empty when all is granted.
    pub async fn check_jobs_live(&self, template: &crate::config::targets::JobTemplate) -> Vec<LiveFinding> {
        let t = Target {
            service: "a runbook Job",
            context: template.context.as_deref(),
            namespace: &template.namespace,
            deployment: "",
            container: "",
            image: &template.image,
            auto_rollback: false,
            poll: std::time::Duration::from_secs(1),
            rollout_timeout: template.deadline,
            call_timeout: std::time::Duration::from_secs(15),
            term: None,
        };
        if let Err(e) = self.client(&t).await {
            return vec![LiveFinding::from_error(e)];
        }
        match self.ungranted_of(&t, &JOB_NEEDED).await {
            Ok(Ok(missing)) if missing.is_empty() => Vec::new(),
            Ok(Ok(missing)) => vec![LiveFinding::MissingPermissions(format!(
                "missing permissions in namespace {}; add to opsbot's Role for runbook Jobs:\n{}",
                template.namespace,
                rbac_rules(&missing)
            ))],
            Ok(Err(finding)) => vec![finding],
            Err(e) => vec![LiveFinding::from_error(e)],
        }
    }

    /// The verbs SelfSubjectAccessReview says are not granted; or the
    /// finding when the review itself cannot be asked.
    async fn ungranted(&self, t: &Target<'_>) -> Result<Result<Vec<Permission>, LiveFinding>, ActionError> {
        self.ungranted_of(t, &NEEDED).await
    }

    async fn ungranted_of(
        &self,
        t: &Target<'_>,
        needed: &[Permission],
    ) -> Result<Result<Vec<Permission>, LiveFinding>, ActionError> {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client(t).await?);
        let mut missing = Vec::new();
        for permission in needed.iter().cloned() {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(t.namespace.to_string()),
                        verb: Some(permission.verb.to_string()),
                        group: Some(permission.group().to_string()),
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
                timed(t, "create", "selfsubjectaccessreviews", reviews.create(&PostParams::default(), &review)).await;
            match answer {
                Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
                Ok(_) => missing.push(permission),
                Err(e) if e.failure == Failure::Forbidden => {
                    return Ok(Err(LiveFinding::MissingPermissions(format!(
                        "opsbot may not create selfsubjectaccessreviews, so it cannot check its permissions; add to opsbot's ClusterRole:\n{}",
                        rbac_rules(&[ACCESS_REVIEW])
                    ))))
                }
                Err(e) => return Ok(Err(LiveFinding::from_error(e.into_action(t)))),
            }
        }
        Ok(Ok(missing))
    }
}
