//! Blue-green on ECS: two services behind one listener, the live colour being
//! the target group the listener forwards to (named by its `Color` tag).

use super::{timed, Clients, Ecs, Target};
use crate::action::{Action, ActionError, Outcome, Progress};
use crate::config::BlueGreen;
use aws_sdk_elasticloadbalancingv2 as elb;

/// One colour of a blue-green pair.
#[derive(Debug, Clone)]
pub(super) struct Colour {
    pub(super) name: String,
    pub(super) service: String,
    target_group: String,
    url: String,
}

impl Ecs {
    /// Reads both colours' target groups and `Color` tags and which one the
    /// listener forwards to: (live, idle).
    pub(super) async fn colours(
        &self,
        c: &Clients,
        t: &Target<'_>,
        bg: &BlueGreen,
    ) -> Result<(Colour, Colour), ActionError> {
        let mut colours = Vec::new();
        for (service, url) in [(&bg.blue_service, &bg.blue_url), (&bg.green_service, &bg.green_url)] {
            let live = self.describe(c, t, service).await?;
            let target_group =
                live.load_balancers.unwrap_or_default().into_iter().find_map(|lb| lb.target_group_arn).ok_or_else(
                    || ActionError::Failed(format!("{service} is not behind a load balancer target group")),
                )?;
            let tags = timed(
                t.call_timeout,
                c.elb.describe_tags().resource_arns(&target_group).send(),
                "elasticloadbalancing:DescribeTags",
            )
            .await?;
            let name = tags
                .tag_descriptions
                .unwrap_or_default()
                .into_iter()
                .flat_map(|d| d.tags.unwrap_or_default())
                .find(|tag| tag.key.as_deref() == Some("Color"))
                .and_then(|tag| tag.value)
                .ok_or_else(|| ActionError::Failed(format!("target group of {service} has no Color tag")))?;
            colours.push(Colour { name, service: service.clone(), target_group, url: url.clone() });
        }
        let listener = timed(
            t.call_timeout,
            c.elb.describe_listeners().listener_arns(&bg.listener_arn).send(),
            "elasticloadbalancing:DescribeListeners",
        )
        .await?;
        let action = listener
            .listeners
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|l| l.default_actions)
            .and_then(|a| a.into_iter().next())
            .ok_or_else(|| ActionError::Failed("the listener has no default action".into()))?;
        // The live colour is the target group with the most weight.
        let mut weights: Vec<(String, i32)> = action
            .forward_config
            .and_then(|f| f.target_groups)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tg| tg.target_group_arn.map(|arn| (arn, tg.weight.unwrap_or(1))))
            .collect();
        if weights.is_empty() {
            if let Some(arn) = action.target_group_arn {
                weights.push((arn, 1));
            }
        }
        let live_arn = weights.into_iter().max_by_key(|(_, w)| *w).map(|(arn, _)| arn).unwrap_or_default();
        let green = colours.pop().expect("two colours");
        let blue = colours.pop().expect("two colours");
        if live_arn == blue.target_group {
            Ok((blue, green))
        } else if live_arn == green.target_group {
            Ok((green, blue))
        } else {
            Err(ActionError::Failed("the listener forwards to neither colour's target group".into()))
        }
    }

    /// Sends `percent` of the listener's traffic to `to`, the rest to `from`.
    async fn shift(
        &self,
        c: &Clients,
        t: &Target<'_>,
        bg: &BlueGreen,
        from: &Colour,
        to: &Colour,
        percent: u8,
    ) -> Result<(), ActionError> {
        use elb::types::{Action as ElbAction, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple};
        let action = if percent >= 100 {
            ElbAction::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&to.target_group).build()
        } else {
            let tuple = |arn: &str, weight: u8| {
                TargetGroupTuple::builder().target_group_arn(arn).weight(i32::from(weight)).build()
            };
            let forward = ForwardActionConfig::builder()
                .target_groups(tuple(&to.target_group, percent))
                .target_groups(tuple(&from.target_group, 100 - percent))
                .build();
            ElbAction::builder().r#type(ActionTypeEnum::Forward).forward_config(forward).build()
        };
        timed(
            t.call_timeout,
            c.elb.modify_listener().listener_arn(&bg.listener_arn).default_actions(action).send(),
            "elasticloadbalancing:ModifyListener",
        )
        .await?;
        Ok(())
    }

    pub(super) async fn blue_green(
        &self,
        c: &Clients,
        t: &Target<'_>,
        bg: &BlueGreen,
        action: &Action,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let (live, idle) = self.colours(c, t, bg).await?;
        match action {
            Action::Deploy { version } => {
                let image = format!("{}:{version}", t.image);
                let idle_live = self.describe(c, t, &idle.service).await?;
                let current =
                    self.task_definition(c, t, idle_live.task_definition.as_deref().unwrap_or_default()).await?;
                let (arn, registered) = self.definition_for(c, t, &current, &image).await?;
                if registered {
                    progress
                        .report(format!("registered {} with {image}", arn.rsplit('/').next().unwrap_or(&arn)))
                        .await;
                }
                progress
                    .report(format!("{} is live; deploying to idle {} ({})", live.name, idle.name, idle.service))
                    .await;
                self.roll_to(c, t, &idle.service, &arn, progress).await?;
                self.smoke(t, Some(&idle.url), progress)
                    .await
                    .map_err(|e| ActionError::Failed(format!("{e}; traffic stays on {}", live.name)))?;
                let steps = if bg.steps.is_empty() { vec![100] } else { bg.steps.clone() };
                for percent in steps {
                    self.shift(c, t, bg, &live, &idle, percent).await?;
                    progress.report(format!("{percent}% of traffic on {}", idle.name)).await;
                    if let Err(failure) = self.smoke(t, Some(&idle.url), progress).await {
                        self.shift(c, t, bg, &idle, &live, 100).await?;
                        progress
                            .report(format!("smoke test failed at {percent}%; all traffic back on {}", live.name))
                            .await;
                        return Err(ActionError::Failed(format!("{failure}; switched back: {} is live", live.name)));
                    }
                }
                Ok(Outcome::new(format!("{} is live with {image} (was {})", idle.name, live.name)))
            }
            Action::Rollback { .. } => {
                // The previous colour is still running: switch back at once.
                self.shift(c, t, bg, &live, &idle, 100).await?;
                Ok(Outcome::new(format!("switched back: {} is live ({} idle)", idle.name, live.name)))
            }
            Action::Restart => {
                timed(
                    t.call_timeout,
                    c.ecs.update_service().cluster(t.cluster).service(&live.service).force_new_deployment(true).send(),
                    "ecs:UpdateService",
                )
                .await?;
                self.wait(c, t, &live.service, progress).await?;
                Ok(Outcome::new(format!("live colour {} restarted", live.name)))
            }
            Action::Scale { replicas } => {
                timed(
                    t.call_timeout,
                    c.ecs
                        .update_service()
                        .cluster(t.cluster)
                        .service(&live.service)
                        .desired_count(*replicas as i32)
                        .send(),
                    "ecs:UpdateService",
                )
                .await?;
                self.wait(c, t, &live.service, progress).await?;
                Ok(Outcome::new(format!("live colour {} runs {replicas} tasks", live.name)))
            }
        }
    }
}
