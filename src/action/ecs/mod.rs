//! The ECS backend, through the AWS SDK (ring-only TLS): deploy registers a
//! task definition revision that copies the current one with only the
//! configured container's image changed, updates the service, and polls until
//! the rollout completes, fails (circuit breaker) or times out. Restart forces
//! a new deployment; rollback returns to the previous (or named) revision;
//! scale sets the desired count. Blue-green deploys to the idle colour, smoke
//! tests it, and moves the listener (optionally in weighted steps).
//!
//! `UpdateService` has no idempotency token, so every write compares the
//! live state first: a retried or duplicated deploy registers and updates
//! nothing the second time.

use super::{smoke, Action, ActionError, Executor, Outcome, Progress, RunContext};
use crate::audit::BoxFuture;
use crate::config::{Backend, BlueGreen, Service, SmokeTest};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{ContainerDefinition, DeploymentRolloutState, TaskDefinition};
use aws_sdk_elasticloadbalancingv2 as elb;

mod blue_green;
use std::collections::HashMap;
use std::time::Duration;

struct Target<'a> {
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
        }),
        _ => Err(ActionError::WrongBackend { service: service.name.clone() }),
    }
}

/// The AWS clients for one region.
#[derive(Clone)]
struct Clients {
    ecs: aws_sdk_ecs::Client,
    elb: elb::Client,
}

#[derive(Default)]
pub struct Ecs {
    clients: tokio::sync::Mutex<HashMap<Option<String>, Clients>>,
}

/// Explains an SDK error, naming the IAM action that was refused.
fn explain<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: aws_sdk_ecs::error::SdkError<E>,
    action: &str,
) -> ActionError {
    let code = error.code().unwrap_or("").to_string();
    let message = error.message().unwrap_or("").to_string();
    match code.as_str() {
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => ActionError::Forbidden(format!(
            "AWS denied {action} ({message}); allow it in opsbot's IAM policy (deploy/ecs-iam-policy.json)"
        )),
        "ClusterNotFoundException" => ActionError::Failed(format!("unknown ECS cluster ({message})")),
        "ServiceNotFoundException" | "ServiceNotActiveException" => {
            ActionError::Failed(format!("unknown or inactive ECS service ({message})"))
        }
        "ThrottlingException" | "Throttling" => {
            ActionError::Failed(format!("AWS kept throttling {action} after retries ({message})"))
        }
        "" => {
            let text = aws_sdk_ecs::error::DisplayErrorContext(&error).to_string();
            if text.contains("credentials") {
                ActionError::Unreachable(format!("no usable AWS credentials for {action}: set AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role"))
            } else {
                ActionError::Unreachable(format!("cannot reach AWS for {action}: {text}"))
            }
        }
        _ => ActionError::Failed(format!("{action} failed: {code}: {message}")),
    }
}

async fn timed<T, E>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, aws_sdk_ecs::error::SdkError<E>>>,
    action: &str,
) -> Result<T, ActionError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|e| explain(e, action)),
        Err(_) => Err(ActionError::Unreachable(format!(
            "AWS did not answer {action} within {}",
            crate::clock::format_duration(limit)
        ))),
    }
}

fn image_of<'a>(definition: &'a TaskDefinition, container: &str) -> Option<&'a str> {
    definition
        .container_definitions
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(container))
        .and_then(|c| c.image.as_deref())
}

fn family_revision(definition: &TaskDefinition) -> String {
    format!("{}:{}", definition.family.as_deref().unwrap_or("?"), definition.revision)
}

/// The same container definitions with only `container`'s image changed.
fn with_image(definitions: &[ContainerDefinition], container: &str, image: &str) -> Vec<ContainerDefinition> {
    definitions
        .iter()
        .cloned()
        .map(|mut c| {
            if c.name.as_deref() == Some(container) {
                c.image = Some(image.to_string());
            }
            c
        })
        .collect()
}

/// Where a service's rollout stands.
#[derive(Debug, PartialEq)]
enum Rollout {
    Complete,
    Progressing { running: i32, desired: i32, state: String },
    Failed(String),
}

fn rollout_of(service: &aws_sdk_ecs::types::Service) -> Rollout {
    let deployments = service.deployments.clone().unwrap_or_default();
    let Some(primary) = deployments.iter().find(|d| d.status.as_deref() == Some("PRIMARY")) else {
        return Rollout::Progressing {
            running: 0,
            desired: service.desired_count,
            state: "no primary deployment yet".into(),
        };
    };
    match primary.rollout_state() {
        Some(DeploymentRolloutState::Completed) => Rollout::Complete,
        Some(DeploymentRolloutState::Failed) => {
            let reason = primary.rollout_state_reason.clone().unwrap_or_else(|| "the deployment failed".into());
            let rolled_back = deployments.iter().any(|d| d.status.as_deref() == Some("ACTIVE"))
                || reason.contains("rolling back")
                || reason.contains("rolled back");
            let circuit = service
                .deployment_configuration
                .as_ref()
                .and_then(|c| c.deployment_circuit_breaker.as_ref())
                .is_some_and(|b| b.enable && b.rollback);
            let after = if circuit && rolled_back {
                "; the deployment circuit breaker rolled it back to the previous task definition"
            } else {
                ""
            };
            Rollout::Failed(format!("{reason} ({} task(s) failed){after}", primary.failed_tasks))
        }
        // Without rollout states (older schedulers), one deployment with all
        // tasks running is done.
        None if deployments.len() == 1 && primary.running_count == primary.desired_count => Rollout::Complete,
        state => Rollout::Progressing {
            running: primary.running_count,
            desired: primary.desired_count,
            state: state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "IN_PROGRESS".into()),
        },
    }
}

impl Ecs {
    async fn clients(&self, t: &Target<'_>) -> Clients {
        let key = t.region.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return c.clone();
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
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(region) = t.region {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        let sdk = loader.load().await;
        let made = Clients { ecs: aws_sdk_ecs::Client::new(&sdk), elb: elb::Client::new(&sdk) };
        clients.insert(key, made.clone());
        made
    }

    async fn describe(
        &self,
        c: &Clients,
        t: &Target<'_>,
        service: &str,
    ) -> Result<aws_sdk_ecs::types::Service, ActionError> {
        let out = timed(
            t.call_timeout,
            c.ecs.describe_services().cluster(t.cluster).services(service).send(),
            "ecs:DescribeServices",
        )
        .await?;
        if let Some(failure) = out.failures.unwrap_or_default().first() {
            return Err(ActionError::Failed(format!(
                "unknown ECS service {service} in cluster {} ({})",
                t.cluster,
                failure.reason.as_deref().unwrap_or("MISSING")
            )));
        }
        out.services
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| ActionError::Failed(format!("unknown ECS service {service} in cluster {}", t.cluster)))
    }

    async fn task_definition(&self, c: &Clients, t: &Target<'_>, arn: &str) -> Result<TaskDefinition, ActionError> {
        let out = timed(
            t.call_timeout,
            c.ecs.describe_task_definition().task_definition(arn).send(),
            "ecs:DescribeTaskDefinition",
        )
        .await?;
        out.task_definition.ok_or_else(|| ActionError::Failed(format!("task definition {arn} not found")))
    }

    /// The task definition running `image` for `container`: the current one if
    /// it already does, a recent revision of the family that does (left by an
    /// earlier attempt), or a new registration copying the current one.
    async fn definition_for(
        &self,
        c: &Clients,
        t: &Target<'_>,
        current: &TaskDefinition,
        image: &str,
    ) -> Result<(String, bool), ActionError> {
        if image_of(current, t.container) == Some(image) {
            return Ok((current.task_definition_arn.clone().unwrap_or_default(), false));
        }
        let family = current.family.clone().unwrap_or_default();
        let recent = timed(
            t.call_timeout,
            c.ecs
                .list_task_definitions()
                .family_prefix(&family)
                .sort(aws_sdk_ecs::types::SortOrder::Desc)
                .max_results(5)
                .send(),
            "ecs:ListTaskDefinitions",
        )
        .await?;
        let wanted = with_image(current.container_definitions.as_deref().unwrap_or_default(), t.container, image);
        for arn in recent.task_definition_arns.unwrap_or_default() {
            let candidate = self.task_definition(c, t, &arn).await?;
            if candidate.family == current.family
                && candidate.container_definitions.as_deref() == Some(wanted.as_slice())
            {
                return Ok((arn, false));
            }
        }
        let registered = timed(
            t.call_timeout,
            c.ecs
                .register_task_definition()
                .set_family(current.family.clone())
                .set_container_definitions(Some(wanted))
                .set_task_role_arn(current.task_role_arn.clone())
                .set_execution_role_arn(current.execution_role_arn.clone())
                .set_network_mode(current.network_mode.clone())
                .set_volumes(current.volumes.clone())
                .set_placement_constraints(current.placement_constraints.clone())
                .set_requires_compatibilities(current.requires_compatibilities.clone())
                .set_cpu(current.cpu.clone())
                .set_memory(current.memory.clone())
                .set_pid_mode(current.pid_mode.clone())
                .set_ipc_mode(current.ipc_mode.clone())
                .set_proxy_configuration(current.proxy_configuration.clone())
                .set_ephemeral_storage(current.ephemeral_storage.clone())
                .set_runtime_platform(current.runtime_platform.clone())
                .send(),
            "ecs:RegisterTaskDefinition",
        )
        .await?;
        let definition = registered
            .task_definition
            .ok_or_else(|| ActionError::Failed("RegisterTaskDefinition returned nothing".into()))?;
        Ok((definition.task_definition_arn.clone().unwrap_or_default(), true))
    }

    /// Points `service` at `arn` unless it already is (no idempotency token).
    async fn point_service(&self, c: &Clients, t: &Target<'_>, service: &str, arn: &str) -> Result<bool, ActionError> {
        let live = self.describe(c, t, service).await?;
        if live.task_definition.as_deref() == Some(arn) {
            return Ok(false);
        }
        timed(
            t.call_timeout,
            c.ecs.update_service().cluster(t.cluster).service(service).task_definition(arn).send(),
            "ecs:UpdateService",
        )
        .await?;
        Ok(true)
    }

    /// Polls until the service's rollout completes, fails or times out.
    async fn wait(&self, c: &Clients, t: &Target<'_>, service: &str, progress: &Progress) -> Result<(), ActionError> {
        let started = tokio::time::Instant::now();
        let mut last = None;
        loop {
            let live = self.describe(c, t, service).await?;
            match rollout_of(&live) {
                Rollout::Complete => return Ok(()),
                Rollout::Failed(reason) => {
                    return Err(ActionError::Failed(format!("{service}: rollout failed: {reason}")))
                }
                Rollout::Progressing { running, desired, state } => {
                    let now = (running, desired, state.clone());
                    if last.as_ref() != Some(&now) {
                        progress.report(format!("{service}: {running}/{desired} tasks running ({state})")).await;
                        last = Some(now);
                    }
                }
            }
            if started.elapsed() > t.rollout_timeout {
                return Err(ActionError::Timeout(format!(
                    "{} waiting for {service} to become stable",
                    crate::clock::format_duration(t.rollout_timeout)
                )));
            }
            tokio::time::sleep(t.poll).await;
        }
    }

    async fn smoke(&self, t: &Target<'_>, url: Option<&str>, progress: &Progress) -> Result<(), ActionError> {
        let Some(spec) = t.smoke else { return Ok(()) };
        let Some(url) = spec.url.as_deref().or(url).or(t.health_url) else { return Ok(()) };
        match smoke::run(url, spec).await {
            Ok(passed) => {
                progress.report(passed).await;
                Ok(())
            }
            Err(failed) => Err(ActionError::Failed(failed)),
        }
    }

    /// Deploy / rollback to a task definition for a single service.
    async fn roll_to(
        &self,
        c: &Clients,
        t: &Target<'_>,
        service: &str,
        arn: &str,
        progress: &Progress,
    ) -> Result<bool, ActionError> {
        let changed = self.point_service(c, t, service, arn).await?;
        if changed {
            progress.report(format!("{service}: updating to {}", arn.rsplit('/').next().unwrap_or(arn))).await;
        } else {
            progress
                .report(format!("{service} already uses {}; nothing to update", arn.rsplit('/').next().unwrap_or(arn)))
                .await;
        }
        self.wait(c, t, service, progress).await?;
        Ok(changed)
    }

    async fn run(&self, service: &Service, action: &Action, progress: &Progress) -> Result<Outcome, ActionError> {
        let t = target(service)?;
        let c = self.clients(&t).await;
        if let Some(bg) = t.blue_green {
            return self.blue_green(&c, &t, bg, action, progress).await;
        }
        let ecs_service = t.service.expect("validated: service or blue_green");
        let live = self.describe(&c, &t, ecs_service).await?;
        let current_arn = live.task_definition.clone().unwrap_or_default();
        let current = self.task_definition(&c, &t, &current_arn).await?;
        match action {
            Action::Deploy { version } => {
                let image = format!("{}:{version}", t.image);
                let (arn, registered) = self.definition_for(&c, &t, &current, &image).await?;
                if registered {
                    progress
                        .report(format!("registered {} with {image}", arn.rsplit('/').next().unwrap_or(&arn)))
                        .await;
                }
                let result = async {
                    self.roll_to(&c, &t, ecs_service, &arn, progress).await?;
                    self.smoke(&t, None, progress).await
                }
                .await;
                match result {
                    Ok(()) => Ok(Outcome::new(format!(
                        "{} runs {image} ({})",
                        service.name,
                        arn.rsplit('/').next().unwrap_or(&arn)
                    ))),
                    Err(failure) if t.auto_rollback => {
                        progress
                            .report(format!("deploy failed ({failure}); rolling back to {}", family_revision(&current)))
                            .await;
                        self.roll_to(&c, &t, ecs_service, &current_arn, progress).await?;
                        Err(ActionError::Failed(format!(
                            "deploy of {image} failed: {failure}; rolled back automatically to {}",
                            family_revision(&current)
                        )))
                    }
                    Err(failure) => Err(ActionError::Failed(format!(
                        "deploy of {image} failed: {failure}; `/rollback {}` returns to {}",
                        service.name,
                        family_revision(&current)
                    ))),
                }
            }
            Action::Rollback { revision } => {
                let family = current.family.clone().unwrap_or_default();
                let wanted = match revision {
                    Some(n) => *n as i32,
                    None if current.revision > 1 => current.revision - 1,
                    None => {
                        return Err(ActionError::Failed(format!(
                            "{family}:{} is the first revision; nothing to roll back to",
                            current.revision
                        )))
                    }
                };
                let definition = self.task_definition(&c, &t, &format!("{family}:{wanted}")).await?;
                let arn = definition.task_definition_arn.clone().unwrap_or_default();
                self.roll_to(&c, &t, ecs_service, &arn, progress).await?;
                Ok(Outcome::new(format!(
                    "{} rolled back to {} ({})",
                    service.name,
                    family_revision(&definition),
                    image_of(&definition, t.container).unwrap_or("?")
                )))
            }
            Action::Restart => {
                timed(
                    t.call_timeout,
                    c.ecs.update_service().cluster(t.cluster).service(ecs_service).force_new_deployment(true).send(),
                    "ecs:UpdateService",
                )
                .await?;
                progress.report(format!("{ecs_service}: new deployment forced")).await;
                self.wait(&c, &t, ecs_service, progress).await?;
                Ok(Outcome::new(format!("{} restarted ({})", service.name, family_revision(&current))))
            }
            Action::Scale { replicas } => {
                if live.desired_count != *replicas as i32 {
                    timed(
                        t.call_timeout,
                        c.ecs
                            .update_service()
                            .cluster(t.cluster)
                            .service(ecs_service)
                            .desired_count(*replicas as i32)
                            .send(),
                        "ecs:UpdateService",
                    )
                    .await?;
                }
                progress.report(format!("{ecs_service}: desired count {replicas}")).await;
                self.wait(&c, &t, ecs_service, progress).await?;
                Ok(Outcome::new(format!("{} runs {replicas} tasks", service.name)))
            }
        }
    }
}

impl Ecs {
    async fn service_report(&self, c: &Clients, t: &Target<'_>, service: &str) -> Result<String, ActionError> {
        let live = self.describe(c, t, service).await?;
        let arn = live.task_definition.clone().unwrap_or_default();
        let definition = self.task_definition(c, t, &arn).await?;
        let mut out = format!(
            "  {service} in {}: {} ({}) — {} desired, {} running, {} pending",
            t.cluster,
            family_revision(&definition),
            image_of(&definition, t.container).unwrap_or("?"),
            live.desired_count,
            live.running_count,
            live.pending_count
        );
        for d in live.deployments.clone().unwrap_or_default() {
            out.push_str(&format!(
                "\n    {} {} {} — {}/{} running, {} failed",
                d.status.as_deref().unwrap_or("?"),
                d.task_definition.as_deref().and_then(|a| a.rsplit('/').next()).unwrap_or("?"),
                d.rollout_state().map(|s| s.as_str()).unwrap_or("-"),
                d.running_count,
                d.desired_count,
                d.failed_tasks
            ));
        }
        if let Rollout::Failed(reason) = rollout_of(&live) {
            out.push_str(&format!("\n    rollout failed: {reason}"));
        }
        for event in live.events.clone().unwrap_or_default().into_iter().take(3) {
            out.push_str(&format!("\n    event: {}", event.message.unwrap_or_default()));
        }
        Ok(out)
    }

    async fn status_text(&self, service: &Service) -> Result<String, ActionError> {
        let t = target(service)?;
        let c = self.clients(&t).await;
        let mut out = format!("{} ({}) — ECS", service.name, service.environment);
        if let Some(bg) = t.blue_green {
            let (live, idle) = self.colours(&c, &t, bg).await?;
            out.push_str(&format!(" blue-green: {} is live, {} idle\n", live.name, idle.name));
            out.push_str(&self.service_report(&c, &t, &live.service).await?);
            out.push('\n');
            out.push_str(&self.service_report(&c, &t, &idle.service).await?);
        } else {
            out.push('\n');
            out.push_str(&self.service_report(&c, &t, t.service.unwrap_or_default()).await?);
        }
        Ok(out)
    }
}

impl Executor for Ecs {
    fn execute<'a>(
        &'a self,
        service: &'a Service,
        action: &'a Action,
        _context: &'a RunContext,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move { self.run(service, action, &progress).await })
    }

    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(self.status_text(service))
    }
}
