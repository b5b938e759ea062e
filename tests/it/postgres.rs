//! A runbook's `sql` step against a real PostgreSQL (Debian's package: a
//! throwaway cluster per test, as the `postgres` user, on a free loopback
//! port): the connection-pool statement terminates exactly the sessions
//! idle longer than its bound parameter, never the bot's own; typed values
//! are bound, so quoting in them matches nothing; the cap refuses before
//! anything runs.

use opsbot::action::sql::{run, SqlValue, Statement};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster that lives as long as this value.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop().expect("PostgreSQL is installed (Debian's postgresql package; .ci/run installs it)")
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let bin = bin_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // PostgreSQL refuses to run as root: as root, the cluster is the
        // `postgres` user's (Debian's package makes it); otherwise, ours.
        let root = is_root();
        if root {
            let status = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown to postgres");
        }
        let as_postgres = |args: &[&str]| {
            let out = if root {
                Command::new("runuser").args(["-u", "postgres", "--"]).args(args).output().unwrap()
            } else {
                Command::new(args[0]).args(&args[1..]).output().unwrap()
            };
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let data = dir.path().join("pg");
        as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "opsbot",
            "--auth=trust",
            "--no-sync",
        ]);
        as_postgres(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &format!("-h 127.0.0.1 -p {port} -k {} -c fsync=off", dir.path().display()),
            "-l",
            dir.path().join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
        Postgres { dir, bin, port }
    }

    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut stop = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = stop.args(["-D", self.dir.path().join("pg").to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

async fn session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("SELECT 1").await.unwrap();
    client
}

const TERMINATE: &str = "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE state = 'idle' AND usename = $2 AND state_change < now() - $1::interval AND pid <> pg_backend_pid()";
const PREVIEW: &str = "SELECT pid FROM pg_stat_activity \
     WHERE state = 'idle' AND usename = $2 AND state_change < now() - $1::interval AND pid <> pg_backend_pid()";

fn terminate(user: &str, idle_for: Duration, max_rows: u64) -> Statement {
    Statement {
        text: TERMINATE.into(),
        params: vec![SqlValue::Interval(idle_for), SqlValue::Text(user.into())],
        read_only: false,
        max_rows,
        timeout: Duration::from_secs(10),
        preview: Some(PREVIEW.into()),
    }
}

async fn alive(client: &tokio_postgres::Client) -> bool {
    client.simple_query("SELECT 1").await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_pool_statement_terminates_exactly_the_old_idle_sessions() {
    let pg = Postgres::start();
    let admin = session(&pg.url("opsbot")).await;
    // The bot's role: may see every session's state and signal backends, is no superuser.
    admin
        .batch_execute(
            "CREATE ROLE runbook LOGIN; GRANT pg_signal_backend, pg_read_all_stats TO runbook; CREATE ROLE app LOGIN;",
        )
        .await
        .unwrap();
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(session(&pg.url("app")).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let young = vec![session(&pg.url("app")).await, session(&pg.url("app")).await];
    // Quoting in a value is data: it names no user, so nothing matches.
    let injected = run(&pg.url("runbook"), &terminate("app' OR '1'='1", Duration::from_secs(2), 10)).await.unwrap();
    assert_eq!(injected.rows, 0);
    // Over the cap: refused after the preview, before anything is signalled.
    let capped = run(&pg.url("runbook"), &terminate("app", Duration::from_secs(2), 2)).await.unwrap_err();
    assert!(
        capped.to_string().contains("it would touch 3 rows, more than this step's cap of 2; nothing was run"),
        "{capped}"
    );
    // (Counted from outside: a query on a session would make it young again.)
    let count = admin
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(count, 5, "nothing was terminated by a refused step");
    // The real thing: the three old sessions, and only them.
    let done = run(&pg.url("runbook"), &terminate("app", Duration::from_secs(2), 10)).await.unwrap();
    assert_eq!(done.rows, 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for client in &old {
        assert!(!alive(client).await, "an old idle session was terminated");
    }
    for client in &young {
        assert!(alive(client).await, "a young session survives");
    }
    assert!(alive(&admin).await, "other roles' sessions survive");
    // Read-only steps cannot write.
    let write = Statement {
        text: "CREATE TABLE t (n int) -- $1".into(),
        params: vec![],
        read_only: true,
        max_rows: 1,
        timeout: Duration::from_secs(5),
        preview: None,
    };
    let refused = run(&pg.url("opsbot"), &write).await.unwrap_err();
    assert!(refused.to_string().contains("read-only transaction"), "{refused}");
    // A statement past its timeout is cancelled by the server.
    let slow = Statement {
        text: "SELECT pg_sleep(5)".into(),
        params: vec![],
        read_only: true,
        max_rows: 1,
        timeout: Duration::from_millis(300),
        preview: None,
    };
    let cancelled = run(&pg.url("opsbot"), &slow).await.unwrap_err();
    assert!(cancelled.to_string().contains("statement timeout"), "{cancelled}");
    // The bot's own session is left out even when it is of the role whose
    // sessions are ended, and with no filter on their state.
    admin.batch_execute("GRANT pg_signal_backend TO app").await.unwrap();
    let other = session(&pg.url("app")).await;
    let end_all_of = Statement {
        text:
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()"
                .into(),
        params: vec![SqlValue::Text("app".into())],
        read_only: false,
        max_rows: 10,
        timeout: Duration::from_secs(5),
        preview: Some("SELECT pid FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()".into()),
    };
    // Ok: it committed on its own connection, which it therefore did not end.
    let ended = run(&pg.url("app"), &end_all_of).await.unwrap();
    assert!(ended.rows >= 1, "the other app sessions were ended: {ended:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!alive(&other).await, "another app session was ended");

    // DML without RETURNING is counted by the server's tag: over the cap,
    // its transaction is rolled back and nothing changed.
    admin.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 5);").await.unwrap();
    let delete = |max_rows| Statement {
        text: "DELETE FROM t WHERE n > $1".into(),
        params: vec![SqlValue::Integer(1)],
        read_only: false,
        max_rows,
        timeout: Duration::from_secs(5),
        preview: None,
    };
    let over = run(&pg.url("opsbot"), &delete(2)).await.unwrap_err();
    assert!(
        over.to_string().contains("it touched 4 rows, more than this step's cap of 2; its transaction was rolled back"),
        "{over}"
    );
    let count = admin.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(count, 5, "nothing was deleted");
    let done = run(&pg.url("opsbot"), &delete(4)).await.unwrap();
    assert_eq!(done.rows, 4);
    let count = admin.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(count, 1);
}
