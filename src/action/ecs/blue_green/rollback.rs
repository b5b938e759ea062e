//! `/rollback` on a blue-green pair: back to the colour the audit trail last
//! verified live — never blindly to "the other colour", which may be the one
//! whose smoke test just failed, or half of a split listener.
//!
//! The newest verified switch in the trail (its `BlueGreenFacts`) decides:
//! if the pair is still exactly as it verified, the target is the colour that
//! served all traffic before that switch; if the pair has moved since (a
//! split listener, another writer), the target is the colour it verified
//! live. Either way the target must still run the task definition it ran
//! then, or opsbot refuses and says what it runs instead.

use super::super::definitions::short;
use super::state::{BlueGreenFacts, ColourFacts, Pair};
use super::switch::Switch;
use super::Ctx;
use crate::action::{ActionError, Outcome, Progress, Verified};
use crate::config::BlueGreen;

/// The colour to return to, and the record that verified it.
fn target<'h>(pair: &Pair, history: &'h [Verified], listener: &str) -> Result<(ColourFacts, &'h Verified), String> {
    let Some((record, facts)) =
        history.iter().find_map(|v| BlueGreenFacts::parse(&v.live, listener).map(|facts| (v, facts)))
    else {
        return Err("opsbot's audit trail has no verified switch of this pair to return to".into());
    };
    let verified_live = facts.live_colour().ok_or_else(|| format!("{} recorded no live colour", record.request_id))?;
    let unchanged = pair
        .live()
        .is_some_and(|l| l.name == verified_live.colour && l.definition.arn() == verified_live.task_definition);
    if !unchanged {
        return Ok((verified_live.clone(), record));
    }
    facts.previous.clone().map(|previous| (previous, record)).ok_or_else(|| {
        format!(
            "nothing was verified live before {} ({} is live as it verified)",
            record.request_id,
            verified_live.describe()
        )
    })
}

impl Ctx<'_> {
    pub(super) async fn rollback_blue_green(
        &self,
        bg: &BlueGreen,
        revision: Option<u32>,
        history: &[Verified],
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let name = self.t.name;
        if let Some(n) = revision {
            return Err(ActionError::Failed(format!(
                "{name} is blue-green: `/rollback {name}` returns traffic to the colour last verified live, and takes no revision (each colour has its own task definitions, so \"revision {n}\" names no one thing); to run a particular version, `/deploy {name} <version>`"
            )));
        }
        let pair = self.pair(bg).await?;
        let (goal, record) = target(&pair, history, &bg.listener_arn).map_err(|why| {
            ActionError::Failed(format!(
                "no rollback: {why}; the listener forwards {}; {}; `/deploy {name} <version>` of what one colour runs sends all traffic there",
                pair.weights(),
                pair.describe(self.t.container)
            ))
        })?;
        let Some(to) = pair.by_name(&goal.colour) else {
            return Err(ActionError::Failed(format!("no colour named {} behind the listener any more", goal.colour)));
        };
        let verified = format!("verified live by {} at {}", record.request_id, record.at.format("%Y-%m-%d %H:%M UTC"));
        if to.definition.arn() != goal.task_definition {
            return Err(ActionError::Failed(format!(
                "no rollback: {} no longer runs {} ({}) that was {verified}; it runs {} ({}) now; traffic stays as it is ({})",
                to.name,
                short(&goal.task_definition),
                goal.image.as_deref().unwrap_or("?"),
                to.definition.name(),
                to.image(self.t.container),
                pair.weights()
            )));
        }
        if pair.live().is_some_and(|l| l.name == to.name) {
            return Ok(Outcome::new(format!(
                "{} is already live with {}; nothing changed",
                to.name,
                to.definition.name()
            )));
        }
        progress.report(format!("returning all traffic to {} ({verified})", goal.describe())).await;
        let arn = to.definition.arn();
        let switch = Switch {
            to,
            from: pair.other(to),
            arn: &arn,
            image: to.image(self.t.container),
            steps: vec![100],
            done: format!(
                "switched back: {} is live with {} ({verified}); listener was {}",
                to.name,
                to.definition.name(),
                pair.weights()
            ),
            previous: pair.live().map(|l| l.facts(self.t.container)),
        };
        self.switch(bg, &pair, switch, progress).await
    }
}
