//! Discord: interactions in (the HTTP endpoint, or the gateway), REST out.
//!
//! - `verify`: interaction signatures (Ed25519), checked before anything is parsed;
//! - `inbound`: interactions and reactions → [`crate::event::Event`]s;
//! - `api`: the REST calls; `limits`: Discord's per-route and global rate limits;
//! - `outbound`: Discord's side of the shared send queues (threads, cards
//!   with buttons, ephemeral notes, escaping);
//! - `commands`: the application commands made from the command files;
//! - `gateway`: the gateway connection through serenity (commands, buttons,
//!   ✅/❌ reactions).
//!
//! Only this module (and `chat::slack`) imports a chat platform's crate.

pub mod api;
pub mod commands;
pub mod gateway;
pub mod inbound;
mod limits;
pub mod outbound;
pub mod verify;

use crate::engine::reply::{note_texts, split_plain, Reply};
use crate::engine::Engine;
use crate::event::{Event, InteractionHandle};
use crate::metrics::Metrics;
use api::DiscordApi;
use axum::http::HeaderMap;
use inbound::{Inbound, Interaction};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the first answer may take: Discord gives up at 3 s. What the
/// engine says later edits the "thinking…" answer or follows it.
const ACK_DEADLINE: Duration = Duration::from_millis(2500);
/// Interaction tokens take answers for 15 minutes; a little less, to be sure.
const TOKEN_LIFE: Duration = Duration::from_secs(14 * 60);
/// Discord shows at most 25 autocomplete choices.
const MAX_CHOICES: usize = 25;

/// Discord's interaction response types.
const PONG: u8 = 1;
const MESSAGE: u8 = 4;
const DEFERRED_MESSAGE: u8 = 5;
const DEFERRED_UPDATE: u8 = 6;
const AUTOCOMPLETE: u8 = 8;
/// The message flag that makes it ephemeral.
const EPHEMERAL: u64 = 64;

/// What the HTTP endpoint answers.
#[derive(Debug, PartialEq)]
pub enum HttpAnswer {
    /// 200 with this interaction response.
    Json(Value),
    /// 401: signature missing, wrong or stale. Nothing was parsed or done.
    Unauthorized,
    /// 400: signed, but not an interaction.
    BadRequest(String),
}

/// Turns verified Discord interactions into engine events and builds the answers.
pub struct DiscordIngress {
    verifier: Option<verify::Verifier>,
    engine: Arc<Engine>,
    api: DiscordApi,
    metrics: Arc<Metrics>,
}

/// A private answer (cut to one message: these are short notes).
fn private(text: &str) -> Value {
    let content = crate::chat::split(&outbound::render(text), outbound::MAX_TEXT).swap_remove(0);
    json!({"type": MESSAGE, "data": {"content": content, "flags": EPHEMERAL | outbound::SUPPRESS_EMBEDS, "allowed_mentions": api::no_pings()}})
}

impl DiscordIngress {
    /// `verifier` is `None` when only the gateway is used (Discord signs
    /// nothing there: the connection itself is authenticated).
    pub fn new(verifier: Option<verify::Verifier>, engine: Arc<Engine>, api: DiscordApi) -> DiscordIngress {
        let metrics = engine.metrics().clone();
        DiscordIngress { verifier, engine, api, metrics }
    }

    pub fn api(&self) -> &DiscordApi {
        &self.api
    }

    /// `POST /discord/interactions`: the signature first, then the interaction.
    pub async fn http(&self, headers: &HeaderMap, body: &[u8]) -> HttpAnswer {
        let started = Instant::now();
        let Some(verifier) = &self.verifier else { return HttpAnswer::Unauthorized };
        if let Err(reason) = verifier.verify(headers, body, chrono::Utc::now().timestamp()) {
            self.metrics.rejected_signatures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%reason, "refused an unverified Discord interaction");
            return HttpAnswer::Unauthorized;
        }
        let read = inbound::interaction(self.engine.registry(), body);
        let answer = match read {
            Ok(inbound) => {
                let token = inbound.interaction().map(|i| i.token.clone());
                let response = self.answer(inbound, started).await;
                // The response is on its way: answers that follow may go.
                if let Some(token) = token {
                    self.api.acknowledged(&token, true);
                }
                HttpAnswer::Json(response)
            }
            Err(e) if serde_json::from_slice::<Value>(body).is_err() => HttpAnswer::BadRequest(e),
            // A signed interaction opsbot cannot take (an option it does
            // not have): the person is told why.
            Err(e) => HttpAnswer::Json(private(&format!("opsbot cannot take this: {e}"))),
        };
        self.metrics.ack_latency(started.elapsed());
        answer
    }

    /// An interaction from the gateway: answered through its callback.
    pub async fn gateway(&self, payload: &[u8]) {
        let started = Instant::now();
        let (response, interaction) = match inbound::interaction(self.engine.registry(), payload) {
            Ok(Inbound::Ping) => return,
            Ok(inbound) => {
                let interaction = inbound.interaction().cloned();
                (self.answer(inbound, started).await, interaction)
            }
            Err(e) => {
                let interaction = inbound::handle_of(payload);
                (private(&format!("opsbot cannot take this: {e}")), interaction)
            }
        };
        let Some(interaction) = interaction else { return };
        let answered = self.api.interaction_callback(&interaction.id, &interaction.token, &response).await;
        if let Err(e) = &answered {
            tracing::warn!(error = %e, "could not answer a Discord interaction; what follows goes to the channel");
        }
        self.api.acknowledged(&interaction.token, answered.is_ok());
    }

    /// An interaction that came while too many were being handled.
    pub async fn busy(&self, payload: &[u8]) {
        if let Some(interaction) = inbound::handle_of(payload) {
            let response = private("opsbot is handling too many requests at once; try again in a moment.");
            if let Err(e) = self.api.interaction_callback(&interaction.id, &interaction.token, &response).await {
                tracing::warn!(error = %e, "could not answer a Discord interaction");
            }
        }
    }

    /// A reaction added to a message: a vote if it is ✅/❌ on an opsbot card.
    pub async fn reaction(&self, user: &str, channel: &str, message: &str, emoji: &str, roles: &[String]) {
        let Some(approve) = inbound::reaction_vote(emoji) else { return };
        let request_id = match self.engine.store().resolve(&outbound::card_link(channel, message)) {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up the card of a reaction");
                return;
            }
        };
        let (Ok(actor), Ok(channel_id)) = (
            crate::event::Actor::parse(&format!("discord:{user}")),
            crate::event::qualified_id(&format!("discord:{channel}"), "channel").map(str::to_string),
        ) else {
            return;
        };
        let vote = Event::Vote {
            actor,
            request_id,
            approve,
            reply: crate::event::ReplyTarget::in_thread(channel_id, message),
            // A resumed session may replay the event: it counts once.
            dedup_key: Some(format!("discord:reaction:{channel}:{message}:{user}:{approve}")),
            version: None,
            roles: roles.to_vec(),
        };
        let _ = self.engine.handle(vote).await;
    }

    /// The first answer to an interaction (its type-specific response body).
    async fn answer(&self, inbound: Inbound, started: Instant) -> Value {
        match inbound {
            Inbound::Ping => json!({"type": PONG}),
            Inbound::Autocomplete { typed, .. } => {
                let typed = typed.to_lowercase();
                let choices: Vec<Value> = self
                    .engine
                    .config()
                    .services
                    .keys()
                    .filter(|name| name.to_lowercase().contains(&typed))
                    .take(MAX_CHOICES)
                    .map(|name| json!({"name": name, "value": name}))
                    .collect();
                json!({"type": AUTOCOMPLETE, "data": {"choices": choices}})
            }
            Inbound::Other { .. } => private("opsbot does not handle this kind of interaction."),
            Inbound::Command { event, interaction } => self.command(event, interaction, started).await,
            Inbound::Button { event, interaction } => self.button(event, interaction, started).await,
        }
    }

    fn deadline(started: Instant) -> Duration {
        ACK_DEADLINE.saturating_sub(started.elapsed()).max(Duration::from_millis(100))
    }

    /// `event` answerable through `interaction` for its token's life, with
    /// the member's roles.
    fn with_interaction(&self, mut event: Event, interaction: &Interaction) -> Event {
        match &mut event {
            Event::Command { roles, .. } | Event::Vote { roles, .. } => roles.clone_from(&interaction.roles),
        }
        let handle = InteractionHandle {
            id: interaction.id.clone(),
            token: interaction.token.clone(),
            user: event.actor().clone(),
            expires: Instant::now() + TOKEN_LIFE,
        };
        let (Event::Command { reply, .. } | Event::Vote { reply, .. }) = &mut event;
        reply.interaction = Some(handle);
        event
    }

    /// Hands `event` to the engine, answerable through `interaction`, and
    /// gathers what it says before the deadline.
    async fn handle(
        &self,
        event: Event,
        interaction: &Interaction,
        started: Instant,
    ) -> (crate::engine::Handled, crate::event::ReplyTarget) {
        // What follows through the interaction waits for its first answer.
        self.api.answering(&interaction.token);
        let event = self.with_interaction(event, interaction);
        let target = match &event {
            Event::Command { reply, .. } | Event::Vote { reply, .. } => reply.clone(),
        };
        (self.engine.handle_collecting(event, Self::deadline(started)).await, target)
    }

    async fn command(&self, event: Event, interaction: Interaction, started: Instant) -> Value {
        let (handled, target) = self.handle(event, &interaction, started).await;
        if handled.duplicate {
            return private("Already received.");
        }
        if handled.deferred && handled.replies.is_empty() {
            // Discord shows "opsbot is thinking…" until the answer edits it.
            self.api.deferred(&interaction.token);
            return json!({"type": DEFERRED_MESSAGE});
        }
        let (public, privates) = split_plain(handled.replies);
        if public.is_empty() {
            if privates.is_empty() {
                return private("Done — follow the request's thread.");
            }
            return private(&note_texts(privates));
        }
        let text = outbound::render(&public.join("\n"));
        // Seen only by the person they are for, after the public answer.
        for (to, text) in privates {
            self.engine.send_reply(&target, Reply::Private { to, text }).await;
        }
        if text.chars().count() <= outbound::MAX_TEXT {
            return json!({"type": MESSAGE, "data": {"content": text, "flags": outbound::SUPPRESS_EMBEDS, "allowed_mentions": api::no_pings()}});
        }
        // Longer than one message (a long /audit): it follows in parts,
        // promised only once the channel's queue has taken it.
        self.api.deferred(&interaction.token);
        match self.engine.try_send_reply(&target, Reply::Answer(public.join("\n"))).await {
            Ok(()) => json!({"type": DEFERRED_MESSAGE}),
            Err(_) => {
                self.api.not_deferred(&interaction.token);
                private("The answer is long, and this channel's messages are backed up: ask again in a minute, or narrow it (for example `/audit api-service 20`).")
            }
        }
    }

    async fn button(&self, event: Event, interaction: Interaction, started: Instant) -> Value {
        let (handled, target) = self.handle(event, &interaction, started).await;
        if handled.duplicate {
            return json!({"type": DEFERRED_UPDATE});
        }
        let (public, privates) = split_plain(handled.replies);
        for text in public {
            self.engine.send_reply(&target, Reply::Text(text)).await;
        }
        if privates.is_empty() {
            // The card itself is edited through the send queue.
            json!({"type": DEFERRED_UPDATE})
        } else {
            private(&note_texts(privates))
        }
    }
}
