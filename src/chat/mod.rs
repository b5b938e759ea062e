//! Chat adapters. Each verifies and translates its platform's input into
//! [`crate::event::Event`]s, and implements the core's reply port
//! ([`crate::engine::reply::ChatSink`]) to render [`Reply`] values its own
//! way (Block Kit buttons, Discord components, plain terminal lines).

pub mod console;
pub mod discord;
pub mod signature;
pub mod slack;

use crate::audit::BoxFuture;
use crate::engine::reply::{ChatError, ChatSink, Reply};
use crate::event::ReplyTarget;

/// Sends each reply to the adapter of its channel's platform.
#[derive(Default)]
pub struct PlatformSinks {
    pub slack: Option<std::sync::Arc<dyn ChatSink>>,
    pub console: Option<std::sync::Arc<dyn ChatSink>>,
}

impl ChatSink for PlatformSinks {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        let sink = match target.platform() {
            Some(crate::event::Platform::Slack) => self.slack.as_ref(),
            Some(crate::event::Platform::Console) => self.console.as_ref(),
            Some(crate::event::Platform::Discord) | None => None,
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
