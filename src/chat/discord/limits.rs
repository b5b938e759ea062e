//! Discord's rate limits as opsbot keeps them (see [`super::api`]):
//! per-route buckets from the `X-RateLimit-*` headers Discord sends, the
//! global limit of 50 calls a second (interaction routes exempt), and what
//! a 429 says to wait.

use reqwest::header::HeaderMap;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Discord's global limit: 50 calls a second per bot.
const GLOBAL_INTERVAL: Duration = Duration::from_millis(20);
const GLOBAL_BURST: u32 = 50;
/// Buckets remembered (oldest forgotten first); also the bound of the
/// client's other per-channel and per-user tables.
pub(super) const MAX_BUCKETS: usize = 4096;

#[derive(Default)]
pub(super) struct Limits {
    /// Generic cell rate for the global limit: when the next call is due.
    global_tat: Option<Instant>,
    /// After a global 429: nothing is sent before this.
    global_until: Option<Instant>,
    /// Route → (calls left, when it refills).
    buckets: HashMap<String, (u64, Instant)>,
    order: VecDeque<String>,
}

impl Limits {
    /// How long a call on `route` must wait now (and takes its global slot
    /// when it need not).
    pub(super) fn wait(&mut self, route: &str, now: Instant) -> Option<Duration> {
        let global = !exempt(route);
        if let Some(until) = self.global_until.filter(|u| global && *u > now) {
            return Some(until - now);
        }
        if let Some((0, reset)) = self.buckets.get(route).copied().filter(|(_, reset)| *reset > now) {
            return Some(reset - now);
        }
        if global {
            let tat = self.global_tat.unwrap_or(now).max(now);
            let allowance = GLOBAL_INTERVAL * (GLOBAL_BURST - 1);
            if tat > now + allowance {
                return Some(tat - allowance - now);
            }
            self.global_tat = Some(tat + GLOBAL_INTERVAL);
        }
        // Spend one call of the bucket until Discord says how many are left.
        if let Some((left, _)) = self.buckets.get_mut(route) {
            *left = left.saturating_sub(1);
        }
        None
    }

    pub(super) fn learn(&mut self, route: &str, headers: &HeaderMap, now: Instant) {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        // A callback is made once per interaction, and an interaction's
        // webhook lives 15 minutes: their buckets would only push channel
        // buckets out of the table (a 429 on them is still remembered).
        if exempt(route) {
            return;
        }
        if let (Some(left), Some(after)) = (number("x-ratelimit-remaining"), number("x-ratelimit-reset-after")) {
            let reset = now + Duration::from_secs_f64(after.clamp(0.0, 3600.0));
            self.remember(route, (left.max(0.0) as u64, reset));
        }
    }

    pub(super) fn limited(&mut self, route: &str, wait: Duration, global: bool, now: Instant) {
        if global {
            self.global_until = Some(now + wait);
        } else {
            self.remember(route, (0, now + wait));
        }
    }

    /// Sets a bucket, forgetting the oldest past [`MAX_BUCKETS`].
    fn remember(&mut self, route: &str, bucket: (u64, Instant)) {
        if self.buckets.insert(route.to_string(), bucket).is_none() {
            self.order.push_back(route.to_string());
            while self.order.len() > MAX_BUCKETS {
                if let Some(old) = self.order.pop_front() {
                    self.buckets.remove(&old);
                }
            }
        }
    }
}

/// Calls outside the global limit: Discord does not count interaction
/// callbacks and webhooks against it.
fn exempt(route: &str) -> bool {
    route.starts_with("POST /interactions/") || route.contains(" /webhooks/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_bucket_waits_for_its_reset_and_the_global_limit_paces() {
        let now = Instant::now();
        let mut limits = Limits::default();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset-after", "1.5".parse().unwrap());
        limits.learn("POST /channels/1/messages", &headers, now);
        assert_eq!(limits.wait("POST /channels/1/messages", now), Some(Duration::from_millis(1500)));
        // Another channel's bucket is not held up.
        assert_eq!(limits.wait("POST /channels/2/messages", now), None);
        // 49 more go at once (50 in all); the next waits its slot.
        for _ in 0..49 {
            assert_eq!(limits.wait("GET /x", now), None);
        }
        assert!(limits.wait("GET /x", now).is_some());
        // A global 429 holds every route.
        let mut limits = Limits::default();
        limits.limited("POST /channels/1/messages", Duration::from_secs(2), true, now);
        assert_eq!(limits.wait("GET /y", now), Some(Duration::from_secs(2)));
        assert_eq!(limits.wait("GET /y", now + Duration::from_secs(3)), None);
    }
}
