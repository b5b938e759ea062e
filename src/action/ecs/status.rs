//! `/status` for ECS: each service's task definition and image, counts,
//! deployments with their rollout states, a failed rollout's reason, and
//! recent events; for blue-green, the listener as it is (weights per colour)
//! and what each colour runs.

use super::definitions::{image_of, short};
use super::rollout::primary;
use super::Ctx;
use crate::action::ActionError;
use crate::config::Service;
use aws_sdk_ecs::types::DeploymentRolloutState;

impl Ctx<'_> {
    async fn service_report(&self, service: &str) -> Result<String, ActionError> {
        let live = self.describe(service).await?;
        let definition = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
        let mut out = format!(
            "  {service} in {}: {} ({}) — {} desired, {} running, {} pending",
            self.t.cluster,
            definition.name(),
            image_of(&definition.definition, self.t.container).unwrap_or("?"),
            live.desired_count,
            live.running_count,
            live.pending_count
        );
        for d in live.deployments.iter().flatten() {
            out.push_str(&format!(
                "\n    {} {} {} {} — {}/{} running, {} failed",
                d.status.as_deref().unwrap_or("?"),
                d.id.as_deref().unwrap_or("?"),
                d.task_definition.as_deref().map(short).unwrap_or("?"),
                d.rollout_state.as_ref().map(|s| s.as_str()).unwrap_or("-"),
                d.running_count,
                d.desired_count,
                d.failed_tasks
            ));
            if d.rollout_state == Some(DeploymentRolloutState::Failed) {
                out.push_str(&format!(
                    "\n    rollout failed: {}",
                    d.rollout_state_reason.as_deref().unwrap_or("no reason given")
                ));
            }
        }
        if primary(&live).is_none() {
            out.push_str("\n    no PRIMARY deployment");
        }
        for event in live.events.iter().flatten().take(3) {
            out.push_str(&format!("\n    event: {}", event.message.as_deref().unwrap_or("")));
        }
        Ok(out)
    }

    pub(super) async fn status_text(&self, service: &Service) -> Result<String, ActionError> {
        let mut out = format!("{} ({}) — ECS", service.name, service.environment);
        if let Some(bg) = self.t.blue_green {
            let pair = self.pair(bg).await?;
            match pair.live() {
                Some(live) => {
                    out.push_str(&format!(" blue-green: {} is live, {} idle", live.name, pair.other(live).name))
                }
                None => out.push_str(&format!(
                    " blue-green: the listener is split ({}): a switch is half done, neither colour is live",
                    pair.weights()
                )),
            }
            for colour in &pair.colours {
                out.push_str(&format!(
                    "\n  {} ({}% of traffic): {}",
                    colour.name,
                    colour.weight,
                    colour.image(self.t.container)
                ));
            }
            for colour in &pair.colours {
                out.push('\n');
                out.push_str(&self.service_report(&colour.service).await?);
            }
        } else {
            out.push('\n');
            out.push_str(&self.service_report(self.t.service.unwrap_or_default()).await?);
        }
        Ok(out)
    }
}
