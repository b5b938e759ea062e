//! The Slack side of [`ChatSink`]: bounded, ordered send queues per channel.
//!
//! Each channel has two lanes, each a bounded queue worked by one tracked task:
//! - **posts** (`chat.postMessage`: texts, cards, start and outcome messages,
//!   a request's first progress message), in order, paced to Slack's ~1
//!   message/s per channel (`channel_interval`, `channel_burst`);
//! - **fast** (`chat.postEphemeral` and `chat.update` of a message whose `ts` is
//!   known): private notes and in-place updates are rated separately by
//!   Slack, so they never wait behind the channel's posts.
//!
//! When a lane is full: approval cards, card updates, start and outcome
//! messages wait for room (backpressure on whoever sends them; they are never
//! dropped); plain texts and private notes are dropped and counted
//! (`opsbot_slack_dropped_total`); a request's progress never takes more than
//! one place — new lines are folded into the message already waiting. A 429
//! waits `Retry-After` and tries again (until shutdown); 5xx and network
//! errors are retried with backoff, then given up and counted. A lane idle
//! for `channel_idle` ends, so a bot that has seen a thousand channels does
//! not keep a thousand tasks. At shutdown [`SlackSink::drain`] waits a
//! bounded time and names what was not delivered.

mod deliver;

use super::api::SlackApi;
use crate::audit::BoxFuture;
use crate::chat::{ChatError, ChatSink, Reply};
use crate::event::ReplyTarget;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::Tasks;
use deliver::{Thread, Work};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Pacing of one lane.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    pub burst: u32,
}

/// How the sink paces and keeps its queues.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The posts lane (Slack allows about one message per second per channel).
    pub posts: Pacing,
    /// How long a channel's lane lives without messages.
    pub idle: Duration,
}

/// The fast lane: ephemerals (Slack's Tier 4) and updates (Tier 3) are
/// limited per workspace, well above one per second.
const FAST: Pacing = Pacing { interval: Duration::from_millis(100), burst: 10 };
/// Messages one lane holds.
const LANE_CAPACITY: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Lane {
    Posts,
    Fast,
}

/// A live lane: its id and its queue.
type LiveLane = (u64, mpsc::Sender<Job>);

struct Job {
    id: u64,
    target: ReplyTarget,
    work: Work,
}

/// A message accepted and not yet delivered, for the shutdown report.
struct Outstanding {
    channel: String,
    what: &'static str,
    request: Option<String>,
}

struct Inner {
    api: SlackApi,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    tasks: Tasks,
    /// Live lanes: (channel, lane) → (the lane's id, its queue).
    lanes: Mutex<HashMap<(String, Lane), LiveLane>>,
    threads: Mutex<HashMap<String, Thread>>,
    outstanding: Mutex<BTreeMap<u64, Outstanding>>,
    next_id: AtomicU64,
    /// Cancelled when shutdown stops waiting: lanes stop retrying and end.
    closing: CancellationToken,
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

    fn done(&self, id: u64) {
        let mut outstanding = self.outstanding.lock().expect("outstanding lock");
        outstanding.remove(&id);
        self.metrics.slack_queued.store(outstanding.len() as u64, Ordering::Relaxed);
    }
}

impl SlackSink {
    pub fn new(
        api: SlackApi,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        settings: Settings,
        tasks: Tasks,
    ) -> SlackSink {
        SlackSink {
            inner: Arc::new(Inner {
                api,
                store,
                metrics,
                settings,
                tasks,
                lanes: Mutex::new(HashMap::new()),
                threads: Mutex::new(HashMap::new()),
                outstanding: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Waits up to `limit` for every accepted message to be delivered (or
    /// given up); then stops the lanes and returns what was not delivered,
    /// as "r-3 outcome in C0123" lines.
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inner.outstanding.lock().expect("outstanding lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // What is still outstanding now was not delivered; then the lanes
        // stop retrying and give the rest up.
        let undelivered = self
            .inner
            .outstanding
            .lock()
            .expect("outstanding lock")
            .values()
            .map(|o| match &o.request {
                Some(request) => format!("{request} {} in {}", o.what, o.channel),
                None => format!("a {} in {}", o.what, o.channel),
            })
            .collect();
        self.inner.closing.cancel();
        undelivered
    }

    /// The sender of `channel`'s `lane`, starting the lane if it has none.
    fn lane(&self, channel: &str, lane: Lane) -> mpsc::Sender<Job> {
        let mut lanes = self.inner.lanes.lock().expect("lanes lock");
        let key = (channel.to_string(), lane);
        if let Some((_, tx)) = lanes.get(&key).filter(|(_, tx)| !tx.is_closed()) {
            return tx.clone();
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(LANE_CAPACITY);
        lanes.insert(key, (id, tx.clone()));
        self.inner.metrics.slack_channels.store(lanes.len() as u64, Ordering::Relaxed);
        let inner = self.inner.clone();
        let channel = channel.to_string();
        self.inner.tasks.spawn("slack send queue", run_lane(inner, channel, lane, id, rx));
        tx
    }

    /// Queues `work` on a lane; waits for room if `must`, else drops it when
    /// the lane is full. Registered as outstanding until done.
    async fn enqueue(
        &self,
        target: &ReplyTarget,
        channel: &str,
        lane: Lane,
        work: Work,
        must: bool,
    ) -> Result<(), ChatError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut outstanding = self.inner.outstanding.lock().expect("outstanding lock");
            outstanding
                .insert(id, Outstanding { channel: channel.to_string(), what: work.what(), request: work.request() });
            self.inner.metrics.slack_queued.store(outstanding.len() as u64, Ordering::Relaxed);
        }
        let mut job = Job { id, target: target.clone(), work };
        // A lane that just ended for idleness refuses the job; start a new one.
        for _ in 0..3 {
            let tx = self.lane(channel, lane);
            let refused = if must {
                match tx.send(job).await {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::SendError(back)) => back,
                }
            } else {
                match tx.try_send(job) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Full(dropped)) => {
                        self.inner.done(dropped.id);
                        let n = self.inner.metrics.slack_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(channel, dropped = n, "Slack send queue full; a plain reply was dropped");
                        }
                        return Ok(());
                    }
                    Err(mpsc::error::TrySendError::Closed(back)) => back,
                }
            };
            job = refused;
        }
        self.inner.done(job.id);
        Err(ChatError::Delivery("the Slack send queue stopped".into()))
    }
}

impl ChatSink for SlackSink {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(async move {
            let Some(channel) = target.channel.strip_prefix("slack:") else {
                return Err(ChatError::Delivery(format!("{} is not a Slack channel", target.channel)));
            };
            match reply {
                Reply::Progress { request_id, text } => {
                    // Folded into the request's one progress message: at most
                    // one job per request is ever waiting.
                    let next = self
                        .inner
                        .with_threads(|t| t.entry(request_id.clone()).or_default().add_line(&request_id, text));
                    match next {
                        Some(work @ Work::ProgressPost { .. }) => {
                            self.enqueue(target, channel, Lane::Posts, work, true).await
                        }
                        Some(work) => self.enqueue(target, channel, Lane::Fast, work, true).await,
                        None => Ok(()),
                    }
                }
                Reply::Private { .. } => self.enqueue(target, channel, Lane::Fast, Work::Reply(reply), false).await,
                Reply::Text(_) => self.enqueue(target, channel, Lane::Posts, Work::Reply(reply), false).await,
                Reply::ApprovalUpdate(ref view) => {
                    // An update goes the fast way once the card's message is known.
                    let known = deliver::card_of(&self.inner, channel, &view.id).is_some();
                    let lane = if known { Lane::Fast } else { Lane::Posts };
                    self.enqueue(target, channel, lane, Work::Reply(reply), true).await
                }
                Reply::Approval(_) | Reply::Started { .. } | Reply::Outcome { .. } => {
                    self.enqueue(target, channel, Lane::Posts, Work::Reply(reply), true).await
                }
            }
        })
    }
}

/// One lane's worker: jobs in order, paced; ends when idle.
async fn run_lane(inner: Arc<Inner>, channel: String, lane: Lane, lane_id: u64, mut rx: mpsc::Receiver<Job>) {
    let pacing = match lane {
        Lane::Posts => inner.settings.posts,
        Lane::Fast => FAST,
    };
    let mut delivery = deliver::Delivery::new(&inner, &channel, pacing);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(inner.settings.idle, rx.recv()) => next,
            _ = inner.closing.cancelled() => {
                // Shutdown stopped waiting: what is left was named by drain.
                rx.close();
                while let Ok(job) = rx.try_recv() {
                    inner.done(job.id);
                }
                return;
            }
        };
        let job = match next {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                // Leave the map first, so new messages start a new lane; then
                // refuse more, and deliver whatever slipped in meanwhile.
                {
                    let mut lanes = inner.lanes.lock().expect("lanes lock");
                    let key = (channel.clone(), lane);
                    if lanes.get(&key).is_some_and(|(id, _)| *id == lane_id) {
                        lanes.remove(&key);
                    }
                    inner.metrics.slack_channels.store(lanes.len() as u64, Ordering::Relaxed);
                }
                rx.close();
                while let Ok(job) = rx.try_recv() {
                    delivery.run(job).await;
                }
                return;
            }
        };
        delivery.run(job).await;
    }
}
