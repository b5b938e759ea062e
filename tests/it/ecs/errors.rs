//! Wrong names and regions, unreachable endpoints, deregistered revisions:
//! one clear message each, nothing changed, no Debug dumps (issue #13).

use super::{aws_env, run_console, EcsBot, Setup};

#[test]
fn a_container_name_the_task_definition_lacks_is_refused_and_check_live_reports_it() {
    let eb = EcsBot::new(Setup::plain());
    let out = eb.console(&["/deploy ghost-container v5.0.0"]);
    assert!(
        out.contains("❌ r-1: task definition api:1 has no container `ghost-container`; its containers: app, sidecar"),
        "{out}"
    );
    let state = eb.state();
    assert_eq!(state["definitions"]["api"].as_array().unwrap().len(), 1, "nothing registered");
    assert!(state["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("api:1"));

    let mut command = eb.bot.command(&["check", "--live"]);
    for (key, value) in aws_env(&eb.proxy.url) {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let out = crate::support::stdout(&output);
    assert!(
        out.contains(
            "ghost-container: task definition api:1 has no container `ghost-container`; its containers: app, sidecar"
        ),
        "{out}"
    );
    assert!(out.contains("api-ecs: ok — cluster prod: api found, container app present"), "{out}");
    assert!(out.contains("web-bg: ok — cluster prod: web-blue and web-green behind the listener found"), "{out}");
    assert!(out.contains("ghost-ecs: ECS cluster `nope` not found in region us-east-1; clusters there: prod"), "{out}");
    assert_eq!(output.status.code(), Some(64), "{out}");
}

#[test]
fn wrong_cluster_wrong_region_and_missing_region_each_get_one_message_naming_which() {
    let eb = EcsBot::new(Setup::plain());
    let out = eb.console(&["/deploy ghost-ecs v2.0.0", "/wait", "/deploy elsewhere-ecs v2.0.0"]);
    assert!(
        out.contains(
            "❌ r-1: ECS cluster `nope` not found in region us-east-1; clusters there: prod; is `cluster` right?"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "❌ r-2: ECS cluster `prod` not found: region eu-west-1 has no ECS clusters at all; is `region` right?"
        ),
        "{out}"
    );
    let env: Vec<_> = aws_env(&eb.proxy.url).into_iter().filter(|(k, _)| *k != "AWS_REGION").collect();
    let out = run_console(&eb.bot, &["/deploy noregion-ecs v2.0.0"], &env);
    assert!(
        out.contains("❌ r-3: no AWS region for noregion-ecs: set `region` in its backend config, or AWS_REGION in opsbot's environment"),
        "{out}"
    );
    assert_eq!(eb.state()["definitions"]["api"].as_array().unwrap().len(), 1, "nothing registered");
}

#[test]
fn missing_credentials_and_an_unreachable_endpoint_are_said_plainly() {
    let eb = EcsBot::new(Setup::plain());
    let env: Vec<_> = aws_env(&eb.proxy.url)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .collect();
    let out = run_console(&eb.bot, &["/restart api-ecs"], &env);
    assert!(out.contains("❌ r-1: no usable AWS credentials for ecs:DescribeServices"), "{out}");
    assert!(eb.proxy.calls().is_empty(), "nothing was sent to AWS: {:?}", eb.proxy.calls());
    let out = run_console(&eb.bot, &["/restart api-ecs"], &aws_env("http://127.0.0.1:1"));
    assert!(
        out.contains("❌ r-2: cannot reach AWS for ecs:DescribeServices in region us-east-1: connection refused"),
        "{out}"
    );
    for dump in ["DispatchFailure", "ConnectorError", "Os {", "kind:", "Some(", "{ source"] {
        assert!(!out.contains(dump), "a Debug dump ({dump}) in: {out}");
    }
}

#[test]
fn rolling_back_to_a_deregistered_revision_is_refused_before_anything_changes() {
    let eb = EcsBot::new(Setup::plain());
    // The restart verifies api:1 live, so the trail knows what ran before v2.
    eb.console(&["/restart api-ecs", "/wait", "/deploy api-ecs v2.0.0"]);
    eb.poke(&["deregister", "api:1"]);
    let out = eb.console(&["/rollback api-ecs", "/wait", "/rollback api-ecs 1"]);
    for request in ["r-3", "r-4"] {
        assert!(
            out.contains(&format!(
                "❌ {request}: task definition api:1 is deregistered (INACTIVE): ECS starts no new tasks from it"
            )),
            "{out}"
        );
    }
    assert!(eb.state()["services"]["api"]["taskDefinition"].as_str().unwrap().ends_with("api:2"), "still on api:2");
    assert!(!eb.proxy.calls().iter().skip_while(|c| *c != "DeregisterTaskDefinition").any(|c| c == "UpdateService"));
}

#[test]
fn check_live_tells_an_aws_outage_or_throttling_from_a_wrong_configuration_and_from_denied_access() {
    use crate::fake_ecs::Behaviour;
    let (fake, bot) = super::scripted(Behaviour::Completes, "10s", false);
    let check = |fault: Option<(u16, &str)>| {
        let proxy = crate::aws_proxy::AwsProxy::start(&fake.url);
        if let Some((status, code)) = fault {
            proxy.fail_after("DescribeServices", "DescribeServices", status, code, "from the fault proxy");
        }
        let mut command = bot.command(&["check", "--live"]);
        for (key, value) in aws_env(&proxy.url) {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        (output.status.code(), crate::support::stdout(&output), proxy.calls())
    };
    let (code, out, _) = check(None);
    assert_eq!(code, Some(0), "{out}");
    let (code, out, calls) = check(Some((500, "ServerException")));
    assert_eq!(code, Some(69), "an AWS outage is not a configuration problem: {out}");
    assert!(calls.iter().filter(|c| *c == "DescribeServices").count() > 1, "reads keep the SDK's retries");
    let (code, out, _) = check(Some((400, "ThrottlingException")));
    assert_eq!(code, Some(69), "{out}");
    // Throttled through the SDK's retries, or past call_timeout while backing off: either way, 69.
    assert!(out.contains("api-ecs: AWS") && out.contains("ecs:DescribeServices"), "{out}");
    let (code, out, _) = check(Some((400, "AccessDeniedException")));
    assert_eq!(code, Some(77), "{out}");
}
