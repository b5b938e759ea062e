//! The reply port: what the core says ([`Reply`], [`ApprovalView`]) and the
//! [`ChatSink`] it says it through. The core owns it; each chat adapter
//! implements [`ChatSink`] and renders replies its own way (Block Kit
//! buttons, Discord components, plain terminal lines). Text a person typed
//! is marked ([`typed`]) so every adapter renders it inert.

use crate::approval::RequestState;
use crate::audit::{BoxFuture, Verdict};
use crate::event::{Actor, ReplyTarget};
use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// Starts text a person typed, inside a reply (see [`typed`]).
const TYPED_START: char = '\u{E000}';
/// Ends it.
const TYPED_END: char = '\u{E001}';

/// Marks `text` as typed by a person (a lock reason, an emergency reason, a
/// deny reason, an echo of what they typed), so each adapter renders it
/// inert: Slack escapes it and never turns it into mentions, links or
/// markup. The marks are Unicode private-use characters; any in the text
/// itself are dropped, so typed text cannot end its own span early. The
/// trail stores replies' text without them (see [`plain`]).
pub fn typed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 6);
    out.push(TYPED_START);
    out.extend(text.chars().filter(|c| *c != TYPED_START && *c != TYPED_END));
    out.push(TYPED_END);
    out
}

/// `text` without the marks of [`typed`] (for the trail and plain terminals).
pub fn plain(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([TYPED_START, TYPED_END]) {
        text.chars().filter(|c| *c != TYPED_START && *c != TYPED_END).collect::<String>().into()
    } else {
        text.into()
    }
}

/// The pieces of `text`, each with whether a person typed it.
pub fn spans(text: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = text;
    let mut inside = false;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let mark = if inside { TYPED_END } else { TYPED_START };
            let (piece, after) = match rest.find(mark) {
                Some(at) => (&rest[..at], &rest[at + mark.len_utf8()..]),
                None => (rest, ""),
            };
            let was_inside = inside;
            if piece.len() + after.len() < rest.len() {
                // A mark was found: the next piece is on its other side.
                inside = !inside;
            }
            rest = after;
            if !piece.is_empty() {
                return Some((was_inside, piece));
            }
        }
        None
    })
}

/// A deploy a summary offers to roll back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackOffer {
    pub service: String,
    /// The deploy's request id (`r-12`).
    pub deploy: String,
}

impl RollbackOffer {
    /// The command a click on it stands for.
    pub fn command(&self) -> String {
        format!("/rollback {} --of {}", self.service, self.deploy)
    }
}

/// What an alert message's button does. A click is the clicker typing
/// [`AlertButton::command`], under that command's usual gates; the alert's
/// version rides along, so a click on an older form of the message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    Acknowledge,
    Silence1h,
    Silence4h,
    DeclareIncident,
    RunRunbook,
    RollBack,
}

impl AlertAction {
    pub const ALL: [AlertAction; 6] = [
        AlertAction::Acknowledge,
        AlertAction::Silence1h,
        AlertAction::Silence4h,
        AlertAction::DeclareIncident,
        AlertAction::RunRunbook,
        AlertAction::RollBack,
    ];

    /// Its word in a button's id.
    pub fn word(self) -> &'static str {
        match self {
            AlertAction::Acknowledge => "ack",
            AlertAction::Silence1h => "silence-1h",
            AlertAction::Silence4h => "silence-4h",
            AlertAction::DeclareIncident => "incident",
            AlertAction::RunRunbook => "runbook",
            AlertAction::RollBack => "rollback",
        }
    }

    pub fn from_word(word: &str) -> Option<AlertAction> {
        AlertAction::ALL.into_iter().find(|a| a.word() == word)
    }
}

/// One button on an alert's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertButton {
    pub action: AlertAction,
    /// The alert group (`A-7`) and the version the message showed.
    pub alert: String,
    pub version: u32,
    pub label: String,
    /// Roll back: the deploy it undoes (`r-7`), so a click means that one
    /// and is refused once the service changed since.
    pub deploy: Option<String>,
}

impl AlertButton {
    /// The command a click stands for.
    pub fn command(&self) -> String {
        let (id, v) = (&self.alert, self.version);
        match self.action {
            AlertAction::Acknowledge => format!("/alerts ack {id} --version {v}"),
            AlertAction::Silence1h => format!("/alerts silence {id} 1h --version {v}"),
            AlertAction::Silence4h => format!("/alerts silence {id} 4h --version {v}"),
            AlertAction::DeclareIncident => format!("/alerts act {id} incident --version {v}"),
            AlertAction::RunRunbook => format!("/alerts act {id} runbook --version {v}"),
            AlertAction::RollBack => match &self.deploy {
                Some(deploy) => format!("/alerts act {id} rollback --version {v} --of {deploy}"),
                None => format!("/alerts act {id} rollback --version {v}"),
            },
        }
    }

    /// `<word>:<alert>:<version>[:<deploy>]`: what a button's id carries
    /// (short enough for Discord's 100-character custom ids).
    pub fn id(&self) -> String {
        let deploy = self.deploy.as_deref().map(|d| format!(":{d}")).unwrap_or_default();
        format!("{}:{}:{}{deploy}", self.action.word(), self.alert, self.version)
    }

    /// A click's id back: the command it stands for, or `None` when it is
    /// not one opsbot draws.
    pub fn command_of(id: &str) -> Option<String> {
        let mut parts = id.split(':');
        let action = AlertAction::from_word(parts.next()?)?;
        let alert = crate::command::parse::normalize_alert_id(parts.next()?)?;
        let version: u32 = parts.next()?.parse().ok()?;
        let deploy = match (action, parts.next()) {
            (AlertAction::RollBack, Some(deploy)) => Some(crate::command::parse::normalize_request_id(deploy)?),
            (_, Some(_)) => return None,
            (_, None) => None,
        };
        parts.next().is_none().then(|| AlertButton { action, alert, version, label: String::new(), deploy }.command())
    }
}

/// The controls under a standing message: an incident summary's Roll back
/// buttons, or an alert's.
#[derive(Debug, Clone, Copy)]
pub enum Controls<'a> {
    Rollbacks(&'a [RollbackOffer]),
    Alert(&'a [AlertButton]),
}

/// Whether `service` can ride in a button (`/rollback <service>` on a
/// click): a plain name, so the button can only ever mean that command.
pub fn button_service(service: &str) -> bool {
    !service.is_empty()
        && service.len() <= 64
        && service.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Characters of a request's digest its buttons carry as its version.
pub const VERSION_LEN: usize = 12;

/// An approval request as shown to people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalView {
    pub id: String,
    /// Which form of the request this is (its digest's start): buttons
    /// carry it, so a click on a card of an earlier request with the same
    /// id is refused.
    pub version: String,
    pub action: String,
    pub service: String,
    pub environment: String,
    pub requester: Actor,
    pub approvals_needed: u32,
    pub approvals_have: u32,
    pub approver_groups: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub freeze: Option<String>,
    /// Someone whose approval is asked besides the count, and why
    /// (`console:alice must approve too: INC-1 (SEV1) is open on api`).
    pub also_needs: Option<String>,
    /// What a runbook run will do, step by step, with its previews (the
    /// sessions an SQL step would end, say): what approvers approve.
    pub plan: Option<String>,
    pub state: RequestState,
    pub decided_by: Option<Actor>,
}

impl ApprovalView {
    /// The card's headline for its state.
    pub fn title(&self) -> &'static str {
        match self.state {
            RequestState::Pending => "Approval needed",
            RequestState::Approved => "Approved",
            RequestState::Denied => "Denied",
            RequestState::Withdrawn => "Withdrawn",
            RequestState::Expired => "Expired — nothing ran",
            RequestState::Invalidated => "Closed — nothing ran",
        }
    }
}

/// What the core says.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A message to the channel or thread. Adapters may drop it when a
    /// channel's queue is full.
    Text(String),
    /// A message to the channel that must be delivered, like an outcome (a
    /// published audit checkpoint).
    Announcement(String),
    /// A read's answer too long for the acknowledgement, which promises it
    /// follows: an adapter takes it only where its queue has room (else
    /// `send` fails, and the ack says so instead), and never drops it once
    /// taken.
    Answer(String),
    /// Seen only by `to` (Slack ephemeral, Discord ephemeral).
    Private { to: Actor, text: String },
    /// A new approval request with its approve/deny controls.
    Approval(ApprovalView),
    /// The same card, updated (votes counted, decided, expired).
    ApprovalUpdate(ApprovalView),
    /// An action started; platforms thread its progress and outcome under it.
    Started { request_id: String, text: String },
    /// A milestone of a running action (platforms update one threaded message).
    Progress { request_id: String, text: String },
    /// How an action ended: `Succeeded`, `Failed`, `Unknown` (the bot cannot
    /// tell; never shown as success) or `Interrupted`.
    Outcome { request_id: String, verdict: Verdict, text: String },
    /// A standing summary (an incident's): posted once in the channel, at
    /// its top level, and pinned where the platform allows; later ones with
    /// the same `key` edit that message in place. Must be delivered.
    /// `rollbacks` are deploys offered a "Roll back" button: a click is the
    /// clicker typing `/rollback <service> --of <deploy>`, under its usual
    /// gates, refused once the service changed since that deploy.
    Summary { key: String, text: String, rollbacks: Vec<RollbackOffer> },
    /// An alert group's message: posted once per channel at its top level
    /// (not pinned), later ones with the same `key` (`A-7`) edit it in
    /// place, with `buttons`. Must be delivered.
    Alert { key: String, text: String, buttons: Vec<AlertButton> },
    /// A picture (the delivery report's chart, a PNG) with a line about
    /// it, attached where the platform takes files. May be dropped, like
    /// a text, when the channel's queue is full.
    Chart { filename: String, png: std::sync::Arc<Vec<u8>>, comment: String },
}

/// The plain replies of an immediate answer, split into what the channel
/// sees (texts) and what only one person does (private notes, with whom).
pub fn split_plain(replies: Vec<Reply>) -> (Vec<String>, Vec<(Actor, String)>) {
    let mut public = Vec::new();
    let mut private = Vec::new();
    for reply in replies {
        match reply {
            Reply::Text(text) => public.push(text),
            Reply::Private { to, text } => private.push((to, text)),
            _ => {}
        }
    }
    (public, private)
}

/// The texts of private notes, one per line.
pub fn note_texts(notes: Vec<(Actor, String)>) -> String {
    notes.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("could not deliver a message: {0}")]
    Delivery(String),
}

/// The seam the core replies through.
pub trait ChatSink: Send + Sync {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>>;
    /// Opens a channel named `name` beside `near` (the same workspace or
    /// server), with `members` in it where the platform invites people:
    /// an incident's own channel. The error says why not (a missing scope
    /// or permission, a name taken), for the channel to be told.
    fn open_channel<'a>(
        &'a self,
        near: &'a ReplyTarget,
        _name: &'a str,
        _members: &'a [Actor],
    ) -> BoxFuture<'a, Result<ReplyTarget, ChatError>> {
        let channel = near.channel.clone();
        Box::pin(async move { Err(ChatError::Delivery(format!("{channel}'s platform cannot open channels"))) })
    }
}

/// Keeps every reply, for tests.
#[derive(Default)]
pub struct RecordingSink {
    pub sent: Mutex<Vec<(ReplyTarget, Reply)>>,
}

impl RecordingSink {
    pub fn replies(&self) -> Vec<Reply> {
        self.sent.lock().expect("sink lock").iter().map(|(_, r)| r.clone()).collect()
    }
}

impl ChatSink for RecordingSink {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        self.sent.lock().expect("sink lock").push((target.clone(), reply));
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_is_marked_and_cannot_end_its_own_mark() {
        let text = format!("locked by slack:U1: {} — ok", typed("db <!channel> \u{E001} slack:U2"));
        let pieces: Vec<(bool, &str)> = spans(&text).collect();
        assert_eq!(pieces, [(false, "locked by slack:U1: "), (true, "db <!channel>  slack:U2"), (false, " — ok")]);
        assert_eq!(plain(&text), "locked by slack:U1: db <!channel>  slack:U2 — ok");
        assert_eq!(spans("plain").collect::<Vec<_>>(), [(false, "plain")]);
        assert_eq!(spans(&typed("")).count(), 0);
    }
}
