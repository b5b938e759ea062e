//! Issue #13: ✅ only when what the request named runs now, in the rollout
//! it started; "unknown" when the bot cannot tell; rollbacks as kubectl's.
//! Each test asserts on the fake API server's state.

use super::{history_rows, k8s_config, wait_until, K8sBot};
use crate::fake_k8s::FakeK8s;
use std::time::Duration;

const API_V1: &str = "registry.example.com/api:v1.0.0";
const API_V2: &str = "registry.example.com/api:v2.0.0";

fn revision(kb: &K8sBot) -> String {
    kb.k8s.deployment("shop", "api")["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_container_name_the_pod_template_lacks_is_refused_and_check_live_reports_it() {
    let kb = K8sBot::new();
    let out = kb.console(&["/deploy worker-k8s v3.1.0"]);
    assert!(out.contains("❌ r-1: deployment shop/worker has no container `wrkr`; its containers: worker"), "{out}");
    assert_eq!(kb.k8s.containers("shop", "worker"), ["worker"], "no container was added");
    assert_eq!(kb.k8s.image("shop", "worker"), "registry.example.com/worker:v3.0.0");
    assert!(!kb.k8s.requests().iter().any(|(m, p)| m == "PATCH" && p.ends_with("/deployments/worker")));

    let output = kb.bot.command(&["check", "--live"]).env("KUBECONFIG", &kb.kubeconfig).output().unwrap();
    let out = crate::support::stdout(&output);
    assert!(
        out.contains("worker-k8s: deployment shop/worker has no container `wrkr`; its containers: worker"),
        "{out}"
    );
    assert_eq!(output.status.code(), Some(64), "a configuration problem: {out}");
}

#[test]
fn a_deploy_another_writer_supersedes_mid_rollout_is_not_reported_as_success() {
    // Slow rollouts, so the other writer lands while opsbot watches.
    let kb = K8sBot::with(FakeK8s::with_step(Duration::from_millis(200)));
    let other = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            wait_until("opsbot's patch", || kb.k8s.image("shop", "api") == API_V2);
            kb.kubectl(&[
                "patch",
                "deploy/api",
                "-p",
                r#"{"metadata":{"annotations":{"kubernetes.io/change-cause":"hotfix by bob"}},"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.example.com/api:v2.1.0"}]}}}}"#,
            ])
        });
        let out = kb.console(&["/deploy api-k8s v2.0.0"]);
        other.join().unwrap();
        out
    });
    assert!(
        other.contains("❌ r-1: deploy of registry.example.com/api:v2.0.0 did not finish: superseded by another change to deployment shop/api")
            && other.contains("change-cause: hotfix by bob, image registry.example.com/api:v2.1.0"),
        "{other}"
    );
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v2.1.0", "the other writer's change stays");
    assert_eq!(kb.outcome("r-1"), "failed");
}

#[test]
fn a_500_on_a_status_read_is_retried_and_the_healthy_release_stays() {
    let kb = K8sBot::new();
    // The first read is before the patch; the next two are the watch's.
    kb.k8s.fail_nth("get", 2, 500);
    kb.k8s.fail_nth("get", 3, 500);
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0 (revision 2)"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2, "no automatic rollback of a healthy release");
    assert_eq!(revision(&kb), "2");
    assert_eq!(kb.outcome("r-1"), "succeeded");
}

#[test]
fn a_status_read_that_times_out_is_retried() {
    let kb = K8sBot::new();
    kb.k8s.slow_nth("get", 2, Duration::from_secs(30));
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0 (revision 2)"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2);
    assert_eq!(revision(&kb), "2");
}

#[test]
fn a_refused_connection_mid_rollout_is_retried() {
    let kb = K8sBot::with(FakeK8s::with_step(Duration::from_millis(150)));
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Once the watch reads (a GET after the PATCH), cut and refuse.
            wait_until("the watch", || {
                let seen = kb.k8s.seen();
                let patched = seen.iter().position(|r| r.method == "PATCH");
                patched.is_some_and(|i| seen[i..].iter().any(|r| r.method == "GET"))
            });
            kb.relay.refuse_for(Duration::from_millis(700));
        });
        kb.console(&["/deploy api-relay v2.0.0"])
    });
    assert!(out.contains("✅ r-1: api-relay runs registry.example.com/api:v2.0.0 (revision 2)"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2);
    assert_eq!(revision(&kb), "2");
}

#[test]
fn a_write_whose_answer_is_lost_is_settled_from_the_live_state() {
    let kb = K8sBot::new();
    kb.k8s.slow_nth("patch", 1, Duration::from_secs(30));
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("deploy of registry.example.com/api:v2.0.0 got no answer"), "{out}");
    assert!(out.contains("re-read: it was applied"), "{out}");
    assert!(out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0 (revision 2)"), "{out}");
    kb.k8s.slow_nth("patch", 1, Duration::from_secs(30));
    let out = kb.console(&["/scale api-k8s 5"]);
    assert!(out.contains("✅ r-2: api-k8s runs 5 replicas"), "{out}");
    let d = kb.k8s.deployment("shop", "api");
    assert_eq!((kb.k8s.image("shop", "api").as_str(), d["spec"]["replicas"].as_u64()), (API_V2, Some(5)));
    assert_eq!(d["status"]["availableReplicas"], 5);
    assert_eq!((kb.outcome("r-1"), kb.outcome("r-2")), ("succeeded".into(), "succeeded".into()));
}

#[test]
fn a_write_whose_answer_is_lost_and_whose_result_cannot_be_read_is_unknown() {
    let kb = K8sBot::new();
    kb.k8s.slow_nth("patch", 1, Duration::from_secs(30));
    kb.k8s.fail_nth("get", 2, 403); // the re-read after the lost answer
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(
        out.contains("❔ r-1: unknown: deploy of registry.example.com/api:v2.0.0: the Kubernetes API server of context fake did not answer `patch deployments` within 1s")
            && out.contains("and the live state cannot be read (Kubernetes refused to let opsbot get deployments"),
        "{out}"
    );
    assert_eq!(kb.outcome("r-1"), "unknown", "neither success nor failure");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2, "the write did land");
}

#[test]
fn a_failed_automatic_rollback_is_reported_with_the_deploy_failure_and_what_runs_now() {
    let kb = K8sBot::new();
    kb.k8s.forbid("update", "deployments");
    let out = kb.console(&["/deploy api-k8s v3.0.0-crash"]);
    let text = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        text.contains("deploy of registry.example.com/api:v3.0.0-crash failed: rollout exceeded its progress deadline")
            && text.contains("CrashLoopBackOff"),
        "the deploy's failure: {out}"
    );
    assert!(
        text.contains("the automatic rollback to revision 1 failed too: Kubernetes refused to let opsbot update deployments in namespace shop (403 Forbidden)"),
        "the rollback's failure: {out}"
    );
    assert!(
        text.contains("live now: deployment shop/api holds app=registry.example.com/api:v3.0.0-crash (revision 2)"),
        "what runs now: {out}"
    );
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v3.0.0-crash");
}

#[test]
fn a_paused_deployment_is_refused_and_status_says_paused_and_by_whom() {
    let kb = K8sBot::new();
    kb.kubectl(&["rollout", "pause", "deploy/api"]);
    kb.kubectl(&["annotate", "deploy/api", "opsbot/paused-by=bob (incident 7)"]);
    let out = kb.console(&[
        "/deploy api-k8s v2.0.0",
        "/wait",
        "/rollback api-k8s",
        "/wait",
        "/restart api-k8s",
        "/wait",
        "/status api-k8s",
    ]);
    assert!(
        out.contains(
            "❌ r-1: deployment shop/api is paused (by bob (incident 7), per its opsbot/paused-by annotation)"
        ),
        "{out}"
    );
    assert!(
        out.contains("❌ r-2: deployment shop/api is paused") && out.contains("❌ r-3: deployment shop/api is paused"),
        "{out}"
    );
    assert!(out.contains("— paused (by bob (incident 7)"), "/status shows it: {out}");
    let d = kb.k8s.deployment("shop", "api");
    assert_eq!(kb.k8s.image("shop", "api"), API_V1, "nothing waits to roll out on resume");
    assert!(d["spec"]["template"]["metadata"]["annotations"].is_null(), "no restart waits either: {d}");
    assert_eq!((revision(&kb), kb.k8s.replicasets("shop", "api").len()), ("1".into(), 1));
}

#[test]
fn rollback_history_reads_as_after_kubectls_own_undo() {
    let kb = K8sBot::new();
    for deployment in ["api", "web"] {
        for (version, cause) in [("v2.0.0", "deploy v2 by alice"), ("v3.0.0", "deploy v3 by bob")] {
            let target = format!("deploy/{deployment}");
            kb.kubectl(&["annotate", &target, "--overwrite", &format!("kubernetes.io/change-cause={cause}")]);
            let image = format!("app=registry.example.com/{deployment}:{version}");
            kb.kubectl(&["set", "image", &target, &image]);
            kb.kubectl(&["rollout", "status", &target, "--timeout=20s"]);
        }
    }
    let out = kb.console(&["/rollback api-k8s"]);
    assert!(out.contains("✅ r-1: api-k8s rolled back to revision 2"), "{out}");
    kb.kubectl(&["rollout", "undo", "deploy/web"]);
    kb.kubectl(&["rollout", "status", "deploy/web", "--timeout=20s"]);
    let opsbots = history_rows(&kb.kubectl(&["rollout", "history", "deploy/api"]));
    let kubectls = history_rows(&kb.kubectl(&["rollout", "history", "deploy/web"]));
    assert_eq!(opsbots, kubectls);
    assert_eq!(opsbots.last().unwrap(), &("4".to_string(), "deploy v2 by alice".to_string()));
    let d = kb.k8s.deployment("shop", "api");
    assert_eq!(d["metadata"]["annotations"]["kubernetes.io/change-cause"], "deploy v2 by alice");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2);
}

#[test]
fn status_shows_what_is_readable_names_what_is_not_and_recent_events() {
    let kb = K8sBot::new();
    kb.console(&["/deploy api-k8s v2.0.0"]);
    // The replicaset controller records quota trouble on the ReplicaSet, not the Deployment.
    let replicaset =
        kb.k8s.replicasets("shop", "api").last().unwrap()["metadata"]["name"].as_str().unwrap().to_string();
    kb.k8s.add_event(
        "shop",
        ("ReplicaSet", &replicaset),
        "Warning",
        "FailedCreate",
        "pods \"api-x\" is forbidden: exceeded quota",
    );
    kb.k8s.forbid("list", "pods");
    let out = kb.console(&["/status api-k8s"]);
    assert!(out.contains("deployment shop/api: registry.example.com/api:v2.0.0"), "{out}");
    assert!(out.contains("containers: app=registry.example.com/api:v2.0.0"), "{out}");
    assert!(out.contains("3 desired, 3 updated, 3 ready, 3 available — rollout complete"), "{out}");
    assert!(out.contains("revisions: 2 registry.example.com/api:v2.0.0; 1 registry.example.com/api:v1.0.0;"), "{out}");
    assert!(out.contains("pods: not readable: opsbot may not list pods in namespace shop (403"), "{out}");
    let warning = out.find("Warning FailedCreate: pods \"api-x\" is forbidden: exceeded quota").expect("the warning");
    let normal = out.find("Normal ScalingReplicaSet").expect("the controller's event");
    assert!(warning < normal, "Warning events first: {out}");
    kb.k8s.forbid("list", "replicasets");
    let out = kb.console(&["/status api-k8s"]);
    assert!(out.contains("revisions: not readable: opsbot may not list replicasets in namespace shop (403"), "{out}");
    assert!(out.contains("pods: the new ReplicaSet is not known, so neither are its pods"), "{out}");
    kb.k8s.forbid("list", "events");
    let out = kb.console(&["/status api-k8s"]);
    assert!(out.contains("events: not readable: opsbot may not list events in namespace shop (403"), "{out}");
}

#[test]
fn conflicts_are_retried_after_growing_waits() {
    let kb = K8sBot::new();
    for _ in 0..3 {
        kb.k8s.fail_next("patch", 409);
    }
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V2);
    let patches: Vec<_> =
        kb.k8s.seen().into_iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/api")).collect();
    assert_eq!(patches.len(), 4, "three conflicts, then success");
    let gaps: Vec<Duration> = patches.windows(2).map(|w| w[1].at - w[0].at).collect();
    // The waits' jitter is the backoff's unit test's business.
    for (gap, least) in gaps.iter().zip([50, 100, 200]) {
        assert!(*gap >= Duration::from_millis(least), "backoff between conflicts: {gaps:?}");
    }
}

#[test]
fn a_refused_connection_is_retried_a_few_times_before_giving_up() {
    let kb = K8sBot::new();
    kb.relay.refuse_for(Duration::from_millis(300));
    let out = kb.console(&["/scale api-relay 4", "/wait", "/deploy down-k8s v1"]);
    assert!(out.contains("✅ r-1: api-relay runs 4 replicas"), "{out}");
    assert_eq!(kb.k8s.deployment("shop", "api")["spec"]["replicas"], 4);
    assert!(
        out.contains(
            "❌ r-2: cannot reach the Kubernetes API server of context down: connection refused (tried 4 times)"
        ),
        "{out}"
    );
}

#[test]
fn check_live_exits_with_the_code_of_its_most_serious_finding() {
    let kb = K8sBot::new();
    let exit = |only: &[&str]| {
        kb.bot.rewrite_config(&k8s_config(only));
        let output = kb.bot.command(&["check", "--live"]).env("KUBECONFIG", &kb.kubeconfig).output().unwrap();
        output.status.code()
    };
    assert_eq!(exit(&["api-k8s"]), Some(0));
    assert_eq!(exit(&["api-k8s", "down-k8s"]), Some(69), "unreachable");
    kb.k8s.forbid("list", "events");
    assert_eq!(exit(&["api-k8s", "down-k8s"]), Some(77), "missing permissions outrank unreachable");
    assert_eq!(exit(&["api-k8s", "worker-k8s", "down-k8s"]), Some(64), "a wrong configuration outranks both");
}

#[test]
fn check_live_calls_a_missing_context_a_configuration_problem_and_an_unasked_permission_check_missing_permissions() {
    let kb = K8sBot::new();
    let check = |only: &[&str]| {
        kb.bot.rewrite_config(&k8s_config(only));
        let output = kb.bot.command(&["check", "--live"]).env("KUBECONFIG", &kb.kubeconfig).output().unwrap();
        (output.status.code(), crate::support::stdout(&output))
    };
    let (code, out) = check(&["nocontext-k8s"]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("nocontext-k8s: kubeconfig context prod-typo:"), "{out}");
    kb.k8s.forbid("create", "selfsubjectaccessreviews");
    let (code, out) = check(&["api-k8s"]);
    assert_eq!(code, Some(77), "{out}");
    assert!(
        out.contains("api-k8s: opsbot may not create selfsubjectaccessreviews, so it cannot check its permissions"),
        "{out}"
    );
    let reviews =
        kb.k8s.requests().iter().filter(|(m, p)| m == "POST" && p.ends_with("selfsubjectaccessreviews")).count();
    assert!(reviews >= 1, "it did ask");
}
