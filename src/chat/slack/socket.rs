//! Socket Mode: opsbot dials Slack instead of Slack calling it. Each envelope
//! is handled and acked with its `envelope_id` (slash commands with their
//! answer as the ack payload); `disconnect` frames and dropped sockets lead to
//! a fresh `apps.connections.open` with backoff. Redeliveries across a
//! reconnect are harmless: every input carries its dedup key.

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

/// Runs until `stop` is cancelled. `connected` is true while a socket is open
/// and Slack said hello.
pub async fn run(
    ingress: Arc<SlackIngress>,
    api: SlackApi,
    app_token: String,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let token = SlackApiToken::new(app_token.into());
    let mut backoff = FIRST_BACKOFF;
    while !stop.is_cancelled() {
        let url = {
            let client = api.client();
            let session = client.open_session(&token);
            session.apps_connections_open(&SlackApiAppsConnectionOpenRequest::new()).await
        };
        match url {
            Ok(open) => match session_loop(&ingress, open.url.0.as_str(), &connected, &stop).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => tracing::warn!(error = %e, "Socket Mode connection ended"),
            },
            Err(e) => tracing::warn!(error = %e, "apps.connections.open failed"),
        }
        connected.store(false, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One WebSocket session; Ok(()) when Slack asked us to reconnect.
async fn session_loop(
    ingress: &SlackIngress,
    url: &str,
    connected: &AtomicBool,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("cannot connect: {e}"))?;
    loop {
        let message = tokio::select! {
            m = socket.next() => m,
            _ = stop.cancelled() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(data))) => {
                socket.send(Message::Pong(data)).await.map_err(|e| e.to_string())?;
                continue;
            }
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
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
                let _ = socket.close(None).await;
                return Ok(());
            }
            _ => {
                let Some(id) = envelope.envelope_id.clone() else { continue };
                let payload = handle(ingress, &envelope).await;
                let mut ack = json!({ "envelope_id": id });
                if let Some(payload) = payload {
                    ack["payload"] = payload;
                }
                socket.send(Message::Text(ack.to_string().into())).await.map_err(|e| e.to_string())?;
            }
        }
    }
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
