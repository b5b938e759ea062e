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
        ("/deploy api-service v1.4.2", Request::Deploy { service: s("api-service"), version: s("v1.4.2") }),
        ("deploy api-service v1.4.2", Request::Deploy { service: s("api-service"), version: s("v1.4.2") }),
        (
            "/ship api-service 2026.11.29-rc_1",
            Request::Deploy { service: s("api-service"), version: s("2026.11.29-rc_1") },
        ),
        ("/DEPLOY api-service v1", Request::Deploy { service: s("api-service"), version: s("v1") }),
        ("  /deploy   api-service   v1.4.2  ", Request::Deploy { service: s("api-service"), version: s("v1.4.2") }),
        ("/rollback api-service", Request::Rollback { service: s("api-service"), revision: None }),
        ("/rollback api-service 7", Request::Rollback { service: s("api-service"), revision: Some(7) }),
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
        ("flag.toml", "name = \"st\"\nsummary = \"s\"\nusage = \"/st\"\naction = \"status\"\n[[args]]\nname = \"service\"\ntype = \"service\"\n[[flags]]\nname = \"force\"\ntype = \"switch\"\n", "unknown flag `force`"),
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
