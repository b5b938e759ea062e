//! Exponential backoff with jitter, for every backend's retries: each wait is
//! drawn from the upper half of a window that doubles up to a cap, so clients
//! retrying the same server spread out instead of arriving together.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    window: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { window: Duration::from_millis(100), cap: Duration::from_secs(5) }
    }
}

impl Backoff {
    pub fn next_wait(&mut self) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(self.cap);
        let half = window / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_a_cap() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(5)), "{waits:?}");
        let mut other = Backoff::default();
        let again: Vec<Duration> = (0..10).map(|_| other.next_wait()).collect();
        assert_ne!(waits, again, "jitter: two clients do not wait in lockstep");
    }
}
