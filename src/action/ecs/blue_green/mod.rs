//! Blue-green on ECS: two services behind one listener; each colour is named
//! by its target group's `Color` tag, and the live colour is the one the
//! listener sends all traffic to. A weighted forward (a switch half done) is
//! shown as it is and never guessed into "live".
//!
//! - `state`: reading the pair, and the facts recorded after a switch.
//! - `switch`: a switch, safely, with context when a step fails.
//! - `listener`: moving the listener's traffic, settling lost answers.
//! - `rollback`: back to the colour the audit trail last verified live.
//! - `scale`: both colours, the idle one never holding up the live one.

mod listener;
mod rollback;
mod scale;
pub(super) mod state;
mod switch;

use super::definitions::short;
use super::update::Change;
use super::Ctx;
use crate::action::{Action, ActionError, Outcome, Progress, RunContext};
use crate::config::BlueGreen;
use state::Pair;
use switch::Switch;
use tokio::time::Instant;

/// A deploy of what the live colour runs: nothing to do, and no facts either,
/// so the last real switch stays what a rollback returns from. Not ✅ while
/// the live colour runs fewer tasks than it should.
fn already_live(name: &str, live: &state::ColourNow, image: &str) -> Result<Outcome, ActionError> {
    let (running, desired) = (live.live.running_count, live.live.desired_count);
    let text = format!(
        "{name} already runs {image} on live {} ({}, {running}/{desired} tasks); nothing changed",
        live.name,
        live.definition.name()
    );
    if running < desired {
        Err(ActionError::Unknown(text))
    } else {
        Ok(Outcome::new(text))
    }
}

impl Ctx<'_> {
    pub(super) async fn blue_green(
        &self,
        bg: &BlueGreen,
        action: &Action,
        context: &RunContext,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        match action {
            Action::Deploy { version } => self.deploy_blue_green(bg, version, progress).await,
            Action::Rollback { revision } => self.rollback_blue_green(bg, *revision, &context.history, progress).await,
            Action::Restart => self.restart_blue_green(bg, progress).await,
            Action::Scale { replicas } => self.scale_blue_green(bg, *replicas, progress).await,
        }
    }

    /// Refuses to act on a split listener, naming it as it is.
    fn split(&self, pair: &Pair, verb: &str) -> ActionError {
        ActionError::Failed(format!(
            "the listener of {} is split ({}): a switch is half done; {}; a {verb} now would guess which colour is live. `/rollback {}` returns all traffic to the colour last verified live, or `/deploy {} <version>` of what one colour runs sends all traffic there",
            self.t.name,
            pair.weights(),
            pair.describe(self.t.container),
            self.t.name,
            self.t.name
        ))
    }

    async fn deploy_blue_green(
        &self,
        bg: &BlueGreen,
        version: &str,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let image = format!("{}:{version}", self.t.image);
        let pair = self.pair(bg).await?;
        for colour in &pair.colours {
            self.check_container(&colour.definition.definition)?;
        }
        let (to, from, steps) = match pair.live() {
            Some(live) if live.image(self.t.container) == image => return already_live(self.t.name, live, &image),
            Some(live) => (pair.other(live), live, if bg.steps.is_empty() { vec![100] } else { bg.steps.clone() }),
            // Split: finish (or undo) the half-done switch toward the colour
            // that runs the version asked for.
            None => match pair.colours.iter().find(|c| c.image(self.t.container) == image) {
                Some(to) => (to, pair.other(to), vec![100]),
                None => return Err(self.split(&pair, "deploy")),
            },
        };
        let (definition, registered) = self.definition_for(&to.definition, &image).await?;
        let arn = definition.arn();
        if registered {
            progress.report(format!("registered {} with {image}", short(&arn))).await;
        }
        match pair.live() {
            Some(live) => {
                progress.report(format!("{} is live; deploying to idle {} ({})", live.name, to.name, to.service)).await
            }
            None => {
                progress
                    .report(format!("the listener is split ({}); sending all traffic to {}", pair.weights(), to.name))
                    .await
            }
        }
        let switch = Switch {
            to,
            from,
            arn: &arn,
            image: &image,
            steps,
            done: format!(
                "{} is live with {image} (was {})",
                to.name,
                pair.live().map(|l| l.name.as_str()).unwrap_or("split")
            ),
            previous: pair.live().map(|l| l.facts(self.t.container)),
        };
        self.switch(bg, &pair, switch, progress).await
    }

    async fn restart_blue_green(&self, bg: &BlueGreen, progress: &Progress) -> Result<Outcome, ActionError> {
        let pair = self.pair(bg).await?;
        let live = pair.live().ok_or_else(|| self.split(&pair, "restart"))?;
        let arn = live.definition.arn();
        let deadline = Instant::now() + self.t.rollout_timeout;
        let change = Change { arn: &arn, desired: None, force: true, deadline };
        let track = self.update(&live.service, change, progress).await?;
        let what = format!("restart of live {}", live.name);
        let after = self.completed(&what, &live.service, &track, deadline, progress).await?;
        Ok(Outcome::new(format!(
            "live colour {} restarted ({}, {}/{} tasks)",
            live.name,
            live.definition.name(),
            after.running_count,
            after.desired_count
        )))
    }
}
