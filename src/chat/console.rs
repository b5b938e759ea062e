//! The console adapter: a chat in the terminal. Interactive with a prompt when
//! stdin is a terminal; otherwise one command per line, so scripts and tests
//! can drive the whole bot. Console identities are `console:NAME`; `/as` only
//! switches between console identities, so the terminal can never act as a
//! Slack or Discord user.

use crate::audit::BoxFuture;
use crate::engine::reply::{plain, ApprovalView, ChatError, ChatSink, Reply};
use crate::engine::Engine;
use crate::event::{Actor, Event, ReplyTarget};
use std::io::Write;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Prints replies as terminal lines.
pub struct ConsoleSink;

fn card(view: &ApprovalView, updated: bool) -> String {
    let mut out = String::new();
    let title = if updated { "approval update" } else { "approval needed" };
    out.push_str(&format!("┌ {title} · {} · {}\n", view.id, view.state.name().to_uppercase()));
    out.push_str(&format!("│ {} ({}) requested by {}\n", view.action, view.environment, view.requester));
    let freeze = view.freeze.as_ref().map(|f| format!(" — freeze `{f}` in force")).unwrap_or_default();
    out.push_str(&format!(
        "│ approvals {}/{} from {}{freeze}; expires {}\n",
        view.approvals_have,
        view.approvals_needed,
        view.approver_groups.join(", "),
        view.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    if let Some(also) = &view.also_needs {
        out.push_str(&format!("│ {also}\n"));
    }
    if let Some(plan) = &view.plan {
        for line in plan.lines() {
            out.push_str(&format!("│   {line}\n"));
        }
    }
    match (&view.decided_by, view.state) {
        (Some(by), state) => out.push_str(&format!("└ {state} by {by}")),
        (None, crate::approval::RequestState::Pending) => out
            .push_str(&format!("└ /approve {id} or /deny {id} (reacting +1 {id} / -1 {id} counts too)", id = view.id)),
        (None, state) => out.push_str(&format!("└ {state}")),
    }
    out
}

/// ✅ only for a verified success; ❔ when the bot cannot tell.
fn outcome_mark(verdict: crate::audit::Verdict) -> &'static str {
    use crate::audit::Verdict;
    match verdict {
        Verdict::Succeeded => "✅",
        Verdict::Unknown => "❔",
        _ => "❌",
    }
}

/// Renders one reply as the console shows it.
pub fn render(reply: &Reply) -> String {
    match reply {
        Reply::Text(text) | Reply::Announcement(text) | Reply::Answer(text) => format!("opsbot: {text}"),
        Reply::Private { to, text } => format!("opsbot (only {to} sees this): {text}"),
        Reply::Approval(view) => card(view, false),
        Reply::ApprovalUpdate(view) => card(view, true),
        Reply::Started { text, .. } => format!("opsbot: {text}"),
        Reply::Progress { request_id, text } => format!("  ↳ {request_id}: {text}"),
        Reply::Outcome { request_id, verdict, text } => format!("{} {request_id}: {text}", outcome_mark(*verdict)),
        Reply::Chart { png, comment, .. } => {
            format!("opsbot: {comment} (a {} byte PNG; `opsbot report delivery --chart FILE` writes it)", png.len())
        }
        Reply::Alert { text, buttons, .. } => {
            let mut out = format!("🔔 {}", text.replace('\n', "\n   "));
            for button in buttons {
                out.push_str(&format!("\n   [{}] = {}", button.label, button.command()));
            }
            out
        }
        Reply::Summary { text, rollbacks, .. } => {
            let mut out = format!("📌 {}", text.replace('\n', "\n   "));
            for offer in rollbacks {
                out.push_str(&format!("\n   [Roll back {} ({})] = {}", offer.service, offer.deploy, offer.command()));
            }
            out
        }
    }
}

impl ChatSink for ConsoleSink {
    fn send<'a>(&'a self, _target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        // A terminal has no markup to escape; typed text is shown as typed.
        let line = plain(&render(&reply)).into_owned();
        let mut out = std::io::stdout().lock();
        let result = writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|e| ChatError::Delivery(e.to_string()));
        Box::pin(async move { result })
    }
}

/// What one input line means.
#[derive(Debug, PartialEq)]
pub enum Line {
    Nothing,
    Quit,
    /// `/wait`: let running actions finish before reading on (for scripts).
    Wait,
    SwitchIdentity(Actor),
    Event(Box<Event>),
    Problem(String),
}

/// Interprets one typed line for `actor` in `channel`.
pub fn interpret(line: &str, actor: &Actor, channel: &str) -> Line {
    let line = line.trim();
    let reply = ReplyTarget::channel(channel);
    if line.is_empty() || line.starts_with('#') {
        return Line::Nothing;
    }
    if line == "/quit" || line == "/exit" {
        return Line::Quit;
    }
    if line == "/wait" {
        return Line::Wait;
    }
    if let Some(who) = line.strip_prefix("/as ") {
        let who = who.trim();
        let who = if who.contains(':') { who.to_string() } else { format!("console:{who}") };
        return match Actor::parse(&who) {
            Ok(a) if a.platform() == crate::event::Platform::Console => Line::SwitchIdentity(a),
            Ok(_) => Line::Problem("the console can only act as console: identities".into()),
            Err(e) => Line::Problem(e),
        };
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let approve = match first {
        "+1" | "✅" | ":white_check_mark:" | "👍" => Some(true),
        "-1" | "❌" | ":x:" | "👎" => Some(false),
        _ => None,
    };
    if let Some(approve) = approve {
        let (Some(id), None) = (words.next(), words.next()) else {
            return Line::Problem(format!("react with `{first} <request id>`, like `{first} r-3`"));
        };
        return match crate::command::parse::normalize_request_id(id) {
            Some(request_id) => Line::Event(Box::new(Event::Vote {
                actor: actor.clone(),
                request_id,
                approve,
                reply,
                dedup_key: None,
                version: None,
                roles: Vec::new(),
            })),
            None => Line::Problem(format!("`{id}` is not a request id; they look like r-3")),
        };
    }
    Line::Event(Box::new(Event::Command {
        actor: actor.clone(),
        text: line.to_string(),
        reply,
        dedup_key: None,
        roles: Vec::new(),
    }))
}

/// Reads stdin until EOF or `/quit`, handing each line to the engine.
pub async fn run(engine: Arc<Engine>, mut actor: Actor, channel: String, interactive: bool) -> std::io::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if interactive {
        println!("opsbot console — you are {actor} in {channel}. Type /help; `/as console:NAME` switches identity, `+1 r-3` reacts, /wait waits for running actions, /quit leaves.");
    }
    loop {
        if interactive {
            print!("{actor}> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        match interpret(&line, &actor, &channel) {
            Line::Nothing => {}
            Line::Quit => break,
            Line::Wait => engine.wait_idle().await,
            Line::SwitchIdentity(who) => {
                actor = who;
                println!("opsbot: you are now {actor}");
            }
            Line::Problem(text) => println!("opsbot: {text}"),
            Line::Event(event) => {
                engine.handle(*event).await;
            }
        }
    }
    Ok(())
}
