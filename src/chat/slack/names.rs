//! Display names from `users.info`, cached, so audit records can say who
//! acted in words (item 8 of the Slack issue). Chat messages keep using
//! `<@U…>` mentions, which Slack renders with each person's current name.
//!
//! A lookup happens at most once an hour per person (once per five minutes
//! after a failure), so the ack path almost always finds the name in memory;
//! a first lookup waits at most [`LOOKUP_TIMEOUT`].

use super::api::SlackApi;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FOUND_FOR: Duration = Duration::from_secs(60 * 60);
const MISSING_FOR: Duration = Duration::from_secs(5 * 60);
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Most people remembered; past that the cache starts over.
const MAX_CACHED: usize = 10_000;

pub struct SlackNames {
    api: SlackApi,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl SlackNames {
    pub fn new(api: SlackApi) -> SlackNames {
        SlackNames { api, cache: Mutex::new(HashMap::new()) }
    }

    /// The display name of Slack user `user` (`U…`), from the cache or Slack.
    pub async fn name(&self, user: &str) -> Option<String> {
        if let Some((name, at)) = self.cache.lock().expect("names lock").get(user) {
            let fresh_for = if name.is_some() { FOUND_FOR } else { MISSING_FOR };
            if at.elapsed() < fresh_for {
                return name.clone();
            }
        }
        let name = match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.display_name(user)).await {
            Ok(Ok(name)) => name,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "users.info failed; the audit trail shows the user id only");
                None
            }
            Err(_) => None,
        };
        let mut cache = self.cache.lock().expect("names lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(user.to_string(), (name.clone(), Instant::now()));
        name
    }
}
