//! Runbooks end to end, through the real `opsbot` console, against the real
//! things: a throwaway PostgreSQL (the connection-pool runbook ends exactly
//! the old idle sessions), a local HTTP server standing in for Datadog's
//! events API (payload and API-key header checked), and the fake Kubernetes
//! API server (a Job from its template, watched to completion or failure).
//! Approval binds to the plan; a failed step stops the run; `/runbook abort`
//! stops it before its next step; kill -9 mid-run is recorded as
//! interrupted at the next start, its locks freed, nothing run again.

use crate::fake_k8s::FakeK8s;
use crate::postgres::Postgres;
use crate::support::{config_text, stdout, Bot};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who may run runbooks in production (one SRE approval, commanders break
/// glass) and abort them.
const RULES: &str = r#"
[[rules]]
commands = ["runbook"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
ttl = "30m"
break_glass = ["commanders"]

[[rules]]
commands = ["runbook-abort"]
environments = ["*"]
requesters = ["developers", "sre"]
"#;

/// The connection-pool runbook as shipped, with a one-second floor so a
/// test need not leave sessions idle for a minute.
fn connection_pool() -> String {
    let shipped =
        std::fs::read_to_string(crate::support::commands_dir().join("runbooks/connection-pool.toml")).unwrap();
    shipped
        .replace("min = \"1m\"", "min = \"1s\"")
        .replace("[[steps]]\nkind = \"restart\"\nservice = \"payment-service\"\n\n", "")
}

/// A bot whose runbooks are `runbooks` (file stem, text), with `extra`
/// configuration (targets) besides the rules above.
fn runbook_bot(extra: &str, runbooks: &[(&str, &str)], step: &str) -> Bot {
    let config = config_text("30m", &format!("{RULES}\n{extra}"))
        .replace("action_timeout = \"1m\"", "action_timeout = \"1m\"\nrunbooks_dir = \"runbooks\"")
        .replace("step = \"20ms\"", &format!("step = \"{step}\""));
    let bot = Bot::with_config(&config);
    write_runbooks(&bot, runbooks);
    bot
}

fn write_runbooks(bot: &Bot, runbooks: &[(&str, &str)]) {
    let dir = bot.dir.path().join("runbooks");
    let _ = std::fs::create_dir(&dir);
    for (name, text) in runbooks {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
}

fn console(bot: &Bot, lines: &[&str], env: &[(&str, &str)]) -> String {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
    let out = stdout(&bot.console_env(lines, &env));
    println!("$ opsbot console <<< {lines:?}\n{out}");
    out
}

/// (kind, outcome, detail) of every record of `request`.
fn records_of(bot: &Bot, request: &str) -> Vec<(String, String, String)> {
    bot.export(&["--request", request])
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (text("kind"), text("outcome"), text("detail"))
        })
        .collect()
}

fn verified(bot: &Bot) {
    let verify = bot.verify();
    assert!(verify.status.success(), "audit verify: {}", stdout(&verify));
}

async fn session(url: &str) -> (tokio_postgres::Client, i32) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    (client, pid)
}

#[test]
fn connection_pool_through_chat_with_approval_ends_exactly_the_old_idle_sessions() {
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (admin, _) = rt.block_on(session(&pg.url("opsbot")));
    rt.block_on(admin.batch_execute(
        "CREATE ROLE runbook LOGIN; GRANT pg_signal_backend, pg_read_all_stats TO runbook; CREATE ROLE app LOGIN;",
    ))
    .unwrap();
    let old: Vec<_> = (0..3).map(|_| rt.block_on(session(&pg.url("app")))).collect();
    std::thread::sleep(Duration::from_millis(4500));
    let young: Vec<_> = (0..2).map(|_| rt.block_on(session(&pg.url("app")))).collect();
    let bot = runbook_bot(
        "[databases.main]\nurl_env = \"OPSBOT_TEST_DATABASE_URL\"\n",
        &[("connection-pool", &connection_pool())],
        "20ms",
    );
    let url = pg.url("runbook");
    let out = console(
        &bot,
        &[
            "/runbook connection-pool idle_for=4s --dry-run",
            // Injection attempts: refused before anything is planned.
            "/runbook connection-pool \"idle_for=4s role=app' OR '1'='1\"",
            "/runbook connection-pool idle_for=4s role=app;--",
            "/runbook connection-pool idle_for=4s;DROP",
            "/runbook connection-pool idle_for=4s",
            "/as console:bob",
            "/approve r-1",
            "/wait",
        ],
        &[("OPSBOT_TEST_DATABASE_URL", &url)],
    );
    // The dry run and the approval card list exactly the old sessions.
    let dry_run = out.split("Dry run — nothing was changed.").nth(1).unwrap().split("opsbot").next().unwrap();
    let card = out.split("approval needed · r-1").nth(1).unwrap().split("└").next().unwrap();
    for shown in [dry_run, card] {
        assert!(shown.contains("3 row(s) would be touched"), "{shown}");
        for (_, pid) in &old {
            assert!(shown.contains(&format!("pid={pid} ")), "old session {pid} listed: {shown}");
        }
        for (_, pid) in &young {
            assert!(!shown.contains(&format!("pid={pid} ")), "young session {pid} not listed: {shown}");
        }
        assert!(shown.contains("$1 = '4 seconds' (idle_for), $2 = 'app' (role)"), "{shown}");
    }
    assert!(out.contains("write each parameter as name=value"), "{out}");
    assert!(out.contains("`role`: `app;--` is not one of app"), "{out}");
    assert!(out.contains("`idle_for`: `4s;DROP`"), "{out}");
    assert!(out.contains("✅ r-1: runbook connection-pool done: all 2 step(s) succeeded"), "{out}");
    // The database's state: the old sessions are gone, the young ones and
    // every other role's are not.
    std::thread::sleep(Duration::from_millis(300));
    for (client, pid) in &old {
        assert!(rt.block_on(client.simple_query("SELECT 1")).is_err(), "old idle session {pid} was ended");
    }
    for (client, pid) in &young {
        assert!(rt.block_on(client.simple_query("SELECT 1")).is_ok(), "young session {pid} survives");
    }
    assert!(rt.block_on(admin.simple_query("SELECT 1")).is_ok());
    // The step's own record says which sessions it ended: exactly the old
    // ones (its own session ran the statement and committed it).
    let sql_outcome = records_of(&bot, "r-1")
        .into_iter()
        .find(|(k, o, d)| k == "step" && o == "succeeded" && d.starts_with("step 2/2 sql on main"))
        .expect("the sql step's outcome");
    assert!(sql_outcome.2.contains("3 row(s)"), "{}", sql_outcome.2);
    for (_, pid) in &old {
        assert!(sql_outcome.2.contains(&format!("pid={pid} pg_terminate_backend=true")), "{}", sql_outcome.2);
    }
    for (_, pid) in &young {
        assert!(!sql_outcome.2.contains(&format!("pid={pid} ")), "{}", sql_outcome.2);
    }
    // Each step's intent and outcome, in order, around the run's own.
    let kinds: Vec<(String, String)> = records_of(&bot, "r-1").into_iter().map(|(k, o, _)| (k, o)).collect();
    let want = [
        ("request", ""),
        ("decision", "pending"),
        ("vote", "approve"),
        ("decision", "approved"),
        ("intent", "started"),
        // A change to a service ends in that service's outcome (with the
        // live state), as a /restart's does; other steps in a step record.
        ("step", "started"),
        ("outcome", "succeeded"),
        ("step", "started"),
        ("step", "succeeded"),
        ("outcome", "succeeded"),
    ];
    let got: Vec<(String, String)> = kinds.into_iter().filter(|(k, _)| k != "progress").collect();
    assert_eq!(got, crate::support::pairs(&want));
    // Exactly one run: the refused attempts took no request id.
    assert!(records_of(&bot, "r-2").is_empty());
    verified(&bot);
    // `check --live` reaches the database, and says as whom.
    let live = bot.command(&["check", "--live"]).env("OPSBOT_TEST_DATABASE_URL", &url).output().unwrap();
    assert!(live.status.success(), "{}", String::from_utf8_lossy(&live.stderr));
    assert!(
        stdout(&live)
            .contains("databases.main: ok — connected as runbook (not a superuser; may end other roles' sessions)"),
        "{}",
        stdout(&live)
    );
}

/// A local stand-in for Datadog's events API: records each request's
/// API-key header and body, and answers `status`.
/// What the fake events API received: each request's API-key header and body.
type Received = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

struct FakeEvents {
    url: String,
    seen: Received,
    status: Arc<Mutex<u16>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeEvents {
    fn start() -> FakeEvents {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen: Received = Default::default();
        let status = Arc::new(Mutex::new(202u16));
        let (s, st) = (seen.clone(), status.clone());
        let app = axum::Router::new().route(
            "/api/v1/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (s, st) = (s.clone(), st.clone());
                async move {
                    let key = headers.get("dd-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    s.lock().unwrap().push((key, json));
                    let code = *st.lock().unwrap();
                    // 0: receive it, but answer only after the sender gave up.
                    if code == 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    }
                    (axum::http::StatusCode::from_u16(code.max(202)).unwrap(), "{\"status\":\"ok\"}")
                }
            }),
        );
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}/api/v1/events", listener.local_addr().unwrap().port());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeEvents { url, seen, status, _runtime: runtime }
    }
}

#[test]
fn the_http_step_sends_the_configured_event_with_its_key_and_a_failed_step_stops_the_run() {
    let events = FakeEvents::start();
    let memory_leak = std::fs::read_to_string(crate::support::commands_dir().join("runbooks/memory-leak.toml"))
        .unwrap()
        .replace("payment-service", "api-service");
    let event_then_restart = r#"
name = "event-then-restart"
summary = "Post the event, then restart"
environment = "production"

[[steps]]
kind = "http"
target = "datadog-events"
body = { title = "restarting", text = "then a restart" }

[[steps]]
kind = "restart"
service = "api-service"
"#;
    let bot = runbook_bot(
        &format!(
            "[http.datadog-events]\nurl = \"{}\"\napi_key_env = \"DD_API_KEY\"\napi_key_header = \"DD-API-KEY\"\nexpect_status = [202]\n",
            events.url
        ),
        &[("memory-leak", &memory_leak), ("event-then-restart", event_then_restart)],
        "20ms",
    );
    let key = [("DD_API_KEY", "dd-key-4c1b9e")];
    let out = console(&bot, &["/runbook memory-leak", "/as console:bob", "/approve r-1", "/wait"], &key);
    assert!(out.contains("✅ r-1: runbook memory-leak done: all 3 step(s) succeeded"), "{out}");
    assert!(out.contains("api-service is healthy"), "{out}");
    {
        let seen = events.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one event");
        assert_eq!(seen[0].0.as_deref(), Some("dd-key-4c1b9e"), "the API key from the environment, in its header");
        assert_eq!(
            seen[0].1,
            serde_json::json!({"title": "Payment service restarted", "text": "Memory leak mitigation", "tags": ["service:api-service", "source:opsbot"]})
        );
    }
    // Now the events API fails: the run stops there and says what did not run.
    *events.status.lock().unwrap() = 500;
    let out = console(
        &bot,
        &["/runbook event-then-restart", "/as console:bob", "/approve r-2", "/wait", "/status api-service"],
        &key,
    );
    assert!(out.contains("runbook event-then-restart stopped — step 1/2 http datadog-events failed"), "{out}");
    assert!(out.contains("answered 500"), "{out}");
    assert!(out.contains("Ran: none. Not run: 2/2 restart api-service."), "{out}");
    // The fake's state (this console's simulated backend): no restart ran.
    assert!(out.contains("0 restart(s)"), "{out}");
    assert_eq!(events.seen.lock().unwrap().len(), 2);
    let outcome = records_of(&bot, "r-2").into_iter().rev().find(|(k, _, _)| k == "outcome").unwrap();
    assert_eq!(outcome.1, "failed");
    // The key never reaches the trail.
    let all = serde_json::to_string(&bot.export(&[])).unwrap();
    assert!(!all.contains("dd-key-4c1b9e"));
    verified(&bot);
}

#[test]
fn the_k8s_job_step_creates_the_job_from_its_template_and_watches_it_to_the_end() {
    let k8s = FakeK8s::start();
    let disk_full = std::fs::read_to_string(crate::support::commands_dir().join("runbooks/disk-full.toml")).unwrap();
    let broken = disk_full
        .replace("name = \"disk-full\"", "name = \"disk-full-broken\"")
        .replace("node-cleanup", "cleanup-broken");
    let template = |name: &str, image: &str| {
        format!(
            "[jobs.{name}]\ncontext = \"fake\"\nnamespace = \"ops\"\nimage = \"{image}\"\ncommand = [\"/bin/sh\", \"-c\", \"cleanup\"]\nhost_paths = [\"/var/log\"]\ndeadline = \"30s\"\nlog_lines = 5\n"
        )
    };
    let pinned = "registry.example.com/cleanup@sha256:4b7c6f0a2d1e9b8c7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
    let crashing =
        "registry.example.com/cleanup-crash@sha256:0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b4b7c6f0a2d1e9b8c7a6f5e4d3c2b1a";
    let bot = runbook_bot(
        &format!("{}{}", template("node-cleanup", pinned), template("cleanup-broken", crashing)),
        &[("disk-full", &disk_full), ("disk-full-broken", &broken)],
        "20ms",
    );
    let kubeconfig = k8s.kubeconfig(bot.dir.path());
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let out = console(
        &bot,
        &[
            "/runbook disk-full older_than=14 --dry-run",
            "/runbook disk-full older_than=14",
            "/as console:bob",
            "/approve r-1",
            "/wait",
            "/as console:alice",
            "/runbook disk-full-broken",
            "/as console:bob",
            "/approve r-2",
            "/wait",
        ],
        &env,
    );
    // The dry run shows the Job as it will be created, and creates nothing.
    assert!(out.contains("\"backoffLimit\":0"), "{out}");
    // The fake's state: the Job from the template, with the parameter only in its environment.
    let job = k8s.job("ops", "node-cleanup-r-1-1").expect("the Job was created");
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 30);
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], pinned);
    assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-c", "cleanup"]));
    assert_eq!(container["env"], serde_json::json!([{"name": "LOG_AGE_DAYS", "value": "14"}]));
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/var/log");
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["metadata"]["annotations"]["opsbot/requested-by"], "console:alice");
    assert_eq!(k8s.job_names("ops").len(), 2, "one Job per run, none from the dry run");
    // Completion watched, with the log tail in the thread.
    assert!(out.contains("Job ops/node-cleanup-r-1-1 completed; log tail:"), "{out}");
    assert!(out.contains("LOG_AGE_DAYS=14") && out.contains("freed 1234 MiB"), "{out}");
    assert!(out.contains("✅ r-1: runbook disk-full done"), "{out}");
    // Failure reported as such, with its reason and log.
    assert!(out.contains("Job ops/cleanup-broken-r-2-1 failed (BackoffLimitExceeded"), "{out}");
    assert!(out.contains("no space left on device"), "{out}");
    assert_eq!(records_of(&bot, "r-2").into_iter().rev().find(|(k, _, _)| k == "outcome").unwrap().1, "failed");
    // The real kubectl reads the Job the bot made.
    let cache = bot.dir.path().join("kubectl-cache");
    let got = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["-n", "ops", "get", "job", "node-cleanup-r-1-1", "-o", "jsonpath={.status.succeeded}"])
        .output()
        .expect("kubectl is installed");
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(String::from_utf8_lossy(&got.stdout), "1");
    verified(&bot);
    // `check --live` asks the API server for exactly the verbs the step uses.
    let live = |bot: &Bot| bot.command(&["check", "--live"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    let ok = live(&bot);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("jobs.node-cleanup: ok — namespace ops"), "{}", stdout(&ok));
    k8s.forbid("get", "pods/log");
    let missing = live(&bot);
    assert_eq!(missing.status.code(), Some(77), "{}", stdout(&missing));
    assert!(stdout(&missing).contains("resources: [\"pods/log\"]\n  verbs: [\"get\"]"), "{}", stdout(&missing));
}

/// Two slow restarts (each ~1 s on the simulated backend).
const SLOW: &str = r#"
name = "slow"
summary = "Restart twice"
environment = "production"

[[steps]]
kind = "restart"
service = "api-service"

[[steps]]
kind = "restart"
service = "api-service"
"#;

#[test]
fn approval_binds_to_the_plan_and_abort_stops_before_the_next_step() {
    let bot = runbook_bot("", &[("slow", SLOW)], "300ms");
    // Requested, then the runbook changes before the approval: nothing runs.
    console(&bot, &["/runbook slow"], &[]);
    write_runbooks(
        &bot,
        &[(
            "slow",
            &SLOW.replace(
                "[[steps]]\nkind = \"restart\"\nservice = \"api-service\"\n\n[[steps]]",
                "[[steps]]\nkind = \"scale\"\nservice = \"api-service\"\nreplicas = \"4\"\n\n[[steps]]",
            ),
        )],
    );
    let out = console(&bot, &["/as console:bob", "/approve r-1", "/wait"], &[]);
    assert!(out.contains("r-1 will not run: the runbook, its steps or the configuration they name changed"), "{out}");
    assert!(!records_of(&bot, "r-1").iter().any(|(k, _, _)| k == "intent"), "it never started");
    // Abort: the running step finishes, the next never starts.
    write_runbooks(&bot, &[("slow", SLOW)]);
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    writeln!(stdin, "/as console:dave").unwrap();
    writeln!(stdin, "/runbook slow --emergency \"pool exhausted\"").unwrap();
    stdin.flush().unwrap();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let started = line.contains("▶ step 1/2 restart api-service");
        seen.push(line);
        if started {
            break;
        }
    }
    // Asked while step 1 runs.
    writeln!(stdin, "/runbook abort r-2").unwrap();
    writeln!(stdin, "/runbook abort r-9").unwrap();
    writeln!(stdin, "/wait").unwrap();
    writeln!(stdin, "/quit").unwrap();
    drop(stdin);
    seen.extend(lines);
    child.wait().unwrap();
    let out = seen.join("\n");
    println!("{out}");
    assert!(out.contains("⏹ r-2: abort asked by console:dave"), "{out}");
    assert!(out.contains("r-9 is not a runbook running now"), "{out}");
    assert!(records_of(&bot, "r-9").is_empty(), "a refused abort records nothing under an id it does not own");
    assert!(out.contains("runbook slow stopped — aborted by console:dave before step 2/2"), "{out}");
    assert!(out.contains("Not run: 2/2 restart"), "{out}");
    let r2 = records_of(&bot, "r-2");
    let of_steps: Vec<&(String, String, String)> = r2.iter().filter(|(_, _, d)| d.starts_with("step ")).collect();
    assert_eq!(of_steps.len(), 2, "step 1 started and ended, step 2 never started: {of_steps:?}");
    assert!(of_steps.iter().all(|(_, _, d)| d.starts_with("step 1/2")), "{of_steps:?}");
    let outcome = records_of(&bot, "r-2").into_iter().rev().find(|(k, _, _)| k == "outcome").unwrap();
    assert_eq!(outcome.1, "aborted");
    verified(&bot);
}

#[test]
fn kill_dash_nine_mid_run_is_recorded_as_interrupted_and_nothing_runs_again() {
    let bot = runbook_bot("", &[("slow", SLOW)], "400ms");
    let mut child = bot.spawn_console();
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    writeln!(stdin, "/as console:dave").unwrap();
    writeln!(stdin, "/runbook slow --emergency \"pool exhausted\"").unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(out).lines().map_while(Result::ok);
    // Killed in the middle of step 1, once its first replica restarted.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let done = line.contains("1/3 replicas restarted");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("▶ step 1/2 restart api-service")), "{seen:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    // The next start records it, frees its locks, and runs nothing of it.
    let out = console(&bot, &["/as console:dave", "/runbook slow --emergency again", "/wait"], &[]);
    assert!(out.contains("✅ r-2: runbook slow done"), "the runbook's locks were freed: {out}");
    let r1 = records_of(&bot, "r-1");
    let outcome = r1.iter().find(|(k, _, _)| k == "outcome").expect("an outcome for the interrupted run");
    assert_eq!(outcome.1, "interrupted");
    assert!(outcome.2.contains("It was in the middle of: step 1/2 restart api-service"), "{}", outcome.2);
    assert!(outcome.2.contains("Nothing is run again by itself"), "{}", outcome.2);
    assert!(!r1.iter().any(|(k, _, d)| k == "step" && d.contains("2/2")), "step 2 never started: {r1:?}");
    verified(&bot);
}

#[test]
fn bad_runbooks_and_targets_are_refused_by_check_with_what_to_fix() {
    let bad = r#"
name = "bad"
summary = "Every mistake"
environment = "production"

[[params]]
name = "who"
type = "choice"
values = ["app"]

[[params]]
name = "days"
type = "integer"
min = "1"

[[steps]]
kind = "sql"
target = "nowhere"
statement = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1"
params = ["who", "who"]
max_rows = 5

[[steps]]
kind = "sql"
target = "main"
statement = "SELECT pid FROM pg_stat_activity WHERE usename = $1 /* $2 */"
preview = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()"
params = ["who", "days"]
max_rows = 5

[[steps]]
kind = "k8s_job"
template = "missing"
"#;
    let unknown_kind = "name = \"odd\"\nsummary = \"x\"\nenvironment = \"production\"\n[[steps]]\nkind = \"shell\"\ncommand = \"rm -rf /\"\n";
    let bot = runbook_bot(
        "[databases.main]\nurl = \"postgres://secret@db/app\"\n[jobs.loose]\nnamespace = \"ops\"\nimage = \"busybox:latest\"\ncommand = [\"true\"]\n",
        &[("bad", bad), ("odd", unknown_kind)],
        "20ms",
    );
    let out = bot.command(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for wanted in ["[databases.main]: unknown field `url`", "not pinned by digest"] {
        assert!(text.contains(wanted), "`{wanted}` in: {text}");
    }
    assert!(!text.contains("secret@db"), "a URL is never echoed");
    // With the targets fixed: a step kind outside the closed set.
    let config = std::fs::read_to_string(bot.config())
        .unwrap()
        .replace("url = \"postgres://secret@db/app\"", "url_env = \"DB_URL\"")
        .replace("busybox:latest", "busybox@sha256:0a17678966f63e82e9c5e246d9e654836a33e13650a698adefede61bb5ca099e");
    bot.rewrite_config(&config);
    let out = bot.command(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("odd.toml: steps[0]: unknown variant `shell`"), "{text}");
    // Then the runbook's own mistakes, each named.
    write_runbooks(&bot, &[("odd", "name = \"odd\"\nsummary = \"x\"\nenvironment = \"production\"\n[[steps]]\nkind = \"restart\"\nservice = \"api-service\"\n")]);
    let out = bot.command(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "`nowhere` is not a [databases] target",
        "the step binds 2 parameter(s)",
        "must leave opsbot's own out",
        "`missing` is not a [jobs] template",
        "a step that changes something needs a read-only `preview`",
        "[steps[1].preview]: `pg_cancel_backend` acts even in a read-only transaction",
        // A placeholder in a comment is not a use.
        "[steps[1].statement]: the statement uses $1 but the step binds 2 parameter(s)",
        "[params[1].min]: write a whole number, like 7",
    ] {
        assert!(text.contains(wanted), "`{wanted}` in: {text}");
    }
}

/// What the shipped runbooks need besides the services the support
/// configurations have: payment-service, and simulated targets (the real
/// ones are proven above).
pub fn shipped_runbooks_config(channel: &str) -> String {
    format!(
        r#"
[services.payment-service]
environment = "production"
channels = ["{channel}"]
backend = {{ type = "simulated", version = "v2.7.0", replicas = 2, step = "20ms" }}

[databases.main]
simulated = true

[http.datadog-events]
url = "https://api.datadoghq.com/api/v1/events"
simulated = true

[jobs.node-cleanup]
namespace = "ops"
image = "registry.example.com/cleanup@sha256:4b7c6f0a2d1e9b8c7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
command = ["/bin/sh", "-c", "cleanup"]
simulated = true
{RULES}"#
    )
}

/// The shipped runbooks' folder, for `[bot] runbooks_dir`.
pub fn shipped_runbooks_dir() -> String {
    crate::support::commands_dir().join("runbooks").display().to_string()
}

/// The incident flow through the console: a deploy goes out, a SEV1 is
/// declared on its service, a new deploy is held for the lead, a rollback
/// runs under its gate, the connection-pool runbook runs with an approval,
/// the incident is resolved, and its export tells it all with durations.
#[test]
fn the_incident_flow_with_a_runbook_through_the_console() {
    let config = config_text("30m", &shipped_runbooks_config("console:ops")).replace(
        "action_timeout = \"1m\"",
        &format!("action_timeout = \"1m\"\nrunbooks_dir = \"{}\"", shipped_runbooks_dir()),
    );
    let bot = Bot::with_config(&config);
    let out = console(
        &bot,
        &[
            "/as console:bob",
            "/deploy api-service v1.4.2",
            "/as console:dave",
            "/approve r-1",
            "/wait",
            "/as console:alice",
            "/incident declare \"pool exhausted after v1.4.2\" --sev 1 --service api-service --service payment-service",
            "/as console:carol",
            "/deploy api-service v1.4.3",
            "/rollback api-service --of r-1",
            "/as console:dave",
            "/approve r-3",
            "/wait",
            "/as console:carol",
            "/runbook connection-pool idle_for=15m",
            "/as console:bob",
            "/approve r-4",
            "/wait",
            "/as console:alice",
            "/incident resolve \"rolled back, idle sessions ended\"",
        ],
        &[],
    );
    assert!(out.contains("r-1 deploy api-service by console:bob"), "the summary lists the deploy: {out}");
    assert!(out.contains("r-2 is waiting for 1 approval(s) from sre and console:alice's"), "deploy held: {out}");
    assert!(out.contains("✅ r-3: [simulated] api-service rolled back to v1.4.1"), "{out}");
    assert!(out.contains("✅ r-4: runbook connection-pool done: all 3 step(s) succeeded"), "{out}");
    assert!(out.contains("✅ INC-1 resolved by console:alice"), "{out}");
    let exported = bot.command(&["incident", "export", "INC-1"]).output().unwrap();
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let md = String::from_utf8(exported.stdout).unwrap();
    for row in [
        "declared SEV1 on api-service, payment-service",
        "deploy r-2 pending",
        "rollback r-3 succeeded",
        "runbook run r-4 pending",
        "restart r-4 succeeded: step 1/3 restart api-service",
        "restart r-4 succeeded: step 2/3 restart payment-service",
        "sql r-4 succeeded: step 3/3 sql on main",
        "runbook run r-4 succeeded: runbook connection-pool done",
        "resolved after",
        "- Time to mitigate: ",
        "- Time to resolve: ",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    verified(&bot);
}

#[test]
fn freezes_on_a_step_kind_hold_runbooks_and_ungated_runbooks_run_without_approval() {
    let ungated = SLOW
        .replace("name = \"slow\"", "name = \"quick\"")
        .replace("service = \"api-service\"\n", "service = \"api-service\"\napproval = false\n");
    let bot = runbook_bot("", &[("slow", SLOW), ("quick", &ungated)], "20ms");
    // Every step says it needs no approval: the rule's requesters run it at once.
    let out = console(&bot, &["/runbook qiuck", "/runbook quick --dry-run", "/runbook quick", "/wait"], &[]);
    assert!(out.contains("no such runbook. Did you mean `quick`?"), "a near miss is named: {out}");
    assert!(out.contains("no step needs approval"), "{out}");
    assert!(out.contains("r-1 runs now, no approval needed"), "{out}");
    assert!(out.contains("✅ r-1: runbook quick done"), "{out}");
    // A freeze on restarts holds both: outright, or with its approvals, whatever the file says.
    let config = std::fs::read_to_string(bot.config()).unwrap();
    let freeze = |approvals: &str| {
        format!("{config}\n[[freeze]]\nname = \"restarts\"\nenvironments = [\"production\"]\ncommands = [\"restart\"]\nfrom = \"2020-01-01T00:00:00Z\"\nto = \"2100-01-01T00:00:00Z\"\n{approvals}")
    };
    bot.rewrite_config(&freeze(""));
    let out = console(&bot, &["/runbook quick", "/runbook slow"], &[]);
    assert_eq!(out.matches("is frozen (restarts)").count(), 2, "{out}");
    bot.rewrite_config(&freeze("approvals = 2\n"));
    let out = console(&bot, &["/runbook quick"], &[]);
    assert!(out.contains("is waiting for 2 approval(s) from sre"), "{out}");
    verified(&bot);
}

/// An http step whose request went out but got no answer in time: the
/// run says it cannot tell (unknown, never failed), stops, and the fake
/// shows the event did arrive while the next step never ran.
#[test]
fn a_request_sent_but_unanswered_is_unknown_and_stops_the_run() {
    let events = FakeEvents::start();
    *events.status.lock().unwrap() = 0;
    let event_then_restart = r#"
name = "event-then-restart"
summary = "Post the event, then restart"
environment = "production"

[[steps]]
kind = "http"
target = "datadog-events"
body = { title = "restarting" }

[[steps]]
kind = "restart"
service = "api-service"
"#;
    let bot = runbook_bot(
        &format!("[http.datadog-events]\nurl = \"{}\"\ntimeout = \"1s\"\n", events.url),
        &[("event-then-restart", event_then_restart)],
        "20ms",
    );
    let out = console(
        &bot,
        &["/as console:dave", "/runbook event-then-restart --emergency \"pool\"", "/wait", "/status api-service"],
        &[],
    );
    assert!(out.contains("step 1/2 http datadog-events unknown"), "{out}");
    assert!(out.contains("it may have been received"), "{out}");
    assert!(out.contains("Not run: 2/2 restart api-service"), "{out}");
    // The fake's state: the event arrived; the restart never happened.
    assert_eq!(events.seen.lock().unwrap().len(), 1);
    assert!(out.contains("0 restart(s)"), "{out}");
    let records = records_of(&bot, "r-1");
    assert!(records.iter().any(|(k, o, _)| k == "step" && o == "unknown"), "{records:?}");
    assert_eq!(records.iter().rev().find(|(k, _, _)| k == "outcome").unwrap().1, "unknown");
    verified(&bot);
}

/// The shipped runbooks with the demo configuration as shipped (its paths
/// pointed here): listed, and each run to its end on the simulated targets.
#[test]
fn the_three_shipped_runbooks_work_with_the_demo_config() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(repo.join("config/demo.toml")).unwrap();
    let config = demo
        .replace("data_dir = \"../data/demo\"", "data_dir = \"data\"")
        .replace("commands_dir = \"../commands\"", &format!("commands_dir = \"{}\"", repo.join("commands").display()))
        .replace(
            "runbooks_dir = \"../commands/runbooks\"",
            &format!("runbooks_dir = \"{}\"", repo.join("commands/runbooks").display()),
        )
        .replace("step = \"400ms\"", "step = \"20ms\"");
    let bot = Bot::with_config(&config);
    let out = console(
        &bot,
        &[
            "/runbook list",
            "/as console:dave",
            "/runbook connection-pool --emergency \"demo\"",
            "/wait",
            "/runbook memory-leak --emergency \"demo\"",
            "/wait",
            "/runbook disk-full older_than=3 --emergency \"demo\"",
            "/wait",
            "/status payment-service",
        ],
        &[],
    );
    for listed in ["• connection-pool (production)", "• memory-leak (production)", "• disk-full (production)"] {
        assert!(out.contains(listed), "{listed}: {out}");
    }
    assert!(out.contains("idle_for=<duration 1m..24h, default 10m>"), "{out}");
    assert!(out.contains("✅ r-1: runbook connection-pool done: all 3 step(s) succeeded"), "{out}");
    assert!(out.contains("✅ r-2: runbook memory-leak done: all 3 step(s) succeeded"), "{out}");
    assert!(out.contains("✅ r-3: runbook disk-full done: all 1 step(s) succeeded"), "{out}");
    // The simulated cluster's state: payment-service was restarted by two runs.
    assert!(
        out.contains("payment-service (production): v2.7.0 — revision 1, 4/4 replicas ready, 2 restart(s)"),
        "{out}"
    );
    verified(&bot);
}

/// Scale and rollback steps, a service parameter, and the run locks: a
/// second run of a runbook, or a change to a service it holds, is refused
/// while the first runs.
#[test]
fn scale_and_rollback_steps_and_a_busy_runbook_or_service_is_refused() {
    let resize = r#"
name = "resize"
summary = "Scale, then roll back"
environment = "production"

[[params]]
name = "svc"
type = "service"

[[params]]
name = "replicas"
type = "integer"
min = 1
max = 10

[[steps]]
kind = "scale"
service = "{svc}"
replicas = "{replicas}"

[[steps]]
kind = "rollback"
service = "{svc}"
"#;
    let bot = runbook_bot("", &[("resize", resize), ("slow", SLOW)], "200ms");
    let out = console(
        &bot,
        &[
            "/as console:dave",
            "/deploy api-service v1.5.0 --emergency \"setup\"",
            "/wait",
            "/runbook resize svc=api-service replicas=5 --emergency \"load\"",
            "/wait",
            "/status api-service",
            "/runbook slow --emergency \"one\"",
            "/runbook slow --emergency \"two\"",
            "/restart api-service --emergency \"three\"",
            "/wait",
        ],
        &[],
    );
    assert!(out.contains("✅ r-2: runbook resize done: all 2 step(s) succeeded"), "{out}");
    // The simulated cluster's state: 5 replicas, back on the version before the deploy.
    assert!(out.contains("api-service (production): v1.4.1 — revision 3, 5/5 replicas ready"), "{out}");
    assert!(out.contains("runbook slow is busy with r-3"), "{out}");
    assert!(out.contains("api-service is busy with r-3"), "{out}");
    assert!(out.contains("✅ r-3: runbook slow done"), "{out}");
    let r4 = records_of(&bot, "r-4");
    assert!(!r4.iter().any(|(k, _, _)| k == "intent"), "the second run never started: {r4:?}");
    verified(&bot);
}
