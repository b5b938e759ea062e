//! Blue-green (issue #13): rollbacks go to the colour the audit trail last
//! verified live, a split listener is shown as it is, a repeated deploy
//! changes nothing, the idle colour matches the live one's count before
//! traffic moves, and an AWS error mid-switch says where things stand.
//! Every test checks moto's listener and services.

use super::{healthy, EcsBot, Health, Setup};

#[test]
fn rollback_refuses_the_colour_whose_smoke_test_just_failed() {
    let health = Health::start();
    // Blue's health check fails; green's passes.
    let eb = EcsBot::new(Setup { blue_url: health.url("unhealthy"), green_url: health.url("healthy"), steps: "[]" });
    let out = eb.console(&["/deploy web-bg v2.0.0", "/wait", "/deploy web-bg v3.0.0", "/wait", "/rollback web-bg"]);
    assert!(out.contains("✅ r-1: green is live with repo/web:v2.0.0 (was blue)"), "{out}");
    assert!(out.contains("❌ r-2: smoke test of") && out.contains("traffic stays on green"), "{out}");
    assert!(
        out.contains(
            "❌ r-3: no rollback: blue no longer runs web-blue:1 (repo/web:v1.0.0) that was verified live by r-1"
        ) && out.contains("it runs web-blue:2 (repo/web:v3.0.0) now"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)], "traffic stays on the verified colour");
}

#[test]
fn a_split_listener_is_shown_as_it_is_and_nothing_guesses_which_colour_is_live() {
    let (_health, eb) = healthy("[]");
    eb.poke(&["split", eb.arns["listener"].as_str().unwrap(), &eb.colour("blue"), "90", &eb.colour("green"), "10"]);
    let out = eb.console(&["/status web-bg", "/rollback web-bg", "/wait", "/deploy web-bg v2.0.0"]);
    assert!(
        out.contains(
            "blue-green: the listener is split (blue 90%, green 10%): a switch is half done, neither colour is live"
        ),
        "{out}"
    );
    assert!(
        out.contains("blue (90% of traffic): repo/web:v1.0.0")
            && out.contains("green (10% of traffic): repo/web:v1.0.0"),
        "{out}"
    );
    assert!(out.contains("❌ r-1: no rollback: opsbot's audit trail has no verified switch of this pair"), "{out}");
    assert!(out.contains("❌ r-2: the listener of web-bg is split (blue 90%, green 10%)"), "{out}");
    assert_eq!(eb.weights(), [(eb.colour("blue"), 90), (eb.colour("green"), 10)], "untouched");
    // Naming a version a colour runs finishes the switch toward it.
    let out = eb.console(&["/deploy web-bg v1.0.0"]);
    assert!(out.contains("✅ r-3: blue is live with repo/web:v1.0.0 (was split)"), "{out}");
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
}

#[test]
fn an_aws_error_mid_switch_says_where_traffic_stands_and_rollback_returns_to_the_verified_colour() {
    let (_health, eb) = healthy("[50, 100]");
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(out.contains("✅ r-1: green is live with repo/web:v2.0.0 (was blue)"), "{out}");
    // The next deploy's second listener change (its 100% step) fails.
    eb.proxy.fail_nth("ModifyListener", 2, 400, "ValidationError", "listener is being modified");
    let out = eb.console(&["/deploy web-bg v3.0.0"]);
    assert!(
        out.contains("❌ r-2: switching traffic from green to blue failed at step 2 of 2 (100% to blue): elasticloadbalancing:ModifyListener failed: ValidationError: listener is being modified"),
        "{out}"
    );
    assert!(out.contains("the listener now forwards blue 50%, green 50%"), "{out}");
    assert!(
        out.contains(
            "blue runs web-blue:2 (repo/web:v3.0.0, 2/2 tasks); green runs web-green:2 (repo/web:v2.0.0, 2/2 tasks)"
        ),
        "{out}"
    );
    assert!(
        out.contains("next: `/deploy web-bg v2.0.0` sends all traffic to green; `/deploy web-bg v3.0.0` retries the switch to blue"),
        "{out}"
    );
    let mut weights = eb.weights();
    weights.sort();
    let mut half = vec![(eb.colour("blue"), 50), (eb.colour("green"), 50)];
    half.sort();
    assert_eq!(weights, half, "the listener stands where the error left it");
    // The trail verified green at r-1: rollback goes there, not to blue.
    let out = eb.console(&["/rollback web-bg"]);
    assert!(out.contains("✅ r-3: switched back: green is live with web-green:2 (verified live by r-1"), "{out}");
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)]);
}

#[test]
fn a_blue_green_rollback_with_a_revision_is_refused_with_the_reason() {
    let (_health, eb) = healthy("[]");
    let out = eb.console(&["/deploy web-bg v2.0.0", "/wait", "/rollback web-bg 5"]);
    assert!(
        out.contains("❌ r-2: web-bg is blue-green: `/rollback web-bg` returns traffic to the colour last verified live, and takes no revision"),
        "{out}"
    );
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)], "nothing moved");
}

#[test]
fn deploying_the_version_that_is_live_changes_nothing() {
    let (_health, eb) = healthy("[]");
    let out = eb.console(&["/deploy web-bg v2.0.0", "/wait", "/deploy web-bg v2.0.0"]);
    assert!(
        out.contains(
            "✅ r-2: web-bg already runs repo/web:v2.0.0 on live green (web-green:2, 2/2 tasks); nothing changed"
        ),
        "{out}"
    );
    let state = eb.state();
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)]);
    assert!(state["services"]["web-blue"]["taskDefinition"].as_str().unwrap().ends_with("web-blue:1"), "blue keeps v1");
    assert_eq!(state["definitions"]["web-blue"].as_array().unwrap().len(), 1, "nothing registered for blue");
}

#[test]
fn the_idle_colour_has_the_live_colours_task_count_before_traffic_moves() {
    let (_health, eb) = healthy("[]");
    let out = eb.console(&["/scale web-bg 3"]);
    assert!(
        out.contains(
            "✅ r-1: web-bg scaled to 3: live blue: 3/3 tasks of web-blue:1; idle green: 3/3 tasks of web-green:1"
        ),
        "{out}"
    );
    let state = eb.state();
    assert_eq!(
        (
            state["services"]["web-blue"]["desiredCount"].as_i64(),
            state["services"]["web-green"]["desiredCount"].as_i64()
        ),
        (Some(3), Some(3))
    );
    // Someone scales the idle colour down; the next switch brings it back first.
    eb.poke(&["desired", "web-green", "1"]);
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    let prepared = out.find("green: 3/3 tasks of web-green:2 running (as many as blue has)").expect(&out);
    let moved = out.find("100% of traffic on green").expect(&out);
    assert!(prepared < moved, "the count first, then traffic: {out}");
    assert!(out.contains("✅ r-2: green is live with repo/web:v2.0.0"), "{out}");
    assert_eq!(eb.state()["services"]["web-green"]["desiredCount"], 3);
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)]);
}

#[test]
fn a_listener_change_whose_answer_is_lost_is_settled_by_reading_the_listener() {
    let (_health, eb) = healthy("[]");
    eb.proxy.slow_nth("ModifyListener", 1, std::time::Duration::from_secs(30));
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("AWS did not answer elasticloadbalancing:ModifyListener within 2s; re-read: the listener forwards blue 0%, green 100%"),
        "{out}"
    );
    assert!(out.contains("✅ r-1: green is live with repo/web:v2.0.0 (was blue)"), "{out}");
    assert_eq!(eb.weights(), [(eb.colour("green"), 100)]);
}

#[test]
fn scaling_a_pair_whose_idle_colour_failed_its_rollout_does_not_wait_on_it() {
    let (_health, eb) = healthy("[]");
    let out = eb.console(&["/deploy web-bg v3.0.0-crash"]);
    assert!(
        out.contains("❌ r-1: preparing green (web-green) failed") && out.contains("traffic stays on blue"),
        "{out}"
    );
    let started = std::time::Instant::now();
    let out = eb.console(&["/scale web-bg 3"]);
    assert!(
        out.contains("✅ r-2: web-bg scaled to 3: live blue: 3/3 tasks of web-blue:1; idle green (web-green:2, its last rollout FAILED): desired count 3, not waited on"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "not held up by the broken colour (rollout_timeout 10s)"
    );
    let state = eb.state();
    let desired = |s: &str| state["services"][s]["desiredCount"].as_i64();
    assert_eq!((desired("web-blue"), desired("web-green")), (Some(3), Some(3)));
    assert_eq!(eb.weights(), [(eb.colour("blue"), 100)]);
}

#[test]
fn colours_that_cannot_be_told_apart_are_refused_before_anything_changes() {
    let (_health, eb) = healthy("[]");
    eb.poke(&["tag", &eb.colour("green"), "Color", "blue"]);
    let out = eb.console(&["/deploy web-bg v2.0.0"]);
    assert!(
        out.contains("❌ r-1: the target groups of web-blue and web-green are both tagged Color=blue: opsbot cannot tell the colours apart"),
        "{out}"
    );
    assert!(!eb.proxy.calls().iter().any(|c| c == "UpdateService" || c == "ModifyListener"), "nothing changed");
    let mut command = eb.bot.command(&["check", "--live"]);
    for (key, value) in super::aws_env(&eb.proxy.url) {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let out = crate::support::stdout(&output);
    assert!(out.contains("web-bg: the target groups of web-blue and web-green are both tagged Color=blue"), "{out}");
    assert_eq!(output.status.code(), Some(64));
}
