//! Discord's REST API, the calls opsbot makes, with Discord's rate limits
//! kept here rather than in serenity: serenity's limiter only runs against
//! discord.com itself (it ignores a base URL), so a test against a fake would
//! not exercise it, and its 429 handling reads only a header.
//!
//! - **Per-route buckets**: each route (method, path and its major id: the
//!   channel, the interaction's webhook) remembers the `X-RateLimit-Remaining`
//!   and `X-RateLimit-Reset-After` Discord last sent; a call to a spent bucket
//!   waits for its reset.
//! - **Global limit**: at most 50 calls a second from this bot, and after a
//!   429 with `global` every call waits the `retry_after`. Interaction
//!   callbacks and webhooks are exempt, as Discord exempts them, and each
//!   interaction's webhook is its own bucket.
//! - **429**: the bucket (or everything, if global) waits `retry_after` (the
//!   header, else the JSON body), and the call is handed back as
//!   [`ApiError::RateLimited`] so the send queue retries it in order. A wait
//!   longer than a moment is handed back too ([`ApiError::Wait`]), so it is
//!   never mistaken for a call that timed out.
//!
//! Answers through an interaction (its webhook) wait until the interaction
//! has had its first response ([`DiscordApi::acknowledged`]): Discord knows
//! no webhook before that.
//!
//! Errors never carry the token or an interaction token: URLs are not
//! logged, only the route's template.

use super::limits::{Limits, MAX_BUCKETS};
use crate::chat::outbound::ApiError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Discord's API, and the version opsbot speaks.
pub const DISCORD_API: &str = "https://discord.com/api/v10";
/// Longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Discord's error code for "a thread has already been created for this message".
const THREAD_EXISTS: i64 = 160004;
/// "Unknown Webhook", "Unknown Message": what an interaction's webhook
/// answers before its first response has been taken.
const NOT_YET: [i64; 2] = [10015, 10008];
/// Interactions whose answers are tracked at once (deferrals, first responses).
const MAX_INTERACTIONS: usize = 10_000;
/// How long Discord takes interaction answers.
const TOKEN_LIFE: Duration = Duration::from_secs(15 * 60);
/// Waits for a bucket up to this long are taken inside the call.
const SHORT_WAIT: Duration = Duration::from_secs(2);
/// How long an answer waits for its interaction's first response.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// A client bound to the bot token and the application.
#[derive(Clone)]
pub struct DiscordApi {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    /// `DISCORD_API_URL`, when it points elsewhere than Discord.
    custom: Option<String>,
    /// `Bot …`.
    authorization: String,
    application_id: String,
    limits: Mutex<Limits>,
    /// Answers to a deferred interaction (type 5) not yet given: the first
    /// one edits Discord's "thinking…" message, later ones follow it.
    deferred: Mutex<HashMap<String, Instant>>,
    /// Interactions whose first response is on its way: their answers wait.
    unanswered: Mutex<HashMap<String, (Instant, Arc<Gate>)>>,
    /// DM channels opened, by user.
    dms: Mutex<HashMap<String, String>>,
    /// Messages known to have a thread (its id is theirs).
    threads: Mutex<std::collections::HashSet<String>>,
    /// Channels where threads cannot be started (threads, forum posts, voice
    /// chats): progress goes in the channel itself.
    no_threads: Mutex<std::collections::HashSet<String>>,
}

/// Opens when an interaction's first response has gone out (or failed).
#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    /// The first response could not be given: nothing can follow it.
    failed: std::sync::atomic::AtomicBool,
    opened: tokio::sync::Notify,
}

/// What [`DiscordApi::interaction_answer`] fails with when the interaction
/// never had its first response (its answers belong in the channel).
pub const NOT_ANSWERED: &str = "the interaction was never answered";

/// Drops the oldest entries of `map` (by their time) past `cap`, and any
/// older than an interaction token lives.
fn prune<V>(map: &mut HashMap<String, V>, at: impl Fn(&V) -> Instant, cap: usize) {
    let now = Instant::now();
    map.retain(|_, v| now.duration_since(at(v)) < TOKEN_LIFE);
    while map.len() >= cap {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| k.clone()) else { break };
        map.remove(&oldest);
    }
}

impl std::fmt::Debug for DiscordApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiscordApi({}, <token>)", self.inner.base)
    }
}

/// A short, stable name for an interaction token in a bucket key (the
/// token itself is a credential and never goes in a key or a message).
fn token_key(token: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(token.as_bytes())[..6])
}

/// A message's handle as opsbot keeps it: `MESSAGE` in the channel it was
/// sent to, or `THREAD/MESSAGE` inside a thread.
fn handle(thread: Option<&str>, message: &str) -> String {
    match thread {
        Some(thread) => format!("{thread}/{message}"),
        None => message.to_string(),
    }
}

/// `(channel, message)` of a handle, the channel defaulting to `channel`.
pub fn locate<'a>(channel: &'a str, handle: &'a str) -> (&'a str, &'a str) {
    handle.split_once('/').unwrap_or((channel, handle))
}

/// Whether an id is a Discord snowflake (digits): everything put in a path is.
fn snowflake(id: &str) -> Result<&str, ApiError> {
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(ApiError::Permanent(format!("`{id}` is not a Discord id")))
    }
}

/// Interaction tokens are long URL-safe strings; anything else is refused
/// before it is put in a path.
fn token_ok(token: &str) -> Result<&str, ApiError> {
    if !token.is_empty()
        && token.len() <= 512
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(token)
    } else {
        Err(ApiError::Permanent("not an interaction token".into()))
    }
}

/// Mentions are never pinged from opsbot's messages: names show, nobody is
/// notified, `@everyone` stays text.
pub fn no_pings() -> Value {
    json!({"parse": []})
}

impl DiscordApi {
    /// `api_url` overrides Discord's (`DISCORD_API_URL`, for a local fake:
    /// `http://127.0.0.1:P`, to which `/api/v10` is added).
    pub fn new(token: &str, application_id: &str, api_url: Option<&str>) -> Result<DiscordApi, String> {
        let base = match api_url {
            Some(url) => format!("{}/api/v10", url.trim_end_matches('/')),
            None => DISCORD_API.to_string(),
        };
        snowflake(application_id).map_err(|_| "DISCORD_APPLICATION_ID must be the application's id (digits)")?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("DiscordBot (https://github.com/opsbot, ", env!("CARGO_PKG_VERSION"), ")"))
            .build()
            .map_err(|e| format!("cannot set up the Discord client: {e}"))?;
        let token = token.trim();
        let authorization = if token.starts_with("Bot ") { token.to_string() } else { format!("Bot {token}") };
        Ok(DiscordApi {
            inner: Arc::new(Inner {
                http,
                base,
                custom: api_url.map(|u| u.trim_end_matches('/').to_string()),
                authorization,
                application_id: application_id.to_string(),
                limits: Mutex::new(Limits::default()),
                deferred: Mutex::new(HashMap::new()),
                unanswered: Mutex::new(HashMap::new()),
                dms: Mutex::new(HashMap::new()),
                threads: Mutex::new(std::collections::HashSet::new()),
                no_threads: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// `DISCORD_API_URL`, if set (a local fake).
    pub fn custom_base(&self) -> Option<&str> {
        self.inner.custom.as_deref()
    }

    pub fn application_id(&self) -> &str {
        &self.inner.application_id
    }

    /// One call: waits for its bucket and the global limit, then sorts the
    /// answer. `route` names the bucket (template and major id) and is what
    /// errors show; `path` is the real one.
    async fn call(&self, method: Method, route: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        self.call_with(method, route, path, body, None).await
    }

    /// [`DiscordApi::call`], with a file attached (`files[0]`, the body as
    /// `payload_json`, in one multipart form).
    async fn call_with(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&Value>,
        file: Option<(&str, &[u8])>,
    ) -> Result<Value, ApiError> {
        loop {
            let wait = self.inner.limits.lock().expect("limits lock").wait(route, Instant::now());
            match wait {
                Some(wait) if wait <= SHORT_WAIT => tokio::time::sleep(wait).await,
                Some(wait) => return Err(ApiError::Wait(wait)),
                None => break,
            }
        }
        let mut request = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base))
            .header("authorization", &self.inner.authorization);
        match (body, file) {
            (Some(body), Some((name, bytes))) => {
                let file = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(name.to_string())
                    .mime_str("image/png")
                    .map_err(|e| ApiError::Permanent(format!("{route}: {e}")))?;
                let payload = reqwest::multipart::Part::text(body.to_string())
                    .mime_str("application/json")
                    .map_err(|e| ApiError::Permanent(format!("{route}: {e}")))?;
                request = request
                    .multipart(reqwest::multipart::Form::new().part("payload_json", payload).part("files[0]", file));
            }
            (Some(body), None) => request = request.json(body),
            (None, _) => {}
        }
        let response = request.send().await.map_err(|e| {
            // reqwest's error text holds the URL, and so interaction tokens.
            let kind = if e.is_timeout() {
                "no answer in time"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "the connection failed"
            };
            ApiError::Transient(format!("{route}: {kind}"))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        self.inner.limits.lock().expect("limits lock").learn(route, &headers, Instant::now());
        let text = response.text().await.map_err(|_| ApiError::Transient(format!("{route}: the answer broke off")))?;
        let value: Value =
            if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let seconds = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .or(value["retry_after"].as_f64())
                .unwrap_or(1.0)
                .clamp(0.0, 3600.0);
            let global = value["global"].as_bool().unwrap_or(false) || headers.contains_key("x-ratelimit-global");
            let wait = Duration::from_secs_f64(seconds);
            self.inner.limits.lock().expect("limits lock").limited(route, wait, global, Instant::now());
            return Err(ApiError::RateLimited(Some(wait)));
        }
        let code = value["code"].as_i64().unwrap_or(0);
        let message = value["message"].as_str().unwrap_or("").chars().take(200).collect::<String>();
        let what = format!("{route}: HTTP {} (Discord code {code}: {message})", status.as_u16());
        if status.is_server_error() {
            Err(ApiError::Transient(what))
        } else {
            Err(ApiError::Permanent(what))
        }
    }

    /// The Discord error code in a refusal, if any.
    fn code_of(error: &ApiError) -> Option<i64> {
        let ApiError::Permanent(text) = error else { return None };
        let start = text.find("Discord code ")? + "Discord code ".len();
        text[start..].split(':').next()?.parse().ok()
    }

    /// `POST /channels/{channel}/messages`; returns the new message's id.
    pub async fn create_message(&self, channel: &str, body: &Value) -> Result<String, ApiError> {
        let channel = snowflake(channel)?;
        let made = self
            .call(
                Method::POST,
                &format!("POST /channels/{channel}/messages"),
                &format!("/channels/{channel}/messages"),
                Some(body),
            )
            .await?;
        made["id"].as_str().map(str::to_string).ok_or_else(|| ApiError::Permanent("a message without an id".into()))
    }

    /// `POST /channels/{channel}/messages` with `png` attached as
    /// `filename` (the bot needs the Attach Files permission).
    pub async fn post_file(&self, channel: &str, filename: &str, png: &[u8], comment: &str) -> Result<(), ApiError> {
        let channel = snowflake(channel)?;
        let body = json!({"content": comment, "attachments": [{"id": 0, "filename": filename}],
            "flags": super::outbound::SUPPRESS_EMBEDS, "allowed_mentions": {"parse": []}});
        self.call_with(
            Method::POST,
            &format!("POST /channels/{channel}/messages"),
            &format!("/channels/{channel}/messages"),
            Some(&body),
            Some((filename, png)),
        )
        .await
        .map(|_| ())
    }

    /// `PATCH /channels/{channel}/messages/{message}`.
    pub async fn edit_message(&self, channel: &str, message: &str, body: &Value) -> Result<(), ApiError> {
        let (channel, message) = (snowflake(channel)?, snowflake(message)?);
        self.call(
            Method::PATCH,
            &format!("PATCH /channels/{channel}/messages/:id"),
            &format!("/channels/{channel}/messages/{message}"),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// A text channel named `name` in the server of channel `near`, under
    /// the same category and with the same permission overwrites, so those
    /// who could not see where it was declared cannot see it either (the
    /// bot needs the Manage Channels permission); returns its id. Declared
    /// in a thread, it goes beside the thread's channel.
    pub async fn open_channel(&self, near: &str, name: &str) -> Result<String, ApiError> {
        let mut origin = self.channel(near).await?;
        // Threads (types 10, 11, 12) hang under a channel: use that one.
        if matches!(origin["type"].as_u64(), Some(10..=12)) {
            let parent = origin["parent_id"].as_str().unwrap_or_default().to_string();
            origin = self.channel(&parent).await?;
        }
        let Some(guild) = origin["guild_id"].as_str() else {
            return Err(ApiError::Permanent(
                "this channel is in no server (a DM); an incident's channel needs one".into(),
            ));
        };
        let guild = snowflake(guild)?;
        let mut body = serde_json::json!({ "name": name, "type": 0 });
        if let Some(parent) = origin["parent_id"].as_str() {
            body["parent_id"] = serde_json::json!(parent);
        }
        if let Some(overwrites) = origin["permission_overwrites"].as_array() {
            body["permission_overwrites"] = serde_json::json!(overwrites);
        }
        let route = format!("POST /guilds/{guild}/channels");
        let created = self.call(Method::POST, &route, &format!("/guilds/{guild}/channels"), Some(&body)).await.map_err(
            |e| match Self::code_of(&e) {
                // Missing Permissions.
                Some(50013) => ApiError::Permanent(
                    "the bot lacks the Manage Channels permission in this server: grant it (the invite URL from `opsbot discord-invite-url` asks for it when [incidents] dedicated_channels is on)".into(),
                ),
                _ => e,
            },
        )?;
        created["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Permanent("Discord made the channel but did not say its id".into()))
    }

    /// `GET /channels/{id}`: the channel as Discord describes it.
    async fn channel(&self, id: &str) -> Result<Value, ApiError> {
        let id = snowflake(id)?;
        self.call(Method::GET, &format!("GET /channels/{id}"), &format!("/channels/{id}"), None).await
    }

    /// Pins `message` in `channel` (the bot needs the Pin Messages permission).
    pub async fn pin(&self, channel: &str, message: &str) -> Result<(), ApiError> {
        let (channel, message) = (snowflake(channel)?, snowflake(message)?);
        self.call(
            Method::PUT,
            &format!("PUT /channels/{channel}/messages/pins/:id"),
            &format!("/channels/{channel}/messages/pins/{message}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// The thread under `message` in `channel` (made if it has none); its
    /// id is the message's.
    pub async fn thread_of(&self, channel: &str, message: &str, name: &str) -> Result<String, ApiError> {
        let (channel, message) = (snowflake(channel)?, snowflake(message)?);
        if self.inner.threads.lock().expect("threads lock").contains(message) {
            return Ok(message.to_string());
        }
        let body = json!({"name": name, "auto_archive_duration": 1440});
        let made = self
            .call(
                Method::POST,
                &format!("POST /channels/{channel}/messages/:id/threads"),
                &format!("/channels/{channel}/messages/{message}/threads"),
                Some(&body),
            )
            .await;
        let thread = match made {
            Ok(thread) => thread["id"].as_str().unwrap_or(message).to_string(),
            Err(e) if Self::code_of(&e) == Some(THREAD_EXISTS) => message.to_string(),
            Err(e) => return Err(e),
        };
        let mut threads = self.inner.threads.lock().expect("threads lock");
        if threads.len() >= MAX_BUCKETS {
            threads.clear();
        }
        threads.insert(thread.clone());
        Ok(thread)
    }

    /// Posts `body` in `channel`, or in the thread under `thread` (a
    /// message handle); returns the new message's handle.
    pub async fn post(&self, channel: &str, thread: Option<&str>, body: &Value) -> Result<String, ApiError> {
        let Some(root) = thread else { return self.create_message(channel, body).await };
        let (root_channel, root_message) = locate(channel, root);
        if root_channel != channel {
            // The root is itself in a thread: post beside it.
            let message = self.create_message(root_channel, body).await?;
            return Ok(handle(Some(root_channel), &message));
        }
        let threadless = self.inner.no_threads.lock().expect("no-threads lock").contains(channel);
        if threadless {
            return self.create_message(channel, body).await;
        }
        match self.thread_of(channel, root_message, "opsbot: progress and outcome").await {
            Ok(thread) => {
                let message = self.create_message(&thread, body).await?;
                Ok(handle(Some(&thread), &message))
            }
            // A thread, a forum post or a voice chat cannot hold threads (or
            // the bot may not start them): the channel itself gets it all.
            Err(e @ ApiError::Permanent(_)) => {
                let code = Self::code_of(&e);
                tracing::info!(channel, error = %e, "no thread here; the reply goes in the channel");
                // "Cannot execute action on this channel type", missing
                // access or permissions: this channel never gets threads.
                if matches!(code, Some(50024 | 50001 | 50013)) {
                    let mut no_threads = self.inner.no_threads.lock().expect("no-threads lock");
                    if no_threads.len() >= MAX_BUCKETS {
                        no_threads.clear();
                    }
                    no_threads.insert(channel.to_string());
                }
                self.create_message(channel, body).await
            }
            Err(e) => Err(e),
        }
    }

    /// An interaction whose first response is being made: its answers
    /// ([`DiscordApi::interaction_answer`] and private notes) wait for
    /// [`DiscordApi::acknowledged`] (at most 3 s).
    pub fn answering(&self, token: &str) {
        let mut unanswered = self.inner.unanswered.lock().expect("unanswered lock");
        prune(&mut unanswered, |(at, _)| *at, MAX_INTERACTIONS);
        unanswered.insert(token.to_string(), (Instant::now(), Arc::new(Gate::default())));
    }

    /// The interaction's first response has gone out (`answered`), or could
    /// not be given: its answers may follow, or go elsewhere.
    pub fn acknowledged(&self, token: &str, answered: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut unanswered = self.inner.unanswered.lock().expect("unanswered lock");
        let gate = if answered {
            unanswered.remove(token).map(|(_, gate)| gate)
        } else {
            // Kept (until it expires) so later answers know to go elsewhere.
            unanswered.get(token).map(|(_, gate)| gate.clone())
        };
        drop(unanswered);
        if let Some(gate) = gate {
            gate.failed.store(!answered, SeqCst);
            gate.open.store(true, SeqCst);
            gate.opened.notify_waiters();
        }
    }

    /// Whether the interaction's first response failed (so nothing can follow it).
    pub fn never_answered(&self, token: &str) -> bool {
        let unanswered = self.inner.unanswered.lock().expect("unanswered lock");
        unanswered.get(token).is_some_and(|(_, gate)| gate.failed.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Waits until the interaction has had its first response (at most
    /// 3 s); fails if it could not be given.
    async fn first_response(&self, token: &str) -> Result<(), ApiError> {
        use std::sync::atomic::Ordering::SeqCst;
        let gate = self.inner.unanswered.lock().expect("unanswered lock").get(token).map(|(_, g)| g.clone());
        let Some(gate) = gate else { return Ok(()) };
        let opened = gate.opened.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        if !gate.open.load(SeqCst) {
            let _ = tokio::time::timeout(ACK_WAIT, opened).await;
        }
        if gate.failed.load(SeqCst) {
            return Err(ApiError::Permanent(NOT_ANSWERED.into()));
        }
        Ok(())
    }

    /// A webhook call of an interaction: Discord may not know the webhook
    /// for a moment after the first response (so that is retried).
    async fn webhook(&self, method: Method, route: &str, path: &str, body: &Value) -> Result<Value, ApiError> {
        match self.call(method, route, path, Some(body)).await {
            Err(e) if Self::code_of(&e).is_some_and(|c| NOT_YET.contains(&c)) => {
                Err(ApiError::Transient(format!("{route}: the interaction is not known yet")))
            }
            other => other,
        }
    }

    /// `POST /interactions/{id}/{token}/callback`: the first answer to an
    /// interaction received over the gateway.
    pub async fn interaction_callback(&self, id: &str, token: &str, body: &Value) -> Result<(), ApiError> {
        let (id, token) = (snowflake(id)?, token_ok(token)?);
        self.call(
            Method::POST,
            &format!("POST /interactions/{id}/:token/callback"),
            &format!("/interactions/{id}/{token}/callback"),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// Remembers that the interaction with `token` was deferred, so its
    /// first answer replaces Discord's "thinking…".
    pub fn deferred(&self, token: &str) {
        let mut deferred = self.inner.deferred.lock().expect("deferred lock");
        prune(&mut deferred, |at| *at, MAX_INTERACTIONS);
        deferred.insert(token.to_string(), Instant::now());
    }

    /// Forgets a deferral whose answer will not come.
    pub fn not_deferred(&self, token: &str) {
        self.inner.deferred.lock().expect("deferred lock").remove(token);
    }

    /// Edits the deferred original if it still shows "thinking…" (returns
    /// whether it did); the deferral is taken once, and put back (with
    /// its first time) if the edit fails.
    async fn edit_original(&self, token: &str, body: &Value) -> Result<bool, ApiError> {
        let Some(since) = self.inner.deferred.lock().expect("deferred lock").remove(token) else { return Ok(false) };
        let app = &self.inner.application_id;
        let route = format!("PATCH /webhooks/{app}/{}/messages/@original", token_key(token));
        let path = format!("/webhooks/{app}/{token}/messages/@original");
        match self.webhook(Method::PATCH, &route, &path, body).await {
            Ok(_) => Ok(true),
            Err(e) => {
                self.inner.deferred.lock().expect("deferred lock").insert(token.to_string(), since);
                Err(e)
            }
        }
    }

    async fn follow_up(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        let app = &self.inner.application_id;
        let route = format!("POST /webhooks/{app}/{}", token_key(token));
        self.webhook(Method::POST, &route, &format!("/webhooks/{app}/{token}"), body).await.map(|_| ())
    }

    /// An answer through the interaction's webhook: the deferred original's
    /// edit first, follow-ups after.
    pub async fn interaction_answer(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        let token = token_ok(token)?;
        self.first_response(token).await?;
        if self.edit_original(token, body).await? {
            return Ok(());
        }
        self.follow_up(token, body).await
    }

    /// A private (ephemeral) follow-up. A deferred original still showing
    /// "thinking…" is first told the answer went privately (an edit cannot
    /// make it ephemeral).
    pub async fn interaction_private(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        let token = token_ok(token)?;
        self.first_response(token).await?;
        self.edit_original(token, &json!({"content": "(answered privately)", "allowed_mentions": no_pings()})).await?;
        self.follow_up(token, body).await
    }

    /// The DM channel with `user` (opened once).
    pub async fn dm_channel(&self, user: &str) -> Result<String, ApiError> {
        let user = snowflake(user)?;
        if let Some(channel) = self.inner.dms.lock().expect("dms lock").get(user) {
            return Ok(channel.clone());
        }
        let made = self
            .call(Method::POST, "POST /users/@me/channels", "/users/@me/channels", Some(&json!({"recipient_id": user})))
            .await?;
        let channel =
            made["id"].as_str().map(str::to_string).ok_or_else(|| ApiError::Permanent("a DM without an id".into()))?;
        let mut dms = self.inner.dms.lock().expect("dms lock");
        if dms.len() >= MAX_BUCKETS {
            dms.clear();
        }
        dms.insert(user.to_string(), channel.clone());
        Ok(channel)
    }

    fn commands_path(&self, guild: Option<&str>) -> Result<String, ApiError> {
        let app = &self.inner.application_id;
        Ok(match guild {
            Some(guild) => format!("/applications/{app}/guilds/{}/commands", snowflake(guild)?),
            None => format!("/applications/{app}/commands"),
        })
    }

    /// The application's commands (global, or a guild's).
    pub async fn commands(&self, guild: Option<&str>) -> Result<Value, ApiError> {
        let path = self.commands_path(guild)?;
        self.call(Method::GET, &format!("GET {path}"), &path, None).await
    }

    /// Bulk overwrite of the application's commands.
    pub async fn overwrite_commands(&self, guild: Option<&str>, commands: &Value) -> Result<Value, ApiError> {
        let path = self.commands_path(guild)?;
        self.call(Method::PUT, &format!("PUT {path}"), &path, Some(commands)).await
    }

    /// `GET /gateway/bot`: where the gateway is.
    pub async fn gateway_url(&self) -> Result<String, ApiError> {
        let found = self.call(Method::GET, "GET /gateway/bot", "/gateway/bot", None).await?;
        found["url"].as_str().map(str::to_string).ok_or_else(|| ApiError::Permanent("no gateway url".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_only_ids_and_tokens_of_the_right_shape() {
        assert!(snowflake("80351110224678912").is_ok());
        for bad in ["", "12a", "../x", "1/2", "123456789012345678901"] {
            assert!(snowflake(bad).is_err(), "{bad}");
        }
        assert!(token_ok("aW50ZXJhY3Rpb246MTIz-_.x").is_ok());
        assert!(token_ok("a/b").is_err() && token_ok("a?b").is_err() && token_ok("").is_err());
        assert_eq!(locate("1", "2/3"), ("2", "3"));
        assert_eq!(locate("1", "3"), ("1", "3"));
        let refusal = ApiError::Permanent("POST x: HTTP 400 (Discord code 160004: thread exists)".into());
        assert_eq!(DiscordApi::code_of(&refusal), Some(160004));
    }
}
