//! The PostgreSQL store against a real PostgreSQL (a throwaway cluster per
//! test, see `postgres.rs`): the same contract checks the memory and sled
//! stores pass, the trail's contract against the in-memory reference, the
//! table's own guards (append-only, chained, no fork), the grants a bot role
//! needs and nothing more, tampering found by `verify`, two writers on one
//! database making one chain, and a writer whose connection is killed.

use super::postgres::Postgres;
use opsbot::audit::{contract, AuditEntry, AuditLog, Effect, MemoryAuditLog, RecordKind};
use opsbot::store::postgres::{open, PgAuditLog, PgStore};
use opsbot::store::{RunLock, Store};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

type Job = Box<dyn FnOnce(&mut ::postgres::Client) + Send>;

/// The database's owner, on a thread of its own (the blocking client cannot
/// run on a thread that runs tokio tasks).
struct Admin {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Admin {
    fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut ::postgres::Client) -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.jobs.send(Box::new(move |c| drop(tx.send(f(c))))).unwrap();
        rx.recv().unwrap()
    }

    fn exec(&self, sql: &str) -> Result<(), ::postgres::Error> {
        let sql = sql.to_string();
        self.run(move |c| c.batch_execute(&sql))
    }
}

fn admin(pg: &Postgres, schema: &str) -> Admin {
    let (url, schema) = (pg.url("opsbot"), schema.to_string());
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    std::thread::spawn(move || {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path = {schema}")).unwrap();
        for job in queue {
            job(&mut c);
        }
    });
    Admin { jobs }
}

/// A key=value URL for `user` whose tables live in `schema` (made here).
fn url_in(pg: &Postgres, user: &str, schema: &str) -> String {
    admin(pg, schema).exec("SELECT 1").unwrap();
    format!("host=127.0.0.1 port={} user={user} dbname=postgres options='-c search_path={schema}'", pg.port)
}

/// Inserts a record 1 that does not start from the genesis hash.
fn insert_into_empty(owner: &Admin) -> Result<u64, ::postgres::Error> {
    owner.run(|c| {
        c.execute(
            "INSERT INTO opsbot_audit (seq, ts, prev, hash, kind, record) VALUES (1, now(), $1, $2, 'request', 'x')",
            &[&"1".repeat(64), &"c".repeat(64)],
        )
    })
}

fn entry(i: usize) -> AuditEntry {
    let services = ["api", "web", "jobs"];
    let kind = if i.is_multiple_of(5) { RecordKind::Outcome } else { RecordKind::Request };
    AuditEntry {
        service: (!i.is_multiple_of(7)).then(|| services[i % 3].to_string()),
        request_id: Some(format!("r-{}", i % 11)),
        detail: format!("record {i}"),
        ..AuditEntry::new(kind)
    }
}

#[test]
fn the_postgres_store_keeps_the_store_contract() {
    let pg = Postgres::start();
    for (i, (name, check)) in opsbot::store::contract::CHECKS.iter().enumerate() {
        let (store, audit) = open(&url_in(&pg, "opsbot", &format!("contract_{i}"))).unwrap();
        check(&format!("postgres: {name}"), &store);
        audit.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_trail_keeps_the_audit_contract() {
    let pg = Postgres::start();
    let (_, log) = open(&url_in(&pg, "opsbot", "trail")).unwrap();
    let memory = MemoryAuditLog::default();
    contract::reads_like_the_reference("postgres", &*log, &memory).await;
    assert_eq!(log.verify().unwrap().records, 121);
    // Larger than one commit is refused whole.
    let too_many: Vec<AuditEntry> = (0..=opsbot::audit::MAX_COMMIT).map(entry).collect();
    assert!(log.append_all(too_many).await.is_err());
    assert_eq!(log.head().unwrap().seq, 121, "nothing of it was written");
    // A state change that fails: nothing of its commit lands, and the log
    // takes no more records.
    contract::a_failed_commit_stops_the_log("postgres", &*log).await;
    contract::a_failed_commit_stops_the_log("memory", &memory).await;
    assert!(log.failed().unwrap().contains("refused"));
    log.close();
}

/// A run lock released by an audit commit's state change lands with the
/// commit's records: both, or (when the commit fails) neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_made_by_a_commit_is_in_its_transaction() {
    let pg = Postgres::start();
    let (store, log) = open(&url_in(&pg, "opsbot", "effects")).unwrap();
    let lock = |id: &str| RunLock {
        request_id: id.into(),
        holder: "slack:U1".into(),
        until: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    store.acquire_run_lock("api", lock("r-1"), chrono::Utc::now()).unwrap().unwrap();
    store.acquire_run_lock("web", lock("r-2"), chrono::Utc::now()).unwrap().unwrap();
    // The release, then a later state change in the same commit fails: the
    // release is rolled back with the records.
    let release = store.run_lock_release("api", "r-1");
    let both: Effect = Box::new(move || {
        release()?;
        Err("the next write failed".into())
    });
    assert!(log.commit(vec![entry(1)], Some(both)).await.is_err());
    assert_eq!(log.head().unwrap().seq, 0);
    let held: Vec<String> = store.run_locks().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(held, ["api", "web"], "the release was rolled back with its commit");
    log.close();
    // A new writer (a restart): the release and its record land together.
    let log = PgAuditLog::open(store.pg().clone()).unwrap();
    let records = log.commit(vec![entry(1)], Some(store.run_lock_release("web", "r-2"))).await.unwrap();
    assert_eq!(records[0].seq, 1);
    let held: Vec<String> = store.run_locks().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(held, ["api"]);
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_table_is_append_only_chained_and_cannot_fork() {
    let pg = Postgres::start();
    let (_, log) = open(&url_in(&pg, "opsbot", "guards")).unwrap();
    log.append_all((1..=10).map(entry).collect()).await.unwrap();
    let owner = admin(&pg, "guards");
    // Even the table's owner (a superuser here) cannot change or remove a record.
    for sql in [
        "UPDATE opsbot_audit SET kind = 'system' WHERE seq = 3",
        "DELETE FROM opsbot_audit WHERE seq = 10",
        "TRUNCATE opsbot_audit",
    ] {
        let e = owner.exec(sql).unwrap_err();
        assert!(format!("{e:?}").contains("append-only"), "{sql}: {e:?}");
    }
    // A record that does not follow its predecessor is refused; so is a
    // second successor of record 9 (a fork), and a record 1 that does not
    // start from the genesis hash.
    let insert = |owner: &Admin, seq: i64, prev: String, hash: String| {
        owner.run(move |c| {
            let record: Vec<u8> = c.query_one("SELECT record FROM opsbot_audit ORDER BY seq LIMIT 1", &[])?.get(0);
            c.execute(
                "INSERT INTO opsbot_audit (seq, ts, prev, hash, kind, record) VALUES ($1, now(), $2, $3, 'request', $4)",
                &[&seq, &prev, &hash, &record],
            )
        })
    };
    let prev10: String =
        owner.run(|c| c.query_one("SELECT prev FROM opsbot_audit WHERE seq = 10", &[]).unwrap().get(0));
    let refused = insert(&owner, 11, "f".repeat(64), "a".repeat(64)).unwrap_err();
    assert!(format!("{refused:?}").contains("opsbot_audit_chain"), "not the successor of record 10: {refused:?}");
    let fork = insert(&owner, 11, prev10, "b".repeat(64)).unwrap_err();
    assert!(format!("{fork:?}").contains("duplicate key"), "a second successor: {fork:?}");
    log.close();
    let (_, fresh) = open(&url_in(&pg, "opsbot", "genesis")).unwrap();
    fresh.append_all(vec![entry(1)]).await.unwrap();
    let owner = admin(&pg, "genesis");
    owner.exec("ALTER TABLE opsbot_audit DISABLE TRIGGER opsbot_audit_no_change; DELETE FROM opsbot_audit; ALTER TABLE opsbot_audit ENABLE TRIGGER opsbot_audit_no_change").unwrap();
    let refused = insert_into_empty(&owner).unwrap_err();
    assert!(format!("{refused:?}").contains("opsbot_audit_genesis"), "{refused:?}");
    fresh.close();
}

/// The grants docs/production.md gives the bot's role are enough to run,
/// and leave it no way to change the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_role_with_the_documented_grants_runs_and_cannot_change_the_trail() {
    let pg = Postgres::start();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/production.md")).unwrap();
    let grants = docs
        .split("```sql grants\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the grants block in docs/production.md");
    let owner = admin(&pg, "public");
    let url = format!("host=127.0.0.1 port={} user=opsbot_bot password=change-me dbname=postgres", pg.port);
    // Each check on a schema made afresh by its owner (as a DBA would, from
    // `opsbot store schema`), with the documented grants.
    let fresh = |owner: &Admin, first: bool| {
        owner.exec("DROP SCHEMA IF EXISTS opsbot CASCADE; CREATE SCHEMA opsbot; SET search_path = opsbot").unwrap();
        owner.exec(opsbot::store::postgres::SCHEMA).unwrap();
        let grants: String =
            grants.lines().filter(|l| first || !l.starts_with("CREATE ROLE")).map(|l| format!("{l}\n")).collect();
        owner.exec(&grants).unwrap();
    };
    for (i, (name, check)) in opsbot::store::contract::CHECKS.iter().enumerate() {
        fresh(&owner, i == 0);
        let (store, log) = open(&url).unwrap();
        check(&format!("bot role: {name}"), &store);
        log.close();
    }
    fresh(&owner, false);
    let (_, log) = open(&url).unwrap();
    log.append_all((1..=5).map(entry).collect()).await.unwrap();
    for sql in [
        "UPDATE opsbot_audit SET kind = 'x'",
        "DELETE FROM opsbot_audit",
        "TRUNCATE opsbot_audit",
        "ALTER TABLE opsbot_audit DISABLE TRIGGER USER",
        "DROP TABLE opsbot_audit",
    ] {
        let (url, text) = (url.clone(), sql.to_string());
        let code = std::thread::spawn(move || {
            let mut bot = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let e = bot.batch_execute(&text).unwrap_err();
            e.code().map(|c| c.code().to_string()).unwrap_or_else(|| e.to_string())
        })
        .join()
        .unwrap();
        assert_eq!(code, "42501", "{sql}");
    }
    assert_eq!(log.verify().unwrap().records, 5);
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_changed_or_removed_record() {
    let pg = Postgres::start();
    let (_, log) = open(&url_in(&pg, "opsbot", "tamper")).unwrap();
    log.append_all((1..=40).map(entry).collect()).await.unwrap();
    assert_eq!(log.verify().unwrap().records, 40);
    let owner = admin(&pg, "tamper");
    // A superuser switches the guards off and edits one byte of record 17.
    owner.exec("ALTER TABLE opsbot_audit DISABLE TRIGGER ALL").unwrap();
    let original: Vec<u8> =
        owner.run(|c| c.query_one("SELECT record FROM opsbot_audit WHERE seq = 17", &[]).unwrap().get(0));
    let mut edited = original.clone();
    let at = edited.windows(9).position(|w| w == b"record 17").expect("the detail") + 7;
    edited[at] = b'8';
    let set = |owner: &Admin, bytes: Vec<u8>| {
        owner.run(move |c| c.execute("UPDATE opsbot_audit SET record = $1 WHERE seq = 17", &[&bytes]).unwrap())
    };
    set(&owner, edited);
    let failure = log.verify().unwrap_err();
    assert_eq!(failure.seq, 17, "{failure}");
    assert!(failure.problem.contains("does not match its hash"), "{failure}");
    // Put it back, then remove record 30: the gap is named.
    set(&owner, original);
    assert_eq!(log.verify().unwrap().records, 40);
    owner.exec("DELETE FROM opsbot_audit WHERE seq = 30").unwrap();
    let failure = log.verify().unwrap_err();
    assert_eq!(failure.seq, 30, "{failure}");
    assert!(failure.problem.contains("missing"), "{failure}");
    log.close();
    // With its guards switched off, the table is not written to again.
    let refused = open(&url_in(&pg, "opsbot", "tamper")).err().expect("refused").to_string();
    assert!(refused.contains("missing its guards"), "{refused}");
}

/// Two replicas' writers on one database make one chain: every append
/// acknowledged once, in one unbroken sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_database_make_one_chain() {
    let pg = Postgres::start();
    let url = url_in(&pg, "opsbot", "replicas");
    let (_, a) = open(&url).unwrap();
    let (_, b) = open(&url).unwrap();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let log = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let record = (&*log as &dyn AuditLog)
                    .append(AuditEntry { detail: format!("writer {w} append {i}"), ..entry(i) })
                    .await
                    .unwrap();
                seqs.push(record.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for seq in task.await.unwrap() {
            assert!(all.insert(seq), "record {seq} acknowledged twice");
        }
    }
    assert_eq!(all, (1..=1280).collect::<BTreeSet<u64>>());
    assert_eq!(a.verify().unwrap().records, 1280);
    a.close();
    b.close();
}

/// The writer's connection is killed while appends run (a database
/// failover, a network cut): every acknowledged record is stored, the trail
/// verifies, and the writer carries on over a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_loses_no_acknowledged_record() {
    let pg = Postgres::start();
    let (_, log) = open(&url_in(&pg, "opsbot", "killed")).unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (log, failed, stop) = (log.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match (&*log as &dyn AuditLog).append(AuditEntry { detail: format!("{w}/{i}"), ..entry(i) }).await {
                    Ok(r) => acked.push((r.seq, r.hash)),
                    Err(_) => drop(failed.fetch_add(1, Ordering::SeqCst)),
                }
            }
            acked
        }));
    }
    let owner = admin(&pg, "killed");
    let mut killed = 0;
    for _ in 0..6 {
        // Long enough for the writer to be back on a new connection.
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        killed += owner.run(|c| {
            c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'opsbot' AND query LIKE '%opsbot_audit%' AND pid <> pg_backend_pid()", &[])
                .unwrap()
                .len()
        });
    }
    stop.store(true, Ordering::SeqCst);
    assert!(killed >= 2, "the writer's connection was killed {killed} times");
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    for (seq, hash) in acked.clone() {
        let stored: String = owner.run(move |c| {
            c.query_one("SELECT hash FROM opsbot_audit WHERE seq = $1", &[&(seq as i64)]).unwrap().get(0)
        });
        assert_eq!(stored, hash, "acknowledged record {seq}");
    }
    let summary = log.verify().unwrap();
    assert!(summary.records >= acked.len() as u64);
    assert!(log.failed().is_none(), "{:?}", log.failed());
    assert!(failed.load(Ordering::SeqCst) > 0, "some appends were cut off, and said so");
    let after = (&*log as &dyn AuditLog).append(entry(1)).await.unwrap();
    assert_eq!(after.seq, summary.records + 1, "it carries on");
    log.close();
}

/// Two replicas given the same delivery, or racing for one service's run
/// lock: exactly one wins.
#[test]
fn replicas_sharing_a_database_take_a_delivery_or_a_lock_once() {
    let pg = Postgres::start();
    let url = url_in(&pg, "opsbot", "races");
    let stores: Vec<PgStore> = (0..2).map(|_| open(&url).unwrap().0).collect();
    let now = chrono::Utc::now();
    for round in 0..20 {
        let wins = Arc::new(AtomicUsize::new(0));
        let locks = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..8 {
                let (store, wins, locks) = (stores[t % 2].clone(), wins.clone(), locks.clone());
                s.spawn(move || {
                    if store.first_delivery(&format!("slack:retry:{round}"), now).unwrap() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                    let lock = RunLock {
                        request_id: format!("r-{round}-{t}"),
                        holder: "x".into(),
                        until: now + chrono::Duration::minutes(5),
                    };
                    if store.acquire_run_lock(&format!("svc-{round}"), lock, now).unwrap().is_ok() {
                        locks.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}: the delivery was taken once");
        assert_eq!(locks.load(Ordering::SeqCst), 1, "round {round}: one request holds the lock");
    }
}

/// `[store] type = "postgres"`: the bot keeps its trail and its state in the
/// database (a request waiting for approval survives a restart, and runs
/// once when approved in the next process), and the command line reads the
/// trail there (`audit verify`, `audit export`, `audit tail`), never the
/// data directory.
#[test]
fn a_bot_on_postgres_keeps_its_state_there_and_the_command_line_reads_it() {
    use super::support::{config_text, stdout, Bot};
    let pg = Postgres::start();
    let url = url_in(&pg, "opsbot", "bot");
    let bot = Bot::with_config(&config_text("30m", "[store]\ntype = \"postgres\"\n"));
    let env = [("OPSBOT_STORE_URL", std::ffi::OsStr::new(&url))];
    let out = stdout(&bot.console_env(&["/deploy api-staging v1.4.2", "/deploy api-service v1.4.2"], &env));
    assert!(out.contains("✅ r-1: [simulated] api-staging now runs v1.4.2"), "{out}");
    assert!(out.contains("r-2 is waiting for 1 approval(s) from sre"), "{out}");
    // A new process: the pending request comes from the database.
    let out = stdout(&bot.console_env(&["/as console:bob", "/approve r-2", "/approve r-2"], &env));
    assert!(out.contains("approved by console:bob"), "{out}");
    assert!(out.contains("r-2 is already approved"), "{out}");
    assert!(!bot.data().exists(), "nothing was written to the data directory");
    let cli = |args: &[&str]| {
        let out = bot.command(args).env("OPSBOT_STORE_URL", &url).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said, err) = cli(&["audit", "verify"]);
    assert!(ok && said.starts_with("audit trail intact: "), "{said}{err}");
    let (ok, exported, err) = cli(&["audit", "export", "--request", "r-2"]);
    assert!(ok, "{err}");
    let kinds: Vec<(String, String)> = exported
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["kind"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap_or("").to_string()))
        .collect();
    let started = kinds.iter().filter(|(k, o)| k == "intent" && o == "started").count();
    assert_eq!(started, 1, "it ran once: {kinds:?}");
    assert_eq!(kinds.last().unwrap(), &("outcome".to_string(), "succeeded".to_string()), "{kinds:?}");
    let (ok, tail, err) = cli(&["audit", "tail", "-n", "2"]);
    assert!(ok && tail.lines().count() == 2 && tail.contains("stopped"), "{tail}{err}");
    // What is sled-only says so.
    let (ok, _, err) = cli(&["audit", "repair"]);
    assert!(!ok && err.contains("sled store only"), "{err}");
    // The database's rows are the trail the CLI verified.
    let rows: i64 = admin(&pg, "bot").run(|c| c.query_one("SELECT count(*) FROM opsbot_audit", &[]).unwrap().get(0));
    assert!(said.contains(&format!("{rows} record(s)")), "{said} vs {rows} rows");
    // Without the URL, it says what to export.
    let out = bot.command(&["audit", "verify"]).env_remove("OPSBOT_STORE_URL").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("export OPSBOT_STORE_URL"), "{out:?}");
}

/// `opsbot store migrate --to postgres`: a sled store's trail, byte for
/// byte, and its state (a waiting approval, a hold, an incident, the id
/// counters) in an empty database; the bot then goes on there. It refuses a
/// non-empty target and a store a bot is running on.
#[test]
fn a_sled_store_migrates_into_an_empty_database_and_the_bot_goes_on_there() {
    use super::support::{config_text, stdout, Bot};
    let pg = Postgres::start();
    let url = url_in(&pg, "opsbot", "moved");
    let bot = Bot::with_config(&config_text("30m", ""));
    let out = stdout(&bot.console(&[
        "/deploy api-staging v1.4.2",
        "/deploy api-service v1.4.2",
        "/as console:bob",
        "/lock web-staging database migration running 1h",
        "/incident declare \"errors after v1.4.2\" --sev 2 --service api-staging",
    ]));
    assert!(out.contains("r-2 is waiting for 1 approval(s) from sre"), "{out}");
    let migrate = |url: &str| {
        let out = bot.command(&["store", "migrate", "--to", "postgres"]).env("OPSBOT_STORE_URL", url).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // Not while a bot runs on the store.
    let mut running = bot.spawn_console();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, said) = migrate(&url);
    assert!(!ok && said.contains("stop it first"), "{said}");
    let _ = running.kill();
    let _ = running.wait();
    let before = bot.export(&[]);
    let (ok, said) = migrate(&url);
    assert!(ok, "{said}");
    assert!(said.contains(&format!("copied {} record(s)", before.len())), "{said}");
    assert!(said.contains("1 hold(s)") && said.contains("1 incident(s)"), "{said}");
    // Once only: the target is no longer empty.
    let (ok, said) = migrate(&url);
    assert!(!ok && said.contains("not empty"), "{said}");
    // The bot on PostgreSQL: the waiting request runs once approved, the
    // hold holds, and ids go on from where sled left them.
    bot.rewrite_config(&config_text("30m", "[store]\ntype = \"postgres\"\n"));
    let env = [("OPSBOT_STORE_URL", std::ffi::OsStr::new(&url))];
    let out = stdout(&bot.console_env(
        &[
            "/as console:bob",
            "/approve r-2",
            "/deploy web-staging v3.0.1",
            "/as console:carol",
            "/deploy api-staging v1.4.3",
        ],
        &env,
    ));
    assert!(out.contains("approved by console:bob"), "{out}");
    assert!(out.contains("✅ r-2: [simulated] api-service now runs v1.4.2"), "{out}");
    assert!(out.contains("web-staging is locked by console:bob"), "the hold came along: {out}");
    assert!(out.contains("INC-1 (SEV2) is open on api-staging"), "the incident came along: {out}");
    // Ids go on from the sled counters: none handed out there is handed out again.
    let number = |r: &serde_json::Value| r["request_id"].as_str()?.strip_prefix("r-")?.parse::<u64>().ok();
    let last_before = before.iter().filter_map(number).max().unwrap();
    // The trail: the same records, hash for hash, then the new ones; it verifies.
    let after: Vec<serde_json::Value> = {
        let out = bot.command(&["audit", "export"]).env("OPSBOT_STORE_URL", &url).output().unwrap();
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert!(after.len() > before.len());
    assert_eq!(&after[..before.len()], &before[..], "the copied records are the sled ones, byte for byte");
    let new_requests: BTreeSet<u64> =
        after[before.len()..].iter().filter(|r| r["kind"] == "request").filter_map(number).collect();
    assert!(
        new_requests.len() == 2 && new_requests.iter().all(|n| *n > last_before),
        "{new_requests:?} after r-{last_before}"
    );
    let out = bot.command(&["audit", "verify"]).env("OPSBOT_STORE_URL", &url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The fencing token: once the database says another term leads, a
/// process fenced with the old one can neither change the state nor append
/// to the trail; its records carry the term they were written in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fenced_with_an_old_term_are_refused() {
    let pending_request = |id: &str| opsbot::store::contract::pending(id, opsbot::approval::RequestState::Pending);
    let pg = Postgres::start();
    let (store, log) = open(&url_in(&pg, "opsbot", "fence")).unwrap();
    let owner = admin(&pg, "fence");
    owner.exec("INSERT INTO opsbot_leader (id, term, holder, since) VALUES (1, 1, 'replica-a/1', now())").unwrap();
    log.fence(1);
    let now = chrono::Utc::now();
    assert!(store.first_delivery("k1", now).unwrap());
    store.put_pending(&pending_request("r-1")).unwrap();
    let record = (&*log as &dyn AuditLog).append(entry(1)).await.unwrap();
    let term: Option<i64> = owner.run(move |c| {
        c.query_one("SELECT term FROM opsbot_audit WHERE seq = $1", &[&(record.seq as i64)]).unwrap().get(0)
    });
    assert_eq!(term, Some(1));
    // Another replica takes term 2.
    owner.exec("UPDATE opsbot_leader SET term = 2, holder = 'replica-b/1'").unwrap();
    let refused = store.put_pending(&pending_request("r-2")).unwrap_err().to_string();
    assert!(refused.contains("writes no more"), "{refused}");
    assert!(store.first_delivery("k2", now).is_err(), "a delivery key is state too");
    assert!(store.link("slack:card:C1:1.2", "r-1").is_err());
    assert!((&*log as &dyn AuditLog).append(entry(2)).await.is_err());
    assert!(log.failed().unwrap().contains("another replica leads now"), "{:?}", log.failed());
    let rows: i64 = owner.run(|c| c.query_one("SELECT count(*) FROM opsbot_requests", &[]).unwrap().get(0));
    assert_eq!(rows, 1, "nothing of the old term's after the new one began");
    log.close();
}
