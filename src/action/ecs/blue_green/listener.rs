//! Moving the listener's traffic. `ModifyListener` sets absolute weights, so
//! sending it again changes nothing more; still the SDK sends it once, and a
//! lost answer is settled by reading the listener: moved → done; not moved →
//! sent again (a few tries); still not moved after the last, or unreadable →
//! `unknown`, since the change may yet take effect.

use super::super::call::write_once_elb;
use super::super::Ctx;
use super::state::ColourNow;
use crate::action::backoff::Backoff;
use crate::action::{ActionError, Progress};
use crate::config::BlueGreen;
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
};

/// Tries at one listener change.
const SHIFT_ATTEMPTS: u32 = 3;

/// The default action sending `percent` to `to`, the rest to `from`.
fn forward(from: &ColourNow, to: &ColourNow, percent: u8) -> ElbAction {
    if percent >= 100 {
        return ElbAction::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&to.target_group).build();
    }
    let tuple =
        |arn: &str, weight: u8| TargetGroupTuple::builder().target_group_arn(arn).weight(i32::from(weight)).build();
    let forward = ForwardActionConfig::builder()
        .target_groups(tuple(&to.target_group, percent))
        .target_groups(tuple(&from.target_group, 100 - percent))
        .build();
    ElbAction::builder().r#type(ActionTypeEnum::Forward).forward_config(forward).build()
}

impl Ctx<'_> {
    /// Points the listener: `percent` to `to`, the rest to `from`.
    pub(super) async fn shift(
        &self,
        bg: &BlueGreen,
        from: &ColourNow,
        to: &ColourNow,
        percent: u8,
        progress: &Progress,
    ) -> Result<(), ActionError> {
        let mut backoff = Backoff::default();
        for attempt in 1..=SHIFT_ATTEMPTS {
            let request = self
                .elb
                .modify_listener()
                .listener_arn(&bg.listener_arn)
                .default_actions(forward(from, to, percent))
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
