//! Display names from `users.info`, cached, so audit records can say who
//! acted in words (item 8 of the Slack issue). Chat messages keep using
//! `<@U…>` mentions, which Slack renders with each person's current name.
//!
//! Names live in the engine's [`DisplayNames`] registry; this module only
//! remembers when it last asked Slack about each person. A lookup happens at
//! most once an hour per person (once per five minutes while Slack has no
//! name for them), so the ack path almost always skips it; a first lookup
//! waits at most [`LOOKUP_TIMEOUT`].

use super::api::SlackApi;
use crate::event::Actor;
use crate::names::DisplayNames;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FOUND_FOR: Duration = Duration::from_secs(60 * 60);
const MISSING_FOR: Duration = Duration::from_secs(5 * 60);
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Most people remembered; past that the lookup times start over.
const MAX_CACHED: usize = 10_000;

pub struct SlackNames {
    api: SlackApi,
    names: Arc<DisplayNames>,
    looked_up: Mutex<HashMap<String, Instant>>,
}

impl SlackNames {
    pub fn new(api: SlackApi, names: Arc<DisplayNames>) -> SlackNames {
        SlackNames { api, names, looked_up: Mutex::new(HashMap::new()) }
    }

    /// Makes sure the registry has a recent name for `actor` (`slack:U…`),
    /// asking Slack when the last lookup is too old.
    pub async fn refresh(&self, actor: &Actor) {
        let Some(user) = actor.id_on(crate::event::Platform::Slack) else { return };
        if let Some(at) = self.looked_up.lock().expect("names lock").get(user) {
            let fresh_for = if self.names.get(actor.as_str()).is_some() { FOUND_FOR } else { MISSING_FOR };
            if at.elapsed() < fresh_for {
                return;
            }
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.display_name(user)).await {
            Ok(Ok(Some(name))) => self.names.set(actor, &name),
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "users.info failed; the audit trail shows the user id only"),
        }
        let mut looked_up = self.looked_up.lock().expect("names lock");
        if looked_up.len() >= MAX_CACHED {
            looked_up.clear();
        }
        looked_up.insert(user.to_string(), Instant::now());
    }
}
