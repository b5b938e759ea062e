//! Following the deployment opsbot started, against the scripted ECS API:
//! success only when that deployment completes on the revision opsbot set.

use super::{aws_env, run_console, scripted};
use crate::fake_ecs::Behaviour;
use serde_json::json;
use std::time::Duration;

fn outcome(bot: &crate::support::Bot, request: &str) -> String {
    let steps = crate::support::steps(&bot.export(&[]), request);
    steps.iter().rev().find(|(kind, _)| kind == "outcome").map(|(_, o)| o.clone()).unwrap_or_default()
}

#[test]
fn rollout_waiting_reports_progress_until_the_new_deployment_completes() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let out = run_console(&bot, &["/restart api-ecs"], &aws_env(&fake.url));
    assert!(
        out.contains("api: 0/2 tasks running (IN_PROGRESS)") && out.contains("api: 1/2 tasks running (IN_PROGRESS)"),
        "{out}"
    );
    assert!(out.contains("✅ r-1: api-ecs restarted (api:7)"), "{out}");
    let deployments = fake.deployments();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!((deployments[0].1.as_str(), deployments[0].3.as_str()), ("PRIMARY", "COMPLETED"));
    assert_ne!(deployments[0].0, "ecs-svc/1000", "a new deployment ran");
}

#[test]
fn a_deploy_the_circuit_breaker_rolls_back_is_a_failure_with_reasons_and_what_runs_now() {
    let (fake, bot) = scripted(Behaviour::CircuitBreaker, "10s", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    let outcome_line = out.lines().find(|l| l.starts_with("❌ r-1") || l.starts_with("✅ r-1")).unwrap_or_default();
    assert!(
        outcome_line.starts_with(
            "❌ r-1: deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 failed: ECS deployment circuit breaker: tasks failed to start. (3 task(s) failed)"
        ),
        "{out}"
    );
    assert!(
        outcome_line.contains("stopped tasks: ") && outcome_line.contains("Essential container in task exited"),
        "{out}"
    );
    assert!(outcome_line.contains("recent events: (service api) rolling back to deployment ecs-svc/1000."), "{out}");
    assert!(
        outcome_line
            .contains("the deployment circuit breaker rolled the service back to api:7, which runs now (2/2 tasks)"),
        "{out}"
    );
    assert_eq!(fake.running(), "api:7", "the service runs the old revision");
    let definitions = fake.definitions();
    assert_eq!(definitions.last().unwrap().0, "api:8");
    assert_eq!(definitions.last().unwrap().1, "repo/api:v8.0.0");
    assert_eq!(definitions.last().unwrap().2, json!([{"key": "team", "value": "payments"}]), "tags carried over");
    let updates = fake.calls().iter().filter(|c| *c == "UpdateService").count();
    assert_eq!(updates, 1, "no second rollback on top of the circuit breaker's");
    assert_eq!(outcome(&bot, "r-1"), "failed");
}

#[test]
fn a_failed_deployment_without_a_circuit_breaker_rollback_is_rolled_back_by_policy() {
    let (fake, bot) = scripted(Behaviour::Fails, "10s", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(
        out.contains("❌ r-1: deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 failed: ECS deployment circuit breaker: tasks failed to start.")
            && out.contains("stopped tasks: ")
            && out.contains("rolled back automatically to api:7"),
        "{out}"
    );
    assert_eq!(fake.running(), "api:7");
    assert_eq!(fake.calls().iter().filter(|c| *c == "UpdateService").count(), 2, "opsbot rolled back itself");
}

#[test]
fn a_rollout_that_never_settles_times_out() {
    let (fake, bot) = scripted(Behaviour::Hangs, "300ms", false);
    let out = run_console(&bot, &["/restart api-ecs"], &aws_env(&fake.url));
    assert!(
        out.contains("❌ r-1: restart of api-ecs failed: timed out after 300ms waiting for api to become stable"),
        "{out}"
    );
}

#[test]
fn an_update_whose_answer_is_lost_is_settled_from_the_live_state() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    fake.slow_next("UpdateService", Duration::from_secs(30));
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(out.contains("AWS did not answer ecs:UpdateService within 1s; re-read: the update was applied"), "{out}");
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v8.0.0 (api:8)"), "{out}");
    assert_eq!(fake.running(), "api:8");
    assert_eq!(fake.calls().iter().filter(|c| *c == "UpdateService").count(), 1, "not sent twice");
    assert_eq!(outcome(&bot, "r-1"), "succeeded");
}
