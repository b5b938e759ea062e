//! `/deploy`: set the configured container's image and watch the rollout this
//! request started. Success only when that rollout completes with the image
//! set; a rollout another writer took over is reported as superseded, one
//! that cannot be read as unknown. Automatic rollback (when configured)
//! follows only a real rollout failure, and its own failure never hides the
//! deploy's: the message says both, and what runs now.

use super::fence::Kind;
use super::rollout::{describe_live, Expect, WatchEnd};
use super::undo::Undo;
use super::write::settle;
use super::CHANGE_CAUSE;
use super::{check_container, image_in, live_facts, refuse_if_paused, revision_of, template_of, Kubernetes, Target};
use crate::action::{ActionError, Outcome, Progress, RunContext};
use serde_json::json;
use tokio::time::Instant;

impl Kubernetes {
    pub(super) async fn deploy(
        &self,
        t: &Target<'_>,
        version: &str,
        context: &RunContext,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let image = format!("{}:{version}", t.image);
        let before = self.read_now(t).await?;
        check_container(t, &before)?;
        refuse_if_paused(t, &before, "deploy")?;
        if image_in(template_of(&before), t.container).as_deref() == Some(image.as_str()) {
            progress.report(format!("{}: {} already has {image}; checking its rollout", t.service, t.path())).await;
            let end = self.watch(t, &Expect::template_of(&before), deadline, progress).await;
            let d = settle(t, &format!("deploy of {image}"), end)?;
            return Ok(Outcome {
                summary: format!("{} already runs {image}; nothing changed ({})", t.service, describe_live(t, &d)),
                live: Some(live_facts(t, &d)),
            });
        }
        let before_revision = revision_of(before.metadata.annotations.as_ref());
        let cause = format!("opsbot {}: deploy {version} requested by {}", context.request_id, context.requester);
        let patch = json!({
            "metadata": {"annotations": {CHANGE_CAUSE: cause}},
            "spec": {"template": {"spec": {"containers": [{"name": t.container, "image": image}]}}}
        });
        let api = self.deployments(t).await?;
        let written = self
            .write(
                t,
                &format!("deploy of {image}"),
                deadline,
                || self.patch(t, &api, Kind::Strategic, &patch),
                |d| {
                    image_in(template_of(d), t.container).as_deref() == Some(image.as_str())
                        && d.metadata.annotations.as_ref().and_then(|a| a.get(CHANGE_CAUSE)) == Some(&cause)
                },
                progress,
            )
            .await?;
        progress.report(format!("{}: image set to {image}; watching the rollout", t.service)).await;
        let end = self.watch(t, &Expect::template_of(&written.deployment()), deadline, progress).await;
        self.deployed(t, &image, end, before_revision, progress).await
    }

    /// The outcome of the deploy's rollout.
    async fn deployed(
        &self,
        t: &Target<'_>,
        image: &str,
        end: WatchEnd,
        before_revision: Option<u64>,
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        match end {
            WatchEnd::Complete(d) => Ok(Outcome {
                summary: format!(
                    "{} runs {image} (revision {})",
                    t.service,
                    revision_of(d.metadata.annotations.as_ref()).unwrap_or(0)
                ),
                live: Some(live_facts(t, &d)),
            }),
            WatchEnd::Superseded(by) => Err(ActionError::Failed(format!(
                "deploy of {image} did not finish: {by}; opsbot leaves that change alone"
            ))),
            WatchEnd::Unreadable(why) => Err(ActionError::Unknown(format!(
                "deploy of {image} was applied, but its rollout could not be read until the deadline ({why}); nothing was rolled back; check deployment {}",
                t.path()
            ))),
            // Slow is not failed: no automatic rollback of a rollout that may
            // still complete.
            WatchEnd::StillRolling(why) => Err(ActionError::Unknown(format!(
                "deploy of {image} was applied: {why}; nothing was rolled back; check deployment {}",
                t.path()
            ))),
            WatchEnd::Failed(why) => Err(self.after_failed_deploy(t, image, &why, before_revision, progress).await),
        }
    }

    /// The deploy's rollout failed: roll back if configured, and say all of
    /// it — why the deploy failed, how the rollback went, what runs now. The
    /// rollback has its own deadline (`rollout_timeout` from its start). When
    /// where the rollback stands cannot be known, neither can what runs: the
    /// outcome is then `unknown`, never "failed too".
    async fn after_failed_deploy(
        &self,
        t: &Target<'_>,
        image: &str,
        why: &str,
        before_revision: Option<u64>,
        progress: &Progress,
    ) -> ActionError {
        let failed = format!("deploy of {image} failed: {why}");
        if !t.auto_rollback {
            return ActionError::Failed(format!("{failed}; `/rollback {}` restores the previous revision", t.service));
        }
        let Some(revision) = before_revision else {
            return ActionError::Failed(format!(
                "{failed}; no automatic rollback: the revision it replaced is not recorded; {}",
                self.live_now(t).await
            ));
        };
        progress.report(format!("{}: deploy failed ({why}); rolling back automatically", t.service)).await;
        let deadline = Instant::now() + t.rollout_timeout;
        let undone = self.undo(t, Some(revision), deadline, progress).await.map(|undo| match undo {
            Undo::Restored { revision, expect } => (revision, *expect),
            // The deploy's own template is revision `revision`'s: follow it.
            Undo::AlreadyThere { revision, live } => (revision, Expect::template_of(&live)),
        });
        let rollback = match undone {
            Ok((restored, expect)) => match self.watch(t, &expect, deadline, progress).await {
                WatchEnd::Complete(d) => {
                    return ActionError::Failed(format!(
                        "{failed}; rolled back automatically to revision {restored}: {}",
                        describe_live(t, &d)
                    ))
                }
                WatchEnd::Failed(w) => {
                    Rollback::Failed(format!("the automatic rollback to revision {restored} failed too: {w}"))
                }
                WatchEnd::Superseded(by) => {
                    Rollback::Failed(format!("the automatic rollback to revision {restored} was {by}"))
                }
                WatchEnd::StillRolling(w) => {
                    Rollback::Unknown(format!("the automatic rollback to revision {restored} was applied: {w}"))
                }
                WatchEnd::Unreadable(w) => Rollback::Unknown(format!(
                    "the automatic rollback to revision {restored} was applied but could not be watched ({w})"
                )),
            },
            Err(ActionError::Unknown(e)) => Rollback::Unknown(format!(
                "the automatic rollback to revision {revision} may or may not have been applied ({e})"
            )),
            Err(e) => Rollback::Failed(format!("the automatic rollback to revision {revision} failed too: {e}")),
        };
        let now = self.live_now(t).await;
        match rollback {
            Rollback::Failed(text) => ActionError::Failed(format!("{failed}; {text}; {now}")),
            Rollback::Unknown(text) => ActionError::Unknown(format!("{failed}; {text}; {now}")),
        }
    }
}

/// How an automatic rollback that did not complete ended.
enum Rollback {
    /// It failed, or another writer took over: what runs is what was read.
    Failed(String),
    /// Whether it took effect, or will, cannot be told.
    Unknown(String),
}
