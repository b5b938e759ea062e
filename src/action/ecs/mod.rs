//! The ECS backend, through the AWS SDK (ring-only TLS). A deploy registers a
//! task definition revision that copies the current one (tags included) with
//! only the configured container's image changed, updates the service, and
//! follows the deployment *that update created* to its end: success only when
//! that deployment completes and the service runs the revision registered;
//! a circuit-breaker rollback or a FAILED deployment is reported as such, with
//! the stopped tasks' reasons and the service's recent events. Blue-green
//! deploys to the idle colour, brings it to the live colour's task count,
//! smoke-tests it and moves the listener; a rollback returns to the colour
//! the audit trail last verified live.
//!
//! - `call`: one AWS call and its typed failures, explained without dumps.
//! - `definitions`: task definitions (image, containers, tags, registration).
//! - `update`: reading and updating a service, settling lost answers.
//! - `rollout`: following the deployment an update started.
//! - `failure`: what a rollout that did not complete left, and means.
//! - `single`: the actions on one service (`deploy`: its deploy and the
//!   automatic rollback; `rollback`: back to what the trail verified);
//!   `blue_green`: on a pair.
//! - `status`: `/status`; `check`: `opsbot check --live`.
//!
//! `UpdateService` has no idempotency token, so every write compares the
//! live state first, and a write whose answer was lost is settled by
//! re-reading the service.

mod blue_green;
mod call;
mod check;
mod definitions;
mod deploy;
mod failure;
mod fence;
mod rollback;
mod rollout;
mod single;
mod status;
mod update;

use super::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use crate::audit::BoxFuture;
use crate::config::{Backend, BlueGreen, Service, SmokeTest};
use aws_sdk_elasticloadbalancingv2 as elb;
use std::collections::HashMap;
use std::time::Duration;

/// The ECS half of a service's config.
struct Target<'a> {
    /// The service's name in opsbot.
    name: &'a str,
    cluster: &'a str,
    service: Option<&'a str>,
    container: &'a str,
    image: &'a str,
    region: Option<&'a str>,
    auto_rollback: bool,
    poll: Duration,
    rollout_timeout: Duration,
    call_timeout: Duration,
    blue_green: Option<&'a BlueGreen>,
    smoke: Option<&'a SmokeTest>,
    health_url: Option<&'a str>,
    /// The term writes are made in (see `fence`); `None`: no fence.
    term: Option<u64>,
}

impl Target<'_> {
    /// The ECS services behind this one: both colours, or the one.
    fn services(&self) -> Vec<&str> {
        match (self.blue_green, self.service) {
            (Some(bg), _) => vec![&bg.blue_service, &bg.green_service],
            (None, Some(one)) => vec![one],
            (None, None) => vec![],
        }
    }
}

fn target(service: &Service) -> Result<Target<'_>, ActionError> {
    match &service.backend {
        Backend::Ecs {
            cluster,
            service: ecs_service,
            container,
            image,
            region,
            auto_rollback,
            poll,
            rollout_timeout,
            call_timeout,
            blue_green,
            smoke,
        } => Ok(Target {
            name: &service.name,
            cluster,
            service: ecs_service.as_deref(),
            container,
            image,
            region: region.as_deref(),
            auto_rollback: *auto_rollback,
            poll: *poll,
            rollout_timeout: *rollout_timeout,
            call_timeout: *call_timeout,
            blue_green: blue_green.as_ref(),
            smoke: smoke.as_ref(),
            health_url: service.health_url.as_deref(),
            term: None,
        }),
        _ => Err(ActionError::WrongBackend { service: service.name.clone() }),
    }
}

/// The AWS clients for one region.
#[derive(Clone)]
struct Clients {
    ecs: aws_sdk_ecs::Client,
    elb: elb::Client,
    region: String,
}

#[derive(Default)]
pub struct Ecs {
    clients: tokio::sync::Mutex<HashMap<Option<String>, Clients>>,
    /// An AWS-compatible endpoint and its credentials given in code (else
    /// the SDK's environment: `AWS_ENDPOINT_URL`, the credential chain).
    endpoint: Option<(String, aws_sdk_ecs::config::Credentials)>,
}

/// One action's view of AWS: the clients and the service's config.
struct Ctx<'a> {
    ecs: aws_sdk_ecs::Client,
    elb: elb::Client,
    region: String,
    t: Target<'a>,
}

impl Ecs {
    /// A backend talking to `url` (an AWS-compatible endpoint such as moto
    /// or LocalStack) with fixed credentials, not the environment's: for
    /// tests that run it in-process.
    pub fn with_endpoint(url: &str, key_id: &str, secret: &str) -> Ecs {
        let credentials = aws_sdk_ecs::config::Credentials::new(key_id, secret, None, None, "opsbot");
        Ecs { endpoint: Some((url.to_string(), credentials)), ..Ecs::default() }
    }

    async fn clients(&self, t: &Target<'_>) -> Result<Clients, ActionError> {
        let key = t.region.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        // Ring-only rustls: one crypto provider in the process (NOTES: the
        // rustls panic), and no aws-lc build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            // The SDK retries throttling, 5xx and connection errors itself;
            // a short first backoff keeps its five tries well inside a call
            // timeout, so a dead endpoint is named as such, not as a timeout.
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(100)),
            );
        if let Some(region) = t.region {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        if let Some((url, credentials)) = &self.endpoint {
            loader = loader.endpoint_url(url).credentials_provider(credentials.clone());
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err(ActionError::Failed(format!(
                "no AWS region for {}: set `region` in its backend config, or AWS_REGION in opsbot's environment",
                t.name
            )));
        };
        let made = Clients { ecs: aws_sdk_ecs::Client::new(&sdk), elb: elb::Client::new(&sdk), region };
        clients.insert(key, made.clone());
        Ok(made)
    }

    async fn context<'a>(&self, service: &'a Service) -> Result<Ctx<'a>, ActionError> {
        let t = target(service)?;
        let c = self.clients(&t).await?;
        Ok(Ctx { ecs: c.ecs, elb: c.elb, region: c.region, t })
    }

    async fn run(
        &self,
        service: &Service,
        action: &Action,
        context: &RunContext,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let mut ctx = self.context(service).await?;
        ctx.t.term = context.term;
        match (ctx.t.blue_green, ctx.t.service) {
            (Some(bg), _) => ctx.blue_green(bg, action, context, progress).await,
            (None, Some(ecs_service)) => ctx.single(ecs_service, action, &context.history, progress).await,
            (None, None) => Err(ActionError::Failed(format!("{} names no ECS service", service.name))),
        }
    }
}

impl Executor for Ecs {
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
        Box::pin(async move {
            let ctx = self.context(service).await?;
            let mut done = Vec::new();
            for one in ctx.t.services() {
                done.push(ctx.stamp(one, term).await?);
            }
            Ok(Some(done.join("; ")).filter(|d| !d.is_empty()))
        })
    }

    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let ctx = self.context(service).await?;
            ctx.status_text(service).await
        })
    }
}

async fn smoke_at(url: &str, spec: &SmokeTest, progress: &Progress) -> Result<(), ActionError> {
    match super::smoke::run(url, spec).await {
        Ok(passed) => {
            progress.report(passed).await;
            Ok(())
        }
        Err(failed) => Err(ActionError::Failed(failed)),
    }
}
