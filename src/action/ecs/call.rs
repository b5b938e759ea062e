//! One AWS call and what can go wrong with it, as a closed set. Retry and
//! "did my write land?" decisions match on [`Failure`]; the user reads
//! [`AwsError::explain`], which names the action, the region and what to do,
//! and never prints an SDK error's Debug form.

use super::Ctx;
use crate::action::ActionError;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use std::future::Future;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// IAM does not allow the action.
    AccessDenied(String),
    ClusterNotFound,
    ServiceNotFound,
    /// AWS kept throttling after the SDK's retries.
    Throttled,
    /// No credentials anywhere in the chain.
    NoCredentials,
    /// A 5xx answer: a write may or may not have been applied.
    ServerError {
        code: String,
        message: String,
    },
    /// Any other error answer: the request is wrong; retrying cannot help.
    Rejected {
        code: String,
        message: String,
    },
    /// The connection was refused: nothing reached AWS.
    Refused,
    /// The connection failed or broke for another reason (DNS, TLS, reset);
    /// a write may or may not have been applied.
    Unreachable(String),
    /// No answer within `call_timeout`: a write may or may not have been applied.
    TimedOut,
    /// An answer opsbot could not read.
    Unreadable(String),
}

impl Failure {
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Throttled
                | Failure::ServerError { .. }
                | Failure::Refused
                | Failure::Unreachable(_)
                | Failure::TimedOut
        )
    }

    /// For a write: AWS may have applied it although no success came back
    /// (an answer cut off mid-body included), so only the live state can say.
    pub(super) fn may_have_landed(&self) -> bool {
        matches!(
            self,
            Failure::ServerError { .. } | Failure::Unreachable(_) | Failure::TimedOut | Failure::Unreadable(_)
        )
    }

    fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(error: SdkError<E>) -> Failure {
        if let Some(credentials) = find::<aws_credential_types::provider::error::CredentialsError>(&error) {
            return match credentials {
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_) => {
                    Failure::NoCredentials
                }
                other => Failure::Unreachable(format!("loading AWS credentials failed: {}", innermost(other))),
            };
        }
        let code = error.code().unwrap_or("").to_string();
        let message = error.message().unwrap_or("").to_string();
        match &error {
            SdkError::ServiceError(e) => {
                let status = e.raw().status().as_u16();
                match code.as_str() {
                    "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
                        Failure::AccessDenied(message)
                    }
                    "ClusterNotFoundException" => Failure::ClusterNotFound,
                    "ServiceNotFoundException" | "ServiceNotActiveException" => Failure::ServiceNotFound,
                    "ThrottlingException" | "Throttling" | "TooManyRequestsException" => Failure::Throttled,
                    _ if status >= 500 => Failure::ServerError { code, message },
                    _ => Failure::Rejected { code, message },
                }
            }
            SdkError::TimeoutError(_) => Failure::TimedOut,
            SdkError::DispatchFailure(d) if d.is_timeout() => Failure::TimedOut,
            SdkError::DispatchFailure(_) => {
                let refused =
                    find::<std::io::Error>(&error).is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
                if refused {
                    Failure::Refused
                } else {
                    Failure::Unreachable(innermost(&error))
                }
            }
            SdkError::ResponseError(_) => Failure::Unreadable(innermost(&error)),
            _ => Failure::Unreachable(innermost(&error)),
        }
    }
}

/// The first error of type `T` in `error`'s source chain.
fn find<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// The root cause's own words (its Display, never its Debug).
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A failed AWS call: which IAM action, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AwsError {
    pub(super) action: &'static str,
    pub(super) failure: Failure,
}

impl AwsError {
    pub(super) fn explain(&self, ctx: &Ctx<'_>) -> String {
        let action = self.action;
        let (cluster, region) = (ctx.t.cluster, &ctx.region);
        match &self.failure {
            Failure::AccessDenied(message) => format!(
                "AWS denied {action} ({message}); allow it in opsbot's IAM policy (deploy/ecs-iam-policy.json)"
            ),
            Failure::ClusterNotFound => format!("ECS cluster `{cluster}` not found in region {region}"),
            Failure::ServiceNotFound => {
                format!("ECS service not found (or not active) in cluster `{cluster}`, region {region}")
            }
            Failure::Throttled => format!("AWS kept throttling {action} after retries"),
            Failure::NoCredentials => format!(
                "no usable AWS credentials for {action}: set AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role"
            ),
            Failure::ServerError { code, message } => {
                format!("AWS answered {action} with a server error ({code}: {message})")
            }
            Failure::Rejected { code, message } => format!("{action} failed: {code}: {message}"),
            Failure::Refused => format!("cannot reach AWS for {action} in region {region}: connection refused"),
            Failure::Unreachable(text) => format!("cannot reach AWS for {action} in region {region}: {text}"),
            Failure::TimedOut => format!(
                "AWS did not answer {action} within {}",
                crate::clock::format_duration(ctx.t.call_timeout)
            ),
            Failure::Unreadable(text) => format!("AWS's answer to {action} could not be read: {text}"),
        }
    }

    /// As an action's error: permissions (access denied, no credentials),
    /// AWS not answering usefully (unreachable, timed out, throttled, a 5xx,
    /// an unreadable answer), or the request itself is wrong.
    pub(super) fn into_action(self, ctx: &Ctx<'_>) -> ActionError {
        let text = self.explain(ctx);
        match self.failure {
            Failure::AccessDenied(_) | Failure::NoCredentials => ActionError::Forbidden(text),
            Failure::Refused
            | Failure::Unreachable(_)
            | Failure::TimedOut
            | Failure::Throttled
            | Failure::ServerError { .. }
            | Failure::Unreadable(_) => ActionError::Unreachable(text),
            Failure::ClusterNotFound | Failure::ServiceNotFound | Failure::Rejected { .. } => ActionError::Failed(text),
        }
    }
}

/// The SDK settings for a write (UpdateService, RegisterTaskDefinition): one
/// attempt. The SDK would re-send a write whose answer was lost — a
/// `forceNewDeployment` each time, say — before opsbot could look; instead,
/// opsbot re-reads the live state and decides (see `update`). Reads keep the
/// SDK's retries.
pub(super) fn write_once() -> aws_sdk_ecs::config::Builder {
    aws_sdk_ecs::config::Builder::default().retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
}

/// [`write_once`] for the load balancer (ModifyListener).
pub(super) fn write_once_elb() -> aws_sdk_elasticloadbalancingv2::config::Builder {
    aws_sdk_elasticloadbalancingv2::config::Builder::default()
        .retry_config(aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::disabled())
}

impl Ctx<'_> {
    /// One call, bounded by the service's `call_timeout` (for reads, the
    /// SDK's own retries of throttling and 5xx happen inside it).
    pub(super) async fn call<T, E>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match tokio::time::timeout(self.t.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(AwsError { action, failure: Failure::classify(e) }),
            Err(_) => Err(AwsError { action, failure: Failure::TimedOut }),
        }
    }

    /// Like [`Ctx::call`], with the error explained for the user.
    pub(super) async fn ask<T, E>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, ActionError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match self.call(action, call).await {
            Ok(value) => Ok(value),
            Err(e) if e.failure == Failure::ClusterNotFound => Err(ActionError::Failed(self.missing_cluster().await)),
            Err(e) => Err(e.into_action(self)),
        }
    }

    /// Which of cluster and region is wrong: the clusters the region has.
    pub(super) async fn missing_cluster(&self) -> String {
        let (cluster, region) = (self.t.cluster, &self.region);
        match self.call("ecs:ListClusters", self.ecs.list_clusters().send()).await {
            Ok(out) => {
                let names: Vec<String> = out
                    .cluster_arns
                    .unwrap_or_default()
                    .iter()
                    .map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_string())
                    .collect();
                if names.is_empty() {
                    format!(
                        "ECS cluster `{cluster}` not found: region {region} has no ECS clusters at all; is `region` right?"
                    )
                } else {
                    format!(
                        "ECS cluster `{cluster}` not found in region {region}; clusters there: {}; is `cluster` right?",
                        names.join(", ")
                    )
                }
            }
            Err(_) => format!("ECS cluster `{cluster}` not found in region {region}; check `cluster` and `region`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_landing_decisions_follow_the_kind_of_failure() {
        let server = Failure::ServerError { code: "InternalFailure".into(), message: String::new() };
        let rejected = Failure::Rejected { code: "InvalidParameterException".into(), message: String::new() };
        let cases = [
            (Failure::AccessDenied(String::new()), false, false),
            (Failure::ClusterNotFound, false, false),
            (Failure::Throttled, true, false),
            (Failure::NoCredentials, false, false),
            (server, true, true),
            (rejected, false, false),
            (Failure::Refused, true, false),
            (Failure::Unreachable("reset".into()), true, true),
            (Failure::TimedOut, true, true),
            (Failure::Unreadable(String::new()), false, true),
        ];
        for (failure, transient, landed) in cases {
            assert_eq!(failure.is_transient(), transient, "{failure:?}");
            assert_eq!(failure.may_have_landed(), landed, "{failure:?}");
        }
    }
}
