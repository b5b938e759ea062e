//! `/rollback` on one ECS service: back to the task definition the audit
//! trail last verified live on it, other than the one it runs now — not
//! "revision − 1", which after a circuit-breaker rollback, a reused
//! revision or another pipeline's registrations names something nobody
//! verified. `/rollback svc N` names the revision. Refused, with the
//! reason and the family's recent revisions, when the trail knows none.

use super::definitions::{image_of, Definition};
use super::single::facts;
use super::update::Change;
use super::Ctx;
use crate::action::{ActionError, Outcome, Progress, Verified};
use tokio::time::Instant;

/// The task definition (ARN) the newest verified outcome on `service` ran,
/// among those that ran another than `current`; and that record.
fn last_verified_other<'h>(history: &'h [Verified], service: &str, current: &str) -> Option<(String, &'h Verified)> {
    history.iter().find_map(|v| {
        let live = &v.live;
        let ran = live["task_definition"].as_str()?;
        (live["backend"] == "ecs" && live["service"] == service && ran != current).then(|| (ran.to_string(), v))
    })
}

impl Ctx<'_> {
    pub(super) async fn rollback_single(
        &self,
        service: &str,
        revision: Option<u32>,
        history: &[Verified],
        progress: &Progress,
    ) -> Result<Outcome, ActionError> {
        let live = self.describe(service).await?;
        let current = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
        let target = match revision {
            Some(n) => {
                let family = current.definition.family.clone().unwrap_or_default();
                self.definition(&format!("{family}:{n}")).await?
            }
            None => self.verified_target(service, &current, history, progress).await?,
        };
        self.check_active(&target)?;
        self.check_container(&target.definition)?;
        let image = image_of(&target.definition, self.t.container).unwrap_or("?").to_string();
        if target.arn() == current.arn() {
            // Nothing written, and no facts: the last real change stays
            // what the next rollback returns from.
            return Ok(Outcome::new(format!(
                "{} already runs {} ({image}); nothing to roll back, nothing changed",
                self.t.name,
                target.name()
            )));
        }
        let arn = target.arn();
        let deadline = Instant::now() + self.t.rollout_timeout;
        let track = self.update(service, Change { arn: &arn, desired: None, force: false, deadline }, progress).await?;
        let what = format!("rollback of {} to {}", self.t.name, target.name());
        let live = self.completed(&what, service, &track, deadline, progress).await?;
        Ok(Outcome {
            summary: format!("{} rolled back to {} ({image})", self.t.name, target.name()),
            live: Some(facts(service, &live, &track, &target, self.t.container)),
        })
    }

    /// What the trail last verified live other than `current`, or a refusal
    /// that says why and what there is to choose from.
    async fn verified_target(
        &self,
        service: &str,
        current: &Definition,
        history: &[Verified],
        progress: &Progress,
    ) -> Result<Definition, ActionError> {
        let Some((arn, record)) = last_verified_other(history, service, &current.arn()) else {
            let name = self.t.name;
            return Err(ActionError::Failed(format!(
                "no rollback: opsbot's audit trail has no verified deployment of {name} other than the {} it runs now, so it cannot tell what ran before; name a revision, `/rollback {name} <revision>`{}",
                current.name(),
                self.recent_revisions(current).await
            )));
        };
        let target = self.definition(&arn).await?;
        let when = record.at.format("%Y-%m-%d %H:%M UTC");
        let by = &record.request_id;
        progress.report(format!("returning to {}, verified live by {by} at {when}", target.name())).await;
        Ok(target)
    }

    /// " (recent revisions: api:9, api:8, …)" for a refusal (best effort).
    async fn recent_revisions(&self, current: &Definition) -> String {
        let family = current.definition.family.clone().unwrap_or_default();
        let listed = self.call("ecs:ListTaskDefinitions", self.recent_definitions(&family).send()).await;
        match listed {
            Ok(out) => {
                let names: Vec<&str> =
                    out.task_definition_arns.iter().flatten().map(|arn| super::definitions::short(arn)).collect();
                format!(" (recent revisions of {family}: {})", names.join(", "))
            }
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(request: &str, service: &str, td: &str) -> Verified {
        Verified {
            request_id: request.into(),
            command: "deploy".into(),
            at: chrono::Utc::now(),
            live: serde_json::json!({"backend": "ecs", "service": service, "task_definition": td}),
        }
    }

    #[test]
    fn the_target_is_the_newest_verified_definition_other_than_the_current_one() {
        // Newest first: a deploy that reused api:2, then api:3, then api:2.
        let history = [
            verified("r-3", "api", "td/api:2"),
            verified("r-2", "api", "td/api:3"),
            verified("r-1", "api", "td/api:2"),
        ];
        assert_eq!(
            last_verified_other(&history, "api", "td/api:2").map(|(arn, v)| (arn, v.request_id.clone())),
            Some(("td/api:3".into(), "r-2".into()))
        );
        assert_eq!(last_verified_other(&history[..1], "api", "td/api:2"), None, "nothing else verified");
        assert_eq!(last_verified_other(&history, "web", "td/api:2"), None, "another service's");
    }
}
