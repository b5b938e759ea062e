//! After a change, the outcome is what reading the live state shows — or
//! unknown when it cannot be read — never a ❌ for something that happened.

use super::{aws_env, run_console, scripted, EcsBot, Health, Setup};
use crate::aws_proxy::AwsProxy;
use crate::fake_ecs::Behaviour;

#[test]
fn a_completed_deploy_is_a_success_even_if_its_task_definition_cannot_be_read_again() {
    let (fake, bot) = scripted(Behaviour::Completes, "10s", false);
    let proxy = AwsProxy::start(&fake.url);
    proxy.fail_after("UpdateService", "DescribeTaskDefinition", 400, "ThrottlingException", "Rate exceeded");
    let out = run_console(&bot, &["/deploy api-ecs v8.0.0"], &aws_env(&proxy.url));
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v8.0.0 (api:8)"), "{out}");
    assert_eq!(fake.running(), "api:8");
    let records = bot.export(&["--request", "r-1"]);
    let live = records.iter().find(|r| r["kind"] == "outcome").map(|r| r["live"].clone()).unwrap();
    assert_eq!((live["revision"].as_str(), live["image"].as_str()), (Some("api:8"), Some("repo/api:v8.0.0")));
    assert_eq!(live["deployment"], fake.deployments()[0].0.as_str());
}

#[test]
fn every_traffic_step_sent_but_the_listener_unreadable_is_unknown_not_failed() {
    let health = Health::start();
    let url = health.url("healthy");
    let eb = EcsBot::new(Setup { blue_url: url.clone(), green_url: url, steps: "[]" });
    eb.proxy.fail_after("ModifyListener", "DescribeListeners", 400, "Throttling", "Rate exceeded");
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("❔ r-1: unknown: every traffic step to green was sent and acknowledged, but the listener could not be read back (AWS kept throttling elasticloadbalancing:DescribeListeners"),
        "{out}"
    );
    assert_eq!(eb.outcome("r-1"), "unknown");
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)], "traffic did move");
}

fn smoke_fails_after_the_first_step() -> (Health, EcsBot) {
    let health = Health::start();
    // Green passes the smoke test before traffic moves, then fails it at 50%.
    let eb = EcsBot::new(Setup { blue_url: health.url("healthy"), green_url: health.url("once"), steps: "[50, 100]" });
    (health, eb)
}

#[test]
fn a_smoke_failure_mid_switch_moves_traffic_back_and_says_where_it_is_as_read_back() {
    let (_health, eb) = smoke_fails_after_the_first_step();
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("❌ r-1: smoke test of")
            && out.contains("answered 503")
            && out.contains("switched back: the listener forwards blue 100%, green 0%; blue runs web-blue:1"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
}

#[test]
fn a_switch_back_that_cannot_be_read_back_is_unknown() {
    let (_health, eb) = smoke_fails_after_the_first_step();
    eb.proxy.fail_after("ModifyListener", "DescribeListeners", 400, "Throttling", "Rate exceeded");
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("❔ r-1: unknown: smoke test of")
            && out
                .contains("all traffic was sent back to blue (acknowledged), but the listener could not be read back"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
}
