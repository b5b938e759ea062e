//! A fake Slack on 127.0.0.1: the Web API methods opsbot calls (recorded, with
//! injectable 429s and 5xx) and a Socket Mode WebSocket the test can push
//! envelopes through. It answers in Slack's wire format, so slack-morphism's
//! real client is what talks to it.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub authorization: String,
    /// What the fake answered (200, 429, 500).
    pub status: u16,
    /// The `ts` of the message a `chat.postMessage` made.
    pub ts: Option<String>,
}

/// A scripted failure for the next matching call.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub channel: Option<String>,
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    faults: Mutex<VecDeque<Fault>>,
    ts: AtomicU64,
    port: AtomicU64,
    /// Sender into the current Socket Mode connection.
    socket: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Every open Socket Mode connection by number (several replicas may
    /// each hold one; Slack gives each envelope to one of them).
    sockets: Mutex<std::collections::BTreeMap<u64, mpsc::UnboundedSender<String>>>,
    /// Frames the bot sent back (acks).
    acks: Mutex<Vec<Value>>,
    /// The same, with the number of the connection each came on.
    acks_on: Mutex<Vec<(u64, Value)>>,
    connections: AtomicU64,
    /// While set, every matching call gets this answer (a 429 storm).
    storm: Mutex<Option<Fault>>,
    /// The connection number that went silent: it stops reading the socket,
    /// so it answers no ping and sends nothing, like a half-open connection.
    silent: AtomicU64,
    /// Channels made with conversations.create (name → id); while
    /// `no_channel_scope` is set, the app lacks channels:manage.
    channels: Mutex<Vec<(String, String)>>,
    no_channel_scope: std::sync::atomic::AtomicBool,
    /// External uploads under way: file id → (filename, declared length,
    /// the bytes once sent to the upload URL).
    uploads: Mutex<std::collections::HashMap<String, Upload>>,
    /// Files shared by files.completeUploadExternal.
    files: Mutex<Vec<SharedFile>>,
}

/// An upload under way: its filename, declared length, and the bytes once sent.
type Upload = (String, usize, Option<Vec<u8>>);

/// A file opsbot uploaded and shared, as Slack would show it.
#[derive(Debug, Clone)]
pub struct SharedFile {
    pub channel: String,
    pub thread: Option<String>,
    pub filename: String,
    pub comment: String,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl FakeSlack {
    pub fn start() -> FakeSlack {
        let runtime =
            Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
        let inner = Arc::new(Inner::default());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        inner.port.store(listener.local_addr().unwrap().port() as u64, Ordering::SeqCst);
        let app = Router::new()
            .route("/api/{method}", any(api))
            .route("/socket", get(socket))
            .route("/upload/{id}", axum::routing::post(upload))
            .with_state(inner.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSlack { inner, _runtime: runtime }
    }

    /// Files shared in channels, oldest first.
    pub fn files(&self) -> Vec<SharedFile> {
        self.inner.files.lock().unwrap().clone()
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.inner.port.load(Ordering::SeqCst))
    }

    pub fn fail(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push_back(fault);
    }

    /// Every matching call gets `fault`'s answer until [`FakeSlack::calm`].
    pub fn storm(&self, fault: Fault) {
        *self.inner.storm.lock().unwrap() = Some(fault);
    }

    pub fn calm(&self) {
        *self.inner.storm.lock().unwrap() = None;
    }

    /// The current Socket Mode connection stops answering (no pongs, no
    /// frames) without closing; later connections behave.
    pub fn silence_socket(&self) {
        self.inner.silent.store(self.connections(), Ordering::SeqCst);
    }

    /// The app lacks `channels:manage` from now on (conversations.create
    /// answers `missing_scope`, as Slack does).
    pub fn without_channel_scope(&self) {
        self.inner.no_channel_scope.store(true, Ordering::SeqCst);
    }

    /// The channels made, as (name, id).
    pub fn channels(&self) -> Vec<(String, String)> {
        self.inner.channels.lock().unwrap().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Successful calls of `method`.
    pub fn ok_calls(&self, method: &str) -> Vec<Value> {
        self.calls().into_iter().filter(|c| c.method == method && c.status == 200).map(|c| c.body).collect()
    }

    /// Waits until `check` holds over the recorded calls.
    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&[Call]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check(&self.calls()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; calls: {:#?}",
                    self.calls().iter().map(|c| (&c.method, c.status, c.body.get("text"))).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Pushes a frame to the connected Socket Mode client.
    pub fn push(&self, frame: Value) {
        let socket = self.inner.socket.lock().unwrap();
        socket.as_ref().expect("a Socket Mode client is connected").send(frame.to_string()).expect("socket open");
    }

    pub fn acks(&self) -> Vec<Value> {
        self.inner.acks.lock().unwrap().clone()
    }

    /// The numbers of the Socket Mode connections open now.
    pub fn open_sockets(&self) -> Vec<u64> {
        self.inner.sockets.lock().unwrap().keys().copied().collect()
    }

    /// Pushes a frame to connection `number`.
    pub fn push_to(&self, number: u64, frame: Value) {
        let sockets = self.inner.sockets.lock().unwrap();
        sockets.get(&number).expect("that connection is open").send(frame.to_string()).expect("socket open");
    }

    /// The acks that came on connection `number`.
    pub fn acks_on(&self, number: u64) -> Vec<Value> {
        self.inner.acks_on.lock().unwrap().iter().filter(|(n, _)| *n == number).map(|(_, v)| v.clone()).collect()
    }
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if parsed.is_null() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let query: Vec<(String, String)> =
            serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
        parsed = Value::Object(form.into_iter().chain(query).map(|(k, v)| (k, Value::String(v))).collect());
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let channel = parsed.get("channel").and_then(|c| c.as_str()).map(str::to_string);
    let matches = |f: &Fault| f.method == method && (f.channel.is_none() || f.channel == channel);
    let fault = {
        let mut faults = inner.faults.lock().unwrap();
        let position = faults.iter().position(matches);
        position.and_then(|i| faults.remove(i))
    };
    let fault = fault.or_else(|| inner.storm.lock().unwrap().clone().filter(matches));
    let status = fault.as_ref().map(|f| f.status).unwrap_or(200);
    let index = {
        let mut calls = inner.calls.lock().unwrap();
        calls.push(Call {
            method: method.clone(),
            body: parsed.clone(),
            authorization: authorization.clone(),
            status,
            ts: None,
        });
        calls.len() - 1
    };
    if let Some(fault) = fault {
        let mut response =
            (StatusCode::from_u16(fault.status).unwrap(), Json(json!({"ok": false, "error": "ratelimited"})))
                .into_response();
        if let Some(after) = fault.retry_after {
            response.headers_mut().insert("retry-after", after.to_string().parse().unwrap());
        }
        return response;
    }
    if !authorization.starts_with("Bearer x") {
        return Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let ts = || format!("1700000000.{:06}", inner.ts.fetch_add(1, Ordering::SeqCst) + 1);
    // Slack refuses blocks whose action ids repeat within one block.
    if matches!(method.as_str(), "chat.postMessage" | "chat.update") && !blocks_valid(&parsed) {
        return Json(json!({"ok": false, "error": "invalid_blocks"})).into_response();
    }
    let body = match method.as_str() {
        "chat.postMessage" => {
            let ts = ts();
            inner.calls.lock().unwrap()[index].ts = Some(ts.clone());
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"type": "message", "text": parsed.get("text"), "ts": ts, "user": "UBOT"}})
        }
        "chat.update" => json!({"ok": true, "channel": channel, "ts": parsed.get("ts"), "text": parsed.get("text"),
            "message": {"type": "message", "text": parsed.get("text"), "user": "UBOT"}}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": ts()}),
        "pins.add" => json!({"ok": true}),
        // Slack's rules: lowercase letters, digits, `-` and `_`, at most 80;
        // a name in use is refused.
        "conversations.create" => {
            let name = parsed.get("name").and_then(|n| n.as_str()).unwrap_or("").to_string();
            let valid = !name.is_empty()
                && name.len() <= 80
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            let mut channels = inner.channels.lock().unwrap();
            if inner.no_channel_scope.load(Ordering::SeqCst) {
                json!({"ok": false, "error": "missing_scope", "needed": "groups:write", "provided": "commands,chat:write"})
            } else if !valid {
                json!({"ok": false, "error": "invalid_name_specials"})
            } else if channels.iter().any(|(n, _)| *n == name) {
                json!({"ok": false, "error": "name_taken"})
            } else {
                let id = format!("CINC{}", channels.len() + 1);
                channels.push((name.clone(), id.clone()));
                json!({"ok": true, "channel": {"id": id, "name": name, "is_channel": true, "created": 1700000000, "creator": "UBOT"}})
            }
        }
        "conversations.invite" => {
            // `users` is a comma-separated string of ids.
            let known = inner.channels.lock().unwrap().iter().any(|(_, id)| Some(id) == channel.as_ref());
            if !parsed.get("users").is_some_and(|u| u.is_string()) {
                json!({"ok": false, "error": "invalid_arguments"})
            } else if known {
                json!({"ok": true, "channel": {"id": channel, "created": 1700000000}})
            } else {
                json!({"ok": false, "error": "channel_not_found"})
            }
        }
        "users.info" => {
            let user = parsed.get("user").and_then(|u| u.as_str()).unwrap_or("U0");
            json!({"ok": true, "user": {"id": user, "name": user.to_lowercase(), "profile": {"display_name": format!("{user}-display"), "real_name": "Real Name"}}})
        }
        // Slack's external upload: a URL for the bytes, then the share.
        "files.getUploadURLExternal" => {
            let filename = parsed.get("filename").and_then(|f| f.as_str()).unwrap_or("").to_string();
            let length = parsed.get("length").and_then(|l| l.as_str()).and_then(|l| l.parse::<usize>().ok());
            match length {
                Some(length) if length > 0 && !filename.is_empty() => {
                    let id = format!("F{}", inner.ts.fetch_add(1, Ordering::SeqCst) + 1);
                    inner.uploads.lock().unwrap().insert(id.clone(), (filename, length, None));
                    let url = format!("http://127.0.0.1:{}/upload/{id}", inner.port.load(Ordering::SeqCst));
                    json!({"ok": true, "upload_url": url, "file_id": id})
                }
                _ => json!({"ok": false, "error": "missing_argument"}),
            }
        }
        "files.completeUploadExternal" => {
            // `files` is a JSON array (a string of one in a form).
            let files = match parsed.get("files") {
                Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
                Some(files) => files.clone(),
                None => Value::Null,
            };
            let ids: Vec<String> =
                files.as_array().into_iter().flatten().filter_map(|f| f["id"].as_str().map(str::to_string)).collect();
            let mut uploads = inner.uploads.lock().unwrap();
            let complete = !ids.is_empty()
                && ids.iter().all(|id| {
                    uploads.get(id).is_some_and(|(_, length, bytes)| bytes.as_ref().is_some_and(|b| b.len() == *length))
                });
            if !complete {
                json!({"ok": false, "error": "upload_not_complete"})
            } else {
                let channel = parsed.get("channel_id").and_then(|c| c.as_str()).unwrap_or("").to_string();
                for id in &ids {
                    let (filename, _, bytes) = uploads.remove(id).unwrap();
                    inner.files.lock().unwrap().push(SharedFile {
                        channel: channel.clone(),
                        thread: parsed.get("thread_ts").and_then(|t| t.as_str()).map(str::to_string),
                        filename,
                        comment: parsed.get("initial_comment").and_then(|c| c.as_str()).unwrap_or("").to_string(),
                        bytes: bytes.unwrap(),
                    });
                }
                json!({"ok": true, "files": ids.iter().map(|id| json!({"id": id, "name": "chart.png"})).collect::<Vec<_>>()})
            }
        }
        "apps.connections.open" => {
            json!({"ok": true, "url": format!("ws://127.0.0.1:{}/socket", inner.port.load(Ordering::SeqCst))})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    Json(body).into_response()
}

/// The upload URL files.getUploadURLExternal gave: the bytes, no token.
async fn upload(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let mut uploads = inner.uploads.lock().unwrap();
    match uploads.get_mut(&id) {
        Some((_, _, bytes)) => {
            *bytes = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Whether every actions block's elements have distinct action ids.
fn blocks_valid(body: &Value) -> bool {
    let blocks = match body.get("blocks") {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        Some(blocks) => blocks.clone(),
        None => return true,
    };
    blocks.as_array().into_iter().flatten().all(|block| {
        let ids: Vec<&str> =
            block["elements"].as_array().into_iter().flatten().filter_map(|e| e["action_id"].as_str()).collect();
        let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
        unique.len() == ids.len()
    })
}

async fn socket(State(inner): State<Arc<Inner>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |ws| serve_socket(inner, ws))
}

async fn serve_socket(inner: Arc<Inner>, mut ws: WebSocket) {
    let number = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    inner.sockets.lock().unwrap().insert(number, tx.clone());
    *inner.socket.lock().unwrap() = Some(tx);
    serve_frames(&inner, number, &mut rx, &mut ws).await;
    inner.sockets.lock().unwrap().remove(&number);
}

async fn serve_frames(inner: &Inner, number: u64, rx: &mut mpsc::UnboundedReceiver<String>, ws: &mut WebSocket) {
    let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}});
    if ws.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        if inner.silent.load(Ordering::SeqCst) == number {
            // Half-open: hold the connection, read nothing, answer nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            outgoing = rx.recv() => {
                let Some(frame) = outgoing else { break };
                let is_disconnect = frame.contains("\"disconnect\"");
                if ws.send(Message::Text(frame.into())).await.is_err() { break; }
                if is_disconnect {
                    // Slack closes shortly after a disconnect frame.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = ws.send(Message::Close(None)).await;
                    break;
                }
            }
            incoming = ws.recv() => {
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&text) {
                            inner.acks_on.lock().unwrap().push((number, v.clone()));
                            inner.acks.lock().unwrap().push(v);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
