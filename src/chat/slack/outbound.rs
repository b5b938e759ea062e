//! Slack's [`Wire`] for the shared send queues ([`crate::chat::outbound`]):
//! `chat.postMessage` (threads by `thread_ts`), `chat.update`,
//! `chat.postEphemeral`, Block Kit cards, mrkdwn escaping.

use super::api::SlackApi;
use super::blocks::{approval_card, render, summary_blocks, MAX_TEXT};
use crate::audit::{BoxFuture, Verdict};
use crate::chat::outbound::{ApiError, Sink, Wire};
use crate::engine::reply::ApprovalView;
use crate::event::{Platform, ReplyTarget};

pub use crate::chat::outbound::{Pacing, Settings};

/// Slack's send queues.
pub type SlackSink = Sink<SlackApi>;

/// The store key linking a Slack card message to its request (for reactions).
pub fn card_link(channel: &str, ts: &str) -> String {
    crate::chat::outbound::card_link(Platform::Slack, channel, ts)
}

impl Wire for SlackApi {
    const PLATFORM: Platform = Platform::Slack;
    const QUEUE_TASK: &'static str = "slack send queue";
    const MAX_TEXT: usize = MAX_TEXT;

    fn render(&self, text: &str) -> String {
        render(text)
    }

    fn mark(verdict: Verdict) -> &'static str {
        match verdict {
            Verdict::Succeeded => ":white_check_mark:",
            Verdict::Unknown => ":grey_question:",
            _ => ":x:",
        }
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(SlackApi::post(self, channel, thread, text, None))
    }

    fn update<'a>(&'a self, channel: &'a str, message: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(SlackApi::update(self, channel, message, text, None))
    }

    fn post_card<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move {
            let (text, blocks) = approval_card(view);
            SlackApi::post(self, channel, thread, &text, Some(&blocks)).await
        })
    }

    fn update_card<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (text, blocks) = approval_card(view);
            SlackApi::update(self, channel, message, &text, Some(&blocks)).await
        })
    }

    fn post_summary<'a>(
        &'a self,
        channel: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move { SlackApi::post(self, channel, None, text, Some(&summary_blocks(text, controls))).await })
    }

    fn update_summary<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(
            async move { SlackApi::update(self, channel, message, text, Some(&summary_blocks(text, controls))).await },
        )
    }

    fn upload<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        filename: &'a str,
        png: &'a [u8],
        comment: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(SlackApi::upload(self, channel, thread, filename, png, comment))
    }

    fn pin<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(SlackApi::pin(self, channel, message))
    }

    fn open_channel<'a>(
        &'a self,
        _near: &'a str,
        name: &'a str,
        members: &'a [&'a str],
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(SlackApi::open_channel(self, name, members))
    }

    fn private<'a>(
        &'a self,
        target: &'a ReplyTarget,
        channel: &'a str,
        user: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(self.ephemeral(channel, user, target.thread.as_deref(), text))
    }
}
