//! `opsbot store migrate --to postgres`: a sled store moved into an empty
//! PostgreSQL database, in one transaction.
//!
//! - The source is opened as the bot opens it (exclusively: a running bot
//!   makes this refuse) and its chain verified before anything is copied.
//! - The target must be empty: no record, no state, no id handed out.
//! - Records are copied as stored (hash and body, byte for byte), so the
//!   chain, its hashes and any signed checkpoint of it stay valid; the
//!   table's own chain check runs on every batch.
//! - The state besides the trail (approval requests, run locks, holds,
//!   incidents, alert groups, links) and the id counters go in the same
//!   transaction. Dedup keys are not copied: they guard against a sender's
//!   retries for at most 30 minutes, and the bot is stopped meanwhile.
//! - Before committing, the copy is read back and verified, and must end at
//!   the same record with the same hash as the source.

use super::postgres::{self, Pg, PgStore};
use super::{SledStore, Store, StoreError};
use crate::audit::chain::{self, Verifier};
use std::path::Path;
use std::sync::Arc;

/// What a migration copied.
#[derive(Debug)]
pub struct Migrated {
    pub records: u64,
    pub head_hash: String,
    pub requests: usize,
    pub incidents: usize,
    pub alerts: usize,
    pub links: usize,
    pub run_locks: usize,
    pub holds: usize,
}

/// Everything of a sled store besides the trail and the dedup windows.
pub struct SledState {
    pub requests: Vec<crate::approval::PendingRequest>,
    pub run_locks: Vec<(String, super::RunLock)>,
    pub holds: Vec<(String, crate::policy::Hold)>,
    pub incidents: Vec<crate::incident::Incident>,
    /// Oldest first, so each sender's key ends at its newest group.
    pub alerts: Vec<crate::alert::group::AlertGroup>,
    pub links: Vec<(String, String)>,
    /// The last request, incident and alert numbers handed out.
    pub counters: [u64; 3],
}

/// Records copied per statement.
const BATCH: usize = 2_000;

fn db(e: ::postgres::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {}", postgres::db_error(&e)))
}

fn refused(why: String) -> StoreError {
    StoreError::Open { path: "opsbot store migrate".into(), reason: why }
}

/// Copies the sled store in `dir` into the empty database at `url`.
pub fn to_postgres(dir: &Path, url: &str) -> Result<Migrated, StoreError> {
    let sled = match SledStore::open(dir) {
        Err(StoreError::Locked { .. }) => {
            return Err(refused(format!(
                "an opsbot is running on {}: stop it first (the copy must be of a store nobody writes to)",
                dir.display()
            )))
        }
        other => other?,
    };
    let source = sled
        .verify_audit()
        .map_err(|failure| refused(format!("the sled trail does not verify ({failure}); nothing was copied")))?;
    let state = sled.state()?;
    let pg = Arc::new(Pg::open(url, 1)?);
    postgres::ensure_schema(&pg)?;
    // One transaction on this thread; the store's writes below go into it.
    let conn = pg.connect_aside().map_err(StoreError::Io)?;
    pg.begin_commit(conn);
    let copied = empty_then_copy(&sled, &pg, &state, &source);
    let mut conn = pg.end_commit();
    let migrated = match copied {
        Ok(migrated) => migrated,
        Err(e) => {
            let _ = conn.batch_execute("ROLLBACK");
            return Err(e);
        }
    };
    conn.batch_execute("COMMIT").map_err(|e| {
        StoreError::Io(format!(
            "PostgreSQL: {} (if the commit landed anyway, `opsbot audit verify` on the database shows the copy)",
            postgres::db_error(&e)
        ))
    })?;
    sled.audit().close();
    Ok(migrated)
}

/// Inside the migration's transaction: the target is checked empty, with
/// every table locked against other writers (a bot started on it meanwhile
/// waits), then the copy is made.
fn empty_then_copy(
    sled: &SledStore,
    pg: &Arc<Pg>,
    state: &SledState,
    source: &chain::VerifySummary,
) -> Result<Migrated, StoreError> {
    pg.on_commit(|c| c.batch_execute("BEGIN")).map_err(db)?;
    let taken: Vec<String> = pg.call(|c| {
        c.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", postgres::TABLES.join(", ")))?;
        let mut taken = Vec::new();
        for table in postgres::TABLES {
            let n: i64 = c.query_one(&format!("SELECT count(*) FROM {table}"), &[])?.get(0);
            if n > 0 {
                taken.push(format!("{table} has {n} row(s)"));
            }
        }
        for sequence in postgres::SEQUENCES {
            let called: bool = c.query_one(&format!("SELECT is_called FROM {sequence}"), &[])?.get(0);
            if called {
                taken.push(format!("{sequence} has handed out ids"));
            }
        }
        Ok(taken)
    })?;
    if !taken.is_empty() {
        return Err(refused(format!(
            "the target database is not empty ({}); migrate into a new database or schema",
            taken.join(", ")
        )));
    }
    copy(sled, pg, state, source)
}

fn copy(
    sled: &SledStore,
    pg: &Arc<Pg>,
    state: &SledState,
    source: &chain::VerifySummary,
) -> Result<Migrated, StoreError> {
    // The trail, as stored.
    let mut batch: Vec<(crate::audit::AuditRecord, Vec<u8>)> = Vec::with_capacity(BATCH);
    let mut failed: Option<StoreError> = None;
    let flush = |batch: &mut Vec<(crate::audit::AuditRecord, Vec<u8>)>| -> Result<(), StoreError> {
        let rows = std::mem::take(batch);
        pg.on_commit(|c| postgres::insert_records(c, &rows, None)).map_err(db)?;
        Ok(())
    };
    sled.audit().trail().each_stored(&mut |seq, stored| {
        match chain::open(stored) {
            Ok(record) if record.seq == seq => batch.push((record, stored.to_vec())),
            Ok(record) => {
                failed = Some(refused(format!("record {seq} says it is record {}", record.seq)));
                return false;
            }
            Err(problem) => {
                failed = Some(refused(format!("record {seq}: {problem}")));
                return false;
            }
        }
        if batch.len() >= BATCH {
            if let Err(e) = flush(&mut batch) {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut batch)?;
    // The state, through the store's own writes (in this transaction).
    let store = PgStore::new(pg.clone());
    for request in &state.requests {
        store.put_pending(request)?;
    }
    for incident in &state.incidents {
        store.put_incident(incident)?;
    }
    for group in &state.alerts {
        store.put_alert(group)?;
    }
    for (key, value) in &state.links {
        store.link(key, value)?;
    }
    for (service, hold) in &state.holds {
        store.set_hold(service, hold)?;
    }
    for (service, lock) in &state.run_locks {
        // The table is empty: taking it cannot be refused.
        let _ = store.acquire_run_lock(service, lock.clone(), lock.until)?;
    }
    let counters = state.counters;
    pg.on_commit(|c| {
        for (sequence, last) in postgres::SEQUENCES.iter().zip(counters) {
            if last > 0 {
                c.query_one(&format!("SELECT setval('{sequence}', $1)"), &[&(last as i64)])?;
            }
        }
        Ok(())
    })
    .map_err(db)?;
    // Read back inside the transaction: the copy verifies and ends where the source does.
    let copy = pg.on_commit(|c| -> Result<chain::Head, StoreError> {
        let mut verifier = Verifier::default();
        let mut after = 0i64;
        loop {
            let page = c
                .query(
                    "SELECT seq, record FROM opsbot_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &(BATCH as i64)],
                )
                .map_err(db)?;
            let Some(last) = page.last().map(|r| r.get::<_, i64>(0)) else { break };
            for row in &page {
                let (seq, stored): (i64, Vec<u8>) = (row.get(0), row.get(1));
                verifier
                    .push(seq as u64, &stored)
                    .map_err(|f| refused(format!("the copy does not verify ({f}); nothing was committed")))?;
            }
            after = last;
        }
        Ok(verifier.head())
    })?;
    if copy.seq != source.records || copy.hash != source.head_hash {
        return Err(refused(format!(
            "the copy ends at record {} ({}…) but the source at {} ({}…); nothing was committed",
            copy.seq,
            &copy.hash[..12],
            source.records,
            &source.head_hash[..12.min(source.head_hash.len())]
        )));
    }
    Ok(Migrated {
        records: copy.seq,
        head_hash: copy.hash,
        requests: state.requests.len(),
        incidents: state.incidents.len(),
        alerts: state.alerts.len(),
        links: state.links.len(),
        run_locks: state.run_locks.len(),
        holds: state.holds.len(),
    })
}
