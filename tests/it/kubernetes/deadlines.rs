//! opsbot's own rollout deadline (`rollout_timeout`) is not a failure by
//! itself: only failing pods named (or the controller's
//! `ProgressDeadlineExceeded`) make it one, and only a failure is rolled back
//! automatically. A slow but healthy rollout, or pods that cannot be read, end
//! "unknown", and the release is left to finish. Each test checks what the
//! fake holds afterwards.

use super::{wait_until, K8sBot};
use crate::fake_k8s::FakeK8s;
use std::time::Duration;

const API_V1: &str = "registry.example.com/api:v1.0.0";

/// No undo was written (opsbot's rollback replaces the Deployment).
fn rolled_back(kb: &K8sBot) -> bool {
    kb.k8s.requests().iter().any(|(method, _)| method == "PUT")
}

/// The controller's own deadline far away, so opsbot's comes first.
fn patient_controller(kb: &K8sBot) {
    kb.kubectl(&["patch", "deploy/api", "-p", r#"{"spec":{"progressDeadlineSeconds":600}}"#]);
}

#[test]
fn a_slow_but_healthy_rollout_at_opsbots_deadline_is_unknown_and_not_rolled_back() {
    // 600 ms per replica: three replicas take longer than opsbot's 1 s.
    let kb = K8sBot::with_rollout_timeout(FakeK8s::with_step(Duration::from_millis(600)), "1s");
    let out = kb.console(&["/deploy api-k8s v2.0.0"]);
    // The fake's controller steps every 600 ms; on a loaded machine its
    // first step (which observes the new generation) can come after the
    // 1 s deadline. Either way the outcome is unknown and nothing is undone.
    let applied = "❔ r-1: unknown: deploy of registry.example.com/api:v2.0.0 was applied: ";
    assert!(
        (out.contains(&format!("{applied}still rolling out after 1s; live state: deployment shop/api holds app=registry.example.com/api:v2.0.0"))
            || out.contains(&format!("{applied}the deployment controller has not observed generation 2 yet after 1s; live state: deployment shop/api holds app=registry.example.com/api:v2.0.0")))
            && out.contains("no failing pods seen; nothing was rolled back"),
        "{out}"
    );
    assert_eq!(kb.outcome("r-1"), "unknown");
    assert!(!rolled_back(&kb), "a healthy release is not rolled back");
    wait_until("the rollout to finish on its own", || {
        kb.k8s.deployment("shop", "api")["status"]["availableReplicas"] == 3
            && kb.k8s.deployment("shop", "api")["status"]["updatedReplicas"] == 3
    });
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v2.0.0");
}

#[test]
fn failing_pods_named_at_opsbots_deadline_fail_the_deploy_and_roll_it_back() {
    let kb = K8sBot::with_rollout_timeout(FakeK8s::start(), "1s");
    patient_controller(&kb);
    let out = kb.console(&["/deploy api-k8s v2.0.0-crash"]);
    let line = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        line.contains("deploy of registry.example.com/api:v2.0.0-crash failed: the rollout did not complete within 1s; failing pods: api-")
            && line.contains(": CrashLoopBackOff (4 restarts)"),
        "{out}"
    );
    assert!(line.contains("rolled back automatically to revision 1"), "{out}");
    assert!(rolled_back(&kb));
    assert_eq!(kb.k8s.image("shop", "api"), API_V1);
}

#[test]
fn pods_that_cannot_be_listed_at_opsbots_deadline_leave_the_outcome_unknown_and_nothing_rolled_back() {
    let kb = K8sBot::with_rollout_timeout(FakeK8s::start(), "1s");
    patient_controller(&kb);
    kb.k8s.forbid("list", "pods");
    let out = kb.console(&["/deploy api-k8s v2.0.0-crash"]);
    assert!(
        out.contains("❔ r-1: unknown: deploy of registry.example.com/api:v2.0.0-crash was applied: still rolling out after 1s")
            && out.contains("the new pods could not be read (Kubernetes refused to let opsbot list pods in namespace shop (403 Forbidden)")
            && out.contains("nothing was rolled back"),
        "{out}"
    );
    assert_eq!(kb.outcome("r-1"), "unknown");
    assert!(!rolled_back(&kb), "no rollback without a failure seen");
    assert_eq!(kb.k8s.image("shop", "api"), "registry.example.com/api:v2.0.0-crash");
}

#[test]
fn pods_no_node_can_take_are_named_and_their_scheduling_events_shown() {
    let kb = K8sBot::new();
    let out = kb.console(&[
        "/deploy api-k8s v2.0.0-unschedulable",
        "/wait",
        "/deploy web-k8s v2.0.0-unschedulable",
        "/wait",
        "/status web-k8s",
    ]);
    let line = out.lines().find(|l| l.starts_with("❌ r-1")).unwrap_or_default();
    assert!(
        line.contains("rollout exceeded its progress deadline")
            && line.contains("failing pods: api-")
            && line.contains(": Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."),
        "{out}"
    );
    assert!(line.contains("rolled back automatically to revision 1"), "{out}");
    assert_eq!(kb.k8s.image("shop", "api"), API_V1);
    // Without auto_rollback, /status shows the pending pods and the scheduler's events.
    assert!(out.contains("failing pods: web-") && out.contains("Unschedulable: 0/3 nodes"), "{out}");
    assert!(out.contains("Warning FailedScheduling: 0/3 nodes are available"), "{out}");
    assert_eq!(kb.k8s.image("shop", "web"), "registry.example.com/web:v2.0.0-unschedulable");
    let scheduler =
        kb.k8s.events().into_iter().filter(|(kind, _, reason)| kind == "Pod" && reason == "FailedScheduling");
    assert!(scheduler.count() >= 2, "recorded on the pods, where the scheduler records them");
}
