//! Kubernetes: the fake API server proven against the real kubectl.

use crate::fake_k8s::FakeK8s;
use std::path::Path;
use std::process::{Command, Output};

fn kubectl(k8s_config: &Path, cache: &Path, args: &[&str]) -> Output {
    let output = Command::new("kubectl")
        .env("KUBECONFIG", k8s_config)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--namespace", "shop", "--request-timeout", "10s"])
        .args(args)
        .output()
        .expect("kubectl is installed (Debian: kubernetes-client)");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

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

/// A kubeconfig with the fake as context `fake` and a closed port as `down`.
fn kubeconfig(k8s: &FakeK8s, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n- name: down\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\n- name: down\n  context:\n    cluster: down\n    user: u\ncurrent-context: fake\nusers:\n- name: u\n  user:\n    token: t\n",
        url = k8s.url
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn k8s_config() -> String {
    let k8s = |name: &str, deployment: &str, context: &str, auto: bool| {
        format!(
            "\n[services.{name}]\nenvironment = \"staging\"\nmin_replicas = 1\nmax_replicas = 6\nbackend = {{ type = \"kubernetes\", context = \"{context}\", namespace = \"shop\", deployment = \"{deployment}\", container = \"app\", image = \"registry.example.com/{deployment}\", auto_rollback = {auto}, poll = \"50ms\", rollout_timeout = \"20s\" }}\n"
        )
    };
    let services = [
        k8s("api-k8s", "api", "fake", true),
        k8s("web-k8s", "web", "fake", false),
        k8s("down-k8s", "api", "down", false),
    ]
    .concat();
    crate::support::config_text("30m", "").replacen("[[rules]]", &format!("{services}\n[[rules]]"), 1)
}

struct K8sBot {
    k8s: FakeK8s,
    bot: crate::support::Bot,
    kubeconfig: std::path::PathBuf,
}

impl K8sBot {
    fn new() -> K8sBot {
        let k8s = FakeK8s::start();
        k8s.add_deployment("shop", "api", "app", "registry.example.com/api:v1.0.0", 3);
        k8s.add_deployment("shop", "web", "app", "registry.example.com/web:v1.0.0", 2);
        let bot = crate::support::Bot::with_config(&k8s_config());
        let kubeconfig = kubeconfig(&k8s, bot.dir.path());
        K8sBot { k8s, bot, kubeconfig }
    }

    /// Runs the console against the fake; the transcript is printed, so
    /// `cargo test --test it kubernetes -- --nocapture` shows each flow.
    fn console(&self, lines: &[&str]) -> String {
        let out = crate::support::stdout(&self.bot.console_env(lines, &[("KUBECONFIG", self.kubeconfig.as_os_str())]));
        println!("$ opsbot console <<< {lines:?}\n{out}");
        out
    }
}

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
