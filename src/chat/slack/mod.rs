//! Slack: HTTP endpoints and Socket Mode in, Web API out.
//!
//! - `verify`: request signatures, checked before anything is parsed;
//! - `inbound`: payloads → [`crate::event::Event`]s with dedup keys;
//! - `api`: the Web API through slack-morphism; `outbound`: Slack's side of
//!   the paced, ordered, retrying send queues ([`crate::chat::outbound`]);
//! - `blocks`: Block Kit cards and text limits; `manifest`: the app manifest;
//! - `names`: display names from `users.info`, cached, for the audit trail;
//! - `socket`: Socket Mode (envelopes acked, reconnects with backoff).
//!
//! Only this module (and `chat::discord` later) imports slack-morphism.

pub mod api;
pub mod blocks;
pub mod inbound;
pub mod manifest;
pub mod names;
pub mod outbound;
pub mod socket;
pub mod verify;

use crate::engine::reply::Reply;
use crate::engine::Engine;
use crate::event::{Event, ReplyTarget};
use crate::metrics::Metrics;
use crate::store::Store;
use axum::http::{HeaderMap, StatusCode};
use inbound::{Callback, EventsBody, SlashCommand};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an inbound Slack request gets back.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(Value),
    /// 200, empty body.
    Empty,
    /// 401: signature missing, wrong or stale. Nothing was parsed or done.
    Unauthorized,
    /// 400: verified but not understood.
    BadRequest(String),
}

/// How long a slash command's acknowledgement may take, counted from the
/// start of the request: Slack shows an error after 3 s. What the engine
/// says later goes to the channel.
const ACK_DEADLINE: Duration = Duration::from_millis(2500);

/// Turns verified Slack input into engine events and builds the answers.
pub struct SlackIngress {
    verifier: Option<verify::Verifier>,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Present when a bot token is configured.
    names: Option<Arc<names::SlackNames>>,
}

#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

impl SlackIngress {
    /// `verifier` is `None` only for Socket Mode, where the WebSocket itself is
    /// authenticated by the app token.
    pub fn new(
        verifier: Option<verify::Verifier>,
        engine: Arc<Engine>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        names: Option<Arc<names::SlackNames>>,
    ) -> SlackIngress {
        SlackIngress { verifier, engine, store, metrics, names }
    }

    /// Keeps the display name of the event's actor fresh, so its audit
    /// records carry it.
    async fn learn_name(&self, event: &Event) {
        if let Some(names) = &self.names {
            let (Event::Command { actor, .. } | Event::Vote { actor, .. }) = event;
            names.refresh(actor).await;
        }
    }

    async fn handle(&self, event: Event) {
        self.learn_name(&event).await;
        let _ = self.engine.handle(event).await;
    }

    fn verified(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let Some(verifier) = &self.verifier else { return false };
        match verifier.verify(headers, body, chrono::Utc::now().timestamp()) {
            Ok(()) => true,
            Err(reason) => {
                // The reason is coarse on purpose; no signature or secret is logged.
                self.metrics.rejected_signatures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "refused an unverified Slack request");
                false
            }
        }
    }

    /// `POST /slack/commands`.
    pub async fn http_command(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let started = Instant::now();
        if !self.verified(headers, body) {
            return Answer::Unauthorized;
        }
        let command = match SlashCommand::from_form(body) {
            Ok(c) => c,
            Err(e) => return Answer::BadRequest(format!("not a slash command: {e}")),
        };
        let answer = Answer::Json(self.command(command).await);
        self.metrics.ack_latency(started.elapsed());
        answer
    }

    /// A slash command (HTTP or Socket Mode) → the ack body.
    pub async fn command(&self, command: SlashCommand) -> Value {
        let started = Instant::now();
        let event = match command.into_event() {
            Ok(event) => event,
            Err(e) => return json!({"response_type": "ephemeral", "text": format!("opsbot cannot take this: {e}")}),
        };
        let reply = match &event {
            Event::Command { reply, .. } | Event::Vote { reply, .. } => reply.clone(),
        };
        self.learn_name(&event).await;
        // Looking up a name may have taken part of the window.
        let deadline = ACK_DEADLINE.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let handled = self.engine.handle_collecting(event, deadline).await;
        if handled.duplicate {
            // A retry of a command already answered: say so, do nothing.
            return json!({"response_type": "ephemeral", "text": "Already received."});
        }
        if handled.deferred && handled.replies.is_empty() {
            // Slack gives up at 3 s: acknowledge now, and let the answer
            // follow in the channel when the backend gives it.
            return json!({"response_type": "ephemeral", "text": "Working on it: this takes longer than Slack waits for an answer. It will be posted in this channel when it is ready (or say that it timed out)."});
        }
        self.ack_body(handled.replies, &reply).await
    }

    /// The immediate answer: what will happen, visible to the channel, or a
    /// private note when the request was refused.
    async fn ack_body(&self, replies: Vec<Reply>, target: &ReplyTarget) -> Value {
        let (public, private) = crate::engine::reply::split_plain(replies);
        if public.is_empty() {
            if private.is_empty() {
                // Everything went to the thread (an approval that started an action).
                return json!({"response_type": "ephemeral", "text": "Done — follow the request's thread."});
            }
            let text = crate::engine::reply::note_texts(private);
            return json!({"response_type": "ephemeral", "text": blocks::render(&text)});
        }
        for (to, text) in private {
            self.engine.send_reply(target, Reply::Private { to, text }).await;
        }
        let text = public.join("\n");
        let rendered = blocks::render(&text);
        if rendered.chars().count() <= blocks::MAX_TEXT {
            return json!({"response_type": "in_channel", "text": rendered});
        }
        // Longer than one message (a long /audit): the channel gets all of
        // it as posts, split at line ends, instead of a silently cut ack.
        // The ack promises it only once the channel's queue has taken it
        // (then it is never dropped); a backed-up channel gets no more.
        match self.engine.try_send_reply(target, Reply::Answer(text)).await {
            Ok(()) => {
                json!({"response_type": "ephemeral", "text": "The answer is long: it follows in the channel, in parts."})
            }
            Err(e) if e.to_string().contains("is full") => {
                json!({"response_type": "ephemeral", "text": "The answer is long, and this channel's messages are backed up (other long answers or many messages are waiting to be posted): ask again in a minute, or narrow it (for example `/audit api-service 20`) to get it in this reply."})
            }
            Err(_) => {
                json!({"response_type": "ephemeral", "text": "The answer is long and cannot be posted in this channel now (opsbot may be stopping): narrow it (for example `/audit api-service 20`) to get it in this reply."})
            }
        }
    }

    /// `POST /slack/interactivity`.
    pub async fn http_interaction(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        if !self.verified(headers, body) {
            return Answer::Unauthorized;
        }
        let form: InteractionForm = match serde_urlencoded::from_bytes(body) {
            Ok(f) => f,
            Err(e) => return Answer::BadRequest(format!("no payload: {e}")),
        };
        self.interaction(&form.payload).await
    }

    /// A `block_actions` payload (HTTP or Socket Mode).
    pub async fn interaction(&self, payload: &str) -> Answer {
        match inbound::interaction(payload) {
            Ok(Some(event)) => {
                self.handle(event).await;
                Answer::Empty
            }
            Ok(None) => Answer::Empty,
            Err(e) => Answer::BadRequest(e.to_string()),
        }
    }

    /// `POST /slack/events`.
    pub async fn http_event(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        if !self.verified(headers, body) {
            return Answer::Unauthorized;
        }
        match serde_json::from_slice::<EventsBody>(body) {
            Ok(parsed) => self.events(parsed).await,
            Err(e) => Answer::BadRequest(format!("not an Events API body: {e}")),
        }
    }

    /// An Events API body (HTTP or Socket Mode).
    pub async fn events(&self, body: EventsBody) -> Answer {
        match body {
            EventsBody::UrlVerification { challenge } => Answer::Json(json!({ "challenge": challenge })),
            EventsBody::EventCallback { event_id, event } => {
                match inbound::event_callback(&event_id, &event) {
                    Ok(Callback::Event(event)) => self.handle(event).await,
                    Ok(Callback::Reaction { actor, approve, channel, ts, dedup_key }) => {
                        let channel_id = channel.trim_start_matches("slack:");
                        match self.store.resolve(&outbound::card_link(channel_id, &ts)) {
                            Ok(Some(request_id)) => {
                                let reply = ReplyTarget::in_thread(channel, ts);
                                let vote = Event::Vote {
                                    actor,
                                    request_id,
                                    approve,
                                    reply,
                                    dedup_key: Some(dedup_key),
                                    version: None,
                                    roles: Vec::new(),
                                };
                                self.handle(vote).await;
                            }
                            Ok(None) => tracing::debug!("reaction on a message that is not an approval card"),
                            Err(e) => tracing::error!(error = %e, "cannot look up the card of a reaction"),
                        }
                    }
                    Ok(Callback::Ignored) => {}
                    Err(e) => return Answer::BadRequest(e.to_string()),
                }
                Answer::Empty
            }
            EventsBody::Other => Answer::Empty,
        }
    }
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Json(_) | Answer::Empty => StatusCode::OK,
            Answer::Unauthorized => StatusCode::UNAUTHORIZED,
            Answer::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}
