//! The Discord gateway through serenity: slash commands, button clicks and
//! ✅/❌ reactions arrive over it (no public URL needed).
//!
//! Only the intents opsbot needs (`GUILDS`, `GUILD_MESSAGE_REACTIONS`; no
//! privileged intent). serenity keeps the connection: it resumes after
//! op 7 and after a dropped socket, re-identifies after op 9, and starts a
//! new session at most once every 5 s, but without a limit per day, and
//! Discord resets a token after 1,000 IDENTIFYs a day. So opsbot counts the
//! sessions Discord starts (each READY answers one IDENTIFY) and keeps a
//! budget: once the hour's is used, serenity is pointed at an address that
//! refuses connections (it reads the address on every connect) until the
//! hour allows another, so nothing more is sent to Discord. opsbot asks Discord where the gateway is itself, so a failure
//! never falls back to another address, and readiness is read from the
//! shard's own stage every second: false whenever it is not connected.

use super::DiscordIngress;
use serenity::all::{
    ApplicationId, ConnectionStage, Context, EventHandler, GatewayIntents, Interaction, Reaction, ReactionType, Ready,
    ResumedEvent, ShardStageUpdateEvent,
};
use serenity::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Gateway events handled at once; past this, an event is answered "busy"
/// (interactions) or dropped with a log line (reactions) rather than the
/// bot growing without limit.
const IN_FLIGHT: usize = 1024;
/// How long a stop waits for serenity to close the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The IDENTIFY budget's window (`[discord] identify_budget` per hour;
/// 30, the default, is 720 a day at most, under Discord's 1,000).
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// How often readiness is read from the shard manager.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Where serenity is pointed while the budget is used: nothing listens
/// on port 1, so a connect is refused at once and nothing reaches Discord.
const NOWHERE: &str = "ws://127.0.0.1:1";

/// When each recent IDENTIFY was sent (kept across sessions).
struct Identifies {
    budget: usize,
    sent: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
}

impl Identifies {
    /// Counts one; returns whether another is still within the budget.
    fn count(&self) -> bool {
        let mut sent = self.sent.lock().expect("identifies lock");
        let now = tokio::time::Instant::now();
        sent.retain(|at| now.duration_since(*at) < BUDGET_WINDOW);
        sent.push_back(now);
        sent.len() < self.budget
    }

    /// How long until another IDENTIFY is within the budget.
    fn wait(&self) -> Duration {
        let sent = self.sent.lock().expect("identifies lock");
        if sent.len() < self.budget {
            return Duration::ZERO;
        }
        let oldest = sent[sent.len() - self.budget];
        (oldest + BUDGET_WINDOW).saturating_duration_since(tokio::time::Instant::now())
    }
}

struct Handler {
    ingress: Arc<DiscordIngress>,
    identifies: Arc<Identifies>,
    /// serenity's gateway address, read on every connect (set once the client exists).
    ws_url: Arc<OnceLock<Arc<tokio::sync::Mutex<String>>>>,
    connected: Arc<AtomicBool>,
    /// The bot's own user: its reactions (none today) are never votes.
    me: OnceLock<u64>,
    /// Shared by every session, so handlers of an old session still count.
    permits: Arc<tokio::sync::Semaphore>,
    /// Answers "busy" (a few at once; past that the interaction times out).
    busy: Arc<tokio::sync::Semaphore>,
}

fn interaction_type(interaction: &Interaction) -> u8 {
    match interaction {
        Interaction::Ping(_) => 1,
        Interaction::Command(_) => 2,
        Interaction::Component(_) => 3,
        Interaction::Autocomplete(_) => 4,
        Interaction::Modal(_) => 5,
        _ => 0,
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let _ = self.me.set(ready.user.id.get());
        if !self.identifies.count() {
            // The hour's budget is used: no new session until it allows one.
            tracing::error!(
                budget = self.identifies.budget,
                "the Discord gateway used its IDENTIFY budget for the hour; no new session until the hour allows one, so Discord does not reset the token"
            );
            if let Some(url) = self.ws_url.get() {
                *url.lock().await = NOWHERE.to_string();
            }
        }
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(guilds = ready.guilds.len(), "Discord gateway ready");
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!("Discord gateway resumed");
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        if event.new != ConnectionStage::Connected {
            self.connected.store(false, Ordering::SeqCst);
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        // The same reading as the HTTP endpoint's: back to Discord's JSON.
        let mut payload = match serde_json::to_value(&interaction) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "a Discord interaction that does not serialise");
                return;
            }
        };
        payload["type"] = serde_json::json!(interaction_type(&interaction));
        let bytes = payload.to_string().into_bytes();
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            if let Ok(_busy) = self.busy.clone().try_acquire_owned() {
                self.ingress.busy(&bytes).await;
            }
            return;
        };
        self.ingress.gateway(&bytes).await;
    }

    async fn reaction_add(&self, _ctx: Context, reaction: Reaction) {
        let ReactionType::Unicode(emoji) = &reaction.emoji else { return };
        let Some(user) = reaction.user_id else { return };
        if self.me.get() == Some(&user.get()) {
            return;
        }
        // Bots never vote (a bot given a mapped role could otherwise approve).
        if reaction.member.as_ref().is_some_and(|m| m.user.bot) {
            return;
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!("too many Discord events at once; a reaction was not taken");
            return;
        };
        let roles: Vec<String> =
            reaction.member.as_ref().map(|m| m.roles.iter().map(|r| r.get().to_string()).collect()).unwrap_or_default();
        self.ingress
            .reaction(
                &user.get().to_string(),
                &reaction.channel_id.get().to_string(),
                &reaction.message_id.get().to_string(),
                emoji,
                &roles,
            )
            .await;
    }
}

/// Holds the gateway until `stop`: connects, lets serenity keep the
/// connection, and starts over (with backoff) if serenity gives up.
pub async fn run(
    ingress: Arc<DiscordIngress>,
    token: String,
    identify_budget: usize,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    let shared = Shared {
        permits: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        busy: Arc::new(tokio::sync::Semaphore::new(8)),
        identifies: Arc::new(Identifies { budget: identify_budget.max(1), sent: Default::default() }),
    };
    loop {
        // A new client identifies at once: it too waits for the budget.
        let budget = shared.identifies.wait();
        if !budget.is_zero() {
            tracing::error!(wait = ?budget, "the Discord gateway's IDENTIFY budget is spent; waiting");
            tokio::select! {
                _ = tokio::time::sleep(budget) => {}
                _ = stop.cancelled() => return,
            }
        }
        let started = tokio::time::Instant::now();
        let outcome = session(&ingress, &token, &connected, &shared, &stop).await;
        connected.store(false, Ordering::SeqCst);
        if stop.is_cancelled() {
            return;
        }
        if let Err(Fatal(reason)) = outcome {
            {
                // A token or intents Discord refuses: trying again cannot
                // help and would spend IDENTIFYs. Readiness stays false.
                tracing::error!(%reason, "the Discord gateway refused opsbot; fix the configuration and restart");
                return;
            }
        }
        // A session that held a while starts the backoff over.
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures += 1;
        let wait = backoff(failures);
        tracing::warn!(?wait, "the Discord gateway connection ended; connecting again");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Exponential from 1 s to 5 min, with up to 50% jitter.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
    base + base.mul_f64(fastrand::f64() * 0.5)
}

struct Fatal(String);

/// What every session shares.
struct Shared {
    permits: Arc<tokio::sync::Semaphore>,
    busy: Arc<tokio::sync::Semaphore>,
    identifies: Arc<Identifies>,
}

/// One serenity client, until it ends, its IDENTIFY budget is spent, or
/// the bot stops (the connection is closed, then the client's task aborted).
async fn session(
    ingress: &Arc<DiscordIngress>,
    token: &str,
    connected: &Arc<AtomicBool>,
    shared: &Shared,
    stop: &CancellationToken,
) -> Result<(), Fatal> {
    let api = ingress.api().clone();
    // Where the gateway is, asked here so a failure is retried, never
    // answered by serenity's fallback to Discord's public address.
    let url = tokio::select! {
        found = api.gateway_url() => match found {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the Discord gateway");
                return Ok(());
            }
        },
        _ = stop.cancelled() => return Ok(()),
    };
    let mut http = serenity::http::HttpBuilder::new(token);
    if let Some(base) = api.custom_base() {
        // A local fake: serenity's own REST (which opsbot does not use for
        // replies) goes there too, without its limiter (which would not).
        http = http.proxy(base).ratelimiter_disabled(true);
    }
    if let Ok(id) = api.application_id().parse::<u64>() {
        http = http.application_id(ApplicationId::new(id.max(1)));
    }
    let ws_url_slot = Arc::new(OnceLock::new());
    let handler = Handler {
        ingress: ingress.clone(),
        identifies: shared.identifies.clone(),
        ws_url: ws_url_slot.clone(),
        connected: connected.clone(),
        me: OnceLock::new(),
        permits: shared.permits.clone(),
        busy: shared.busy.clone(),
    };
    let intents = GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGE_REACTIONS;
    let built = serenity::all::ClientBuilder::new_with_http(http.build(), intents).event_handler(handler).await;
    let mut client = match built {
        Ok(client) => client,
        Err(e) => return Err(Fatal(format!("cannot set up the gateway client: {e}"))),
    };
    *client.ws_url.lock().await = url.clone();
    let ws_url = client.ws_url.clone();
    let _ = ws_url_slot.set(ws_url.clone());
    let manager = client.shard_manager.clone();
    let running = tokio::spawn(async move { client.start().await });
    // Aborted however this session ends (also when the caller stops it).
    let mut running = AbortOnDrop(running);
    let watched = manager.clone();
    let flag = connected.clone();
    let identifies = shared.identifies.clone();
    let watch = async move {
        loop {
            let runners = watched.runners.lock().await;
            // The shard's own stage is the truth: serenity does not report
            // every change (a missed heartbeat, a failed resume).
            let up = !runners.is_empty() && runners.values().all(|r| r.stage == ConnectionStage::Connected);
            drop(runners);
            flag.store(up, Ordering::SeqCst);
            let mut current = ws_url.lock().await;
            if *current == NOWHERE && identifies.wait().is_zero() {
                tracing::info!("the Discord gateway's IDENTIFY budget allows a session again");
                *current = url.clone();
            }
            drop(current);
            tokio::time::sleep(WATCH_EVERY).await;
        }
    };
    tokio::select! {
        ended = &mut running.0 => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(serenity::Error::Gateway(e))) if matches!(e,
                serenity::gateway::GatewayError::InvalidAuthentication
                | serenity::gateway::GatewayError::InvalidGatewayIntents
                | serenity::gateway::GatewayError::DisallowedGatewayIntents) => Err(Fatal(e.to_string())),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the Discord gateway client stopped");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the Discord gateway client panicked");
                Ok(())
            }
        },
        _ = watch => Ok(()),
        _ = stop.cancelled() => {
            // shutdown_all does nothing while no shard runs; the task is
            // aborted after a grace either way (the process is stopping).
            let _ = tokio::time::timeout(CLOSE_GRACE, manager.shutdown_all()).await;
            Ok(())
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
