//! The one HTTP listener of `opsbot serve`: the Slack endpoints, health and
//! metrics. Handlers take the raw body so signatures are checked over the
//! exact bytes before anything is parsed.

use crate::chat::slack::{Answer, SlackIngress};
use crate::engine::Engine;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Slack payloads are small; anything bigger is not from Slack.
const BODY_LIMIT: usize = 256 * 1024;

/// What `/health/ready` checks.
#[derive(Default)]
pub struct Readiness {
    pub store_open: AtomicBool,
    /// Set only when Socket Mode is enabled: true while connected.
    pub slack_socket: Option<Arc<AtomicBool>>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub slack: Option<Arc<SlackIngress>>,
    pub readiness: Arc<Readiness>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/slack/commands", post(slack_commands))
        .route("/slack/interactivity", post(slack_interactivity))
        .route("/slack/events", post(slack_events))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn respond(answer: Answer) -> Response {
    let status = answer.status();
    match answer {
        Answer::Json(body) => (status, Json(body)).into_response(),
        Answer::Empty => status.into_response(),
        Answer::Unauthorized => (status, "invalid or missing Slack signature\n").into_response(),
        Answer::BadRequest(why) => (status, format!("{why}\n")).into_response(),
    }
}

/// A request's headers and raw body, for the signed Slack endpoints. (axum's
/// `HeaderMap` extractor clones the headers; the copy and its drop were ~1%
/// of the bot's CPU under load.) The body is read as by `Bytes`, within
/// [`BODY_LIMIT`].
struct Raw {
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = BytesRejection;

    async fn from_request(request: Request, state: &S) -> Result<Raw, BytesRejection> {
        let (mut parts, body) = request.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Raw { headers, body })
    }
}

fn slack_off() -> Response {
    (StatusCode::NOT_FOUND, "Slack is not enabled in this opsbot's configuration\n").into_response()
}

async fn slack_commands(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    match &state.slack {
        Some(slack) => respond(slack.http_command(&headers, &body).await),
        None => slack_off(),
    }
}

async fn slack_interactivity(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    match &state.slack {
        Some(slack) => respond(slack.http_interaction(&headers, &body).await),
        None => slack_off(),
    }
}

async fn slack_events(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    match &state.slack {
        Some(slack) => respond(slack.http_event(&headers, &body).await),
        None => slack_off(),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    let mut missing = Vec::new();
    if !state.readiness.store_open.load(Ordering::SeqCst) {
        missing.push("store");
    }
    if let Some(socket) = &state.readiness.slack_socket {
        if !socket.load(Ordering::SeqCst) {
            missing.push("slack socket mode");
        }
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", missing.join(", "))).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.engine.metrics().render(state.engine.open_requests());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
