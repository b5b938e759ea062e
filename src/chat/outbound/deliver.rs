//! Delivering one queued message: pacing, retries, and what opsbot follows of
//! each request in a channel (its card, its thread, its one progress message).

use super::{card_link, ApiError, Inner, Job, Pacing, Wire};
use crate::approval::RequestState;
use crate::chat::split;
use crate::engine::reply::Reply;
use crate::event::ReplyTarget;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// How long transient failures are retried before a message is given up.
const MAX_ATTEMPTS: u32 = 8;
/// Longest one Web API call may take. (A message whose call timed out may
/// still have been posted; it is retried, so it can show twice, never not.)
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Progress lines shown in a request's progress message (the newest).
const PROGRESS_LINES: usize = 20;

/// Closed cards whose final view is kept, newest last.
const CLOSED_CARDS: usize = 1024;

/// What a queued job does. (Its reply is held inline: one allocation per
/// message less, for a few hundred bytes per queued message.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Work {
    Reply(Reply),
    /// Post the request's first progress message (its lines as they are then).
    ProgressPost {
        request_id: String,
    },
    /// Update the request's progress message to its lines as they are then.
    ProgressRefresh {
        request_id: String,
    },
}

impl Work {
    /// Plain replies and private notes may be dropped when a lane is full;
    /// cards, start and outcome messages and progress may not.
    pub(super) fn droppable(&self) -> bool {
        matches!(self, Work::Reply(Reply::Text(_) | Reply::Private { .. } | Reply::Chart { .. }))
    }

    pub(super) fn what(&self) -> &'static str {
        match self {
            Work::Reply(Reply::Text(_)) => "message",
            Work::Reply(Reply::Announcement(_)) => "announcement",
            Work::Reply(Reply::Answer(_)) => "long answer",
            Work::Reply(Reply::Private { .. }) => "private note",
            Work::Reply(Reply::Approval(_)) => "approval card",
            Work::Reply(Reply::ApprovalUpdate(_)) => "approval card update",
            Work::Reply(Reply::Started { .. }) => "start message",
            Work::Reply(Reply::Progress { .. }) | Work::ProgressPost { .. } | Work::ProgressRefresh { .. } => {
                "progress message"
            }
            Work::Reply(Reply::Outcome { .. }) => "outcome",
            Work::Reply(Reply::Summary { .. }) => "summary",
            Work::Reply(Reply::Alert { .. }) => "alert message",
            Work::Reply(Reply::Chart { .. }) => "chart",
        }
    }

    pub(super) fn request(&self) -> Option<String> {
        match self {
            Work::Reply(Reply::Approval(view) | Reply::ApprovalUpdate(view)) => Some(view.id.clone()),
            Work::Reply(
                Reply::Started { request_id, .. }
                | Reply::Progress { request_id, .. }
                | Reply::Outcome { request_id, .. },
            )
            | Work::ProgressPost { request_id }
            | Work::ProgressRefresh { request_id } => Some(request_id.clone()),
            Work::Reply(
                Reply::Text(_)
                | Reply::Announcement(_)
                | Reply::Answer(_)
                | Reply::Private { .. }
                | Reply::Summary { .. }
                | Reply::Alert { .. }
                | Reply::Chart { .. },
            ) => None,
        }
    }
}

/// What opsbot follows of one request in a channel, from its card or start
/// message until it ends (outcome, or a card decided without an action).
#[derive(Default)]
pub(super) struct Thread {
    pub(super) card: Option<String>,
    root: Option<String>,
    progress: Option<String>,
    lines: Vec<String>,
    /// A progress job is queued (post or refresh); new lines ride on it.
    progress_queued: bool,
    /// The newest view of the request's approval card: what any card job
    /// shows when it is delivered.
    pub(super) view: Option<crate::engine::reply::ApprovalView>,
}

impl Thread {
    /// Adds a progress line; returns the job to queue, if none is waiting.
    pub(super) fn add_line(&mut self, request_id: &str, line: String) -> Option<Work> {
        self.lines.push(line);
        let old = self.lines.len().saturating_sub(PROGRESS_LINES);
        self.lines.drain(..old);
        if self.progress_queued {
            return None;
        }
        self.progress_queued = true;
        let request_id = request_id.to_string();
        Some(match self.progress {
            Some(_) => Work::ProgressRefresh { request_id },
            None => Work::ProgressPost { request_id },
        })
    }
}

/// The newest view of a card: its thread's, else the last one kept after
/// the card closed, else `view` itself.
fn newest_view<W: Wire>(
    inner: &Inner<W>,
    view: &crate::engine::reply::ApprovalView,
) -> crate::engine::reply::ApprovalView {
    if let Some(newest) = inner.with_threads(|t| t.get(&view.id).and_then(|t| t.view.clone())) {
        return newest;
    }
    let closed = inner.closed_cards.lock().expect("closed cards lock");
    closed.iter().rev().find(|v| v.id == view.id).cloned().unwrap_or_else(|| view.clone())
}

/// The card's message in `channel`, from memory or (after a restart) the store.
pub(super) fn card_of<W: Wire>(inner: &Inner<W>, channel: &str, request_id: &str) -> Option<String> {
    if let Some(ts) = inner.with_threads(|t| t.get(request_id).and_then(|t| t.card.clone())) {
        return Some(ts);
    }
    stored_card_of(inner, channel, request_id)
}

/// The card's message as stored, for requests memory knows nothing of.
fn stored_card_of<W: Wire>(inner: &Inner<W>, channel: &str, request_id: &str) -> Option<String> {
    let stored = inner.store.resolve(&format!("{}:card-of:{request_id}", W::PLATFORM)).ok().flatten()?;
    let (stored_channel, ts) = stored.split_once(' ')?;
    (stored_channel == channel).then(|| ts.to_string())
}

/// One lane's delivery state.
pub(super) struct Delivery<'a, W: Wire> {
    inner: &'a Inner<W>,
    channel: &'a str,
    pacing: Pacing,
    /// Generic cell rate: when the next call would be due at the steady rate.
    tat: Instant,
}

impl<'a, W: Wire> Delivery<'a, W> {
    pub(super) fn new(inner: &'a Inner<W>, channel: &'a str, pacing: Pacing) -> Delivery<'a, W> {
        Delivery { inner, channel, pacing, tat: Instant::now() }
    }

    /// Delivers one job (or gives it up, logged and counted).
    pub(super) async fn run(&mut self, job: Job) {
        let Job { id, target, work } = job;
        let what = work.what();
        let request = work.request();
        if self.inner.closing.is_cancelled() {
            // Shutdown stopped waiting: named by drain, not tried again.
            self.inner.done(id);
            return;
        }
        if let Err(e) = self.deliver(&target, work).await {
            self.inner.counters().undelivered.fetch_add(1, Ordering::Relaxed);
            tracing::error!(platform = %W::PLATFORM, channel = %self.channel, request = request.as_deref().unwrap_or("-"), what, error = %e, "message given up");
        }
        self.inner.done(id);
    }

    async fn pace(&mut self) {
        let Pacing { interval, burst } = self.pacing;
        let now = Instant::now();
        if self.tat < now {
            self.tat = now;
        }
        let allowance = interval * burst.saturating_sub(1);
        if self.tat > now + allowance {
            tokio::time::sleep_until(self.tat - allowance).await;
        }
        self.tat += interval;
    }

    /// Runs one API call until it succeeds, is refused for good, runs out of
    /// attempts, or shutdown stops waiting.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            self.pace().await;
            // A call the platform never answers (a half-open connection, a stuck
            // proxy) is a transient failure, not a lane stuck for good; and
            // shutdown does not wait for it.
            let answer = tokio::select! {
                answer = tokio::time::timeout(CALL_TIMEOUT, call()) => answer.unwrap_or_else(|_| {
                    Err(ApiError::Transient(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))
                }),
                _ = self.inner.closing.cancelled() => {
                    return Err(ApiError::Transient("opsbot is shutting down".into()));
                }
            };
            let wait = match answer {
                Ok(value) => return Ok(value),
                // Waits outside the call's timeout, however long, and
                // never counts as a failed attempt.
                Err(ApiError::Wait(wait)) => {
                    if wait > Duration::from_secs(10) {
                        tracing::warn!(platform = %W::PLATFORM, channel = %self.channel, ?wait, "held back by the platform's rate limit; waiting");
                    }
                    wait
                }
                Err(ApiError::RateLimited(after)) => {
                    // Rate limits delay; they never drop a message (until shutdown).
                    self.inner.counters().rate_limited.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or(Duration::from_secs(1));
                    tracing::warn!(platform = %W::PLATFORM, channel = %self.channel, ?wait, "rate limited; waiting");
                    wait
                }
                Err(ApiError::Transient(e)) if attempt + 1 < MAX_ATTEMPTS => {
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(7)));
                    tracing::warn!(platform = %W::PLATFORM, channel = %self.channel, error = %e, ?backoff, "call failed; retrying");
                    backoff
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.closing.cancelled() => {
                    return Err(ApiError::Transient("opsbot is shutting down".into()));
                }
            }
        }
    }

    /// The newest view of `view`'s card (a later update may have been sent
    /// on the other lane while this one waited, or already closed the card).
    fn newest_view(&self, view: &crate::engine::reply::ApprovalView) -> crate::engine::reply::ApprovalView {
        newest_view(self.inner, view)
    }

    /// Keeps a card's last view a while after its thread is forgotten, for
    /// any older update of it still on its way.
    fn keep_closed(&self, view: crate::engine::reply::ApprovalView) {
        let mut closed = self.inner.closed_cards.lock().expect("closed cards lock");
        closed.push_back(view);
        if closed.len() > CLOSED_CARDS {
            closed.pop_front();
        }
    }

    fn remember_card(&self, request_id: &str, ts: &str) {
        let link = format!("{} {ts}", self.channel);
        if let Err(e) = self
            .inner
            .store
            .link(&card_link(W::PLATFORM, self.channel, ts), request_id)
            .and_then(|_| self.inner.store.link(&format!("{}:card-of:{request_id}", W::PLATFORM), &link))
        {
            tracing::warn!(error = %e, "card link not stored; reactions to it will not count after a restart");
        }
        self.inner.with_threads(|t| t.entry(request_id.to_string()).or_default().card = Some(ts.to_string()));
    }

    /// Posts the standing message `link` (an incident's summary: top
    /// level, then pinned; an alert's: top level) or edits the message it
    /// was posted as; the message is remembered in the store so edits after
    /// a restart land on it too.
    async fn summary(
        &mut self,
        link: &str,
        text: &str,
        controls: crate::engine::reply::Controls<'_>,
    ) -> Result<(), ApiError> {
        let wire = &self.inner.wire;
        let channel = self.channel;
        let body = split(&wire.render(text), W::MAX_TEXT).into_iter().next().unwrap_or_default();
        let posted = self.inner.store.resolve(link).ok().flatten().and_then(|stored| {
            let (stored_channel, message) = stored.split_once(' ')?;
            (stored_channel == channel).then(|| message.to_string())
        });
        if let Some(message) = posted {
            match self.call(|| wire.update_summary(channel, &message, &body, controls)).await {
                // Deleted by someone (Slack's message_not_found, Discord's
                // Unknown Message, 10008): post it again below. Any other
                // refusal is reported, never answered with another copy.
                Err(ApiError::Permanent(why)) if why.contains("message_not_found") || why.contains("code 10008") => {
                    tracing::warn!(channel, %why, "the summary's message cannot be edited; posting it again");
                }
                other => return other,
            }
        }
        let message = self.call(|| wire.post_summary(channel, &body, controls)).await?;
        if let Err(e) = self.inner.store.link(link, &format!("{channel} {message}")) {
            tracing::warn!(error = %e, "summary link not stored; after a restart its next edit posts it anew");
        }
        if matches!(controls, crate::engine::reply::Controls::Alert(_)) {
            return Ok(());
        }
        // Pinning is a convenience, tried once (not retried, so it never
        // holds up the channel): without the permission the summary stays,
        // unpinned, and the log says why.
        if let Err(e) = wire.pin(channel, &message).await {
            tracing::warn!(error = ?e, channel, "could not pin the summary (does the bot have the permission to pin?)");
        }
        Ok(())
    }

    async fn post_text(&mut self, thread: Option<&str>, text: &str) -> Result<Option<String>, ApiError> {
        let wire = &self.inner.wire;
        let channel = self.channel;
        let mut first = None;
        for chunk in split(&wire.render(text), W::MAX_TEXT) {
            let ts = self.call(|| wire.post(channel, thread, &chunk)).await?;
            first.get_or_insert(ts);
        }
        Ok(first)
    }

    async fn deliver(&mut self, target: &ReplyTarget, work: Work) -> Result<(), ApiError> {
        match work {
            Work::Reply(reply) => self.deliver_reply(target, reply).await,
            Work::ProgressPost { request_id } => self.progress(target, &request_id, false).await,
            Work::ProgressRefresh { request_id } => self.progress(target, &request_id, true).await,
        }
    }

    /// Posts or updates the request's progress message with its lines now.
    /// A refresh of a request that has ended (its outcome delivered, on the
    /// other lane) does nothing: the outcome says the rest.
    async fn progress(&mut self, target: &ReplyTarget, request_id: &str, refresh: bool) -> Result<(), ApiError> {
        let wire = &self.inner.wire;
        let channel = self.channel;
        // Lines added from here on queue a new job.
        let found = self.inner.with_threads(|t| {
            if refresh && !t.contains_key(request_id) {
                return None;
            }
            let state = t.entry(request_id.to_string()).or_default();
            state.progress_queued = false;
            Some((state.root.clone().or(state.card.clone()), state.progress.clone(), state.lines.join("\n")))
        });
        let Some((root, progress, body)) = found else { return Ok(()) };
        // One message: the newest lines that fit.
        let body = crate::chat::newest_lines(&wire.render(&body), W::MAX_TEXT);
        match progress {
            Some(ts) => self.call(|| wire.update(channel, &ts, &body)).await,
            None => {
                // After a restart the thread is known only from the stored card.
                let root = root.or_else(|| stored_card_of(self.inner, channel, request_id)).or(target.thread.clone());
                let ts = self.call(|| wire.post(channel, root.as_deref(), &body)).await?;
                self.inner.with_threads(|t| t.entry(request_id.to_string()).or_default().progress = Some(ts));
                Ok(())
            }
        }
    }

    async fn deliver_reply(&mut self, target: &ReplyTarget, reply: Reply) -> Result<(), ApiError> {
        let wire = &self.inner.wire;
        let channel = self.channel;
        let thread = target.thread.as_deref();
        match reply {
            Reply::Text(text) | Reply::Answer(text) if wire.answers_in_place(target) => {
                for chunk in split(&wire.render(&text), W::MAX_TEXT) {
                    self.call(|| wire.answer_in_place(target, &chunk)).await?;
                }
            }
            Reply::Text(text) | Reply::Announcement(text) | Reply::Answer(text) => {
                self.post_text(thread, &text).await?;
            }
            Reply::Private { to, text } => {
                let Some(user) = to.id_on(W::PLATFORM) else { return Ok(()) };
                for chunk in split(&wire.render(&text), W::MAX_TEXT) {
                    self.call(|| wire.private(target, channel, user, &chunk)).await?;
                }
            }
            Reply::Approval(view) => {
                let view = self.newest_view(&view);
                let ts = self.call(|| wire.post_card(channel, thread, &view)).await?;
                self.remember_card(&view.id, &ts);
            }
            Reply::ApprovalUpdate(view) => {
                // Every attempt (retries included) sends the card's newest
                // view, and once one is through, it is sent again if the
                // card changed meanwhile: an update on the other lane may
                // have reached the platform first, and the card must end showing
                // the newest state, never an older one.
                let inner = self.inner;
                let mut sent = None;
                for _ in 0..3 {
                    let newest = self.newest_view(&view);
                    if sent.as_ref() == Some(&newest) {
                        break;
                    }
                    match card_of(inner, channel, &view.id) {
                        Some(ts) => {
                            let delivered = self
                                .call(|| {
                                    let (view, ts) = (newest_view(inner, &view), ts.clone());
                                    async move { wire.update_card(channel, &ts, &view).await }
                                })
                                .await;
                            delivered?;
                        }
                        None => {
                            let ts = self.call(|| wire.post_card(channel, thread, &newest)).await?;
                            self.remember_card(&view.id, &ts);
                        }
                    }
                    sent = Some(newest);
                }
                // Denied, withdrawn, expired, invalidated: no action follows,
                // so nothing more will be said in this thread.
                // Judged on the newest view (the loop may have ended on an
                // older one), so a decided card's thread entry never lingers.
                let last = self.newest_view(&view);
                if !matches!(last.state, RequestState::Pending | RequestState::Approved) {
                    self.inner.with_threads(|t| t.remove(&last.id));
                    self.keep_closed(last);
                }
            }
            Reply::Started { request_id, text } => {
                let card = card_of(self.inner, channel, &request_id);
                let root_thread = card.as_deref().or(thread);
                let ts = self.post_text(root_thread, &text).await?;
                let root = root_thread.map(str::to_string).or(ts);
                self.inner.with_threads(|t| t.entry(request_id).or_default().root = root);
            }
            Reply::Progress { request_id, .. } => {
                // Progress is queued as ProgressPost/ProgressRefresh; a bare one
                // (never queued by the sink) shows the lines as they are.
                self.progress(target, &request_id, false).await?;
            }
            Reply::Summary { key, text, rollbacks } => {
                let link = format!("{}:summary-of:{key}", W::PLATFORM);
                self.summary(&link, &text, crate::engine::reply::Controls::Rollbacks(&rollbacks)).await?
            }
            Reply::Chart { filename, png, comment } => {
                let wire = &self.inner.wire;
                let body = wire.render(&comment);
                match self.call(|| wire.upload(channel, thread, &filename, &png, &body)).await {
                    Err(ApiError::Permanent(why)) => {
                        tracing::warn!(channel, %why, "the chart was not attached");
                        self.post_text(thread, &format!("{comment} (the chart could not be attached: {why})")).await?;
                    }
                    other => other?,
                }
            }
            Reply::Alert { key, text, buttons } => {
                // One message per alert group and channel.
                let link = format!("{}:alert-of:{key}:{channel}", W::PLATFORM);
                self.summary(&link, &text, crate::engine::reply::Controls::Alert(&buttons)).await?
            }
            Reply::Outcome { request_id, verdict, text } => {
                let followed = self.inner.with_threads(|t| t.remove(&request_id));
                if let Some(view) = followed.as_ref().and_then(|f| f.view.clone()) {
                    self.keep_closed(view);
                }
                // After a restart the thread is known only from the stored card.
                let root = followed
                    .and_then(|f| f.root.or(f.card))
                    .or_else(|| stored_card_of(self.inner, channel, &request_id));
                let mark = W::mark(verdict);
                self.post_text(root.as_deref().or(thread), &format!("{mark} {request_id}: {text}")).await?;
            }
        }
        Ok(())
    }
}
