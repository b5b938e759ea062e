//! Making and publishing signed checkpoints of the audit trail (see
//! [`crate::audit::checkpoint`] for what they prove): periodically while the
//! trail grows, and on `opsbot audit checkpoint`. Each is published to every
//! configured place — a file outside the data directory (appended and
//! synced), a chat channel, a log line for a collector — and recorded in the
//! trail itself as a `system` record.

use crate::audit::checkpoint::{Checkpoint, PublicKey, Signer};
use crate::audit::{AuditEntry, AuditLog, RecordKind};
use crate::config::AuditSettings;
use crate::engine::reply::{ChatSink, Reply};
use crate::error::{Error, Result};
use crate::event::ReplyTarget;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The environment variable holding the signing key (64 hex characters).
pub const KEY_VARIABLE: &str = "OPSBOT_AUDIT_KEY";

/// The signing key from `OPSBOT_AUDIT_KEY`, else from `[audit] key_file`;
/// `None` when neither is set (checkpoints are then off).
pub fn signer(settings: &AuditSettings) -> Result<Option<Signer>> {
    if let Some(text) = std::env::var(KEY_VARIABLE).ok().filter(|v| !v.trim().is_empty()) {
        return Signer::from_seed_hex(&text).map(Some).map_err(|e| Error::Io(format!("{KEY_VARIABLE}: {e}")));
    }
    let Some(file) = &settings.key_file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::Io(format!("cannot read the audit key file {}: {e}", file.display())))?;
    Signer::from_seed_hex(&text).map(Some).map_err(|e| Error::Io(format!("{}: {e}", file.display())))
}

/// The keys `audit verify --checkpoints` trusts: the configured ones, the
/// signing key's own, and any given on the command line.
pub fn trusted_keys(settings: &AuditSettings, extra: &[PublicKey]) -> Result<Vec<PublicKey>> {
    let mut keys = settings.public_keys.clone();
    if let Some(signer) = signer(settings)? {
        keys.push(signer.public());
    }
    keys.extend_from_slice(extra);
    Ok(keys)
}

pub struct Checkpointer {
    signer: Signer,
    settings: AuditSettings,
    audit: Arc<dyn AuditLog>,
    chat: Option<Arc<dyn ChatSink>>,
    /// The trail record that holds the last checkpoint made.
    last_record: Mutex<Option<u64>>,
    /// The hash of the trail's record 1, which names the trail.
    trail: std::sync::OnceLock<String>,
}

impl Checkpointer {
    pub fn new(
        signer: Signer,
        settings: AuditSettings,
        audit: Arc<dyn AuditLog>,
        chat: Option<Arc<dyn ChatSink>>,
    ) -> Checkpointer {
        Checkpointer { signer, settings, audit, chat, last_record: Mutex::new(None), trail: Default::default() }
    }

    /// The hash of record 1 (read once: record 1 never changes).
    fn trail(&self) -> Result<String> {
        if let Some(trail) = self.trail.get() {
            return Ok(trail.clone());
        }
        let mut first = None;
        self.audit.each(&Default::default(), &mut |record| {
            first = Some(record.hash);
            false
        })?;
        let first = first.ok_or_else(|| Error::Io("the audit trail is empty".into()))?;
        Ok(self.trail.get_or_init(|| first).clone())
    }

    pub fn every(&self) -> std::time::Duration {
        self.settings.checkpoint_every
    }

    /// Signs the trail's head and publishes it. Unless `force`, does nothing
    /// when nothing but the last checkpoint's own record was added since.
    pub async fn checkpoint(&self, force: bool) -> Result<Option<Checkpoint>> {
        // The last durable record: never one a crash could still take back.
        let head = self.audit.head()?;
        if head.seq == 0 {
            return Ok(None);
        }
        if !force && *self.last_record.lock().expect("checkpoint lock") == Some(head.seq) {
            return Ok(None);
        }
        let checkpoint = self.signer.sign(&self.trail()?, &head, chrono::Utc::now());
        let line = checkpoint.line();
        let mut published = Vec::new();
        let mut failed = Vec::new();
        if let Some(file) = &self.settings.checkpoint_file {
            let (path, text) = (file.clone(), line.clone());
            match tokio::task::spawn_blocking(move || append_line(&path, &text)).await {
                Ok(Ok(())) => published.push(file.display().to_string()),
                Ok(Err(e)) => failed.push(format!("{}: {e}", file.display())),
                Err(e) => failed.push(format!("{}: {e}", file.display())),
            }
        }
        if let (Some(channel), Some(chat)) = (&self.settings.checkpoint_channel, &self.chat) {
            // An announcement is never dropped to make room; it is queued and
            // retried through rate limits, and a delivery that finally fails
            // is logged. So the record says "queued", which is what is known.
            let text = format!("audit checkpoint of record {}: {line}", head.seq);
            match chat.send(&ReplyTarget::channel(channel.clone()), Reply::Announcement(text)).await {
                Ok(()) => published.push(format!("{channel} (queued)")),
                Err(e) => failed.push(format!("{channel}: {e}")),
            }
        }
        if self.settings.checkpoint_log {
            tracing::info!(target: "opsbot::checkpoint", "{line}");
            published.push("the log".into());
        }
        for problem in &failed {
            tracing::error!(%problem, "an audit checkpoint was not published");
        }
        if published.is_empty() {
            return Err(Error::Io(format!(
                "the checkpoint of record {} was published nowhere: {}",
                head.seq,
                failed.join("; ")
            )));
        }
        let record = AuditEntry::new(RecordKind::System).detail(format!(
            "checkpoint of record {} published to {}: {line}",
            head.seq,
            published.join(", ")
        ));
        let recorded = self.audit.append(record).await?;
        *self.last_record.lock().expect("checkpoint lock") = Some(recorded.seq);
        Ok(Some(checkpoint))
    }
}

/// Appends `line` to `file` and syncs it, so a published checkpoint survives.
fn append_line(file: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    out.write_all(format!("{line}\n").as_bytes())?;
    out.sync_data()
}
