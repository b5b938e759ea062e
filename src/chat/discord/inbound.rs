//! Discord interactions (the payload of `INTERACTION_CREATE` or of a POST
//! to the interactions endpoint, after its signature is checked) into what
//! the core takes: slash commands become command text, opsbot's buttons
//! become votes, and ✅/❌ reactions on a card become votes too.
//!
//! A slash command's options are written back as the text opsbot's grammar
//! reads (`/scale api-service 6 --emergency "db on fire"`), so Discord,
//! Slack and the console share one parser, one set of errors and one audit
//! shape. Values are quoted so that nothing a person typed can become
//! another argument.

use crate::command::spec::ArgKind;
use crate::command::Registry;
use crate::event::{Actor, Event, ReplyTarget};
use serde_json::Value;

/// What one interaction asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Discord checking the endpoint: answer `{"type": 1}`.
    Ping,
    /// A slash command, as opsbot's grammar reads it.
    Command { event: Event, interaction: Interaction },
    /// A click on an Approve or Deny button of an opsbot card.
    Button { event: Event, interaction: Interaction },
    /// Autocomplete of a service option: what has been typed so far.
    Autocomplete { typed: String, interaction: Interaction },
    /// Something opsbot does not handle (a component of another app's
    /// message, a modal): answered with a private note.
    Other { kind: u64, interaction: Interaction },
}

impl Inbound {
    /// The interaction to answer, if any.
    pub fn interaction(&self) -> Option<&Interaction> {
        match self {
            Inbound::Ping => None,
            Inbound::Command { interaction, .. }
            | Inbound::Button { interaction, .. }
            | Inbound::Autocomplete { interaction, .. }
            | Inbound::Other { interaction, .. } => Some(interaction),
        }
    }
}

/// The id and token of an interaction that could not be read otherwise,
/// so it can still be answered.
pub fn handle_of(body: &[u8]) -> Option<Interaction> {
    let payload: Value = serde_json::from_slice(body).ok()?;
    Some(Interaction { id: id_text(&payload["id"])?, token: payload["token"].as_str()?.to_string(), roles: Vec::new() })
}

/// An id Discord sends as a string (or, re-serialised, a number).
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// What answering an interaction needs.
#[derive(Clone, PartialEq)]
pub struct Interaction {
    pub id: String,
    /// Valid for 15 minutes: follow-ups and edits of the answer go through
    /// it. A credential: never printed.
    pub token: String,
    /// The member's role ids in the guild (none in a DM).
    pub roles: Vec<String>,
}

impl std::fmt::Debug for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interaction({}, <token>)", self.id)
    }
}

/// Reads one interaction. An error says what is wrong, in words for the
/// person who sent it.
pub fn interaction(registry: &Registry, body: &[u8]) -> Result<Inbound, String> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| format!("not an interaction: {e}"))?;
    let kind = payload["type"].as_u64().ok_or("an interaction without a type")?;
    if kind == 1 {
        return Ok(Inbound::Ping);
    }
    let text = |field: &str| id_text(&payload[field]).ok_or(format!("an interaction without `{field}`"));
    let roles = payload["member"]["roles"].as_array().into_iter().flatten().filter_map(id_text).collect();
    let interaction = Interaction { id: text("id")?, token: text("token")?, roles };
    let actor = || {
        let user = id_text(&payload["member"]["user"]["id"]).or(id_text(&payload["user"]["id"]));
        user.and_then(|id| Actor::parse(&format!("discord:{id}")).ok()).ok_or("an interaction without a readable user")
    };
    let channel = || {
        let id = text("channel_id")?;
        crate::event::qualified_id(&format!("discord:{id}"), "channel").map(str::to_string)
    };
    let dedup_key = Some(format!("discord:interaction:{}", interaction.id));
    match kind {
        2 => {
            let (actor, reply) = (actor()?, ReplyTarget::channel(channel()?));
            let command = command_text(registry, &payload["data"])?;
            let event = Event::Command { actor, text: command, reply, dedup_key, roles: Vec::new() };
            Ok(Inbound::Command { event, interaction })
        }
        3 => {
            let custom_id = payload["data"]["custom_id"].as_str().unwrap_or("");
            let clicked = rollback_button(custom_id).map(|offer| offer.command()).or_else(|| {
                let id = custom_id.strip_prefix(super::outbound::BUTTON_PREFIX)?.strip_prefix(":alert:")?;
                crate::engine::reply::AlertButton::command_of(id)
            });
            if let Some(text) = clicked {
                // The clicker asking for `/rollback <service> --of <deploy>`
                // (an incident summary's button) or for what an alert's
                // button stands for, answered like a slash command.
                let mut reply = ReplyTarget::channel(channel()?);
                reply.thread = id_text(&payload["message"]["id"]);
                let event = Event::Command { actor: actor()?, text, reply, dedup_key, roles: Vec::new() };
                return Ok(Inbound::Command { event, interaction });
            }
            let Some((approve, request_id, version)) = button(custom_id) else {
                return Ok(Inbound::Other { kind, interaction });
            };
            let mut reply = ReplyTarget::channel(channel()?);
            reply.thread = id_text(&payload["message"]["id"]);
            let event = Event::Vote {
                actor: actor()?,
                request_id,
                approve,
                reply,
                dedup_key,
                version: Some(version),
                roles: Vec::new(),
            };
            Ok(Inbound::Button { event, interaction })
        }
        4 => {
            // A subcommand's options are one level down.
            let options = |o: &Value| o["options"].as_array().cloned().unwrap_or_default();
            let focused = options(&payload["data"])
                .into_iter()
                .flat_map(|o| if o["type"] == 1 { options(&o) } else { vec![o] })
                .find(|o| o["focused"] == true)
                .and_then(|o| o["value"].as_str().map(str::to_string))
                .unwrap_or_default();
            Ok(Inbound::Autocomplete { typed: focused, interaction })
        }
        other => Ok(Inbound::Other { kind: other, interaction }),
    }
}

/// `opsbot:approve:r-7:<version>` → (approve, request id, version).
pub fn button(custom_id: &str) -> Option<(bool, String, String)> {
    let mut parts = custom_id.split(':');
    if parts.next()? != super::outbound::BUTTON_PREFIX {
        return None;
    }
    let approve = match parts.next()? {
        "approve" => true,
        "deny" => false,
        _ => return None,
    };
    let request_id = crate::command::parse::normalize_request_id(parts.next()?)?;
    let version = parts
        .next()
        .filter(|v| v.len() == crate::engine::reply::VERSION_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()))?;
    parts.next().is_none().then(|| (approve, request_id, version.to_string()))
}

/// `opsbot:rollback:api-service:r-7` → the deploy an incident summary's Roll back button offers to undo.
pub fn rollback_button(custom_id: &str) -> Option<crate::engine::reply::RollbackOffer> {
    let rest = custom_id.strip_prefix(super::outbound::BUTTON_PREFIX)?.strip_prefix(":rollback:")?;
    let (service, deploy) = rest.rsplit_once(':')?;
    let deploy = crate::command::parse::normalize_request_id(deploy)?;
    crate::engine::reply::button_service(service)
        .then(|| crate::engine::reply::RollbackOffer { service: service.to_string(), deploy })
}

/// A reaction that votes: ✅ (or ☑️, ✔️, 👍) approves, ❌ (or 👎) denies.
pub fn reaction_vote(emoji: &str) -> Option<bool> {
    match emoji.trim_end_matches('\u{FE0F}') {
        "✅" | "☑" | "✔" | "👍" => Some(true),
        "❌" | "👎" => Some(false),
        _ => None,
    }
}

/// `data` of an application command as `/name arg … --flag value`.
fn command_text(registry: &Registry, data: &Value) -> Result<String, String> {
    let top = data["name"].as_str().ok_or("a command without a name")?;
    // A group's command arrives as the group with one subcommand option.
    let (name, data) = match data["options"].as_array().and_then(|o| o.first()).filter(|o| o["type"] == 1) {
        Some(sub) if registry.is_group(top) => {
            let word = sub["name"].as_str().ok_or("a subcommand without a name")?;
            (format!("{top} {word}"), sub)
        }
        _ => (top.to_string(), data),
    };
    let name = name.as_str();
    let spec = registry.find(name).ok_or_else(|| format!("`/{name}` is not an opsbot command here"))?;
    let given: Vec<(&str, &Value)> = data["options"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["name"].as_str()?, &o["value"])))
        .collect();
    let value_of = |option: &str| given.iter().find(|(n, _)| *n == option).map(|(_, v)| *v);
    let mut text = format!("/{name}");
    // Arguments are positional: one left out cannot be followed by another.
    let mut skipped: Option<&str> = None;
    for arg in &spec.args {
        match value_of(&arg.name) {
            Some(value) => {
                if let Some(missing) = skipped {
                    return Err(format!(
                        "`/{name}`: give `{missing}` too when you give `{}` (its arguments go in order: {})",
                        arg.name, spec.usage
                    ));
                }
                text.push(' ');
                match (&arg.kind, value) {
                    // An incident option is exactly an id, or refused: never
                    // folded into the text that follows it.
                    (ArgKind::IncidentId, value) => {
                        let given = value.as_str().unwrap_or_default();
                        let id = crate::command::parse::normalize_incident_id(given.trim()).ok_or_else(|| {
                            format!(
                                "`{}` is not an incident id; write it like INC-3",
                                given.chars().take(40).collect::<String>()
                            )
                        })?;
                        text.push_str(&id);
                    }
                    // A USER option's value is the member's id.
                    (ArgKind::Person, Value::String(id))
                        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        text.push_str(&format!("<@{id}>"))
                    }
                    _ => text.push_str(&quoted(value)?),
                }
            }
            // An incident id may be left out before later arguments: the
            // parser takes only `INC-n` as one, and values arrive quoted.
            None if arg.kind == ArgKind::IncidentId => {}
            None => skipped = skipped.or(Some(&arg.name)),
        }
    }
    for flag in &spec.flags {
        match (value_of(&flag.name), &flag.kind) {
            (Some(Value::Bool(true)), ArgKind::Switch) => text.push_str(&format!(" --{}", flag.name)),
            (Some(Value::Bool(false)) | None, _) => {}
            (Some(value), _) => text.push_str(&format!(" --{}={}", flag.name, quoted(value)?)),
        }
    }
    if let Some((unknown, _)) =
        given.iter().find(|(n, _)| !spec.args.iter().any(|a| a.name == *n) && !spec.flags.iter().any(|f| f.name == *n))
    {
        return Err(format!("`/{name}` has no option `{unknown}`; its usage is {}", spec.usage));
    }
    Ok(text)
}

/// One token of the grammar holding exactly `value`: quoted with the first
/// quote pair the value does not contain.
fn quoted(value: &Value) -> Result<String, String> {
    let raw = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err("an option value that is not text, a number or a switch".into()),
    };
    let pair = [('"', '"'), ('\'', '\''), ('“', '”'), ('‘', '’')]
        .into_iter()
        .find(|(_, close)| !raw.contains(*close))
        .ok_or("that text holds every kind of closing quote; leave one kind out")?;
    Ok(format!("{}{raw}{}", pair.0, pair.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::parse::tokenize;
    use serde_json::json;

    fn shipped() -> Registry {
        Registry::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("commands")).unwrap()
    }

    fn command(data: Value) -> Vec<u8> {
        json!({"type": 2, "id": "111", "token": "tok", "channel_id": "222", "guild_id": "9",
               "member": {"user": {"id": "80351110224678912"}}, "data": data})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_slash_command_becomes_the_text_the_grammar_reads() {
        let registry = shipped();
        let body = command(json!({"name": "scale", "options": [
            {"name": "replicas", "type": 4, "value": 6},
            {"name": "service", "type": 3, "value": "api-service"},
            {"name": "emergency", "type": 3, "value": "db \"on\" fire"},
        ]}));
        let Inbound::Command { event: Event::Command { actor, text, reply, dedup_key, .. }, interaction: answer } =
            interaction(&registry, &body).unwrap()
        else {
            panic!("not a command")
        };
        assert_eq!(actor.as_str(), "discord:80351110224678912");
        assert_eq!(reply, ReplyTarget::channel("discord:222"));
        assert_eq!(dedup_key.as_deref(), Some("discord:interaction:111"));
        assert_eq!(answer, Interaction { id: "111".into(), token: "tok".into(), roles: Vec::new() });
        assert_eq!(text, "/scale \"api-service\" \"6\" --emergency='db \"on\" fire'");
        // The grammar reads back exactly the values given.
        assert_eq!(tokenize(&text).unwrap(), ["/scale", "api-service", "6", "--emergency=db \"on\" fire"]);
        // Typed text cannot become another argument or a flag of its own.
        let body = command(json!({"name": "lock", "options": [
            {"name": "service", "type": 3, "value": "api-service"},
            {"name": "reason", "type": 3, "value": "migration' 1d --emergency x"},
        ]}));
        let Inbound::Command { event: Event::Command { text, .. }, .. } = interaction(&registry, &body).unwrap() else {
            panic!("not a command")
        };
        assert_eq!(tokenize(&text).unwrap(), ["/lock", "api-service", "migration' 1d --emergency x"]);
        let services = ["api-service".to_string()];
        let parsed = crate::command::parse(&registry, &services, &text).unwrap();
        assert_eq!(parsed.emergency, None, "the reason's `--emergency` stays text");
        assert!(format!("{:?}", parsed.request).contains("migration' 1d --emergency x"), "{parsed:?}");
        // And the grammar takes the whole command as Discord gave it.
        let scale = "/scale \"api-service\" \"6\" --emergency='db \"on\" fire'";
        let parsed = crate::command::parse(&registry, &services, scale).unwrap();
        assert_eq!(parsed.emergency.as_deref(), Some("db \"on\" fire"));
        assert_eq!(parsed.service(), Some("api-service"));
        assert!(parsed.request.describe().contains('6'), "{}", parsed.request.describe());
    }

    #[test]
    fn gaps_unknown_options_and_other_interactions_are_said_plainly() {
        let registry = shipped();
        let gap = command(json!({"name": "audit", "options": [{"name": "limit", "type": 4, "value": 20}]}));
        assert!(interaction(&registry, &gap).unwrap_err().contains("give `service` too"));
        let unknown = command(json!({"name": "status", "options": [
            {"name": "service", "type": 3, "value": "api-service"}, {"name": "verbose", "type": 5, "value": true}]}));
        assert!(interaction(&registry, &unknown).unwrap_err().contains("no option `verbose`"));
        // A value cannot smuggle in a flag (here, a break-glass request):
        // quoted, it stays a value.
        let smuggled = command(json!({"name": "lock", "options": [
            {"name": "service", "type": 3, "value": "api-service"},
            {"name": "reason", "type": 3, "value": "--emergency=now"}]}));
        let Inbound::Command { event: Event::Command { text, .. }, .. } = interaction(&registry, &smuggled).unwrap()
        else {
            panic!("not a command")
        };
        let parsed = crate::command::parse(&registry, &["api-service".to_string()], &text).unwrap();
        assert_eq!(parsed.emergency, None, "{text}");
        let missing = command(json!({"name": "nope"}));
        assert!(interaction(&registry, &missing).unwrap_err().contains("not an opsbot command"));
        assert_eq!(interaction(&registry, br#"{"type":1,"id":"1","token":"t"}"#).unwrap(), Inbound::Ping);
        let auto = json!({"type": 4, "id": "5", "token": "t", "data": {"name": "deploy", "options": [
            {"name": "service", "type": 3, "value": "api-s", "focused": true}]}});
        assert!(matches!(interaction(&registry, auto.to_string().as_bytes()).unwrap(),
            Inbound::Autocomplete { typed, .. } if typed == "api-s"));
        assert!(interaction(&registry, b"{").unwrap_err().contains("not an interaction"));
        assert!(quoted(&json!("a\"b'c”d’e")).unwrap_err().contains("closing quote"));
    }

    #[test]
    fn a_subcommand_of_a_group_becomes_the_groups_text() {
        let registry = shipped();
        let services = ["api-service".to_string()];
        let text_of = |data: Value| match interaction(&registry, &command(data)).unwrap() {
            Inbound::Command { event: Event::Command { text, .. }, .. } => text,
            _ => panic!("not a command"),
        };
        let text = text_of(json!({"name": "incident", "options": [{"name": "declare", "type": 1, "options": [
            {"name": "title", "type": 3, "value": "pool --sev 4 exhausted"},
            {"name": "sev", "type": 4, "value": 1},
            {"name": "service", "type": 3, "value": "api-service"},
        ]}]}));
        let parsed = crate::command::parse(&registry, &services, &text).unwrap();
        assert_eq!(
            parsed.request,
            crate::command::Request::Incident {
                op: crate::command::IncidentOp::Declare {
                    title: "pool --sev 4 exhausted".into(),
                    severity: 1,
                    services: vec!["api-service".into()],
                }
            },
            "{text}"
        );
        // A USER option arrives as the member's id; the incident id may be left out.
        let text = text_of(json!({"name": "incident", "options": [{"name": "lead", "type": 1, "options": [
            {"name": "person", "type": 6, "value": "80351110224678999"},
        ]}]}));
        let parsed = crate::command::parse(&registry, &services, &text).unwrap();
        assert_eq!(
            parsed.request,
            crate::command::Request::Incident {
                op: crate::command::IncidentOp::Lead { incident: None, person: "discord:80351110224678999".into() }
            }
        );
        // Autocomplete inside a subcommand finds the focused option.
        let body = json!({"type": 4, "id": "112", "token": "tok", "channel_id": "222", "guild_id": "9",
            "member": {"user": {"id": "80351110224678912"}},
            "data": {"name": "incident", "options": [{"name": "declare", "type": 1, "options": [
                {"name": "service", "type": 3, "value": "pay", "focused": true}]}]}})
        .to_string();
        assert!(matches!(interaction(&registry, body.as_bytes()).unwrap(),
            Inbound::Autocomplete { typed, .. } if typed == "pay"));
    }

    #[test]
    fn an_incident_option_is_an_id_or_refused() {
        let registry = shipped();
        let update = |id: &str| {
            command(json!({"name": "incident", "options": [{"name": "update", "type": 1, "options": [
                {"name": "incident", "type": 3, "value": id},
                {"name": "text", "type": 3, "value": "pool drained"},
            ]}]}))
        };
        match interaction(&registry, &update("inc-5")).unwrap() {
            Inbound::Command { event: Event::Command { text, .. }, .. } => {
                assert_eq!(text, "/incident update INC-5 \"pool drained\"")
            }
            other => panic!("{other:?}"),
        }
        // Never folded into the text, to land on another incident.
        for bad in ["3", "INC3", "#3", "INC-5 x"] {
            let error = interaction(&registry, &update(bad)).unwrap_err();
            assert!(error.contains("is not an incident id; write it like INC-3"), "{bad}: {error}");
        }
    }
}
