//! Wiring: opens the store, builds the engine with its adapters and backends,
//! runs the periodic tick, and shuts everything down in order (stop intake,
//! let running actions finish and be audited, flush the store).

use crate::admin;
use crate::audit::{AuditEntry, AuditLog, RecordKind};
use crate::chat::console::{self, ConsoleSink};
use crate::clock::SystemClock;
use crate::config::Loaded;
use crate::engine::{Engine, Executors, Parts};
use crate::error::Result;
use crate::event::Actor;
use crate::store::Store;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for running actions before recording them as interrupted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

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

/// `opsbot console`: the whole bot in a terminal.
pub async fn console(loaded: Loaded, options: ConsoleOptions) -> Result<()> {
    let Loaded { config, registry } = loaded;
    let store = Store::open(&config.data_dir)?;
    let audit: Arc<dyn AuditLog> = store.audit();
    let data_dir = config.data_dir.clone();
    let engine = Engine::new(Parts {
        executors: Executors::from_config(&config),
        config,
        registry,
        store: store.clone(),
        audit: audit.clone(),
        chat: Arc::new(ConsoleSink),
        clock: Arc::new(SystemClock),
    });
    audit.append(system_record("opsbot console started")).await?;
    engine.recover().await;
    engine.tick().await;
    let admin = admin::serve(&data_dir, store.clone())?;
    let ticker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                engine.tick().await;
            }
        })
    };
    let interactive = std::io::stdin().is_terminal();
    let channel = format!("console:{}", options.channel);
    tokio::select! {
        result = console::run(engine.clone(), options.actor, channel, interactive) => result?,
        _ = shutdown_signal() => println!("\nopsbot: stopping — waiting for running actions"),
    }
    ticker.abort();
    engine.shutdown(SHUTDOWN_GRACE).await;
    audit.append(system_record("opsbot console stopped")).await?;
    admin.stop();
    store.audit().close();
    Ok(())
}
