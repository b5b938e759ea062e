//! The shipped runbooks against a configuration that has their targets,
//! and the mistakes a runbook file can make.

use super::*;
use std::path::Path;

fn shipped(name: &str) -> Runbook {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("commands/runbooks").join(format!("{name}.toml"));
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn services() -> BTreeMap<String, String> {
    [("api-service", "production"), ("payment-service", "production"), ("api-staging", "staging")]
        .iter()
        .map(|(s, e)| (s.to_string(), e.to_string()))
        .collect()
}

fn check(runbook: &Runbook) -> Vec<String> {
    let services = services();
    let environments = ["production".to_string(), "staging".to_string()];
    let known = Known {
        services: &services,
        environments: &environments,
        databases: &["main".to_string()],
        http_targets: &["datadog-events".to_string()],
        job_templates: &["node-cleanup".to_string()],
    };
    runbook.check(&known)
}

fn plan(runbook: &Runbook, given: &[(&str, &str)]) -> Result<Plan, Vec<String>> {
    let services = services();
    let environments = ["production".to_string()];
    let known = Known {
        services: &services,
        environments: &environments,
        databases: &[],
        http_targets: &[],
        job_templates: &[],
    };
    let given = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    runbook.plan(&given, &known, &serde_json::json!({"main": "postgres"}))
}

#[test]
fn the_shipped_runbooks_check_clean() {
    for name in ["connection-pool", "memory-leak", "disk-full"] {
        assert_eq!(check(&shipped(name)), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn a_plan_has_typed_values_its_references_filled_and_a_digest_that_follows_them() {
    let pool = shipped("connection-pool");
    let default = plan(&pool, &[]).unwrap();
    assert_eq!(default.values["idle_for"], Value::Duration(Duration::from_secs(600)));
    let longer = plan(&pool, &[("idle_for", "30m")]).unwrap();
    assert_ne!(default.digest, longer.digest, "other values, another plan to approve");
    assert_eq!(plan(&pool, &[("idle_for", "10m")]).unwrap().digest, default.digest);
    // SQL text is never filled in: values are bound.
    let Step::Sql { statement, .. } = &longer.steps[2] else { panic!() };
    assert!(statement.contains("$1::interval") && !statement.contains("30m"));
    let disk = plan(&shipped("disk-full"), &[("older_than", "14")]).unwrap();
    let Step::K8sJob { env, .. } = &disk.steps[0] else { panic!() };
    assert_eq!(env["LOG_AGE_DAYS"], "14");
}

#[test]
fn bad_values_are_named_and_nothing_is_planned() {
    let pool = shipped("connection-pool");
    let problems = plan(&pool, &[("idle_for", "30s"), ("role", "postgres"), ("force", "yes")]).unwrap_err();
    // (What was typed is marked inert for the adapters; compared without the marks.)
    let all = crate::engine::reply::plain(&problems.join("\n")).into_owned();
    assert!(all.contains("`force` is not a parameter of connection-pool"), "{all}");
    assert!(all.contains("`idle_for`: 30s is outside the allowed range"), "{all}");
    assert!(all.contains("`role`: `postgres` is not one of app"), "{all}");
    let disk = shipped("disk-full");
    let all = crate::engine::reply::plain(&plan(&disk, &[("older_than", "7; rm -rf /")]).unwrap_err().join("\n"))
        .into_owned();
    assert!(all.contains("is not a whole number"), "{all}");
}

#[test]
fn a_runbook_file_that_binds_wrongly_or_names_unknown_things_is_refused() {
    let text = r#"
name = "bad"
summary = "s"
environment = "production"
[[params]]
name = "svc"
type = "service"
[[steps]]
kind = "restart"
service = "{nope}"
[[steps]]
kind = "restart"
service = "api-staging"
[[steps]]
kind = "sql"
target = "other"
statement = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1"
params = ["svc", "idle"]
max_rows = 1
[[steps]]
kind = "http"
target = "pager"
body = { text = "{missing}" }
"#;
    let runbook: Runbook = toml::from_str(text).unwrap();
    let all = check(&runbook).join("\n");
    for want in [
        "steps[0].service: `{nope}` names no parameter",
        "steps[1].service: api-staging is in staging, not this runbook's environment production",
        "steps[2].target: `other` is not a [databases] target",
        "steps[2].params: `idle` names no parameter",
        "steps[2].statement: the statement uses $1 but the step binds 2 parameter(s)",
        "must leave opsbot's own out",
        "steps[3].target: `pager` is not an [http] target",
        "steps[3]: `{missing}` names no parameter",
    ] {
        assert!(all.contains(want), "{want}\n{all}");
    }
    // Free text is not a parameter type, and steps are a closed set.
    assert!(toml::from_str::<Runbook>("name='x'\nsummary='s'\nenvironment='p'\n[[params]]\nname='t'\ntype='text'\n[[steps]]\nkind='restart'\nservice='a'").is_err());
    assert!(toml::from_str::<Runbook>("name='x'\nsummary='s'\nenvironment='p'\n[[steps]]\nkind='shell'\ncommand='rm'")
        .is_err());
}

#[test]
fn steps_that_change_something_need_approval_unless_their_file_says_otherwise() {
    let text = r#"
name = "gates"
summary = "x"
environment = "production"
[[steps]]
kind = "restart"
service = "api-service"
[[steps]]
kind = "http"
target = "datadog-events"
approval = false
[[steps]]
kind = "sql"
target = "main"
statement = "SELECT 1"
read_only = true
max_rows = 1
approval = true
[[steps]]
kind = "wait_healthy"
service = "api-service"
"#;
    let runbook: Runbook = toml::from_str(text).unwrap();
    // A read cannot be made to wait for approval; a change can be let through.
    assert_eq!(runbook.gated, [true, false, false, false]);
    let planned = plan(&runbook, &[]).unwrap();
    assert_eq!(planned.gated, runbook.gated);
    let ungated: Runbook = toml::from_str(&text.replacen(
        "service = \"api-service\"\n[[steps]]\nkind = \"http\"",
        "service = \"api-service\"\napproval = false\n[[steps]]\nkind = \"http\"",
        1,
    ))
    .unwrap();
    assert_ne!(plan(&ungated, &[]).unwrap().digest, planned.digest, "what is gated is part of what is approved");
    let bad = toml::from_str::<Runbook>(&text.replace("approval = false", "approval = \"no\"")).unwrap_err();
    assert!(bad.to_string().contains("steps[1].approval: write true or false"), "{bad}");
    let unknown = toml::from_str::<Runbook>(&text.replace("kind = \"http\"", "kind = \"shell\"")).unwrap_err();
    assert!(unknown.to_string().contains("steps[1]: unknown variant `shell`"), "{unknown}");
}

#[test]
fn a_guard_in_a_comment_guards_nothing() {
    let text = r#"
name = "ends-all"
summary = "x"
environment = "production"
[[steps]]
kind = "sql"
target = "main"
statement = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity -- pid <> pg_backend_pid()"
preview = "SELECT pid FROM pg_stat_activity"
max_rows = 5
"#;
    let runbook: Runbook = toml::from_str(text).unwrap();
    let problems = check(&runbook).join("\n");
    assert!(problems.contains("must leave opsbot's own out"), "{problems}");
}
