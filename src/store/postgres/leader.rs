//! One active replica at a time on a shared database: the replica holding a
//! session advisory lock leads. The lock lives on a connection of its own,
//! on a thread of its own; PostgreSQL releases it when that connection dies
//! (the process was killed, its host lost), and a standby waiting for it
//! takes over. Each new leader takes the next term (`opsbot_leader`), and
//! its audit commits check the term is still theirs, so a deposed leader
//! whose other connections still work cannot write after its successor
//! started.

use super::pool::{connect, db_error};
use crate::store::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The advisory lock the leader holds for as long as its connection lives.
const LEADER_LOCK: i64 = 0x6f70_7362_6f74_0002; // "opsbot" 2
/// How often a standby asks for the lock, and the leader checks it still
/// has its connection.
pub const POLL: Duration = Duration::from_secs(1);

/// Who leads, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leading {
    pub holder: String,
    pub term: u64,
    /// Where it takes requests (`http://10.0.3.7:3000`), if it said.
    pub address: Option<String>,
}

impl std::fmt::Display for Leading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (term {})", self.holder, self.term)
    }
}

/// This replica's leadership, once it has it.
pub struct Leader {
    /// This process's name in `opsbot_leader` (host and pid).
    pub holder: String,
    /// The term it leads in; the fencing token its commits carry.
    pub term: Arc<AtomicU64>,
    /// Set when the lock's connection died: this replica no longer leads.
    lost: Arc<AtomicBool>,
}

impl Leader {
    /// Waits until this replica holds the leader's lock (calling `waiting`
    /// with the current leader whenever that changes, while it waits), then
    /// takes the next term, advertising `address` for standbys to forward
    /// to. Blocks: call it on a thread that runs no tasks.
    pub fn acquire(
        url: &str,
        holder: &str,
        address: Option<String>,
        waiting: impl Fn(Option<&Leading>) + Send + 'static,
    ) -> Result<Leader, StoreError> {
        let (url, holder) = (url.to_string(), holder.to_string());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let term = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicBool::new(false));
        let (term_held, lost_held, name) = (term.clone(), lost.clone(), holder.clone());
        std::thread::Builder::new()
            .name("opsbot-pg-leader".into())
            .spawn(move || {
                let mut said: Option<Option<Leading>> = None;
                let mut unreachable = false;
                let mut client = loop {
                    // The database was reached when the store opened: a
                    // failure now is its own failover or a blip, waited out.
                    let mut client = match connect(&url) {
                        Ok(c) => c,
                        Err(e) => {
                            if !unreachable {
                                tracing::warn!(error = %e, "cannot reach the database to ask for the leader's lock; trying again");
                                unreachable = true;
                            }
                            std::thread::sleep(POLL * 2);
                            continue;
                        }
                    };
                    unreachable = false;
                    let got = client
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                        .map(|r| r.get::<_, bool>(0));
                    match got {
                        Ok(true) => break client,
                        Ok(false) => {
                            let current = client
                                .query_opt("SELECT holder, term, address FROM opsbot_leader WHERE id = 1", &[])
                                .ok()
                                .flatten()
                                .map(|r| Leading {
                                    holder: r.get(0),
                                    term: r.get::<_, i64>(1) as u64,
                                    address: r.get(2),
                                });
                            if said.as_ref() != Some(&current) {
                                waiting(current.as_ref());
                                said = Some(current);
                            }
                            drop(client);
                            std::thread::sleep(POLL);
                        }
                        Err(e) => {
                            tracing::warn!(error = %db_error(&e), "asking for the leader's lock failed; trying again");
                            std::thread::sleep(POLL);
                        }
                    }
                };
                // A leader that hangs (its process stopped, not dead) lets the
                // lock go after a few seconds of silence on this connection.
                if let Err(e) = client.batch_execute("SET idle_session_timeout = '5s'") {
                    tracing::warn!(error = %db_error(&e), "cannot bound the leader connection's idle time");
                }
                // Under the trail's lock, which every audit commit holds for
                // its whole transaction: a commit of the old leader's ends
                // before the new term begins, or starts after it and reads it.
                let taken = client.transaction().and_then(|mut t| {
                    t.execute("SELECT pg_advisory_xact_lock($1)", &[&super::audit::TRAIL_LOCK])?;
                    let row = t.query_one(
                        "INSERT INTO opsbot_leader (id, term, holder, since, address) VALUES (1, 1, $1, now(), $2)
                         ON CONFLICT (id) DO UPDATE SET term = opsbot_leader.term + 1, holder = EXCLUDED.holder,
                             since = now(), address = EXCLUDED.address
                         RETURNING term",
                        &[&name, &address],
                    )?;
                    t.commit().map(|()| row)
                });
                match taken {
                    Ok(row) => {
                        term_held.store(row.get::<_, i64>(0) as u64, Ordering::SeqCst);
                        let _ = tx.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(StoreError::Io(format!("PostgreSQL: {}", db_error(&e)))));
                        return;
                    }
                }
                // Hold the connection (and so the lock) while this process
                // lives. Losing it means another replica may lead already:
                // this one stops at once (a crash, as far as the trail goes:
                // its successor records what was running as interrupted),
                // so nothing it would still write, state or backend, races
                // the new leader's.
                loop {
                    std::thread::sleep(POLL);
                    if client.is_closed() || client.simple_query("SELECT 1").is_err() {
                        lost_held.store(true, Ordering::SeqCst);
                        tracing::error!("the leader's database connection is gone: this replica no longer leads, and stops");
                        eprintln!("opsbot: lost the leader's lock (its database connection is gone); stopping");
                        std::process::exit(75);
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the leader thread: {e}")))?;
        rx.recv().map_err(|_| StoreError::Io("the leader thread stopped".into()))??;
        Ok(Leader { holder, term, lost })
    }

    /// The term this replica leads in, or `None` once it lost the lock.
    pub fn term(&self) -> Option<u64> {
        (!self.lost.load(Ordering::SeqCst)).then(|| self.term.load(Ordering::SeqCst))
    }
}
