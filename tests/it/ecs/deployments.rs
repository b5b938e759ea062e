//! The deployment opsbot follows is the one its UpdateService started: new
//! (not among the deployments before), on the task definition it set. Never
//! the deployment that was already there, COMPLETED on the old revision.

use super::{EcsBot, Health, Moto, Setup};
use serde_json::Value;

/// (id, status, task definition, rollout state) of a service's deployments in moto.
fn deployments(state: &Value, service: &str) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    state["services"][service]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (text(&d["id"]), text(&d["status"]), text(&d["taskDefinition"]), text(&d["rolloutState"])))
        .collect()
}

/// The live facts opsbot recorded for `request`.
fn facts(eb: &EcsBot, request: &str) -> Value {
    let records = eb.bot.export(&["--request", request]);
    records.iter().find(|r| r["kind"] == "outcome").map(|r| r["live"].clone()).unwrap_or(Value::Null)
}

#[test]
fn where_update_service_starts_no_new_deployment_a_deploy_is_unknown_never_success() {
    // moto as it is: UpdateService only points the service at api:2; its one
    // deployment stays the old one, COMPLETED on api:1.
    let eb = EcsBot::against(Moto::start_unpatched(), Setup::plain());
    eb.set_rollout_timeout("1s");
    let before = deployments(&eb.state(), "api");
    let out = eb.console(&["/deploy api-ecs v2.0.0"]);
    assert!(
        out.contains("❔ r-1: unknown: ecs:UpdateService was answered, but ECS service api shows no new deployment of api:2 (its deployments: ")
            && out.contains("opsbot cannot follow a rollout it cannot see"),
        "{out}"
    );
    assert_eq!(eb.outcome("r-1"), "unknown");
    let after = deployments(&eb.state(), "api");
    assert_eq!(after, before, "the only deployment is still the old one: {after:?}");
    assert_eq!(after[0].2, "api:1");
}

#[test]
fn each_change_is_judged_on_the_new_deployment_it_started() {
    let eb = EcsBot::new(Setup::plain());
    let before = deployments(&eb.state(), "api");
    let out = eb.console(&["/deploy api-ecs v2.0.0"]);
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v2.0.0 (api:2)"), "{out}");
    let after = deployments(&eb.state(), "api");
    assert_eq!(after.len(), 1, "{after:?}");
    let (id, status, definition, state) = &after[0];
    assert!(!before.iter().any(|d| &d.0 == id), "a new deployment: {before:?} → {after:?}");
    assert_eq!((status.as_str(), definition.as_str(), state.as_str()), ("PRIMARY", "api:2", "COMPLETED"));
    assert_eq!(facts(&eb, "r-1")["deployment"], id.as_str(), "the one opsbot followed and recorded");

    let out = eb.console(&["/restart api-ecs"]);
    assert!(out.contains("✅ r-2: api-ecs restarted (api:2)"), "{out}");
    let restarted = deployments(&eb.state(), "api");
    assert_ne!(restarted[0].0, *id, "a new deployment was forced");
    assert_eq!(facts(&eb, "r-2")["deployment"], restarted[0].0.as_str());
}

#[test]
fn a_blue_green_deploy_whose_new_tasks_fail_to_start_moves_no_traffic() {
    let health = Health::start();
    let url = health.url("healthy");
    let eb = EcsBot::new(Setup { blue_url: url.clone(), green_url: url, steps: "[]" });
    let out = eb.console(&["/deploy web-bg v3.0.0-crash"]);
    let line = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        line.contains("preparing green (web-green) failed: deployment ecs-svc/")
            && line.contains("failed: ECS deployment circuit breaker: tasks failed to start. (3 task(s) failed)")
            && line.contains("traffic stays on blue"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)], "no traffic moved");
    let green = deployments(&eb.state(), "web-green");
    assert_eq!((green[0].2.as_str(), green[0].3.as_str()), ("web-green:2", "FAILED"), "{green:?}");
    assert!(!eb.proxy.calls().iter().any(|c| c == "ModifyListener"));
}
