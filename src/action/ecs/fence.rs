//! The leader's term as a fencing token on ECS writes (PostgreSQL store,
//! several replicas). Before each `UpdateService` and each listener move in a
//! term, the services involved are read with their tags: a tag
//! `opsbot:term:N` with N newer than this term refuses the write; else the
//! service gets this term's tag `opsbot:term:<term>` (if not yet) and loses
//! older terms' tags. A new leader tags the services of the actions it
//! records as interrupted ([`Ecs::fence`](super::Ecs)).
//!
//! One tag key per term, because `TagResource` is last-writer-wins on a key:
//! a deposed leader tagging after its successor adds its own, older key and
//! never removes the newer one, so its next write is refused. (Only older
//! keys are ever removed.)
//!
//! ECS has no conditional write, so the check and the write are two calls:
//! a deposed leader stopped exactly between them could still land one write
//! (it stops within seconds of losing its lock). Kubernetes writes are
//! conditional (see `kubernetes::fence`).
//!
//! On sled there is one process and no term: nothing is read or tagged.

use super::call::AwsError;
use super::Ctx;
use crate::action::backoff::Backoff;
use crate::action::ActionError;
use aws_sdk_ecs::types::{ServiceField, Tag};
use std::future::Future;

/// What every term's tag key starts with.
pub const TERM_TAG: &str = "opsbot:term:";

/// Tries at each call a fence makes (transient failures: throttling, 5xx,
/// a timeout; reads and tags are safe to repeat).
const TRIES: u32 = 4;

/// The terms in a service's tag keys.
fn terms(tags: &[Tag]) -> Vec<u64> {
    tags.iter().filter_map(|t| t.key.as_deref()?.strip_prefix(TERM_TAG)?.parse().ok()).collect()
}

impl Ctx<'_> {
    /// In a term: refuses when a newer term wrote `service`, else tags it
    /// with this term (if not yet). Without a term: nothing.
    pub(super) async fn fenced(&self, service: &str) -> Result<(), ActionError> {
        match self.t.term {
            Some(term) => self.stamp(service, term).await.map(drop),
            None => Ok(()),
        }
    }

    /// `call` again on a transient failure, a few times.
    async fn again<T, F, Fut>(&self, mut call: F) -> Result<T, ActionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let mut backoff = Backoff::default();
        let mut tries = 0;
        loop {
            tries += 1;
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if e.failure.is_transient() && tries < TRIES => tokio::time::sleep(backoff.next_wait()).await,
                Err(e) => return Err(e.into_action(self)),
            }
        }
    }

    /// Tags `service` with `term` unless it carries that already; refused
    /// when it carries a newer one. Says what it did.
    pub(super) async fn stamp(&self, service: &str, term: u64) -> Result<String, ActionError> {
        let described = self
            .again(|| {
                let request =
                    self.ecs.describe_services().cluster(self.t.cluster).services(service).include(ServiceField::Tags);
                self.call("ecs:DescribeServices", request.send())
            })
            .await?;
        let live = described.services.unwrap_or_default().into_iter().next().ok_or_else(|| {
            ActionError::Failed(format!(
                "unknown ECS service `{service}` in cluster `{}`, region {}",
                self.t.cluster, self.region
            ))
        })?;
        let held = terms(live.tags.as_deref().unwrap_or_default());
        if let Some(newer) = held.iter().copied().filter(|t| *t > term).max() {
            return Err(ActionError::Failed(format!(
                "refused: ECS service {service} was written by opsbot's leader in term {newer}, after this replica's term {term}; this replica no longer leads, and nothing was changed"
            )));
        }
        if held.contains(&term) {
            return Ok(format!("ECS service {service} already carries term {term}"));
        }
        let arn = live.service_arn.unwrap_or_default();
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let tag = Tag::builder().key(format!("{TERM_TAG}{term}")).value(since).build();
        self.again(|| {
            self.call("ecs:TagResource", self.ecs.tag_resource().resource_arn(&arn).tags(tag.clone()).send())
        })
        .await?;
        // Older terms' keys go (never a newer one's); left behind, they only
        // count towards the service's 50 tags.
        let older: Vec<String> = held.iter().map(|t| format!("{TERM_TAG}{t}")).collect();
        if !older.is_empty() {
            let untag = self.ecs.untag_resource().resource_arn(&arn).set_tag_keys(Some(older));
            if let Err(e) = self.call("ecs:UntagResource", untag.send()).await {
                tracing::warn!(service, error = %e.explain(self), "older term tags not removed");
            }
        }
        Ok(format!("ECS service {service} now carries term {term}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_term_keys_count() {
        let tag = |k: &str| Tag::builder().key(k).value("v").build();
        let tags = [tag("opsbot:term:3"), tag("opsbot:term:12"), tag("opsbot:term:x"), tag("team"), tag("opsbot:term")];
        assert_eq!(terms(&tags), [3, 12]);
    }
}
