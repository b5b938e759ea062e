//! The core in-process with a manual clock, a throw-away store and a sink that
//! records replies. Includes the property test over random users, groups,
//! votes and timings; `timeout`: an action the engine cuts off.

mod alerts;
mod incident;
mod timeout;

use crate::support::commands_dir;
use chrono::{DateTime, Utc};
use opsbot::audit::{AuditLog, AuditQuery, RecordKind, Verdict};
use opsbot::clock::ManualClock;
use opsbot::command::Registry;
use opsbot::config;
use opsbot::engine::reply::{RecordingSink, Reply};
use opsbot::engine::{Engine, Executors, Parts};
use opsbot::event::{Actor, Event, ReplyTarget};
use opsbot::store::{MemoryStore, SledStore};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const USERS: usize = 6;

fn user(i: usize) -> Actor {
    Actor::parse(&format!("console:u{i}")).unwrap()
}

struct Harness {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    sink: Arc<RecordingSink>,
    audit: Arc<dyn AuditLog>,
}

/// The core over `text` (as [`engine_with`]) with its own backend for
/// simulated services, store, trail and chat sink.
fn custom_engine(
    text: &str,
    simulated: Option<Arc<dyn opsbot::action::Executor>>,
    store: Arc<MemoryStore>,
    audit: Arc<dyn AuditLog>,
    chat: Arc<dyn opsbot::engine::reply::ChatSink>,
) -> Arc<Engine> {
    let mut problems = Vec::new();
    let config = config::from_str(Path::new("t.toml"), text, &mut problems).unwrap_or_else(|| panic!("{problems:?}"));
    let mut executors = Executors::from_config(&config);
    if let Some(simulated) = simulated {
        executors.simulated = simulated;
    }
    Engine::new(Parts {
        executors,
        config,
        registry: Registry::load_dir(&commands_dir()).unwrap(),
        store,
        audit,
        chat,
        clock: Arc::new(ManualClock::new(start())),
        metrics: Default::default(),
    })
}

/// One staging service that u0, a developer, deploys at once.
const STAGING_API: &str = r#"
[environments.staging]
[groups]
developers = ["console:u0"]
[services.api]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 1 }
[[rules]]
commands = ["deploy"]
environments = ["staging"]
requesters = ["developers"]
"#;

/// A chat adapter with a bug: it panics on the replies `on` picks and
/// records the others in `sink`.
struct PanicsOn {
    sink: Arc<RecordingSink>,
    on: fn(&Reply) -> bool,
}

impl PanicsOn {
    fn new(sink: Arc<RecordingSink>, on: fn(&Reply) -> bool) -> PanicsOn {
        PanicsOn { sink, on }
    }
}

impl opsbot::engine::reply::ChatSink for PanicsOn {
    fn send<'a>(
        &'a self,
        target: &'a opsbot::event::ReplyTarget,
        reply: Reply,
    ) -> opsbot::audit::BoxFuture<'a, Result<(), opsbot::engine::reply::ChatError>> {
        if (self.on)(&reply) {
            panic!("adapter bug");
        }
        self.sink.send(target, reply)
    }
}

/// `requester` is u0; `approvers` are the members of the approver group.
fn harness(approvers: &BTreeSet<usize>, needed: u32, ttl_secs: u64) -> Harness {
    let list = |set: &BTreeSet<usize>| set.iter().map(|i| format!("\"console:u{i}\"")).collect::<Vec<_>>().join(", ");
    let everyone: BTreeSet<usize> = (0..USERS).collect();
    let text = format!(
        r#"
[environments.production]
[groups]
everyone = [{everyone}]
sre = [{sre}]
[services.api]
environment = "production"
backend = {{ type = "simulated", version = "v1", replicas = 1, step = "1ms" }}
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["everyone"]
approvers = ["sre"]
approvals = {needed}
ttl = "{ttl_secs}s"
"#,
        everyone = list(&everyone),
        sre = list(approvers),
    );
    engine_with(&text)
}

/// The core over `text` (checked as `opsbot check` would not: the rules are
/// not cross-checked against the command files, so tests can give it rules
/// `check` refuses), on the in-memory store and trail.
fn engine_with(text: &str) -> Harness {
    let mut problems = Vec::new();
    let config =
        config::from_str(Path::new("prop.toml"), text, &mut problems).unwrap_or_else(|| panic!("{problems:?}"));
    let registry = Registry::load_dir(&commands_dir()).unwrap();
    // The core against the in-memory store and trail (the contract tests keep
    // them honest against the sled ones).
    let store = Arc::new(MemoryStore::default());
    let audit: Arc<dyn AuditLog> = Arc::new(opsbot::audit::MemoryAuditLog::default());
    let clock = Arc::new(ManualClock::new(start()));
    let sink = Arc::new(RecordingSink::default());
    let engine = Engine::new(Parts {
        executors: Executors::from_config(&config),
        config,
        registry,
        store,
        audit: audit.clone(),
        chat: sink.clone(),
        clock: clock.clone(),
        metrics: Default::default(),
    });
    Harness { engine, clock, sink, audit }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn command(actor: Actor, text: &str) -> Event {
    Event::Command {
        actor,
        text: text.into(),
        reply: ReplyTarget::channel("console:ops"),
        dedup_key: None,
        roles: Vec::new(),
    }
}

fn vote(actor: Actor, approve: bool) -> Event {
    Event::Vote {
        actor,
        request_id: "r-1".into(),
        approve,
        reply: ReplyTarget::channel("console:ops"),
        dedup_key: None,
        version: None,
        roles: Vec::new(),
    }
}

fn intents(audit: &Arc<dyn AuditLog>) -> usize {
    let records = audit.read(&AuditQuery { request_id: Some("r-1".into()), ..Default::default() }).unwrap();
    records.iter().filter(|r| r.entry.kind == RecordKind::Intent).count()
}

#[derive(Debug, Clone)]
enum Op {
    Vote { user: usize, approve: bool },
    Advance { secs: u64 },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..USERS, prop::bool::weighted(0.8)).prop_map(|(user, approve)| Op::Vote { user, approve }),
        2 => (0u64..40).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Tick),
    ]
}

/// What must have happened, computed independently of the engine.
#[derive(Debug, Default)]
struct Model {
    open: bool,
    approvals: BTreeSet<usize>,
    executed: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// No action ever executes without the required approvals from eligible
    /// non-requesters, and never after expiry; and when those approvals do
    /// arrive in time, it executes.
    #[test]
    fn nothing_runs_without_enough_eligible_approvals_before_expiry(
        approvers in prop::collection::btree_set(0..USERS, 1..=USERS),
        needed in 1u32..=3,
        ttl_secs in 10u64..90,
        ops in prop::collection::vec(op(), 1..14),
    ) {
        prop_assume!(approvers.len() as u32 >= needed);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let h = harness(&approvers, needed, ttl_secs);
            let requester = 0usize;
            let expires = start() + chrono::Duration::seconds(ttl_secs as i64);
            h.engine.handle(command(user(requester), "/deploy api v2")).await;
            let eligible_besides_requester = approvers.iter().filter(|a| **a != requester).count() as u32;
            let mut model = Model { open: eligible_besides_requester >= needed, ..Model::default() };
            for op in &ops {
                match *op {
                    Op::Advance { secs } => h.clock.advance(Duration::from_secs(secs)),
                    Op::Tick => h.engine.tick().await,
                    Op::Vote { user: u, approve } => {
                        let now = h.clock.now_for_test();
                        if model.open && now < expires {
                            if u == requester {
                                if !approve { model.open = false; }
                            } else if approvers.contains(&u) {
                                if approve {
                                    model.approvals.insert(u);
                                    if model.approvals.len() as u32 >= needed {
                                        model.executed = true;
                                        model.open = false;
                                    }
                                } else {
                                    model.open = false;
                                }
                            }
                        }
                        h.engine.handle(vote(user(u), approve)).await;
                    }
                }
                if h.clock.now_for_test() >= expires { model.open = false; }
                let ran = intents(&h.audit);
                prop_assert!(ran <= 1, "ran twice");
                prop_assert_eq!(ran == 1, model.executed, "after {:?}: engine ran={} model={:?}", op, ran, model);
            }
            // The approvals that were counted are all from eligible non-requesters.
            let records = h.audit.read(&AuditQuery { request_id: Some("r-1".into()), ..Default::default() }).unwrap();
            let counted: BTreeSet<String> = records.iter()
                .filter(|r| r.entry.kind == RecordKind::Vote && r.entry.outcome == Some(opsbot::audit::Verdict::Approve))
                .filter_map(|r| r.entry.actor.clone())
                .collect();
            for voter in &counted {
                let index: usize = voter.trim_start_matches("console:u").parse().unwrap();
                prop_assert!(index != requester && approvers.contains(&index), "{} was counted", voter);
            }
            h.engine.shutdown(Duration::from_secs(5)).await;
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_request_expires_on_the_tick_and_says_nothing_ran() {
    let approvers: BTreeSet<usize> = [1, 2].into();
    let h = harness(&approvers, 1, 60);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.clock.advance(Duration::from_secs(59));
    h.engine.tick().await;
    assert!(!h.sink.replies().iter().any(|r| matches!(r, Reply::Text(t) if t.contains("expired"))));
    h.clock.advance(Duration::from_secs(1));
    h.engine.tick().await;
    assert!(h
        .sink
        .replies()
        .iter()
        .any(|r| matches!(r, Reply::Text(t) if t.contains("r-1 expired without enough approvals; nothing ran"))));
    h.engine.handle(vote(user(1), true)).await;
    assert_eq!(intents(&h.audit), 0);
    let last = h.sink.replies().pop().unwrap();
    assert!(matches!(&last, Reply::Private { text, .. } if text.contains("already expired")), "{last:?}");
}

#[tokio::test]
async fn duplicate_deliveries_run_once() {
    let approvers: BTreeSet<usize> = [1].into();
    let h = harness(&approvers, 1, 60);
    let event = |key: &str| Event::Command {
        actor: user(0),
        text: "/deploy api v2".into(),
        reply: ReplyTarget::channel("console:ops"),
        dedup_key: Some(key.into()),
        roles: Vec::new(),
    };
    let requests =
        || h.audit.read(&AuditQuery { kind: Some(RecordKind::Request), ..Default::default() }).unwrap().len();
    h.engine.handle(event("trigger-1")).await;
    h.engine.handle(event("trigger-1")).await;
    assert_eq!(requests(), 1, "the retry was ignored");
    h.engine.handle(event("trigger-2")).await;
    assert_eq!(requests(), 2, "a new delivery is a new request");
}

#[tokio::test]
async fn concurrent_appends_form_one_valid_chain() {
    let store = SledStore::temporary().unwrap();
    let audit: Arc<dyn AuditLog> = store.audit();
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let entry =
                    opsbot::audit::AuditEntry::new(RecordKind::System).detail(format!("writer {writer} record {i}"));
                audit.append(entry).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let summary = store.verify_audit().unwrap();
    assert_eq!(summary.records, 64 * 20);
}

/// What a crash between an action's outcome and its run lock's release
/// leaves: the outcome durable, the lock still held (the release is written
/// after the outcome in the same commit; sled keeps a prefix of its log).
#[tokio::test]
async fn recovery_never_calls_a_finished_action_interrupted() {
    use opsbot::audit::{AuditEntry, Verdict};
    use opsbot::store::RunLock;
    let h = harness(&[1].into(), 1, 60);
    let store = h.engine.store().clone();
    let lock = |id: &str| RunLock {
        request_id: id.into(),
        holder: "console:u0".into(),
        until: start() + chrono::Duration::hours(1),
    };
    // api finished r-1 (its outcome is in the trail); web was cut off running r-2.
    store.acquire_run_lock("api", lock("r-1"), start()).unwrap().unwrap();
    store.acquire_run_lock("web", lock("r-2"), start()).unwrap().unwrap();
    let outcome = AuditEntry {
        request_id: Some("r-1".into()),
        service: Some("api".into()),
        ..AuditEntry::new(RecordKind::Outcome)
    }
    .outcome(Verdict::Succeeded)
    .detail("api runs v2");
    h.audit.append(outcome).await.unwrap();
    h.engine.recover().await;
    let outcomes: Vec<(String, Verdict)> = h
        .audit
        .read(&AuditQuery { kind: Some(RecordKind::Outcome), ..Default::default() })
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.request_id.unwrap(), r.entry.outcome.unwrap()))
        .collect();
    assert_eq!(outcomes, [("r-1".to_string(), Verdict::Succeeded), ("r-2".to_string(), Verdict::Interrupted)]);
    assert!(store.run_locks().unwrap().is_empty(), "both services are free again");
}

/// Every class of command (a change, an admin action, a read, a vote) under
/// rules that ask approvals or allow break-glass, with and without
/// `--emergency`: `opsbot check` refuses the rules the engine cannot honour,
/// naming them, and the engine never panics on them — it runs, holds or
/// denies, and says why.
#[tokio::test]
async fn every_command_class_under_every_rule_shape_is_honoured_or_refused_never_a_panic() {
    let commands = [
        ("deploy", "/deploy api v2", "/deploy api v2 --emergency \"INC-1\"", true),
        ("lock", "/lock api migration", "/lock api migration", false),
        ("read", "/status api", "/audit api", false),
        ("vote", "/approve r-1", "/deny r-1", false),
    ];
    for (policy, plain, other, is_change) in commands {
        for approvals in [0u32, 1] {
            for break_glass in [false, true] {
                let text = format!(
                    r#"
[environments.production]
[groups]
everyone = ["console:u0", "console:u1"]
sre = ["console:u1"]
[services.api]
environment = "production"
backend = {{ type = "simulated", version = "v1", replicas = 1, step = "1ms" }}
[[rules]]
commands = ["{policy}"]
environments = ["*"]
requesters = ["everyone"]
{approvers}
{glass}
"#,
                    approvers = if approvals > 0 {
                        format!("approvers = [\"sre\"]\napprovals = {approvals}")
                    } else {
                        String::new()
                    },
                    glass = if break_glass { "break_glass = [\"everyone\"]" } else { "" },
                );
                let name = format!("{policy}, approvals {approvals}, break-glass {break_glass}");
                // What `opsbot check` says.
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("opsbot.toml");
                let with_commands = format!("[bot]\ncommands_dir = \"{}\"\n{text}", commands_dir().display());
                std::fs::write(&path, &with_commands).unwrap();
                let checked = config::load(&path);
                let honourable = is_change || (approvals == 0 && !break_glass && policy != "vote");
                match &checked {
                    Ok(_) => assert!(honourable, "{name}: check accepted a rule the engine cannot honour"),
                    Err(problems) => {
                        assert!(!honourable, "{name}: {problems}");
                        assert!(problems.0.iter().any(|p| p.key.starts_with("rules[0].")), "{name}: {problems}");
                    }
                }
                // What the engine does with it anyway.
                for line in [plain, other] {
                    let h = engine_with(&text);
                    let handled = tokio::spawn({
                        let engine = h.engine.clone();
                        let event = command(user(0), line);
                        async move { engine.handle(event).await }
                    })
                    .await;
                    assert!(handled.is_ok(), "{name}: `{line}` panicked");
                    h.engine.wait_idle().await;
                    let replies = h.sink.replies();
                    assert!(!replies.is_empty(), "{name}: `{line}` got no answer");
                    let pending = h.engine.open_requests();
                    if !is_change {
                        assert_eq!(pending, 0, "{name}: `{line}` must never wait for approval: {replies:?}");
                    }
                    if !is_change && approvals > 0 && policy != "vote" {
                        let denied = replies.iter().any(
                            |r| matches!(r, Reply::Private { text, .. } if text.contains("cannot wait for approval")),
                        );
                        assert!(denied, "{name}: `{line}`: {replies:?}");
                    }
                }
            }
        }
    }
}

/// Decide, then announce: of many concurrent deploys of one service only the
/// one that holds the run lock is announced as running; the rest are
/// refused privately and nothing about them is said in the channel.
#[tokio::test]
async fn only_the_deploy_that_holds_the_run_lock_is_announced() {
    let text = r#"
[environments.staging]
[groups]
developers = ["console:u0", "console:u1", "console:u2", "console:u3", "console:u4"]
[services.api]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 2, step = "200ms" }
[[rules]]
commands = ["deploy"]
environments = ["staging"]
requesters = ["developers"]
"#;
    let h = engine_with(text);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let engine = h.engine.clone();
        let event = Event::Command {
            actor: user(i % 5),
            text: format!("/deploy api v2.{i}"),
            reply: ReplyTarget::channel("console:ops"),
            dedup_key: Some(format!("trigger-{i}")),
            roles: Vec::new(),
        };
        tasks.push(tokio::spawn(async move { engine.handle(event).await }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let replies = h.sink.replies();
    let runs_now = replies.iter().filter(|r| matches!(r, Reply::Text(t) if t.contains("runs now"))).count();
    let started = replies.iter().filter(|r| matches!(r, Reply::Started { .. })).count();
    let busy =
        replies.iter().filter(|r| matches!(r, Reply::Private { text, .. } if text.contains("is busy with"))).count();
    assert_eq!((runs_now, started, busy), (1, 1, 39), "{replies:#?}");
    h.engine.wait_idle().await;
}

/// An approved request that finds its service busy is refused where the
/// channel sees it (its card's thread), not only to the last voter.
#[tokio::test]
async fn an_approved_request_that_finds_the_service_busy_is_refused_in_its_thread() {
    let h = engine_with(
        r#"
[environments.production]
[groups]
everyone = ["console:u0", "console:u1", "console:u2"]
sre = ["console:u1"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 2, step = "500ms" }
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["everyone"]
approvers = ["sre"]
approvals = 1
[[rules]]
commands = ["restart"]
environments = ["production"]
requesters = ["everyone"]
"#,
    );
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    h.engine.handle(command(user(2), "/restart api")).await;
    assert!(h.sink.replies().iter().any(|r| matches!(r, Reply::Started { request_id, .. } if request_id == "r-2")));
    h.engine.handle(vote(user(1), true)).await;
    let replies = h.sink.replies();
    let refused = replies.iter().find_map(|r| match r {
        Reply::Outcome { request_id, verdict: Verdict::Refused, text } if request_id == "r-1" => Some(text.clone()),
        _ => None,
    });
    assert!(refused.as_deref().is_some_and(|t| t.contains("busy with r-2")), "{replies:#?}");
    assert_eq!(intents(&h.audit), 0, "r-1 never ran");
    h.engine.wait_idle().await;
}

/// A backend that panics (a bug) ends its action, not the bot: the outcome
/// is recorded (unknown: the live state was not read), the service is free
/// again, and the engine reports itself unhealthy so readiness goes false.
#[tokio::test]
async fn a_panicking_backend_is_recorded_frees_the_service_and_marks_the_bot_unhealthy() {
    struct Panics;
    impl opsbot::action::Executor for Panics {
        fn execute<'a>(
            &'a self,
            _: &'a opsbot::config::Service,
            _: &'a opsbot::action::Action,
            _: &'a opsbot::action::RunContext,
            _: opsbot::action::Progress,
        ) -> opsbot::audit::BoxFuture<'a, Result<opsbot::action::Outcome, opsbot::action::ActionError>> {
            Box::pin(async { panic!("index out of bounds") })
        }
        fn status<'a>(
            &'a self,
            _: &'a opsbot::config::Service,
        ) -> opsbot::audit::BoxFuture<'a, Result<String, opsbot::action::ActionError>> {
            Box::pin(async { Ok(String::new()) })
        }
    }
    let text = STAGING_API;
    let store = Arc::new(MemoryStore::default());
    let audit: Arc<dyn AuditLog> = Arc::new(opsbot::audit::MemoryAuditLog::default());
    let sink = Arc::new(RecordingSink::default());
    let engine = custom_engine(text, Some(Arc::new(Panics)), store.clone(), audit.clone(), sink.clone());
    assert!(engine.handle(command(user(0), "/deploy api v2")).await);
    engine.wait_idle().await;
    let outcome = audit
        .read(&AuditQuery { kind: Some(RecordKind::Outcome), ..Default::default() })
        .unwrap()
        .pop()
        .expect("the outcome is recorded");
    assert_eq!(outcome.entry.outcome, Some(opsbot::audit::Verdict::Unknown), "{outcome:?}");
    assert!(outcome.entry.detail.contains("internal error"), "{}", outcome.entry.detail);
    use opsbot::store::Store;
    assert!(store.run_locks().unwrap().is_empty(), "the service is free again");
    let dead = engine.health().dead();
    assert!(dead.iter().any(|d| d.contains("panicked")), "{dead:?}");
    assert!(sink.replies().iter().any(|r| matches!(r, Reply::Outcome { .. })), "the channel is told");
}

/// A panic while announcing an outcome that is already recorded (a bug in
/// a chat adapter, say) leaves that outcome as the request's only one: the
/// trail never says "succeeded" and then "unknown" for the same run.
#[tokio::test]
async fn a_panic_after_the_outcome_is_recorded_adds_no_second_outcome() {
    let text = STAGING_API;
    let store = Arc::new(MemoryStore::default());
    let audit: Arc<dyn AuditLog> = Arc::new(opsbot::audit::MemoryAuditLog::default());
    let engine = custom_engine(
        text,
        None,
        store.clone(),
        audit.clone(),
        Arc::new(PanicsOn::new(Arc::default(), |r| matches!(r, Reply::Outcome { .. }))),
    );
    assert!(engine.handle(command(user(0), "/deploy api v2")).await);
    engine.wait_idle().await;
    let outcomes = audit.read(&AuditQuery { kind: Some(RecordKind::Outcome), ..Default::default() }).unwrap();
    let verdicts: Vec<_> = outcomes.iter().map(|r| r.entry.outcome).collect();
    assert_eq!(verdicts, [Some(opsbot::audit::Verdict::Succeeded)], "{outcomes:#?}");
    use opsbot::store::Store;
    assert!(store.run_locks().unwrap().is_empty(), "the service is free");
    assert!(engine.health().dead().iter().any(|d| d.contains("adapter bug")), "the bug is still reported");
}

/// An approved request whose start the trail refuses (a full disk, say)
/// does not run, and its thread is told so: the card never stays
/// "approved" over an action that never started.
#[tokio::test]
async fn an_approved_request_whose_start_is_not_recorded_is_closed_in_its_thread() {
    struct RefusesStarts(opsbot::audit::MemoryAuditLog);
    impl AuditLog for RefusesStarts {
        fn commit(
            &self,
            entries: Vec<opsbot::audit::AuditEntry>,
            then: Option<opsbot::audit::Effect>,
        ) -> opsbot::audit::BoxFuture<'_, Result<Vec<opsbot::audit::AuditRecord>, opsbot::audit::AuditError>> {
            if entries.iter().any(|e| e.kind == RecordKind::Intent) {
                return Box::pin(async { Err(opsbot::audit::AuditError::Store("no space left on device".into())) });
            }
            self.0.commit(entries, then)
        }
        fn read(&self, q: &AuditQuery) -> Result<Vec<opsbot::audit::AuditRecord>, opsbot::audit::AuditError> {
            self.0.read(q)
        }
        fn each(
            &self,
            q: &AuditQuery,
            visit: &mut dyn FnMut(opsbot::audit::AuditRecord) -> bool,
        ) -> Result<(), opsbot::audit::AuditError> {
            self.0.each(q, visit)
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<opsbot::audit::AuditRecord> {
            self.0.subscribe()
        }
        fn head(&self) -> Result<opsbot::audit::chain::Head, opsbot::audit::AuditError> {
            self.0.head()
        }
    }
    let text = r#"
[environments.production]
[groups]
everyone = ["console:u0", "console:u1"]
sre = ["console:u1"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1 }
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["everyone"]
approvers = ["sre"]
approvals = 1
"#;
    let store = Arc::new(MemoryStore::default());
    let sink = Arc::new(RecordingSink::default());
    let engine = custom_engine(text, None, store.clone(), Arc::new(RefusesStarts(Default::default())), sink.clone());
    engine.handle(command(user(0), "/deploy api v2")).await;
    engine.handle(vote(user(1), true)).await;
    engine.wait_idle().await;
    let replies = sink.replies();
    let told = replies.iter().find_map(|r| match r {
        Reply::Outcome { request_id, verdict: Verdict::Refused, text } if request_id == "r-1" => Some(text.clone()),
        _ => None,
    });
    assert!(told.as_deref().is_some_and(|t| t.contains("did not run") && !t.contains("no space")), "{replies:#?}");
    assert!(!replies.iter().any(|r| matches!(r, Reply::Started { .. })), "{replies:#?}");
    use opsbot::store::Store;
    assert!(store.run_locks().unwrap().is_empty(), "the service is free");
    let replies = sink.replies();
    assert!(
        replies.iter().any(
            |r| matches!(r, Reply::Outcome { verdict: Verdict::Refused, text, .. } if text.contains("did not run"))
        ),
        "the channel is told: {replies:#?}"
    );
}

/// A panic while announcing a start (after the intent is recorded) leaves
/// no run open: the request gets an outcome saying it did not run, the
/// service is free, and nothing runs behind the channel's back.
#[tokio::test]
async fn a_panic_announcing_a_start_closes_the_request_and_runs_nothing() {
    use futures_util::FutureExt;
    let text = STAGING_API;
    let store = Arc::new(MemoryStore::default());
    let audit: Arc<dyn AuditLog> = Arc::new(opsbot::audit::MemoryAuditLog::default());
    let sink = Arc::new(RecordingSink::default());
    let engine = custom_engine(
        text,
        None,
        store.clone(),
        audit.clone(),
        Arc::new(PanicsOn::new(sink.clone(), |r| matches!(r, Reply::Started { .. }))),
    );
    let handled = std::panic::AssertUnwindSafe(engine.handle(command(user(0), "/deploy api v2"))).catch_unwind().await;
    assert!(handled.is_err(), "the panic reaches the request's handler, which counts it");
    engine.wait_idle().await;
    let outcomes = audit.read(&AuditQuery { kind: Some(RecordKind::Outcome), ..Default::default() }).unwrap();
    let verdicts: Vec<_> = outcomes.iter().map(|r| (r.entry.outcome, r.entry.detail.clone())).collect();
    assert!(
        matches!(verdicts.as_slice(), [(Some(opsbot::audit::Verdict::Refused), detail)] if detail.contains("did not run")),
        "{verdicts:#?}"
    );
    use opsbot::store::Store;
    assert!(store.run_locks().unwrap().is_empty(), "the service is free");
    let replies = sink.replies();
    assert!(
        replies.iter().any(
            |r| matches!(r, Reply::Outcome { verdict: Verdict::Refused, text, .. } if text.contains("did not run"))
        ),
        "the channel is told: {replies:#?}"
    );
}

/// The immediate answer has a deadline: a `/status` whose backend is slow
/// is acknowledged when the deadline comes (with nothing yet), and its
/// answer then goes to the channel when the backend gives it. A fast one
/// is answered in the acknowledgement, as before.
#[tokio::test]
async fn a_slow_status_is_acknowledged_at_the_deadline_and_answered_in_the_channel() {
    struct Slow;
    impl opsbot::action::Executor for Slow {
        fn execute<'a>(
            &'a self,
            _: &'a opsbot::config::Service,
            _: &'a opsbot::action::Action,
            _: &'a opsbot::action::RunContext,
            _: opsbot::action::Progress,
        ) -> opsbot::audit::BoxFuture<'a, Result<opsbot::action::Outcome, opsbot::action::ActionError>> {
            Box::pin(async { Err(opsbot::action::ActionError::Failed("not in this test".into())) })
        }
        fn status<'a>(
            &'a self,
            service: &'a opsbot::config::Service,
        ) -> opsbot::audit::BoxFuture<'a, Result<String, opsbot::action::ActionError>> {
            Box::pin(async move {
                if service.name == "slow" {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                if service.name == "broken" {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    panic!("a bug in a backend's status");
                }
                Ok(format!("{} runs v1", service.name))
            })
        }
    }
    let text = r#"
[environments.staging]
[groups]
developers = ["console:u0"]
[services.slow]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 1 }
[services.fast]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 1 }
[services.broken]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 1 }
[[rules]]
commands = ["read"]
environments = ["staging"]
requesters = ["developers"]
"#;
    let sink = Arc::new(RecordingSink::default());
    let engine = custom_engine(
        text,
        Some(Arc::new(Slow)),
        Arc::new(MemoryStore::default()),
        Arc::new(opsbot::audit::MemoryAuditLog::default()),
        sink.clone(),
    );
    let deadline = Duration::from_millis(200);
    let fast = engine.handle_collecting(command(user(0), "/status fast"), deadline).await;
    assert!(!fast.deferred);
    assert!(matches!(fast.replies.as_slice(), [Reply::Text(t)] if t.contains("fast runs v1")), "{fast:?}");

    let started = std::time::Instant::now();
    let slow = engine.handle_collecting(command(user(0), "/status slow"), deadline).await;
    assert!(started.elapsed() < Duration::from_millis(600), "acknowledged at the deadline: {:?}", started.elapsed());
    assert!(slow.deferred && slow.replies.is_empty(), "{slow:?}");
    assert!(sink.replies().is_empty(), "nothing yet");
    engine.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let replies = sink.replies();
    assert!(matches!(replies.as_slice(), [Reply::Text(t)] if t.contains("slow runs v1")), "{replies:#?}");

    // A deferred answer that ends in a panic still ends: the channel is
    // told there will be no answer, and the panic is counted.
    let broken = engine.handle_collecting(command(user(0), "/status broken"), deadline).await;
    assert!(broken.deferred);
    engine.wait_idle().await;
    let replies = sink.replies();
    assert!(matches!(replies.last(), Some(Reply::Text(t)) if t.contains("could not finish answering")), "{replies:#?}");
    assert_eq!(engine.health().request_panics(), 1);
}

/// `[people]` links one person's accounts across platforms: the requester
/// cannot approve their own request from another account, one person's two
/// accounts count as one approval, and `check` counts people, not accounts.
#[tokio::test]
async fn linked_accounts_are_one_person_for_self_approval_and_for_counting() {
    let text = r#"
[environments.production]
[groups]
everyone = ["console:u0", "console:u1", "console:u2", "slack:UALICE", "slack:UBOB"]
sre = ["console:u1", "console:u2", "slack:UALICE", "slack:UBOB"]
[people]
alice = ["console:u0", "slack:UALICE"]
bob = ["console:u1", "slack:UBOB"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1, step = "1ms" }
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["everyone"]
approvers = ["sre"]
approvals = 2
"#;
    let h = engine_with(text);
    let slack = |id: &str| Actor::parse(&format!("slack:{id}")).unwrap();
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    // Alice requested from the console; her Slack account is her too.
    h.engine.handle(vote(slack("UALICE"), true)).await;
    let refused = |replies: &[Reply], who: &str, what: &str| {
        replies.iter().any(|r| matches!(r, Reply::Private { to, text } if to.as_str() == who && text.contains(what)))
    };
    assert!(refused(&h.sink.replies(), "slack:UALICE", "your own request"), "{:#?}", h.sink.replies());
    // Bob approves from the console, then again from Slack: one approval.
    h.engine.handle(vote(user(1), true)).await;
    h.engine.handle(vote(slack("UBOB"), true)).await;
    assert!(refused(&h.sink.replies(), "slack:UBOB", "already voted"), "{:#?}", h.sink.replies());
    assert_eq!(intents(&h.audit), 0, "two accounts of one person are one approval of the two needed");
    // A second person's approval runs it.
    h.engine.handle(vote(user(2), true)).await;
    h.engine.wait_idle().await;
    assert_eq!(intents(&h.audit), 1);

    // `check` counts people: two accounts of one person cannot meet approvals = 2.
    let one_person = text.replace(
        r#"sre = ["console:u1", "console:u2", "slack:UALICE", "slack:UBOB"]"#,
        r#"sre = ["console:u1", "slack:UBOB"]"#,
    );
    let mut problems = Vec::new();
    let _ = config::from_str(Path::new("t.toml"), &one_person, &mut problems);
    assert!(problems.iter().any(|p| p.to_string().contains("hold 1 people")), "{problems:?}");
    // The request-time check counts people too: with alice's own Slack
    // account and bob as the only approvers, alice's request for two
    // approvals cannot be met, and is refused at once instead of waiting.
    let short = text.replace(
        r#"sre = ["console:u1", "console:u2", "slack:UALICE", "slack:UBOB"]"#,
        r#"sre = ["console:u1", "slack:UALICE"]"#,
    );
    let h = engine_with(&short);
    h.engine.handle(command(user(0), "/deploy api v2")).await;
    let replies = h.sink.replies();
    assert!(
        replies.iter().any(
            |r| matches!(r, Reply::Private { text, .. } if text.contains("only 1 eligible approver(s) besides you"))
        ),
        "{replies:#?}"
    );
    // An account belongs to one person.
    let twice = text.replace(r#"bob = ["console:u1", "slack:UBOB"]"#, r#"bob = ["console:u1", "slack:UALICE"]"#);
    let mut problems = Vec::new();
    let _ = config::from_str(Path::new("t.toml"), &twice, &mut problems);
    assert!(problems.iter().any(|p| p.to_string().contains("already one of alice's accounts")), "{problems:?}");
}

const ROLES: &str = r#"
[environments.production]
[discord]
mode = "http"
[discord.roles]
"900" = ["sre"]
"901" = ["developers"]
[groups]
developers = ["discord:10"]
sre = ["discord:21", "discord:22"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 1, step = "1ms" }
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["developers"]
approvers = ["sre"]
approvals = 2
"#;

fn discord(id: &str) -> Actor {
    Actor::parse(&format!("discord:{id}")).unwrap()
}

fn with_roles(event: Event, given: &[&str]) -> Event {
    let mut event = event;
    match &mut event {
        Event::Command { roles, .. } | Event::Vote { roles, .. } => {
            *roles = given.iter().map(|r| r.to_string()).collect()
        }
    }
    event
}

/// A vote allowed by a Discord role counts while the configuration maps the
/// role; once the mapping is removed (a restart with the new file), it no
/// longer does, as a member removed from a group no longer counts.
#[tokio::test]
async fn a_role_vote_counts_only_while_the_configuration_maps_the_role() {
    for revoked in [false, true] {
        let store = Arc::new(MemoryStore::default());
        let audit: Arc<dyn AuditLog> = Arc::new(opsbot::audit::MemoryAuditLog::default());
        let sink = Arc::new(RecordingSink::default());
        let before = custom_engine(ROLES, None, store.clone(), audit.clone(), sink.clone());
        before.handle(command(discord("10"), "/deploy api v2")).await;
        // discord:30 is in no group; its role 900 puts it in sre.
        before.handle(with_roles(vote(discord("30"), true), &["900"])).await;
        let text = if revoked { ROLES.replace("\"900\" = [\"sre\"]\n", "") } else { ROLES.to_string() };
        let after = custom_engine(&text, None, store.clone(), audit.clone(), sink.clone());
        after.handle(vote(discord("21"), true)).await;
        after.wait_idle().await;
        assert_eq!(intents(&audit), usize::from(!revoked), "revoked: {revoked}");
    }
}

/// A requester in a group only by a Discord role passes the re-check
/// before running: the request keeps the roles it was made with.
#[tokio::test]
async fn a_requester_by_role_passes_the_recheck_before_running() {
    let h = engine_with(ROLES);
    h.engine.handle(with_roles(command(discord("40"), "/deploy api v2"), &["901"])).await;
    h.engine.handle(vote(discord("21"), true)).await;
    h.engine.handle(vote(discord("22"), true)).await;
    h.engine.wait_idle().await;
    assert_eq!(intents(&h.audit), 1);
    // Without the role, the same person is refused outright.
    let h = engine_with(ROLES);
    h.engine.handle(command(discord("40"), "/deploy api v2")).await;
    assert!(h
        .sink
        .replies()
        .iter()
        .any(|r| matches!(r, Reply::Private { text, .. } if text.contains("not in any group"))));
}
