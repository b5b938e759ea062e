//! Kubernetes: the fake API server (`fake_k8s`) proven with the real kubectl
//! (`fake_proof`), the ordinary flows driven from the console (`flows`), and
//! the cases where the bot must not claim success it cannot see (`truth`,
//! issue #13), and what happens at opsbot's own rollout deadline
//! (`deadlines`). Every test asserts on the fake's state, not only on words.

mod deadlines;
mod fake_proof;
mod fence;
mod flows;
mod truth;
mod writes;

use crate::fake_k8s::FakeK8s;
use crate::relay::Relay;
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

/// (revision, change-cause) rows of `kubectl rollout history`.
fn history_rows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (revision, cause) = line.trim().split_once(char::is_whitespace)?;
            revision.parse::<u64>().ok().map(|_| (revision.to_string(), cause.trim().to_string()))
        })
        .collect()
}

/// A kubeconfig with the fake as context `fake`, the relay in front of it as
/// `relay`, and a closed port as `down`.
fn kubeconfig(k8s: &FakeK8s, relay: &Relay, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let cluster = |name: &str, url: &str| format!("- name: {name}\n  cluster:\n    server: {url}\n");
    let context = |name: &str| format!("- name: {name}\n  context:\n    cluster: {name}\n    user: u\n");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{}{}{}contexts:\n{}{}{}current-context: fake\nusers:\n- name: u\n  user:\n    token: t\n",
        cluster("fake", &k8s.url),
        cluster("relay", &relay.url()),
        cluster("down", "http://127.0.0.1:1"),
        context("fake"),
        context("relay"),
        context("down"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One Kubernetes service of the test configuration.
struct K8sService {
    name: &'static str,
    deployment: &'static str,
    container: &'static str,
    context: &'static str,
    auto_rollback: bool,
}

const SERVICES: [K8sService; 6] = [
    K8sService { name: "api-k8s", deployment: "api", container: "app", context: "fake", auto_rollback: true },
    K8sService { name: "web-k8s", deployment: "web", container: "app", context: "fake", auto_rollback: false },
    K8sService { name: "down-k8s", deployment: "api", container: "app", context: "down", auto_rollback: false },
    K8sService { name: "api-relay", deployment: "api", container: "app", context: "relay", auto_rollback: true },
    // The pod's container is `worker`: a typo in the config.
    K8sService { name: "worker-k8s", deployment: "worker", container: "wrkr", context: "fake", auto_rollback: false },
    // A context the kubeconfig does not have: a typo in the config.
    K8sService {
        name: "nocontext-k8s",
        deployment: "api",
        container: "app",
        context: "prod-typo",
        auto_rollback: false,
    },
];

/// The test configuration with the named Kubernetes services (all when empty).
fn k8s_config(only: &[&str]) -> String {
    let services: String = SERVICES
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .map(|s| {
            format!(
                "\n[services.{}]\nenvironment = \"staging\"\nmin_replicas = 1\nmax_replicas = 6\nbackend = {{ type = \"kubernetes\", context = \"{}\", namespace = \"shop\", deployment = \"{}\", container = \"{}\", image = \"registry.example.com/{}\", auto_rollback = {}, poll = \"50ms\", rollout_timeout = \"20s\", call_timeout = \"1s\" }}\n",
                s.name, s.context, s.deployment, s.container, s.deployment, s.auto_rollback
            )
        })
        .collect();
    crate::support::config_text("30m", "").replacen("[[rules]]", &format!("{services}\n[[rules]]"), 1)
}

struct K8sBot {
    k8s: FakeK8s,
    relay: Relay,
    bot: crate::support::Bot,
    kubeconfig: std::path::PathBuf,
}

impl K8sBot {
    fn new() -> K8sBot {
        K8sBot::with(FakeK8s::start())
    }

    fn with(k8s: FakeK8s) -> K8sBot {
        K8sBot::with_rollout_timeout(k8s, "20s")
    }

    /// Every service with this `rollout_timeout` (opsbot's own deadline).
    fn with_rollout_timeout(k8s: FakeK8s, rollout_timeout: &str) -> K8sBot {
        k8s.add_deployment("shop", "api", "app", "registry.example.com/api:v1.0.0", 3);
        k8s.add_deployment("shop", "web", "app", "registry.example.com/web:v1.0.0", 2);
        k8s.add_deployment("shop", "worker", "worker", "registry.example.com/worker:v3.0.0", 1);
        let relay = Relay::start(&k8s.url);
        let config =
            k8s_config(&[]).replace("rollout_timeout = \"20s\"", &format!("rollout_timeout = \"{rollout_timeout}\""));
        let bot = crate::support::Bot::with_config(&config);
        let kubeconfig = kubeconfig(&k8s, &relay, bot.dir.path());
        K8sBot { k8s, relay, bot, kubeconfig }
    }

    /// Runs the console against the fake; the transcript is printed, so
    /// `cargo test --test it kubernetes -- --nocapture` shows each flow.
    fn console(&self, lines: &[&str]) -> String {
        let out = crate::support::stdout(&self.bot.console_env(lines, &[("KUBECONFIG", self.kubeconfig.as_os_str())]));
        println!("$ opsbot console <<< {lines:?}\n{out}");
        out
    }

    /// The real kubectl against the fake.
    fn kubectl(&self, args: &[&str]) -> String {
        let cache = self.bot.dir.path().join("kubectl-cache");
        String::from_utf8(kubectl(&self.kubeconfig, &cache, args).stdout).unwrap()
    }

    /// The outcome recorded for `request` in the audit trail.
    fn outcome(&self, request: &str) -> String {
        let steps = crate::support::steps(&self.bot.export(&[]), request);
        steps.iter().rev().find(|(kind, _)| kind == "outcome").map(|(_, o)| o.clone()).unwrap_or_default()
    }
}

/// Waits (up to 10 s) until `condition` holds.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
