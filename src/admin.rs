//! The local admin socket, and the `opsbot audit …` commands that use it.
//!
//! sled holds an exclusive lock on the data directory, so while the bot runs no
//! other process can open the store. The running bot therefore listens on
//! `<data_dir>/admin.sock` (mode 0600, same user only) and answers `verify`,
//! `export`, `tail` and `checkpoint` itself. When no bot is running, the CLI
//! opens the store directly — read-only for `verify`, `export` and `tail`,
//! which never write. Either way the user runs the same command.
//!
//! Reading the whole trail happens on a blocking thread and streams through a
//! small bounded channel, so an export of millions of records neither blocks
//! the bot's async runtime nor holds more than a few chunks in memory.

use crate::audit::checkpoint::{self, PublicKey};
use crate::audit::sled_log::Trail;
use crate::audit::{AuditEntry, AuditLog, AuditQuery, AuditRecord, RecordKind};
use crate::checkpoints::Checkpointer;
use crate::error::{Error, Result};
use crate::store::{ReadOnly, SledStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

const SOCKET: &str = "admin.sock";
/// Export streams in chunks of about this size, a few at a time.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum AdminRequest {
    /// Verify the chain; also report the hashes of records `at` (checkpoints).
    Verify {
        #[serde(default)]
        at: Vec<u64>,
    },
    Export {
        service: Option<String>,
        request_id: Option<String>,
        since: Option<DateTime<Utc>>,
        limit: Option<usize>,
        /// Only records after this one (read from there, not filtered).
        #[serde(default)]
        after_seq: Option<u64>,
    },
    /// The newest `last` records (or all after `after_seq`), then new ones as committed.
    Tail { last: usize, after_seq: Option<u64> },
    /// Make and publish a checkpoint now.
    Checkpoint,
}

#[derive(Debug, Serialize, Deserialize)]
struct VerifyAnswer {
    ok: bool,
    records: u64,
    head: String,
    failed_seq: Option<u64>,
    problem: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<u64, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointAnswer {
    line: Option<String>,
    error: Option<String>,
}

/// What the admin socket serves from.
#[derive(Clone)]
pub struct AdminContext {
    pub store: SledStore,
    pub checkpoints: Option<Arc<Checkpointer>>,
}

/// A running admin listener; its socket file is removed on [`AdminServer::stop`]
/// (the listening loop itself ends when the bot's tasks stop).
pub struct AdminServer {
    path: PathBuf,
}

impl AdminServer {
    pub fn stop(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the listener. The caller holds the store's lock, so a socket file
/// already there is stale and is replaced. The loop and each connection are
/// tracked tasks, so shutdown waits for them and a panic marks the bot unready.
pub fn serve(data_dir: &Path, context: AdminContext, tasks: &crate::tasks::Tasks) -> Result<AdminServer> {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| Error::Io(format!("cannot listen on {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let connections = tasks.clone();
    tasks.spawn_loop("admin socket", move |stop| async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (context, stop) = (context.clone(), stop.clone());
            connections.spawn("admin connection", async move {
                // A follower (`audit tail --follow`) ends with the bot.
                tokio::select! {
                    answered = answer(stream, context) => {
                        if let Err(e) = answered {
                            tracing::debug!(error = %e, "admin connection ended");
                        }
                    }
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(AdminServer { path })
}

fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("serialises");
    line.push(b'\n');
    line
}

/// Streams the records `query` matches (after `after`) as JSON lines into
/// `tx`, from a blocking thread; returns the last sequence number sent.
fn stream_records(
    audit: Arc<dyn AuditLog>,
    query: AuditQuery,
    tx: mpsc::Sender<Vec<u8>>,
) -> tokio::task::JoinHandle<Result<u64, crate::audit::AuditError>> {
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut last = query.after_seq.unwrap_or(0);
        let mut open = true;
        audit.each(&query, &mut |record| {
            last = record.seq;
            chunk.extend_from_slice(&json_line(&record));
            if chunk.len() >= CHUNK {
                open = tx.blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_ok();
            }
            open
        })?;
        if open && !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        Ok(last)
    })
}

async fn send_stream(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    audit: Arc<dyn AuditLog>,
    query: AuditQuery,
) -> std::io::Result<u64> {
    let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let producer = stream_records(audit, query, tx);
    while let Some(chunk) = rx.recv().await {
        write.write_all(&chunk).await?;
    }
    producer.await.map_err(std::io::Error::other)?.map_err(std::io::Error::other)
}

async fn answer(stream: UnixStream, context: AdminContext) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let request: AdminRequest =
        serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let store = context.store.clone();
    let audit: Arc<dyn AuditLog> = store.audit();
    match request {
        AdminRequest::Verify { at } => {
            // The bot is writing: verify up to what its writer acknowledged.
            let log = store.audit();
            let answer = tokio::task::spawn_blocking(move || answer_from(log.verify_live(&at.into_iter().collect())))
                .await
                .map_err(std::io::Error::other)?;
            write.write_all(&json_line(&answer)).await?;
        }
        AdminRequest::Export { service, request_id, since, limit: Some(limit), after_seq } => {
            let query = AuditQuery { service, request_id, since, limit: Some(limit), after_seq, ..Default::default() };
            for record in audit.read(&query).map_err(std::io::Error::other)? {
                write.write_all(&json_line(&record)).await?;
            }
        }
        AdminRequest::Export { service, request_id, since, limit: None, after_seq } => {
            let query = AuditQuery { service, request_id, since, after_seq, ..Default::default() };
            send_stream(&mut write, audit, query).await?;
        }
        AdminRequest::Tail { last, after_seq } => {
            // Subscribe before reading, so nothing committed in between is lost.
            let mut live = audit.subscribe();
            let mut seen = match after_seq {
                Some(after) => {
                    let query = AuditQuery { after_seq: Some(after), ..Default::default() };
                    send_stream(&mut write, audit.clone(), query).await?
                }
                None => {
                    let mut seen = 0;
                    for record in audit
                        .read(&AuditQuery { limit: Some(last), ..Default::default() })
                        .map_err(std::io::Error::other)?
                    {
                        seen = record.seq;
                        write.write_all(&json_line(&record)).await?;
                    }
                    seen
                }
            };
            loop {
                match live.recv().await {
                    Ok(record) if record.seq > seen => {
                        seen = record.seq;
                        write.write_all(&json_line(&record)).await?;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let query = AuditQuery { after_seq: Some(seen), ..Default::default() };
                        seen = send_stream(&mut write, audit.clone(), query).await?;
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
        AdminRequest::Checkpoint => {
            let answer = match &context.checkpoints {
                None => CheckpointAnswer { line: None, error: Some(no_key()) },
                Some(checkpoints) => match checkpoints.checkpoint(true).await {
                    Ok(made) => CheckpointAnswer { line: made.map(|c| c.line()), error: None },
                    Err(e) => CheckpointAnswer { line: None, error: Some(e.to_string()) },
                },
            };
            write.write_all(&json_line(&answer)).await?;
        }
    }
    write.shutdown().await
}

fn no_key() -> String {
    format!(
        "checkpoints are off: no signing key (set {} or [audit] key_file; `opsbot audit keygen` makes one)",
        crate::checkpoints::KEY_VARIABLE
    )
}

fn verify_answer(trail: &Trail, at: &BTreeSet<u64>) -> VerifyAnswer {
    answer_from(trail.verify_at(at))
}

type Walked = (Result<crate::audit::VerifySummary, crate::audit::VerifyFailure>, BTreeMap<u64, String>);

fn answer_from((result, hashes): Walked) -> VerifyAnswer {
    match result {
        Ok(summary) => VerifyAnswer {
            ok: true,
            records: summary.records,
            head: summary.head_hash,
            failed_seq: None,
            problem: None,
            note: summary.note,
            hashes,
        },
        Err(failure) => VerifyAnswer {
            ok: false,
            records: 0,
            head: String::new(),
            failed_seq: Some(failure.seq),
            problem: Some(failure.problem),
            note: None,
            hashes,
        },
    }
}

/// Where the CLI finds the trail: the sled data directory, or the
/// PostgreSQL database `[store]` names.
#[derive(Clone)]
pub enum Location {
    Dir(PathBuf),
    Postgres(String),
}

/// Never the URL: it may hold a password.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
            Location::Postgres(_) => f.write_str("Postgres(…)"),
        }
    }
}

impl Location {
    /// The configuration's store; `data_dir` is the sled directory (the
    /// configuration's, or `--data-dir`).
    pub fn of(config: &crate::config::Config, data_dir: &Path) -> Result<Location> {
        match &config.store {
            crate::config::StoreSettings::Sled => Ok(Location::Dir(data_dir.to_path_buf())),
            crate::config::StoreSettings::Postgres { url_env } => {
                std::env::var(url_env).ok().filter(|v| !v.trim().is_empty()).map(Location::Postgres).ok_or_else(|| {
                    Error::Io(format!("[store] type = \"postgres\": export {url_env} (the database's URL)"))
                })
            }
        }
    }

    fn dir(&self) -> Result<&Path> {
        match self {
            Location::Dir(dir) => Ok(dir),
            Location::Postgres(_) => Err(Error::Io(
                "this works on the sled store only: on PostgreSQL the trail's table refuses changes, and a running bot needs no admin socket".into(),
            )),
        }
    }
}

/// Where the CLI reads the trail from.
enum Source {
    Direct(ReadOnly),
    Running(PathBuf),
    /// The PostgreSQL trail, read directly (readers never stop the bot).
    Postgres(Arc<crate::store::postgres::PgAuditLog>),
}

fn source(at: &Location) -> Result<Source> {
    let data_dir = match at {
        Location::Dir(dir) => dir,
        Location::Postgres(url) => {
            let url = url.clone();
            // Connecting blocks: not on a thread that runs tasks.
            let trail = std::thread::spawn(move || crate::store::postgres::open_trail(&url))
                .join()
                .map_err(|_| Error::Io("opening the PostgreSQL trail panicked".into()))??;
            return Ok(Source::Postgres(trail));
        }
    };
    match ReadOnly::open(data_dir) {
        Ok(store) => Ok(Source::Direct(store)),
        Err(StoreError::Locked { .. }) => Ok(Source::Running(data_dir.join(SOCKET))),
        Err(e) => Err(e.into()),
    }
}

async fn ask(
    socket: &Path,
    request: &AdminRequest,
) -> Result<tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        Error::Io(format!(
            "the store is in use by a running opsbot, but its admin socket {} does not answer: {e}",
            socket.display()
        ))
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(&json_line(request)).await?;
    Ok(BufReader::new(read).lines())
}

async fn ask_one<T: serde::de::DeserializeOwned>(socket: &Path, request: &AdminRequest) -> Result<T> {
    let mut lines = ask(socket, request).await?;
    let line =
        lines.next_line().await?.ok_or_else(|| Error::Io("the running opsbot closed the admin socket".into()))?;
    serde_json::from_str(&line).map_err(|e| Error::Io(e.to_string()))
}

/// What `audit verify --checkpoints FILE` checks against.
pub struct CheckpointCheck {
    pub file: PathBuf,
    pub trusted: Vec<PublicKey>,
}

/// `opsbot audit verify`: Ok(true) if the chain is intact (and extends every
/// checkpoint given). Prints the result. Never writes to the store.
pub async fn verify(data_dir: &Location, checkpoints: Option<CheckpointCheck>) -> Result<bool> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut wanted = Vec::new();
    if let Some(check) = &checkpoints {
        let text = std::fs::read_to_string(&check.file)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", check.file.display())))?;
        if check.trusted.is_empty() {
            return Err(Error::Io(
                "no trusted public key to check checkpoints with: pass --public-key, or set [audit] public_keys, OPSBOT_AUDIT_KEY or [audit] key_file".into(),
            ));
        }
        // A channel or a log is writable by more people than the signer: a
        // line that does not parse or is not signed by a trusted key proves
        // nothing either way, so it is a warning, not a failure.
        for (line, found) in checkpoint::find_all(&text) {
            match found.and_then(|c| c.check_signature(&check.trusted).map(|()| c)) {
                Ok(c) => wanted.push((line, c)),
                Err(e) => warnings.push(format!("{}:{line}: ignored: {e}", check.file.display())),
            }
        }
    }
    // Record 1's hash names the trail each checkpoint was made of.
    let at: BTreeSet<u64> = wanted.iter().map(|(_, c)| c.seq).chain(checkpoints.as_ref().map(|_| 1)).collect();
    let answer = match source(data_dir)? {
        Source::Direct(store) => {
            let trail = store.trail.clone();
            tokio::task::spawn_blocking(move || verify_answer(&trail, &at))
                .await
                .map_err(|e| Error::Io(e.to_string()))?
        }
        Source::Running(socket) => ask_one(&socket, &AdminRequest::Verify { at: at.into_iter().collect() }).await?,
        Source::Postgres(trail) => tokio::task::spawn_blocking(move || answer_from(trail.verify_at(&at)))
            .await
            .map_err(|e| Error::Io(e.to_string()))?,
    };
    if answer.ok {
        println!("audit trail intact: {} record(s), head hash {}", answer.records, answer.head);
        if let Some(note) = &answer.note {
            println!("note: {note}");
        }
    } else {
        println!(
            "audit trail BROKEN at record {}: {}",
            answer.failed_seq.unwrap_or(0),
            answer.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    let mut extended = 0;
    let trail = answer.hashes.get(&1).cloned();
    let (ours, others): (Vec<_>, Vec<_>) = wanted.into_iter().partition(|(_, c)| Some(&c.trail) == trail.as_ref());
    if !others.is_empty() {
        warnings.push(format!(
            "{} checkpoint(s) are of another trail (their record 1 is not this trail's), e.g. line {}",
            others.len(),
            others[0].0
        ));
    }
    // One key per trail is what makes a checkpoint name its store. Where
    // two trails share a key and a file, the one signed last should be the
    // store being checked: if another trail signed after this one's newest,
    // this store may have been swapped for the other (same key, its own
    // intact checkpoints). Checkpoints of equal time are not ordered.
    let newest = |list: &[(usize, checkpoint::Checkpoint)]| {
        list.iter()
            .filter_map(|(line, c)| {
                chrono::DateTime::parse_from_rfc3339(&c.at).ok().map(|at| (at, *line, c.at.clone()))
            })
            .max_by_key(|(at, _, _)| *at)
    };
    if let (Some(check), Some(theirs), Some(mine)) = (checkpoints.as_ref(), newest(&others), newest(&ours)) {
        if theirs.0 > mine.0 {
            problems.push(format!(
                "the newest checkpoint in {} (line {}, signed {}) is of another trail signed with the same key, after this trail's newest ({}): this store may have been replaced by that other trail. If two bots share this key, give each its own (docs/audit.md)",
                check.file.display(),
                theirs.1,
                theirs.2,
                mine.2
            ));
        }
    }
    if let Some(check) = checkpoints.as_ref().filter(|_| ours.is_empty()) {
        problems.push(format!(
            "{} holds no checkpoint of this trail signed by a trusted key{}",
            check.file.display(),
            if others.is_empty() {
                String::new()
            } else {
                " (if this store is the one those checkpoints were made of, it was rewritten from record 1)".into()
            }
        ));
    }
    let wanted = ours;
    for (line, c) in &wanted {
        match answer.hashes.get(&c.seq) {
            Some(hash) if *hash == c.hash => extended += 1,
            Some(_) => problems.push(format!(
                "checkpoint of record {} (line {line}, signed {}): the trail's record {} has a different hash — the trail was rewritten after this checkpoint",
                c.seq, c.at, c.seq
            )),
            None => problems.push(format!(
                "checkpoint of record {} (line {line}, signed {}): the trail does not reach record {} intact — records were removed or the chain breaks before it",
                c.seq, c.at, c.seq
            )),
        }
    }
    if checkpoints.is_some() {
        for warning in &warnings {
            println!("checkpoint warning: {warning}");
        }
        for problem in &problems {
            println!("checkpoint FAILED: {problem}");
        }
        if problems.is_empty() {
            let latest = wanted.iter().map(|(_, c)| c).max_by_key(|c| c.seq).expect("at least one");
            println!(
                "the trail extends all {extended} checkpoint(s); the latest covers records 1–{} (signed {})",
                latest.seq, latest.at
            );
        }
    }
    Ok(answer.ok && problems.is_empty())
}

/// Writes every record `each` visits to `out`, straight from the store.
fn export_direct(
    each: impl FnOnce(&mut dyn FnMut(AuditRecord) -> bool) -> std::result::Result<(), crate::audit::AuditError>,
    out: &mut impl Write,
) -> Result<()> {
    let mut failed = None;
    each(&mut |record: AuditRecord| match serde_json::to_writer(&mut *out, &record)
        .map_err(std::io::Error::other)
        .and_then(|_| out.write_all(b"\n"))
    {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    match failed {
        // A closed pipe (`| head`) ends the export quietly.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e.into()),
        None => Ok(out.flush()?),
    }
}

/// `opsbot audit export`: JSON lines on stdout, streamed (memory stays flat
/// whatever the trail's size). Never writes to the store.
pub async fn export(
    data_dir: &Location,
    service: Option<String>,
    request_id: Option<String>,
    since: Option<DateTime<Utc>>,
) -> Result<()> {
    match source(data_dir)? {
        Source::Direct(store) => {
            if let crate::audit::end::End::Broken { problem } = store.trail.end()? {
                eprintln!("opsbot: the trail's end is damaged ({problem}); exporting every stored record");
            }
            let query = AuditQuery { service, request_id, since, ..Default::default() };
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::BufWriter::with_capacity(CHUNK, std::io::stdout().lock());
                export_direct(|visit| store.trail.each(&query, visit), &mut out)
            })
            .await
            .map_err(|e| Error::Io(e.to_string()))??;
        }
        Source::Postgres(trail) => {
            let query = AuditQuery { service, request_id, since, ..Default::default() };
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::BufWriter::with_capacity(CHUNK, std::io::stdout().lock());
                export_direct(|visit| trail.each(&query, visit), &mut out)
            })
            .await
            .map_err(|e| Error::Io(e.to_string()))??;
        }
        Source::Running(socket) => {
            let mut lines =
                ask(&socket, &AdminRequest::Export { service, request_id, since, limit: None, after_seq: None })
                    .await?;
            let mut out = std::io::BufWriter::with_capacity(CHUNK, std::io::stdout().lock());
            while let Some(line) = lines.next_line().await? {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// Calls `visit` with each record matching `query`, oldest first, from the
/// store directly or through the running bot's socket, until it returns false.
async fn visit_records(
    data_dir: &Location,
    query: AuditQuery,
    mut visit: impl FnMut(AuditRecord) -> bool + Send + 'static,
) -> Result<()> {
    match source(data_dir)? {
        Source::Direct(store) => {
            tokio::task::spawn_blocking(move || store.trail.each(&query, &mut visit))
                .await
                .map_err(|e| Error::Io(e.to_string()))??;
        }
        Source::Postgres(trail) => {
            tokio::task::spawn_blocking(move || trail.each(&query, &mut visit))
                .await
                .map_err(|e| Error::Io(e.to_string()))??;
        }
        Source::Running(socket) => {
            let AuditQuery { service, request_id, since, after_seq, .. } = query;
            let request = AdminRequest::Export { service, request_id, since, limit: None, after_seq };
            let mut lines = ask(&socket, &request).await?;
            while let Some(line) = lines.next_line().await? {
                let record = serde_json::from_str(&line)
                    .map_err(|e| Error::Io(format!("the bot sent a record opsbot cannot read: {e}")))?;
                if !visit(record) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// `opsbot incident export INC-n`: the incident as its newest record in the
/// trail states it, and its timeline, from the trail alone (a running bot's
/// or the store's), read up to just after its resolve. Never writes.
pub async fn incident_export(data_dir: &Location, id: &str, format: crate::incident::Format) -> Result<()> {
    use crate::incident::{Incident, TimelineScan};
    let stated = Arc::new(std::sync::Mutex::new(None::<Incident>));
    let found = stated.clone();
    let query = AuditQuery { request_id: Some(id.to_string()), kind: Some(RecordKind::Incident), ..Default::default() };
    visit_records(data_dir, query, move |record| {
        if let Some(incident) = record.entry.args.and_then(|a| serde_json::from_value(a).ok()) {
            *found.lock().expect("incident lock") = Some(incident);
        }
        true
    })
    .await?;
    let incident = stated.lock().expect("incident lock").take().ok_or_else(|| {
        Error::Invalid(format!("the audit trail has no incident {id}; `opsbot audit export` shows what it holds"))
    })?;
    let scan = Arc::new(std::sync::Mutex::new(TimelineScan::new(&incident)));
    let scanning = scan.clone();
    let query = AuditQuery {
        since: Some(incident.declared_at),
        after_seq: (incident.from_seq > 0).then_some(incident.from_seq),
        ..Default::default()
    };
    visit_records(data_dir, query, move |record| scanning.lock().expect("scan lock").take(record)).await?;
    let scan = std::mem::replace(&mut *scan.lock().expect("scan lock"), TimelineScan::new(&incident));
    let timeline = scan.finish();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", timeline.render(format))?;
    Ok(())
}

/// `opsbot report delivery`: the delivery numbers over the trail (a
/// running bot's or the store's), read from a failure window before the
/// period (a deployment's failure can show after it). Never writes.
pub async fn delivery_report(
    data_dir: &Location,
    targets: crate::report::delivery::Targets,
    period: crate::report::Period,
    service: Option<String>,
) -> Result<crate::report::delivery::DeliveryReport> {
    let scan =
        Arc::new(std::sync::Mutex::new(Some(crate::report::delivery::DeliveryScan::new(targets, period, service))));
    // The whole trail, once: before the period, CI's commit records and
    // which versions were deployed already (see DeliveryScan::read).
    let scanning = scan.clone();
    visit_records(data_dir, AuditQuery::default(), move |record| {
        scanning.lock().expect("scan lock").as_mut().is_some_and(|scan| scan.read(&record))
    })
    .await?;
    let scan = scan.lock().expect("scan lock").take().ok_or_else(|| Error::Io("the report scan was lost".into()))?;
    Ok(scan.finish())
}

/// `opsbot report alerts`: the noise report over the trail. Never writes.
pub async fn noise_report(data_dir: &Location, period: crate::report::Period) -> Result<crate::report::noise::Noise> {
    let scan = Arc::new(std::sync::Mutex::new(crate::report::noise::NoiseScan::default()));
    let scanning = scan.clone();
    let query = AuditQuery { since: Some(period.since), kind: Some(RecordKind::Alert), ..Default::default() };
    visit_records(data_dir, query, move |record| scanning.lock().expect("scan lock").take(&record, &period)).await?;
    let scan = std::mem::take(&mut *scan.lock().expect("scan lock"));
    Ok(scan.finish())
}

/// `opsbot audit tail`: the last `last` records, then (with `follow`) new ones
/// as the running bot commits them. Without a running bot it waits for one,
/// never holding the store's lock while it waits (that would stop the bot
/// from starting).
pub async fn tail(at: &Location, last: usize, follow: bool) -> Result<()> {
    let print = |line: &str| println!("{line}");
    let source = match source(at)? {
        Source::Postgres(trail) => return tail_postgres(trail, last, follow, print).await,
        source => source,
    };
    let data_dir = at.dir()?;
    let mut after_seq = None;
    match source {
        Source::Postgres(_) => unreachable!("answered above"),
        Source::Direct(store) => {
            let records = store.trail.read(&AuditQuery { limit: Some(last), ..Default::default() })?;
            for record in &records {
                print(&serde_json::to_string(record).map_err(|e| Error::Io(e.to_string()))?);
            }
            after_seq = Some(records.last().map(|r| r.seq).unwrap_or(0));
            drop(store);
            if !follow {
                return Ok(());
            }
            eprintln!("opsbot audit tail: no opsbot is running on {}; waiting for one to start", data_dir.display());
        }
        Source::Running(socket) if !follow => {
            let request = AdminRequest::Export {
                service: None,
                request_id: None,
                since: None,
                limit: Some(last),
                after_seq: None,
            };
            let mut lines = ask(&socket, &request).await?;
            while let Some(line) = lines.next_line().await? {
                print(&line);
            }
            return Ok(());
        }
        Source::Running(_) => {}
    }
    let socket = data_dir.join(SOCKET);
    loop {
        if socket.exists() {
            if let Ok(mut lines) = ask(&socket, &AdminRequest::Tail { last, after_seq }).await {
                while let Some(line) = lines.next_line().await? {
                    print(&line);
                }
                return Ok(());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `audit tail` on PostgreSQL: the last `last` records, then (with
/// `follow`) new ones as any replica commits them, read every half second.
async fn tail_postgres(
    trail: Arc<crate::store::postgres::PgAuditLog>,
    last: usize,
    follow: bool,
    print: impl Fn(&str),
) -> Result<()> {
    let mut query = AuditQuery { limit: Some(last), ..Default::default() };
    loop {
        let reading = trail.clone();
        let asked = query.clone();
        let records =
            tokio::task::spawn_blocking(move || reading.read(&asked)).await.map_err(|e| Error::Io(e.to_string()))??;
        for record in &records {
            print(&serde_json::to_string(record).map_err(|e| Error::Io(e.to_string()))?);
        }
        if !follow {
            return Ok(());
        }
        if let Some(newest) = records.last() {
            query = AuditQuery { after_seq: Some(newest.seq), ..Default::default() };
        } else if query.limit.is_some() {
            query = AuditQuery { after_seq: Some(0), ..Default::default() };
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `opsbot audit repair`: see [`crate::audit::sled_log::repair`]. Needs the
/// bot stopped. Records what it did in the trail. Ok(true) if the trail is
/// sound afterwards.
pub async fn repair(at: &Location) -> Result<bool> {
    let data_dir = at.dir()?;
    let repaired = match crate::store::repair(data_dir) {
        Err(StoreError::Locked { .. }) => {
            return Err(Error::Io("an opsbot is running on this store: stop it first, then repair".into()))
        }
        Err(StoreError::Audit(crate::audit::AuditError::Damaged(problem))) => {
            println!("audit trail NOT repaired: {problem}");
            return Ok(false);
        }
        other => other?,
    };
    if let Some(leftover) = &repaired.leftover {
        println!("nothing to repair: {leftover}; starting opsbot does that, and records it");
        return Ok(true);
    }
    let Some(problem) = repaired.problem else {
        println!("audit trail sound: {} record(s), nothing to repair", repaired.records);
        return Ok(true);
    };
    let mark =
        |head: &Option<crate::audit::chain::Head>| head.as_ref().map(|h| h.seq.to_string()).unwrap_or("none".into());
    let detail = format!(
        "audit repair: {problem}; the head said {}, the committed mark {}; the chain verifies from record 1 to {} and every record was kept; head and marks now name record {}",
        mark(&repaired.was_head),
        mark(&repaired.was_committed),
        repaired.records,
        repaired.records
    );
    // The repair itself goes on the record.
    let store = SledStore::reopen(data_dir)?;
    let audit: Arc<dyn AuditLog> = store.audit();
    audit.append(AuditEntry::new(RecordKind::System).detail(detail.clone())).await?;
    store.audit().close();
    println!("audit trail repaired: {detail}");
    Ok(true)
}

/// `opsbot audit checkpoint`: a signed checkpoint now, printed as a line.
pub async fn checkpoint(at: &Location, config: &crate::config::Config) -> Result<bool> {
    let answer = match source(at) {
        Ok(Source::Postgres(trail)) => {
            let Some(signer) = crate::checkpoints::signer(&config.audit)? else {
                return Err(Error::Io(no_key()));
            };
            let checkpoints = Checkpointer::new(signer, config.audit.clone(), trail.clone(), None);
            let made = checkpoints.checkpoint(true).await;
            trail.close();
            match made {
                Ok(made) => CheckpointAnswer { line: made.map(|c| c.line()), error: None },
                Err(e) => CheckpointAnswer { line: None, error: Some(e.to_string()) },
            }
        }
        Ok(Source::Running(socket)) => ask_one::<CheckpointAnswer>(&socket, &AdminRequest::Checkpoint).await?,
        Ok(Source::Direct(read)) => {
            drop(read);
            let Some(signer) = crate::checkpoints::signer(&config.audit)? else {
                return Err(Error::Io(no_key()));
            };
            // Just closed by this process (the read above).
            let store = SledStore::reopen_with(at.dir()?, config.durability)?;
            let checkpoints = Checkpointer::new(signer, config.audit.clone(), store.audit(), None);
            let made = checkpoints.checkpoint(true).await;
            store.audit().close();
            match made {
                Ok(made) => CheckpointAnswer { line: made.map(|c| c.line()), error: None },
                Err(e) => CheckpointAnswer { line: None, error: Some(e.to_string()) },
            }
        }
        Err(e) => return Err(e),
    };
    match answer {
        CheckpointAnswer { error: Some(e), .. } => Err(Error::Io(e)),
        CheckpointAnswer { line: Some(line), .. } => {
            println!("{line}");
            Ok(true)
        }
        _ => {
            println!("the trail is empty: nothing to checkpoint");
            Ok(true)
        }
    }
}
