//! Chat adapters and the [`ChatSink`] the core replies through. Adapters verify
//! and translate platform input into [`crate::event::Event`]s; the core answers
//! with platform-neutral [`Reply`] values that each adapter renders its own way
//! (Block Kit buttons, Discord components, plain terminal lines).

pub mod console;
pub mod slack;

use crate::approval::RequestState;
use crate::audit::{BoxFuture, Verdict};
use crate::event::{Actor, ReplyTarget};
use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// An approval request as shown to people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalView {
    pub id: String,
    pub action: String,
    pub service: String,
    pub environment: String,
    pub requester: Actor,
    pub approvals_needed: u32,
    pub approvals_have: u32,
    pub approver_groups: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub freeze: Option<String>,
    pub state: RequestState,
    pub decided_by: Option<Actor>,
}

/// What the core says.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A message to the channel or thread.
    Text(String),
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
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("could not deliver a message: {0}")]
    Delivery(String),
}

/// The seam the core replies through.
pub trait ChatSink: Send + Sync {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>>;
}

/// Sends each reply to the adapter of its channel's platform.
#[derive(Default)]
pub struct PlatformSinks {
    pub slack: Option<std::sync::Arc<dyn ChatSink>>,
    pub console: Option<std::sync::Arc<dyn ChatSink>>,
}

impl ChatSink for PlatformSinks {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        let sink = match target.platform() {
            "slack" => self.slack.as_ref(),
            "console" => self.console.as_ref(),
            _ => None,
        };
        match sink {
            Some(sink) => sink.send(target, reply),
            None => {
                let channel = target.channel.clone();
                Box::pin(async move { Err(ChatError::Delivery(format!("no adapter is running for {channel}"))) })
            }
        }
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
