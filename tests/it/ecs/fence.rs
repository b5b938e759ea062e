//! The leader's term on ECS writes (issue #18): the ECS backend run
//! in-process, in a chosen term, against moto, as a leader and the leader it
//! deposed would run it; moto's state read back with boto3.

use super::{ecs_config, python, Moto, Setup};
use opsbot::action::ecs::Ecs;
use opsbot::action::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use opsbot::config::{self, Config};
use serde_json::Value;
use std::path::Path;

struct Aws {
    moto: Moto,
    arns: Value,
    backend: Ecs,
    config: Config,
    runtime: tokio::runtime::Runtime,
}

impl Aws {
    fn new() -> Aws {
        let moto = Moto::start();
        let arns = python("ecs_seed.py", &moto.url, &[]);
        let mut problems = Vec::new();
        let text = ecs_config(arns["listener"].as_str().unwrap(), &Setup::plain());
        let config =
            config::from_str(Path::new("t.toml"), &text, &mut problems).unwrap_or_else(|| panic!("{problems:?}"));
        let backend = Ecs::with_endpoint(&moto.url, "test", "test");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Aws { moto, arns, backend, config, runtime }
    }

    fn run(&self, service: &str, action: Action, term: u64) -> Result<Outcome, ActionError> {
        let service = &self.config.services[service];
        self.runtime.block_on(async {
            let (progress, mut milestones) = Progress::channel(8);
            let drain = tokio::spawn(async move { while milestones.recv().await.is_some() {} });
            let context = RunContext { request_id: format!("r-term{term}"), term: Some(term), ..RunContext::default() };
            let result = self.backend.execute(service, &action, &context, progress).await;
            drain.await.unwrap();
            result
        })
    }

    fn fence(&self, service: &str, term: u64) -> Option<String> {
        self.runtime.block_on(self.backend.fence(&self.config.services[service], term)).unwrap()
    }

    fn state(&self) -> Value {
        python("ecs_query.py", &self.moto.url, &[self.arns["listener"].as_str().unwrap()])
    }
}

/// The term tags a service carries, as moto holds them.
fn term_tags(service: &Value) -> Vec<String> {
    let tags = service["tags"].as_object().unwrap();
    tags.keys().filter(|k| k.starts_with("opsbot:term")).cloned().collect()
}

fn refused(result: Result<Outcome, ActionError>, service: &str) {
    match result {
        Err(ActionError::Failed(text)) => assert!(
            text.contains(&format!("refused: ECS service {service} was written by opsbot's leader in term 2, after this replica's term 1; this replica no longer leads, and nothing was changed")),
            "{text}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ecs_writes_carry_the_term_and_a_deposed_leaders_writes_are_refused() {
    let aws = Aws::new();
    // Term 1 leads: its write tags the service.
    aws.run("api-ecs", Action::Scale { replicas: 3 }, 1).unwrap();
    let api = &aws.state()["services"]["api"];
    assert_eq!(api["desiredCount"], 3);
    assert_eq!(term_tags(api), ["opsbot:term:1"]);
    // Term 2 takes over and marks it; term 1's late writes are refused.
    assert_eq!(aws.fence("api-ecs", 2).as_deref(), Some("ECS service api now carries term 2"));
    let definition = aws.state()["services"]["api"]["taskDefinition"].clone();
    refused(aws.run("api-ecs", Action::Scale { replicas: 5 }, 1), "api");
    refused(aws.run("api-ecs", Action::Deploy { version: "v9".into() }, 1), "api");
    refused(aws.run("api-ecs", Action::Restart, 1), "api");
    let api = &aws.state()["services"]["api"];
    assert_eq!(api["desiredCount"], 3, "nothing changed");
    assert_eq!(api["taskDefinition"], definition, "nothing changed");
    // Term 2's own writes go on; term 1's tag is gone, term 2's stays.
    aws.run("api-ecs", Action::Scale { replicas: 4 }, 2).unwrap();
    let api = &aws.state()["services"]["api"];
    assert_eq!(api["desiredCount"], 4);
    assert_eq!(term_tags(api), ["opsbot:term:2"]);
    assert_eq!(aws.fence("api-ecs", 2).as_deref(), Some("ECS service api already carries term 2"));
}

/// A deposed leader that tags after its successor adds its own older key:
/// the newer one stays, and refuses its next write.
#[test]
fn a_late_tag_from_a_deposed_leader_does_not_undo_the_fence() {
    let aws = Aws::new();
    assert_eq!(aws.fence("api-ecs", 3).as_deref(), Some("ECS service api now carries term 3"));
    // As if term 2 had read before term 3's tag and tagged after it.
    python("ecs_poke.py", &aws.moto.url, &["tag-service", "api", "opsbot:term:2"]);
    let mut tags = term_tags(&aws.state()["services"]["api"]);
    tags.sort();
    assert_eq!(tags, ["opsbot:term:2", "opsbot:term:3"]);
    match aws.run("api-ecs", Action::Scale { replicas: 5 }, 2) {
        Err(ActionError::Failed(text)) => assert!(text.contains("written by opsbot's leader in term 3"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(aws.state()["services"]["api"]["desiredCount"], 2);
}

#[test]
fn a_deposed_leader_cannot_move_blue_green_traffic() {
    let aws = Aws::new();
    let before = aws.state();
    assert_eq!(
        aws.fence("web-bg", 2).as_deref(),
        Some("ECS service web-blue now carries term 2; ECS service web-green now carries term 2")
    );
    refused(aws.run("web-bg", Action::Scale { replicas: 3 }, 1), "web-blue");
    let after = aws.state();
    assert_eq!(after["listener"], before["listener"], "the listener did not move");
    for colour in ["web-blue", "web-green"] {
        assert_eq!(after["services"][colour]["desiredCount"], before["services"][colour]["desiredCount"]);
        assert_eq!(term_tags(&after["services"][colour]), ["opsbot:term:2"]);
    }
}
