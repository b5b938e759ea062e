//! A standby replica's listener (PostgreSQL store), until it leads: live,
//! ready while it knows where the leader takes requests, and every other
//! request forwarded there as it came (headers and raw body, so Slack's and
//! the alert senders' signatures still verify on the leader). So a load
//! balancer may send requests to any replica and each is handled once, by
//! the leader. A forwarded request is never forwarded again.
//!
//! A standby also holds a Slack Socket Mode connection when Slack is in
//! Socket Mode: each envelope Slack gives it is relayed to the leader
//! ([`Relay`]) as a request signed with a key derived from the app-level
//! token every replica holds ([`RelayKey`]), which the leader checks before
//! reading the body.

use crate::store::postgres::Leading;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
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

    /// Relays Socket Mode envelopes to whoever leads, signed with `key`.
    pub fn relay(&self, key: RelayKey) -> Relay {
        Relay { shared: self.shared.clone(), key }
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

/// Where the leader takes relayed Socket Mode envelopes.
pub const RELAY_PATH: &str = "/slack/socket-relay";
const RELAY_TIMESTAMP: &str = "x-opsbot-relay-timestamp";
const RELAY_SIGNATURE: &str = "x-opsbot-relay-signature";
/// How old (or how far ahead) a relayed envelope's timestamp may be.
const RELAY_SKEW: u64 = 300;

/// The key relayed envelopes are signed with: HMAC-SHA256 of a fixed label
/// under the Slack app-level token, the credential that lets a process
/// receive Socket Mode envelopes at all. Never printed.
#[derive(Clone)]
pub struct RelayKey(Hmac<Sha256>);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(..)")
    }
}

impl RelayKey {
    pub fn from_app_token(token: &str) -> RelayKey {
        let mut derive = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
        derive.update(b"opsbot socket mode relay v1");
        let key = derive.finalize().into_bytes();
        RelayKey(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(format!("v1:{timestamp}:").as_bytes());
        mac.update(body);
        mac
    }

    /// The signature header's value for `body` sent at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        format!("v1={}", hex::encode(self.mac(timestamp, body).finalize().into_bytes()))
    }

    /// Checks a relayed request's timestamp (within five minutes of `now`)
    /// and signature (in constant time), before its body is read as JSON;
    /// gives both back, checked.
    pub fn check(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(i64, Vec<u8>), &'static str> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let timestamp: i64 =
            text(RELAY_TIMESTAMP).and_then(|t| t.parse().ok()).ok_or("missing or unreadable relay timestamp")?;
        if now.abs_diff(timestamp) > RELAY_SKEW {
            return Err("relay timestamp too far from now");
        }
        let signature = text(RELAY_SIGNATURE)
            .and_then(|s| s.strip_prefix("v1="))
            .and_then(|s| hex::decode(s).ok())
            .ok_or("missing or unreadable relay signature")?;
        self.mac(timestamp, body).verify_slice(&signature).map_err(|_| "invalid relay signature")?;
        Ok((timestamp, signature))
    }
}

/// The leader's check of relayed envelopes: [`RelayKey::check`], and each
/// signature taken once (a copied request sent again within the five
/// minutes is refused).
#[derive(Debug)]
pub struct RelayCheck {
    key: RelayKey,
    /// Signatures taken, with their timestamps; pruned past the skew.
    seen: Mutex<std::collections::HashMap<Vec<u8>, i64>>,
}

/// Signatures remembered at most (relays are Slack events: far fewer than
/// this in five minutes); past it, relays are refused until some age out.
const SEEN_MAX: usize = 65_536;

impl RelayCheck {
    pub fn new(key: RelayKey) -> RelayCheck {
        RelayCheck { key, seen: Mutex::new(Default::default()) }
    }

    pub fn check(&self, headers: &axum::http::HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
        let (timestamp, signature) = self.key.check(headers, body, now)?;
        let mut seen = self.seen.lock().expect("relay check");
        if seen.len() >= SEEN_MAX / 2 {
            seen.retain(|_, at| now.abs_diff(*at) <= RELAY_SKEW);
        }
        if seen.len() >= SEEN_MAX {
            return Err("too many relayed envelopes at once; retry");
        }
        match seen.insert(signature, timestamp) {
            None => Ok(()),
            Some(_) => Err("this relayed envelope was already taken"),
        }
    }
}

/// A standby's way to the leader for Socket Mode envelopes.
pub struct Relay {
    shared: Arc<Shared>,
    key: RelayKey,
}

impl Relay {
    /// Whether a leader gave an address to relay to.
    pub fn can_relay(&self) -> bool {
        matches!(leading(&self.shared), Some(Leading { address: Some(_), .. }))
    }

    /// Hands one envelope (its type and payload) to the leader; its answer
    /// is the ack payload, if any. An error when there is no leader, or it
    /// did not take the envelope.
    pub async fn envelope(&self, kind: &str, payload: &Value) -> Result<Option<Value>, String> {
        let Some(Leading { address: Some(address), .. }) = leading(&self.shared) else {
            return Err("no leader to relay to".into());
        };
        let body = serde_json::to_vec(&json!({"type": kind, "payload": payload})).map_err(|e| e.to_string())?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.key.sign(timestamp, &body);
        let answer = self
            .shared
            .http
            .post(format!("{address}{RELAY_PATH}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(RELAY_TIMESTAMP, timestamp.to_string())
            .header(RELAY_SIGNATURE, signature)
            .header(FORWARDED, "1")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("the leader did not answer ({})", e.without_url()))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("the leader answered {status}"));
        }
        let answer: Value =
            answer.json().await.map_err(|e| format!("unreadable answer from the leader ({})", e.without_url()))?;
        Ok(answer.get("payload").filter(|p| !p.is_null()).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(timestamp: &str, signature: &str) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        h.insert(RELAY_TIMESTAMP, timestamp.parse().unwrap());
        h.insert(RELAY_SIGNATURE, signature.parse().unwrap());
        h
    }

    #[test]
    fn a_relayed_envelope_verifies_only_with_the_same_token_body_and_a_fresh_timestamp() {
        let key = RelayKey::from_app_token("xapp-1-A1-secret");
        let body = br#"{"type":"slash_commands","payload":{}}"#;
        let signed = key.sign(1_000, body);
        assert!(key.check(&headers("1000", &signed), body, 1_100).is_ok());
        assert_eq!(key.check(&headers("1000", &signed), b"{}", 1_100), Err("invalid relay signature"));
        let other = RelayKey::from_app_token("xapp-1-A1-other");
        assert_eq!(other.check(&headers("1000", &signed), body, 1_100), Err("invalid relay signature"));
        assert_eq!(key.check(&headers("1000", &signed), body, 1_301), Err("relay timestamp too far from now"));
        assert_eq!(key.check(&headers("999", &signed), body, 1_000), Err("invalid relay signature"));
        assert_eq!(key.check(&axum::http::HeaderMap::new(), body, 1_000), Err("missing or unreadable relay timestamp"));
        assert_eq!(key.check(&headers("1000", "v0=00"), body, 1_000), Err("missing or unreadable relay signature"));
        // The key is not the token, and is never printed.
        assert!(!signed.contains("secret"));
        assert_eq!(format!("{key:?}"), "RelayKey(..)");
        // The leader takes each signed request once.
        let check = RelayCheck::new(key.clone());
        assert_eq!(check.check(&headers("1000", &signed), body, 1_100), Ok(()));
        assert_eq!(check.check(&headers("1000", &signed), body, 1_101), Err("this relayed envelope was already taken"));
        assert_eq!(check.check(&headers("1001", &key.sign(1_001, body)), body, 1_102), Ok(()));
        // A timestamp no clock would send is refused, not overflowed.
        assert_eq!(
            key.check(&headers(&i64::MIN.to_string(), &signed), body, i64::MAX),
            Err("relay timestamp too far from now")
        );
    }
}
