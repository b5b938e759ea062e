//! The Slack side of [`ChatSink`]: one ordered send queue per channel, paced
//! to Slack's ~1 message/s/channel (with a small burst), honouring
//! `429 Retry-After`, retrying 5xx and network errors with backoff, splitting
//! long text. Progress of an action is one threaded message that is updated.

use super::api::{ApiError, SlackApi};
use super::blocks::{approval_card, render, split, MAX_TEXT};
use crate::approval::RequestState;
use crate::audit::{BoxFuture, Verdict};
use crate::chat::{ChatError, ChatSink, Reply};
use crate::event::ReplyTarget;
use crate::metrics::Metrics;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pacing of one channel's queue.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    pub burst: u32,
}

/// How long transient failures are retried before a message is given up.
const MAX_ATTEMPTS: u32 = 8;

/// Progress lines shown in a request's progress message (the newest).
const PROGRESS_LINES: usize = 20;

/// What opsbot follows of one request in Slack, from its card or start
/// message until it ends (outcome, or a card decided without an action).
#[derive(Default)]
struct Thread {
    card: Option<String>,
    root: Option<String>,
    progress: Option<String>,
    lines: Vec<String>,
}

struct Inner {
    api: SlackApi,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    pacing: Pacing,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<(ReplyTarget, Reply)>>>,
    threads: Mutex<HashMap<String, Thread>>,
    queued: AtomicUsize,
}

#[derive(Clone)]
pub struct SlackSink {
    inner: Arc<Inner>,
}

/// The store key linking a card message to its request (for reactions).
pub fn card_link(channel: &str, ts: &str) -> String {
    format!("slack:card:{channel}:{ts}")
}

impl Inner {
    /// Runs `f` on the followed threads and publishes how many there are.
    fn with_threads<R>(&self, f: impl FnOnce(&mut HashMap<String, Thread>) -> R) -> R {
        let mut threads = self.threads.lock().expect("threads lock");
        let result = f(&mut threads);
        self.metrics.slack_threads.store(threads.len() as u64, Ordering::Relaxed);
        result
    }
}

impl SlackSink {
    pub fn new(api: SlackApi, store: Arc<dyn Store>, metrics: Arc<Metrics>, pacing: Pacing) -> SlackSink {
        SlackSink {
            inner: Arc::new(Inner {
                api,
                store,
                metrics,
                pacing,
                queues: Mutex::new(HashMap::new()),
                threads: Mutex::new(HashMap::new()),
                queued: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits until every queued message is delivered (or given up), at most `limit`.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.inner.queued.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn queue_for(&self, channel: &str) -> mpsc::UnboundedSender<(ReplyTarget, Reply)> {
        let mut queues = self.inner.queues.lock().expect("queue lock");
        if let Some(tx) = queues.get(channel).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(channel.to_string(), tx.clone());
        tokio::spawn(run_queue(self.inner.clone(), channel.to_string(), rx));
        tx
    }
}

impl ChatSink for SlackSink {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        let result = match target.channel.strip_prefix("slack:") {
            Some(channel) => {
                self.inner.queued.fetch_add(1, Ordering::SeqCst);
                self.queue_for(channel).send((target.clone(), reply)).map_err(|_| {
                    self.inner.queued.fetch_sub(1, Ordering::SeqCst);
                    ChatError::Delivery("the Slack send queue stopped".into())
                })
            }
            None => Err(ChatError::Delivery(format!("{} is not a Slack channel", target.channel))),
        };
        Box::pin(async move { result })
    }
}

/// One channel's worker: replies in order, paced.
async fn run_queue(inner: Arc<Inner>, channel: String, mut rx: mpsc::UnboundedReceiver<(ReplyTarget, Reply)>) {
    // Generic cell rate: `tat` is when the next call would be due at the steady rate.
    let mut tat = Instant::now();
    while let Some((target, reply)) = rx.recv().await {
        let mut ctx = Delivery { inner: &inner, channel: &channel, tat: &mut tat };
        if let Err(e) = ctx.deliver(&target, reply).await {
            tracing::error!(channel = %channel, error = %e, "Slack message given up");
        }
        inner.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Delivery<'a> {
    inner: &'a Inner,
    channel: &'a str,
    tat: &'a mut Instant,
}

impl Delivery<'_> {
    async fn pace(&mut self) {
        let Pacing { interval, burst } = self.inner.pacing;
        let now = Instant::now();
        if *self.tat < now {
            *self.tat = now;
        }
        let allowance = interval * burst.saturating_sub(1);
        if *self.tat > now + allowance {
            tokio::time::sleep_until(*self.tat - allowance).await;
        }
        *self.tat += interval;
    }

    /// Runs one API call until it succeeds, is refused for good, or runs out of attempts.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            self.pace().await;
            match call().await {
                Ok(value) => return Ok(value),
                Err(ApiError::RateLimited(after)) => {
                    // Rate limits delay; they never drop a message.
                    self.inner.metrics.slack_rate_limited.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or(Duration::from_secs(1));
                    tracing::warn!(channel = %self.channel, ?wait, "Slack rate limit; waiting");
                    tokio::time::sleep(wait).await;
                }
                Err(ApiError::Transient(e)) if attempt + 1 < MAX_ATTEMPTS => {
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(7)));
                    tracing::warn!(channel = %self.channel, error = %e, ?backoff, "Slack call failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn remember_card(&self, request_id: &str, ts: &str) {
        let link = format!("{} {ts}", self.channel);
        if let Err(e) = self
            .inner
            .store
            .link(&card_link(self.channel, ts), request_id)
            .and_then(|_| self.inner.store.link(&format!("slack:card-of:{request_id}"), &link))
        {
            tracing::warn!(error = %e, "card link not stored; reactions to it will not count after a restart");
        }
        self.inner.with_threads(|t| t.entry(request_id.to_string()).or_default().card = Some(ts.to_string()));
    }

    /// The card's message, from memory or (after a restart) from the store.
    fn card_of(&self, request_id: &str) -> Option<String> {
        if let Some(ts) = self.inner.with_threads(|t| t.get(request_id).and_then(|t| t.card.clone())) {
            return Some(ts);
        }
        self.stored_card_of(request_id)
    }

    /// The card's message as stored, for requests memory knows nothing of.
    fn stored_card_of(&self, request_id: &str) -> Option<String> {
        let stored = self.inner.store.resolve(&format!("slack:card-of:{request_id}")).ok().flatten()?;
        let (channel, ts) = stored.split_once(' ')?;
        (channel == self.channel).then(|| ts.to_string())
    }

    async fn post_text(&mut self, thread: Option<&str>, text: &str) -> Result<Option<String>, ApiError> {
        let api = self.inner.api.clone();
        let channel = self.channel.to_string();
        let mut first = None;
        for chunk in split(&render(text), MAX_TEXT) {
            let ts = self.call(|| api.post(&channel, thread, &chunk, None)).await?;
            first.get_or_insert(ts);
        }
        Ok(first)
    }

    async fn deliver(&mut self, target: &ReplyTarget, reply: Reply) -> Result<(), ApiError> {
        let api = self.inner.api.clone();
        let channel = self.channel.to_string();
        let thread = target.thread.as_deref();
        match reply {
            Reply::Text(text) => {
                self.post_text(thread, &text).await?;
            }
            Reply::Private { to, text } => {
                let Some(user) = to.as_str().strip_prefix("slack:") else { return Ok(()) };
                for chunk in split(&render(&text), MAX_TEXT) {
                    self.call(|| api.ephemeral(&channel, user, thread, &chunk)).await?;
                }
            }
            Reply::Approval(view) => {
                let (text, blocks) = approval_card(&view);
                let ts = self.call(|| api.post(&channel, thread, &text, Some(&blocks))).await?;
                self.remember_card(&view.id, &ts);
            }
            Reply::ApprovalUpdate(view) => {
                let (text, blocks) = approval_card(&view);
                match self.card_of(&view.id) {
                    Some(ts) => self.call(|| api.update(&channel, &ts, &text, Some(&blocks))).await?,
                    None => {
                        let ts = self.call(|| api.post(&channel, thread, &text, Some(&blocks))).await?;
                        self.remember_card(&view.id, &ts);
                    }
                }
                // Denied, withdrawn, expired, invalidated: no action follows,
                // so nothing more will be said in this thread.
                if !matches!(view.state, RequestState::Pending | RequestState::Approved) {
                    self.inner.with_threads(|t| t.remove(&view.id));
                }
            }
            Reply::Started { request_id, text } => {
                let card = self.card_of(&request_id);
                let root_thread = card.as_deref().or(thread);
                let ts = self.post_text(root_thread, &text).await?;
                let root = root_thread.map(str::to_string).or(ts);
                self.inner.with_threads(|t| t.entry(request_id).or_default().root = root);
            }
            Reply::Progress { request_id, text } => {
                let (root, progress, body) = self.inner.with_threads(|t| {
                    let state = t.entry(request_id.clone()).or_default();
                    state.lines.push(text);
                    let old = state.lines.len().saturating_sub(PROGRESS_LINES);
                    state.lines.drain(..old);
                    (state.root.clone().or(state.card.clone()), state.progress.clone(), state.lines.join("\n"))
                });
                match progress {
                    Some(ts) => self.call(|| api.update(&channel, &ts, &body, None)).await?,
                    None => {
                        // After a restart the thread is known only from the stored card.
                        let root = root.or_else(|| self.stored_card_of(&request_id)).or(thread.map(str::to_string));
                        let ts = self.call(|| api.post(&channel, root.as_deref(), &body, None)).await?;
                        self.inner.with_threads(|t| t.entry(request_id).or_default().progress = Some(ts));
                    }
                }
            }
            Reply::Outcome { request_id, verdict, text } => {
                let followed = self.inner.with_threads(|t| t.remove(&request_id));
                // After a restart the thread is known only from the stored card.
                let root = followed.and_then(|f| f.root.or(f.card)).or_else(|| self.stored_card_of(&request_id));
                let mark = match verdict {
                    Verdict::Succeeded => ":white_check_mark:",
                    Verdict::Unknown => ":grey_question:",
                    _ => ":x:",
                };
                self.post_text(root.as_deref().or(thread), &format!("{mark} {request_id}: {text}")).await?;
            }
        }
        Ok(())
    }
}
