//! Blue-green: what must hold before traffic moves — no listener rule sends
//! traffic to a colour behind the default action's back, and the new colour
//! has enough healthy targets — and what a move keeps (stickiness). Each test
//! checks moto's listener.

use super::healthy;

#[test]
fn a_listener_rule_forwarding_to_a_colour_is_named_and_blocks_the_switch() {
    let (_health, eb) = healthy("[]");
    let listener = eb.arns["listener"].as_str().unwrap().to_string();
    eb.poke(&["rule", &listener, "10", "/api/*", &eb.colour("blue")]);
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("❌ r-1: listener rules forward to a colour: priority 10 (path-pattern /api/*) forwards to blue; opsbot moves only the listener's default action")
            && out.contains("traffic stays on blue"),
        "{out}"
    );
    assert!(!eb.proxy.calls().iter().any(|c| c == "UpdateService" || c == "ModifyListener"), "nothing changed");
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
    let mut command = eb.bot.command(&["check", "--live"]);
    for (key, value) in super::aws_env(&eb.proxy.url) {
        command.env(key, value);
    }
    let out = crate::support::stdout(&command.output().unwrap());
    assert!(
        out.contains(
            "web-bg: listener rules forward to a colour, and opsbot moves only the default action: priority 10"
        ),
        "{out}"
    );
}

#[test]
fn traffic_moves_only_once_the_new_colour_has_enough_healthy_targets() {
    let (_health, eb) = healthy("[]");
    eb.set_rollout_timeout("1s");
    // Its tasks run, but never pass the load balancer's health check.
    let out = eb.console(&["/deploy web-bg v2.0.0-unhealthy"]);
    assert!(
        out.contains("❌ r-1: green's target group has 0 of 2 targets healthy after 1s: the load balancer would send traffic to too few; traffic stays on blue"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
    assert!(!eb.proxy.calls().iter().any(|c| c == "ModifyListener"));
}

#[test]
fn moving_traffic_keeps_the_listeners_stickiness() {
    let (_health, eb) = healthy("[50, 100]");
    let listener = eb.arns["listener"].as_str().unwrap().to_string();
    eb.poke(&["sticky", &listener, &eb.colour("blue")]);
    // Stop at the 50% step to look at a weighted forward.
    eb.proxy.fail_nth("ModifyListener", 2, 400, "ValidationError", "stopped here by the test");
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("failed at step 2 of 2 (100% to green)")
            && out.contains("the listener now forwards blue 50%, green 50%"),
        "{out}"
    );
    let forward = &eb.state()["listener"]["ForwardConfig"];
    assert_eq!(forward["TargetGroupStickinessConfig"]["Enabled"], true, "{forward}");
    assert_eq!(forward["TargetGroupStickinessConfig"]["DurationSeconds"], 300, "{forward}");
    assert_eq!(forward["TargetGroups"].as_array().unwrap().len(), 2, "{forward}");
}
