//! Block Kit for approval cards, and the text rules Slack imposes.

use super::inbound::{ALERT_ACTION, APPROVE_ACTION, DENY_ACTION, ROLLBACK_ACTION};
use crate::approval::RequestState;
use crate::engine::reply::ApprovalView;
use serde_json::{json, Value};

/// Slack truncates long messages; split well below its limits, at line ends.
pub const MAX_TEXT: usize = 3_900;

/// `slack:U123` → `<@U123>` so Slack shows the person's name; others verbatim.
pub fn mention(actor: &str) -> String {
    match actor.strip_prefix("slack:") {
        Some(id) => format!("<@{id}>"),
        None => format!("`{actor}`"),
    }
}

/// A reply's text as Slack text: every `&`, `<` and `>` escaped (so nothing
/// in it is a mention, link or command Slack acts on: `<!channel>` stays
/// text), then opsbot's own `slack:U…` identities turned into mentions. Text
/// a person typed ([`crate::engine::reply::typed`]) is escaped and never turned into
/// a mention, even if it looks like an identity.
pub fn render(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (typed, piece) in crate::engine::reply::spans(text) {
        let escaped = escape(piece);
        if typed {
            out.push_str(&escaped);
        } else {
            out.push_str(&mentions_in(&escaped));
        }
    }
    out
}

/// Replaces every `slack:U…` identity in `text` with a mention.
fn mentions_in(text: &str) -> String {
    crate::chat::mentions_in(text, |w| w.starts_with("slack:U") || w.starts_with("slack:W"), mention)
}

/// Escapes Slack's control characters (its docs: `&`, `<`, `>`).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The approval card: the exact action, requester, expiry, buttons while open.
pub fn approval_card(view: &ApprovalView) -> (String, Value) {
    let expires = view.expires_at.timestamp();
    let fallback = view.expires_at.format("%H:%M UTC");
    let freeze = view.freeze.as_ref().map(|f| format!(" — freeze *{}* in force", escape(f))).unwrap_or_default();
    let title = view.title();
    let summary = format!(
        "*{title}* · `{id}`\n*{action}* in *{env}*\nRequested by {who} · {have}/{need} approval(s) from {groups}{freeze}\nExpires <!date^{expires}^{{date_short_pretty}} {{time}}|{fallback}>",
        id = view.id,
        action = escape(&view.action),
        env = escape(&view.environment),
        who = mention(view.requester.as_str()),
        have = view.approvals_have,
        need = view.approvals_needed,
        groups = escape(&view.approver_groups.join(", ")),
    );
    let summary = match &view.also_needs {
        Some(also) => format!("{summary}\n{}", mentions_in(&escape(also))),
        None => summary,
    };
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}})];
    if let Some(plan) = &view.plan {
        // A section holds at most 3,000 characters.
        let shown: String = escape(&plan.replace("```", "'''")).chars().take(2_900).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{shown}```")}}));
    }
    if view.state == RequestState::Pending {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "A :white_check_mark: reaction on this message approves, :x: denies. You cannot approve your own request."}]}));
        blocks.push(json!({
            "type": "actions",
            "block_id": "opsbot_vote",
            "elements": [
                {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": view.id, "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": DENY_ACTION, "style": "danger", "value": view.id, "text": {"type": "plain_text", "text": "Deny"}}
            ]
        }));
    } else if let Some(by) = &view.decided_by {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{title} by {}", mention(by.as_str()))}]}));
    }
    let text = format!("{title}: {} ({}) — {}", view.action, view.id, view.state);
    (text, Value::Array(blocks))
}

/// A standing message (already rendered): an incident's summary with a
/// Roll back button per service, or an alert's with its buttons.
pub fn summary_blocks(text: &str, controls: crate::engine::reply::Controls<'_>) -> Value {
    // A section holds at most 3,000 characters.
    let shown: String = text.chars().take(2_900).collect();
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": shown}})];
    let rollbacks = match controls {
        crate::engine::reply::Controls::Rollbacks(offers) => offers,
        crate::engine::reply::Controls::Alert(buttons) => {
            if !buttons.is_empty() {
                let elements: Vec<Value> = buttons
                    .iter()
                    .map(|b| {
                        let label: String = b.label.chars().take(75).collect();
                        let mut button = json!({"type": "button", "action_id": format!("{ALERT_ACTION}:{}", b.id()),
                            "value": b.id(), "text": {"type": "plain_text", "text": label}});
                        if b.action == crate::engine::reply::AlertAction::RollBack {
                            button["style"] = json!("danger");
                        }
                        button
                    })
                    .collect();
                blocks.push(json!({"type": "actions", "block_id": "opsbot_alert", "elements": elements}));
                blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "A click is you typing the command, under its usual approvals; a click on an older form of this message is refused."}]}));
            }
            return Value::Array(blocks);
        }
    };
    if !rollbacks.is_empty() {
        let buttons: Vec<Value> = rollbacks
            .iter()
            .take(5)
            .map(|offer| {
                // Action ids are unique within a block: each names its service.
                // Slack shows at most 75 characters of a button's text.
                let label: String = format!("Roll back {} ({})", offer.service, offer.deploy).chars().take(75).collect();
                json!({"type": "button", "action_id": format!("{ROLLBACK_ACTION}:{}", offer.service), "value": offer.deploy,
                    "text": {"type": "plain_text", "text": label}})
            })
            .collect();
        blocks.push(json!({"type": "actions", "block_id": "opsbot_summary", "elements": buttons}));
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "A Roll back click asks for `/rollback <service> --of <deploy>` as you, under its usual approvals; it is refused once the service changed since that deploy."}]}));
    }
    Value::Array(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_is_escaped_and_never_becomes_a_mention_or_link() {
        use crate::engine::reply::typed;
        let text = format!(
            "locked by slack:U1 until 12:00: {} <usage>",
            typed("<!channel> <https://evil.example|runbook> slack:U2 <@U3> & co")
        );
        assert_eq!(
            render(&text),
            "locked by <@U1> until 12:00: &lt;!channel&gt; &lt;https://evil.example|runbook&gt; slack:U2 &lt;@U3&gt; &amp; co &lt;usage&gt;"
        );
    }

    #[test]
    fn slack_identities_become_mentions() {
        assert_eq!(
            mentions_in("requested by slack:U1, approved by slack:U2)"),
            "requested by <@U1>, approved by <@U2>)"
        );
        assert_eq!(mentions_in("by console:bob"), "by console:bob");
        assert_eq!(mentions_in("slack:U1's approval (slack:U2)."), "<@U1>'s approval (slack:U2).");
        assert_eq!(mentions_in("ask slack:U1."), "ask <@U1>.");
    }
}
