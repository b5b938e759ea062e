//! Verified Slack payloads → platform-neutral [`Event`]s. Only fields opsbot
//! needs are read; everything else Slack sends is ignored. Identities become
//! `slack:U…`, channels `slack:C…`, and each input carries the dedup key that
//! makes Slack's retries harmless.

use crate::event::{Actor, Event, ReplyTarget};
use serde::Deserialize;
use std::borrow::Cow;

/// A slash command (form fields over HTTP; the same names in Socket Mode JSON).
#[derive(Debug, Deserialize)]
pub struct SlashCommand {
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub trigger_id: String,
}

/// Why a payload is not something opsbot acts on (the request is still acked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("identity not usable: {0}")]
    Identity(String),
}

fn actor(user: &str) -> Result<Actor, InboundError> {
    Actor::parse(&format!("slack:{user}")).map_err(InboundError::Identity)
}

fn channel(id: &str) -> Result<String, InboundError> {
    crate::event::qualified_id(&format!("slack:{id}"), "channel").map(str::to_string).map_err(InboundError::Identity)
}

impl SlashCommand {
    /// Reads the form Slack posts to `/slack/commands`. Same result as
    /// deserializing with `serde_urlencoded` (a property test holds them to
    /// it), but only the five fields opsbot uses are decoded; the rest
    /// (`response_url`, `team_domain`, …) are skipped unread. The generic
    /// decode was ~4% of the bot's CPU under load.
    pub fn from_form(body: &[u8]) -> Result<SlashCommand, String> {
        let mut fields: [Option<String>; 5] = Default::default();
        const NAMES: [&str; 5] = ["command", "text", "user_id", "channel_id", "trigger_id"];
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let key = form_decode(key);
            let Some(slot) = NAMES.iter().position(|name| name.as_bytes() == key.as_bytes()) else {
                continue;
            };
            if fields[slot].replace(form_decode(value).into_owned()).is_some() {
                return Err(format!("duplicate field `{}`", NAMES[slot]));
            }
        }
        let [command, text, user_id, channel_id, trigger_id] = fields;
        let required = |field: Option<String>, name: &str| field.ok_or_else(|| format!("missing field `{name}`"));
        Ok(SlashCommand {
            command: required(command, "command")?,
            text: text.unwrap_or_default(),
            user_id: required(user_id, "user_id")?,
            channel_id: required(channel_id, "channel_id")?,
            trigger_id: trigger_id.unwrap_or_default(),
        })
    }

    pub fn into_event(self) -> Result<Event, InboundError> {
        // Slack sends `&`, `<` and `>` a person typed as entities (and, for a
        // command with escaping on, mentions as `<@U…|name>`, which the
        // grammar reads): the grammar gets the text as typed.
        let text = format!("{} {}", self.command.trim(), unescape(self.text.trim()));
        Ok(Event::Command {
            actor: actor(&self.user_id)?,
            text: text.trim().to_string(),
            reply: ReplyTarget::channel(channel(&self.channel_id)?),
            dedup_key: (!self.trigger_id.is_empty()).then(|| format!("slack:trigger:{}", self.trigger_id)),
            roles: Vec::new(),
        })
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value: `+` is
/// a space, `%XX` a byte, a `%` not followed by two hex digits stays as it
/// is, and bytes that are not UTF-8 become U+FFFD (as `form_urlencoded` does).
/// Borrows when there is nothing to decode (every key Slack sends).
fn form_decode(raw: &[u8]) -> Cow<'_, str> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8_lossy(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[derive(Debug, Deserialize)]
struct Id {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ActionPayload {
    action_id: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    action_ts: String,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    ts: String,
}

/// `block_actions` from a button.
#[derive(Debug, Deserialize)]
struct BlockActions {
    #[serde(rename = "type")]
    kind: String,
    user: Id,
    channel: Option<Id>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    actions: Vec<ActionPayload>,
}

/// The action ids on opsbot's approval buttons.
pub const APPROVE_ACTION: &str = "opsbot_approve";
pub const DENY_ACTION: &str = "opsbot_deny";
/// The action id of an incident summary's Roll back button, before `:<service>`
/// (the value is the deploy's request id).
pub const ROLLBACK_ACTION: &str = "opsbot_rollback";

/// The action id of an alert message's buttons, before `:<word>:<alert>:<version>`.
pub const ALERT_ACTION: &str = "opsbot_alert";

/// An interactivity payload (the JSON in the `payload` form field).
pub fn interaction(payload: &str) -> Result<Option<Event>, InboundError> {
    let parsed: BlockActions = serde_json::from_str(payload).map_err(|e| InboundError::Malformed(e.to_string()))?;
    if parsed.kind != "block_actions" {
        return Ok(None);
    }
    let Some(action) = parsed.actions.first() else { return Ok(None) };
    let approve = match action.action_id.as_str() {
        APPROVE_ACTION => true,
        DENY_ACTION => false,
        id if id.starts_with(&format!("{ROLLBACK_ACTION}:")) => return rollback_click(&parsed, action).map(Some),
        id if id.starts_with(&format!("{ALERT_ACTION}:")) => return alert_click(&parsed, action).map(Some),
        _ => return Ok(None),
    };
    let Some(request_id) = crate::command::parse::normalize_request_id(&action.value) else {
        return Err(InboundError::Malformed("button value is not a request id".into()));
    };
    let channel_id = parsed.channel.map(|c| c.id).ok_or_else(|| InboundError::Malformed("no channel".into()))?;
    let message_ts = parsed.container.and_then(|c| c.message_ts).or(parsed.message.map(|m| m.ts)).unwrap_or_default();
    Ok(Some(Event::Vote {
        actor: actor(&parsed.user.id)?,
        request_id,
        approve,
        reply: ReplyTarget {
            channel: channel(&channel_id)?,
            thread: (!message_ts.is_empty()).then(|| message_ts.clone()),
            interaction: None,
        },
        dedup_key: Some(format!("slack:action:{}:{}:{}", action.action_id, message_ts, parsed.user.id)),
        version: None,
        roles: Vec::new(),
    }))
}

/// A Roll back click on an incident's summary: the clicker asking for
/// `/rollback <service> --of <deploy>`, threaded under the summary.
fn rollback_click(parsed: &BlockActions, action: &ActionPayload) -> Result<Event, InboundError> {
    let service = action.action_id.strip_prefix(ROLLBACK_ACTION).and_then(|s| s.strip_prefix(':')).unwrap_or("");
    let deploy = crate::command::parse::normalize_request_id(&action.value);
    let (true, Some(deploy)) = (crate::engine::reply::button_service(service), deploy) else {
        return Err(InboundError::Malformed("a Roll back button names no service or deploy".into()));
    };
    let offer = crate::engine::reply::RollbackOffer { service: service.to_string(), deploy };
    clicked(parsed, action, offer.command())
}

/// A click on an alert message's button: the clicker typing the command
/// it stands for (see [`crate::engine::reply::AlertButton`]), threaded
/// under the alert's message.
fn alert_click(parsed: &BlockActions, action: &ActionPayload) -> Result<Event, InboundError> {
    let id = action.action_id.strip_prefix(ALERT_ACTION).and_then(|s| s.strip_prefix(':')).unwrap_or("");
    let text = crate::engine::reply::AlertButton::command_of(id)
        .ok_or_else(|| InboundError::Malformed("an alert button opsbot does not draw".into()))?;
    clicked(parsed, action, text)
}

/// A click that stands for the clicker typing `text`, threaded under the
/// message clicked. Each click is its own request (Slack's retries of one
/// click carry the same `action_ts`).
fn clicked(parsed: &BlockActions, action: &ActionPayload, text: String) -> Result<Event, InboundError> {
    let channel_id =
        parsed.channel.as_ref().map(|c| c.id.clone()).ok_or_else(|| InboundError::Malformed("no channel".into()))?;
    let message_ts = parsed
        .container
        .as_ref()
        .and_then(|c| c.message_ts.clone())
        .or(parsed.message.as_ref().map(|m| m.ts.clone()))
        .unwrap_or_default();
    Ok(Event::Command {
        actor: actor(&parsed.user.id)?,
        text,
        reply: ReplyTarget {
            channel: channel(&channel_id)?,
            thread: (!message_ts.is_empty()).then(|| message_ts.clone()),
            interaction: None,
        },
        dedup_key: Some(format!(
            "slack:action:{}:{message_ts}:{}:{}",
            action.action_id, parsed.user.id, action.action_ts
        )),
        roles: Vec::new(),
    })
}

/// An Events API body.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventsBody {
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        event_id: String,
        event: serde_json::Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ReactionItem {
    channel: String,
    ts: String,
}

#[derive(Debug, Deserialize)]
struct ReactionAdded {
    user: String,
    reaction: String,
    item: ReactionItem,
}

#[derive(Debug, Deserialize)]
struct AppMention {
    user: String,
    text: String,
    channel: String,
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
}

/// A reaction's meaning as a vote, if it has one.
pub fn reaction_vote(reaction: &str) -> Option<bool> {
    // Skin tones arrive as `+1::skin-tone-2`.
    match reaction.split("::").next().unwrap_or(reaction) {
        "white_check_mark" | "heavy_check_mark" | "+1" | "thumbsup" => Some(true),
        "x" | "-1" | "thumbsdown" | "no_entry" => Some(false),
        _ => None,
    }
}

/// What an `event_callback` asks for.
#[derive(Debug, PartialEq)]
pub enum Callback {
    /// A reaction on message `ts` in `channel`: the adapter looks up which
    /// request that message is the card of.
    Reaction {
        actor: Actor,
        approve: bool,
        channel: String,
        ts: String,
        dedup_key: String,
    },
    Event(Event),
    Ignored,
}

/// Text as the person typed it: Slack sends `&`, `<` and `>` as entities
/// (`&amp;` last, so `&amp;lt;` stays `&lt;`).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

pub fn event_callback(event_id: &str, event: &serde_json::Value) -> Result<Callback, InboundError> {
    let malformed = |e: serde_json::Error| InboundError::Malformed(e.to_string());
    match event.get("type").and_then(|t| t.as_str()) {
        Some("reaction_added") => {
            let r: ReactionAdded = serde_json::from_value(event.clone()).map_err(malformed)?;
            let Some(approve) = reaction_vote(&r.reaction) else { return Ok(Callback::Ignored) };
            Ok(Callback::Reaction {
                actor: actor(&r.user)?,
                approve,
                channel: channel(&r.item.channel)?,
                ts: r.item.ts,
                dedup_key: format!("slack:event:{event_id}"),
            })
        }
        Some("app_mention") => {
            let m: AppMention = serde_json::from_value(event.clone()).map_err(malformed)?;
            // Drop the leading `<@UBOT>` mention(s); the rest uses the slash grammar.
            let words: Vec<&str> =
                m.text.split_whitespace().skip_while(|w| w.starts_with("<@") && w.ends_with('>')).collect();
            let text = unescape(&words.join(" "));
            Ok(Callback::Event(Event::Command {
                actor: actor(&m.user)?,
                text,
                reply: ReplyTarget::in_thread(channel(&m.channel)?, m.thread_ts.unwrap_or(m.ts)),
                dedup_key: Some(format!("slack:event:{event_id}")),
                roles: Vec::new(),
            }))
        }
        _ => Ok(Callback::Ignored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slash_commands_become_commands_with_trigger_dedup() {
        let body = "command=%2Fdeploy&text=api-service+v1.4.2&user_id=U1&channel_id=C1&trigger_id=T.1&team_id=T";
        let cmd = SlashCommand::from_form(body.as_bytes()).unwrap();
        let Event::Command { actor, text, reply, dedup_key, .. } = cmd.into_event().unwrap() else { panic!() };
        assert_eq!(
            (actor.as_str(), text.as_str(), reply.channel.as_str()),
            ("slack:U1", "/deploy api-service v1.4.2", "slack:C1")
        );
        assert_eq!(dedup_key.as_deref(), Some("slack:trigger:T.1"));
        assert_eq!(unescape("a &amp;lt; b &lt;@U1|dave&gt; &amp; c"), "a &lt; b <@U1|dave> & c");
        let bad = SlashCommand::from_form(b"command=%2Fx&user_id=U%20X&channel_id=C1").unwrap();
        assert!(bad.into_event().is_err());
    }

    #[test]
    fn buttons_become_votes() {
        let payload = json!({
            "type": "block_actions", "user": {"id": "U2"}, "channel": {"id": "C1"},
            "container": {"message_ts": "111.222"},
            "actions": [{"action_id": "opsbot_approve", "value": "r-7", "action_ts": "1"}]
        });
        let Some(Event::Vote { actor, request_id, approve, dedup_key, .. }) =
            interaction(&payload.to_string()).unwrap()
        else {
            panic!()
        };
        assert_eq!((actor.as_str(), request_id.as_str(), approve), ("slack:U2", "r-7", true));
        assert_eq!(dedup_key.as_deref(), Some("slack:action:opsbot_approve:111.222:U2"));
        let other = json!({"type": "view_submission", "user": {"id": "U2"}});
        assert_eq!(interaction(&other.to_string()).unwrap(), None);
    }

    #[test]
    fn reactions_and_mentions() {
        let reaction = json!({"type": "reaction_added", "user": "U3", "reaction": "white_check_mark", "item": {"type": "message", "channel": "C1", "ts": "5.6"}});
        let Callback::Reaction { approve, ts, .. } = event_callback("Ev1", &reaction).unwrap() else { panic!() };
        assert!(approve && ts == "5.6");
        let party = json!({"type": "reaction_added", "user": "U3", "reaction": "tada", "item": {"type": "message", "channel": "C1", "ts": "5.6"}});
        assert_eq!(event_callback("Ev2", &party).unwrap(), Callback::Ignored);
        assert_eq!(reaction_vote("+1::skin-tone-3"), Some(true));
        let mention = json!({"type": "app_mention", "user": "U1", "text": "<@UBOT> status api-service", "channel": "C1", "ts": "9.9"});
        let Callback::Event(Event::Command { text, reply, .. }) = event_callback("Ev3", &mention).unwrap() else {
            panic!()
        };
        assert_eq!(text, "status api-service");
        assert_eq!(reply.thread.as_deref(), Some("9.9"));
    }

    fn fields(command: &SlashCommand) -> [&str; 5] {
        [&command.command, &command.text, &command.user_id, &command.channel_id, &command.trigger_id]
    }

    proptest::proptest! {
        /// The hand-written form reader agrees with `serde_urlencoded` on any
        /// form: fields present or not, repeated, unknown, escaped or not,
        /// malformed escapes and bytes that are not UTF-8.
        #[test]
        fn the_form_reader_agrees_with_serde_urlencoded(
            pairs in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["command", "text", "user_id", "channel_id", "trigger_id", "team_id", "response_url", "te%78t", "user+id", ""]),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                    proptest::prelude::any::<bool>(),
                ),
                0..9,
            )
        ) {
            let mut body = Vec::new();
            for (key, value, raw) in &pairs {
                if !body.is_empty() {
                    body.push(b'&');
                }
                body.extend_from_slice(key.as_bytes());
                if *raw && value.is_empty() {
                    continue; // a key without `=`
                }
                body.push(b'=');
                if *raw {
                    // Unescaped bytes (except the separators): '+', '%', stray
                    // escapes and invalid UTF-8 all get through.
                    body.extend(value.iter().map(|&b| if b == b'&' || b == b'=' { b'%' } else { b }));
                } else {
                    let encoded = serde_urlencoded::to_string([("", String::from_utf8_lossy(value))]).unwrap();
                    body.extend_from_slice(&encoded.as_bytes()[1..]);
                }
            }
            let ours = SlashCommand::from_form(&body);
            let theirs = serde_urlencoded::from_bytes::<SlashCommand>(&body);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(fields(a), fields(b)),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a, &b.to_string()),
                _ => proptest::prop_assert!(false, "disagree on {:?}: {:?} vs {:?}", String::from_utf8_lossy(&body), ours, theirs),
            }
        }
    }
}
