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

fn updates(fake: &crate::fake_ecs::FakeEcs) -> usize {
    fake.calls().iter().filter(|c| *c == "UpdateService").count()
}

#[test]
fn a_rollout_that_never_settles_is_unknown_at_the_deadline_and_not_rolled_back() {
    let (fake, bot) = scripted(Behaviour::Hangs, "300ms", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(
        out.contains("❔ r-1: unknown: deploy of repo/api:v8.0.0 was applied: deployment ecs-svc/1001 is still rolling out after 300ms: 0/2 tasks running (IN_PROGRESS); none of its tasks stopped")
            && out.contains("nothing was rolled back; check ECS service api"),
        "{out}"
    );
    assert_eq!(outcome(&bot, "r-1"), "unknown");
    assert_eq!(updates(&fake), 1, "no automatic rollback of a rollout that did not fail");
    assert_eq!(fake.running(), "api:8");
    let deployments = fake.deployments();
    assert_eq!((deployments[0].0.as_str(), deployments[0].3.as_str()), ("ecs-svc/1001", "IN_PROGRESS"));
}

#[test]
fn a_restart_that_never_settles_is_unknown_and_not_sent_again() {
    let (fake, bot) = scripted(Behaviour::Hangs, "300ms", false);
    let out = run_console(&bot, &["/restart api-ecs"], &aws_env(&fake.url));
    assert!(
        out.contains(
            "❔ r-1: unknown: restart of api-ecs was applied: deployment ecs-svc/1001 is still rolling out after 300ms"
        ),
        "{out}"
    );
    assert_eq!(updates(&fake), 1);
    let ids: Vec<String> = fake.deployments().into_iter().map(|d| d.0).collect();
    assert_eq!(ids, ["ecs-svc/1001", "ecs-svc/1000"], "the forced deployment runs on beside the old one");
}

#[test]
fn tasks_of_the_deployment_stopping_by_the_deadline_fail_it_and_it_is_rolled_back() {
    let (fake, bot) = scripted(Behaviour::Stalls, "600ms", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    let line = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        line.contains(
            "deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 did not complete within 600ms; stopped tasks: "
        ) && line.contains("Essential container in task exited")
            && line.contains("rolled back automatically to api:7"),
        "{out}"
    );
    assert_eq!(updates(&fake), 2);
    assert_eq!(fake.running(), "api:7");
}

#[test]
fn a_circuit_breaker_rollback_opsbot_never_saw_fail_is_reported_as_such_not_as_superseded() {
    let (fake, bot) = scripted(Behaviour::CircuitBreakerQuick, "10s", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    let line = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        line.contains("deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 failed and is gone; stopped tasks: ")
            && line.contains("(service api) (deployment ecs-svc/1001) deployment failed: tasks failed to start.")
            && line.contains(
                "the deployment circuit breaker rolled the service back to api:7, which runs now (2/2 tasks)"
            ),
        "{out}"
    );
    assert!(!line.contains("superseded"), "{out}");
    assert_eq!(updates(&fake), 1, "no second rollback on top of the circuit breaker's");
    assert_eq!(fake.running(), "api:7");
}

#[test]
fn a_deployment_that_vanished_without_a_trace_is_unknown() {
    let (fake, bot) = scripted(Behaviour::ReplacedQuickly, "10s", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(
        out.contains("❔ r-1: unknown: deploy of repo/api:v8.0.0 was applied, but deployment ecs-svc/1001 is no longer listed and nothing says whether it completed before another replaced it or failed; the service runs api:8 now (2/2 tasks)"),
        "{out}"
    );
    assert_eq!(updates(&fake), 1, "nothing rolled back");
    assert_eq!(fake.deployments()[0].0, "ecs-svc/1002");
}

#[test]
fn an_automatic_rollback_that_cannot_be_settled_is_unknown_not_failed_too() {
    let (fake, bot) = scripted(Behaviour::Fails, "10s", true);
    let proxy = crate::aws_proxy::AwsProxy::start(&fake.url);
    // The rollback's update lands, its answer is lost, and the service can no longer be read.
    proxy.land_then_fail_nth("UpdateService", 2, 500, "ServerException", "Internal error.");
    proxy.fail_after_nth("UpdateService", 2, "DescribeServices", 400, "AccessDeniedException", "not authorized");
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&proxy.url));
    let line = out.lines().find(|l| l.starts_with("❔ r-1")).unwrap_or_default();
    assert!(
        line.contains("deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 failed: ECS deployment circuit breaker: tasks failed to start.")
            && line.contains("the automatic rollback to api:7 may or may not have been applied")
            && line.contains("the service cannot be read"),
        "{out}"
    );
    assert!(!out.contains("failed too"), "{out}");
    assert_eq!(outcome(&bot, "r-1"), "unknown");
    assert_eq!(fake.running(), "api:7", "the rollback did land");
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

#[test]
fn a_deploy_whose_rollback_target_is_deregistered_says_automatic_rollback_is_off_and_tries_none() {
    let (fake, bot) = scripted(Behaviour::Fails, "10s", true);
    fake.deregister("api:7");
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(
        out.contains("automatic rollback is off for this deploy: api:7 (what runs now) is deregistered (INACTIVE)"),
        "{out}"
    );
    assert!(
        out.contains("❌ r-1: deploy of repo/api:v8.0.0 failed: deployment ecs-svc/1001 failed")
            && out.contains("no automatic rollback: api:7 is deregistered (INACTIVE) and ECS starts no tasks from it"),
        "{out}"
    );
    assert_eq!(updates(&fake), 1, "no rollback ECS would refuse");
    assert_eq!(fake.running(), "api:8");
}

#[test]
fn a_deployment_another_writer_replaces_mid_rollout_is_superseded_and_left_alone() {
    let (fake, bot) = scripted(Behaviour::Superseded, "10s", true);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&fake.url));
    assert!(
        out.contains("❌ r-1: deploy of repo/api:v8.0.0 did not finish: superseded: deployment ecs-svc/1001 was replaced by deployment ecs-svc/1002 of api:8 before it completed"),
        "{out}"
    );
    assert_eq!(updates(&fake), 1, "no automatic rollback of another writer's deployment");
    assert_eq!(fake.deployments()[0].0, "ecs-svc/1002");
}
