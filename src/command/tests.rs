//! Table tests for the parser, over the command files the repository ships.

use super::parse::{parse, tokenize, ParseError, Request};
use super::Registry;
use std::path::Path;
use std::time::Duration;

fn shipped() -> Registry {
    Registry::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("commands")).expect("shipped commands load")
}

fn services() -> Vec<String> {
    ["api-service", "payment-service", "api-staging"].iter().map(|s| s.to_string()).collect()
}

fn ok(text: &str) -> (Request, Option<String>) {
    let parsed = parse(&shipped(), &services(), text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"));
    (parsed.request, parsed.emergency)
}

fn err(text: &str) -> ParseError {
    match parse(&shipped(), &services(), text) {
        Ok(p) => panic!("{text:?} should not parse, got {p:?}"),
        Err(e) => e,
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn good_input_becomes_typed_requests() {
    let cases: Vec<(&str, Request)> = vec![
        (
            "/deploy api-service v1.4.2",
            Request::Deploy { service: s("api-service"), version: s("v1.4.2"), commit: None },
        ),
        (
            "deploy api-service v1.4.2",
            Request::Deploy { service: s("api-service"), version: s("v1.4.2"), commit: None },
        ),
        (
            "/ship api-service 2026.11.29-rc_1",
            Request::Deploy { service: s("api-service"), version: s("2026.11.29-rc_1"), commit: None },
        ),
        ("/DEPLOY api-service v1", Request::Deploy { service: s("api-service"), version: s("v1"), commit: None }),
        (
            "  /deploy   api-service   v1.4.2  ",
            Request::Deploy { service: s("api-service"), version: s("v1.4.2"), commit: None },
        ),
        ("/rollback api-service", Request::Rollback { service: s("api-service"), revision: None, of: None }),
        ("/rollback api-service 7", Request::Rollback { service: s("api-service"), revision: Some(7), of: None }),
        (
            "/rollback api-service --of R-12",
            Request::Rollback { service: s("api-service"), revision: None, of: Some(s("r-12")) },
        ),
        ("/restart payment-service", Request::Restart { service: s("payment-service") }),
        ("/scale api-service 6", Request::Scale { service: s("api-service"), replicas: 6 }),
        ("/scale api-service 0", Request::Scale { service: s("api-service"), replicas: 0 }),
        ("/status api-service", Request::Status { service: s("api-service") }),
        ("/st api-service", Request::Status { service: s("api-service") }),
        (
            "/lock api-service database migration running 2h",
            Request::Lock {
                service: s("api-service"),
                reason: s("database migration running"),
                ttl: Some(Duration::from_secs(7200)),
            },
        ),
        (
            "/lock api-service \"PCI audit\"",
            Request::Lock { service: s("api-service"), reason: s("PCI audit"), ttl: None },
        ),
        (
            "/lock api-service “smart quotes” 30m",
            Request::Lock {
                service: s("api-service"),
                reason: s("smart quotes"),
                ttl: Some(Duration::from_secs(1800)),
            },
        ),
        ("/unlock api-service", Request::Unlock { service: s("api-service") }),
        ("/approve r-12", Request::Approve { request: s("r-12") }),
        ("/approve 12", Request::Approve { request: s("r-12") }),
        ("/lgtm R-3", Request::Approve { request: s("r-3") }),
        ("/deny r-12", Request::Deny { request: s("r-12"), reason: None }),
        (
            "/deny r-12 not during the incident",
            Request::Deny { request: s("r-12"), reason: Some(s("not during the incident")) },
        ),
        ("/audit", Request::Audit { service: None, limit: None }),
        ("/audit 20", Request::Audit { service: None, limit: Some(20) }),
        ("/audit api-service 5", Request::Audit { service: Some(s("api-service")), limit: Some(5) }),
        ("/help", Request::Help { command: None }),
        ("/help ship", Request::Help { command: Some(s("deploy")) }),
    ];
    for (text, want) in cases {
        assert_eq!(ok(text).0, want, "{text}");
    }
}

#[test]
fn a_deploy_may_name_its_commit_and_only_a_commit() {
    let deploy = |commit: Option<&str>| Request::Deploy {
        service: s("api-service"),
        version: s("v1.4.2"),
        commit: commit.map(str::to_string),
    };
    assert_eq!(ok("/deploy api-service v1.4.2 --commit 3F2A9C1").0, deploy(Some("3f2a9c1")));
    assert_eq!(ok("/deploy api-service v1.4.2").0, deploy(None));
    for bad in ["3f2a9c", "3f2a9cz", "0123456789012345678901234567890123456789a"] {
        let e = err(&format!("/deploy api-service v1.4.2 --commit {bad}")).to_string();
        assert!(e.contains("a commit is 7 to 40 hexadecimal digits"), "{bad}: {e}");
    }
}

#[test]
fn emergency_flag_carries_its_reason() {
    let cases = [
        ("/deploy api-service v1.4.3 --emergency \"INC-231 hotfix\"", Some("INC-231 hotfix")),
        ("/deploy api-service v1.4.3 --emergency=INC-231", Some("INC-231")),
        ("/deploy api-service --emergency 'db down' v1.4.3", Some("db down")),
        ("/deploy api-service v1.4.3", None),
    ];
    for (text, want) in cases {
        assert_eq!(ok(text).1.as_deref(), want, "{text}");
    }
}

#[test]
fn mistakes_get_usage_and_suggestions() {
    let cases: Vec<(&str, &str)> = vec![
        ("/deplyo api-service v1", "Did you mean `/deploy`?"),
        ("/rollbak api-service", "Did you mean `/rollback`?"),
        ("/frobnicate", "Unknown command `/frobnicate`. Type `/help`"),
        ("/deploy api-servce v1.4.2", "Did you mean `api-service`?"),
        ("/deploy nope v1.4.2", "not a valid <service>: no such service"),
        ("/deploy api-service", "Missing <version>"),
        ("/deploy", "Missing <service>"),
        ("/scale api-service six", "expected a whole number from 0 to 500"),
        ("/scale api-service -1", "expected a whole number from 0 to 500"),
        ("/scale api-service 501", "expected a whole number from 0 to 500"),
        ("/scale api-service 99999999999999999999999", "expected a whole number"),
        ("/scale api-service 3 4", "Unexpected `4`"),
        ("/rollback api-service 0", "at least 1"),
        ("/lock api-service", "Missing <reason>"),
        ("/lock api-service reason 400d", "longer than a year"),
        ("/deploy api-service v1 --emergancy now", "Did you mean `--emergency`?"),
        ("/deploy api-service v1 --emergency", "`--emergency` needs a value"),
        ("/approve twelve", "a request id looks like r-12"),
        ("/deploy api-service \"v1", "quote is not closed"),
        ("", "Type a command"),
        ("/help deplyo", "Did you mean `deploy`?"),
    ];
    for (text, want) in cases {
        // What a person reads: the marks around echoed text are for adapters.
        let message = crate::engine::reply::plain(&err(text).to_string()).into_owned();
        assert!(message.contains(want), "{text:?}: {message:?} should contain {want:?}");
    }
}

#[test]
fn injection_looking_text_stays_plain_data_or_is_refused() {
    // Anything that reaches a version, a service or a number must fit its type.
    for text in [
        "/deploy api-service \"v1.4.2; rm -rf /\"",
        "/deploy api-service $(whoami)",
        "/deploy api-service v1.4.2&&reboot",
        "/deploy api-service `id`",
        "/deploy api-service ../../etc/passwd",
        "/deploy api-service -v1",
        "/deploy api-service --set=image=evil",
        "/deploy \"api-service; rm -rf /\" v1",
        "/scale api-service 3;reboot",
        "/status api-service|cat",
    ] {
        assert!(parse(&shipped(), &services(), text).is_err(), "{text:?} must be refused");
    }
    // Free text is kept verbatim as data, never interpreted.
    let (request, _) = ok("/lock api-service $(rm -rf /) ; DROP TABLE locks; -- 1h");
    assert_eq!(
        request,
        Request::Lock {
            service: s("api-service"),
            reason: s("$(rm -rf /) ; DROP TABLE locks; --"),
            ttl: Some(Duration::from_secs(3600))
        }
    );
    // Echoed values cannot break out of their code span.
    let message = err("/deploy api-service `whoami`").to_string();
    assert!(!message.contains("``"), "{message}");
}

#[test]
fn tokenizer_honours_quotes() {
    assert_eq!(tokenize("a \"b c\" 'd e' “f g”").unwrap(), vec!["a", "b c", "d e", "f g"]);
    assert_eq!(tokenize("a\"b c\"d").unwrap(), vec!["ab cd"]);
    assert!(tokenize("\"open").is_err());
}

/// A token that begins with a quote is a value, never a flag: a reason can
/// start with `--`, and typed text can never turn into `--emergency`.
#[test]
fn a_quoted_token_is_never_a_flag() {
    let (request, emergency) = ok("/lock api-service \"--emergency=now\"");
    assert_eq!(emergency, None);
    assert!(format!("{request:?}").contains("--emergency=now"), "{request:?}");
    let (request, _) = ok("/lock api-service '--force-push broke main' 2h");
    assert!(format!("{request:?}").contains("--force-push broke main"), "{request:?}");
    assert_eq!(ok("/deploy api-service v1.4.3 --emergency=\"db down\"").1.as_deref(), Some("db down"));
}

#[test]
fn command_files_are_checked_with_file_and_key() {
    let bad = [
        ("bad-action.toml", "name = \"x\"\nsummary = \"s\"\nusage = \"/x\"\naction = \"explode\"\n", "unknown variant"),
        ("mutates.toml", "name = \"dep\"\nsummary = \"s\"\nusage = \"/dep\"\naction = \"deploy\"\n[[args]]\nname = \"service\"\ntype = \"service\"\n[[args]]\nname = \"version\"\ntype = \"version\"\n", "set mutates = true"),
        ("missing.toml", "name = \"dep\"\nsummary = \"s\"\nusage = \"/dep\"\naction = \"deploy\"\nmutates = true\n[[args]]\nname = \"service\"\ntype = \"service\"\n", "needs an argument named `version`"),
        ("typo.toml", "name = \"st\"\nsummary = \"s\"\nusage = \"/st\"\naction = \"status\"\n[[args]]\nname = \"service\"\ntype = \"servise\"\n", "unknown type `servise`"),
        ("extra.toml", "name = \"st\"\nsummary = \"s\"\nusage = \"/st\"\naction = \"status\"\ncolour = \"red\"\n[[args]]\nname = \"service\"\ntype = \"service\"\n", "unknown field `colour`"),
        ("flag.toml", "name = \"st\"\nsummary = \"s\"\nusage = \"/st\"\naction = \"status\"\n[[args]]\nname = \"service\"\ntype = \"service\"\n[[flags]]\nname = \"force\"\ntype = \"switch\"\n", "reads no flags; `force` would be ignored"),
        ("opt.toml", "name = \"st\"\nsummary = \"s\"\nusage = \"/st\"\naction = \"status\"\n[[args]]\nname = \"service\"\ntype = \"service\"\nmax_len = 3\n", "`max_len` does not apply"),
    ];
    for (file, text, want) in bad {
        let problems = Registry::from_sources([(Path::new(file), text)]).unwrap_err();
        let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(all.iter().any(|p| p.contains(want) && p.contains(file)), "{file}: {all:?} should mention {want:?}");
    }
    let dup = Registry::from_sources([
        (Path::new("a.toml"), "name = \"a\"\naliases = [\"b\"]\nsummary = \"s\"\nusage = \"/a\"\naction = \"help\"\n"),
        (Path::new("b.toml"), "name = \"b\"\nsummary = \"s\"\nusage = \"/b\"\naction = \"help\"\n"),
    ])
    .unwrap_err();
    assert!(dup.iter().any(|p| p.message.contains("already used")), "{dup:?}");
}

#[test]
fn help_is_rendered_from_the_files() {
    let registry = shipped();
    let overview = registry.render_overview();
    for name in [
        "/deploy",
        "/rollback",
        "/restart",
        "/scale",
        "/status",
        "/lock",
        "/unlock",
        "/approve",
        "/deny",
        "/audit",
        "/help",
    ] {
        assert!(overview.contains(name), "{name} missing from help");
    }
    let deploy = registry.render_command(registry.find("deploy").unwrap());
    assert!(deploy.contains("Aliases: /ship") && deploy.contains("/deploy api-service v1.4.2"), "{deploy}");
}

fn incident(text: &str) -> super::IncidentOp {
    match ok(text).0 {
        Request::Incident { op } => op,
        other => panic!("{text:?} is not an incident command: {other:?}"),
    }
}

#[test]
fn incident_commands_are_a_group_with_typed_arguments() {
    use super::IncidentOp::*;
    assert_eq!(
        incident("/incident declare \"pool exhausted\" --sev 1 --service api-service --service payment-service"),
        Declare { title: s("pool exhausted"), severity: 1, services: vec![s("api-service"), s("payment-service")] }
    );
    assert_eq!(
        incident("/incident declare db slow"),
        Declare { title: s("db slow"), severity: 3, services: vec![] },
        "severity defaults to 3"
    );
    assert_eq!(incident("/INCIDENT Update pool drained"), Update { incident: None, text: s("pool drained") });
    assert_eq!(
        incident("/incident update inc-3 pool drained"),
        Update { incident: Some(s("INC-3")), text: s("pool drained") }
    );
    // A number is never taken for an incident: the prefix is required.
    assert_eq!(incident("/incident sev 2"), Severity { incident: None, severity: 2 });
    assert_eq!(incident("/incident sev INC-4 2"), Severity { incident: Some(s("INC-4")), severity: 2 });
    assert_eq!(incident("/incident update 3 replicas down"), Update { incident: None, text: s("3 replicas down") });
    assert_eq!(incident("/incident lead <@U0G9QF9C6|bob>"), Lead { incident: None, person: s("slack:U0G9QF9C6") });
    assert_eq!(
        incident("/incident lead INC-2 <@!80351110224678912>"),
        Lead { incident: Some(s("INC-2")), person: s("discord:80351110224678912") }
    );
    assert_eq!(incident("/incident lead @dave"), Lead { incident: None, person: s("@dave") });
    assert_eq!(incident("/incident lead console:dave"), Lead { incident: None, person: s("console:dave") });
    assert_eq!(incident("/incident resolve"), Resolve { incident: None, summary: None });
    assert_eq!(incident("/incident timeline INC-12"), Timeline { incident: Some(s("INC-12")) });
}

#[test]
fn incident_mistakes_are_named_with_what_to_do() {
    let text = |e: ParseError| crate::engine::reply::plain(&e.to_string()).into_owned();
    assert!(
        text(err("/incident")).contains("needs one of: declare, lead, note, resolve, sev, status, timeline, update")
    );
    assert!(text(err("/incident declre x")).contains("Did you mean `/incident declare`?"));
    assert!(text(err("/incident sev 5")).contains("a whole number from 1 to 4"));
    assert!(text(err("/incident declare x --sev 0")).contains("a whole number from 1 to 4"));
    assert!(text(err("/incident declare x --sev 1 --sev 2")).contains("`--sev` takes one value; give it once"));
    assert!(text(err("/incident declare x --service nope")).contains("no such service"));
    assert!(text(err("/incident lead")).contains("Missing <person>"));
    // A person is an id or a mention; markup and made-up platforms are not.
    assert!(text(err("/incident lead <!channel>")).contains("name a person"));
    assert!(text(err("/incident lead irc:bob")).contains("name a person"));
    assert!(text(err("/incident lead <@U1;rm>")).contains("name a person"));
    // A flag of another command is unknown here.
    assert!(text(err("/incident note x --emergency now")).contains("Unknown option `--emergency`"));
    assert!(text(err("/deploy api-service v1 --sev 1")).contains("Unknown option `--sev`"));
    assert!(text(err("/rollback api-service 3 --of r-1")).contains("give a revision or --of, not both"));
}

#[test]
fn help_explains_a_group() {
    let registry = shipped();
    let group = registry.render_help(Some("incident"));
    assert!(group.starts_with("/incident has 8 commands:"), "{group}");
    assert!(group.contains("Usage: /incident declare <title> [--sev 1-4] [--service S]..."), "{group}");
    let (request, _) = ok("/help incident");
    assert_eq!(request, Request::Help { command: Some(s("incident")) });
    assert!(registry.render_overview().contains("/incident resolve"));
}

#[test]
fn groups_are_checked_like_commands() {
    let sub = "group = \"incident\"\nname = \"status\"\nsummary = \"s\"\nusage = \"/incident status\"\naction = \"incident_status\"\n";
    let plain = "name = \"incident\"\nsummary = \"s\"\nusage = \"/incident\"\naction = \"help\"\n";
    let problems = Registry::from_sources([(Path::new("a.toml"), sub), (Path::new("b.toml"), plain)]).unwrap_err();
    assert!(problems.iter().any(|p| p.to_string().contains("is both a group and the command")), "{problems:?}");
    let bad_group = sub.replace("group = \"incident\"", "group = \"In Cident\"");
    let problems = Registry::from_sources([(Path::new("a.toml"), bad_group.as_str())]).unwrap_err();
    assert!(problems.iter().any(|p| p.to_string().contains("is not a group name")), "{problems:?}");
    // Grouped commands take the group's policy key unless they name one.
    let registry = Registry::from_sources([(Path::new("a.toml"), sub)]).unwrap();
    assert_eq!(registry.policy_keys(), ["incident"]);
    // An incident severity flag must be bounded to 1–4.
    let loose = "group = \"incident\"\nname = \"declare\"\nsummary = \"s\"\nusage = \"/incident declare\"\naction = \"incident_declare\"\n[[args]]\nname = \"title\"\ntype = \"text\"\n[[flags]]\nname = \"sev\"\ntype = \"integer\"\n";
    let problems = Registry::from_sources([(Path::new("d.toml"), loose)]).unwrap_err();
    assert!(problems.iter().any(|p| p.to_string().contains("flag `sev` has the wrong type")), "{problems:?}");
}
