//! The listener: what must hold before traffic moves, and moving it.
//!
//! Before: no listener rule forwards to either colour (opsbot moves only the
//! default action, so traffic such a rule matches would stay where it is),
//! and the target colour's target group has as many healthy targets as it
//! must serve (RUNNING tasks are not yet healthy behind the load balancer).
//!
//! Moving: `ModifyListener` sets absolute weights (and keeps the listener's
//! target-group stickiness), so sending it again changes nothing more; still
//! the SDK sends it once, and a lost answer is settled by reading the
//! listener: moved → done; not moved → sent again (a few tries); still not
//! moved after the last, or unreadable → `unknown`, since it may yet apply.

use super::super::call::write_once_elb;
use super::super::Ctx;
use super::state::{ColourNow, Pair};
use crate::action::backoff::Backoff;
use crate::action::{ActionError, Progress};
use crate::config::BlueGreen;
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, ForwardActionConfig, TargetGroupStickinessConfig, TargetGroupTuple,
    TargetHealthStateEnum,
};
use tokio::time::Instant;

/// Tries at one listener change.
const SHIFT_ATTEMPTS: u32 = 3;

/// The default action sending `percent` to `to`, the rest to `from`, with
/// the listener's stickiness kept (a weighted forward without it would drop it).
fn forward(
    from: &ColourNow,
    to: &ColourNow,
    percent: u8,
    stickiness: Option<&TargetGroupStickinessConfig>,
) -> ElbAction {
    if percent >= 100 && stickiness.is_none() {
        return ElbAction::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&to.target_group).build();
    }
    let tuple =
        |arn: &str, weight: u8| TargetGroupTuple::builder().target_group_arn(arn).weight(i32::from(weight)).build();
    let mut forward = ForwardActionConfig::builder().target_groups(tuple(&to.target_group, percent.min(100)));
    if percent < 100 {
        forward = forward.target_groups(tuple(&from.target_group, 100 - percent));
    }
    let forward = forward.set_target_group_stickiness_config(stickiness.cloned()).build();
    ElbAction::builder().r#type(ActionTypeEnum::Forward).forward_config(forward).build()
}

/// "priority 10 (path-pattern /api/*)".
fn describe_rule(rule: &aws_sdk_elasticloadbalancingv2::types::Rule) -> String {
    let conditions: Vec<String> = rule
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {}",
                c.field.as_deref().unwrap_or("?"),
                c.values.iter().flatten().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("priority {} ({})", rule.priority.as_deref().unwrap_or("?"), conditions.join("; "))
}

impl Ctx<'_> {
    /// The listener rules (other than the default) that forward to a colour
    /// of `pair`, in words; empty when none do.
    pub(in crate::action::ecs) async fn rules_to_colours(
        &self,
        bg: &BlueGreen,
        pair: &Pair,
    ) -> Result<Vec<String>, ActionError> {
        let rules = self
            .ask("elasticloadbalancing:DescribeRules", self.elb.describe_rules().listener_arn(&bg.listener_arn).send())
            .await?;
        let colour_of = |arn: &str| pair.colours.iter().find(|c| c.target_group == arn).map(|c| c.name.clone());
        Ok(rules
            .rules
            .unwrap_or_default()
            .iter()
            .filter(|r| r.is_default != Some(true))
            .filter_map(|r| {
                let groups = r.actions.iter().flatten().flat_map(|a| {
                    let weighted = a
                        .forward_config
                        .iter()
                        .flat_map(|f| f.target_groups.iter().flatten())
                        .filter_map(|t| t.target_group_arn.clone());
                    a.target_group_arn.clone().into_iter().chain(weighted)
                });
                let colours: Vec<String> = groups.filter_map(|arn| colour_of(&arn)).collect();
                (!colours.is_empty()).then(|| format!("{} forwards to {}", describe_rule(r), colours.join(" and ")))
            })
            .collect())
    }

    /// Waits (until `deadline`) for `to`'s target group to hold `desired`
    /// healthy targets; says how many are healthy when it does not.
    pub(super) async fn healthy_targets(
        &self,
        to: &ColourNow,
        desired: i32,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<(), ActionError> {
        let mut last = None;
        loop {
            let health = self
                .ask(
                    "elasticloadbalancing:DescribeTargetHealth",
                    self.elb.describe_target_health().target_group_arn(&to.target_group).send(),
                )
                .await?;
            let all = health.target_health_descriptions.unwrap_or_default();
            let healthy = all
                .iter()
                .filter(|d| {
                    d.target_health.as_ref().and_then(|h| h.state.as_ref()) == Some(&TargetHealthStateEnum::Healthy)
                })
                .count();
            let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
            if healthy >= desired {
                progress.report(format!("{}: {healthy} healthy targets behind the load balancer", to.name)).await;
                return Ok(());
            }
            if last != Some(healthy) {
                progress.report(format!("{}: {healthy} of {desired} targets healthy", to.name)).await;
                last = Some(healthy);
            }
            if Instant::now() >= deadline {
                return Err(ActionError::Failed(format!(
                    "{}'s target group has {healthy} of {desired} targets healthy after {}: the load balancer would send traffic to too few",
                    to.name,
                    crate::clock::format_duration(self.t.rollout_timeout)
                )));
            }
            tokio::time::sleep(self.t.poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Points the listener: `percent` to `to`, the rest to `from`.
    pub(super) async fn shift(
        &self,
        bg: &BlueGreen,
        pair: &Pair,
        from: &ColourNow,
        to: &ColourNow,
        percent: u8,
        progress: &Progress,
    ) -> Result<(), ActionError> {
        let mut backoff = Backoff::default();
        for attempt in 1..=SHIFT_ATTEMPTS {
            self.fenced(&from.service).await?;
            self.fenced(&to.service).await?;
            let request = self
                .elb
                .modify_listener()
                .listener_arn(&bg.listener_arn)
                .default_actions(forward(from, to, percent, pair.stickiness.as_ref()))
                .customize()
                .config_override(write_once_elb());
            let error = match self.call("elasticloadbalancing:ModifyListener", request.send()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let last = attempt == SHIFT_ATTEMPTS;
            if error.failure.may_have_landed() {
                // The answer was lost: the listener itself says whether it moved.
                match self.pair(bg).await {
                    Ok(now) if now.by_name(&to.name).is_some_and(|c| c.weight == i32::from(percent.min(100))) => {
                        let lost = error.explain(self);
                        progress.report(format!("{lost}; re-read: the listener forwards {}", now.weights())).await;
                        return Ok(());
                    }
                    Ok(now) if last => {
                        return Err(ActionError::Unknown(format!(
                            "{}; re-read: the listener still forwards {}, but the change may yet take effect",
                            error.explain(self),
                            now.weights()
                        )))
                    }
                    Ok(_) => {}
                    Err(read) => {
                        return Err(ActionError::Unknown(format!(
                            "{}, and the listener cannot be read ({read})",
                            error.explain(self)
                        )))
                    }
                }
            } else if !error.failure.is_transient() || last {
                return Err(error.into_action(self));
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
        unreachable!("the last attempt returns")
    }
}
