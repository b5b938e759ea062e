//! The one HTTP listener of `opsbot serve`: the Slack endpoints, Discord's
//! interactions endpoint, health and metrics. Handlers take the raw body so signatures are checked over the
//! exact bytes before anything is parsed.

use crate::chat::discord::{DiscordIngress, HttpAnswer};
use crate::chat::slack::{Answer, SlackIngress};
use crate::engine::Engine;
use axum::body::{Bytes, HttpBody};
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
    /// Set only when the Discord gateway is enabled: true while connected.
    pub discord_gateway: Option<Arc<AtomicBool>>,
    /// Background tasks that died (panicked, or a loop that ended), and
    /// actions whose backend panicked.
    pub tasks: Vec<Arc<crate::tasks::Health>>,
    /// The audit log: not ready once a commit failed.
    pub audit: Option<Arc<dyn crate::audit::AuditLog>>,
    /// On PostgreSQL: this replica's leadership (it serves only while it
    /// leads; losing the lock makes it neither live nor ready).
    pub leader: Option<Arc<crate::store::postgres::Leader>>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub slack: Option<Arc<SlackIngress>>,
    pub discord: Option<Arc<DiscordIngress>>,
    /// The enabled alert sources' secrets (`[alerts]`); none: intake is off.
    pub alerts: Option<Arc<crate::alert::intake::AlertSecrets>>,
    /// `[ci]`'s shared secret; none: `/ci/commits` is off.
    pub ci_secret: Option<Arc<String>>,
    /// Socket Mode envelopes relayed by standbys (replicas on PostgreSQL
    /// with Slack in Socket Mode): handled by this ingress, signed with this key.
    pub slack_relay: Option<Arc<(Arc<SlackIngress>, crate::standby::RelayCheck)>>,
    pub readiness: Arc<Readiness>,
    /// Requests run on tracked tasks of their own (see [`detached`]).
    pub tasks: crate::tasks::Tasks,
    /// Permits for requests in flight ([`HANDLERS`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// Slack requests handled at once over HTTP. An ack takes about a
/// millisecond, so this is far above any real load; it bounds memory when
/// something downstream stalls.
pub const HANDLERS: usize = 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/slack/commands", post(slack_commands))
        .route("/slack/interactivity", post(slack_interactivity))
        .route("/slack/events", post(slack_events))
        .route(crate::standby::RELAY_PATH, post(slack_socket_relay))
        .route("/discord/interactions", post(discord_interactions))
        .route("/alerts/alertmanager", post(alerts_alertmanager))
        .route("/alerts/datadog", post(alerts_datadog))
        .route("/alerts/pagerduty", post(alerts_pagerduty))
        .route("/ci/commits", post(ci_commits))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
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
/// of the bot's CPU under load.) The body is read within [`BODY_LIMIT`]; a
/// body whose declared length is over it is refused before any of it is read,
/// so a client waiting on `Expect: 100-continue` never has to send it.
struct Raw {
    headers: HeaderMap,
    body: Bytes,
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the {} KiB limit; no chat platform sends one that big\n", BODY_LIMIT / 1024),
    )
        .into_response()
}

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Raw, Response> {
        let (mut parts, body) = request.into_parts();
        if body.size_hint().lower() > BODY_LIMIT as u64 {
            return Err(too_large());
        }
        let headers = std::mem::take(&mut parts.headers);
        let mut request = Request::from_parts(parts, body);
        DefaultBodyLimit::max(BODY_LIMIT).apply(&mut request);
        match Bytes::from_request(request, state).await {
            Ok(body) => Ok(Raw { headers, body }),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(rejection) => Err(rejection.into_response()),
        }
    }
}

fn slack_off() -> Response {
    (StatusCode::NOT_FOUND, "Slack is not enabled in this opsbot's configuration\n").into_response()
}

/// Which Slack endpoint a request came to.
#[derive(Clone, Copy)]
enum Endpoint {
    Commands,
    Interactivity,
    Events,
}

/// Runs a Slack request on a tracked task of its own (see [`run_detached`]).
async fn detached(state: AppState, endpoint: Endpoint, Raw { headers, body }: Raw) -> Response {
    let Some(slack) = state.slack.clone() else { return slack_off() };
    let work = async move {
        respond(match endpoint {
            Endpoint::Commands => slack.http_command(&headers, &body).await,
            Endpoint::Interactivity => slack.http_interaction(&headers, &body).await,
            Endpoint::Events => slack.http_event(&headers, &body).await,
        })
    };
    run_detached(&state, "slack request", work).await
}

/// A Socket Mode envelope a standby relayed: its signature checked before
/// the body is read, then handled as this replica's own socket would; the
/// answer carries the ack payload.
async fn slack_socket_relay(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    let Some(relay) = state.slack_relay.clone() else {
        return (StatusCode::NOT_FOUND, "Socket Mode relay is off (it runs with Slack in Socket Mode on PostgreSQL)\n")
            .into_response();
    };
    if let Err(why) = relay.1.check(&headers, &body, chrono::Utc::now().timestamp()) {
        return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
    }
    let work = async move {
        match crate::chat::slack::socket::relayed(&relay.0, &body).await {
            Ok(payload) => Json(serde_json::json!({ "payload": payload })).into_response(),
            Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        }
    };
    run_detached(&state, "slack socket relay", work).await
}

/// `POST /discord/interactions`.
async fn discord_interactions(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    let Some(discord) = state.discord.clone() else {
        return (StatusCode::NOT_FOUND, "Discord interactions are not enabled in this opsbot's configuration\n")
            .into_response();
    };
    let work = async move {
        match discord.http(&headers, &body).await {
            HttpAnswer::Json(body) => Json(body).into_response(),
            HttpAnswer::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "invalid or missing Discord signature\n").into_response()
            }
            HttpAnswer::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        }
    };
    run_detached(&state, "discord interaction", work).await
}

/// Alert payloads: an Alertmanager group of many alerts can be large;
/// past this a body is refused (413) before it is read.
pub const ALERT_BODY_LIMIT: usize = 1024 * 1024;

async fn alerts_alertmanager(State(state): State<AppState>, request: Request) -> Response {
    take_alerts(state, crate::alert::Source::Alertmanager, request).await
}

async fn alerts_datadog(State(state): State<AppState>, request: Request) -> Response {
    take_alerts(state, crate::alert::Source::Datadog, request).await
}

async fn alerts_pagerduty(State(state): State<AppState>, request: Request) -> Response {
    take_alerts(state, crate::alert::Source::Pagerduty, request).await
}

/// One alert delivery: its credentials checked before its body is read
/// (PagerDuty's signature, over the raw body, before it is parsed), then
/// parsed (400 names what is wrong: senders do not retry it), then taken.
/// 2xx only once its records are durable; 503 when they could not be made
/// (senders retry 5xx).
async fn take_alerts(state: AppState, source: crate::alert::Source, request: Request) -> Response {
    use crate::alert::intake::Refusal;
    let name = source.name();
    let Some(secrets) = state.alerts.clone() else {
        return (StatusCode::NOT_FOUND, "alert intake is not enabled in this opsbot's configuration ([alerts])\n")
            .into_response();
    };
    let metrics = state.engine.metrics().clone();
    let counted = Arc::new(AtomicBool::new(false));
    let count = {
        let counted = counted.clone();
        let metrics = metrics.clone();
        move |answer: &str| {
            counted.store(true, Ordering::Relaxed);
            metrics.webhook(name, answer);
        }
    };
    let (parts, body) = request.into_parts();
    let header = |key: &str| parts.headers.get(key).and_then(|v| v.to_str().ok()).map(str::to_string);
    match secrets.check_headers(source, header) {
        Ok(()) => {}
        Err(Refusal::Off) => {
            return (StatusCode::NOT_FOUND, format!("{name} alerts are not enabled: configure [alerts.{name}]\n"))
                .into_response()
        }
        Err(Refusal::Unauthorized(why)) => {
            count("unauthorized");
            return (StatusCode::UNAUTHORIZED, format!("{name} alert refused: {why}\n")).into_response();
        }
    }
    let too_large = || {
        count("too_large");
        (StatusCode::PAYLOAD_TOO_LARGE, format!("alert body over the {} KiB limit\n", ALERT_BODY_LIMIT / 1024))
            .into_response()
    };
    if body.size_hint().lower() > ALERT_BODY_LIMIT as u64 {
        return too_large();
    }
    let signature = header("x-pagerduty-signature");
    let mut request = Request::from_parts(parts, body);
    DefaultBodyLimit::max(ALERT_BODY_LIMIT).apply(&mut request);
    let bytes = match Bytes::from_request(request, &()).await {
        Ok(bytes) => bytes,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        Err(rejection) => return rejection.into_response(),
    };
    if source == crate::alert::Source::Pagerduty {
        if let Err(refused) = secrets.check_signature(signature.as_deref().unwrap_or_default(), &bytes) {
            let why = match refused {
                Refusal::Unauthorized(why) => why,
                Refusal::Off => "PagerDuty alerts are not enabled",
            };
            count("unauthorized");
            return (StatusCode::UNAUTHORIZED, format!("{name} alert refused: {why}\n")).into_response();
        }
    }
    let parsed = match source {
        crate::alert::Source::Alertmanager => crate::alert::alertmanager(&bytes).map(|(notices, truncated)| {
            if truncated > 0 {
                tracing::warn!(
                    truncated,
                    "Alertmanager left alerts out of a webhook (its max_alerts); they are not shown"
                );
            }
            notices
        }),
        crate::alert::Source::Datadog => crate::alert::datadog(&bytes).map(|n| vec![n]),
        crate::alert::Source::Pagerduty => crate::alert::pagerduty(&bytes).map(|n| n.into_iter().collect()),
    };
    let notices = match parsed {
        Ok(notices) => notices,
        Err(malformed) => {
            count("malformed");
            return (StatusCode::BAD_REQUEST, format!("{malformed}\n")).into_response();
        }
    };
    let engine = state.engine.clone();
    let work = async move {
        match engine.take_alerts(notices).await {
            Ok(taken) => {
                count(if taken > 0 { "changed" } else { "unchanged" });
                Json(serde_json::json!({"ok": true, "changes": taken})).into_response()
            }
            Err(e) => {
                count("unavailable");
                tracing::error!(error = %e, source = name, "an alert delivery was not recorded; the sender will retry");
                (StatusCode::SERVICE_UNAVAILABLE, "the alert could not be recorded; retry\n").into_response()
            }
        }
    };
    let answer = run_detached(&state, "alert delivery", work).await;
    if !counted.load(Ordering::Relaxed) {
        // Refused before it ran (too many requests at once), or it panicked.
        let error = answer.status() == StatusCode::INTERNAL_SERVER_ERROR;
        metrics.webhook(name, if error { "error" } else { "busy" });
    }
    answer
}

/// `POST /ci/commits`: CI saying which commit a version was built from.
/// The body is signed as PagerDuty signs (`X-Opsbot-Signature: v1=<hex
/// HMAC-SHA256 of the body>`), checked before it is parsed.
async fn ci_commits(State(state): State<AppState>, Raw { headers, body }: Raw) -> Response {
    let Some(secret) = state.ci_secret.clone() else {
        return (StatusCode::NOT_FOUND, "CI commit records are not enabled: configure [ci]\n").into_response();
    };
    let metrics = state.engine.metrics().clone();
    let signature = headers.get("x-opsbot-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !crate::alert::pagerduty_signed(signature, &body, std::slice::from_ref(&*secret)) {
        metrics.webhook("ci", "unauthorized");
        return (StatusCode::UNAUTHORIZED, "missing or wrong X-Opsbot-Signature\n").into_response();
    }
    let record: crate::engine::CommitRecord = match serde_json::from_slice(&body) {
        Ok(record) => record,
        Err(e) => {
            metrics.webhook("ci", "malformed");
            return (
                StatusCode::BAD_REQUEST,
                format!("not a commit record ({{\"service\", \"version\", \"commit\", \"committed_at\"}}): {e}\n"),
            )
                .into_response();
        }
    };
    let engine = state.engine.clone();
    let counted = Arc::new(AtomicBool::new(false));
    let ran = counted.clone();
    let work = async move {
        let count = |answer: &str| {
            ran.store(true, Ordering::Relaxed);
            engine.metrics().webhook("ci", answer)
        };
        match engine.take_commit(record).await {
            Ok(()) => {
                count("recorded");
                Json(serde_json::json!({"ok": true})).into_response()
            }
            Err(crate::Error::Invalid(why)) => {
                count("malformed");
                (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
            }
            Err(e) => {
                count("unavailable");
                tracing::error!(error = %e, "a CI commit record was not recorded; CI should retry");
                (StatusCode::SERVICE_UNAVAILABLE, "the record could not be made; retry\n").into_response()
            }
        }
    };
    let answer = run_detached(&state, "ci commit", work).await;
    if !counted.load(Ordering::Relaxed) {
        // Refused before it ran (too many requests at once), or it panicked.
        let error = answer.status() == StatusCode::INTERNAL_SERVER_ERROR;
        metrics.webhook("ci", if error { "error" } else { "busy" });
    }
    answer
}

/// Runs a request on a tracked task of its own, so the engine's work runs
/// to its end even if the platform hangs up (both stop waiting after 3 s)
/// and hyper drops this handler; a panic is logged, counted and answers
/// 500. At most [`HANDLERS`] run at once; past that the answer is 503.
async fn run_detached(
    state: &AppState,
    name: &'static str,
    work: impl std::future::Future<Output = Response> + Send + 'static,
) -> Response {
    // Bounded: past this many requests in flight, the platform is told to
    // come back later rather than the bot growing without limit.
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "opsbot is handling too many requests at once; retry shortly\n")
            .into_response();
    };
    let work = async move {
        let answer = work.await;
        drop(permit);
        answer
    };
    match state.tasks.request(name, work).await {
        Ok(Some(answer)) => answer,
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "opsbot hit an internal error; see its logs\n").into_response(),
    }
}

async fn slack_commands(State(state): State<AppState>, raw: Raw) -> Response {
    detached(state, Endpoint::Commands, raw).await
}

async fn slack_interactivity(State(state): State<AppState>, raw: Raw) -> Response {
    detached(state, Endpoint::Interactivity, raw).await
}

async fn slack_events(State(state): State<AppState>, raw: Raw) -> Response {
    detached(state, Endpoint::Events, raw).await
}

/// Liveness: false once the audit store has failed. The bot takes no
/// command then (nothing unrecorded may run), and only a restart (after
/// the disk is fixed) brings it back.
async fn live(State(state): State<AppState>) -> Response {
    liveness(&state.readiness).into_response()
}

fn liveness(readiness: &Readiness) -> (StatusCode, String) {
    if readiness.leader.as_ref().is_some_and(|l| l.term().is_none()) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not live: this replica lost the leader's lock\n".into());
    }
    match readiness.audit.as_ref().and_then(|a| a.failed()) {
        Some(failed) => (StatusCode::SERVICE_UNAVAILABLE, format!("not live: audit store failed: {failed}\n")),
        None => (StatusCode::OK, "ok\n".into()),
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
    if let Some(gateway) = &state.readiness.discord_gateway {
        if !gateway.load(Ordering::SeqCst) {
            missing.push("discord gateway");
        }
    }
    let mut dead: Vec<String> = state.readiness.tasks.iter().flat_map(|h| h.dead()).collect();
    let recent_panics: Vec<String> = state
        .readiness
        .tasks
        .iter()
        .filter_map(|h| h.recent_request_panic(crate::tasks::REQUEST_PANIC_UNREADY))
        .collect();
    if let Some(failed) = state.readiness.audit.as_ref().and_then(|a| a.failed()) {
        dead.push(format!("audit store failed: {failed}"));
    }
    let dead_text = dead
        .iter()
        .map(|d| if d.starts_with("audit store") { d.clone() } else { format!("task {d}") })
        .collect::<Vec<_>>();
    missing.extend(dead_text.iter().map(String::as_str));
    missing.extend(recent_panics.iter().map(String::as_str));
    let leads = state.readiness.leader.as_ref().map(|l| (l.holder.clone(), l.term()));
    if let Some((_, None)) = &leads {
        missing.push("leadership (this replica lost the leader's lock)");
    }
    if missing.is_empty() {
        match leads {
            Some((holder, Some(term))) => {
                (StatusCode::OK, format!("ready: leader {holder}, term {term}\n")).into_response()
            }
            _ => (StatusCode::OK, "ready\n").into_response(),
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", missing.join(", "))).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.engine.metrics().render(state.engine.open_requests());
    let panics: u64 = state.readiness.tasks.iter().map(|h| h.request_panics()).sum();
    body.push_str(&format!(
        "# HELP opsbot_request_panics_total Requests whose handler panicked (a bug; see the log).\n\
         # TYPE opsbot_request_panics_total counter\nopsbot_request_panics_total {panics}\n"
    ));
    if let Some(leader) = &state.readiness.leader {
        let term = leader.term();
        body.push_str(&format!(
            "# HELP opsbot_leader Whether this replica leads (PostgreSQL store).\n# TYPE opsbot_leader gauge\nopsbot_leader {}\n\
             # HELP opsbot_leader_term The term this replica leads in (0 once it lost the lock).\n# TYPE opsbot_leader_term gauge\nopsbot_leader_term {}\n",
            u8::from(term.is_some()),
            term.unwrap_or(0)
        ));
    }
    if let Some((count, time)) = state.readiness.audit.as_ref().and_then(|a| a.commits()) {
        body.push_str(&format!(
            "# HELP opsbot_store_commits_total Audit commits made (each one transaction or flush).\n# TYPE opsbot_store_commits_total counter\nopsbot_store_commits_total {count}\n\
             # HELP opsbot_store_commit_seconds_total Time spent in those commits; divide by the count for the mean latency.\n# TYPE opsbot_store_commit_seconds_total counter\nopsbot_store_commit_seconds_total {:.6}\n",
            time.as_secs_f64()
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed audit store takes no more commands until a restart, so it
    /// must fail liveness (a restart), not only readiness.
    #[tokio::test]
    async fn a_failed_audit_store_fails_liveness() {
        use crate::audit::{AuditEntry, AuditLog, Effect, RecordKind};
        let store = crate::store::SledStore::temporary().unwrap();
        let readiness = Readiness { audit: Some(store.audit()), ..Default::default() };
        assert_eq!(liveness(&readiness).0, StatusCode::OK);
        let failing: Effect = Box::new(|| Err("disk full".into()));
        assert!(store.audit().commit(vec![AuditEntry::new(RecordKind::Request)], Some(failing)).await.is_err());
        let (status, why) = liveness(&readiness);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("audit store failed") && why.contains("disk full"), "{why}");
    }
    use axum::body::Body;
    use futures_util::stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that says how long it is and never delivers a byte, like a
    /// client that sent its headers and waits for `100 Continue`.
    struct Declared(u64);

    impl HttpBody for Declared {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.0)
        }
    }

    async fn status_of(body: Body) -> Result<usize, StatusCode> {
        Raw::from_request(Request::new(body), &()).await.map(|raw| raw.body.len()).map_err(|r| r.status())
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_whether_declared_or_streamed() {
        assert_eq!(status_of(Body::from(vec![b'a'; BODY_LIMIT])).await, Ok(BODY_LIMIT));
        // Declared too long: refused without waiting for the body.
        let declared = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            status_of(Body::new(Declared(BODY_LIMIT as u64 + 1))),
        );
        assert_eq!(declared.await.expect("answered without reading"), Err(StatusCode::PAYLOAD_TOO_LARGE));
        // Length unknown until read (chunked): refused once it passes the limit.
        let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 64 * 1024 + 1])));
        assert_eq!(status_of(Body::from_stream(stream::iter(chunks))).await, Err(StatusCode::PAYLOAD_TOO_LARGE));
    }
}
