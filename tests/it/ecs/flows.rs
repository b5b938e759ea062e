//! The ordinary ECS flows against moto.

use super::{image, EcsBot, Health, Setup};
use serde_json::json;

#[test]
fn ecs_deploy_registers_one_revision_with_only_the_image_changed_and_is_idempotent() {
    let eb = EcsBot::new(Setup::plain());
    let out = eb.console(&["/deploy api-ecs v2.0.0", "/wait", "/deploy api-ecs v2.0.0", "/wait", "/status api-ecs"]);
    assert!(out.contains("✅ r-1: api-ecs runs repo/api:v2.0.0 (api:2)"), "{out}");
    assert!(out.contains("api already runs api:2; nothing to update"), "the duplicate changed nothing: {out}");
    let state = eb.state();
    let definitions = state["definitions"]["api"].as_array().unwrap();
    assert_eq!(definitions.len(), 2, "exactly one new revision");
    let (old, new) = (&definitions[0], &definitions[1]);
    assert_eq!(image(old, "app"), "repo/api:v1.0.0");
    assert_eq!(image(new, "app"), "repo/api:v2.0.0");
    let mut without_image = new.clone();
    for c in without_image.as_array_mut().unwrap() {
        if c["name"] == "app" {
            c["image"] = json!("repo/api:v1.0.0");
        }
    }
    assert_eq!(&without_image, old, "only the image changed");
    assert_eq!(state["tags"]["api"][1], state["tags"]["api"][0], "the tags came along");
    assert_eq!(state["tags"]["api"][1], json!([["cost-centre", "42"], ["team", "payments"]]));
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("task-definition/api:2"));
    assert!(out.contains("api in prod: api:2 (repo/api:v2.0.0)"), "{out}");
}

#[test]
fn ecs_restart_rollback_and_scale() {
    let eb = EcsBot::new(Setup::plain());
    let before = eb.state()["services"]["api"]["deploymentIds"].clone();
    let out = eb.console(&[
        "/restart api-ecs",
        "/wait",
        "/deploy api-ecs v2.0.0",
        "/wait",
        "/rollback api-ecs",
        "/wait",
        "/scale api-ecs 5",
        "/wait",
    ]);
    assert!(out.contains("✅ r-1: api-ecs restarted (api:1)"), "{out}");
    assert!(out.contains("✅ r-3: api-ecs rolled back to api:1 (repo/api:v1.0.0)"), "{out}");
    assert!(out.contains("✅ r-4: api-ecs runs 5 tasks of api:1"), "{out}");
    let state = eb.state();
    assert_ne!(state["services"]["api"]["deploymentIds"], before, "a new deployment was forced");
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("task-definition/api:1"));
    assert_eq!(state["services"]["api"]["desiredCount"], 5);
}

#[test]
fn blue_green_switches_in_weighted_steps_after_a_smoke_test_and_switches_back_on_rollback() {
    let health = Health::start();
    let healthy = health.url("healthy");
    let eb = EcsBot::new(Setup { blue_url: healthy.clone(), green_url: healthy, steps: "[50, 100]" });
    let out = eb.console(&["/status web-bg", "/deploy web-bg v2.0.0", "/wait", "/status web-bg"]);
    assert!(out.contains("blue-green: blue is live, green idle"), "{out}");
    assert!(out.contains("blue is live; deploying to idle green (web-green)"), "{out}");
    assert!(out.contains("50% of traffic on green") && out.contains("100% of traffic on green"), "{out}");
    assert!(out.contains("smoke test passed"), "{out}");
    assert!(out.contains("✅ r-1: green is live with repo/web:v2.0.0 (was blue)"), "{out}");
    assert!(out.contains("blue-green: green is live, blue idle"), "{out}");
    let state = eb.state();
    assert_eq!(state["listener"]["TargetGroupArn"], eb.arns["green"]);
    assert!(state["services"]["web-green"]["taskDefinition"].as_str().unwrap().ends_with("web-green:2"));
    assert!(
        state["services"]["web-blue"]["taskDefinition"].as_str().unwrap().ends_with("web-blue:1"),
        "blue untouched"
    );

    let out = eb.console(&["/rollback web-bg"]);
    assert!(out.contains("✅ r-2: switched back: blue is live with web-blue:1 (verified live by r-1"), "{out}");
    assert_eq!(eb.state()["listener"]["TargetGroupArn"], eb.arns["blue"]);
}

#[test]
fn a_failing_or_hanging_smoke_test_blocks_the_switch() {
    let health = Health::start();
    for path in ["unhealthy", "hang"] {
        let url = health.url(path);
        let eb = EcsBot::new(Setup { blue_url: url.clone(), green_url: url, steps: "[]" });
        let out = eb.console(&["/deploy web-bg v3.0.0"]);
        assert!(out.contains("❌ r-1: smoke test of"), "{path}: {out}");
        let why = if path == "unhealthy" { "answered 503" } else { "no answer within 300ms" };
        assert!(out.contains(why) && out.contains("traffic stays on blue"), "{path}: {out}");
        assert_eq!(eb.state()["listener"]["TargetGroupArn"], eb.arns["blue"], "{path}: the listener did not move");
        assert_eq!(eb.outcome("r-1"), "failed");
    }
}

#[test]
fn rollback_returns_to_what_the_trail_last_verified_not_to_revision_minus_one() {
    let eb = EcsBot::new(Setup::plain());
    let out = eb.console(&["/rollback api-ecs"]);
    assert!(
        out.contains("❌ r-1: no rollback: opsbot's audit trail has no verified deployment of api-ecs other than the api:1 it runs now")
            && out.contains("`/rollback api-ecs <revision>` (recent revisions of api: api:1)"),
        "{out}"
    );
    // v2 (api:2), v3 (api:3), then v2 again: api:2 is reused, and the
    // revision before it, api:1, is not what ran before.
    let out = eb.console(&[
        "/deploy api-ecs v2.0.0",
        "/wait",
        "/deploy api-ecs v3.0.0",
        "/wait",
        "/deploy api-ecs v2.0.0",
        "/wait",
        "/rollback api-ecs",
    ]);
    assert!(out.contains("✅ r-4: api-ecs runs repo/api:v2.0.0 (api:2)"), "{out}");
    assert!(out.contains("returning to api:3, verified live by r-3"), "{out}");
    assert!(out.contains("✅ r-5: api-ecs rolled back to api:3 (repo/api:v3.0.0)"), "{out}");
    let state = eb.state();
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("task-definition/api:3"));
    assert_eq!(state["definitions"]["api"].as_array().unwrap().len(), 3, "api:2 was reused, not registered again");
    let out = eb.console(&["/rollback api-ecs 3"]);
    assert!(
        out.contains("✅ r-6: api-ecs already runs api:3 (repo/api:v3.0.0); nothing to roll back, nothing changed"),
        "{out}"
    );
}
