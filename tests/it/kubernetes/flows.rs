//! The ordinary flows, driven from the console against the fake.

use super::K8sBot;

#[test]
fn deploy_sets_the_image_records_the_cause_and_watches_the_rollout() {
    let kb = K8sBot::new();
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0 (revision 2)"), "{out}");
    assert!(out.contains("api: 3/3 updated") || out.contains("updated, "), "progress was reported: {out}");
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v2.0.0");
    let d = kb.k8s.deployment("shop", "api");
    assert_eq!(
        d["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "opsbot r-1: deploy v2.0.0 requested by console:alice"
    );
    let progress = crate::support::steps(&kb.bot.export(&[]), "r-1").iter().filter(|(k, _)| k == "progress").count();
    assert!(progress >= 2, "milestones are in the audit trail");
}

#[test]
fn a_crashing_deploy_fails_naming_the_reason_and_rolls_back_by_policy() {
    let kb = K8sBot::new();
    let out = kb.console(&[
        "/deploy api-k8s v3.0.0-crash",
        "/wait",
        "/deploy web-k8s v3.0.0-crash",
        "/wait",
        "/status web-k8s",
    ]);
    assert!(
        out.contains(
            "❌ r-1: deploy of registry.example.com/api:v3.0.0-crash failed: rollout exceeded its progress deadline"
        ),
        "{out}"
    );
    assert!(out.contains("CrashLoopBackOff"), "{out}");
    assert!(out.contains("rolled back automatically to revision 1"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v1.0.0");
    let steps = crate::support::steps(&kb.bot.export(&[]), "r-1");
    assert!(steps.iter().any(|(k, _)| k == "progress"), "{steps:?}");
    assert_eq!(steps.last().unwrap(), &("outcome".to_string(), "failed".to_string()));
    let records = kb.bot.export(&["--request", "r-1"]);
    assert!(records.iter().any(|r| r["detail"].as_str().unwrap_or("").contains("rolling back automatically")));
    // Without auto_rollback the failure offers the rollback, and /status shows the damage.
    assert!(out.contains("`/rollback web-k8s` restores the previous revision"), "{out}");
    assert!(
        out.contains("ProgressDeadlineExceeded")
            && out.contains("web-")
            && out.contains("CrashLoopBackOff (4 restarts)"),
        "{out}"
    );
}

#[test]
fn rollback_to_a_named_revision_restart_and_scale() {
    let kb = K8sBot::new();
    let out = kb.console(&[
        "/deploy api-k8s v2.0.0",
        "/wait",
        "/deploy api-k8s v2.1.0",
        "/wait",
        "/rollback api-k8s 1",
        "/wait",
        "/restart api-k8s",
        "/wait",
        "/scale api-k8s 5",
        "/wait",
        "/scale api-k8s 9",
        "/status api-k8s",
    ]);
    assert!(
        out.contains("✅ r-3: api-k8s rolled back to revision 1 (registry.example.com/api:v1.0.0), now revision 4"),
        "{out}"
    );
    assert!(out.contains("✅ r-4: api-k8s restarted"), "{out}");
    assert!(out.contains("✅ r-5: api-k8s runs 5 replicas"), "{out}");
    assert!(out.contains("api-k8s allows 1 to 6 replicas; 9 is outside that"), "{out}");
    let d = kb.k8s.deployment("shop", "api");
    assert_eq!(d["spec"]["replicas"], 5);
    assert!(d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v1.0.0");
    assert!(out.contains("5 desired, 5 updated, 5 ready, 5 available — rollout complete"), "{out}");
}

#[test]
fn conflicts_are_retried_and_permission_and_connection_problems_are_named() {
    let kb = K8sBot::new();
    kb.k8s.fail_next("patch", 409);
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("✅ r-1"), "a 409 is retried against fresh state: {out}");
    let patches = kb.k8s.requests().iter().filter(|(m, p)| m == "PATCH" && p.ends_with("/deployments/api")).count();
    assert_eq!(patches, 2);

    kb.k8s.forbid("patch", "deployments");
    let out = kb.console(&["/deploy api-k8s v2.2.0", "/wait", "/deploy down-k8s v1"]);
    assert!(
        out.contains("❌ r-2: Kubernetes refused to let opsbot patch deployments in namespace shop (403 Forbidden)"),
        "{out}"
    );
    assert!(out.contains("❌ r-3: cannot reach the Kubernetes API server of context down"), "{out}");
    let records = kb.bot.export(&[]);
    let failed: Vec<&str> =
        records.iter().filter(|r| r["outcome"] == "failed").map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(failed, ["r-2", "r-3"]);
}

#[test]
fn check_live_names_missing_permissions_and_the_rule_that_fixes_them() {
    let kb = K8sBot::new();
    let run = || kb.bot.command(&["check", "--live"]).env("KUBECONFIG", &kb.kubeconfig).output().unwrap();
    let output = run();
    let out = crate::support::stdout(&output);
    assert!(out.contains("api-k8s: ok — shop/api visible, container app present, all verbs granted"), "{out}");
    assert!(out.contains("down-k8s: cannot reach the Kubernetes API server of context down"), "{out}");
    assert!(!output.status.success());
    kb.k8s.forbid("patch", "deployments/scale");
    kb.k8s.forbid("list", "pods");
    let out = crate::support::stdout(&run());
    assert!(out.contains("web-k8s: missing permissions in namespace shop"), "{out}");
    assert!(out.contains("resources: [\"deployments/scale\"]\n  verbs: [\"patch\"]"), "{out}");
    assert!(out.contains("- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"list\"]"), "{out}");
}

#[test]
fn a_rollback_to_the_template_that_runs_is_skipped_as_kubectl_skips_it() {
    let kb = K8sBot::new();
    let out = kb.console(&["/rollback api-k8s 1"]);
    assert!(
        out.contains("✅ r-1: api-k8s: nothing to roll back, shop/api already runs the pod template of revision 1; nothing changed (deployment shop/api holds app=registry.example.com/api:v1.0.0 (revision 1)"),
        "{out}"
    );
    assert!(!kb.k8s.requests().iter().any(|(m, _)| m == "PUT" || m == "PATCH"), "nothing written");
    assert_eq!(kb.k8s.replicasets("shop", "api").len(), 1);
}
