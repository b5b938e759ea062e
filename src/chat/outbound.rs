//! The chat platforms' side of [`ChatSink`]: bounded, ordered send queues
//! per channel, shared by Slack and Discord. What differs between them (the
//! calls, the markup, the limits) is a [`Wire`]; everything here is the same.
//!
//! Each channel has two lanes, each a bounded queue worked by one tracked task:
//! - **posts** (texts, cards, start and outcome messages, a request's first
//!   progress message), in order, paced per channel (Slack allows ~1
//!   message/s per channel: `channel_interval`, `channel_burst`);
//! - **fast** (private notes, and in-place updates of a message whose id is
//!   known): rated separately by the platforms, so they never wait behind
//!   the channel's posts.
//!
//! Sending never waits, so no caller (a vote holding the engine's lock, an
//! HTTP handler racing Slack's 3 s) is held up by a slow channel. When a lane
//! is full (128 messages): a plain text or private note is dropped and counted
//! (`opsbot_<platform>_dropped_total`); an approval card, card update, start or
//! outcome message is never dropped — it takes the place of the oldest plain
//! message waiting, or, if there is none, goes in over the limit (these are
//! bounded by the requests and actions themselves, not by traffic); a
//! request's progress never takes more than one place — new lines are folded
//! into the message already waiting. A card update is rendered from the
//! newest view when it is delivered, so updates that cross lanes cannot leave
//! an old state showing. A 429 waits `Retry-After` and tries again (until
//! shutdown); 5xx, network errors and calls that time out are retried with
//! backoff, then given up and counted. A lane idle for `channel_idle` ends,
//! so a bot that has seen a thousand channels does not keep a thousand tasks.
//! At shutdown [`Sink::drain`] waits a bounded time and names what was
//! not delivered.

mod deliver;

use crate::audit::{BoxFuture, Verdict};
use crate::engine::reply::{ApprovalView, ChatError, ChatSink, Reply};
use crate::event::{Actor, Platform, ReplyTarget};
use crate::metrics::{Metrics, OutboundMetrics};
use crate::store::Store;
use crate::tasks::Tasks;
use deliver::{Thread, Work};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A platform call that did not go through, sorted by what the send queue
/// does next: wait (429), retry (5xx, network), or give up (a request the
/// platform will never accept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("rate limited (retry after {0:?})")]
    RateLimited(Option<Duration>),
    /// Not sent: opsbot's own account of the platform's limits says to
    /// wait this long first (no 429 was had).
    #[error("held back by the rate limit for {0:?}")]
    Wait(Duration),
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("refused: {0}")]
    Permanent(String),
}

/// One platform's messaging calls, as the send queues make them. Texts are
/// given rendered ([`Wire::render`]) and within [`Wire::MAX_TEXT`].
pub trait Wire: Send + Sync + 'static {
    const PLATFORM: Platform;
    /// The name of a channel's send-queue task (in logs and readiness).
    const QUEUE_TASK: &'static str;
    /// Longest text of one message, in characters, once rendered.
    const MAX_TEXT: usize;
    /// A reply's text as the platform shows it: typed text inert, markup escaped.
    fn render(&self, text: &str) -> String;
    /// What an outcome message starts with.
    fn mark(verdict: Verdict) -> &'static str;
    /// Posts in `channel`, or in the thread under its message `thread`;
    /// returns the new message's id.
    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, ApiError>>;
    /// Replaces the text of a message opsbot posted.
    fn update<'a>(&'a self, channel: &'a str, message: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Posts an approval card with its vote controls (while it is open).
    fn post_card<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<String, ApiError>>;
    /// Shows `view` in the card's message.
    fn update_card<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// A note only `user` (the platform's own id) sees.
    fn private<'a>(
        &'a self,
        target: &'a ReplyTarget,
        channel: &'a str,
        user: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Posts a standing message (an incident's summary, an alert's) at the
    /// channel's top level, with its `controls`; returns the message's id.
    fn post_summary<'a>(
        &'a self,
        channel: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<String, ApiError>>;
    /// Shows `text` and those controls in the standing message.
    fn update_summary<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Posts `png` as a file named `filename`, with `comment`, in `channel`
    /// (or the thread under its message `thread`).
    fn upload<'a>(
        &'a self,
        _channel: &'a str,
        _thread: Option<&'a str>,
        _filename: &'a str,
        _png: &'a [u8],
        _comment: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Err(ApiError::Permanent("this platform takes no files".into())) })
    }
    /// Pins a message opsbot posted (an incident's summary), where the
    /// platform allows bots to.
    fn pin<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Opens a channel named `name` beside `near` (a channel id on this
    /// platform), with `members` (user ids on this platform) in it where
    /// the platform invites people; returns its id.
    fn open_channel<'a>(
        &'a self,
        _near: &'a str,
        _name: &'a str,
        _members: &'a [&'a str],
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async { Err(ApiError::Permanent("this platform cannot open channels".into())) })
    }
    /// Whether plain answers to `target`'s request go back through the
    /// request itself (a Discord interaction) rather than to the channel.
    fn answers_in_place(&self, _target: &ReplyTarget) -> bool {
        false
    }
    /// One part of such an answer.
    fn answer_in_place<'a>(&'a self, _target: &'a ReplyTarget, _text: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Err(ApiError::Permanent("this platform answers in the channel".into())) })
    }
}

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
/// Long answers ([`Reply::Answer`]) one lane holds waiting (besides the
/// one its worker may be posting).
const ANSWERS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Lane {
    Posts,
    Fast,
}

/// One lane's queue. Pushing never waits; the lane's worker takes from the front.
struct LaneQueue {
    id: u64,
    state: Mutex<LaneState>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct LaneState {
    jobs: std::collections::VecDeque<Job>,
    /// The worker has ended (idle, or shutdown): nothing more is taken.
    closed: bool,
}

/// What became of a pushed job.
enum Pushed {
    Queued,
    /// The lane was full and the job was a plain message.
    Dropped,
    /// The lane has ended; try a new one.
    Closed(Box<Job>),
}

impl LaneQueue {
    fn push<W: Wire>(&self, job: Job, must: bool, inner: &Inner<W>) -> Pushed {
        let mut state = self.state.lock().expect("lane lock");
        if state.closed {
            return Pushed::Closed(Box::new(job));
        }
        // Long answers are several posts each and are never evicted once
        // taken: a channel holds a few at most, so one reader repeating a
        // long question cannot push everyone's cards and outcomes back.
        if matches!(job.work, Work::Reply(Reply::Answer(_)))
            && state.jobs.iter().filter(|j| matches!(j.work, Work::Reply(Reply::Answer(_)))).count() >= ANSWERS
        {
            return Pushed::Dropped;
        }
        if state.jobs.len() >= LANE_CAPACITY {
            if !must {
                return Pushed::Dropped;
            }
            // A message that must arrive takes the place of the oldest plain
            // one waiting; with none, it goes in over the limit.
            if let Some(at) = state.jobs.iter().position(|j| j.work.droppable()) {
                if let Some(evicted) = state.jobs.remove(at) {
                    inner.dropped(evicted.id);
                }
            }
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    fn pop(&self) -> Option<Job> {
        self.state.lock().expect("lane lock").jobs.pop_front()
    }

    fn is_closed(&self) -> bool {
        self.state.lock().expect("lane lock").closed
    }

    /// Closes the lane if nothing is waiting; returns whether it did.
    fn close_if_empty(&self) -> bool {
        let mut state = self.state.lock().expect("lane lock");
        if state.jobs.is_empty() {
            state.closed = true;
        }
        state.closed
    }

    /// Closes the lane and returns what was waiting.
    fn close(&self) -> Vec<Job> {
        let mut state = self.state.lock().expect("lane lock");
        state.closed = true;
        state.jobs.drain(..).collect()
    }
}

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

struct Inner<W: Wire> {
    wire: W,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    tasks: Tasks,
    /// Live lanes: (channel, lane) → its queue.
    lanes: Mutex<HashMap<(String, Lane), Arc<LaneQueue>>>,
    threads: Mutex<HashMap<String, Thread>>,
    /// Final views of cards closed without an action (bounded), so an older
    /// update delivered after the close cannot reopen the card.
    closed_cards: Mutex<std::collections::VecDeque<crate::engine::reply::ApprovalView>>,
    outstanding: Mutex<BTreeMap<u64, Outstanding>>,
    next_id: AtomicU64,
    /// Cancelled when shutdown stops waiting: lanes stop retrying and end.
    closing: CancellationToken,
}

/// One platform's send queues.
pub struct Sink<W: Wire> {
    inner: Arc<Inner<W>>,
}

impl<W: Wire> Clone for Sink<W> {
    fn clone(&self) -> Self {
        Sink { inner: self.inner.clone() }
    }
}

/// The store key linking a card message to its request (for reactions).
pub fn card_link(platform: Platform, channel: &str, message: &str) -> String {
    format!("{platform}:card:{channel}:{message}")
}

impl<W: Wire> Inner<W> {
    fn counters(&self) -> &OutboundMetrics {
        self.metrics.outbound(W::PLATFORM)
    }

    /// Runs `f` on the followed threads and publishes how many there are.
    fn with_threads<R>(&self, f: impl FnOnce(&mut HashMap<String, Thread>) -> R) -> R {
        let mut threads = self.threads.lock().expect("threads lock");
        let result = f(&mut threads);
        self.counters().threads.store(threads.len() as u64, Ordering::Relaxed);
        result
    }

    /// A plain message dropped for lack of room.
    fn dropped(&self, id: u64) {
        self.done(id);
        let n = self.counters().dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(platform = %W::PLATFORM, dropped = n, "a send queue was full; plain replies were dropped");
        }
    }

    fn done(&self, id: u64) {
        let mut outstanding = self.outstanding.lock().expect("outstanding lock");
        outstanding.remove(&id);
        self.counters().queued.store(outstanding.len() as u64, Ordering::Relaxed);
    }
}

impl<W: Wire> Sink<W> {
    pub fn new(wire: W, store: Arc<dyn Store>, metrics: Arc<Metrics>, settings: Settings, tasks: Tasks) -> Sink<W> {
        Sink {
            inner: Arc::new(Inner {
                wire,
                store,
                metrics,
                settings,
                tasks,
                lanes: Mutex::new(HashMap::new()),
                threads: Mutex::new(HashMap::new()),
                closed_cards: Mutex::new(std::collections::VecDeque::new()),
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

    /// The queue of `channel`'s `lane`, starting the lane if it has none.
    fn lane(&self, channel: &str, lane: Lane) -> Arc<LaneQueue> {
        let mut lanes = self.inner.lanes.lock().expect("lanes lock");
        let key = (channel.to_string(), lane);
        if let Some(queue) = lanes.get(&key).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let queue = Arc::new(LaneQueue {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(LaneState::default()),
            ready: tokio::sync::Notify::new(),
        });
        lanes.insert(key, queue.clone());
        self.inner.counters().channels.store(lanes.len() as u64, Ordering::Relaxed);
        let (inner, channel, worker_queue) = (self.inner.clone(), channel.to_string(), queue.clone());
        self.inner.tasks.spawn(W::QUEUE_TASK, run_lane(inner, channel, lane, worker_queue));
        queue
    }

    /// Queues `work` on a lane, never waiting (see the module docs for what
    /// happens when the lane is full). Registered as outstanding until done.
    fn enqueue(&self, target: &ReplyTarget, channel: &str, lane: Lane, work: Work) -> Result<(), ChatError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // An answer is admitted like a plain message (not past a full lane)
        // but, once queued, kept like one that must arrive.
        let answer = matches!(work, Work::Reply(Reply::Answer(_)));
        let must = !work.droppable() && !answer;
        {
            let mut outstanding = self.inner.outstanding.lock().expect("outstanding lock");
            outstanding
                .insert(id, Outstanding { channel: channel.to_string(), what: work.what(), request: work.request() });
            self.inner.counters().queued.store(outstanding.len() as u64, Ordering::Relaxed);
        }
        let mut job = Job { id, target: target.clone(), work };
        // A lane that just ended for idleness refuses the job; start a new one.
        for _ in 0..3 {
            match self.lane(channel, lane).push(job, must, &self.inner) {
                Pushed::Queued => return Ok(()),
                Pushed::Dropped => {
                    self.inner.dropped(id);
                    if answer {
                        return Err(ChatError::Delivery(format!("the send queue for {channel} is full")));
                    }
                    return Ok(());
                }
                Pushed::Closed(back) => job = *back,
            }
        }
        self.inner.done(id);
        Err(ChatError::Delivery(format!("the {} send queue stopped", W::PLATFORM)))
    }
}

impl<W: Wire> Sink<W> {
    /// [`ChatSink::open_channel`] on this platform: tried once (a channel
    /// made twice would be two channels), its error said as it is.
    async fn open(&self, near: &ReplyTarget, name: &str, members: &[Actor]) -> Result<ReplyTarget, ChatError> {
        let Some(channel) = near.channel_on(W::PLATFORM) else {
            return Err(ChatError::Delivery(format!("{} is not a {} channel", near.channel, W::PLATFORM)));
        };
        let prefix = format!("{}:", W::PLATFORM.name());
        let members: Vec<&str> = members.iter().filter_map(|m| m.as_str().strip_prefix(prefix.as_str())).collect();
        match self.inner.wire.open_channel(channel, name, &members).await {
            Ok(id) => Ok(ReplyTarget::channel(format!("{prefix}{id}"))),
            Err(ApiError::Permanent(why) | ApiError::Transient(why)) => Err(ChatError::Delivery(why)),
            Err(e) => Err(ChatError::Delivery(e.to_string())),
        }
    }
}

impl<W: Wire> ChatSink for Sink<W> {
    fn open_channel<'a>(
        &'a self,
        near: &'a ReplyTarget,
        name: &'a str,
        members: &'a [Actor],
    ) -> BoxFuture<'a, Result<ReplyTarget, ChatError>> {
        Box::pin(self.open(near, name, members))
    }

    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        Box::pin(async move {
            let Some(channel) = target.channel_on(W::PLATFORM) else {
                return Err(ChatError::Delivery(format!("{} is not a {} channel", target.channel, W::PLATFORM)));
            };
            match reply {
                Reply::Progress { request_id, text } => {
                    // Folded into the request's one progress message: at most
                    // one job per request is ever waiting.
                    let next = self
                        .inner
                        .with_threads(|t| t.entry(request_id.clone()).or_default().add_line(&request_id, text));
                    match next {
                        Some(work @ Work::ProgressPost { .. }) => self.enqueue(target, channel, Lane::Posts, work),
                        Some(work) => self.enqueue(target, channel, Lane::Fast, work),
                        None => Ok(()),
                    }
                }
                Reply::Private { .. } => self.enqueue(target, channel, Lane::Fast, Work::Reply(reply)),
                Reply::Text(_) | Reply::Chart { .. } => self.enqueue(target, channel, Lane::Posts, Work::Reply(reply)),
                Reply::Approval(ref view) | Reply::ApprovalUpdate(ref view) => {
                    // Every card job shows the newest view when it is
                    // delivered, so updates that cross lanes converge.
                    let posted = self.inner.with_threads(|t| {
                        let thread = t.entry(view.id.clone()).or_default();
                        thread.view = Some(view.clone());
                        thread.card.is_some()
                    });
                    let known = posted || deliver::card_of(&self.inner, channel, &view.id).is_some();
                    // An update goes the fast way once the card's message is known.
                    let lane =
                        if known && matches!(reply, Reply::ApprovalUpdate(_)) { Lane::Fast } else { Lane::Posts };
                    self.enqueue(target, channel, lane, Work::Reply(reply))
                }
                // A summary's edits follow its post in the one ordered lane.
                Reply::Started { .. }
                | Reply::Outcome { .. }
                | Reply::Announcement(_)
                | Reply::Answer(_)
                | Reply::Summary { .. }
                | Reply::Alert { .. } => self.enqueue(target, channel, Lane::Posts, Work::Reply(reply)),
            }
        })
    }
}

/// One lane's worker: jobs in order, paced; ends when idle or at shutdown.
async fn run_lane<W: Wire>(inner: Arc<Inner<W>>, channel: String, lane: Lane, queue: Arc<LaneQueue>) {
    let pacing = match lane {
        Lane::Posts => inner.settings.posts,
        Lane::Fast => FAST,
    };
    let mut delivery = deliver::Delivery::new(&inner, &channel, pacing);
    loop {
        if let Some(job) = queue.pop() {
            delivery.run(job).await;
            continue;
        }
        let woken = tokio::select! {
            _ = queue.ready.notified() => true,
            _ = tokio::time::sleep(inner.settings.idle) => false,
            _ = inner.closing.cancelled() => {
                // Shutdown stopped waiting: what is left was named by drain.
                for job in queue.close() {
                    inner.done(job.id);
                }
                break;
            }
        };
        if !woken && queue.close_if_empty() {
            break;
        }
    }
    let mut lanes = inner.lanes.lock().expect("lanes lock");
    let key = (channel.clone(), lane);
    if lanes.get(&key).is_some_and(|q| q.id == queue.id) {
        lanes.remove(&key);
    }
    inner.counters().channels.store(lanes.len() as u64, Ordering::Relaxed);
}
