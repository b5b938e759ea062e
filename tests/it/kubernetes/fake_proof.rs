//! The fake API server proven against the real kubectl.

use super::{history_rows, kubectl};
use crate::fake_k8s::FakeK8s;
use std::process::Command;

#[test]
fn the_fake_api_server_satisfies_the_real_kubectl() {
    let k8s = FakeK8s::start();
    k8s.add_deployment("shop", "api", "app", "registry.example.com/api:v1.0.0", 3);
    let dir = tempfile::tempdir().unwrap();
    let config = k8s.kubeconfig(dir.path());
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| String::from_utf8(kubectl(&config, &cache, args).stdout).unwrap();

    let got: serde_json::Value = serde_json::from_str(&run(&["get", "deploy", "api", "-o", "json"])).unwrap();
    assert_eq!(got["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.com/api:v1.0.0");

    run(&["scale", "deploy/api", "--replicas=4"]);
    assert_eq!(k8s.deployment("shop", "api")["spec"]["replicas"], 4);
    assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));

    run(&["rollout", "restart", "deploy/api"]);
    let restarted = k8s.deployment("shop", "api");
    assert!(restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    assert_eq!(restarted["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));
    let status = k8s.deployment("shop", "api")["status"].clone();
    assert_eq!((status["updatedReplicas"].as_u64(), status["availableReplicas"].as_u64()), (Some(4), Some(4)));

    run(&["rollout", "undo", "deploy/api"]);
    let undone = k8s.deployment("shop", "api");
    assert!(
        undone["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_null(),
        "{undone}"
    );
    assert_eq!(undone["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));

    let history = run(&["rollout", "history", "deploy/api"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");
}

#[test]
fn the_fake_keeps_change_causes_pauses_and_records_events_as_the_real_kubectl_sees_them() {
    let k8s = FakeK8s::start();
    k8s.add_deployment("shop", "api", "app", "registry.example.com/api:v1.0.0", 2);
    let dir = tempfile::tempdir().unwrap();
    let config = k8s.kubeconfig(dir.path());
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| String::from_utf8(kubectl(&config, &cache, args).stdout).unwrap();
    let deploy = |version: &str, cause: &str| {
        run(&["annotate", "deploy/api", "--overwrite", &format!("kubernetes.io/change-cause={cause}")]);
        run(&["set", "image", "deploy/api", &format!("app=registry.example.com/api:{version}")]);
        assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));
    };
    deploy("v2.0.0", "deploy v2 by alice");
    deploy("v3.0.0", "deploy v3 by bob");
    let rows = history_rows(&run(&["rollout", "history", "deploy/api"]));
    assert_eq!(rows[1..], [("2".into(), "deploy v2 by alice".into()), ("3".into(), "deploy v3 by bob".into())]);

    // kubectl's undo brings the ReplicaSet's change-cause back with its template.
    run(&["rollout", "undo", "deploy/api"]);
    assert_eq!(
        k8s.deployment("shop", "api")["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "deploy v2 by alice"
    );
    assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));
    let rows = history_rows(&run(&["rollout", "history", "deploy/api"]));
    assert_eq!(rows[1..], [("3".into(), "deploy v3 by bob".into()), ("4".into(), "deploy v2 by alice".into())]);

    // Paused: a template change waits (no ReplicaSet, no revision) until resumed.
    run(&["rollout", "pause", "deploy/api"]);
    assert_eq!(k8s.deployment("shop", "api")["spec"]["paused"], true);
    run(&["set", "image", "deploy/api", "app=registry.example.com/api:v5.0.0"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(k8s.replicasets("shop", "api").len(), 3, "no new ReplicaSet while paused");
    assert_eq!(k8s.deployment("shop", "api")["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4");
    let undo = Command::new("kubectl")
        .env("KUBECONFIG", &config)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--namespace", "shop", "rollout", "undo", "deploy/api"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&undo.stderr).contains("you cannot rollback a paused deployment"), "{undo:?}");
    run(&["rollout", "resume", "deploy/api"]);
    assert!(run(&["rollout", "status", "deploy/api", "--timeout=20s"]).contains("successfully rolled out"));
    assert_eq!(k8s.deployment("shop", "api")["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "5");

    // Events, as `kubectl get events` and `kubectl describe` read them: the
    // deployment controller's on the Deployment, the replicaset controller's
    // (quota) on the ReplicaSet.
    let replicaset = k8s.replicasets("shop", "api").last().unwrap()["metadata"]["name"].as_str().unwrap().to_string();
    k8s.add_event(
        "shop",
        ("ReplicaSet", &replicaset),
        "Warning",
        "FailedCreate",
        "pods \"api-x\" is forbidden: exceeded quota",
    );
    let reasons = |selector: &str| -> Vec<String> {
        let events: serde_json::Value =
            serde_json::from_str(&run(&["get", "events", "--field-selector", selector, "-o", "json"])).unwrap();
        events["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap().to_string()).collect()
    };
    assert!(reasons("involvedObject.kind=Deployment,involvedObject.name=api").contains(&"ScalingReplicaSet".into()));
    let on_replicaset = reasons(&format!("involvedObject.kind=ReplicaSet,involvedObject.name={replicaset}"));
    assert_eq!(on_replicaset, ["FailedCreate"]);
    let described = run(&["describe", "replicaset", &replicaset]);
    assert!(described.contains("FailedCreate") && described.contains("exceeded quota"), "{described}");
}
