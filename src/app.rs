//! Wiring: opens the store, builds the engine with its adapters and backends,
//! runs the periodic tick, and shuts everything down in order (stop intake,
//! let running actions finish and be audited, flush the store).

use crate::admin;
use crate::audit::{AuditEntry, RecordKind};
use crate::chat::console::{self, ConsoleSink};
use crate::checkpoints::Checkpointer;
use crate::clock::SystemClock;
use crate::config::Loaded;
use crate::engine::{Engine, Executors, Parts};
use crate::error::Result;
use crate::event::Actor;
use crate::store::postgres::{Leader, PgAuditLog, PgStore};
use crate::store::SledStore;
use crate::tasks::Tasks;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for running actions before recording them as interrupted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How long background tasks get to end at shutdown.
const TASKS_GRACE: Duration = Duration::from_secs(5);

/// The longest `opsbot serve` takes to stop after SIGTERM: running actions,
/// then each platform's queued messages, then background tasks (the store's
/// flush after them is quick). A pod's `terminationGracePeriodSeconds` must
/// be longer (tests/it/manifests.rs holds deploy/kubernetes to it).
pub fn stop_budget(config: &crate::config::Config) -> Duration {
    let slack = config.slack.as_ref().map_or(Duration::ZERO, |s| s.shutdown_grace);
    let discord = config.discord.as_ref().map_or(Duration::ZERO, |d| d.shutdown_grace);
    SHUTDOWN_GRACE + slack + discord + TASKS_GRACE
}

/// Options of `opsbot console`.
pub struct ConsoleOptions {
    pub actor: Actor,
    pub channel: String,
}

fn system_record(text: &str) -> AuditEntry {
    AuditEntry::new(RecordKind::System).detail(text)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (`docker stop`, systemd).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still works");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Expires due approval requests and old dedup keys once a second.
fn spawn_ticker(tasks: &Tasks, engine: Arc<Engine>) {
    tasks.spawn_loop("ticker", |stop| async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => engine.tick().await,
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Makes a checkpoint every `checkpoint_every` while the trail grows.
fn spawn_checkpoints(tasks: &Tasks, checkpoints: Arc<Checkpointer>) {
    tasks.spawn_loop("checkpoints", |stop| async move {
        let mut every = tokio::time::interval(checkpoints.every());
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = checkpoints.checkpoint(false).await {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// The store `[store]` names, open: sled in the data directory (the
/// default; one process at a time), or PostgreSQL, shared by replicas.
#[derive(Clone)]
enum Backing {
    Sled(SledStore),
    Postgres(PgStore, Arc<PgAuditLog>),
}

impl Backing {
    fn open(config: &crate::config::Config) -> Result<Backing> {
        match &config.store {
            crate::config::StoreSettings::Sled => {
                Ok(Backing::Sled(SledStore::open_with(&config.data_dir, config.durability)?))
            }
            crate::config::StoreSettings::Postgres { url_env } => {
                let url = secret(url_env).ok_or_else(|| {
                    crate::Error::Io(format!("[store] type = \"postgres\": export {url_env} (the database's URL)"))
                })?;
                let (store, audit) = crate::store::postgres::open(&url)?;
                Ok(Backing::Postgres(store, audit))
            }
        }
    }

    fn store(&self) -> Arc<dyn crate::store::Store> {
        match self {
            Backing::Sled(store) => Arc::new(store.clone()),
            Backing::Postgres(store, _) => Arc::new(store.clone()),
        }
    }

    fn audit(&self) -> Arc<dyn crate::audit::AuditLog> {
        match self {
            Backing::Sled(store) => store.audit(),
            Backing::Postgres(_, audit) => audit.clone(),
        }
    }

    fn close(&self) {
        match self {
            Backing::Sled(store) => store.audit().close(),
            Backing::Postgres(_, audit) => audit.close(),
        }
    }

    /// On PostgreSQL: waits until this replica leads (only the leader acts;
    /// `waiting` is told who leads meanwhile), advertising `address` for
    /// standbys to forward to, then fences the trail with its term. On sled,
    /// sled's own lock already made this the only one.
    async fn lead(
        &self,
        address: Option<String>,
        waiting: impl Fn(Option<&crate::store::postgres::Leading>) + Send + 'static,
    ) -> Result<Option<Arc<Leader>>> {
        let Backing::Postgres(store, audit) = self else { return Ok(None) };
        let url = store.pg().url().to_string();
        let leader = tokio::task::spawn_blocking(move || Leader::acquire(&url, &leader_name(), address, waiting))
            .await
            .map_err(|e| crate::Error::Io(format!("waiting for the leader's lock: {e}")))??;
        // Never unfenced: the term it took, even if the lock is gone already
        // (then the database refuses its writes, and the process stops).
        let term = leader.term.load(std::sync::atomic::Ordering::SeqCst);
        audit.fence(term);
        tracing::info!(holder = %leader.holder, term, "this replica leads");
        Ok(Some(Arc::new(leader)))
    }
}

/// This process among replicas: its host (the pod's name) and process id.
fn leader_name() -> String {
    let host = secret("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "opsbot".into());
    format!("{host}/{}", std::process::id())
}

/// Where this replica takes requests, for standbys to forward to:
/// `OPSBOT_ADVERTISE_URL`, else the listener's own address unless it listens
/// on every interface (then there is no one address to give).
fn advertised(listener: &std::net::TcpListener) -> Option<String> {
    if let Some(url) = secret("OPSBOT_ADVERTISE_URL") {
        return Some(url.trim_end_matches('/').to_string());
    }
    listener.local_addr().ok().filter(|a| !a.ip().is_unspecified()).map(|a| format!("http://{a}"))
}

/// What `console` and `serve` share: the engine over an open store, recovered
/// and ticking, with the admin socket up (on sled: on PostgreSQL the CLI
/// reads the database itself).
struct Running {
    name: &'static str,
    engine: Arc<Engine>,
    store: Backing,
    admin: Option<admin::AdminServer>,
    tasks: Tasks,
}

impl Running {
    /// Builds the engine, records the start, recovers interrupted actions,
    /// expires what is overdue, and starts the admin socket and the tick.
    async fn start(
        name: &'static str,
        config: crate::config::Config,
        registry: crate::command::Registry,
        store: Backing,
        chat: Arc<dyn crate::engine::reply::ChatSink>,
        metrics: Arc<crate::metrics::Metrics>,
        tasks: Tasks,
    ) -> Result<Running> {
        let data_dir = config.data_dir.clone();
        let signer = crate::checkpoints::signer(&config.audit)?;
        let audit_settings = config.audit.clone();
        // The trail says which durability its records had from here on, and
        // whether checkpoints anchor it.
        let mut started = format!(
            "opsbot {name} started (durability: {}; checkpoints: {})",
            config.durability.name(),
            match &signer {
                Some(s) => format!("signed by {}", s.public().hex()),
                None => "off".into(),
            }
        );
        if let Backing::Sled(sled) = &store {
            if let Some(leftover) = sled.audit().recovered() {
                let how = if leftover.failed { "after a failed commit" } else { "after a crash" };
                started.push_str(&format!("; recovered {how}: {}", leftover.describe()));
            }
        }
        if let Backing::Postgres(..) = &store {
            started.push_str("; store: PostgreSQL");
        }
        if signer.is_none() && name == "serve" {
            tracing::warn!(
                "no audit key ({} or [audit] key_file): checkpoints are off, so a consistent rewrite of the whole store could not be detected",
                crate::checkpoints::KEY_VARIABLE
            );
        }
        let engine = Engine::new(Parts {
            executors: Executors::from_config(&config),
            config,
            registry,
            store: store.store(),
            audit: store.audit(),
            chat: chat.clone(),
            clock: Arc::new(SystemClock),
            metrics,
        });
        engine.audit().append(system_record(&started)).await?;
        // Outcomes a failed sled commit dropped, recorded again.
        let dropped = match &store {
            Backing::Sled(sled) => sled.audit().dropped_outcomes().to_vec(),
            Backing::Postgres(..) => Vec::new(),
        };
        let lost: Vec<crate::audit::AuditEntry> = dropped
            .iter()
            .map(|entry| {
                use crate::audit::Verdict;
                let (outcome, detail) = match entry.outcome {
                    // Nothing ran: that stays what it was.
                    Some(Verdict::Refused) => (
                        Verdict::Refused,
                        format!("{} (recorded again: the commit that first recorded it failed)", entry.detail),
                    ),
                    was => (
                        Verdict::Unknown,
                        format!(
                            "unknown: the action ended ({}), but the commit recording it failed and was dropped at restart; check the service's live state. It said: {}",
                            was.map(|v| v.to_string()).unwrap_or_else(|| "no verdict".into()),
                            entry.detail
                        ),
                    ),
                };
                crate::audit::AuditEntry { outcome: Some(outcome), detail, ..entry.clone() }
            })
            .collect();
        if !lost.is_empty() {
            for part in lost.chunks(crate::audit::MAX_COMMIT) {
                engine.audit().append_all(part.to_vec()).await?;
            }
            if let Backing::Sled(sled) = &store {
                sled.audit().dropped_outcomes_recorded()?;
            }
        }
        engine.recover().await;
        engine.tick().await;
        let checkpoints = signer
            .map(|signer| Arc::new(Checkpointer::new(signer, audit_settings, engine.audit().clone(), Some(chat))));
        let admin = match &store {
            Backing::Sled(sled) => {
                let context = admin::AdminContext { store: sled.clone(), checkpoints: checkpoints.clone() };
                Some(admin::serve(&data_dir, context, &tasks)?)
            }
            Backing::Postgres(..) => None,
        };
        spawn_ticker(&tasks, engine.clone());
        if let Some(checkpoints) = checkpoints {
            spawn_checkpoints(&tasks, checkpoints);
        }
        Ok(Running { name, engine, store, admin, tasks })
    }

    /// Stops the tick and lets running actions finish and be audited.
    async fn stop_actions(&self) {
        self.tasks.stopping().cancel();
        self.engine.shutdown(SHUTDOWN_GRACE).await;
    }

    /// Records the stop, closes the admin socket, waits for every task and
    /// flushes the trail.
    async fn finish(self) -> Result<()> {
        self.engine.audit().append(system_record(&format!("opsbot {} stopped", self.name))).await?;
        if let Some(admin) = self.admin {
            admin.stop();
        }
        if !self.tasks.shutdown(TASKS_GRACE).await {
            tracing::warn!("some background tasks were still running at shutdown");
        }
        self.store.close();
        Ok(())
    }
}

/// `opsbot console`: the whole bot in a terminal.
pub async fn console(loaded: Loaded, options: ConsoleOptions) -> Result<()> {
    let Loaded { config, registry } = loaded;
    let store = Backing::open(&config)?;
    store
        .lead(None, |current| {
            if let Some(current) = current {
                eprintln!("opsbot: {current} leads on this database; waiting for it to stop")
            }
        })
        .await?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let running =
        Running::start("console", config, registry, store, Arc::new(ConsoleSink), metrics, Tasks::default()).await?;
    let interactive = std::io::stdin().is_terminal();
    let channel = format!("console:{}", options.channel);
    tokio::select! {
        result = console::run(running.engine.clone(), options.actor, channel, interactive) => result?,
        _ = shutdown_signal() => println!("\nopsbot: stopping — waiting for running actions"),
    }
    running.stop_actions().await;
    running.finish().await
}

/// Options of `opsbot serve`.
pub struct ServeOptions {
    /// Overrides `[server] listen`.
    pub listen: Option<String>,
}

/// Reads a secret from the environment; empty counts as missing.
fn secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A replica on PostgreSQL until it leads: its listener answers as a
/// standby (forwarding to the leader), and in Socket Mode (`socket`: the
/// client, the app-level token, the ping interval) it holds a connection
/// relaying to the leader. Both stop once this replica leads.
async fn stand_by(
    store: &Backing,
    listener: &std::net::TcpListener,
    socket: Option<(crate::chat::slack::api::SlackApi, String, Duration)>,
) -> Result<Option<Arc<Leader>>> {
    use crate::chat::slack::socket;
    let address = advertised(listener);
    if address.is_none() {
        tracing::warn!("set OPSBOT_ADVERTISE_URL (where this replica takes requests) so standbys can forward to it");
    }
    let standby = crate::standby::Standby::start(listener)?;
    let relaying = socket.map(|(api, app, ping)| {
        let relay = Arc::new(standby.relay(crate::standby::RelayKey::from_app_token(&app)));
        let tasks = Tasks::default();
        let envelopes = tasks.clone();
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tasks.spawn_loop("slack socket mode (standby)", move |stop| {
            socket::run(socket::Handler::Leader(relay), api, app, ping, connected, envelopes, stop)
        });
        tasks
    });
    let leader = store.lead(address, standby.follower()).await;
    let relay_stopped = async {
        if let Some(tasks) = relaying {
            tasks.shutdown(Duration::from_secs(6)).await;
        }
    };
    tokio::join!(relay_stopped, standby.stop());
    leader
}

/// `opsbot serve`: the HTTP listener, Slack (HTTP and/or Socket Mode), the tick,
/// and an orderly shutdown on SIGTERM.
pub async fn serve(loaded: Loaded, options: ServeOptions) -> Result<()> {
    use crate::chat::slack::{api::SlackApi, outbound, socket, verify::Verifier, SlackIngress};
    use crate::chat::PlatformSinks;
    use crate::config::{Problem, Problems};
    use crate::server::{self, AppState, Readiness};

    let Loaded { config, registry } = loaded;
    // Every missing secret is reported at once, before anything is opened.
    let mut problems: Vec<Problem> = config
        .secret_variables()
        .into_iter()
        .filter(|v| v.required && secret(&v.name).is_none())
        .map(|v| {
            Problem::new(
                &config.source,
                &v.section,
                format!("{} is not set", v.name),
                format!("export {} ({})", v.name, v.why),
            )
        })
        .collect();
    if !problems.is_empty() {
        return Err(Problems(problems).into());
    }
    let slack_secrets = config.slack.as_ref().map(|s| {
        let bot = secret("SLACK_BOT_TOKEN");
        let signing = if s.mode.http() { secret("SLACK_SIGNING_SECRET") } else { None };
        let app = if s.mode.socket() { secret("SLACK_APP_TOKEN") } else { None };
        (bot, signing, app)
    });
    let discord_secrets = config.discord.as_ref().map(|d| {
        let key = if d.mode.http() { secret("DISCORD_PUBLIC_KEY") } else { None };
        (secret("DISCORD_TOKEN"), secret("DISCORD_APPLICATION_ID"), key)
    });
    let alert_secrets = match config.alerts.as_ref().map(crate::alert::intake::AlertSecrets::from_env) {
        None => None,
        Some(Ok(secrets)) => Some(Arc::new(secrets)),
        // Checked above: only a variable emptied since then gets here.
        Some(Err(missing)) => {
            let why = missing.into_iter().map(|why| Problem::new(&config.source, "alerts", why, "export it"));
            return Err(Problems(why.collect()).into());
        }
    };
    let ci_secret = config.ci.as_ref().and_then(|ci| secret(&ci.secret_env)).map(Arc::new);
    let mut discord_parts = None;
    if let Some((Some(token), Some(application), key)) = &discord_secrets {
        let verifier = match key.as_deref().map(crate::chat::discord::verify::Verifier::from_hex).transpose() {
            Ok(verifier) => verifier,
            Err(e) => {
                problems.push(Problem::new(
                    &config.source,
                    "discord",
                    e,
                    "export DISCORD_PUBLIC_KEY=<64 hex characters>",
                ));
                None
            }
        };
        match crate::chat::discord::api::DiscordApi::new(token, application, secret("DISCORD_API_URL").as_deref()) {
            Ok(api) => discord_parts = Some((api, verifier, token.clone())),
            Err(e) => {
                problems.push(Problem::new(&config.source, "discord", e, "export DISCORD_APPLICATION_ID=<digits>"))
            }
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems).into());
    }
    let listen = options.listen.unwrap_or_else(|| config.listen.clone());

    // Bound first: a standby answers its probes while it waits to lead.
    let std_listener = std::net::TcpListener::bind(&listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| crate::Error::Io(format!("cannot listen on {listen}: {e}")))?;
    let slack_api = match (&config.slack, &slack_secrets) {
        (Some(_), Some((Some(bot), _, _))) => Some(
            SlackApi::new(bot, secret("SLACK_API_URL").as_deref())
                .map_err(|e| crate::Error::Io(format!("cannot set up the Slack client: {e}")))?,
        ),
        _ => None,
    };
    let store = Backing::open(&config)?;
    // In Socket Mode a standby holds a connection too.
    let socket = match (&config.slack, &slack_secrets, &slack_api) {
        (Some(settings), Some((_, _, Some(app))), Some(api)) if settings.mode.socket() => {
            Some((api.clone(), app.clone(), settings.socket_ping))
        }
        _ => None,
    };
    let leader = match &store {
        Backing::Postgres(..) => stand_by(&store, &std_listener, socket).await?,
        Backing::Sled(_) => None,
    };
    // Before the bot reports ready: the first Slack delivery acks as fast as any.
    if let Backing::Sled(sled) = &store {
        sled.warm_dedup(chrono::Utc::now())?;
    }
    let engine_store = store.store();
    let tasks = Tasks::default();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let mut sinks = PlatformSinks::default();
    let mut slack_sink = None;
    if let (Some(settings), Some(api)) = (&config.slack, &slack_api) {
        let pacing = outbound::Pacing { interval: settings.channel_interval, burst: settings.channel_burst };
        let sink_settings = outbound::Settings { posts: pacing, idle: settings.channel_idle };
        let sink =
            outbound::SlackSink::new(api.clone(), engine_store.clone(), metrics.clone(), sink_settings, tasks.clone());
        sinks.slack = Some(Arc::new(sink.clone()));
        slack_sink = Some(sink);
    }
    let mut discord_sink = None;
    if let (Some(settings), Some((api, _, _))) = (&config.discord, &discord_parts) {
        let pacing = outbound::Pacing { interval: settings.channel_interval, burst: settings.channel_burst };
        let sink_settings = outbound::Settings { posts: pacing, idle: settings.channel_idle };
        let sink = crate::chat::discord::outbound::DiscordSink::new(
            api.clone(),
            engine_store.clone(),
            metrics.clone(),
            sink_settings,
            tasks.clone(),
        );
        sinks.discord = Some(Arc::new(sink.clone()));
        discord_sink = Some(sink);
    }
    let discord_settings = config.discord.clone();
    let slack_mode = config.slack.as_ref().map(|s| s.mode);
    let slack_grace = config.slack.as_ref().map(|s| s.shutdown_grace);
    let socket_ping = config.slack.as_ref().map(|s| s.socket_ping).unwrap_or(Duration::from_secs(10));
    let running =
        Running::start("serve", config, registry, store.clone(), Arc::new(sinks), metrics, tasks.clone()).await?;
    let engine = running.engine.clone();

    let replicated = leader.is_some();
    let mut readiness = Readiness {
        tasks: vec![tasks.health(), engine.health().clone()],
        audit: Some(store.audit()),
        leader,
        ..Default::default()
    };
    readiness.store_open.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut slack_ingress = None;
    let mut slack_relay = None;
    if let (Some(mode), Some((_, signing, app))) = (slack_mode, slack_secrets) {
        let verifier = signing.as_deref().map(Verifier::new);
        let names = slack_api
            .clone()
            .map(|api| Arc::new(crate::chat::slack::names::SlackNames::new(api, engine.display_names().clone())));
        let ingress = Arc::new(SlackIngress::new(
            verifier,
            engine.clone(),
            engine.store().clone(),
            engine.metrics().clone(),
            names,
        ));
        if mode.http() {
            slack_ingress = Some(ingress.clone());
        }
        if let (true, true, Some(app)) = (replicated, mode.socket(), app.as_deref()) {
            let check = crate::standby::RelayCheck::new(crate::standby::RelayKey::from_app_token(app));
            slack_relay = Some(Arc::new((ingress.clone(), check)));
        }
        if let (true, Some(app), Some(api)) = (mode.socket(), app, slack_api.clone()) {
            let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
            readiness.slack_socket = Some(connected.clone());
            let ping = socket_ping;
            let envelopes = tasks.clone();
            tasks.spawn_loop("slack socket mode", move |stop| {
                socket::run(socket::Handler::Here(ingress), api, app, ping, connected, envelopes, stop)
            });
        }
    }
    let mut discord_ingress = None;
    if let (Some(settings), Some((api, verifier, token))) = (&discord_settings, discord_parts) {
        let ingress = Arc::new(crate::chat::discord::DiscordIngress::new(verifier, engine.clone(), api.clone()));
        if settings.mode.http() {
            discord_ingress = Some(ingress.clone());
        }
        if let Some(place) = settings.register.clone() {
            let registry = engine.registry().clone();
            tasks.spawn("discord command registration", async move {
                if let Err(e) = crate::chat::discord::commands::register(&api, &registry, &place).await {
                    tracing::error!(error = %e, "Discord commands not registered");
                }
            });
        }
        if settings.mode.gateway() {
            let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
            readiness.discord_gateway = Some(connected.clone());
            let budget = settings.identify_budget as usize;
            tasks.spawn_loop("discord gateway", move |stop| {
                crate::chat::discord::gateway::run(ingress, token, budget, connected, stop)
            });
        }
    }
    let state = AppState {
        engine: engine.clone(),
        slack: slack_ingress,
        discord: discord_ingress,
        alerts: alert_secrets,
        ci_secret,
        slack_relay,
        readiness: Arc::new(readiness),
        tasks: tasks.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(server::HANDLERS)),
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| crate::Error::Io(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(address = %listen, "opsbot serving");
    println!("opsbot serving on {}", listener.local_addr().map(|a| a.to_string()).unwrap_or(listen));
    axum::serve(listener, server::router(state)).with_graceful_shutdown(shutdown_signal()).await?;

    // Intake has stopped. Let running actions reach their end and be audited,
    // deliver what is queued for Slack, then flush.
    tracing::info!("shutting down: waiting for running actions");
    running.stop_actions().await;
    if let (Some(sink), Some(grace)) = (slack_sink, slack_grace) {
        let undelivered = sink.drain(grace).await;
        if !undelivered.is_empty() {
            tracing::error!(
                count = undelivered.len(),
                undelivered = %undelivered.join("; "),
                "Slack messages not delivered before shutdown"
            );
        }
    }
    if let (Some(sink), Some(settings)) = (discord_sink, discord_settings) {
        let undelivered = sink.drain(settings.shutdown_grace).await;
        if !undelivered.is_empty() {
            tracing::error!(
                count = undelivered.len(),
                undelivered = %undelivered.join("; "),
                "Discord messages not delivered before shutdown"
            );
        }
    }
    running.finish().await
}
