//! Checks of each backend's settings: names the cloud accepts, image
//! repositories without tags, blue-green and smoke-test consistency; and how
//! long one action on a backend may take by its own deadlines, so that
//! `bot.action_timeout` never cuts a backend off mid-rollout.

use super::{Backend, Problem, SmokeTest};
use std::path::Path;
use std::time::Duration;

/// API calls an action makes outside its rollout deadlines (reads before a
/// change, the reads that name failing pods or stopped tasks after a
/// deadline, what runs now), each bounded by `call_timeout`.
const CALLS_AROUND: u32 = 10;

/// The longest one action may take by a backend's own settings, and how
/// that adds up (for the message when it does not fit).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub total: Duration,
    pub parts: String,
}

fn smoke_time(smoke: Option<&SmokeTest>) -> Duration {
    smoke.map_or(Duration::ZERO, |s| {
        let attempts = s.retries.max(1);
        s.timeout * attempts + s.interval.min(Duration::from_secs(60)) * (attempts - 1)
    })
}

/// `bot.action_timeout` must hold each service's longest action, or the
/// engine would cut a backend off mid-rollout (and could only say
/// "unknown"). Set, it is checked: every service that may need longer is a
/// problem at its `rollout_timeout`. Left out, it is `default` or, when
/// longer, what the slowest service may need.
pub(super) fn fit_action_timeout(
    path: &Path,
    set: Option<Duration>,
    default: Duration,
    services: &std::collections::BTreeMap<String, super::Service>,
    problems: &mut Vec<Problem>,
) -> Duration {
    let budgets = services.iter().filter_map(|(name, s)| s.backend.longest_action().map(|b| (name, b)));
    let Some(timeout) = set else {
        return budgets.map(|(_, b)| b.total).fold(default, Duration::max);
    };
    let fmt = crate::clock::format_duration;
    for (name, budget) in budgets.filter(|(_, b)| b.total > timeout) {
        problems.push(Problem::new(
            path,
            &format!("services.{name}.backend.rollout_timeout"),
            format!(
                "an action on {name} may take up to {} ({}), longer than bot.action_timeout ({}): the engine would cut it off mid-rollout",
                fmt(budget.total),
                budget.parts,
                fmt(timeout)
            ),
            format!(
                "raise bot.action_timeout to at least {} (or leave it out: it then fits the slowest service), or lower this rollout_timeout",
                fmt(budget.total)
            ),
        ));
    }
    timeout
}

impl Backend {
    /// How long one action may take by this backend's own deadlines: the
    /// rollout deadline, again for an automatic rollback (it has its own)
    /// or for a blue-green pair's second colour, the API calls around them
    /// and the smoke tests. `None` for the simulated backend, which has no
    /// deadline of its own.
    pub fn longest_action(&self) -> Option<Budget> {
        let fmt = crate::clock::format_duration;
        match self {
            Backend::Simulated { .. } => None,
            Backend::Kubernetes { rollout_timeout, call_timeout, auto_rollback, .. } => {
                let rollouts = if *auto_rollback { 2 } else { 1 };
                Some(Budget {
                    total: *rollout_timeout * rollouts + *call_timeout * CALLS_AROUND,
                    parts: format!(
                        "rollout_timeout {}{}, plus {CALLS_AROUND} × call_timeout {} for the API calls around it",
                        fmt(*rollout_timeout),
                        if *auto_rollback { " twice (the automatic rollback has its own)" } else { "" },
                        fmt(*call_timeout)
                    ),
                })
            }
            Backend::Ecs { rollout_timeout, call_timeout, auto_rollback, blue_green, smoke, .. } => {
                let (rollouts, why, smokes, calls) = match blue_green {
                    // The new colour's rollout, or /scale's two colours; a
                    // smoke test before traffic moves and after each step.
                    Some(bg) => {
                        let steps = bg.steps.len().max(1) as u32;
                        (2, " twice (a blue-green pair has two colours)", steps + 1, CALLS_AROUND + 2 * steps)
                    }
                    None if *auto_rollback => (2, " twice (the automatic rollback has its own)", 1, CALLS_AROUND),
                    None => (1, "", 1, CALLS_AROUND),
                };
                let smoke = smoke_time(smoke.as_ref()) * smokes;
                Some(Budget {
                    total: *rollout_timeout * rollouts + *call_timeout * calls + smoke,
                    parts: format!(
                        "rollout_timeout {}{why}, plus {calls} × call_timeout {}{}",
                        fmt(*rollout_timeout),
                        fmt(*call_timeout),
                        if smoke.is_zero() {
                            String::new()
                        } else {
                            format!(" and up to {} of smoke tests", fmt(smoke))
                        }
                    ),
                })
            }
        }
    }
}

/// Reports every problem with `backend` (the service at `key`, whose replica
/// bounds are `min..=max`).
pub(super) fn check(
    path: &Path,
    key: &str,
    backend: &Backend,
    min: u32,
    max: u32,
    has_health_url: bool,
    problems: &mut Vec<Problem>,
) {
    match backend {
        Backend::Simulated { version, replicas, .. } => {
            if !crate::command::parse::is_valid_version(version) {
                problems.push(Problem::new(
                    path,
                    &format!("{key}.backend.version"),
                    format!("`{version}` is not a version tag"),
                    "write it like v1.4.1",
                ));
            }
            if *replicas < min || *replicas > max {
                problems.push(Problem::new(
                    path,
                    &format!("{key}.backend.replicas"),
                    format!("{replicas} is outside min_replicas..max_replicas ({min}..{max})"),
                    "start within the bounds",
                ));
            }
        }
        Backend::Kubernetes { context, namespace, deployment, container, image, call_timeout, .. } => {
            check_call_timeout(path, key, *call_timeout, problems);
            let dns = |v: &str| {
                !v.is_empty()
                    && v.len() <= 253
                    && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                    && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            };
            for (field, value) in [("namespace", namespace), ("deployment", deployment), ("container", container)] {
                if !dns(value) {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.{field}"),
                        format!("`{value}` is not a Kubernetes name"),
                        "lowercase letters, digits, `-` and `.`",
                    ));
                }
            }
            if let Some(context) = context {
                if context.trim().is_empty() || context.chars().any(char::is_whitespace) {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.context"),
                        format!("`{context}` is not a context name"),
                        "as in `kubectl config get-contexts`",
                    ));
                }
            }
            check_image(path, key, image, problems);
        }
        Backend::Ecs { cluster, service, container, image, region, blue_green, smoke, call_timeout, .. } => {
            check_call_timeout(path, key, *call_timeout, problems);
            let aws_name = |v: &str| {
                !v.is_empty() && v.len() <= 255 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            };
            let mut names = vec![("cluster", cluster.as_str()), ("container", container.as_str())];
            if let Some(service) = service {
                names.push(("service", service));
            }
            if let Some(bg) = blue_green {
                names.push(("blue_green.blue_service", &bg.blue_service));
                names.push(("blue_green.green_service", &bg.green_service));
                if !bg.listener_arn.starts_with("arn:") {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.blue_green.listener_arn"),
                        format!("`{}` is not an ARN", bg.listener_arn),
                        "copy the listener's ARN from the load balancer",
                    ));
                }
                for (field, url) in [("blue_url", &bg.blue_url), ("green_url", &bg.green_url)] {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        problems.push(Problem::new(
                            path,
                            &format!("{key}.backend.blue_green.{field}"),
                            format!("`{url}` is not an http(s) URL"),
                            "the colour's health check URL",
                        ));
                    }
                }
                if bg.steps.iter().any(|w| *w == 0 || *w > 100) || bg.steps.windows(2).any(|w| w[0] >= w[1]) {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.blue_green.steps"),
                        "steps must rise from 1 to 100".into(),
                        "for example [10, 50, 100]",
                    ));
                }
            }
            if service.is_some() == blue_green.is_some() {
                problems.push(Problem::new(
                    path,
                    &format!("{key}.backend"),
                    "name either `service` or `blue_green`, not both or neither".into(),
                    "one service, or a blue/green pair behind a listener",
                ));
            }
            for (field, value) in names {
                if !aws_name(value) {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.{field}"),
                        format!("`{value}` is not an ECS name"),
                        "letters, digits, `-` and `_`",
                    ));
                }
            }
            if let Some(region) = region {
                if !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.region"),
                        format!("`{region}` is not a region"),
                        "like eu-west-1",
                    ));
                }
            }
            check_image(path, key, image, problems);
            if let Some(smoke) = smoke {
                if smoke.url.is_none() && !has_health_url && blue_green.is_none() {
                    problems.push(Problem::new(
                        path,
                        &format!("{key}.backend.smoke"),
                        "the smoke test has no URL".into(),
                        "set smoke.url or the service's health_url",
                    ));
                }
            }
        }
    }
}

/// A call timeout long enough for a slow API server, short enough that one
/// hung call cannot eat a rollout's whole deadline unnoticed.
fn check_call_timeout(path: &Path, key: &str, call_timeout: std::time::Duration, problems: &mut Vec<Problem>) {
    let floor = std::time::Duration::from_millis(100);
    let ceiling = std::time::Duration::from_secs(300);
    if call_timeout < floor || call_timeout > ceiling {
        problems.push(Problem::new(
            path,
            &format!("{key}.backend.call_timeout"),
            format!("{} is not between 100ms and 5m", crate::clock::format_duration(call_timeout)),
            "for example \"15s\"",
        ));
    }
}

/// An image repository without a tag: `/deploy` adds the version as the tag.
fn check_image(path: &Path, key: &str, image: &str, problems: &mut Vec<Problem>) {
    let tagged = image.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'));
    if image.is_empty() || tagged || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(Problem::new(
            path,
            &format!("{key}.backend.image"),
            format!("`{image}` is not an image repository without a tag"),
            "write it like registry.example.com/team/api; /deploy adds the tag",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actions_budget_counts_each_rollout_deadline_and_the_calls_around_them() {
        let backend = |text: &str| -> Backend {
            let value: toml::Value = toml::from_str(&format!("backend = {text}")).unwrap();
            value["backend"].clone().try_into().unwrap()
        };
        let total = |text: &str| backend(text).longest_action().map(|b| b.total);
        let k8s =
            r#"{ type = "kubernetes", namespace = "shop", deployment = "api", container = "app", image = "r/api" }"#;
        assert_eq!(total(k8s), Some(Duration::from_secs(600 + 150)));
        let rolling_back = k8s.replace("image = ", "auto_rollback = true, image = ");
        assert_eq!(total(&rolling_back), Some(Duration::from_secs(1200 + 150)));
        let ecs = r#"{ type = "ecs", cluster = "prod", service = "api", container = "app", image = "r/api", smoke = { url = "http://x", timeout = "5s", retries = 3, interval = "1s" } }"#;
        assert_eq!(total(ecs), Some(Duration::from_secs(900 + 200 + 17)));
        assert_eq!(total(r#"{ type = "simulated", version = "v1", replicas = 1 }"#), None);
    }

    fn problems_for(backend: &str) -> Vec<String> {
        let value: toml::Value = toml::from_str(&format!("backend = {backend}")).unwrap();
        let backend: Backend = value["backend"].clone().try_into().expect("decodes");
        let mut problems = Vec::new();
        check(Path::new("t.toml"), "services.x", &backend, 1, 5, false, &mut problems);
        problems.into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect()
    }

    #[test]
    fn backend_settings_are_checked() {
        let cases: [(&str, &[&str]); 8] = [
            (
                r#"{ type = "kubernetes", namespace = "shop", deployment = "api", container = "app", image = "r/api" }"#,
                &[],
            ),
            (
                r#"{ type = "kubernetes", namespace = "Shop!", deployment = "api", container = "app", image = "r/api:v1" }"#,
                &["backend.namespace", "backend.image"],
            ),
            (r#"{ type = "ecs", cluster = "prod", service = "api", container = "app", image = "r/api" }"#, &[]),
            (
                r#"{ type = "kubernetes", namespace = "shop", deployment = "api", container = "app", image = "r/api", call_timeout = "10ms" }"#,
                &["backend.call_timeout"],
            ),
            (
                r#"{ type = "ecs", cluster = "prod", service = "api", container = "app", image = "r/api", call_timeout = "10m" }"#,
                &["not between 100ms and 5m"],
            ),
            (
                r#"{ type = "ecs", cluster = "prod", container = "app", image = "r/api" }"#,
                &["name either `service` or `blue_green`"],
            ),
            (
                r#"{ type = "ecs", cluster = "prod", container = "app", image = "r/api", blue_green = { listener_arn = "nope", blue_service = "b", green_service = "g", blue_url = "ftp://b", green_url = "http://g", steps = [50, 10] } }"#,
                &["listener_arn", "blue_url", "steps"],
            ),
            (
                r#"{ type = "ecs", cluster = "prod", service = "api", container = "app", image = "r/api", smoke = { expect_status = 200 } }"#,
                &["smoke test has no URL"],
            ),
        ];
        for (backend, wanted) in cases {
            let got = problems_for(backend);
            assert_eq!(got.len(), wanted.len(), "{backend}: {got:?}");
            for want in wanted {
                assert!(got.iter().any(|p| p.contains(want)), "{backend}: {want} not in {got:?}");
            }
        }
    }
}
