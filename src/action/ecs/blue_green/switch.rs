//! Moving traffic to a colour: first that colour runs the wanted task
//! definition with as many healthy tasks as the colour it takes over from
//! (and passes the smoke test); then the listener moves in steps, with a
//! smoke test after each. A failed smoke test moves all traffic back. An AWS
//! error at any step is reported with the step, where the listener stands
//! now (weights), what each colour runs, and what to do next.

use super::super::update::Change;
use super::super::Ctx;
use super::state::{ColourFacts, ColourNow, Pair};
use crate::action::{ActionError, Outcome, Progress};
use crate::config::BlueGreen;
use tokio::time::Instant;

/// One switch: to which colour, with what, why.
pub(super) struct Switch<'a> {
    pub(super) to: &'a ColourNow,
    pub(super) from: &'a ColourNow,
    /// The task definition `to` must run, and its image.
    pub(super) arn: &'a str,
    pub(super) image: &'a str,
    /// Traffic steps in percent, ending at 100.
    pub(super) steps: Vec<u8>,
    /// What the outcome says when it is done ("green is live with …").
    pub(super) done: String,
    /// The colour that served all traffic before, for the trail.
    pub(super) previous: Option<ColourFacts>,
}

impl Ctx<'_> {
    /// The version in an image, as `/deploy` takes it (the image's tag).
    pub(super) fn version_of<'a>(&self, image: &'a str) -> Option<&'a str> {
        image.strip_prefix(self.t.image).and_then(|rest| rest.strip_prefix(':'))
    }

    /// A step failed: say which, where the listener stands now, what each
    /// colour runs, and what to do next.
    async fn step_failed(&self, bg: &BlueGreen, s: &Switch<'_>, step: &str, error: ActionError) -> ActionError {
        let next = match (self.version_of(s.from.image(self.t.container)), self.version_of(s.image)) {
            (Some(back), Some(forward)) => format!(
                "next: `/deploy {name} {back}` sends all traffic to {from}; `/deploy {name} {forward}` retries the switch to {to}",
                name = self.t.name,
                from = s.from.name,
                to = s.to.name
            ),
            _ => format!("next: `/rollback {}` returns to the colour last verified live", self.t.name),
        };
        let unsettled = matches!(error, ActionError::Unknown(_));
        match self.pair(bg).await {
            // A listener change that may still take effect leaves it unknown.
            Ok(now) if unsettled => ActionError::Unknown(format!(
                "switching traffic from {} to {} stopped at {step}: {error}; the listener now forwards {}; {}; {next}",
                s.from.name,
                s.to.name,
                now.weights(),
                now.describe(self.t.container)
            )),
            Ok(now) => ActionError::Failed(format!(
                "switching traffic from {} to {} failed at {step}: {error}; the listener now forwards {}; {}; {next}",
                s.from.name,
                s.to.name,
                now.weights(),
                now.describe(self.t.container)
            )),
            Err(read) => ActionError::Unknown(format!(
                "switching traffic from {} to {} failed at {step}: {error}; where the listener stands cannot be read ({read}); {next}",
                s.from.name, s.to.name
            )),
        }
    }

    /// Brings `to` to `arn` and `from`'s task count, waits until healthy.
    async fn prepare(
        &self,
        s: &Switch<'_>,
        desired: i32,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<(), ActionError> {
        let service = &s.to.service;
        let change = Change { arn: s.arn, desired: Some(desired), force: false, deadline };
        let track = self.update(service, change, progress).await?;
        let what = format!("preparing {} ({service})", s.to.name);
        let live = self.completed(&what, service, &track, deadline, progress).await?;
        progress
            .report(format!(
                "{}: {}/{} tasks of {} running (as many as {} has)",
                s.to.name,
                live.running_count,
                live.desired_count,
                super::super::definitions::short(s.arn),
                s.from.name
            ))
            .await;
        Ok(())
    }

    /// Runs a switch to its end; the outcome is the pair read back.
    pub(super) async fn switch(
        &self,
        bg: &BlueGreen,
        pair: &Pair,
        s: Switch<'_>,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let desired = pair.colours.iter().map(|c| c.live.desired_count).max().unwrap_or(1);
        let stays = match pair.live() {
            Some(live) => format!("traffic stays on {}", live.name),
            None => format!("traffic stays as it is ({})", pair.weights()),
        };
        let rules = self.rules_to_colours(bg, pair).await?;
        if !rules.is_empty() {
            return Err(ActionError::Failed(format!(
                "listener rules forward to a colour: {}; opsbot moves only the listener's default action, so the traffic they match would stay where it is; move or remove those rules first; {stays}",
                rules.join("; ")
            )));
        }
        let deadline = Instant::now() + self.t.rollout_timeout;
        let held = |e: ActionError| ActionError::Failed(format!("{e}; {stays}"));
        self.prepare(&s, desired, deadline, progress).await.map_err(held)?;
        self.smoke(Some(&s.to.url), progress).await.map_err(held)?;
        self.healthy_targets(s.to, desired, deadline, progress).await.map_err(held)?;
        let count = s.steps.len();
        for (i, percent) in s.steps.iter().copied().enumerate() {
            let step = format!("step {} of {count} ({percent}% to {})", i + 1, s.to.name);
            if let Err(e) = self.shift(bg, pair, s.from, s.to, percent, progress).await {
                return Err(self.step_failed(bg, &s, &step, e).await);
            }
            progress.report(format!("{percent}% of traffic on {}", s.to.name)).await;
            if let Err(failure) = self.smoke(Some(&s.to.url), progress).await {
                return Err(self.switch_back(bg, pair, &s, percent, failure, progress).await);
            }
        }
        self.read_back(bg, &s).await
    }

    /// All steps were sent: the outcome is the pair read back. When it
    /// cannot be read, traffic may well be on the new colour: unknown.
    async fn read_back(&self, bg: &BlueGreen, s: &Switch<'_>) -> Result<Outcome, ActionError> {
        let now = self.pair(bg).await.map_err(|e| {
            ActionError::Unknown(format!(
                "every traffic step to {} was sent and acknowledged, but the listener could not be read back ({e}); check where it forwards before acting again",
                s.to.name
            ))
        })?;
        match now.live() {
            Some(live) if live.name == s.to.name && live.definition.arn() == s.arn => Ok(Outcome {
                summary: s.done.clone(),
                live: Some(now.facts(&bg.listener_arn, self.t.container, s.previous.clone()).into_json()),
            }),
            _ => Err(ActionError::Failed(format!(
                "the switch to {} was sent, but the listener now forwards {} and {}",
                s.to.name,
                now.weights(),
                now.describe(self.t.container)
            ))),
        }
    }

    /// The smoke test failed at `percent`: all traffic back to `from`, and
    /// where the listener stands, read back (unknown if it cannot be read).
    async fn switch_back(
        &self,
        bg: &BlueGreen,
        pair: &Pair,
        s: &Switch<'_>,
        percent: u8,
        failure: ActionError,
        progress: &Progress,
    ) -> ActionError {
        if let Err(e) = self.shift(bg, pair, s.to, s.from, 100, progress).await {
            let step = format!(
                "moving all traffic back to {} after the smoke test failed at {percent}% ({failure})",
                s.from.name
            );
            return self.step_failed(bg, s, &step, e).await;
        }
        match self.pair(bg).await {
            Ok(now) => {
                progress.report(format!("smoke test failed at {percent}%; the listener forwards {}", now.weights())).await;
                ActionError::Failed(format!(
                    "{failure}; switched back: the listener forwards {}; {}",
                    now.weights(),
                    now.describe(self.t.container)
                ))
            }
            Err(e) => ActionError::Unknown(format!(
                "{failure}; all traffic was sent back to {} (acknowledged), but the listener could not be read back ({e}); check where it forwards",
                s.from.name
            )),
        }
    }
}
