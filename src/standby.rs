//! A standby replica's listener (PostgreSQL store), until it leads: live,
//! ready while it knows where the leader takes requests, and every other
//! request forwarded there as it came (headers and raw body, so Slack's and
//! the alert senders' signatures still verify on the leader). So a load
//! balancer may send requests to any replica and each is handled once, by
//! the leader. A forwarded request is never forwarded again.

use crate::store::postgres::Leading;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Marks a request a standby forwarded.
const FORWARDED: &str = "x-opsbot-forwarded";
/// The largest body forwarded (the leader's own limits apply after).
const MAX_BODY: usize = 2 * 1024 * 1024;
/// How long the leader may take to answer a forwarded request (Slack waits 3 s).
const LEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    leading: Mutex<Option<Leading>>,
    http: reqwest::Client,
    /// Where this standby listens.
    address: String,
}

/// The standby's listener, running.
pub struct Standby {
    shared: Arc<Shared>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Standby {
    /// Serves on (a handle to) `listener` until [`Standby::stop`].
    pub fn start(listener: &std::net::TcpListener) -> crate::error::Result<Standby> {
        let http = reqwest::Client::builder()
            .timeout(LEADER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::Error::Io(format!("cannot set up forwarding to the leader: {e}")))?;
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let shared = Arc::new(Shared { leading: Mutex::new(None), http, address });
        let app = axum::Router::new()
            .route("/health/live", get(|| async { "ok\n" }))
            .route("/health/ready", get(ready))
            .route("/metrics", get(metrics))
            .fallback(forward)
            .with_state(shared.clone());
        let own = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(own, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Standby { shared, stop, server })
    }

    /// What the leader election tells of the current leader.
    pub fn follower(&self) -> impl Fn(Option<&Leading>) + Send + 'static {
        let shared = self.shared.clone();
        move |current| {
            // Known before it is said: whoever reads the line may ask at once.
            *shared.leading.lock().expect("standby state") = current.cloned();
            match current {
                Some(leading) => {
                    tracing::info!(leader = %leading, address = ?leading.address, "standby: another replica leads");
                    println!("opsbot standby on {}: {leading} leads", shared.address);
                }
                None => tracing::info!("standby: no replica has led yet"),
            }
        }
    }

    /// Stops answering (requests in flight finish); the caller serves next.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

fn leading(shared: &Shared) -> Option<Leading> {
    shared.leading.lock().expect("standby state").clone()
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match leading(&shared) {
        Some(l) if l.address.is_some() => (StatusCode::OK, format!("ready: standby, {l} leads\n")).into_response(),
        Some(l) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: standby, and {l} gave no address to forward to (set OPSBOT_ADVERTISE_URL)\n"),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: standby, waiting for a leader\n").into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        "# HELP opsbot_leader Whether this replica leads (PostgreSQL store).\n# TYPE opsbot_leader gauge\nopsbot_leader 0\n",
    )
        .into_response()
}

/// Headers that describe one hop, not the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let refuse = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("standby: {why}; retry\n")).into_response();
    if request.headers().contains_key(FORWARDED) {
        return refuse("a forwarded request reached another standby".into());
    }
    let Some(Leading { address: Some(address), .. }) = leading(&shared) else {
        return refuse("no leader to forward to".into());
    };
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = shared.http.request(parts.method.clone(), format!("{address}{path}")).body(body);
    for (name, value) in parts.headers.iter().filter(|(name, _)| !hop_by_hop(name)) {
        out = out.header(name, value);
    }
    let answer = match out.header(FORWARDED, "1").send().await {
        Ok(answer) => answer,
        Err(e) => return refuse(format!("the leader did not answer ({})", e.without_url())),
    };
    let status = answer.status();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in answer.headers().iter().filter(|(name, _)| !hop_by_hop(name)) {
        headers.append(name.clone(), value.clone());
    }
    match answer.bytes().await {
        Ok(body) => (status, headers, body).into_response(),
        Err(e) => refuse(format!("the leader's answer was cut off ({})", e.without_url())),
    }
}
