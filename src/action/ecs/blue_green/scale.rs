//! `/scale` on a blue-green pair: the live colour first, waited on — its
//! outcome is the action's; then the idle colour, so a later switch or
//! rollback moves traffic to as many tasks. An idle colour whose last rollout
//! FAILED (the usual state after a failed switch) could never settle: its
//! count is set and it is not waited on, and the outcome says so. The idle
//! colour's own trouble never fails the scale of what serves traffic.

use super::super::rollout::primary;
use super::super::update::Change;
use super::super::Ctx;
use super::state::ColourNow;
use crate::action::{ActionError, Outcome, Progress};
use crate::config::BlueGreen;
use aws_sdk_ecs::types::DeploymentRolloutState;
use tokio::time::Instant;

/// The rollout state of a colour's PRIMARY deployment, when it FAILED.
fn failed_rollout(colour: &ColourNow) -> bool {
    primary(&colour.live).is_some_and(|p| p.rollout_state == Some(DeploymentRolloutState::Failed))
}

impl Ctx<'_> {
    pub(super) async fn scale_blue_green(
        &self,
        bg: &BlueGreen,
        replicas: u32,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let pair = self.pair(bg).await?;
        let live = pair.live().ok_or_else(|| self.split(&pair, "scale"))?;
        let desired =
            i32::try_from(replicas).map_err(|_| ActionError::Failed(format!("{replicas} tasks is too many")))?;
        let deadline = Instant::now() + self.t.rollout_timeout;
        let arn = live.definition.arn();
        let track = self
            .update(&live.service, Change { arn: &arn, desired: Some(desired), force: false, deadline }, progress)
            .await?;
        progress.report(format!("{} ({}): desired count {replicas}", live.name, live.service)).await;
        let what = format!("scale of live {} to {replicas}", live.name);
        let after = self.completed(&what, &live.service, &track, deadline, progress).await?;
        let scaled = format!(
            "live {}: {}/{} tasks of {}",
            live.name,
            after.running_count,
            after.desired_count,
            live.definition.name()
        );
        progress.report(scaled.clone()).await;
        let idle = self.scale_idle(pair.other(live), desired, progress).await;
        Ok(Outcome::new(format!("{} scaled to {replicas}: {scaled}; {idle}", self.t.name)))
    }

    /// The idle colour's count, and how that went, in words.
    async fn scale_idle(&self, idle: &ColourNow, desired: i32, progress: &Progress) -> String {
        let (name, revision) = (&idle.name, idle.definition.name());
        let deadline = Instant::now() + self.t.rollout_timeout;
        let arn = idle.definition.arn();
        let track = match self
            .update(&idle.service, Change { arn: &arn, desired: Some(desired), force: false, deadline }, progress)
            .await
        {
            Ok(track) => track,
            Err(e) => {
                return format!("idle {name} ({revision}): its count could not be set ({e}); a switch sets it first")
            }
        };
        if failed_rollout(idle) {
            return format!(
                "idle {name} ({revision}, its last rollout FAILED): desired count {desired}, not waited on; a switch to it would bring it up first"
            );
        }
        let what = format!("scale of idle {name} to {desired}");
        match self.completed(&what, &idle.service, &track, deadline, progress).await {
            Ok(after) => format!("idle {name}: {}/{} tasks of {revision}", after.running_count, after.desired_count),
            Err(e) => format!("idle {name} ({revision}): desired count {desired}, but {e}"),
        }
    }
}
