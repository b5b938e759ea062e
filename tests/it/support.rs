//! Helpers: a scratch directory with a config, and ways to run the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_opsbot");

pub fn commands_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("commands")
}

/// The integration-test configuration; `ttl` is the production approval window.
pub fn config_text(ttl: &str, extra: &str) -> String {
    format!(
        r#"
[bot]
data_dir = "data"
commands_dir = "{commands}"
action_timeout = "1m"

[environments.staging]
[environments.production]

[groups]
developers = ["console:alice", "console:carol"]
sre = ["console:bob", "console:dave"]
commanders = ["console:dave"]

[services.api-service]
environment = "production"
channels = ["console:ops"]
min_replicas = 1
max_replicas = 10
backend = {{ type = "simulated", version = "v1.4.1", replicas = 3, step = "20ms", crashing_versions = ["v9.9.9-broken"] }}

[services.api-staging]
environment = "staging"
min_replicas = 1
max_replicas = 6
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "20ms", crashing_versions = ["v9.9.9-broken"] }}

[services.web-staging]
environment = "staging"
backend = {{ type = "simulated", version = "v3.0.0", replicas = 2, step = "20ms" }}

[services.jobs-staging]
environment = "staging"
backend = {{ type = "simulated", version = "v0.9.0", replicas = 2, step = "20ms" }}

[[rules]]
commands = ["read"]
environments = ["*"]
requesters = ["*"]

[[rules]]
commands = ["deploy", "rollback", "restart", "scale", "lock"]
environments = ["staging"]
requesters = ["developers", "sre"]

[[rules]]
commands = ["deploy", "rollback", "restart", "scale"]
environments = ["production"]
requesters = ["developers", "sre"]
approvers = ["sre"]
approvals = 1
ttl = "{ttl}"
break_glass = ["commanders"]

[[rules]]
commands = ["lock"]
environments = ["production"]
requesters = ["sre"]

[[rules]]
commands = ["incident"]
environments = ["*"]
requesters = ["*"]
{extra}
"#,
        commands = commands_dir().display()
    )
}

/// A scratch bot: its own directory, config and data.
pub struct Bot {
    pub dir: tempfile::TempDir,
}

impl Bot {
    pub fn new() -> Bot {
        Bot::with_config(&config_text("30m", ""))
    }

    pub fn with_config(text: &str) -> Bot {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("opsbot.toml"), text).expect("write config");
        Bot { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("opsbot.toml")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(self.config(), text).expect("write config");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(self.config()).args(args).env_remove("OPSBOT_DATA_DIR").env("OPSBOT_LOG", "warn");
        // Tests name every AWS setting they want; nothing leaks in from the machine.
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Runs the console with these lines on stdin; returns when it exits.
    pub fn console(&self, lines: &[&str]) -> Output {
        self.console_env(lines, &[])
    }

    /// Like [`Bot::console`], with extra environment variables.
    pub fn console_env(&self, lines: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
        let mut command = self.command(&["console", "--as", "console:alice"]);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn console");
        let mut stdin = child.stdin.take().expect("stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write stdin");
        }
        drop(stdin);
        let output = child.wait_with_output().expect("console runs");
        assert!(output.status.success(), "console failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    pub fn spawn_console(&self) -> Child {
        self.command(&["console", "--as", "console:alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn console")
    }

    /// `opsbot audit export` as parsed JSON records.
    pub fn export(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["audit", "export"];
        all.extend_from_slice(args);
        let output = self.command(&all).output().expect("export runs");
        assert!(output.status.success(), "export failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("export writes JSON lines"))
            .collect()
    }

    pub fn verify(&self) -> Output {
        self.command(&["audit", "verify"]).output().expect("verify runs")
    }
}

/// Every file under `dir` (sorted path → SHA-256 of its bytes): a change to
/// any byte of any file shows.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "admin.sock") {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), hex::encode(Sha256::digest(&bytes))));
            }
        }
    }
    out.sort();
    out
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// (kind, outcome) of every record about `request`, in order.
pub fn steps(records: &[serde_json::Value], request: &str) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["request_id"] == request)
        .map(|r| (r["kind"].as_str().unwrap_or("").to_string(), r["outcome"].as_str().unwrap_or("").to_string()))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}
