//! `opsbot` binary: parse the command line, load and check the configuration
//! (exit 64 on any problem, before opening anything), then hand over to `app`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use opsbot::config::{self, Loaded};
use opsbot::event::Actor;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc: under load, glibc's malloc held opsbot's ack path to ~22k req/s
/// (sled allocates and frees on many threads); mimalloc was faster but kept
/// ~150 MiB resident. jemalloc gave the best of both in the same benchmark.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One arena, a small thread cache and prompt return of freed pages: opsbot
/// runs on a handful of threads and should stay small (measured: resident
/// memory 72 → 50 MiB at 64 connections, same throughput). `_RJEM_MALLOC_CONF`
/// in the environment still overrides it.
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 62] = b"narenas:1,tcache_max:4096,dirty_decay_ms:500,muzzy_decay_ms:0\0";

/// sysexits' EX_CONFIG: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;
/// sysexits' EX_DATAERR: the audit trail is damaged (see `opsbot audit repair`).
const EXIT_DAMAGED: u8 = 65;

#[derive(Parser)]
#[command(
    name = "opsbot",
    version,
    about = "Chat-ops: slash commands to deploys, behind approvals, with a hash-chained audit trail"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "OPSBOT_CONFIG", default_value = "config/demo.toml")]
    config: PathBuf,
    /// Use this data directory instead of the configured one.
    #[arg(long, global = true, env = "OPSBOT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with the bot in the terminal (reads one command per line when stdin is not a terminal).
    Console {
        /// Who you are: a console identity from the config's groups.
        #[arg(long = "as", default_value = "console:alice")]
        actor: String,
        /// The console channel name (the channel is `console:<name>`).
        #[arg(long, default_value = "ops")]
        channel: String,
    },
    /// Run the bot: the HTTP listener (Slack endpoints, health, metrics) and Socket Mode.
    Serve {
        /// Address to listen on (overrides `[server] listen`, default 0.0.0.0:3000).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check the configuration and command files; print every problem.
    Check {
        /// Also ask each backend whether what the configuration names exists
        /// (deployments, containers, ECS clusters and services) and, for
        /// Kubernetes, whether every verb opsbot uses is granted (for ECS only
        /// the read calls are exercised). Exit 64 (configuration), 77
        /// (permissions) or 69 (unreachable, or an outage) for the most
        /// serious finding.
        #[arg(long)]
        live: bool,
    },
    /// Print a Slack app manifest (JSON) built from the command files.
    SlackManifest {
        /// The public base URL Slack should call (omit for Socket Mode).
        #[arg(long)]
        url: Option<String>,
        /// The app's name in Slack.
        #[arg(long, default_value = "opsbot")]
        name: String,
    },
    /// Register the Discord application commands made from the command
    /// files (bulk overwrite; nothing is written when Discord already has
    /// them). Needs DISCORD_TOKEN and DISCORD_APPLICATION_ID.
    DiscordRegister {
        /// Register in this guild only (shows at once; global commands can
        /// take a while to appear everywhere).
        #[arg(long)]
        guild: Option<String>,
    },
    /// Print the URL that adds the bot to a Discord server with the
    /// permissions opsbot needs. Needs DISCORD_APPLICATION_ID.
    DiscordInviteUrl,
    /// Read and check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Incidents, from the audit trail.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Reports from the audit trail alone (a running bot's, or the store's). Never writes.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The store: the PostgreSQL schema, moving a sled store into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Print the PostgreSQL schema (for a database owner to apply with psql;
    /// docs/production.md lists the bot role's grants).
    Schema,
    /// Copy this configuration's sled store (bot.data_dir, or --data-dir)
    /// into an empty PostgreSQL database (its URL in OPSBOT_STORE_URL, or
    /// [store] url_env), verifying the chain on both sides. Stop the bot first.
    Migrate {
        /// Where to: postgres.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Delivery numbers: deployment frequency, success and change failure
    /// rates, recovery times, lead time (docs/reports.md has the definitions).
    Delivery {
        /// The start: an RFC 3339 time or this long ago (e.g. 30d).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// text, json or csv.
        #[arg(long, default_value = "text")]
        format: String,
        /// Also write the weekly chart here (PNG).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// Alert noise: per alert name, how often it fired and how often anyone acted on it.
    Alerts {
        /// The start: an RFC 3339 time or this long ago (e.g. 7d).
        #[arg(long, default_value = "7d")]
        since: String,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum IncidentCommand {
    /// Print an incident's timeline as a postmortem skeleton (Markdown) or
    /// as JSON, from the audit trail alone. Never writes.
    Export {
        /// The incident, like INC-3.
        id: String,
        /// md or json.
        #[arg(long, default_value = "md")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; name the first bad record. Exit 1 if broken. Never writes.
    Verify {
        /// Also prove the trail extends every signed checkpoint in this file
        /// (checkpoint lines, or logs and chat exports that contain them).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// A public key to trust for checkpoints (64 hex), besides [audit] public_keys.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
    },
    /// Make the trail open again after its head or marks were lost or moved,
    /// keeping every record (the bot must be stopped). Exit 1 if it cannot.
    Repair,
    /// Sign the trail's head now and publish it (see [audit] in the config).
    Checkpoint,
    /// Print a new audit signing key (for OPSBOT_AUDIT_KEY or [audit] key_file) and its public key.
    Keygen,
    /// Write records as JSON lines.
    Export {
        /// Only records at or after this time (RFC 3339) or this long ago (e.g. 24h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        request: Option<String>,
    },
    /// Show the latest records; with --follow, keep showing new ones.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(short, long)]
        follow: bool,
    },
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    match config::load(&cli.config) {
        Ok(mut loaded) => {
            if let Some(dir) = &cli.data_dir {
                if let Err(problems) = loaded.config.set_data_dir(dir.clone()) {
                    eprint!("{problems}");
                    return Err(ExitCode::from(EXIT_CONFIG));
                }
            }
            Ok(loaded)
        }
        Err(problems) => {
            eprint!("{problems}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let ago =
        opsbot::clock::parse_duration(text).map_err(|e| anyhow::anyhow!("--since: {e}; or give an RFC 3339 time"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago)?)
}

/// `check --live`: asks each Kubernetes and ECS service's backend whether
/// what the configuration names exists (deployment and container; cluster,
/// services, task definition container, listener) and, for Kubernetes,
/// whether every verb opsbot uses is granted. Prints every finding; returns
/// the exit code of the most serious (see [`LiveFinding::exit_code`]), or 0.
async fn check_live(config: &opsbot::config::Config) -> u8 {
    use opsbot::action::ecs::Ecs;
    use opsbot::action::kubernetes::Kubernetes;
    use opsbot::action::LiveFinding;
    use opsbot::config::Backend;
    let kubernetes = Kubernetes::default();
    let ecs = Ecs::default();
    let mut worst: Option<LiveFinding> = None;
    for service in config.services.values() {
        let (findings, fine) = match &service.backend {
            Backend::Kubernetes { namespace, deployment, container, .. } => (
                kubernetes.check_live(service).await,
                format!("{namespace}/{deployment} visible, container {container} present, all verbs granted"),
            ),
            Backend::Ecs { cluster, service: one, blue_green, container, .. } => {
                let services = match (one, blue_green) {
                    (Some(one), _) => one.clone(),
                    (None, Some(bg)) => format!("{} and {} behind the listener", bg.blue_service, bg.green_service),
                    (None, None) => String::new(),
                };
                (
                    ecs.check_live(service).await,
                    format!("cluster {cluster}: {services} found, container {container} present"),
                )
            }
            Backend::Simulated { .. } => continue,
        };
        let findings = findings.unwrap_or_else(|e| vec![LiveFinding::from_error(e)]);
        if findings.is_empty() {
            println!("{}: ok — {fine}", service.name);
        }
        for finding in findings {
            println!("{}: {}", service.name, finding.text());
            if worst.as_ref().is_none_or(|w| finding.rank() > w.rank()) {
                worst = Some(finding);
            }
        }
    }
    // Runbook targets: each database can be reached (and as whom), each Job
    // template's namespace grants what a `k8s_job` step does. HTTP targets
    // are not called: a request would post an event.
    let mut found = |what: String, finding: LiveFinding| {
        println!("{what}: {}", finding.text());
        if worst.as_ref().is_none_or(|w| finding.rank() > w.rank()) {
            worst = Some(finding);
        }
    };
    for (name, database) in config.databases.iter().filter(|(_, d)| !d.simulated) {
        let what = format!("databases.{name}");
        match database.url(name) {
            Err(e) => found(what, LiveFinding::Misconfigured(e)),
            Ok(url) => match opsbot::action::sql::check_live(&url).await {
                Ok(text) => println!("{what}: ok — {text}"),
                Err(e) => found(what, LiveFinding::from_error(e)),
            },
        }
    }
    for (name, template) in config.jobs.iter().filter(|(_, j)| !j.simulated) {
        let what = format!("jobs.{name}");
        let findings = kubernetes.check_jobs_live(template).await;
        if findings.is_empty() {
            println!(
                "{what}: ok — namespace {}: create and get jobs, list pods, get pods/log granted",
                template.namespace
            );
        }
        for finding in findings {
            found(what.clone(), finding);
        }
    }
    worst.map(|w| w.exit_code()).unwrap_or(0)
}

fn main() -> ExitCode {
    // One TLS crypto provider for every client (Slack, later Kubernetes and AWS):
    // ring only, so rustls never has to guess between two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let default_level =
        if matches!(cli.command, Command::Console { .. } | Command::SlackManifest { .. } | Command::DiscordInviteUrl) {
            "warn"
        } else {
            "info"
        };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("OPSBOT_LOG").unwrap_or_else(|_| default_level.into());
    // serenity's debug lines print raw gateway payloads, interaction tokens
    // included: only its warnings, unless asked for by name.
    if !std::env::var("OPSBOT_LOG").unwrap_or_default().contains("serenity") {
        filter = filter.add_directive("serenity=warn".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("opsbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code and message for what a long-running command ended with.
fn finished(result: opsbot::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(opsbot::Error::Config(problems)) => {
            eprint!("{problems}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) if e.is_damaged_trail() => {
            eprintln!(
                "opsbot: {e}\nopsbot will not write to a trail in this state. `opsbot audit verify` shows what is wrong; `opsbot audit repair` (with the bot stopped) restores it and keeps every record (docs/audit.md)."
            );
            Ok(ExitCode::from(EXIT_DAMAGED))
        }
        Err(e) => Err(e.into()),
    }
}

fn keygen() -> anyhow::Result<ExitCode> {
    use opsbot::audit::checkpoint::Signer;
    let seed = Signer::generate_seed_hex().map_err(anyhow::Error::msg)?;
    let public = Signer::from_seed_hex(&seed).map_err(anyhow::Error::msg)?.public();
    println!("# private signing key: keep it out of the data directory (OPSBOT_AUDIT_KEY, or a file named by [audit] key_file)");
    println!("{seed}");
    println!("# public key, for [audit] public_keys and `audit verify --public-key`:");
    println!("{}", public.hex());
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Needs no configuration: a key is made before it is configured.
    if matches!(cli.command, Command::Audit { command: AuditCommand::Keygen }) {
        return keygen();
    }
    // Needs no configuration either: a DBA prints the schema anywhere.
    if matches!(cli.command, Command::Store { command: StoreCommand::Schema }) {
        print!("{}", opsbot::store::postgres::SCHEMA);
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match load(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Check { live } => {
            let c = &loaded.config;
            println!(
                "configuration OK: {} service(s), {} environment(s), {} group(s), {} rule(s), {} freeze window(s), {} command(s), {} runbook(s)",
                c.services.len(),
                c.environments.len(),
                c.groups.len(),
                c.rules.len(),
                c.freezes.len(),
                loaded.registry.commands().count(),
                loaded.registry.runbooks().count()
            );
            if live {
                return Ok(ExitCode::from(runtime.block_on(check_live(&loaded.config))));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Console { actor, channel } => {
            let actor = Actor::parse(&actor).map_err(|e| anyhow::anyhow!("--as: {e}"))?;
            if actor.platform() != opsbot::event::Platform::Console {
                anyhow::bail!("--as: the console can only act as console: identities");
            }
            if opsbot::event::qualified_id(&format!("console:{channel}"), "channel").is_err() {
                anyhow::bail!("--channel: use letters, digits, `-`, `_` or `.`");
            }
            let result = runtime.block_on(opsbot::app::console(loaded, opsbot::app::ConsoleOptions { actor, channel }));
            // Tokio reads stdin on a blocking thread that stays parked in read()
            // after a signal; everything is flushed by now, so do not wait for it.
            runtime.shutdown_background();
            finished(result)
        }
        Command::Serve { listen } => {
            let result = runtime.block_on(opsbot::app::serve(loaded, opsbot::app::ServeOptions { listen }));
            runtime.shutdown_background();
            finished(result)
        }
        Command::SlackManifest { url, name } => {
            if let Some(url) = &url {
                if !url.starts_with("https://") {
                    anyhow::bail!("--url: Slack only calls https:// URLs");
                }
            }
            let manifest = opsbot::chat::slack::manifest::manifest(
                &loaded.registry,
                url.as_deref(),
                &name,
                loaded.config.incident_channels,
            );
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::DiscordRegister { guild } => {
            let place = match guild {
                Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                    opsbot::config::Registration::Guild(id)
                }
                Some(_) => anyhow::bail!("--guild: a guild id is digits (Server Settings → Widget, or Copy Server ID)"),
                None => opsbot::config::Registration::Global,
            };
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            let (Some(token), Some(app)) = (env("DISCORD_TOKEN"), env("DISCORD_APPLICATION_ID")) else {
                anyhow::bail!("export DISCORD_TOKEN (the bot token) and DISCORD_APPLICATION_ID (the application's id)");
            };
            let api = opsbot::chat::discord::api::DiscordApi::new(&token, &app, env("DISCORD_API_URL").as_deref())
                .map_err(anyhow::Error::msg)?;
            let registered = runtime
                .block_on(opsbot::chat::discord::commands::register(&api, &loaded.registry, &place))
                .map_err(|e| anyhow::anyhow!("Discord refused the commands: {e}"))?;
            match registered {
                opsbot::chat::discord::commands::Registered::Unchanged(n) => {
                    println!("Discord already has these {n} commands; nothing was written")
                }
                opsbot::chat::discord::commands::Registered::Overwritten(n) => println!("registered {n} commands"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DiscordInviteUrl => {
            let app = std::env::var("DISCORD_APPLICATION_ID").unwrap_or_default();
            if app.is_empty() || !app.bytes().all(|b| b.is_ascii_digit()) {
                anyhow::bail!("export DISCORD_APPLICATION_ID (the application's id, digits)");
            }
            println!("{}", opsbot::chat::discord::commands::invite_url(&app, loaded.config.incident_channels));
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit(command, &loaded, &runtime),
        Command::Store { command: StoreCommand::Schema } => unreachable!("printed before the configuration is read"),
        Command::Store { command: StoreCommand::Migrate { to } } => {
            if to != "postgres" {
                anyhow::bail!("--to: `{to}` is not a store opsbot migrates to; the one there is: postgres");
            }
            let url_env = match &loaded.config.store {
                opsbot::config::StoreSettings::Postgres { url_env } => url_env.clone(),
                opsbot::config::StoreSettings::Sled => opsbot::config::StoreSettings::DEFAULT_URL_ENV.to_string(),
            };
            let Some(url) = std::env::var(&url_env).ok().filter(|v| !v.trim().is_empty()) else {
                anyhow::bail!("export {url_env} (the URL of the empty PostgreSQL database to copy into)");
            };
            let dir = loaded.config.data_dir.clone();
            // The blocking client runs on a thread of its own.
            let migrated = std::thread::spawn(move || opsbot::store::migrate::to_postgres(&dir, &url))
                .join()
                .map_err(|_| anyhow::anyhow!("the migration panicked; nothing was committed"))??;
            println!(
                "copied {} record(s) (head {}), {} request(s), {} incident(s), {} alert group(s), {} link(s), {} run lock(s), {} hold(s); both chains verified. Now set [store] type = \"postgres\" and start the bot",
                migrated.records,
                migrated.head_hash,
                migrated.requests,
                migrated.incidents,
                migrated.alerts,
                migrated.links,
                migrated.run_locks,
                migrated.holds
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { command: ReportCommand::Delivery { since, service, format, chart } } => {
            if !matches!(format.as_str(), "text" | "json" | "csv") {
                anyhow::bail!("--format: `{format}` is not one of text, json, csv");
            }
            if let Some(s) = service.as_deref().filter(|s| !loaded.config.services.contains_key(*s)) {
                anyhow::bail!("--service: {s} is not a configured service");
            }
            let period = opsbot::report::Period { since: parse_since(&since)?, until: chrono::Utc::now() };
            let report = runtime.block_on(opsbot::admin::delivery_report(
                &opsbot::admin::Location::of(&loaded.config, &loaded.config.data_dir)?,
                loaded.config.reports.clone(),
                period,
                service,
            ))?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&report)?),
                "csv" => print!("{}", report.csv()),
                _ => println!("{}", report.text()),
            }
            if let Some(file) = chart {
                let png = opsbot::report::chart::png(&report).map_err(|e| anyhow::anyhow!(e))?;
                std::fs::write(&file, png).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { command: ReportCommand::Alerts { since, format } } => {
            if !matches!(format.as_str(), "text" | "json") {
                anyhow::bail!("--format: `{format}` is not one of text, json");
            }
            let period = opsbot::report::Period { since: parse_since(&since)?, until: chrono::Utc::now() };
            let noise = runtime.block_on(opsbot::admin::noise_report(
                &opsbot::admin::Location::of(&loaded.config, &loaded.config.data_dir)?,
                period,
            ))?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&noise)?),
                _ => println!("{}", opsbot::report::noise::noise_text(&noise, &period)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Incident { command: IncidentCommand::Export { id, format } } => {
            let format = opsbot::incident::Format::parse(&format).map_err(|e| anyhow::anyhow!("--format: {e}"))?;
            let id = opsbot::command::parse::normalize_incident_id(&id)
                .ok_or_else(|| anyhow::anyhow!("`{id}` is not an incident id; write it like INC-3"))?;
            runtime.block_on(opsbot::admin::incident_export(
                &opsbot::admin::Location::of(&loaded.config, &loaded.config.data_dir)?,
                &id,
                format,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `opsbot audit …` (all but `keygen`, which needs no configuration).
fn audit(command: AuditCommand, loaded: &Loaded, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let data_dir = opsbot::admin::Location::of(&loaded.config, &loaded.config.data_dir)?;
    match command {
        AuditCommand::Verify { checkpoints, public_keys } => {
            let check = match checkpoints {
                None => None,
                Some(file) => {
                    let extra = public_keys
                        .iter()
                        .map(|k| opsbot::audit::checkpoint::PublicKey::parse(k))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
                    let trusted = opsbot::checkpoints::trusted_keys(&loaded.config.audit, &extra)?;
                    Some(opsbot::admin::CheckpointCheck { file, trusted })
                }
            };
            let intact = runtime.block_on(opsbot::admin::verify(&data_dir, check))?;
            Ok(if intact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Repair => {
            let sound = runtime.block_on(opsbot::admin::repair(&data_dir))?;
            Ok(if sound { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Checkpoint => {
            runtime.block_on(opsbot::admin::checkpoint(&data_dir, &loaded.config))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Keygen => keygen(),
        AuditCommand::Export { since, service, request } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let request = request.map(|r| opsbot::command::parse::normalize_request_id(&r).unwrap_or(r));
            runtime.block_on(opsbot::admin::export(&data_dir, service, request, since))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { lines, follow } => {
            runtime.block_on(opsbot::admin::tail(&data_dir, lines, follow))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
