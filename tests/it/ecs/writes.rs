//! Writes are sent once by the SDK (it would re-send a write whose answer
//! was lost, starting another deployment or registering another revision),
//! and a lost or unreadable answer is settled by re-reading what AWS holds.
//! Against the scripted ECS API behind the fault proxy; each test counts
//! what reached the API and what it holds.

use super::{aws_env, run_console, scripted};
use crate::aws_proxy::AwsProxy;
use crate::fake_ecs::Behaviour;

fn count(calls: &[String], action: &str) -> usize {
    calls.iter().filter(|c| *c == action).count()
}

fn outcome(bot: &crate::support::Bot, request: &str) -> String {
    let steps = crate::support::steps(&bot.export(&[]), request);
    steps.iter().rev().find(|(kind, _)| kind == "outcome").map(|(_, o)| o.clone()).unwrap_or_default()
}

#[test]
fn a_restart_whose_answer_is_lost_after_it_landed_starts_exactly_one_deployment() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    proxy.land_then_fail_nth("UpdateService", 1, 500, "InternalFailure", "We encountered an internal error.");
    let out = run_console(&bot, &["/restart api-ecs"], &aws_env(&proxy.url));
    assert!(
        out.contains("AWS answered ecs:UpdateService with a server error (InternalFailure: We encountered an internal error.); re-read: the update was applied"),
        "{out}"
    );
    assert!(out.contains("✅ r-1: api-ecs restarted (api:7)"), "{out}");
    assert_eq!(count(&fake.calls(), "UpdateService"), 1, "sent once");
    let deployments = fake.deployments();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0].0, "ecs-svc/1001", "one forced deployment, the one opsbot followed");
}

#[test]
fn a_forced_restart_whose_answer_is_lost_before_it_landed_is_unknown_and_never_sent_twice() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    proxy.fail_nth("UpdateService", 1, 503, "ServiceUnavailableException", "Service unavailable.");
    let out = run_console(&bot, &["/restart api-ecs"], &aws_env(&proxy.url));
    assert!(
        out.contains("❔ r-1: unknown: AWS answered ecs:UpdateService with a server error (ServiceUnavailableException: Service unavailable.); re-read: not applied yet, but it may still take effect; check ECS service api before trying again"),
        "{out}"
    );
    assert_eq!(count(&proxy.calls(), "UpdateService"), 1, "no second forced deployment");
    assert_eq!(fake.deployments()[0].0, "ecs-svc/1000", "nothing new started");
    assert_eq!(outcome(&bot, "r-1"), "unknown");
}

#[test]
fn an_update_answer_cut_off_mid_body_is_settled_from_the_live_state() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    proxy.truncate_nth("UpdateService", 1);
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&proxy.url));
    assert!(out.contains("re-read: the update was applied"), "{out}");
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v8.0.0 (api:8)"), "{out}");
    assert_eq!(count(&fake.calls(), "UpdateService"), 1, "sent once");
    assert_eq!(fake.running(), "api:8");
}

#[test]
fn a_registration_whose_answer_is_lost_registers_one_revision() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    proxy.land_then_fail_nth("RegisterTaskDefinition", 1, 500, "ServerException", "Internal error.");
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&proxy.url));
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v8.0.0 (api:8)"), "{out}");
    let revisions: Vec<String> = fake.definitions().into_iter().map(|(name, ..)| name).collect();
    assert_eq!(revisions, ["api:7", "api:8"], "no duplicate registered");
    assert_eq!(fake.running(), "api:8");
}

#[test]
fn an_update_still_not_seen_after_its_last_lost_answer_is_unknown_not_failed() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    for n in 1..=3 {
        proxy.fail_nth("UpdateService", n, 500, "ServerException", "Internal error.");
    }
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&proxy.url));
    assert!(
        out.contains("❔ r-1: unknown: AWS answered ecs:UpdateService with a server error (ServerException: Internal error.); re-read: not applied yet, but it may still take effect"),
        "{out}"
    );
    assert_eq!(count(&proxy.calls(), "UpdateService"), 3, "three tries, each after a re-read");
    assert_eq!(fake.running(), "api:7");
    assert_eq!(outcome(&bot, "r-1"), "unknown");
}
