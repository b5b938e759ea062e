//! The audit trail in PostgreSQL (`opsbot_audit`), with group commit.
//!
//! Appends from any number of tasks go through a bounded queue to one writer
//! thread, which takes everything queued (up to [`MAX_COMMIT`] records) into
//! one transaction: it takes the trail's advisory lock (so replicas sharing
//! the database take turns at the end of one chain), reads the head, seals
//! the records onto it, inserts them in one statement, runs the jobs' state
//! changes in the same transaction, and commits once. With 64 writers one
//! WAL flush covers up to 64 records.
//!
//! The table refuses UPDATE, DELETE and TRUNCATE and checks each record
//! follows the one before (schema.sql); `prev` is unique, so the chain cannot
//! fork. Records are stored as sealed (hash, then body), so verification
//! re-hashes the stored bytes, exactly as for sled.

use super::pool::{connect, db_error, Pg};
use crate::audit::chain::{self, Head, Verifier, GENESIS};
use crate::audit::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, BoxFuture, Effect, MAX_COMMIT};
use chrono::{DateTime, Utc};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::broadcast;

/// The advisory lock every writer of the trail holds for its transaction.
pub(super) const TRAIL_LOCK: i64 = 0x6f70_7362_6f74_0001; // "opsbot" 1
/// Most appends waiting for the writer; past this, appending waits.
const QUEUE_LIMIT: usize = 2 * MAX_COMMIT;
/// How long a commit waits for more appends when the last one served several.
const LINGER: std::time::Duration = std::time::Duration::from_micros(250);
/// Records read per round trip when streaming.
const PAGE: i64 = 2_000;

use crate::audit::queue::{Job, Queue};

pub struct PgAuditLog {
    pg: Arc<Pg>,
    queue: Queue,
    committed: broadcast::Sender<AuditRecord>,
    /// Set when a commit failed in a way that leaves the trail's state in
    /// doubt: the log then takes nothing more (liveness fails; a restart
    /// reads the trail as it is).
    failed: Arc<Mutex<Option<String>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The leader's term this process writes in (0: not fenced).
    fence: Arc<std::sync::atomic::AtomicU64>,
    /// Commits made, and the microseconds they took.
    timing: Arc<[std::sync::atomic::AtomicU64; 2]>,
}

fn io(e: postgres::Error) -> AuditError {
    AuditError::Store(format!("PostgreSQL: {}", db_error(&e)))
}

fn kind_name(kind: crate::audit::RecordKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// One stored row, as the chain sees it.
fn open_row(seq: i64, stored: &[u8]) -> Result<AuditRecord, AuditError> {
    let record = chain::open(stored).map_err(|problem| AuditError::Corrupt { seq: seq as u64, problem })?;
    if record.seq != seq as u64 {
        return Err(AuditError::Corrupt {
            seq: seq as u64,
            problem: format!("stored as {seq} but says {}", record.seq),
        });
    }
    Ok(record)
}

/// The WHERE clause and parameters of a query (besides paging).
struct Filter {
    sql: String,
    service: Option<String>,
    request_id: Option<String>,
    kind: Option<String>,
    since: Option<DateTime<Utc>>,
    after: i64,
}

impl Filter {
    fn of(query: &AuditQuery) -> Filter {
        let mut sql = String::from("seq > $1");
        let mut n = 1;
        let mut add = |column: &str, op: &str, present: bool| {
            if present {
                n += 1;
                sql.push_str(&format!(" AND {column} {op} ${n}"));
            }
        };
        add("service", "=", query.service.is_some());
        add("request_id", "=", query.request_id.is_some());
        add("kind", "=", query.kind.is_some());
        add("ts", ">=", query.since.is_some());
        Filter {
            sql,
            service: query.service.clone(),
            request_id: query.request_id.clone(),
            kind: query.kind.map(kind_name),
            since: query.since,
            after: query.after_seq.map_or(0, |s| s as i64),
        }
    }

    /// Rows `(seq, record)` matching, after `floor`, in `order`, at most `limit`.
    fn rows(
        &self,
        c: &mut postgres::Client,
        floor: i64,
        order: &str,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, postgres::Error> {
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
        let floor = floor.max(self.after);
        params.push(&floor);
        if let Some(s) = &self.service {
            params.push(s);
        }
        if let Some(r) = &self.request_id {
            params.push(r);
        }
        if let Some(k) = &self.kind {
            params.push(k);
        }
        if let Some(t) = &self.since {
            params.push(t);
        }
        params.push(&limit);
        let sql = format!(
            "SELECT seq, record FROM opsbot_audit WHERE {} ORDER BY seq {order} LIMIT ${}",
            self.sql,
            params.len()
        );
        Ok(c.query(&sql, &params)?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl PgAuditLog {
    /// The trail in `pg`'s database, with a writer of its own (its own
    /// connection, on its own thread).
    pub fn open(pg: Arc<Pg>) -> Result<Arc<PgAuditLog>, AuditError> {
        let conn = pg.connect_aside().map_err(AuditError::Store)?;
        let (jobs, queue) = Queue::new(QUEUE_LIMIT);
        let (committed, _) = broadcast::channel(1024);
        let failed = Arc::new(Mutex::new(None));
        let log = Arc::new(PgAuditLog {
            pg: pg.clone(),
            queue: jobs,
            committed: committed.clone(),
            failed: failed.clone(),
            writer: Mutex::new(None),
            fence: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            timing: Arc::new(Default::default()),
        });
        let writer = Writer {
            pg,
            conn: Some(conn),
            committed,
            failed,
            fence: log.fence.clone(),
            timing: log.timing.clone(),
            used: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("opsbot-pg-audit".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| AuditError::Store(format!("cannot start the audit writer: {e}")))?;
        *log.writer.lock().expect("audit lock") = Some(handle);
        Ok(log)
    }

    /// From now on every commit checks, in its transaction, that `term` is
    /// still the leader's, and records it with each record; a commit after
    /// another replica took a later term is refused and stops the log.
    pub fn fence(&self, term: u64) {
        self.fence.store(term, std::sync::atomic::Ordering::SeqCst);
        self.pg.fence(term);
    }

    /// Why the log takes no more records, if it does not.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("audit lock").clone()
    }

    /// Stops taking records and waits for the writer to finish what it took.
    pub fn close(&self) {
        self.queue.close();
        if let Some(handle) = self.writer.lock().expect("audit lock").take() {
            let _ = handle.join();
        }
    }

    /// Walks the whole stored trail in order, re-hashing every record.
    pub fn verify(&self) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        self.verify_at(&Default::default()).0
    }

    /// [`PgAuditLog::verify`], also giving the hash of each record in `at`
    /// the walk reached (to compare with signed checkpoints).
    pub fn verify_at(
        &self,
        at: &std::collections::BTreeSet<u64>,
    ) -> (Result<chain::VerifySummary, chain::VerifyFailure>, std::collections::BTreeMap<u64, String>) {
        let mut hashes = std::collections::BTreeMap::new();
        let result = self.walk(at, &mut hashes);
        (result, hashes)
    }

    fn walk(
        &self,
        at: &std::collections::BTreeSet<u64>,
        hashes: &mut std::collections::BTreeMap<u64, String>,
    ) -> Result<chain::VerifySummary, chain::VerifyFailure> {
        let mut verifier = Verifier::default();
        let mut after = 0i64;
        loop {
            let page: Result<Vec<(i64, Vec<u8>)>, _> = self.pg.call(move |c| {
                Ok(c.query(
                    "SELECT seq, record FROM opsbot_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &PAGE],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
            });
            let page = page
                .map_err(|e| chain::VerifyFailure { seq: after as u64 + 1, problem: format!("cannot be read: {e}") })?;
            let Some(last) = page.last().map(|(seq, _)| *seq) else { break };
            for (seq, stored) in page {
                verifier.push(seq as u64, &stored)?;
                if at.contains(&(seq as u64)) {
                    hashes.insert(seq as u64, verifier.head().hash);
                }
            }
            after = last;
        }
        let end = verifier.head();
        Ok(chain::VerifySummary { records: end.seq, head_hash: end.hash, note: None })
    }
}

impl Drop for PgAuditLog {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The writer thread's side.
struct Writer {
    pg: Arc<Pg>,
    conn: Option<postgres::Client>,
    committed: broadcast::Sender<AuditRecord>,
    failed: Arc<Mutex<Option<String>>>,
    fence: Arc<std::sync::atomic::AtomicU64>,
    timing: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// When the connection was last used.
    used: std::time::Instant,
}

/// How a commit went wrong.
enum Failure {
    /// Nothing of it landed (rolled back, or refused before COMMIT).
    NotCommitted(AuditError),
    /// The trail's state is in doubt, or a state change failed: stop.
    Stop(String),
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        // Whether the last commit served several callers: then the others
        // are likely on their way, and a commit waits a moment for them (a
        // commit costs a WAL flush; a fuller one costs about the same).
        let mut busy = false;
        while let Ok(first) = queue.recv() {
            let mut records = first.entries.len();
            let mut batch = vec![first];
            let mut lingered = !busy;
            while records < MAX_COMMIT {
                let next = match queue.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::TryRecvError::Empty) if !lingered => {
                        lingered = true;
                        match queue.recv_timeout(LINGER) {
                            Ok(job) => job,
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                };
                if records + next.entries.len() > MAX_COMMIT {
                    // Too big to join this commit: it starts the next one.
                    self.commit(std::mem::take(&mut batch));
                    records = 0;
                }
                records += next.entries.len();
                batch.push(next);
            }
            busy = batch.len() > 1;
            self.commit(batch);
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close();
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        if batch.is_empty() {
            return;
        }
        if let Some(problem) = self.failed.lock().expect("audit lock").clone() {
            for job in batch {
                let _ = job.reply.send(Err(AuditError::Store(format!(
                    "the audit store failed earlier ({problem}) and takes no more records"
                ))));
            }
            return;
        }
        let mut entries = Vec::new();
        let mut shape = Vec::new();
        let mut effects = Vec::new();
        let mut replies = Vec::new();
        for job in batch {
            shape.push(job.entries.len());
            entries.extend(job.entries);
            effects.push(job.then);
            replies.push(job.reply);
        }
        let started = std::time::Instant::now();
        let result = self.transaction(entries, effects);
        self.timing[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.timing[1].fetch_add(started.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(records) => {
                let mut records = records.into_iter();
                for (reply, n) in replies.into_iter().zip(shape) {
                    let mine: Vec<AuditRecord> = records.by_ref().take(n).collect();
                    for record in &mine {
                        let _ = self.committed.send(record.clone());
                    }
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(Failure::NotCommitted(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Store(e.to_string())));
                }
            }
            Err(Failure::Stop(problem)) => {
                tracing::error!(%problem, "the audit store failed; it takes no more records");
                *self.failed.lock().expect("audit lock") = Some(problem.clone());
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Store(problem.clone())));
                }
            }
        }
    }

    /// One transaction: lock the end of the trail, seal onto it, insert,
    /// run the state changes, commit.
    fn transaction(
        &mut self,
        entries: Vec<AuditEntry>,
        effects: Vec<Option<Effect>>,
    ) -> Result<Vec<AuditRecord>, Failure> {
        // An idle connection may have been dropped by the server unnoticed:
        // asked first, so a commit after a quiet spell does not fail on it.
        let idle = self.used.elapsed() > super::pool::IDLE_CHECK;
        self.used = std::time::Instant::now();
        let kept = self.conn.take().filter(|c| !c.is_closed()).and_then(|mut conn| {
            let alive = !idle || conn.simple_query("").is_ok();
            alive.then_some(conn)
        });
        let conn = match kept {
            Some(conn) => conn,
            None => connect(self.pg.url()).map_err(|e| Failure::NotCommitted(AuditError::Store(e)))?,
        };
        self.pg.begin_commit(conn);
        let result = self.in_transaction(entries, effects);
        let mut conn = self.pg.end_commit();
        let outcome = match result {
            Ok(sealed) => {
                let last_hash = sealed.last().map(|r| r.hash.clone());
                match conn.batch_execute("COMMIT") {
                    Ok(()) => Ok(sealed),
                    // The answer to COMMIT was lost: ask the database whether it landed.
                    Err(e) => match last_hash.map(|hash| Self::landed(self.pg.url(), &hash)) {
                        Some(Ok(true)) => Ok(sealed),
                        Some(Ok(false)) | None => Err(Failure::NotCommitted(io(e))),
                        Some(Err(why)) => Err(Failure::Stop(format!(
                            "a commit's answer was lost ({}) and whether it landed cannot be read ({why})",
                            db_error(&e)
                        ))),
                    },
                }
            }
            Err(failure) => {
                let _ = conn.batch_execute("ROLLBACK");
                Err(failure)
            }
        };
        self.conn = Some(conn);
        outcome
    }

    /// Whether the commit whose last record is `hash` landed. Asked under
    /// the trail's lock, which the commit in question holds until it ends:
    /// the answer waits for it, if it is still going.
    fn landed(url: &str, hash: &str) -> Result<bool, String> {
        let mut c = connect(url)?;
        let mut t = c.transaction().map_err(|e| db_error(&e))?;
        t.execute("SELECT pg_advisory_xact_lock($1)", &[&TRAIL_LOCK]).map_err(|e| db_error(&e))?;
        let row = t.query_opt("SELECT 1 FROM opsbot_audit WHERE hash = $1", &[&hash]).map_err(|e| db_error(&e))?;
        Ok(row.is_some())
    }

    fn in_transaction(
        &mut self,
        entries: Vec<AuditEntry>,
        effects: Vec<Option<Effect>>,
    ) -> Result<Vec<AuditRecord>, Failure> {
        let pg = self.pg.clone();
        let not_committed = |e: postgres::Error| Failure::NotCommitted(io(e));
        // One round trip: open the transaction, take the end of the trail,
        // read where it ends and which term leads.
        let term = self.fence.load(std::sync::atomic::Ordering::SeqCst);
        let head = pg.on_commit(|c| {
            c.simple_query(&format!(
                "BEGIN; SET LOCAL opsbot.term = '{term}'; SELECT pg_advisory_xact_lock({TRAIL_LOCK}); SELECT seq, hash FROM opsbot_audit ORDER BY seq DESC LIMIT 1; SELECT term AS leading FROM opsbot_leader WHERE id = 1"
            ))
        });
        let head = head.map_err(not_committed)?;
        if term > 0 {
            let leading = head.iter().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row)
                    if row.columns().first().is_some_and(|c| c.name() == "leading") =>
                {
                    row.get(0).and_then(|s| s.parse::<u64>().ok())
                }
                _ => None,
            });
            if leading != Some(term) {
                return Err(Failure::Stop(format!(
                    "this replica led term {term}, but the database says {}: another replica leads now, and this one writes no more",
                    leading.map(|t| format!("term {t}")).unwrap_or_else(|| "no term".into())
                )));
            }
        }
        let head = head
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) if row.columns().first().is_some_and(|c| c.name() == "seq") => {
                    Some((row.get(0).and_then(|s| s.parse::<u64>().ok()), row.get(1).map(str::to_string)))
                }
                _ => None,
            })
            .map_or(Ok(Head { seq: 0, hash: GENESIS.to_string() }), |(seq, hash)| match (seq, hash) {
                (Some(seq), Some(hash)) => Ok(Head { seq, hash }),
                _ => Err(Failure::Stop("the trail's last record could not be read".into())),
            })?;
        let now = Utc::now();
        let mut sealed = Vec::with_capacity(entries.len());
        let mut prev = head.hash;
        for (i, entry) in entries.into_iter().enumerate() {
            let seq = head.seq + 1 + i as u64;
            let (record, stored) = chain::seal(seq, now, entry, &prev);
            prev = record.hash.clone();
            sealed.push((record, stored));
        }
        let inserted = pg.on_commit(|c| insert_records(c, &sealed, (term > 0).then_some(term as i64)));
        let sealed: Vec<AuditRecord> = sealed.into_iter().map(|(record, _)| record).collect();
        if let Err(e) = inserted {
            // The chain's own checks refusing an insert made under the
            // trail's lock means the stored trail is not what it was: stop.
            let integrity = e.code().is_some_and(|c| c.code().starts_with("23"));
            return Err(if integrity {
                Failure::Stop(format!("the stored trail refused the next records: {}", db_error(&e)))
            } else {
                Failure::NotCommitted(io(e))
            });
        }
        for effect in effects.into_iter().flatten() {
            effect().map_err(|e| Failure::Stop(format!("state change: {e}")))?;
        }
        Ok(sealed)
    }
}

/// Inserts sealed records (each with its stored bytes) in one statement;
/// the table's trigger checks they continue the chain.
pub(crate) fn insert_records(
    c: &mut postgres::Client,
    records: &[(AuditRecord, Vec<u8>)],
    term: Option<i64>,
) -> Result<u64, postgres::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let (mut seqs, mut stamps, mut prevs, mut hashes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut kinds, mut services, mut requests, mut bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (record, stored) in records {
        seqs.push(record.seq as i64);
        stamps.push(record.ts);
        // Record 1 follows no record (its body names the genesis hash).
        prevs.push((record.seq > 1).then_some(record.prev.as_str()));
        hashes.push(record.hash.as_str());
        kinds.push(kind_name(record.entry.kind));
        services.push(record.entry.service.as_deref());
        requests.push(record.entry.request_id.as_deref());
        bodies.push(stored.as_slice());
    }
    c.execute(
        "INSERT INTO opsbot_audit (seq, ts, prev, hash, kind, service, request_id, record, term)
         SELECT *, $9::bigint FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])",
        &[&seqs, &stamps, &prevs, &hashes, &kinds, &services, &requests, &bodies, &term],
    )
}

impl AuditLog for PgAuditLog {
    fn commit(
        &self,
        entries: Vec<AuditEntry>,
        then: Option<Effect>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, AuditError>> {
        Box::pin(self.queue.submit(entries, then))
    }

    fn read(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let filter = Filter::of(query);
        let (limit, look_back) = (query.limit, query.look_back);
        let rows = self
            .pg
            .call(move |c| {
                let Some(limit) = limit else {
                    return filter.rows(c, 0, "ASC", i64::MAX);
                };
                // The newest `limit` matches, among the newest `look_back` records.
                let floor = match look_back {
                    Some(n) => {
                        let top: Option<i64> = c.query_one("SELECT max(seq) FROM opsbot_audit", &[])?.get(0);
                        top.unwrap_or(0) - n as i64
                    }
                    None => 0,
                };
                let mut rows = filter.rows(c, floor, "DESC", limit as i64)?;
                rows.reverse();
                Ok(rows)
            })
            .map_err(|e| AuditError::Store(e.to_string()))?;
        rows.iter().map(|(seq, stored)| open_row(*seq, stored)).collect()
    }

    fn each(&self, query: &AuditQuery, visit: &mut dyn FnMut(AuditRecord) -> bool) -> Result<(), AuditError> {
        let filter = Arc::new(Filter::of(query));
        let mut after = 0i64;
        loop {
            let f = filter.clone();
            let page =
                self.pg.call(move |c| f.rows(c, after, "ASC", PAGE)).map_err(|e| AuditError::Store(e.to_string()))?;
            let Some(last) = page.last().map(|(seq, _)| *seq) else { return Ok(()) };
            for (seq, stored) in &page {
                if !visit(open_row(*seq, stored)?) {
                    return Ok(());
                }
            }
            after = last;
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.committed.subscribe()
    }

    fn failed(&self) -> Option<String> {
        PgAuditLog::failed(self)
    }

    fn commits(&self) -> Option<(u64, std::time::Duration)> {
        let count = self.timing[0].load(std::sync::atomic::Ordering::Relaxed);
        let micros = self.timing[1].load(std::sync::atomic::Ordering::Relaxed);
        Some((count, std::time::Duration::from_micros(micros)))
    }

    fn head(&self) -> Result<Head, AuditError> {
        let row = self
            .pg
            .call(|c| {
                Ok(c.query_opt("SELECT seq, hash FROM opsbot_audit ORDER BY seq DESC LIMIT 1", &[])?
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))))
            })
            .map_err(|e| AuditError::Store(e.to_string()))?;
        Ok(row.map(|(seq, hash)| Head { seq: seq as u64, hash }).unwrap_or_else(Head::genesis))
    }
}
