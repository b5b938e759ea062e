//! Values that parse but mean nothing sensible are refused with file, key and hint.

use std::path::Path;

fn problems(text: &str) -> Vec<super::Problem> {
    let mut problems = Vec::new();
    assert!(super::from_str(Path::new("/etc/opsbot/bad.toml"), text, &mut problems).is_none(), "accepted:\n{text}");
    problems
}

const BASE: &str = r#"
[environments.production]
[groups]
sre = ["console:bob", "console:dave"]
[services.api]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 2 }
"#;

#[test]
fn zero_durations_and_approvals_that_ask_nobody_are_refused() {
    let text = format!(
        r#"{BASE}
[bot]
data_dir = "/var/lib/opsbot"
action_timeout = "0s"
lock_ttl = "0ms"
[slack]
channel_interval = "0s"
[audit]
checkpoint_every = "0m"
key_file = "/var/lib/opsbot/keys/audit.key"
checkpoint_file = "/var/log/../lib/opsbot/checkpoints"
public_keys = ["abc"]
checkpoint_channel = "C123"
[[rules]]
commands = ["deploy"]
environments = ["production"]
requesters = ["sre"]
approvers = ["sre"]
approvals = 0
[[rules]]
commands = ["restart"]
environments = ["production"]
requesters = ["sre"]
approvers = ["sre"]
approvals = 1
ttl = "0s"
[[freeze]]
name = "x"
environments = ["production"]
commands = ["deploy"]
from = "Fri 15:00"
to = "Mon 06:00"
approvals = 0
"#
    );
    let problems = problems(&text);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "bot.action_timeout",
        "bot.lock_ttl",
        "slack.channel_interval",
        "audit.checkpoint_every",
        "audit.key_file",
        "audit.checkpoint_file",
        "audit.public_keys[0]",
        "audit.checkpoint_channel",
        "rules[0].approvals",
        "rules[1].ttl",
        "freeze[0].approvals",
    ] {
        assert!(keys.contains(&want), "missing {want} in {keys:?}");
    }
    assert!(problems.iter().all(|p| p.file == Path::new("/etc/opsbot/bad.toml") && !p.hint.is_empty()), "{problems:?}");
    let zero = problems.iter().find(|p| p.key == "bot.action_timeout").unwrap();
    assert!(zero.message.contains("zero") && zero.hint.contains("longer than zero"), "{zero:?}");
    let inside = problems.iter().find(|p| p.key == "audit.checkpoint_file").unwrap();
    assert!(inside.message.contains("inside the data directory"), "{inside:?}");
}

#[test]
fn the_default_durability_is_fdatasync_and_flush_is_an_explicit_choice() {
    let rule = "[[rules]]\ncommands = [\"deploy\"]\nenvironments = [\"*\"]\nrequesters = [\"sre\"]\n";
    let mut problems = Vec::new();
    let config = super::from_str(Path::new("ok.toml"), &format!("{BASE}{rule}"), &mut problems).unwrap();
    assert_eq!(config.durability, super::Durability::Fdatasync);
    let text = format!("{BASE}{rule}[bot]\ndurability = \"flush\"\n");
    let config = super::from_str(Path::new("ok.toml"), &text, &mut problems).unwrap();
    assert_eq!(config.durability, super::Durability::Flush);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn absurdly_short_intervals_are_refused() {
    let rule = "[[rules]]\ncommands = [\"deploy\"]\nenvironments = [\"*\"]\nrequesters = [\"sre\"]\n";
    for (section, key) in [("slack", "socket_ping"), ("slack", "channel_idle"), ("audit", "checkpoint_every")] {
        let text = format!("{BASE}{rule}[{section}]\n{key} = \"1ms\"\n");
        let problems = problems(&text);
        assert!(
            problems.iter().any(|p| p.key == format!("{section}.{key}") && p.message.contains("1ms is too short")),
            "{key}: {problems:?}"
        );
    }
}

#[test]
fn zero_durations_inside_a_backend_are_refused_too() {
    for field in ["poll = \"0s\"", "rollout_timeout = \"0ms\""] {
        let text = format!(
            "{BASE}[services.k]\nenvironment = \"production\"\nbackend = {{ type = \"kubernetes\", namespace = \"shop\", deployment = \"api\", container = \"app\", image = \"r/api\", {field} }}\n[[rules]]\ncommands = [\"deploy\"]\nenvironments = [\"*\"]\nrequesters = [\"sre\"]\n"
        );
        let problems = problems(&text);
        assert!(
            problems.iter().any(|p| p.key == "services.k" && p.message.contains("is zero")),
            "{field}: {problems:?}"
        );
    }
}

#[test]
fn an_action_timeout_that_cannot_hold_a_services_rollouts_is_refused_and_left_out_it_fits_them() {
    let rule = "[[rules]]\ncommands = [\"deploy\"]\nenvironments = [\"*\"]\nrequesters = [\"sre\"]\n";
    let k8s = r#"
[services.web]
environment = "production"
backend = { type = "kubernetes", namespace = "shop", deployment = "web", container = "app", image = "r/web", auto_rollback = true, rollout_timeout = "10m", call_timeout = "15s" }
"#;
    let problems = problems(&format!("{BASE}{k8s}{rule}[bot]\naction_timeout = \"15m\"\n"));
    let problem = problems.iter().find(|p| p.key == "services.web.backend.rollout_timeout").expect("refused");
    assert!(
        problem.message.contains("an action on web may take up to 22m30s (rollout_timeout 10m twice (the automatic rollback has its own), plus 10 × call_timeout 15s")
            && problem.message.contains("longer than bot.action_timeout (15m)"),
        "{problem:?}"
    );
    assert!(problem.hint.contains("raise bot.action_timeout to at least 22m30s"), "{problem:?}");
    let mut problems = Vec::new();
    let fits = super::from_str(
        Path::new("ok.toml"),
        &format!("{BASE}{k8s}{rule}[bot]\naction_timeout = \"23m\"\n"),
        &mut problems,
    );
    assert_eq!(fits.map(|c| c.action_timeout), Some(std::time::Duration::from_secs(23 * 60)), "{problems:?}");
    let derived = super::from_str(Path::new("ok.toml"), &format!("{BASE}{k8s}{rule}"), &mut problems);
    assert_eq!(derived.map(|c| c.action_timeout), Some(std::time::Duration::from_secs(22 * 60 + 30)), "{problems:?}");
    let simulated = super::from_str(Path::new("ok.toml"), &format!("{BASE}{rule}"), &mut problems);
    assert_eq!(simulated.map(|c| c.action_timeout), Some(std::time::Duration::from_secs(15 * 60)), "the default");
}

#[test]
fn the_secrets_a_configuration_reads_are_listed_with_what_serve_requires() {
    let rule = "[[rules]]\ncommands = [\"deploy\"]\nenvironments = [\"*\"]\nrequesters = [\"sre\"]\n";
    let text = format!(
        "{BASE}{rule}
[slack]
mode = \"both\"
[discord]
mode = \"http\"
[alerts]
default_channel = \"slack:C1\"
[alerts.alertmanager]
username_env = \"AM_USER\"
password_env = \"AM_PASSWORD\"
[alerts.pagerduty]
secrets_env = \"PD_SECRETS\"
[ci]
secret_env = \"CI_SECRET\"
[databases.main]
url_env = \"MAIN_DB\"
[http.events]
url = \"https://example.com/events\"
method = \"POST\"
api_key_env = \"NEVER_READ\"
api_key_header = \"X-Key\"
simulated = true
"
    );
    let mut problems = Vec::new();
    let config = super::from_str(Path::new("ok.toml"), &text, &mut problems).unwrap_or_else(|| panic!("{problems:?}"));
    let listed: Vec<(String, bool)> = config.secret_variables().into_iter().map(|v| (v.name, v.required)).collect();
    let want = [
        ("SLACK_BOT_TOKEN", true),
        ("SLACK_SIGNING_SECRET", true),
        ("SLACK_APP_TOKEN", true),
        ("DISCORD_TOKEN", true),
        ("DISCORD_APPLICATION_ID", true),
        ("DISCORD_PUBLIC_KEY", true),
        ("AM_USER", true),
        ("AM_PASSWORD", true),
        ("PD_SECRETS", true),
        ("CI_SECRET", true),
        ("OPSBOT_AUDIT_KEY", false),
        ("MAIN_DB", false),
    ];
    assert_eq!(listed, want.map(|(n, r)| (n.to_string(), r)));
}
