//! Discord end to end: the real `opsbot serve` binary against `fake_discord`
//! (REST and gateway on one port), with interactions signed by Ed25519 as
//! Discord signs them (ring here; PyNaCl in one test), and the fake proven
//! with discord.py.

use crate::fake_discord::{FakeDiscord, Fault, APPLICATION, TOKEN};
use crate::slack::Served;
use crate::support::commands_dir;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(15);
/// The test application's signing seed (Discord holds the private key; the
/// bot gets the public one).
const SEED: [u8; 32] = [7; 32];

pub const OPS: &str = "7000000000000001";
pub const ALICE: &str = "1000000000000001";
pub const BOB: &str = "1000000000000002";
pub const MALLORY: &str = "1000000000000009";

fn key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&SEED).unwrap()
}

fn public_hex() -> String {
    hex::encode(key().public_key().as_ref())
}

fn config(mode: &str) -> String {
    format!(
        r#"
[bot]
data_dir = "data"
commands_dir = "{commands}"

[slack]
mode = "http"
channel_interval = "20ms"
channel_burst = 5

[discord]
mode = "{mode}"
channel_interval = "20ms"
channel_burst = 5

[environments.staging]
[environments.production]

[groups]
developers = ["slack:UALICE", "discord:{ALICE}"]
sre = ["slack:UBOB", "discord:{BOB}"]

[people]
alice = ["slack:UALICE", "discord:{ALICE}"]

[services.api-service]
environment = "production"
channels = ["slack:COPS", "discord:{OPS}"]
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

[services.api-staging]
environment = "staging"
backend = {{ type = "simulated", version = "v1.4.1", replicas = 2, step = "30ms" }}

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

[[rules]]
commands = ["incident"]
environments = ["*"]
requesters = ["*"]
"#,
        commands = commands_dir().display()
    )
}

/// `opsbot serve` with Slack and Discord, against both fakes.
pub struct DiscordServed {
    pub served: Served,
    pub discord: FakeDiscord,
}

impl DiscordServed {
    pub fn start(mode: &str) -> DiscordServed {
        DiscordServed::with_config(&config(mode))
    }

    pub fn with_config(text: &str) -> DiscordServed {
        DiscordServed::with_config_env(text, &[])
    }

    /// With these environment variables too (an alert source's secret).
    pub fn with_config_env(text: &str, extra: &[(&str, &OsStr)]) -> DiscordServed {
        let discord = FakeDiscord::start();
        let url = discord.url();
        let public = public_hex();
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("DISCORD_TOKEN", OsStr::new(TOKEN)),
            ("DISCORD_APPLICATION_ID", OsStr::new(APPLICATION)),
            ("DISCORD_PUBLIC_KEY", OsStr::new(&public)),
            ("DISCORD_API_URL", OsStr::new(&url)),
        ];
        env.extend_from_slice(extra);
        let served = Served::with_env(text, &env);
        DiscordServed { served, discord }
    }

    /// POSTs an interaction to the endpoint, signed at `ts` (or not at all).
    pub fn post(&self, body: &str, ts: i64, signature: Option<String>) -> (u16, String) {
        let mut request =
            ureq::post(&format!("{}/discord/interactions", self.served.base)).set("Content-Type", "application/json");
        if let Some(signature) = signature {
            request = request.set("X-Signature-Timestamp", &ts.to_string()).set("X-Signature-Ed25519", &signature);
        }
        match request.send_string(body) {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
            Err(e) => panic!("request failed: {e}"),
        }
    }

    pub fn sign(ts: i64, body: &str) -> String {
        let mut message = ts.to_string().into_bytes();
        message.extend_from_slice(body.as_bytes());
        hex::encode(key().sign(&message).as_ref())
    }

    /// Posts `payload` signed now; the interaction response.
    pub fn interact(&self, payload: &Value) -> Value {
        let body = payload.to_string();
        let ts = chrono::Utc::now().timestamp();
        let (status, answer) = self.post(&body, ts, Some(Self::sign(ts, &body)));
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str(&answer).unwrap()
    }

    pub fn slash(&self, user: &str, name: &str, options: Value) -> Value {
        self.interact(&self.discord.command_interaction(user, OPS, name, options))
    }

    /// The approval card in the ops channel (the message with buttons).
    pub fn card(&self) -> crate::fake_discord::Stored {
        self.discord
            .messages_in(OPS)
            .into_iter()
            .find(|m| m.content.contains("Approval needed") || m.content.contains("Approved"))
            .expect("an approval card")
    }

    pub fn wait_for_card(&self) -> crate::fake_discord::Stored {
        self.discord.wait_for("the approval card", LONG, |d| {
            d.messages_in(OPS).iter().any(|m| m.content.contains("Approval needed"))
        });
        self.card()
    }
}

fn button_id(card: &crate::fake_discord::Stored, label: &str) -> String {
    card.components[0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["label"] == label)
        .unwrap_or_else(|| panic!("no {label} button on {:?}", card.components))["custom_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn option(name: &str, kind: u8, value: Value) -> Value {
    json!({"name": name, "type": kind, "value": value})
}

impl DiscordServed {
    /// r-1: Alice's production deploy of v1.4.2, approved by Bob's click
    /// and finished, so api-service has a revision to roll back to.
    fn deployed(&self) {
        let ack = self.slash(
            ALICE,
            "deploy",
            json!([option("service", 3, json!("api-service")), option("version", 3, json!("v1.4.2"))]),
        );
        assert!(ack["data"]["content"].as_str().unwrap().contains("r-1 is waiting"), "{ack}");
        let card = self.wait_for_card();
        self.interact(&self.discord.button_interaction(BOB, OPS, &card.id, &button_id(&card, "Approve")));
        self.discord.wait_for("r-1's outcome", LONG, |d| {
            d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-1"))
        });
    }

    /// The newest card waiting for a decision.
    fn pending_card(&self) -> crate::fake_discord::Stored {
        self.discord.wait_for("an open approval card", LONG, |d| {
            d.messages_in(OPS).iter().any(|m| m.content.contains("Approval needed"))
        });
        self.discord.messages_in(OPS).into_iter().rfind(|m| m.content.contains("Approval needed")).unwrap()
    }
}

#[test]
fn a_production_rollback_over_http_is_approved_by_button_and_runs_in_a_thread() {
    let bot = DiscordServed::start("http");
    bot.deployed();
    let ack = bot.slash(ALICE, "rollback", json!([option("service", 3, json!("api-service"))]));
    assert_eq!(ack["type"], 4, "{ack}");
    let text = ack["data"]["content"].as_str().unwrap();
    assert!(text.contains("r-2 is waiting for 1 approval(s) from sre"), "{ack}");
    assert_eq!(ack["data"]["allowed_mentions"], json!({"parse": []}), "answers never ping");

    let card = bot.pending_card();
    assert!(card.content.contains("rollback api-service") && card.content.contains(&format!("<@{ALICE}>")), "{card:?}");
    let approve = button_id(&card, "Approve");
    assert!(approve.starts_with("opsbot:approve:r-2:"), "{approve}");

    // The requester's own click: refused, privately, with why.
    let own = bot.interact(&bot.discord.button_interaction(ALICE, OPS, &card.id, &approve));
    assert_eq!((own["type"].as_u64(), own["data"]["flags"].as_u64().map(|f| f & 64)), (Some(4), Some(64)), "{own}");
    assert!(own["data"]["content"].as_str().unwrap().contains("cannot approve your own request"), "{own}");
    // Someone outside the approver group: refused too.
    let outsider = bot.interact(&bot.discord.button_interaction(MALLORY, OPS, &card.id, &approve));
    assert!(outsider["data"]["content"].as_str().unwrap().contains("only sre can vote on r-2"), "{outsider}");
    assert_eq!(
        bot.discord.message(&card.id).unwrap().components[0]["components"].as_array().unwrap().len(),
        2,
        "still open"
    );

    // An SRE approves.
    let approved = bot.interact(&bot.discord.button_interaction(BOB, OPS, &card.id, &approve));
    assert_eq!(approved["type"], 6, "the card is edited in place: {approved}");
    bot.discord.wait_for("the outcome in the thread", LONG, |d| {
        d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-2"))
    });
    // The card shows the decision, who made it, and no buttons.
    let decided = bot.discord.message(&card.id).unwrap();
    assert!(decided.content.contains("**Approved**") && decided.content.contains(&format!("<@{BOB}>")), "{decided:?}");
    assert_eq!(decided.components, json!([]));
    // Start, progress (one message, edited) and outcome in the card's thread.
    assert!(bot.discord.has_thread(&card.id));
    let thread = bot.discord.messages_in(&card.id);
    assert!(thread.iter().any(|m| m.content.contains("r-2: [simulated] rollback api-service")), "{thread:#?}");
    let progress: Vec<_> = thread.iter().filter(|m| m.content.contains("replicas")).collect();
    assert_eq!(progress.len(), 1, "one progress message: {thread:#?}");
    // What runs now is the rollback's version, read from the backend itself.
    let status = bot.slash(BOB, "status", json!([option("service", 3, json!("api-service"))]));
    assert!(status["data"]["content"].as_str().unwrap().contains("v1.4.1"), "{status}");
    assert!(bot
        .discord
        .calls()
        .iter()
        .filter(|c| !c.path.starts_with("/webhooks") && !c.path.starts_with("/interactions"))
        .all(|c| c.authorization == format!("Bot {TOKEN}")));

    let records = bot.served.bot.export(&["--request", "r-2"]);
    let votes: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "vote")
        .map(|r| (r["actor"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    let (alice, mallory, bob) = (format!("discord:{ALICE}"), format!("discord:{MALLORY}"), format!("discord:{BOB}"));
    assert_eq!(votes, [(alice.as_str(), "refused"), (mallory.as_str(), "refused"), (bob.as_str(), "approve")]);
    assert!(records.iter().any(|r| r["kind"] == "outcome" && r["outcome"] == "succeeded"), "{records:#?}");
    assert_eq!(records[0]["channel"], format!("discord:{OPS}"));
    let verified = bot.served.bot.verify();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    bot.served.wait_for_metric("opsbot_discord_threads 0");
}

#[test]
fn forged_stale_and_missing_signatures_get_401_and_record_nothing() {
    let bot = DiscordServed::start("http");
    let payload =
        bot.discord.command_interaction(ALICE, OPS, "restart", json!([option("service", 3, json!("api-staging"))]));
    let body = payload.to_string();
    let now = chrono::Utc::now().timestamp();
    let forged = {
        let other = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
        let mut message = now.to_string().into_bytes();
        message.extend_from_slice(body.as_bytes());
        hex::encode(other.sign(&message).as_ref())
    };
    let tampered = body.replace("api-staging", "api-service");
    for (what, body, ts, signature) in [
        ("no signature", body.clone(), now, None),
        ("another key", body.clone(), now, Some(forged)),
        ("stale", body.clone(), now - 3600, Some(DiscordServed::sign(now - 3600, &body))),
        ("from the future", body.clone(), now + 3600, Some(DiscordServed::sign(now + 3600, &body))),
        ("body changed after signing", tampered, now, Some(DiscordServed::sign(now, &body))),
        ("not hex", body.clone(), now, Some("zz".repeat(64))),
    ] {
        let (status, answer) = bot.post(&body, ts, signature);
        assert_eq!(status, 401, "{what}: {answer}");
    }
    // Discord's own endpoint check: a signed PING gets a PONG.
    let ping = json!({"type": 1, "id": "1", "application_id": APPLICATION, "token": "t", "version": 1}).to_string();
    let (status, pong) = bot.post(&ping, now, Some(DiscordServed::sign(now, &ping)));
    assert_eq!((status, serde_json::from_str::<Value>(&pong).unwrap()), (200, json!({"type": 1})));
    std::thread::sleep(Duration::from_millis(300));
    let records = bot.served.bot.export(&[]);
    assert!(!records.iter().any(|r| r["kind"] == "request" || r["kind"] == "intent"), "{records:#?}");
    assert!(bot.discord.calls().is_empty(), "nothing was said: {:#?}", bot.discord.calls());
    let (_, metrics) = bot.served.get("/metrics");
    assert!(metrics.contains("opsbot_rejected_signatures_total 6"), "{metrics}");
}

#[test]
fn pynacl_signed_interactions_are_accepted() {
    let bot = DiscordServed::start("http");
    let payload =
        bot.discord.command_interaction(BOB, OPS, "status", json!([option("service", 3, json!("api-staging"))]));
    let body = payload.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let script = "import sys, nacl.signing\nkey = nacl.signing.SigningKey(bytes([7] * 32))\nprint(key.verify_key.encode().hex())\nprint(key.sign(sys.stdin.buffer.read()).signature.hex())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyNaCl");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{ts}{body}").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "PyNaCl is installed by scripts/test.sh");
    let lines: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines[0], public_hex(), "the same key pair");
    let (status, answer) = bot.post(&body, ts.parse().unwrap(), Some(lines[1].clone()));
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert!(answer["data"]["content"].as_str().unwrap().contains("api-staging"), "{answer}");
}

#[test]
fn a_request_made_in_slack_is_approved_from_discord_but_never_by_the_requesters_other_account() {
    let bot = DiscordServed::start("http");
    let ack = bot.served.command("UALICE", "COPS", "/deploy", "api-service v1.4.2", "trig-x");
    assert!(ack["text"].as_str().unwrap().contains("r-1 is waiting"), "{ack}");
    // Alice's Discord account is Alice: her approval is refused.
    let own = bot.slash(ALICE, "approve", json!([option("request", 3, json!("r-1"))]));
    assert_eq!(own["data"]["flags"].as_u64().unwrap() & 64, 64, "private: {own}");
    assert!(own["data"]["content"].as_str().unwrap().contains("cannot approve your own request"), "{own}");
    // Bob, on Discord, approves; it runs, and Slack's thread says so.
    let approved = bot.slash(BOB, "approve", json!([option("request", 3, json!("r-1"))]));
    assert!(!approved["data"]["content"].as_str().unwrap().contains("cannot"), "{approved}");
    bot.served.slack.wait_for("the outcome in Slack", LONG, |calls| {
        calls.iter().any(|c| {
            c.method == "chat.postMessage" && c.body["text"].as_str().unwrap_or("").contains(":white_check_mark: r-1")
        })
    });
    let records = bot.served.bot.export(&["--request", "r-1"]);
    let votes: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "vote")
        .map(|r| (r["actor"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    let (alice, bob) = (format!("discord:{ALICE}"), format!("discord:{BOB}"));
    assert_eq!(votes, [(alice.as_str(), "refused"), (bob.as_str(), "approve")]);
    assert_eq!(records[0]["actor"], "slack:UALICE");
}

#[test]
fn a_stale_button_is_refused_and_applied_to_nothing() {
    let bot = DiscordServed::start("http");
    bot.slash(ALICE, "rollback", json!([option("service", 3, json!("api-service"))]));
    let card = bot.wait_for_card();
    let approve = button_id(&card, "Approve");
    // The same request id with another version: a card from before a reset.
    let (prefix, _) = approve.rsplit_once(':').unwrap();
    let stale = format!("{prefix}:0123456789ab");
    let answer = bot.interact(&bot.discord.button_interaction(BOB, OPS, &card.id, &stale));
    assert!(answer["data"]["content"].as_str().unwrap().contains("earlier state of r-1"), "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(bot.card().content.contains("Approval needed"), "still waiting");
    // The card's own Deny button closes it; nothing runs.
    let deny = bot.interact(&bot.discord.button_interaction(BOB, OPS, &card.id, &button_id(&card, "Deny")));
    assert_eq!(deny["type"], 6, "{deny}");
    bot.discord.wait_for("the card closed", LONG, |d| d.message(&card.id).unwrap().content.contains("**Denied**"));
    assert_eq!(bot.discord.message(&card.id).unwrap().components, json!([]));
    let records = bot.served.bot.export(&["--request", "r-1"]);
    assert!(!records.iter().any(|r| r["kind"] == "intent"), "nothing ran: {records:#?}");
    let votes: Vec<&str> =
        records.iter().filter(|r| r["kind"] == "vote").map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(votes, ["refused", "deny"]);
}

#[test]
fn a_429_delays_but_delivers_every_message_in_order() {
    let bot = DiscordServed::start("http");
    for route in ["POST /channels/", "POST /channels/", "POST /channels/"] {
        bot.discord.fail(Fault { route: route.into(), status: 429, retry_after: Some(0.3), global: false });
    }
    bot.discord.fail(Fault { route: "POST /channels/".into(), status: 429, retry_after: Some(0.2), global: true });
    let ack = bot.slash(
        BOB,
        "deploy",
        json!([option("service", 3, json!("api-staging")), option("version", 3, json!("v2.0.0"))]),
    );
    assert!(ack["data"]["content"].as_str().is_some(), "{ack}");
    bot.discord.wait_for("the outcome", LONG, |d| {
        d.calls().iter().any(|c| c.status == 200 && c.body["content"].as_str().is_some_and(|t| t.starts_with("✅ r-1")))
    });
    let limited: Vec<_> = bot.discord.calls().into_iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len(), 4);
    // Every message got through once, the start before the outcome.
    let posted: Vec<String> = bot
        .discord
        .calls()
        .iter()
        .filter(|c| c.status == 200 && c.method == "POST" && c.path.ends_with("/messages"))
        .filter_map(|c| c.body["content"].as_str().map(str::to_string))
        .collect();
    let start =
        posted.iter().position(|t| t.contains("r-1: [simulated] deploy api-staging v2.0.0")).expect("start posted");
    let outcome = posted.iter().position(|t| t.starts_with("✅ r-1")).unwrap();
    assert!(start < outcome, "{posted:#?}");
    assert_eq!(posted.iter().filter(|t| t.starts_with("✅ r-1")).count(), 1, "{posted:#?}");
    let (_, metrics) = bot.served.get("/metrics");
    assert!(metrics.contains("opsbot_discord_rate_limited_total 4"), "{metrics}");
}

#[test]
fn long_answers_are_split_at_discords_limit_and_typed_text_is_inert() {
    let bot = DiscordServed::start("http");
    for i in 0..30 {
        let reason = format!("maintenance window {i} @everyone <@{ALICE}> **bold** {}", "x".repeat(60));
        let locked = bot.slash(
            BOB,
            "lock",
            json!([option("service", 3, json!("api-staging")), option("reason", 3, json!(reason))]),
        );
        let said = locked["data"]["content"].as_str().unwrap();
        assert!(said.contains(&format!("maintenance window {i}")), "{locked}");
        assert!(
            !said.contains("@everyone") && !said.contains(&format!("<@{ALICE}>")) && !said.contains("**bold**"),
            "typed text is inert: {said}"
        );
        bot.slash(BOB, "unlock", json!([option("service", 3, json!("api-staging"))]));
    }
    let answer =
        bot.slash(BOB, "audit", json!([option("service", 3, json!("api-staging")), option("limit", 4, json!(100))]));
    // The answer follows in parts: Discord shows "thinking…" first.
    assert_eq!(answer["type"], 5, "{answer}");
    bot.discord.wait_for("the long answer in parts", LONG, |d| d.ok_calls("/webhooks/").len() >= 2);
    let parts: Vec<String> = bot
        .discord
        .ok_calls("/webhooks/")
        .iter()
        .map(|c| c.body["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(bot.discord.ok_calls("PATCH /webhooks/").len() == 1, "the first part replaces \"thinking…\"");
    assert!(parts.iter().all(|p| p.chars().count() <= 2000), "{:?}", parts.iter().map(|p| p.len()).collect::<Vec<_>>());
    let all = parts.concat();
    assert!(parts.len() >= 2 && all.matches("unlock api").count() >= 30, "{all}");
    assert!(bot
        .discord
        .calls()
        .iter()
        .all(|c| c.body.get("content").is_none() || c.body["allowed_mentions"] == json!({"parse": []})));
}

#[test]
fn discord_register_writes_commands_once() {
    let discord = FakeDiscord::start();
    let bot = crate::support::Bot::with_config(&config("http"));
    let run = |args: &[&str]| {
        let output = bot
            .command(args)
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_APPLICATION_ID", APPLICATION)
            .env("DISCORD_API_URL", discord.url())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let first = run(&["discord-register", "--guild", crate::fake_discord::GUILD]);
    assert!(first.starts_with("registered"), "{first}");
    let again = run(&["discord-register", "--guild", crate::fake_discord::GUILD]);
    assert!(again.contains("nothing was written"), "{again}");
    assert_eq!(discord.ok_calls("PUT /applications/").len(), 1, "one overwrite");
    let commands = discord.commands(crate::fake_discord::GUILD);
    let deploy = commands.iter().find(|c| c["name"] == "deploy").expect("deploy registered");
    assert!(deploy["options"].as_array().unwrap().iter().any(|o| o["name"] == "service" && o["autocomplete"] == true));
    let url = run(&["discord-invite-url"]);
    assert!(url.contains(&format!("client_id={APPLICATION}")) && url.contains("applications.commands"), "{url}");
}

#[test]
fn autocomplete_offers_the_configured_services() {
    let bot = DiscordServed::start("http");
    let payload = json!({"id": "900", "application_id": APPLICATION, "type": 4, "token": "tok", "version": 1,
        "channel_id": OPS, "member": {"user": {"id": BOB}}, "data": {"name": "deploy", "options": [
        {"name": "service", "type": 3, "value": "stag", "focused": true}]}});
    let answer = bot.interact(&payload);
    assert_eq!(answer, json!({"type": 8, "data": {"choices": [{"name": "api-staging", "value": "api-staging"}]}}));
}

// ---- the gateway ----

/// Waits for the bot to be identified on the fake gateway and ready.
fn gateway_up(bot: &DiscordServed) {
    bot.discord.wait_for("the gateway session", LONG, |d| d.gateway_ready());
    let deadline = std::time::Instant::now() + LONG;
    while bot.served.get("/health/ready").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready: {}", bot.served.get("/health/ready").1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn over_the_gateway_a_reaction_approves_and_the_requesters_own_is_refused() {
    let bot = DiscordServed::start("both");
    gateway_up(&bot);
    bot.deployed();
    // GUILDS (1 << 0) and GUILD_MESSAGE_REACTIONS (1 << 10); nothing privileged.
    assert_eq!(bot.discord.intents(), 1 | (1 << 10));
    let interaction =
        bot.discord.command_interaction(ALICE, OPS, "rollback", json!([option("service", 3, json!("api-service"))]));
    let id = interaction["id"].as_str().unwrap().to_string();
    bot.discord.dispatch("INTERACTION_CREATE", interaction);
    bot.discord.wait_for("the answer through the callback", LONG, |d| d.callback_of(&id).is_some());
    let answer = bot.discord.callback_of(&id).unwrap();
    assert!(answer["data"]["content"].as_str().unwrap().contains("r-2 is waiting"), "{answer}");
    let card = bot.pending_card();

    // Alice reacts ✅ on her own request: refused, and told by DM (Discord
    // has no private message outside an interaction).
    bot.discord.dispatch("MESSAGE_REACTION_ADD", bot.discord.reaction(ALICE, OPS, &card.id, "✅"));
    let refusal = |c: &crate::fake_discord::Call| {
        c.status == 200 && c.body["content"].as_str().is_some_and(|t| t.contains("Vote not counted"))
    };
    bot.discord.wait_for("the DM", LONG, |d| d.calls().iter().any(refusal));
    let opened = bot.discord.ok_calls("POST /users/@me/channels");
    assert_eq!(
        opened.len(),
        1,
        "{:#?}",
        bot.discord
            .calls()
            .iter()
            .map(|c| format!("{} {} {} {}", c.status, c.method, c.path, c.body))
            .collect::<Vec<_>>()
    );
    assert_eq!(opened[0].body["recipient_id"], ALICE);
    let dm = bot.discord.calls().into_iter().find(refusal).unwrap();
    assert!(dm.path.starts_with("/channels/9") && !dm.path.contains(OPS), "a DM, not the channel: {}", dm.path);
    // Bob's ✅ approves; it runs in the card's thread.
    bot.discord.dispatch("MESSAGE_REACTION_ADD", bot.discord.reaction(BOB, OPS, &card.id, "✅"));
    bot.discord.wait_for("the outcome in the thread", LONG, |d| {
        d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-2"))
    });
    let records = bot.served.bot.export(&["--request", "r-2"]);
    let votes: Vec<&str> =
        records.iter().filter(|r| r["kind"] == "vote").map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(votes, ["refused", "approve"], "{records:#?}");
    assert!(bot.served.bot.verify().status.success());
}

#[test]
fn the_gateway_resumes_after_op_7_reidentifies_after_op_9_and_survives_drops() {
    let bot = DiscordServed::start("gateway");
    gateway_up(&bot);
    assert_eq!(bot.discord.identifies(), 1);
    bot.slash_over_gateway_and_wait(ALICE, "deploy");
    let card = bot.wait_for_card();

    // op 7: resumed on a new connection; a reaction sent while it was down
    // is replayed by the RESUME and counts once.
    bot.discord.slow_connect(300);
    bot.discord.reconnect();
    bot.discord.wait_for("the old connection gone", LONG, |d| !d.gateway_ready());
    bot.discord.dispatch("MESSAGE_REACTION_ADD", bot.discord.reaction(BOB, OPS, &card.id, "✅"));
    bot.discord.wait_for("a resume", LONG, |d| d.resumes() >= 1 && d.gateway_ready());
    bot.discord.slow_connect(0);
    assert_eq!(bot.discord.replayed(), 1, "the reaction came in the RESUME's replay");
    bot.discord
        .wait_for("the outcome", LONG, |d| d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-1")));
    assert_eq!(bot.discord.identifies(), 1, "a resume is not a new session");
    // The same event again (as a second replay would bring it): it counts once.
    bot.discord.dispatch("MESSAGE_REACTION_ADD", bot.discord.reaction(BOB, OPS, &card.id, "✅"));
    std::thread::sleep(Duration::from_millis(500));
    let approvals = bot.served.bot.export(&["--request", "r-1"]).iter().filter(|r| r["kind"] == "vote").count();
    assert_eq!(approvals, 1, "a replayed reaction counts once");

    // A dropped socket: resumed too.
    bot.discord.drop_socket();
    bot.discord.wait_for("a resume after a drop", LONG, |d| d.resumes() >= 2 && d.gateway_ready());
    assert_eq!(bot.discord.identifies(), 1);

    // op 9 (session invalid): a new IDENTIFY, and readiness follows.
    bot.discord.invalidate();
    bot.discord.wait_for("a new session", Duration::from_secs(30), |d| d.identifies() == 2 && d.gateway_ready());
    gateway_up(&bot);

    // 100 forced reconnects (op 7 and drops, alternately): resumed every
    // time, never a new IDENTIFY.
    let before = bot.discord.resumes();
    for i in 0..100u64 {
        if i % 2 == 0 {
            bot.discord.reconnect();
        } else {
            bot.discord.drop_socket();
        }
        bot.discord.wait_for("the resume", LONG, |d| d.resumes() > before + i && d.gateway_ready());
    }
    assert_eq!(bot.discord.identifies(), 2, "IDENTIFY stays bounded");
    // Left alone, the session beats (every 2 s here) and stays up.
    bot.discord.wait_for("heartbeats", LONG, |d| d.heartbeats() >= 2 && d.gateway_ready());
    gateway_up(&bot);
}

impl DiscordServed {
    fn slash_over_gateway_and_wait(&self, user: &str, name: &str) {
        let options = json!([option("service", 3, json!("api-service")), option("version", 3, json!("v1.4.2"))]);
        let interaction = self.discord.command_interaction(user, OPS, name, options);
        let id = interaction["id"].as_str().unwrap().to_string();
        self.discord.dispatch("INTERACTION_CREATE", interaction);
        self.discord.wait_for("the callback", LONG, |d| d.callback_of(&id).is_some());
    }
}

#[test]
fn readiness_is_false_while_the_gateway_session_is_not_up() {
    let bot = DiscordServed::start("gateway");
    gateway_up(&bot);
    // The gateway takes the socket but never starts the session.
    bot.discord.hold_identify(true);
    bot.discord.invalidate();
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (status, body) = bot.served.get("/health/ready");
        if status == 503 {
            assert!(body.contains("discord gateway"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    bot.discord.wait_for("a new IDENTIFY", Duration::from_secs(30), |d| d.identifies() >= 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(bot.served.get("/health/ready").0, 503, "identifying is not connected");
    // The session starts again: ready again.
    bot.discord.hold_identify(false);
    bot.discord.invalidate();
    bot.discord.wait_for("a session", Duration::from_secs(30), |d| d.gateway_ready());
    gateway_up(&bot);
}

#[test]
fn a_command_run_in_a_thread_gets_its_progress_and_outcome_there() {
    let bot = DiscordServed::start("http");
    bot.deployed();
    // The card of r-1 has a thread: a channel of its own, which cannot hold threads.
    let card = bot.card();
    assert!(bot.discord.has_thread(&card.id));
    let options = json!([option("service", 3, json!("api-staging")), option("version", 3, json!("v2.0.0"))]);
    let ack = bot.interact(&bot.discord.command_interaction(BOB, &card.id, "deploy", options));
    assert!(ack["data"]["content"].as_str().unwrap().contains("r-2 runs now"), "{ack}");
    bot.discord.wait_for("the outcome in the thread", LONG, |d| {
        d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-2"))
    });
    let thread = bot.discord.messages_in(&card.id);
    assert!(
        thread.iter().any(|m| m.content.contains("r-2: [simulated] deploy api-staging v2.0.0 started")),
        "{thread:#?}"
    );
}

#[test]
fn discord_py_completes_an_interaction_with_the_fake() {
    // The fake speaks Discord: discord.py (a third-party client) logs in over
    // REST, identifies over the gateway, receives a slash command and answers it.
    let discord = FakeDiscord::start();
    let script = format!(
        r#"
import asyncio, yarl, discord, discord.http, discord.gateway
discord.http.Route.BASE = "http://127.0.0.1:{port}/api/v10"
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("ws://127.0.0.1:{port}/gateway")
client = discord.Client(intents=discord.Intents.none())

@client.event
async def on_ready():
    print("ready", client.user.id, flush=True)

@client.event
async def on_interaction(interaction):
    await interaction.response.send_message("pong from discord.py " + interaction.data["name"], ephemeral=True)
    print("answered", flush=True)
    await client.close()

asyncio.run(asyncio.wait_for(client.start("{TOKEN}"), 60))
"#,
        port = discord.port()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with discord.py (scripts/test.sh installs it)");
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // discord.py says it is ready once it has logged in and identified.
    let ready = seen.recv_timeout(Duration::from_secs(30)).expect("discord.py never became ready");
    assert_eq!(ready, format!("ready {}", crate::fake_discord::BOT_USER));
    assert!(discord.gateway_ready() && discord.identifies() == 1);
    let interaction = discord.command_interaction(BOB, OPS, "status", json!([]));
    let id = interaction["id"].as_str().unwrap().to_string();
    discord.dispatch("INTERACTION_CREATE", interaction);
    discord.wait_for("discord.py's answer", Duration::from_secs(30), |d| d.callback_of(&id).is_some());
    assert_eq!(seen.recv_timeout(Duration::from_secs(30)).as_deref(), Ok("answered"));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer = discord.callback_of(&id).unwrap();
    assert_eq!(answer["type"], 4);
    assert_eq!(answer["data"]["content"], "pong from discord.py status");
    assert_eq!(answer["data"]["flags"], 64);
}

#[test]
fn past_its_identify_budget_the_gateway_starts_no_new_session() {
    let text = config("gateway").replace("[discord]\n", "[discord]\nidentify_budget = 2\n");
    let bot = DiscordServed::with_config(&text);
    gateway_up(&bot);
    // A second session (op 9): the budget of 2 an hour is used up.
    bot.discord.invalidate();
    bot.discord.wait_for("the second session", Duration::from_secs(30), |d| d.identifies() == 2 && d.gateway_ready());
    gateway_up(&bot);
    // Another op 9 would need a third IDENTIFY: none is sent, and the bot
    // says it is not ready rather than spend the token's daily allowance.
    bot.discord.invalidate();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        assert_eq!(bot.discord.identifies(), 2, "no IDENTIFY past the budget");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = bot.served.get("/health/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("discord gateway"), "{body}");
    assert!(bot.served.log().contains("IDENTIFY budget"), "{}", bot.served.log());
}

#[test]
fn a_discord_role_mapped_to_the_approver_group_lets_its_holder_approve() {
    const ONCALL_ROLE: &str = "8000000000000009";
    let text =
        config("http").replace("[groups]\n", &format!("[discord.roles]\n\"{ONCALL_ROLE}\" = [\"sre\"]\n\n[groups]\n"));
    let bot = DiscordServed::with_config(&text);
    let ack = bot.slash(
        ALICE,
        "deploy",
        json!([option("service", 3, json!("api-service")), option("version", 3, json!("v1.4.2"))]),
    );
    assert!(ack["data"]["content"].as_str().unwrap().contains("r-1 is waiting"), "{ack}");
    let card = bot.wait_for_card();
    let approve = button_id(&card, "Approve");
    // Mallory is in no configured group: without the role, refused.
    let without = bot.interact(&bot.discord.button_interaction(MALLORY, OPS, &card.id, &approve));
    assert!(without["data"]["content"].as_str().unwrap().contains("only sre can vote"), "{without}");
    // Holding the role Discord says she has, she is in sre for this vote.
    let with =
        bot.interact(&bot.discord.button_interaction_with_roles(MALLORY, OPS, &card.id, &approve, &[ONCALL_ROLE]));
    assert_eq!(with["type"], 6, "{with}");
    bot.discord
        .wait_for("the outcome", LONG, |d| d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-1")));
    let records = bot.served.bot.export(&["--request", "r-1"]);
    let votes: Vec<&str> =
        records.iter().filter(|r| r["kind"] == "vote").map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(votes, ["refused", "approve"]);
    // The trail says why someone the configuration does not list could approve.
    let approved = records.iter().find(|r| r["kind"] == "vote" && r["outcome"] == "approve").unwrap();
    let detail = approved["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("groups from Discord roles: sre (roles {ONCALL_ROLE})")), "{detail}");
}

/// `/incident declare` as Discord sends a subcommand: the summary is posted
/// in the channel, pinned, and edited in place; a deploy to its service
/// is held for the lead.
#[test]
fn an_incident_is_declared_with_a_subcommand_and_its_summary_is_pinned_and_kept_current() {
    let bot = DiscordServed::start("http");
    let sub = |name: &str, options: Value| json!([{"name": name, "type": 1, "options": options}]);
    // Bob, an SRE, declares it and leads it.
    let ack = bot.slash(
        BOB,
        "incident",
        sub(
            "declare",
            json!([
                option("title", 3, json!("pool @everyone exhausted")),
                option("sev", 4, json!(1)),
                option("service", 3, json!("api-service")),
            ]),
        ),
    );
    assert!(ack["data"]["content"].as_str().unwrap().contains("INC-1 declared by"), "{ack}");
    bot.discord.wait_for("the pinned summary", LONG, |d| {
        d.messages_in(OPS).iter().any(|m| m.content.contains("INC-1 SEV1") && d.is_pinned(&m.id))
    });
    let summary = bot.discord.messages_in(OPS).into_iter().find(|m| m.content.contains("INC-1 SEV1")).unwrap();
    assert!(!summary.content.contains("@everyone"), "typed text is inert: {summary:?}");
    // Alice's deploy waits for an SRE and for the lead; Bob is both, and his approval runs it.
    let ack = bot.slash(
        ALICE,
        "deploy",
        json!([option("service", 3, json!("api-service")), option("version", 3, json!("v1.4.2"))]),
    );
    let text = ack["data"]["content"].as_str().unwrap();
    assert!(text.contains(&format!("1 approval(s) from sre and <@{BOB}>'s")), "{ack}");
    let card = bot.pending_card();
    bot.interact(&bot.discord.button_interaction(BOB, OPS, &card.id, &button_id(&card, "Approve")));
    bot.discord
        .wait_for("r-1's outcome", LONG, |d| d.messages_in(&card.id).iter().any(|m| m.content.starts_with("✅ r-1")));
    // The lead hands over (a USER option), and the summary follows.
    bot.slash(BOB, "incident", sub("lead", json!([option("person", 6, json!(ALICE))])));
    bot.discord.wait_for("the summary edited", LONG, |d| {
        d.message(&summary.id).is_some_and(|m| m.content.contains(&format!("lead <@{ALICE}>")) && m.edits >= 1)
    });
    let summaries = bot.discord.messages_in(OPS).into_iter().filter(|m| m.content.contains("INC-1 SEV1")).count();
    assert_eq!(summaries, 1, "one summary, edited in place");
    // It offers to roll back the deploy that took effect; a click is the
    // clicker's own rollback request, under the usual gate.
    let summary = bot.discord.message(&summary.id).unwrap();
    let button = button_id(&summary, "Roll back api-service (r-1)");
    assert_eq!(button, "opsbot:rollback:api-service:r-1");
    let asked = bot.interact(&bot.discord.button_interaction(BOB, OPS, &summary.id, &button));
    assert_eq!(asked["type"], 4, "{asked}");
    let text = asked["data"]["content"].as_str().unwrap();
    assert!(
        text.contains("rollback api-service, undoing r-1")
            && text.contains("r-2 is waiting for 1 approval(s) from sre"),
        "{asked}"
    );
    let records = bot.served.bot.export(&["--request", "r-2"]);
    assert_eq!(records[0]["actor"], format!("discord:{BOB}"));
}

/// With `[incidents] dedicated_channels`, an incident declared in Discord
/// gets a text channel of its own in the same server and category, where its
/// summary is pinned and its commands are taken; without Manage Channels it
/// lives where it was declared, and says why.
#[test]
fn an_incident_gets_a_channel_of_its_own_in_the_server() {
    let bot = DiscordServed::with_config(&(config("http") + "\n[incidents]\ndedicated_channels = true\n"));
    let sub = |name: &str, options: Value| json!([{"name": name, "type": 1, "options": options}]);
    let declare = |title: &str, sev: u8| {
        sub(
            "declare",
            json!([
                option("title", 3, json!(title)),
                option("sev", 4, json!(sev)),
                option("service", 3, json!("api-service"))
            ]),
        )
    };
    let ack = bot.slash(BOB, "incident", declare("Pool exhausted", 2));
    assert!(
        ack["data"]["content"].as_str().unwrap().contains("It has its own channel, #inc-1-pool-exhausted"),
        "{ack}"
    );
    let made = bot.discord.channels();
    assert_eq!(made.len(), 1);
    let (channel, name, parent) = made[0].clone();
    assert_eq!(name, "inc-1-pool-exhausted");
    assert_eq!(
        parent.as_deref(),
        Some(crate::fake_discord::CATEGORY),
        "under the same category as where it was declared"
    );
    let overwrites = bot.discord.overwrites_of(&channel);
    assert_eq!(overwrites[0]["deny"], "1024", "hidden from @everyone, as the ops channel is: {overwrites}");
    assert_eq!(overwrites[1]["id"], crate::fake_discord::OPS_ROLE);
    bot.discord.wait_for("the summary pinned in its channel", LONG, |d| {
        d.messages_in(&channel).iter().any(|m| m.content.contains("INC-1 SEV2") && d.is_pinned(&m.id))
    });
    assert!(!bot.discord.messages_in(OPS).iter().any(|m| m.content.contains("INC-1 SEV2")), "not in the ops channel");
    // Its commands are taken in its channel.
    let update = sub("update", json!([option("text", 3, json!("draining"))]));
    let asked = bot.interact(&bot.discord.command_interaction(BOB, &channel, "incident", update));
    assert!(asked["data"]["content"].as_str().unwrap().contains("INC-1 update from"), "{asked}");
    // Without Manage Channels it stays where it was declared.
    bot.discord.without_manage_channels();
    let ack = bot.slash(BOB, "incident", declare("Second", 3));
    let text = ack["data"]["content"].as_str().unwrap();
    assert!(text.contains("could not get a channel of its own") && text.contains("Manage Channels"), "{ack}");
    assert_eq!(bot.discord.channels().len(), 1);
}

/// `/report` answers with the figures and attaches the weekly chart (a PNG
/// sent as Discord takes files: multipart, `files[0]` named in `attachments`).
#[test]
fn the_report_answers_with_the_figures_and_attaches_the_chart() {
    let bot = DiscordServed::start("http");
    bot.deployed();
    let ack = bot.slash(ALICE, "report", json!([]));
    let text = ack["data"]["content"].as_str().unwrap();
    assert!(text.contains("deployment frequency: 0.2/week (1 deploys;"), "{text}");
    assert!(text.contains("lead time for changes: n/a — 0 of 1 deploys have commit data"), "{text}");
    bot.discord.wait_for("the chart", LONG, |d| d.messages_in(OPS).iter().any(|m| !m.attachments.is_empty()));
    let message = bot.discord.messages_in(OPS).into_iter().find(|m| !m.attachments.is_empty()).unwrap();
    let (name, png) = &message.attachments[0];
    assert!(name.starts_with("delivery-") && name.ends_with(".png"), "{name}");
    let info = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (opsbot::report::chart::WIDTH, opsbot::report::chart::HEIGHT));
    assert!(message.content.contains("Weekly deploys"), "{}", message.content);
}

/// An alert about api-service reaches its Discord channel (and its Slack
/// one) as one message with buttons; Acknowledge is a click, and the
/// message is edited in place to say who.
#[test]
fn an_alert_is_one_discord_message_with_buttons_edited_in_place() {
    let text = format!(
        "{}\n[[rules]]\ncommands = [\"alerts\"]\nenvironments = [\"*\"]\nrequesters = [\"*\"]\n\n[alerts]\ndefault_channel = \"discord:{OPS}\"\n[alerts.alertmanager]\ntoken_env = \"AM_TOKEN\"\n",
        config("http")
    );
    let bot = DiscordServed::with_config_env(&text, &[("AM_TOKEN", OsStr::new("t0ken"))]);
    let webhook = |status: &str| {
        json!({"version": "4", "groupKey": "{}:{alertname=\"PoolSaturated\"}", "status": status, "receiver": "opsbot",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
            "alerts": [{"status": status, "labels": {"alertname": "PoolSaturated", "service": "api-service"},
                "annotations": {"summary": "Connection pool saturated <@everyone>"}, "startsAt": "2026-12-01T10:00:00Z",
                "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-12-01T10:09:00Z" },
                "generatorURL": "", "fingerprint": "0c1d2e3f"}]})
        .to_string()
    };
    let send = |body: String| {
        ureq::post(&format!("{}/alerts/alertmanager", bot.served.base))
            .set("Authorization", "Bearer t0ken")
            .send_string(&body)
            .unwrap()
            .status()
    };
    assert_eq!(send(webhook("firing")), 200);
    bot.discord
        .wait_for("the alert's message", LONG, |d| d.messages_in(OPS).iter().any(|m| m.content.contains("FIRING A-1")));
    let message = bot.discord.messages_in(OPS).into_iter().find(|m| m.content.contains("FIRING A-1")).unwrap();
    // The sender's text is inert: no ping, shown as typed.
    assert!(!message.content.contains("<@everyone>"), "{}", message.content);
    let labels: Vec<&str> =
        message.components[0]["components"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["Acknowledge", "Declare incident"]);
    bot.interact(&bot.discord.button_interaction(BOB, OPS, &message.id, &button_id(&message, "Acknowledge")));
    bot.discord.wait_for("the acknowledged message", LONG, |d| {
        d.message(&message.id).unwrap().content.contains("acknowledged by")
    });
    // Slack's channel for the service got its own message.
    bot.served.slack.wait_for("the Slack message", LONG, |c| {
        c.iter().any(|c| c.method == "chat.postMessage" && c.body["text"].as_str().unwrap_or("").contains("FIRING A-1"))
    });
    // Resolved: the same Discord message is edited, its buttons removed.
    assert_eq!(send(webhook("resolved")), 200);
    bot.discord
        .wait_for("the resolved edit", LONG, |d| d.message(&message.id).unwrap().content.contains("RESOLVED A-1"));
    let resolved = bot.discord.message(&message.id).unwrap();
    assert_eq!(resolved.components, json!([]));
    assert_eq!(bot.discord.messages_in(OPS).iter().filter(|m| m.content.contains(" A-1 — ")).count(), 1);
}
