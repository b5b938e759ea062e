//! Discord's [`Wire`] for the shared send queues ([`crate::chat::outbound`]):
//! messages and edits over REST, threads under a request's card or start
//! message, approval cards with Approve/Deny buttons, private notes as
//! ephemeral interaction follow-ups (or a DM when no interaction is open),
//! and Discord's markdown made inert wherever a person typed the text.

use super::api::{locate, no_pings, DiscordApi, NOT_ANSWERED};
use crate::approval::RequestState;
use crate::audit::{BoxFuture, Verdict};
use crate::chat::outbound::{ApiError, Sink, Wire};
use crate::engine::reply::{spans, ApprovalView};
use crate::event::{Platform, ReplyTarget};
use serde_json::{json, Value};

/// Discord's send queues.
pub type DiscordSink = Sink<DiscordApi>;

/// Discord refuses a message over 2,000 characters.
pub const MAX_TEXT: usize = 2_000;

/// The prefix of opsbot's button ids: `opsbot:approve:r-7:<version>`.
pub const BUTTON_PREFIX: &str = "opsbot";

/// The store key linking a Discord card message to its request (for reactions).
pub fn card_link(channel: &str, message: &str) -> String {
    crate::chat::outbound::card_link(Platform::Discord, channel, message)
}

/// Text a person typed, inert in Discord: every inline markdown character
/// escaped (and `#`, `-`, `>` where they would start a heading, list or
/// quote), no mention (`<@…>`, `@everyone`) or link left intact.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for c in text.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '#' | '-' | '>' if line_start => {
                out.push('\\');
                out.push(c);
            }
            // A zero-width space keeps `@everyone` from being one.
            '@' => out.push_str("@\u{200B}"),
            _ => out.push(c),
        }
        line_start = c == '\n' || (line_start && c.is_whitespace());
    }
    // A bare URL would be a live link: a zero-width space breaks it.
    out.replace("://", ":\u{200B}//")
}

/// `discord:80351110224678912` → `<@80351110224678912>` (shown as the
/// person's name; opsbot's messages never ping).
pub fn mention(actor: &str) -> String {
    match actor.strip_prefix("discord:") {
        Some(id) if id.bytes().all(|b| b.is_ascii_digit()) => format!("<@{id}>"),
        _ => format!("`{actor}`"),
    }
}

/// A reply's text as Discord text: typed spans escaped; in opsbot's own
/// text, Discord identities become mentions and `@everyone`/`@here` stay text.
pub fn render(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (typed, piece) in spans(text) {
        if typed {
            out.push_str(&escape(piece));
            continue;
        }
        let piece = piece.replace('@', "@\u{200B}");
        let is_identity = |w: &str| w.starts_with("discord:") && w.len() > "discord:".len();
        out.push_str(&crate::chat::mentions_in(&piece, is_identity, mention));
    }
    out
}

/// A button's id: what it does, to which request, in which version.
pub fn button_id(approve: bool, view: &ApprovalView) -> String {
    format!("{BUTTON_PREFIX}:{}:{}:{}", if approve { "approve" } else { "deny" }, view.id, view.version)
}

/// The approval card: the exact action, requester, expiry, and buttons while open.
pub fn approval_card(view: &ApprovalView) -> Value {
    let title = view.title();
    let freeze = view.freeze.as_ref().map(|f| format!(" — freeze **{}** in force", escape(f))).unwrap_or_default();
    let mut content = format!(
        "**{title}** · `{id}`\n**{action}** in **{env}**\nRequested by {who} · {have}/{need} approval(s) from {groups}{freeze}\nExpires <t:{expires}:R>",
        id = view.id,
        action = escape(&view.action),
        env = escape(&view.environment),
        who = mention(view.requester.as_str()),
        have = view.approvals_have,
        need = view.approvals_needed,
        groups = escape(&view.approver_groups.join(", ")),
        expires = view.expires_at.timestamp(),
    );
    if let Some(also) = &view.also_needs {
        content.push('\n');
        content.push_str(&render(also));
    }
    if let Some(plan) = &view.plan {
        // A message holds 2,000 characters; the plan gets what the rest leaves.
        let room = 1_700usize.saturating_sub(content.chars().count());
        let shown: String = plan.replace("```", "'''").chars().take(room).collect();
        content.push_str(&format!("\n```\n{shown}\n```"));
    }
    let components = if view.state == RequestState::Pending {
        content.push_str("\nApprove or deny with the buttons, or react ✅ / ❌. You cannot approve your own request.");
        json!([{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Approve", "custom_id": button_id(true, view)},
            {"type": 2, "style": 4, "label": "Deny", "custom_id": button_id(false, view)},
        ]}])
    } else {
        if let Some(by) = &view.decided_by {
            content.push_str(&format!("\n{title} by {}", mention(by.as_str())));
        }
        json!([])
    };
    json!({"content": content, "components": components, "flags": SUPPRESS_EMBEDS, "allowed_mentions": no_pings()})
}

/// A Roll back button's id: `opsbot:rollback:<service>:<deploy>`.
pub fn rollback_button_id(offer: &crate::engine::reply::RollbackOffer) -> String {
    format!("{BUTTON_PREFIX}:rollback:{}:{}", offer.service, offer.deploy)
}

/// An incident's summary (already rendered) with a Roll back button per
/// service in `rollbacks` (none: the buttons are removed).
fn summary_body(text: &str, controls: crate::engine::reply::Controls<'_>) -> Value {
    let rollbacks = match controls {
        crate::engine::reply::Controls::Rollbacks(offers) => offers,
        crate::engine::reply::Controls::Alert(buttons) => {
            // Five buttons to a row.
            let rows: Vec<Value> = buttons
                .chunks(5)
                .map(|row| {
                    let row: Vec<Value> = row
                        .iter()
                        .map(|b| {
                            let label: String = b.label.chars().take(80).collect();
                            let style = if b.action == crate::engine::reply::AlertAction::RollBack { 4 } else { 2 };
                            json!({"type": 2, "style": style, "label": label, "custom_id": format!("{BUTTON_PREFIX}:alert:{}", b.id())})
                        })
                        .collect();
                    json!({"type": 1, "components": row})
                })
                .collect();
            return json!({"content": text, "components": rows, "flags": SUPPRESS_EMBEDS, "allowed_mentions": no_pings()});
        }
    };
    let buttons: Vec<Value> = rollbacks
        .iter()
        .take(5)
        .map(|offer| {
            // Discord takes at most 80 characters of a label.
            let label: String = format!("Roll back {} ({})", offer.service, offer.deploy).chars().take(80).collect();
            json!({"type": 2, "style": 4, "label": label, "custom_id": rollback_button_id(offer)})
        })
        .collect();
    let components = if buttons.is_empty() { json!([]) } else { json!([{"type": 1, "components": buttons}]) };
    json!({"content": text, "components": components, "flags": SUPPRESS_EMBEDS, "allowed_mentions": no_pings()})
}

fn text_body(text: &str) -> Value {
    json!({"content": text, "flags": SUPPRESS_EMBEDS, "allowed_mentions": no_pings()})
}

/// The message flag that shows no link previews.
pub const SUPPRESS_EMBEDS: u64 = 4;

/// The interaction a target may still be answered through.
fn open_interaction(target: &ReplyTarget) -> Option<&crate::event::InteractionHandle> {
    target.interaction.as_ref().filter(|i| i.expires > std::time::Instant::now())
}

impl Wire for DiscordApi {
    const PLATFORM: Platform = Platform::Discord;
    const QUEUE_TASK: &'static str = "discord send queue";
    const MAX_TEXT: usize = MAX_TEXT;

    fn render(&self, text: &str) -> String {
        render(text)
    }

    fn mark(verdict: Verdict) -> &'static str {
        match verdict {
            Verdict::Succeeded => "✅",
            Verdict::Unknown => "❓",
            _ => "❌",
        }
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move { DiscordApi::post(self, channel, thread, &text_body(text)).await })
    }

    fn update<'a>(&'a self, channel: &'a str, message: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        let (channel, message) = locate(channel, message);
        Box::pin(async move { self.edit_message(channel, message, &text_body(text)).await })
    }

    fn post_card<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move { DiscordApi::post(self, channel, thread, &approval_card(view)).await })
    }

    fn update_card<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        view: &'a ApprovalView,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let (channel, message) = locate(channel, message);
        Box::pin(async move { self.edit_message(channel, message, &approval_card(view)).await })
    }

    fn post_summary<'a>(
        &'a self,
        channel: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move { DiscordApi::post(self, channel, None, &summary_body(text, controls)).await })
    }

    fn update_summary<'a>(
        &'a self,
        channel: &'a str,
        message: &'a str,
        text: &'a str,
        controls: crate::engine::reply::Controls<'a>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let (channel, message) = locate(channel, message);
        Box::pin(async move { self.edit_message(channel, message, &summary_body(text, controls)).await })
    }

    fn upload<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        filename: &'a str,
        png: &'a [u8],
        comment: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        // A chart goes in the channel (or the thread it was asked in).
        let (channel, _) = match thread {
            Some(thread) => super::api::locate(channel, thread),
            None => (channel, ""),
        };
        Box::pin(async move { self.post_file(channel, filename, png, comment).await })
    }

    fn pin<'a>(&'a self, channel: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        let (channel, message) = locate(channel, message);
        Box::pin(DiscordApi::pin(self, channel, message))
    }

    fn open_channel<'a>(
        &'a self,
        near: &'a str,
        name: &'a str,
        _members: &'a [&'a str],
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(DiscordApi::open_channel(self, near, name))
    }

    fn private<'a>(
        &'a self,
        target: &'a ReplyTarget,
        _channel: &'a str,
        user: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let body = json!({"content": text, "flags": 64 | SUPPRESS_EMBEDS, "allowed_mentions": no_pings()});
            let own = open_interaction(target)
                .filter(|i| i.user.id_on(Platform::Discord) == Some(user))
                .filter(|i| !self.never_answered(&i.token));
            if let Some(interaction) = own {
                // Seen only by the person who clicked or typed (never sent
                // through someone else's interaction).
                match self.interaction_private(&interaction.token, &body).await {
                    Err(ApiError::Permanent(why)) if why == NOT_ANSWERED => {}
                    other => return other,
                }
            }
            // No interaction to answer through (a reaction, or one whose
            // first response failed): Discord has no ephemeral message
            // outside one, so the note goes by DM.
            let dm = self.dm_channel(user).await?;
            self.create_message(&dm, &text_body(text)).await.map(|_| ())
        })
    }

    fn answers_in_place(&self, target: &ReplyTarget) -> bool {
        open_interaction(target).is_some_and(|i| !self.never_answered(&i.token))
    }

    fn answer_in_place<'a>(&'a self, target: &'a ReplyTarget, text: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let channel = target.channel_on(Platform::Discord).unwrap_or_default();
            let answered = match open_interaction(target) {
                Some(interaction) => self.interaction_answer(&interaction.token, &text_body(text)).await,
                None => Err(ApiError::Permanent(NOT_ANSWERED.into())),
            };
            match answered {
                // Expired, or never answered: the channel gets it instead.
                Err(ApiError::Permanent(why)) if why == NOT_ANSWERED => {
                    DiscordApi::post(self, channel, target.thread.as_deref(), &text_body(text)).await.map(|_| ())
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reply::typed;

    #[test]
    fn typed_text_is_inert_and_opsbot_names_people() {
        let text = format!("locked by discord:80351110224678912: {}", typed("<@1> @everyone **x** `y` [l](http://e)"));
        let shown = render(&text);
        assert!(shown.starts_with("locked by <@80351110224678912>: "), "{shown}");
        assert!(!shown.contains("<@1>") && !shown.contains("@everyone") && !shown.contains("**x**"), "{shown}");
        assert!(shown.contains("\\<@\u{200B}1>") && shown.contains("\\*\\*x\\*\\*"), "{shown}");
        // opsbot's own text cannot ping everyone either.
        assert_eq!(render("@here now"), "@\u{200B}here now");
        let link = render(&typed("see https://evil.example/login"));
        assert!(!link.contains("https://"), "{link}");
    }
}
