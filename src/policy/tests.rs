//! Table tests for [`super::evaluate`].

use super::{evaluate, ApprovalNeed, Decision, Hold, Subject};
use crate::config::{self, Config};
use crate::event::Actor;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;

const CONFIG: &str = r#"
[environments.staging]
[environments.production]

[groups]
developers = ["console:alice", "slack:U1"]
sre = ["console:bob", "console:dave"]
commanders = ["console:dave"]
pairs = ["console:bob", "console:erin"]

[services.api]
environment = "production"
channels = ["console:ops"]
backend = { type = "simulated", version = "v1", replicas = 2 }

[services.web]
environment = "staging"
backend = { type = "simulated", version = "v1", replicas = 2 }

[services.db]
environment = "production"
backend = { type = "simulated", version = "v1", replicas = 2 }

[[rules]]
commands = ["read"]
environments = ["*"]
requesters = ["*"]

[[rules]]
commands = ["deploy", "restart"]
environments = ["staging"]
requesters = ["developers", "sre"]

[[rules]]
commands = ["deploy", "restart"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
ttl = "20m"
break_glass = ["commanders"]

[[rules]]
commands = ["scale"]
environments = ["production"]
requesters = ["sre"]
approvers = ["pairs"]
approvals = 2

[[rules]]
commands = ["lock"]
environments = ["production"]
requesters = ["sre"]

[[freeze]]
name = "weekend"
environments = ["production"]
commands = ["deploy"]
from = "Fri 15:00"
to = "Mon 06:00"
approvals = 2

[[freeze]]
name = "holidays"
environments = ["production"]
commands = ["restart"]
from = "2026-12-24T00:00:00Z"
to = "2026-12-27T00:00:00Z"
"#;

fn config() -> Config {
    let mut problems = Vec::new();
    let config = config::from_str(Path::new("policy-test.toml"), CONFIG, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    config.unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

const WEDNESDAY: &str = "2026-12-02T12:00:00Z";
const SATURDAY: &str = "2026-11-28T12:00:00Z";
const CHRISTMAS: &str = "2026-12-25T12:00:00Z";

struct Case {
    name: &'static str,
    actor: &'static str,
    policy: &'static str,
    mutates: bool,
    service: Option<&'static str>,
    channel: &'static str,
    emergency: Option<&'static str>,
    hold_until: Option<&'static str>,
    now: &'static str,
    want: Want,
}

#[derive(Debug)]
enum Want {
    Allow,
    Deny(&'static str),
    Approvals(u32, Option<&'static str>),
    BreakGlass,
}

fn case(
    name: &'static str,
    actor: &'static str,
    policy: &'static str,
    service: Option<&'static str>,
    want: Want,
) -> Case {
    let mutates = !matches!(policy, "read" | "lock");
    Case {
        name,
        actor,
        policy,
        mutates,
        service,
        channel: "console:ops",
        emergency: None,
        hold_until: None,
        now: WEDNESDAY,
        want,
    }
}

#[test]
fn policy_decides_in_its_documented_order() {
    let cfg = config();
    let cases = vec![
        case("unknown users are denied", "console:mallory", "read", Some("api"), Want::Deny("not in any group")),
        case("unknown slack users are denied", "slack:U999", "deploy", Some("web"), Want::Deny("not in any group")),
        case("anyone known may read", "slack:U1", "read", Some("api"), Want::Allow),
        case("read needs no service", "console:alice", "read", None, Want::Allow),
        case("staging deploys run at once", "console:alice", "deploy", Some("web"), Want::Allow),
        case(
            "production deploys wait for one approval",
            "console:alice",
            "deploy",
            Some("api"),
            Want::Approvals(1, None),
        ),
        case(
            "no rule means deny",
            "console:alice",
            "rollback",
            Some("api"),
            Want::Deny("no rule allows `rollback` in production"),
        ),
        case("requesters are checked", "console:alice", "lock", Some("api"), Want::Deny("only sre may use `lock`")),
        case("sre may lock production", "console:bob", "lock", Some("api"), Want::Allow),
        case("developers may not scale production", "console:alice", "scale", Some("api"), Want::Deny("only sre")),
        case(
            "approvals must be possible without the requester",
            "console:bob",
            "scale",
            Some("api"),
            Want::Deny("only 1 eligible approver(s) besides you"),
        ),
        case("an sre deploy still needs another sre", "console:bob", "deploy", Some("api"), Want::Approvals(1, None)),
        Case {
            channel: "console:random",
            ..case(
                "changes only from the service's channels",
                "console:alice",
                "deploy",
                Some("api"),
                Want::Deny("only taken in console:ops"),
            )
        },
        Case {
            channel: "console:random",
            ..case("reads from any channel", "console:alice", "read", Some("api"), Want::Allow)
        },
        Case {
            channel: "console:random",
            ..case("services without channels take any", "console:alice", "deploy", Some("web"), Want::Allow)
        },
        Case {
            hold_until: Some("2026-12-02T13:00:00Z"),
            ..case("a lock blocks changes", "console:alice", "deploy", Some("api"), Want::Deny("locked by console:bob"))
        },
        Case {
            hold_until: Some("2026-12-02T13:00:00Z"),
            ..case("a lock blocks break-glass too", "console:dave", "deploy", Some("api"), Want::Deny("locked"))
        },
        Case {
            hold_until: Some("2026-12-02T13:00:00Z"),
            ..case("a lock does not block reads", "console:alice", "read", Some("api"), Want::Allow)
        },
        Case {
            hold_until: Some("2026-12-02T11:00:00Z"),
            ..case("an expired lock blocks nothing", "console:alice", "deploy", Some("api"), Want::Approvals(1, None))
        },
        Case {
            emergency: Some("INC-1"),
            ..case("break-glass for commanders", "console:dave", "deploy", Some("api"), Want::BreakGlass)
        },
        Case {
            emergency: Some("INC-1"),
            ..case(
                "break-glass refused for others",
                "console:alice",
                "deploy",
                Some("api"),
                Want::Deny("--emergency is only for commanders"),
            )
        },
        Case {
            emergency: Some("INC-1"),
            ..case(
                "no break-glass where none is configured",
                "console:alice",
                "deploy",
                Some("web"),
                Want::Deny("--emergency is only for nobody"),
            )
        },
        Case {
            now: SATURDAY,
            ..case(
                "a weekend freeze raises approvals",
                "console:alice",
                "deploy",
                Some("api"),
                Want::Approvals(2, Some("weekend")),
            )
        },
        Case {
            now: SATURDAY,
            ..case(
                "the freeze only covers its commands",
                "console:alice",
                "restart",
                Some("api"),
                Want::Approvals(1, None),
            )
        },
        Case {
            now: SATURDAY,
            ..case("the freeze only covers its environments", "console:alice", "deploy", Some("web"), Want::Allow)
        },
        Case {
            now: CHRISTMAS,
            ..case("a deny freeze denies", "console:alice", "restart", Some("api"), Want::Deny("frozen (holidays)"))
        },
        Case {
            now: CHRISTMAS,
            emergency: Some("outage"),
            ..case("break-glass passes a deny freeze", "console:dave", "restart", Some("api"), Want::BreakGlass)
        },
    ];
    for c in cases {
        let actor = Actor::parse(c.actor).unwrap();
        let hold = c.hold_until.map(|until| Hold {
            by: Actor::parse("console:bob").unwrap(),
            reason: "migration".into(),
            until: at(until),
        });
        let service = c.service.map(|s| &cfg.services[s]);
        let subject = Subject {
            actor: &actor,
            granted: &[],
            policy: c.policy,
            mutates: c.mutates,
            service,
            environment: None,
            frozen_with: &[],
            channel: c.channel,
            emergency: c.emergency,
            hold: hold.as_ref(),
            incident: None,
            now: at(c.now),
        };
        let got = evaluate(&cfg, &subject);
        let ok = match (&c.want, &got) {
            (Want::Allow, Decision::Allow) => true,
            (Want::BreakGlass, Decision::BreakGlass { reason }) => Some(reason.as_str()) == c.emergency,
            (Want::Deny(text), Decision::Deny(reason)) => reason.contains(text),
            (Want::Approvals(n, freeze), Decision::NeedsApproval(ApprovalNeed { approvals, freeze: f, ttl, .. })) => {
                approvals == n
                    && f.as_deref() == *freeze
                    && *ttl == Duration::from_secs(if c.policy == "scale" { 1800 } else { 1200 })
            }
            _ => false,
        };
        assert!(ok, "{}: wanted {:?}, got {:?}", c.name, c.want, got);
    }
}

#[test]
fn config_reports_every_problem_with_its_key() {
    let bad = r#"
colour = "red"
[bot]
lock_ttl = "forever"
[environments.production]
[groups]
sre = ["bob", "console:dave"]
[services.Api]
environment = "prod"
channels = ["C123"]
health_url = "ftp://x"
min_replicas = 5
max_replicas = 2
backend = { type = "simulated", version = "v1;rm", replicas = 3 }
[services.db]
environment = "production"
backend = { type = "kubernetes" }
[[rules]]
commands = ["deploy"]
environments = ["staging"]
requesters = ["devs"]
approvers = ["sre"]
approvals = 3
ttl = "10"
[[freeze]]
name = "x"
environments = ["production"]
commands = ["deploy"]
from = "Fry 15:00"
to = "Mon 06:00"
"#;
    let mut problems = Vec::new();
    assert!(config::from_str(Path::new("bad.toml"), bad, &mut problems).is_none());
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "colour",
        "bot.lock_ttl",
        "groups.sre[0]",
        "services.Api",
        "services.Api.environment",
        "services.Api.channels[0]",
        "services.Api.health_url",
        "services.Api.min_replicas",
        "services.Api.backend.version",
        "services.db",
        "rules[0].environments",
        "rules[0].requesters",
        "rules[0].approvals",
        "rules[0].ttl",
        "freeze[0].from",
    ] {
        assert!(keys.contains(&want), "missing {want} in {keys:?}");
    }
    assert!(problems.iter().all(|p| p.file == Path::new("bad.toml") && !p.hint.is_empty()), "{problems:?}");
}

#[test]
fn discord_roles_grant_groups_for_the_event_and_only_mapped_groups() {
    // sre is granted by a role only: nobody is listed, and `check` accepts
    // approvals = 1 because who holds the role is known when they act.
    let text = CONFIG.replace(
        "[groups]\n",
        "[discord]\nmode = \"http\"\n[discord.roles]\n\"8000000000000001\" = [\"sre\"]\n\n[groups]\noncall = []\n",
    ) + "\n[[rules]]\ncommands = [\"rollback\"]\nenvironments = [\"production\"]\nrequesters = [\"sre\"]\napprovers = [\"oncall\"]\napprovals = 1\n";
    let text = text.replace(
        "\"8000000000000001\" = [\"sre\"]",
        "\"8000000000000001\" = [\"sre\"]\n\"8000000000000002\" = [\"oncall\"]",
    );
    let mut problems = Vec::new();
    let cfg = config::from_str(Path::new("roles.toml"), &text, &mut problems).unwrap_or_else(|| panic!("{problems:?}"));
    assert!(problems.is_empty(), "{problems:?}");
    let actor = Actor::parse("discord:1234").unwrap();
    assert_eq!(cfg.granted_by_roles(&["8000000000000001".into(), "999".into()]), ["sre"]);
    let subject = |granted: &'static [String]| Subject {
        actor: &actor,
        granted,
        policy: "lock",
        mutates: true,
        service: Some(&cfg.services["api"]),
        environment: None,
        frozen_with: &[],
        channel: "console:ops",
        emergency: None,
        hold: None,
        incident: None,
        now: at(WEDNESDAY),
    };
    // Unknown without the role; with it, in sre for this request only.
    assert!(matches!(evaluate(&cfg, &subject(&[])), Decision::Deny(r) if r.contains("not in any group")));
    let sre: &'static [String] = Box::leak(Box::new(["sre".to_string()]));
    assert_eq!(evaluate(&cfg, &subject(sre)), Decision::Allow);
    // A role never grants a group it is not mapped to.
    let other: &'static [String] = Box::leak(Box::new(["developers".to_string()]));
    assert!(matches!(evaluate(&cfg, &subject(other)), Decision::Deny(r) if r.contains("only sre")));
    // A rule whose approvers come from a role needs no listed approver.
    let rollback = Subject { policy: "rollback", ..subject(sre) };
    assert!(matches!(evaluate(&cfg, &rollback), Decision::NeedsApproval(_)), "{:?}", evaluate(&cfg, &rollback));
    // Mapping a role to a group that does not exist is refused.
    let bad = text.replace("= [\"oncall\"]\n\n[groups]", "= [\"nobody\"]\n\n[groups]");
    let mut problems = Vec::new();
    assert!(config::from_str(Path::new("roles.toml"), &bad, &mut problems).is_none());
    assert!(problems.iter().any(|p| p.to_string().contains("`nobody` is not a group")), "{problems:?}");
}
