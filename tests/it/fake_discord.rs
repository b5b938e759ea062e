//! A fake Discord on one loopback port, chosen with `DISCORD_API_URL`: the
//! REST routes opsbot (and discord.py) call, recorded, with messages, edits
//! and threads kept as Discord keeps them, injectable 429s with
//! `retry_after`; and the gateway WebSocket with the real handshake (HELLO,
//! IDENTIFY → READY, heartbeats and ACKs, RESUME → replay + RESUMED), which
//! the test drives: dispatch an event, send op 7 or op 9, drop the socket.
//! Proven with discord.py (see `discord::discord_py_completes_an_interaction_with_the_fake`).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const TOKEN: &str = "discord-test-token";
pub const APPLICATION: &str = "4242424242424242";
pub const BOT_USER: &str = "1111111111111111";
pub const GUILD: &str = "5555555555555555";
/// The category every test channel is in.
pub const CATEGORY: &str = "5555555555555556";
/// The role that may see the ops channel (@everyone may not).
pub const OPS_ROLE: &str = "5555555555555557";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path after `/api/v10`.
    pub path: String,
    pub body: Value,
    pub authorization: String,
    pub status: u16,
}

/// A scripted failure for the next call whose `METHOD path` contains `route`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub route: String,
    pub status: u16,
    pub retry_after: Option<f64>,
    pub global: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: String,
    pub channel: String,
    pub content: String,
    pub components: Value,
    pub flags: u64,
    pub edits: u32,
    /// Files sent with it (multipart `files[n]`): (filename, bytes).
    pub attachments: Vec<(String, Vec<u8>)>,
}

/// What the test tells the gateway connection to do.
enum Control {
    Send(String),
    /// Close without a close frame (a dropped socket).
    Drop,
}

#[derive(Default)]
struct Gateway {
    /// The session's events so far (seq, frame), for RESUME replays.
    log: Vec<(u64, Value)>,
    session: Option<String>,
    seq: u64,
    /// Sender into the live connection.
    live: Option<mpsc::UnboundedSender<Control>>,
    /// Identified or resumed, and not since disconnected.
    ready: bool,
    /// The live connection's number.
    conn: u64,
}

#[derive(Default)]
struct Inner {
    port: AtomicU64,
    next_id: AtomicU64,
    calls: Mutex<Vec<Call>>,
    faults: Mutex<VecDeque<Fault>>,
    messages: Mutex<BTreeMap<String, Stored>>,
    threads: Mutex<HashSet<String>>,
    /// Pinned messages, by id.
    pins: Mutex<HashSet<String>>,
    /// Text channels made with POST /guilds/{guild}/channels: (id, name, parent).
    channels: Mutex<Vec<(String, String, Option<String>)>>,
    /// The permission overwrites each made channel was created with.
    overwrites: Mutex<BTreeMap<String, Value>>,
    /// While set, the bot lacks Manage Channels.
    no_manage_channels: std::sync::atomic::AtomicBool,
    commands: Mutex<BTreeMap<String, Vec<Value>>>,
    gateway: Mutex<Gateway>,
    identifies: AtomicU64,
    resumes: AtomicU64,
    /// Frames sent again in RESUME replays.
    replayed: AtomicU64,
    /// Tokens of interactions dispatched over the gateway, and those whose
    /// callback has been made: Discord knows their webhook only after it.
    dispatched_tokens: Mutex<HashSet<String>>,
    acknowledged: Mutex<HashSet<String>>,
    /// While set, a new connection waits this long before it is served.
    slow_connect: AtomicU64,
    /// While set, IDENTIFY gets no answer.
    hold_identify: std::sync::atomic::AtomicBool,
    connections: AtomicU64,
    heartbeats: AtomicU64,
    intents: AtomicU64,
}

#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl Inner {
    fn id(&self) -> String {
        (1_300_000_000_000_000_000 + self.next_id.fetch_add(1, Ordering::SeqCst)).to_string()
    }
}

impl FakeDiscord {
    pub fn start() -> FakeDiscord {
        let runtime =
            Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
        let inner = Arc::new(Inner::default());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        inner.port.store(listener.local_addr().unwrap().port() as u64, Ordering::SeqCst);
        let app = Router::new()
            .route("/gateway", get(gateway))
            .route("/api/v10/{*path}", any(rest))
            .route("/api/v9/{*path}", any(rest))
            .with_state(inner.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeDiscord { inner, _runtime: runtime }
    }

    /// What `DISCORD_API_URL` is set to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port.load(Ordering::SeqCst))
    }

    pub fn port(&self) -> u64 {
        self.inner.port.load(Ordering::SeqCst)
    }

    pub fn fail(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push_back(fault);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Successful calls whose `METHOD path` contains `route`.
    pub fn ok_calls(&self, route: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.status < 300 && format!("{} {}", c.method, c.path).contains(route))
            .collect()
    }

    /// Every message now in `channel` (a thread is a channel), oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Stored> {
        let messages = self.inner.messages.lock().unwrap();
        let mut found: Vec<Stored> = messages.values().filter(|m| m.channel == channel).cloned().collect();
        found.sort_by(|a, b| a.id.len().cmp(&b.id.len()).then(a.id.cmp(&b.id)));
        found
    }

    pub fn message(&self, id: &str) -> Option<Stored> {
        self.inner.messages.lock().unwrap().get(id).cloned()
    }

    /// The channels the bot made: (id, name, category).
    pub fn channels(&self) -> Vec<(String, String, Option<String>)> {
        self.inner.channels.lock().unwrap().clone()
    }

    /// The permission overwrites the bot gave a channel it made.
    pub fn overwrites_of(&self, channel: &str) -> Value {
        self.inner.overwrites.lock().unwrap().get(channel).cloned().unwrap_or(Value::Null)
    }

    /// The bot lacks Manage Channels from now on.
    pub fn without_manage_channels(&self) {
        self.inner.no_manage_channels.store(true, Ordering::SeqCst);
    }

    pub fn is_pinned(&self, message: &str) -> bool {
        self.inner.pins.lock().unwrap().contains(message)
    }

    pub fn has_thread(&self, message: &str) -> bool {
        self.inner.threads.lock().unwrap().contains(message)
    }

    pub fn commands(&self, place: &str) -> Vec<Value> {
        self.inner.commands.lock().unwrap().get(place).cloned().unwrap_or_default()
    }

    pub fn identifies(&self) -> u64 {
        self.inner.identifies.load(Ordering::SeqCst)
    }

    pub fn resumes(&self) -> u64 {
        self.inner.resumes.load(Ordering::SeqCst)
    }

    pub fn replayed(&self) -> u64 {
        self.inner.replayed.load(Ordering::SeqCst)
    }

    /// New connections wait `millis` before they are served (0: none).
    pub fn slow_connect(&self, millis: u64) {
        self.inner.slow_connect.store(millis, Ordering::SeqCst);
    }

    /// IDENTIFY goes unanswered while `hold` (a gateway that accepts the
    /// socket but never lets the session start).
    pub fn hold_identify(&self, hold: bool) {
        self.inner.hold_identify.store(hold, Ordering::SeqCst);
    }

    pub fn heartbeats(&self) -> u64 {
        self.inner.heartbeats.load(Ordering::SeqCst)
    }

    pub fn intents(&self) -> u64 {
        self.inner.intents.load(Ordering::SeqCst)
    }

    /// Whether a client is identified (or resumed) on the live connection.
    pub fn gateway_ready(&self) -> bool {
        self.inner.gateway.lock().unwrap().ready
    }

    /// Waits until `check` holds, or panics naming `what` with the calls seen.
    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&FakeDiscord) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            if Instant::now() > deadline {
                let calls: Vec<String> =
                    self.calls().iter().map(|c| format!("{} {} {} {}", c.status, c.method, c.path, c.body)).collect();
                panic!("timed out waiting for {what}; calls:\n{}", calls.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Dispatches an event to the gateway session (kept for a RESUME's
    /// replay if no connection is live).
    pub fn dispatch(&self, event: &str, data: Value) {
        if let Some(token) = data["token"].as_str().filter(|_| event == "INTERACTION_CREATE") {
            self.inner.dispatched_tokens.lock().unwrap().insert(token.to_string());
        }
        let mut gateway = self.inner.gateway.lock().unwrap();
        gateway.seq += 1;
        let frame = json!({"op": 0, "s": gateway.seq, "t": event, "d": data});
        let seq = gateway.seq;
        gateway.log.push((seq, frame.clone()));
        if let Some(live) = gateway.live.as_ref().filter(|_| gateway.ready) {
            let _ = live.send(Control::Send(frame.to_string()));
        }
    }

    fn control(&self, control: Control) {
        let gateway = self.inner.gateway.lock().unwrap();
        gateway.live.as_ref().expect("a gateway client is connected").send(control).ok();
    }

    /// op 7: the client should resume on a new connection.
    pub fn reconnect(&self) {
        self.control(Control::Send(json!({"op": 7, "d": null}).to_string()));
    }

    /// op 9 with `d: false`: the session is gone; the client must identify again.
    pub fn invalidate(&self) {
        self.inner.gateway.lock().unwrap().session = None;
        self.control(Control::Send(json!({"op": 9, "d": false}).to_string()));
    }

    /// Closes the TCP connection without a close frame.
    pub fn drop_socket(&self) {
        self.control(Control::Drop);
    }

    /// An `INTERACTION_CREATE` payload for a slash command.
    pub fn command_interaction(&self, user: &str, channel: &str, name: &str, options: Value) -> Value {
        json!({
            "id": self.inner.id(), "application_id": APPLICATION, "type": 2, "token": format!("itoken-{}", self.inner.id()),
            "version": 1, "locale": "en-US", "entitlements": [], "attachment_size_limit": 8388608,
            "channel_id": channel, "guild_id": GUILD,
            "member": member(user),
            "data": {"id": self.inner.id(), "name": name, "type": 1, "options": options},
        })
    }

    /// An `INTERACTION_CREATE` payload for a click on `custom_id` on `message`.
    pub fn button_interaction(&self, user: &str, channel: &str, message: &str, custom_id: &str) -> Value {
        self.button_interaction_with_roles(user, channel, message, custom_id, &[])
    }

    /// The same, by a member holding these roles.
    pub fn button_interaction_with_roles(
        &self,
        user: &str,
        channel: &str,
        message: &str,
        custom_id: &str,
        roles: &[&str],
    ) -> Value {
        let stored = self.message(message);
        let mut member = member(user);
        member["roles"] = json!(roles);
        json!({
            "id": self.inner.id(), "application_id": APPLICATION, "type": 3, "token": format!("itoken-{}", self.inner.id()),
            "version": 1, "locale": "en-US", "entitlements": [], "attachment_size_limit": 8388608,
            "channel_id": channel, "guild_id": GUILD,
            "member": member,
            "message": message_json(message, channel, &stored.map(|s| s.content).unwrap_or_default()),
            "data": {"custom_id": custom_id, "component_type": 2},
        })
    }

    /// A `MESSAGE_REACTION_ADD` payload.
    pub fn reaction(&self, user: &str, channel: &str, message: &str, emoji: &str) -> Value {
        json!({"user_id": user, "channel_id": channel, "message_id": message, "guild_id": GUILD,
               "emoji": {"id": null, "name": emoji}, "burst": false, "type": 0, "member": member(user)})
    }

    /// The first answer opsbot gave the interaction `id` through its callback.
    pub fn callback_of(&self, id: &str) -> Option<Value> {
        self.ok_calls(&format!("POST /interactions/{id}/")).first().map(|c| c.body.clone())
    }
}

fn member(user: &str) -> Value {
    json!({"user": {"id": user, "username": format!("user{user}"), "discriminator": "0", "global_name": null, "avatar": null},
           "roles": [], "deaf": false, "mute": false, "flags": 0, "joined_at": "2024-01-01T00:00:00+00:00"})
}

fn message_json(id: &str, channel: &str, content: &str) -> Value {
    json!({"id": id, "channel_id": channel, "author": {"id": BOT_USER, "username": "opsbot", "discriminator": "0", "bot": true, "avatar": null, "global_name": null},
           "content": content, "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": null, "tts": false,
           "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
           "pinned": false, "type": 0, "components": []})
}

fn user_json(id: &str, name: &str) -> Value {
    json!({"id": id, "username": name, "discriminator": "0", "global_name": null, "avatar": null, "bot": true, "flags": 0})
}

fn discord_error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// The parts of a multipart/form-data body: (name, filename, bytes).
fn multipart(body: &[u8], boundary: &str) -> Vec<(String, Option<String>, Vec<u8>)> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut starts: Vec<usize> =
        body.windows(delimiter.len()).enumerate().filter(|(_, w)| *w == delimiter.as_slice()).map(|(i, _)| i).collect();
    starts.push(body.len());
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let Some(split) = part.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let head =
            head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:")).unwrap_or("").to_string();
        let mut data = part[split + 4..].to_vec();
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let field = |key: &str| {
            head.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if let Some(name) = field("name") {
            parts.push((name, field("filename"), data));
        }
    }
    parts
}

async fn rest(
    State(inner): State<Arc<Inner>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("/{path}");
    let mut parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // A message with files: multipart, the JSON in `payload_json`, each
    // file in `files[n]` named in `attachments` by its n.
    let mut files = Vec::new();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") {
        for (name, filename, data) in multipart(&body, boundary) {
            if name == "payload_json" {
                parsed = serde_json::from_slice(&data).unwrap_or(Value::Null);
            } else if name.starts_with("files[") {
                files.push((filename.unwrap_or_default(), data));
            }
        }
        let named = parsed["attachments"].as_array().map(|a| a.len()).unwrap_or(0);
        if named != files.len() {
            return discord_error(StatusCode::BAD_REQUEST, 50035, "attachments: each file needs its attachment");
        }
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let route = format!("{method} {path}");
    let fault = {
        let mut faults = inner.faults.lock().unwrap();
        let at = faults.iter().position(|f| route.contains(&f.route));
        at.and_then(|i| faults.remove(i))
    };
    let status = fault.as_ref().map(|f| f.status).unwrap_or(200);
    inner.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: path.clone(),
        body: parsed.clone(),
        authorization: authorization.clone(),
        status,
    });
    if let Some(fault) = fault {
        let mut response = if fault.status == 429 {
            let after = fault.retry_after.unwrap_or(1.0);
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"message": "You are being rate limited.", "retry_after": after, "global": fault.global})),
            )
                .into_response();
            r.headers_mut().insert("retry-after", format!("{after}").parse().unwrap());
            if fault.global {
                r.headers_mut().insert("x-ratelimit-global", "true".parse().unwrap());
            }
            r
        } else {
            discord_error(StatusCode::from_u16(fault.status).unwrap(), 0, "scripted failure")
        };
        response.headers_mut().insert("x-ratelimit-remaining", "0".parse().unwrap());
        return response;
    }
    // Interaction webhooks and callbacks are authenticated by their token.
    let token_route = path.starts_with("/interactions/") || path.starts_with("/webhooks/");
    if !token_route && authorization != format!("Bot {TOKEN}") {
        return discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let port = inner.port.load(Ordering::SeqCst);
    let mut answer = match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => Json(json!({"url": format!("ws://127.0.0.1:{port}/gateway")})).into_response(),
        ("GET", ["gateway", "bot"]) => Json(json!({"url": format!("ws://127.0.0.1:{port}/gateway"), "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}))
        .into_response(),
        ("GET", ["users", "@me"]) => Json(user_json(BOT_USER, "opsbot")).into_response(),
        ("GET", ["oauth2", "applications", "@me"]) => {
            Json(json!({"id": APPLICATION, "name": "opsbot", "description": "",
            "bot_public": false, "bot_require_code_grant": false, "verify_key": "00", "flags": 0, "icon": null,
            "owner": user_json("2222222222222222", "owner"), "team": null}))
            .into_response()
        }
        ("POST", ["channels", channel, "messages"]) => {
            let id = inner.id();
            let stored = Stored {
                id: id.clone(),
                channel: channel.to_string(),
                content: parsed["content"].as_str().unwrap_or("").to_string(),
                components: parsed["components"].clone(),
                flags: parsed["flags"].as_u64().unwrap_or(0),
                edits: 0,
                attachments: files,
            };
            if stored.content.chars().count() > 2000 {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "content: Must be 2000 or fewer in length.");
            }
            inner.messages.lock().unwrap().insert(id.clone(), stored.clone());
            Json(message_json(&id, channel, &stored.content)).into_response()
        }
        ("PATCH", ["channels", channel, "messages", message]) => {
            let mut messages = inner.messages.lock().unwrap();
            match messages.get_mut(*message).filter(|m| m.channel == *channel) {
                Some(stored) => {
                    if let Some(content) = parsed["content"].as_str() {
                        stored.content = content.to_string();
                    }
                    if !parsed["components"].is_null() {
                        stored.components = parsed["components"].clone();
                    }
                    stored.edits += 1;
                    Json(message_json(message, channel, &stored.content)).into_response()
                }
                None => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
            }
        }
        // A channel's guild and category (every channel the tests use is a
        // text channel of GUILD under CATEGORY; a made one, under its parent).
        // (A thread made by the bot is a public thread under its channel.)
        ("GET", ["channels", channel]) => {
            let made = inner.channels.lock().unwrap().iter().find(|(id, _, _)| id == channel).cloned();
            if inner.threads.lock().unwrap().contains(*channel) {
                let parent = inner.messages.lock().unwrap().get(*channel).map(|m| m.channel.clone());
                return Json(json!({"id": channel, "type": 11, "guild_id": GUILD, "parent_id": parent}))
                    .into_response();
            }
            let (name, parent) = match made {
                Some((_, name, parent)) => (name, parent),
                None => ("ops".to_string(), Some(CATEGORY.to_string())),
            };
            Json(json!({"id": channel, "type": 0, "guild_id": GUILD, "name": name, "parent_id": parent,
                "permission_overwrites": [{"id": GUILD, "type": 0, "allow": "0", "deny": "1024"}, {"id": OPS_ROLE, "type": 0, "allow": "1024", "deny": "0"}]}))
            .into_response()
        }
        // Manage Channels, or 50013 Missing Permissions; names as Discord takes them.
        ("POST", ["guilds", guild, "channels"]) => {
            if *guild != GUILD {
                return discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
            }
            if inner.no_manage_channels.load(Ordering::SeqCst) {
                return discord_error(StatusCode::FORBIDDEN, 50013, "Missing Permissions");
            }
            let name = parsed["name"].as_str().unwrap_or("").to_string();
            if name.is_empty() || name.chars().count() > 100 || parsed["type"] != 0 {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            }
            let id = inner.id();
            let parent = parsed["parent_id"].as_str().map(str::to_string);
            inner.channels.lock().unwrap().push((id.clone(), name.clone(), parent.clone()));
            inner.overwrites.lock().unwrap().insert(id.clone(), parsed["permission_overwrites"].clone());
            (
                StatusCode::CREATED,
                Json(json!({"id": id, "type": 0, "guild_id": GUILD, "name": name, "parent_id": parent,
                "permission_overwrites": parsed["permission_overwrites"]})),
            )
                .into_response()
        }
        // Pin Messages: 204, or Unknown Message for one not in the channel.
        ("PUT", ["channels", channel, "messages", "pins", message]) => {
            let known = inner.messages.lock().unwrap().get(*message).is_some_and(|m| m.channel == *channel);
            if !known {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            inner.pins.lock().unwrap().insert(message.to_string());
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["channels", channel, "messages", message, "threads"]) => {
            let known = inner.messages.lock().unwrap().get(*message).is_some_and(|m| m.channel == *channel);
            if !known {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            // A thread cannot hold threads.
            if inner.threads.lock().unwrap().contains(*channel) {
                return discord_error(StatusCode::BAD_REQUEST, 50024, "Cannot execute action on this channel type");
            }
            if !inner.threads.lock().unwrap().insert(message.to_string()) {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            Json(json!({"id": message, "type": 11, "name": parsed["name"], "parent_id": channel, "guild_id": GUILD}))
                .into_response()
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            if !inner.acknowledged.lock().unwrap().insert(token.to_string()) {
                return discord_error(StatusCode::BAD_REQUEST, 40060, "Interaction has already been acknowledged.");
            }
            // Discord reads a boolean query value as true, True or 1.
            let with_response = query
                .as_deref()
                .unwrap_or("")
                .split('&')
                .any(|pair| matches!(pair, "with_response=true" | "with_response=True" | "with_response=1"));
            if with_response {
                // The interaction callback response Discord returns on request.
                let message = message_json(&inner.id(), "1", parsed["data"]["content"].as_str().unwrap_or(""));
                let ephemeral = parsed["data"]["flags"].as_u64().unwrap_or(0) & 64 != 0;
                Json(json!({
                    "interaction": {"id": id, "type": 2, "activity_instance_id": null,
                        "response_message_id": message["id"], "response_message_loading": false,
                        "response_message_ephemeral": ephemeral},
                    "resource": {"type": parsed["type"], "message": message},
                }))
                .into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        ("PATCH" | "POST", ["webhooks", _app, token, ..])
            if inner.dispatched_tokens.lock().unwrap().contains(*token)
                && !inner.acknowledged.lock().unwrap().contains(*token) =>
        {
            // Before the callback, Discord knows no webhook for the interaction.
            discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook")
        }
        ("PATCH", ["webhooks", _app, token, "messages", "@original"]) => {
            let id = format!("original-{token}");
            let mut messages = inner.messages.lock().unwrap();
            let stored = messages.entry(id.clone()).or_insert(Stored {
                id: id.clone(),
                channel: format!("interaction-{token}"),
                content: String::new(),
                components: Value::Null,
                flags: 0,
                edits: 0,
                attachments: Vec::new(),
            });
            stored.content = parsed["content"].as_str().unwrap_or("").to_string();
            stored.edits += 1;
            Json(message_json("1", "1", &stored.content)).into_response()
        }
        ("POST", ["webhooks", _app, token]) => {
            let id = inner.id();
            inner.messages.lock().unwrap().insert(
                id.clone(),
                Stored {
                    id: id.clone(),
                    channel: format!("interaction-{token}"),
                    content: parsed["content"].as_str().unwrap_or("").to_string(),
                    components: parsed["components"].clone(),
                    flags: parsed["flags"].as_u64().unwrap_or(0),
                    edits: 0,
                    attachments: files,
                },
            );
            Json(message_json(&id, "1", parsed["content"].as_str().unwrap_or(""))).into_response()
        }
        ("POST", ["users", "@me", "channels"]) => {
            let user = parsed["recipient_id"].as_str().unwrap_or("0");
            let channel = format!("9{}", user.chars().skip(1).collect::<String>());
            Json(json!({"id": channel, "type": 1, "recipients": [user_json(user, "someone")]})).into_response()
        }
        ("GET", ["applications", _app, "commands"]) => {
            Json(json!(inner.commands.lock().unwrap().get("global").cloned().unwrap_or_default())).into_response()
        }
        ("GET", ["applications", _app, "guilds", guild, "commands"]) => {
            Json(json!(inner.commands.lock().unwrap().get(*guild).cloned().unwrap_or_default())).into_response()
        }
        ("PUT", ["applications", app, rest @ ..]) => {
            let place = match rest {
                ["commands"] => "global".to_string(),
                ["guilds", guild, "commands"] => guild.to_string(),
                _ => return discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
            };
            let Some(list) = parsed.as_array() else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            // Discord answers with what it stored: its ids added, false
            // `required` left out.
            let stored: Vec<Value> = list
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c["id"] = json!(inner.id());
                    c["application_id"] = json!(app);
                    c["version"] = json!(inner.id());
                    for option in c["options"].as_array_mut().into_iter().flatten() {
                        if option["required"] == false {
                            option.as_object_mut().unwrap().remove("required");
                        }
                    }
                    c
                })
                .collect();
            inner.commands.lock().unwrap().insert(place, stored.clone());
            Json(json!(stored)).into_response()
        }
        _ => discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    };
    // A generous bucket, as Discord reports one.
    answer.headers_mut().insert("x-ratelimit-limit", "5".parse().unwrap());
    answer.headers_mut().insert("x-ratelimit-remaining", "4".parse().unwrap());
    answer.headers_mut().insert("x-ratelimit-reset-after", "0.05".parse().unwrap());
    answer
}

async fn gateway(State(inner): State<Arc<Inner>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |ws| serve_gateway(inner, ws))
}

/// One gateway connection: HELLO, then IDENTIFY or RESUME, heartbeats, and
/// whatever the test sends.
async fn serve_gateway(inner: Arc<Inner>, mut ws: WebSocket) {
    let number = inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let slow = inner.slow_connect.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Control>();
    {
        let mut gateway = inner.gateway.lock().unwrap();
        gateway.live = Some(tx);
        gateway.ready = false;
        gateway.conn = number;
    }
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 2000}, "s": null, "t": null});
    if ws.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            control = rx.recv() => match control {
                Some(Control::Send(frame)) => {
                    if ws.send(Message::Text(frame.into())).await.is_err() { break; }
                }
                // Dropped: no close frame, the TCP connection just ends.
                Some(Control::Drop) | None => break,
            },
            incoming = ws.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(frame))) => {
                        // A close is answered with a close, as Discord does.
                        let _ = ws.send(Message::Close(frame)).await;
                        break;
                    }
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                let replies = answer_frame(&inner, &frame);
                let mut broken = false;
                for reply in replies {
                    if ws.send(Message::Text(reply.to_string().into())).await.is_err() { broken = true; break; }
                }
                if broken { break; }
            }
        }
    }
    let mut gateway = inner.gateway.lock().unwrap();
    if gateway.conn == number {
        gateway.ready = false;
        gateway.live = None;
    }
}

/// The fake's answer to one frame from the client.
fn answer_frame(inner: &Inner, frame: &Value) -> Vec<Value> {
    let mut gateway = inner.gateway.lock().unwrap();
    match frame["op"].as_u64() {
        Some(1) => {
            inner.heartbeats.fetch_add(1, Ordering::SeqCst);
            vec![json!({"op": 11, "d": null})]
        }
        Some(2) => {
            inner.identifies.fetch_add(1, Ordering::SeqCst);
            if inner.hold_identify.load(Ordering::SeqCst) {
                return Vec::new();
            }
            inner.intents.store(frame["d"]["intents"].as_u64().unwrap_or(0), Ordering::SeqCst);
            let token = frame["d"]["token"].as_str().unwrap_or("");
            if token.trim_start_matches("Bot ") != TOKEN {
                return vec![json!({"op": 9, "d": false})];
            }
            let session = format!("session-{}", inner.id());
            gateway.session = Some(session.clone());
            gateway.log.clear();
            gateway.seq = 1;
            gateway.ready = true;
            let port = inner.port.load(Ordering::SeqCst);
            vec![json!({"op": 0, "s": 1, "t": "READY", "d": {
                "v": 10, "user": user_json(BOT_USER, "opsbot"), "guilds": [],
                "session_id": session, "resume_gateway_url": format!("ws://127.0.0.1:{port}/gateway"),
                "application": {"id": APPLICATION, "flags": 0}, "shard": [0, 1]}})]
        }
        Some(6) => {
            inner.resumes.fetch_add(1, Ordering::SeqCst);
            let session = frame["d"]["session_id"].as_str().map(str::to_string);
            if session.is_none() || session != gateway.session {
                return vec![json!({"op": 9, "d": false})];
            }
            let after = frame["d"]["seq"].as_u64().unwrap_or(0);
            let mut replies: Vec<Value> =
                gateway.log.iter().filter(|(seq, _)| *seq > after).map(|(_, f)| f.clone()).collect();
            inner.replayed.fetch_add(replies.len() as u64, Ordering::SeqCst);
            gateway.seq += 1;
            replies.push(json!({"op": 0, "s": gateway.seq, "t": "RESUMED", "d": {}}));
            gateway.ready = true;
            replies
        }
        _ => Vec::new(),
    }
}
