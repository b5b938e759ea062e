//! Every background task of a running bot, tracked: each is spawned here
//! with a name, shutdown cancels them and waits for them to end, and a task
//! that panics — or a loop that ends while the bot still runs — is logged
//! and makes `/health/ready` false, instead of silently taking a piece of
//! the bot with it. A panic while handling one request (one Slack payload)
//! takes nothing else with it: it is logged, counted
//! (`opsbot_request_panics_total`), and makes readiness false for
//! [`REQUEST_PANIC_UNREADY`], so one bad request cannot take the bot out of
//! rotation for good, while a bug hit again and again keeps it out.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which tasks died. Read by readiness.
#[derive(Default, Debug)]
pub struct Health {
    dead: Mutex<Vec<String>>,
    request_panics: AtomicU64,
    last_request_panic: Mutex<Option<(std::time::Instant, String)>>,
}

/// How long readiness stays false after a request handler panicked.
pub const REQUEST_PANIC_UNREADY: Duration = Duration::from_secs(60);

impl Health {
    /// Names of the tasks that died, with how.
    pub fn dead(&self) -> Vec<String> {
        self.dead.lock().expect("health lock").clone()
    }

    /// How many request handlers panicked.
    pub fn request_panics(&self) -> u64 {
        self.request_panics.load(Ordering::Relaxed)
    }

    /// The last request handler panic, if it came within `within`.
    pub fn recent_request_panic(&self, within: Duration) -> Option<String> {
        let last = self.last_request_panic.lock().expect("health lock");
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(at, what)| format!("a request handler panicked {}s ago: {what}", at.elapsed().as_secs()))
    }

    pub(crate) fn request_panicked(&self, name: &str, panic: &Box<dyn std::any::Any + Send>) {
        let what = format!("{name}: {}", panic_text(panic));
        tracing::error!(task = name, panic = %panic_text(panic), "a request handler panicked (a bug); the request got no answer");
        self.request_panics.fetch_add(1, Ordering::Relaxed);
        *self.last_request_panic.lock().expect("health lock") = Some((std::time::Instant::now(), what));
    }

    /// Records a death (the first 20 are kept word for word, then a count).
    pub fn mark_dead(&self, what: String) {
        let mut dead = self.dead.lock().expect("health lock");
        match dead.len() {
            0..20 => dead.push(what),
            20 => dead.push("more tasks died; see the log".into()),
            _ => {}
        }
    }
}

/// The bot's tasks.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    health: Arc<Health>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks { tracker: TaskTracker::new(), stop: CancellationToken::new(), health: Arc::new(Health::default()) }
    }
}

impl Tasks {
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Cancelled when the bot stops: loops select on it and end.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// A task that ends by itself (a connection, a send). A panic is logged
    /// and marks the bot unready.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let health = self.health.clone();
        self.tracker.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                let what = format!("{name} panicked: {}", panic_text(&panic));
                tracing::error!(task = name, "{what}");
                health.mark_dead(what);
            }
        });
    }

    /// Handles one request on its own tracked task, detached from whoever
    /// awaits the returned handle: if that caller goes away (an HTTP client
    /// that hung up, a socket session that ended), the work still runs to
    /// its end. `None` if it panicked (logged and counted; the bot stays
    /// ready).
    pub fn request<T, F>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<Option<T>>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let health = self.health.clone();
        self.tracker.spawn(async move {
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(value) => Some(value),
                Err(panic) => {
                    health.request_panicked(name, &panic);
                    None
                }
            }
        })
    }

    /// A loop that must run until the bot stops: it gets the stop token; if
    /// it returns (or panics) before the bot stops, that is logged and marks
    /// the bot unready.
    pub fn spawn_loop<F, Fut>(&self, name: &'static str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        let health = self.health.clone();
        let task = run(stop.clone());
        self.tracker.spawn(async move {
            let result = AssertUnwindSafe(task).catch_unwind().await;
            let what = match result {
                Err(panic) => format!("{name} panicked: {}", panic_text(&panic)),
                Ok(()) if !stop.is_cancelled() => format!("{name} stopped while the bot runs"),
                Ok(()) => return,
            };
            tracing::error!(task = name, "{what}");
            health.mark_dead(what);
        });
    }

    /// Cancels every loop and waits up to `grace` for all tasks to end;
    /// returns false if some were still running.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// The message a panic carried, if it carried text.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_or_a_loop_that_ends_early_marks_the_bot_unready() {
        let tasks = Tasks::default();
        tasks.spawn("fine", async {});
        tasks.spawn_loop("ticker", |stop| async move { stop.cancelled().await });
        assert!(tasks.health().dead().is_empty());
        tasks.spawn("sender", async { panic!("boom") });
        tasks.spawn_loop("socket", |_| async {});
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dead = tasks.health().dead();
        assert!(dead.contains(&"sender panicked: boom".to_string()), "{dead:?}");
        assert!(dead.contains(&"socket stopped while the bot runs".to_string()), "{dead:?}");
        assert!(tasks.shutdown(Duration::from_secs(1)).await, "the ticker ends when the bot stops");
        assert_eq!(tasks.health().dead().len(), 2, "an orderly stop is not a death");
    }

    #[tokio::test]
    async fn a_panicking_request_is_counted_and_leaves_the_bot_ready() {
        let tasks = Tasks::default();
        assert_eq!(tasks.request("request", async { 7 }).await.unwrap(), Some(7));
        let panicked: Option<()> = tasks.request("request", async { panic!("bad payload") }).await.unwrap();
        assert_eq!(panicked, None, "the caller learns it had no answer");
        assert_eq!(tasks.health().request_panics(), 1);
        assert!(tasks.health().dead().is_empty(), "one bad request does not make the bot unready for good");
        let recent = tasks.health().recent_request_panic(REQUEST_PANIC_UNREADY);
        assert!(recent.is_some_and(|r| r.contains("bad payload")), "but for a while");
        assert_eq!(tasks.health().recent_request_panic(Duration::ZERO), None, "and then no more");
    }
}
