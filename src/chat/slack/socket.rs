//! Socket Mode: opsbot dials Slack instead of Slack calling it. Each envelope
//! is handled and acked with its `envelope_id` (slash commands with their
//! answer as the ack payload); `disconnect` frames, dropped sockets and
//! silent ones lead to a fresh `apps.connections.open` with backoff.
//! Redeliveries across a reconnect are harmless: every input carries its
//! dedup key.
//!
//! A hand-written loop rather than slack-morphism's own Socket Mode listener
//! (2.31), because that listener cannot tell the application when its
//! connection is lost — and `/health/ready` must be false while no socket is
//! live. It also reconnects without backoff when a socket drops right after
//! opening, and reads no pongs while a callback runs (a slow command would
//! look like a dead peer). Here:
//! - opsbot pings every `socket_ping`; any frame from Slack (pong, ping,
//!   envelope) counts as life; with none for three intervals the socket is
//!   taken for dead, closed, and replaced — a half-open connection no longer
//!   goes unnoticed;
//! - envelopes are handled on their own tracked tasks (at most 64 at once),
//!   so the socket keeps being read, and pinged, while a command runs; a
//!   handler is never cut off when its session ends (the engine's work runs
//!   to its end; only its ack is lost, and Slack redelivers — harmless, as
//!   every input carries its dedup key); a handler that panics is logged and
//!   makes readiness false, and the socket carries on;
//! - `connected` is true only between Slack's `hello` and the end of that
//!   session; readiness reads it;
//! - the backoff grows on every failed attempt and on sessions that end
//!   within a minute, and resets only after a session that lasted; Slack's
//!   routine `disconnect` is answered with a new socket at once;
//! - a socket that never says `hello` within 15 s is replaced.
//!
//! With replicas on PostgreSQL every replica holds a connection (Slack
//! gives each envelope to one of them). A standby hands each envelope to the
//! leader ([`Handler::Leader`], a signed request to its `/slack/socket-relay`)
//! and acks with the leader's answer; when the leader does not answer it
//! does not ack, and Slack redelivers (events) or shows the person the
//! command failed.

use super::api::SlackApi;
use super::inbound::{EventsBody, SlashCommand};
use super::{Answer, SlackIngress};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A session shorter than this does not reset the backoff.
const STEADY: Duration = Duration::from_secs(60);
/// Envelopes handled at once; past this, reading waits.
const IN_FLIGHT: usize = 64;
/// Longest `apps.connections.open`, the WebSocket handshake, and the wait
/// for Slack's `hello` after it, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A session that Slack ended after at least this long is routine, and is
/// replaced without backoff.
const ROUTINE: Duration = Duration::from_secs(1);

/// Where envelopes are handled.
#[derive(Clone)]
pub enum Handler {
    /// In this process (the leader, or the only replica).
    Here(Arc<SlackIngress>),
    /// By the leader, this replica being a standby.
    Leader(Arc<crate::standby::Relay>),
}

/// Runs until `stop` is cancelled. `connected` is true while a socket is
/// open, alive, and Slack said hello.
pub async fn run(
    ingress: Handler,
    api: SlackApi,
    app_token: String,
    ping: Duration,
    connected: Arc<AtomicBool>,
    tasks: crate::tasks::Tasks,
    stop: CancellationToken,
) {
    let token = SlackApiToken::new(app_token.into());
    let mut backoff = FIRST_BACKOFF;
    // One limit for the loop's life: handlers still running from an earlier
    // session hold their permits, so reconnects cannot pile them up.
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    while !stop.is_cancelled() {
        // A standby connects only while it can relay: Slack would give a
        // socket that cannot an envelope nobody answers.
        if let Handler::Leader(relay) = &ingress {
            if !relay.can_relay() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        }
        let url = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let client = api.client();
            let session = client.open_session(&token);
            session.apps_connections_open(&SlackApiAppsConnectionOpenRequest::new()).await
        })
        .await;
        let started = Instant::now();
        let mut routine = false;
        match url {
            Ok(Ok(open)) => {
                match session_loop(&ingress, open.url.0.as_str(), ping, &connected, &tasks, &room, &stop).await {
                    Ok(()) => {
                        tracing::info!("Socket Mode session ended");
                        routine = started.elapsed() >= ROUTINE;
                    }
                    Err(e) => tracing::warn!(error = %e, "Socket Mode connection ended"),
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "apps.connections.open failed"),
            Err(_) => tracing::warn!("apps.connections.open did not answer within {}s", CONNECT_TIMEOUT.as_secs()),
        }
        connected.store(false, Ordering::SeqCst);
        if started.elapsed() >= STEADY {
            backoff = FIRST_BACKOFF;
        }
        // Slack's routine `disconnect` (it refreshes sockets every few
        // hours) is answered at once, so readiness is false only for the
        // moment a new socket takes to open; failures back off.
        if routine {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Handles one envelope on its own task, holding `permit` until it is done,
/// and queues its ack for the session.
fn handle_envelope(
    tasks: &crate::tasks::Tasks,
    ingress: &Handler,
    acks: &mpsc::Sender<String>,
    id: String,
    envelope: Envelope,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (ingress, acks) = (ingress.clone(), acks.clone());
    tasks.request("slack socket mode envelope", async move {
        let payload = match &ingress {
            Handler::Here(ingress) => handle(ingress, &envelope).await,
            Handler::Leader(relay) => {
                let payload = envelope.payload.clone().unwrap_or(Value::Null);
                match relay.envelope(&envelope.kind, &payload).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        // No ack: Slack redelivers, maybe to the leader's socket.
                        tracing::warn!(error = %e, kind = %envelope.kind, "the leader did not take a Socket Mode envelope; not acked");
                        drop(permit);
                        return;
                    }
                }
            }
        };
        let mut ack = json!({ "envelope_id": id });
        if let Some(payload) = payload {
            ack["payload"] = payload;
        }
        // The session may have ended meanwhile: then Slack redelivers.
        let _ = acks.try_send(ack.to_string());
        drop(permit);
    });
}

/// One WebSocket session; Ok(()) when Slack asked us to reconnect or we stop.
async fn session_loop(
    ingress: &Handler,
    url: &str,
    ping: Duration,
    connected: &AtomicBool,
    tasks: &crate::tasks::Tasks,
    room: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| format!("the socket did not open within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (acks, mut to_send) = mpsc::channel::<String>(IN_FLIGHT);
    let mut pings = tokio::time::interval(ping);
    pings.tick().await;
    let mut last_heard = Instant::now();
    let opened = Instant::now();
    // An envelope read while every handler permit was taken: reading
    // stops until one frees, while pings, acks and `stop` go on.
    let mut waiting: Option<(String, Envelope)> = None;
    let result = loop {
        let silent_for = last_heard.elapsed();
        // Frames are not read while an envelope waits, so silence then
        // says nothing about the connection.
        if waiting.is_none() && silent_for >= ping * 3 {
            break Err(format!("no frame from Slack for {}ms; the connection is dead", silent_for.as_millis()));
        }
        // A socket that answers pings but never says hello delivers nothing.
        if !connected.load(Ordering::SeqCst) && opened.elapsed() >= CONNECT_TIMEOUT {
            break Err(format!("Slack sent no hello within {}s", CONNECT_TIMEOUT.as_secs()));
        }
        let message = tokio::select! {
            m = socket.next(), if waiting.is_none() => m,
            Ok(permit) = room.clone().acquire_owned(), if waiting.is_some() => {
                if let Some((id, envelope)) = waiting.take() {
                    handle_envelope(tasks, ingress, &acks, id, envelope, permit);
                }
                last_heard = Instant::now();
                continue;
            }
            _ = pings.tick() => {
                if let Err(e) = socket.send(Message::Ping(Vec::new().into())).await {
                    break Err(format!("cannot ping: {e}"));
                }
                continue;
            }
            Some(ack) = to_send.recv() => {
                if let Err(e) = socket.send(Message::Text(ack.into())).await {
                    break Err(format!("cannot ack: {e}"));
                }
                continue;
            }
            _ = stop.cancelled() => break Ok(()),
        };
        last_heard = Instant::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            // tungstenite answers pings itself; pongs and pings only show life.
            Some(Ok(Message::Close(_))) | None => break Err("socket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Err(e.to_string()),
        };
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable Socket Mode frame");
                continue;
            }
        };
        match envelope.kind.as_str() {
            "hello" => connected.store(true, Ordering::SeqCst),
            "disconnect" => {
                tracing::info!(reason = ?envelope.reason, "Slack asked to reconnect");
                break Ok(());
            }
            _ => {
                let Some(id) = envelope.envelope_id.clone() else { continue };
                match room.clone().try_acquire_owned() {
                    Ok(permit) => handle_envelope(tasks, ingress, &acks, id, envelope, permit),
                    Err(_) => waiting = Some((id, envelope)),
                }
            }
        }
    };
    connected.store(false, Ordering::SeqCst);
    // Acks already made still go out if the socket works.
    while let Ok(ack) = to_send.try_recv() {
        let _ = socket.send(Message::Text(ack.into())).await;
    }
    let _ = socket.close(None).await;
    result
}

/// An envelope a standby relayed (`{"type": …, "payload": …}`, its
/// signature already checked): handled here; the ack payload, if any.
pub async fn relayed(ingress: &SlackIngress, body: &[u8]) -> Result<Option<Value>, String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a relayed Socket Mode envelope: {e}"))?;
    Ok(handle(ingress, &envelope).await)
}

/// Handles one envelope; returns the ack payload, if it has one.
async fn handle(ingress: &SlackIngress, envelope: &Envelope) -> Option<Value> {
    let payload = envelope.payload.clone().unwrap_or(Value::Null);
    match envelope.kind.as_str() {
        "slash_commands" => match serde_json::from_value::<SlashCommand>(payload) {
            Ok(command) => Some(ingress.command(command).await),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable slash command envelope");
                None
            }
        },
        "interactive" => {
            if let Answer::BadRequest(e) = ingress.interaction(&payload.to_string()).await {
                tracing::warn!(error = %e, "unreadable interaction envelope");
            }
            None
        }
        "events_api" => {
            match serde_json::from_value::<EventsBody>(payload) {
                Ok(body) => {
                    ingress.events(body).await;
                }
                Err(e) => tracing::warn!(error = %e, "unreadable events envelope"),
            }
            None
        }
        other => {
            tracing::debug!(kind = other, "Socket Mode envelope ignored");
            None
        }
    }
}
