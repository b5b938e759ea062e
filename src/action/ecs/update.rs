//! Reading a service, and updating it: the write compares the live state
//! first (`UpdateService` takes no idempotency token), is sent once by the
//! SDK (no blind re-sends), and a write whose answer was lost is settled by
//! re-reading the service — landed: follow what it started; not landed: an
//! idempotent change (a task definition, a count) is tried again, a forced
//! new deployment never is; still not seen after the last try, or
//! unreadable: `unknown` (it may still take effect). All of it within the
//! action's deadline.

use super::call::{write_once, AwsError, Failure};
use super::definitions::short;
use super::rollout::{deployments, primary, settled, Track};
use super::Ctx;
use crate::action::backoff::Backoff;
use crate::action::{ActionError, Progress};
use aws_sdk_ecs::types::Service;
use tokio::time::Instant;

/// What an update changes.
pub(super) struct Change<'a> {
    /// The task definition the service must run.
    pub(super) arn: &'a str,
    pub(super) desired: Option<i32>,
    /// Start a new deployment even without a change (restart).
    pub(super) force: bool,
    /// When the change and its rollout must be done (settling included).
    pub(super) deadline: Instant,
}

impl Ctx<'_> {
    pub(super) async fn describe_call(&self, service: &str) -> Result<Service, AwsError> {
        let out = self
            .call("ecs:DescribeServices", self.ecs.describe_services().cluster(self.t.cluster).services(service).send())
            .await?;
        let missing = || AwsError { action: "ecs:DescribeServices", failure: Failure::ServiceNotFound };
        if !out.failures.unwrap_or_default().is_empty() {
            return Err(missing());
        }
        out.services.unwrap_or_default().into_iter().next().ok_or_else(missing)
    }

    pub(super) fn explain_describe(&self, service: &str, e: AwsError) -> ActionError {
        match e.failure {
            Failure::ServiceNotFound => ActionError::Failed(format!(
                "unknown ECS service `{service}` in cluster `{}`, region {}: is the service name right?",
                self.t.cluster, self.region
            )),
            _ => e.into_action(self),
        }
    }

    /// The service now (the SDK retries transient failures).
    pub(super) async fn describe(&self, service: &str) -> Result<Service, ActionError> {
        match self.describe_call(service).await {
            Ok(s) => Ok(s),
            Err(e) if e.failure == Failure::ClusterNotFound => Err(ActionError::Failed(self.missing_cluster().await)),
            Err(e) => Err(self.explain_describe(service, e)),
        }
    }

    /// The service, retrying transient failures until `until`.
    pub(super) async fn describe_until(&self, service: &str, until: Instant) -> Result<Service, AwsError> {
        let mut backoff = Backoff::default();
        loop {
            match self.describe_call(service).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    let wait = backoff.next_wait();
                    if !e.failure.is_transient() || Instant::now() + wait > until {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Makes the service run `change`, unless it already does; returns what
    /// to follow.
    pub(super) async fn update(
        &self,
        service: &str,
        change: Change<'_>,
        progress: &Progress,
    ) -> Result<Track, ActionError> {
        let before = self.describe(service).await?;
        let plan = Plan::new(&before, &change);
        if plan.is_nothing() {
            progress.report(format!("{service} already runs {}; nothing to update", short(change.arn))).await;
            return Ok(plan.follow_existing(&before));
        }
        let mut backoff = Backoff::default();
        for attempt in 1..=UPDATE_ATTEMPTS {
            self.fenced(service).await?;
            let request = plan.request(self, service).customize().config_override(write_once());
            let error = match self.call("ecs:UpdateService", request.send()).await {
                Ok(out) => return self.follow(service, &plan, out.service, change.deadline).await,
                Err(e) => e,
            };
            let wait = backoff.next_wait();
            let last = attempt == UPDATE_ATTEMPTS || Instant::now() + wait >= change.deadline;
            if error.failure.may_have_landed() {
                if let Some(track) = self.settle(service, &plan, &error, change.deadline, progress).await? {
                    return Ok(track);
                }
                if last || plan.force {
                    // Not seen yet is not "not applied": AWS may still be
                    // applying it, and a second forced deployment would
                    // replace every task again.
                    return Err(ActionError::Unknown(format!(
                        "{}; re-read: not applied yet, but it may still take effect; check ECS service {service} before trying again",
                        error.explain(self)
                    )));
                }
            } else if !error.failure.is_transient() || last {
                return Err(error.into_action(self));
            }
            tokio::time::sleep(wait).await;
        }
        unreachable!("the last attempt returns")
    }

    /// An update got no answer: re-read (until `deadline`). Landed → what to
    /// follow; not landed → `None`; unreadable → `unknown`.
    async fn settle(
        &self,
        service: &str,
        plan: &Plan,
        error: &AwsError,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Option<Track>, ActionError> {
        match self.describe_until(service, deadline).await {
            Ok(live) => match plan.landed(&live).then(|| plan.follow(&live)).flatten() {
                Some(track) => {
                    let lost = error.explain(self);
                    progress.report(format!("{service}: {lost}; re-read: the update was applied")).await;
                    Ok(Some(track))
                }
                None => Ok(None),
            },
            Err(read) => Err(ActionError::Unknown(format!(
                "{}, and the service cannot be read ({}); check ECS service {service} before trying again",
                error.explain(self),
                read.explain(self)
            ))),
        }
    }
}

impl Ctx<'_> {
    /// What an answered update started. For a new task definition or a
    /// forced deployment that is a deployment that was not there before,
    /// running the task definition asked for — never the one that was
    /// already there. An answer that does not show it is re-read (until the
    /// deadline); if it never appears, the outcome is `unknown`.
    async fn follow(
        &self,
        service: &str,
        plan: &Plan,
        answered: Option<Service>,
        deadline: Instant,
    ) -> Result<Track, ActionError> {
        if let Some(track) = answered.as_ref().and_then(|s| plan.follow(s)) {
            return Ok(track);
        }
        let mut seen = answered;
        while Instant::now() < deadline {
            tokio::time::sleep(self.t.poll.min(deadline.saturating_duration_since(Instant::now()))).await;
            match self.describe_until(service, deadline).await {
                Ok(live) => match plan.follow(&live) {
                    Some(track) => return Ok(track),
                    None => seen = Some(live),
                },
                Err(e) => {
                    return Err(ActionError::Unknown(format!(
                        "ecs:UpdateService was answered, but the service cannot be read to find the deployment it started ({})",
                        e.explain(self)
                    )))
                }
            }
        }
        let deployments = seen.as_ref().map(super::rollout::list_deployments).unwrap_or_else(|| "none read".into());
        Err(ActionError::Unknown(format!(
            "ecs:UpdateService was answered, but ECS service {service} shows no new deployment of {} (its deployments: {deployments}); opsbot cannot follow a rollout it cannot see; check the service",
            short(&plan.arn)
        )))
    }
}

/// Tries at one update.
const UPDATE_ATTEMPTS: u32 = 3;

/// What one update writes, decided from the state read before it.
struct Plan {
    arn: String,
    new_definition: bool,
    new_count: Option<i32>,
    desired: Option<i32>,
    force: bool,
    /// The deployments the service had before the update.
    before: Vec<String>,
}

impl Plan {
    fn new(before: &Service, change: &Change<'_>) -> Plan {
        Plan {
            arn: change.arn.to_string(),
            new_definition: before.task_definition.as_deref() != Some(change.arn),
            new_count: change.desired.filter(|d| *d != before.desired_count),
            desired: change.desired,
            force: change.force,
            before: deployments(before).iter().filter_map(|d| d.id.clone()).collect(),
        }
    }

    fn is_nothing(&self) -> bool {
        !self.new_definition && self.new_count.is_none() && !self.force
    }

    fn request(
        &self,
        ctx: &Ctx<'_>,
        service: &str,
    ) -> aws_sdk_ecs::operation::update_service::builders::UpdateServiceFluentBuilder {
        let mut request = ctx.ecs.update_service().cluster(ctx.t.cluster).service(service);
        if self.new_definition {
            request = request.task_definition(&self.arn);
        }
        if let Some(desired) = self.new_count {
            request = request.desired_count(desired);
        }
        if self.force {
            request = request.force_new_deployment(true);
        }
        request
    }

    /// Nothing written: follow a rollout still under way, else check the
    /// service is steady.
    fn follow_existing(&self, before: &Service) -> Track {
        match primary(before).and_then(|p| p.id.clone()) {
            Some(id) if !settled(before) => Track::Deployment { id, arn: self.arn.clone() },
            _ => Track::Count { desired: before.desired_count, arn: self.arn.clone() },
        }
    }

    /// What the update started, as `service` (answered or re-read) shows
    /// it: the new deployment (not there before, running `arn`), or for a
    /// count change the count. `None` while no such deployment shows.
    fn follow(&self, service: &Service) -> Option<Track> {
        if !(self.new_definition || self.force) {
            let desired = self.desired.unwrap_or(service.desired_count);
            return Some(Track::Count { desired, arn: self.arn.clone() });
        }
        deployments(service)
            .iter()
            .filter(|d| d.task_definition.as_deref() == Some(self.arn.as_str()))
            .filter_map(|d| d.id.clone())
            .find(|id| !self.before.contains(id))
            .map(|id| Track::Deployment { id, arn: self.arn.clone() })
    }

    /// Whether `live` shows the update applied.
    fn landed(&self, live: &Service) -> bool {
        live.task_definition.as_deref() == Some(self.arn.as_str())
            && self.new_count.is_none_or(|d| live.desired_count == d)
            && self.follow(live).is_some()
    }
}
