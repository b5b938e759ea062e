//! Writes whose answer is lost or wrong: settled from the live Deployment,
//! and never reported as failed when they may still land (an API server can
//! commit a write after its client gave up). Each test checks the fake.

use super::{wait_until, K8sBot};
use std::time::Duration;

const API_V1: &str = "registry.example.com/api:v1.0.0";
const API_V2: &str = "registry.example.com/api:v2.0.0";

fn patches(kb: &K8sBot) -> usize {
    kb.k8s.requests().iter().filter(|(m, p)| m == "PATCH" && p.ends_with("/deployments/api")).count()
}

#[test]
fn a_write_still_not_applied_after_its_last_lost_answer_is_unknown_not_failed() {
    let kb = K8sBot::new();
    for _ in 0..4 {
        kb.k8s.fail_next("patch", 500);
    }
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(
        out.contains("❔ r-1: unknown: deploy of registry.example.com/api:v2.0.0: Kubernetes answered 500 to patch deployments (tried 4 times)")
            && out.contains("re-read: not applied yet (deployment shop/api holds app=registry.example.com/api:v1.0.0")
            && out.contains("but the API server may still apply it; check deployment shop/api before trying again"),
        "{out}"
    );
    assert_eq!(kb.outcome("r-1"), "unknown");
    assert_eq!(patches(&kb), 4, "four tries, each settled by a read first");
    assert_eq!(kb.k8s.image("shop", "api"), API_V1);
}

#[test]
fn a_5xx_to_a_write_that_landed_is_settled_from_the_live_state_and_not_sent_again() {
    let kb = K8sBot::new();
    kb.k8s.land_then_fail_nth("patch", 1, 500);
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    assert!(out.contains("deploy of registry.example.com/api:v2.0.0 got no answer (Kubernetes answered 500"), "{out}");
    assert!(
        out.contains("re-read: it was applied") && out.contains("✅ r-1: api-k8s runs registry.example.com/api:v2.0.0"),
        "{out}"
    );
    assert_eq!(patches(&kb), 1);
    assert_eq!(kb.k8s.image("shop", "api"), API_V2);
}

#[test]
fn a_rollback_whose_answer_is_lost_is_settled_from_the_live_state() {
    let kb = K8sBot::new();
    kb.console(&["/deploy api-k8s v2.0.0"]);
    kb.k8s.slow_nth("update", 1, Duration::from_secs(30));
    let out = kb.console(&["/rollback api-k8s"]);
    assert!(out.contains("rollback to revision 1 got no answer") && out.contains("re-read: it was applied"), "{out}");
    assert!(out.contains("✅ r-2: api-k8s rolled back to revision 1 (registry.example.com/api:v1.0.0)"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V1);
    let puts = kb.k8s.requests().iter().filter(|(m, _)| m == "PUT").count();
    assert_eq!(puts, 1, "not sent twice");
}

#[test]
fn an_automatic_rollback_whose_write_cannot_be_settled_is_unknown_not_failed_too() {
    let kb = K8sBot::new();
    // The rollback's replace is applied, its answer lost, and then nothing can be read.
    kb.k8s.slow_nth("update", 1, Duration::from_secs(30));
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_until("opsbot's rollback write", || kb.k8s.requests().iter().any(|(m, _)| m == "PUT"));
            kb.k8s.forbid("get", "deployments");
        });
        kb.console(&["/deploy api-k8s v3.0.0-crash"])
    });
    let line = out.lines().find(|l| l.starts_with("❔ r-1")).unwrap_or_default();
    assert!(
        line.contains("deploy of registry.example.com/api:v3.0.0-crash failed: rollout exceeded its progress deadline")
            && line.contains("the automatic rollback to revision 1 may or may not have been applied")
            && line.contains("the live state cannot be read"),
        "{out}"
    );
    assert!(!out.contains("failed too"), "{out}");
    assert_eq!(kb.outcome("r-1"), "unknown");
    assert_eq!(kb.k8s.image("shop", "api"), API_V1, "the rollback did land");
}
