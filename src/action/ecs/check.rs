//! `opsbot check --live` for ECS: the cluster and service(s) exist in the
//! region, their task definitions have the configured container, and — for
//! blue-green — the listener forwards to the colours' target groups. It
//! exercises only the read calls: write permissions are not simulated.
//! The exit code follows the kind of failure (see `call::AwsError::into_action`):
//! access denied or no credentials → 77, an outage or throttling → 69, a
//! name the region does not have → 64.

use super::call::Failure;
use super::Ecs;
use crate::action::{ActionError, LiveFinding};
use crate::config::Service;

fn finding(error: ActionError) -> LiveFinding {
    match error {
        ActionError::Forbidden(text) => LiveFinding::MissingPermissions(text),
        ActionError::Unreachable(text) | ActionError::Unknown(text) => LiveFinding::Unreachable(text),
        other => LiveFinding::Misconfigured(other.to_string()),
    }
}

impl Ecs {
    /// What is wrong with one service, live; empty when all is well.
    pub async fn check_live(&self, service: &Service) -> Result<Vec<LiveFinding>, ActionError> {
        let ctx = match self.context(service).await {
            Ok(ctx) => ctx,
            Err(e) => return Ok(vec![finding(e)]),
        };
        let mut findings = Vec::new();
        for one in ctx.t.services() {
            let live = match ctx.describe_call(one).await {
                Ok(live) => live,
                Err(e) if e.failure == Failure::ClusterNotFound => {
                    // One finding for the cluster, not one per service.
                    findings.push(LiveFinding::Misconfigured(ctx.missing_cluster().await));
                    break;
                }
                Err(e) => {
                    findings.push(finding(ctx.explain_describe(one, e)));
                    continue;
                }
            };
            let checked = match ctx.definition(live.task_definition.as_deref().unwrap_or_default()).await {
                Ok(definition) => ctx.check_container(&definition.definition),
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                findings.push(finding(e));
            }
        }
        if findings.is_empty() {
            if let Some(bg) = ctx.t.blue_green {
                match ctx.pair(bg).await {
                    Ok(pair) => match ctx.rules_to_colours(bg, &pair).await {
                        Ok(rules) if rules.is_empty() => {}
                        Ok(rules) => findings.push(LiveFinding::Misconfigured(format!(
                            "listener rules forward to a colour, and opsbot moves only the default action: {}",
                            rules.join("; ")
                        ))),
                        Err(e) => findings.push(finding(e)),
                    },
                    Err(e) => findings.push(finding(e)),
                }
            }
        }
        Ok(findings)
    }
}
