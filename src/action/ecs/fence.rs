//! The leader's term as a fencing token on ECS writes (PostgreSQL store,
//! several replicas). Before each `UpdateService` and each listener move in a
//! term, the services involved are read with their tags: one an opsbot
//! leader of a newer term tagged (`opsbot:term`) refuses the write; else it
//! is tagged with this term. A new leader tags the services of the actions
//! it records as interrupted ([`Ecs::fence`](super::Ecs)).
//!
//! ECS has no conditional write, so the check and the write are two calls:
//! a deposed leader stopped exactly between them could still land one write
//! (it stops within a second of losing its lock). Kubernetes writes are
//! conditional (see `kubernetes::fence`).
//!
//! On sled there is one process and no term: nothing is read or tagged.

use super::Ctx;
use crate::action::ActionError;
use aws_sdk_ecs::types::{ServiceField, Tag};

/// The tag holding the term of the opsbot leader that last wrote the service.
pub const TERM_TAG: &str = "opsbot:term";

impl Ctx<'_> {
    /// In a term: refuses when a newer term wrote `service`, else tags it
    /// with this term (if not yet). Without a term: nothing.
    pub(super) async fn fenced(&self, service: &str) -> Result<(), ActionError> {
        match self.t.term {
            Some(term) => self.stamp(service, term).await.map(drop),
            None => Ok(()),
        }
    }

    /// Tags `service` with `term` unless it carries that or a newer one
    /// (newer: refused). Says what it did.
    pub(super) async fn stamp(&self, service: &str, term: u64) -> Result<String, ActionError> {
        let request =
            self.ecs.describe_services().cluster(self.t.cluster).services(service).include(ServiceField::Tags);
        let out = self.ask("ecs:DescribeServices", request.send()).await?;
        let live = out.services.unwrap_or_default().into_iter().next().ok_or_else(|| {
            ActionError::Failed(format!(
                "unknown ECS service `{service}` in cluster `{}`, region {}",
                self.t.cluster, self.region
            ))
        })?;
        let held = live
            .tags
            .iter()
            .flatten()
            .find(|t| t.key.as_deref() == Some(TERM_TAG))
            .and_then(|t| t.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        match held {
            Some(newer) if newer > term => Err(ActionError::Failed(format!(
                "refused: ECS service {service} was written by opsbot's leader in term {newer}, after this replica's term {term}; this replica no longer leads, and nothing was changed"
            ))),
            Some(same) if same == term => Ok(format!("ECS service {service} already carries term {term}")),
            _ => {
                let arn = live.service_arn.unwrap_or_default();
                let tag = Tag::builder().key(TERM_TAG).value(term.to_string()).build();
                self.ask("ecs:TagResource", self.ecs.tag_resource().resource_arn(arn).tags(tag).send()).await?;
                Ok(format!("ECS service {service} now carries term {term}"))
            }
        }
    }
}
