//! The local admin socket, and the `opsbot audit …` commands that use it.
//!
//! sled holds an exclusive lock on the data directory, so while the bot runs no
//! other process can open the store. The running bot therefore listens on
//! `<data_dir>/admin.sock` (mode 0600, same user only) and answers `verify`,
//! `export` and `tail` itself. When no bot is running, the CLI opens the store
//! directly. Either way the user runs the same command.

use crate::audit::{AuditLog, AuditQuery, AuditRecord};
use crate::error::{Error, Result};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const SOCKET: &str = "admin.sock";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum AdminRequest {
    Verify,
    Export {
        service: Option<String>,
        request_id: Option<String>,
        since: Option<DateTime<Utc>>,
        limit: Option<usize>,
    },
    /// The newest `last` records (or all after `after_seq`), then new ones as committed.
    Tail {
        last: usize,
        after_seq: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct VerifyAnswer {
    ok: bool,
    records: u64,
    head: String,
    failed_seq: Option<u64>,
    problem: Option<String>,
}

/// A running admin listener; removed on [`AdminServer::stop`].
pub struct AdminServer {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl AdminServer {
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the listener. The caller holds the store's lock, so a socket file
/// already there is stale and is replaced.
pub fn serve(data_dir: &Path, store: Store) -> Result<AdminServer> {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| Error::Io(format!("cannot listen on {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, store).await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    });
    Ok(AdminServer { task, path })
}

async fn answer(stream: UnixStream, store: Store) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let request: AdminRequest =
        serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let audit = store.audit();
    let send = |record: &AuditRecord| {
        let mut line = serde_json::to_vec(record).expect("record serialises");
        line.push(b'\n');
        line
    };
    match request {
        AdminRequest::Verify => {
            let answer = verify_answer(&store);
            let mut line = serde_json::to_vec(&answer)?;
            line.push(b'\n');
            write.write_all(&line).await?;
        }
        AdminRequest::Export { service, request_id, since, limit } => {
            let query = AuditQuery { service, request_id, since, limit, ..Default::default() };
            for record in audit.read(&query).map_err(std::io::Error::other)? {
                write.write_all(&send(&record)).await?;
            }
        }
        AdminRequest::Tail { last, after_seq } => {
            // Subscribe before reading, so nothing committed in between is lost.
            let mut live = audit.subscribe();
            let mut seen = 0;
            let backlog = match after_seq {
                Some(after) => AuditQuery { after_seq: Some(after), ..Default::default() },
                None => AuditQuery { limit: Some(last), ..Default::default() },
            };
            for record in audit.read(&backlog).map_err(std::io::Error::other)? {
                seen = record.seq;
                write.write_all(&send(&record)).await?;
            }
            loop {
                match live.recv().await {
                    Ok(record) if record.seq > seen => {
                        seen = record.seq;
                        write.write_all(&send(&record)).await?;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for record in audit
                            .read(&AuditQuery { after_seq: Some(seen), ..Default::default() })
                            .map_err(std::io::Error::other)?
                        {
                            seen = record.seq;
                            write.write_all(&send(&record)).await?;
                        }
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
    }
    write.shutdown().await
}

fn verify_answer(store: &Store) -> VerifyAnswer {
    match store.verify_audit() {
        Ok(summary) => VerifyAnswer {
            ok: true,
            records: summary.records,
            head: summary.head_hash,
            failed_seq: None,
            problem: None,
        },
        Err(failure) => VerifyAnswer {
            ok: false,
            records: 0,
            head: String::new(),
            failed_seq: Some(failure.seq),
            problem: Some(failure.problem),
        },
    }
}

/// Where the CLI reads the trail from.
enum Source {
    Direct(Store),
    Running(PathBuf),
}

fn source(data_dir: &Path) -> Result<Source> {
    if !data_dir.exists() {
        return Err(Error::Io(format!(
            "no store at {}: nothing has been recorded there yet (check --config or --data-dir)",
            data_dir.display()
        )));
    }
    match Store::open(data_dir) {
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
    let mut line = serde_json::to_vec(request).expect("request serialises");
    line.push(b'\n');
    write.write_all(&line).await?;
    Ok(BufReader::new(read).lines())
}

/// `opsbot audit verify`: Ok(true) if the chain is intact. Prints the result.
pub async fn verify(data_dir: &Path) -> Result<bool> {
    let answer = match source(data_dir)? {
        Source::Direct(store) => {
            let answer = verify_answer(&store);
            store.audit().close();
            answer
        }
        Source::Running(socket) => {
            let mut lines = ask(&socket, &AdminRequest::Verify).await?;
            let line = lines
                .next_line()
                .await?
                .ok_or_else(|| Error::Io("the running opsbot closed the admin socket".into()))?;
            serde_json::from_str(&line).map_err(|e| Error::Io(e.to_string()))?
        }
    };
    if answer.ok {
        println!("audit trail intact: {} record(s), head hash {}", answer.records, answer.head);
    } else {
        println!(
            "audit trail BROKEN at record {}: {}",
            answer.failed_seq.unwrap_or(0),
            answer.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    Ok(answer.ok)
}

/// `opsbot audit export`: JSON lines on stdout.
pub async fn export(
    data_dir: &Path,
    service: Option<String>,
    request_id: Option<String>,
    since: Option<DateTime<Utc>>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match source(data_dir)? {
        Source::Direct(store) => {
            let query = AuditQuery { service, request_id, since, ..Default::default() };
            for record in store.audit().read(&query)? {
                serde_json::to_writer(&mut out, &record).map_err(|e| Error::Io(e.to_string()))?;
                out.write_all(b"\n")?;
            }
            store.audit().close();
        }
        Source::Running(socket) => {
            let mut lines = ask(&socket, &AdminRequest::Export { service, request_id, since, limit: None }).await?;
            while let Some(line) = lines.next_line().await? {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// `opsbot audit tail`: the last `last` records, then (with `follow`) new ones
/// as the running bot commits them. Without a running bot it waits for one,
/// never holding the store's lock while it waits (that would stop the bot
/// from starting).
pub async fn tail(data_dir: &Path, last: usize, follow: bool) -> Result<()> {
    let print = |line: &str| println!("{line}");
    let mut after_seq = None;
    match source(data_dir)? {
        Source::Direct(store) => {
            let records = store.audit().read(&AuditQuery { limit: Some(last), ..Default::default() })?;
            for record in &records {
                print(&serde_json::to_string(record).map_err(|e| Error::Io(e.to_string()))?);
            }
            after_seq = Some(records.last().map(|r| r.seq).unwrap_or(0));
            store.audit().close();
            drop(store);
            if !follow {
                return Ok(());
            }
            eprintln!("opsbot audit tail: no opsbot is running on {}; waiting for one to start", data_dir.display());
        }
        Source::Running(socket) if !follow => {
            let mut lines =
                ask(&socket, &AdminRequest::Export { service: None, request_id: None, since: None, limit: Some(last) })
                    .await?;
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
