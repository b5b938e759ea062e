//! The leader's term as a fencing token on Deployment writes (issue #18):
//! the Kubernetes backend run in-process, in a chosen term, against the fake,
//! as a leader and the leader it deposed would run it. What counts is what
//! the fake holds: a deposed leader's write never lands.

use super::k8s_config;
use crate::fake_k8s::FakeK8s;
use opsbot::action::kubernetes::{Kubernetes, TERM};
use opsbot::action::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use opsbot::config::{self, Service};
use std::path::Path;
use std::time::Duration;

const V1: &str = "registry.example.com/api:v1.0.0";

struct Cluster {
    k8s: FakeK8s,
    backend: Kubernetes,
    service: Service,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let k8s = FakeK8s::start();
        k8s.add_deployment("shop", "api", "app", V1, 2);
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Vec::new();
        let config = config::from_str(Path::new("t.toml"), &k8s_config(&["api-k8s"]), &mut problems)
            .unwrap_or_else(|| panic!("{problems:?}"));
        let service = config.services["api-k8s"].clone();
        let backend = Kubernetes::with_kubeconfig(k8s.kubeconfig(dir.path()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Cluster { k8s, backend, service, runtime, dir }
    }

    /// `action` as the leader of `term` runs it.
    fn run(&self, action: Action, term: u64) -> Result<Outcome, ActionError> {
        self.runtime.block_on(run_in(&self.backend, &self.service, action, term))
    }

    fn term(&self) -> Option<String> {
        self.k8s.deployment("shop", "api")["metadata"]["labels"][TERM].as_str().map(str::to_string)
    }

    fn patches(&self) -> usize {
        self.k8s.requests().iter().filter(|(m, p)| m == "PATCH" && p.ends_with("/deployments/api")).count()
    }
}

async fn run_in(backend: &Kubernetes, service: &Service, action: Action, term: u64) -> Result<Outcome, ActionError> {
    let (progress, mut milestones) = Progress::channel(8);
    let drain = tokio::spawn(async move { while milestones.recv().await.is_some() {} });
    let context = RunContext {
        request_id: format!("r-term{term}"),
        requester: "slack:UALICE".into(),
        term: Some(term),
        ..RunContext::default()
    };
    let result = backend.execute(service, &action, &context, progress).await;
    drain.await.unwrap();
    result
}

#[test]
fn each_leaders_writes_carry_its_term_and_a_newer_term_is_not_refused() {
    let c = Cluster::new();
    c.run(Action::Scale { replicas: 3 }, 1).unwrap();
    assert_eq!(c.term().as_deref(), Some("1"));
    assert_eq!(c.k8s.deployment("shop", "api")["spec"]["replicas"], 3);
    // The next leader writes over the old term.
    c.run(Action::Deploy { version: "v2.0.0".into() }, 2).unwrap();
    assert_eq!(c.term().as_deref(), Some("2"));
    assert_eq!(c.k8s.image("shop", "api"), "registry.example.com/api:v2.0.0");
    c.run(Action::Rollback { revision: None }, 2).unwrap();
    assert_eq!(c.k8s.image("shop", "api"), V1);
    assert_eq!(c.term().as_deref(), Some("2"), "a rollback keeps the term, not the old revision's");
}

#[test]
fn a_deposed_leaders_writes_are_refused_and_change_nothing() {
    let c = Cluster::new();
    // The new leader (term 2) marks the Deployment when it takes over, and
    // deploys.
    let marked = c.runtime.block_on(c.backend.fence(&c.service, 2)).unwrap();
    assert_eq!(marked.as_deref(), Some("deployment shop/api now carries term 2"));
    assert_eq!(c.term().as_deref(), Some("2"));
    c.run(Action::Deploy { version: "v2.0.0".into() }, 2).unwrap();
    let before = c.k8s.deployment("shop", "api");
    let patches = c.patches();
    for action in [
        Action::Deploy { version: "v3.0.0".into() },
        Action::Restart,
        Action::Scale { replicas: 5 },
        Action::Rollback { revision: Some(1) },
    ] {
        let verb = action.verb();
        match c.run(action, 1) {
            Err(ActionError::Failed(text)) => assert!(
                text.contains("refused: deployment shop/api was written by opsbot's leader in term 2, after this replica's term 1; this replica no longer leads, and nothing was changed"),
                "{verb}: {text}"
            ),
            other => panic!("{verb}: {other:?}"),
        }
    }
    assert_eq!(c.patches(), patches, "no write was sent");
    assert_eq!(c.k8s.requests().iter().filter(|(m, _)| m == "PUT").count(), 0);
    let after = c.k8s.deployment("shop", "api");
    assert_eq!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"], "nothing changed");
    assert_eq!(c.k8s.image("shop", "api"), "registry.example.com/api:v2.0.0");
    // Marking again in the same term changes nothing.
    let again = c.runtime.block_on(c.backend.fence(&c.service, 2)).unwrap();
    assert_eq!(again.as_deref(), Some("deployment shop/api already carries term 2"));
}

/// The deposed leader read the Deployment before its successor marked it:
/// its write, conditional on what it read, gets 409, and its second look
/// finds the newer term.
#[test]
fn a_term_that_began_between_a_read_and_its_write_refuses_the_write() {
    let c = Cluster::new();
    let backend = Kubernetes::with_kubeconfig(c.k8s.kubeconfig(c.dir.path()));
    // Its client made (one read), the restart's first read is answered at
    // once, its read before the write only after 0.8 s (within the call timeout): the
    // successor marks the Deployment meanwhile.
    let (healthy, _) = c.runtime.block_on(backend.healthy(&c.service)).unwrap();
    assert!(healthy);
    let gets = || c.k8s.requests().iter().filter(|(m, _)| m == "GET").count();
    let before = gets();
    c.k8s.slow_nth("get", 2, Duration::from_millis(800));
    let late = {
        let service = c.service.clone();
        c.runtime.spawn(async move { run_in(&backend, &service, Action::Restart, 1).await })
    };
    // The restart's second read has arrived (and is held): the mark now.
    super::wait_until("the restart's read before its write", || gets() >= before + 2);
    c.runtime.block_on(c.backend.fence(&c.service, 2)).unwrap();
    let result = c.runtime.block_on(late).unwrap();
    match result {
        Err(ActionError::Failed(text)) => {
            assert!(text.contains("refused: deployment shop/api was written by opsbot's leader in term 2"), "{text}")
        }
        other => panic!("{other:?}"),
    }
    let d = c.k8s.deployment("shop", "api");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_null(),
        "the late restart did not land: {d}"
    );
    assert_eq!(c.term().as_deref(), Some("2"));
    // Its write was sent once, refused (409), and not sent again.
    assert_eq!(c.patches(), 2, "the mark and the refused write");
}
