//! The application commands Discord is told about, generated from the
//! command files (issue #15, item 3): one chat-input command per name and
//! alias, with typed options: a service with autocomplete from the
//! configured services, integers with their bounds, choices, text with its
//! length limit, switches as booleans. Required options come first, as
//! Discord demands. [`register`] puts them in place (`opsbot
//! discord-register`, or `serve` at start with `[discord] register`):
//! one bulk overwrite, skipped when Discord already has exactly these.

use crate::command::spec::ArgKind;
use crate::command::{CommandSpec, Registry};
use serde_json::{json, Value};

/// Discord's option types.
const STRING: u8 = 3;
const INTEGER: u8 = 4;
const BOOLEAN: u8 = 5;
const USER: u8 = 6;
const SUB_COMMAND: u8 = 1;
/// Discord allows at most this many choices, and this long a description.
const MAX_CHOICES: usize = 25;
const MAX_DESCRIPTION: usize = 100;

/// The permissions opsbot's messages need: View Channel (1 << 10), Send
/// Messages (1 << 11), Send Messages in Threads (1 << 38), Create Public
/// Threads (1 << 35), Read Message History (1 << 16), Pin Messages (1 << 51,
/// for an incident's summary).
pub const PERMISSIONS: u64 = (1 << 10) | (1 << 11) | (1 << 38) | (1 << 35) | (1 << 16) | (1 << 51);

/// Manage Channels (1 << 4): asked besides, only with `[incidents]
/// dedicated_channels` on, for each incident's own channel.
pub const CHANNEL_PERMISSION: u64 = 1 << 4;

/// The URL that installs the bot in a server with [`PERMISSIONS`] (and
/// [`CHANNEL_PERMISSION`] when incidents get channels of their own) and its commands.
pub fn invite_url(application_id: &str, incident_channels: bool) -> String {
    let permissions = if incident_channels { PERMISSIONS | CHANNEL_PERMISSION } else { PERMISSIONS };
    format!(
        "https://discord.com/oauth2/authorize?client_id={application_id}&scope=bot%20applications.commands&permissions={permissions}"
    )
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Discord already had exactly these commands: nothing was written.
    Unchanged(usize),
    /// The commands were overwritten with these many.
    Overwritten(usize),
}

/// Registers the application commands of `registry` globally or in one
/// guild. Reads what Discord has first and writes only if it differs, so
/// running it again (each start, a deploy) rewrites nothing.
pub async fn register(
    api: &super::api::DiscordApi,
    registry: &Registry,
    place: &crate::config::Registration,
) -> Result<Registered, crate::chat::outbound::ApiError> {
    let guild = match place {
        crate::config::Registration::Global => None,
        crate::config::Registration::Guild(id) => Some(id.as_str()),
    };
    let wanted = if guild.is_some() { guild_commands(registry) } else { application_commands(registry) };
    let have = api.commands(guild).await?;
    let count = wanted.as_array().map_or(0, Vec::len);
    if same_commands(&wanted, &have, guild.is_some()) {
        tracing::info!(count, "Discord commands are up to date");
        return Ok(Registered::Unchanged(count));
    }
    api.overwrite_commands(guild, &wanted).await?;
    tracing::info!(count, "Discord commands registered");
    Ok(Registered::Overwritten(count))
}

/// Fields Discord adds to a command it stores (never sent by opsbot).
const ADDED: [&str; 11] = [
    "id",
    "application_id",
    "version",
    "guild_id",
    "default_member_permissions",
    "dm_permission",
    "nsfw",
    "name_localizations",
    "description_localizations",
    "default_permission",
    "handler",
];

/// Whether Discord's `have` already holds exactly the `wanted` commands:
/// the same names, and every field the same both ways (a field left out
/// on one side stands for its default: false, null, empty), apart from
/// those Discord adds. Guild commands have no install contexts, so those
/// are not compared for them.
pub fn same_commands(wanted: &Value, have: &Value, guild: bool) -> bool {
    let (Some(wanted), Some(have)) = (wanted.as_array(), have.as_array()) else { return false };
    let ignored = |key: &str| ADDED.contains(&key) || (guild && matches!(key, "contexts" | "integration_types"));
    wanted.len() == have.len()
        && wanted.iter().all(|w| have.iter().any(|h| h["name"] == w["name"] && same(w, h, &ignored)))
}

fn same(a: &Value, b: &Value, ignored: &dyn Fn(&str) -> bool) -> bool {
    let default = |v: &Value| matches!(v, Value::Null | Value::Bool(false)) || v.as_array().is_some_and(Vec::is_empty);
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.keys().chain(b.keys()).filter(|k| !ignored(k)).all(|key| match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) => same(x, y, ignored),
                (Some(x), None) | (None, Some(x)) => default(x),
                (None, None) => true,
            })
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y, ignored)),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// Every command of `registry`, as the JSON array Discord's bulk-overwrite
/// endpoint (`PUT /applications/{id}/commands`) takes.
pub fn application_commands(registry: &Registry) -> Value {
    let mut commands = Vec::new();
    for spec in registry.commands().filter(|c| c.group.is_none()) {
        for name in std::iter::once(&spec.name).chain(&spec.aliases) {
            commands.push(command(spec, name));
        }
    }
    // A group (`/incident`) is one command whose subcommands are its members.
    for name in registry.top_level_names() {
        if !registry.is_group(&name) {
            continue;
        }
        let mut subcommands = Vec::new();
        for spec in registry.group_members(&name) {
            for full in std::iter::once(&spec.name).chain(&spec.aliases) {
                let word = full.rsplit(' ').next().unwrap_or(full);
                let mut sub = command(spec, word);
                sub["type"] = json!(SUB_COMMAND);
                if let Some(fields) = sub.as_object_mut() {
                    fields.remove("contexts");
                    fields.remove("integration_types");
                }
                subcommands.push(sub);
            }
        }
        let words: Vec<&str> = subcommands.iter().filter_map(|s| s["name"].as_str()).collect();
        commands.push(json!({
            "name": name,
            "type": 1,
            "description": clip(&format!("/{name} {}", words.join(", "))),
            "options": subcommands,
            "contexts": [0],
            "integration_types": [0],
        }));
    }
    Value::Array(commands)
}

/// The same, for one guild: install contexts apply to global commands only.
pub fn guild_commands(registry: &Registry) -> Value {
    let mut commands = application_commands(registry);
    for command in commands.as_array_mut().into_iter().flatten() {
        if let Some(fields) = command.as_object_mut() {
            fields.remove("contexts");
            fields.remove("integration_types");
        }
    }
    commands
}

fn command(spec: &CommandSpec, name: &str) -> Value {
    let mut options: Vec<Value> = spec
        .args
        .iter()
        .map(|arg| option(&arg.name, &arg.kind, arg.required, arg.help.as_deref()))
        .chain(spec.flags.iter().map(|flag| option(&flag.name, &flag.kind, false, flag.help.as_deref())))
        .collect();
    // Discord refuses a required option after an optional one.
    options.sort_by_key(|o| o["required"] != true);
    json!({
        "name": name,
        "type": 1,
        "description": if spec.summary.trim().is_empty() { clip(&spec.usage) } else { clip(&spec.summary) },
        "options": options,
        // Guild channels of a server the bot is installed in only: a DM has
        // no channel policy or approvers, and a user install would take
        // commands from servers the bot cannot post in.
        "contexts": [0],
        "integration_types": [0],
    })
}

fn option(name: &str, kind: &ArgKind, required: bool, help: Option<&str>) -> Value {
    let described = |fallback: &str| clip(help.filter(|h| !h.trim().is_empty()).unwrap_or(fallback));
    let mut option = match kind {
        ArgKind::Service => {
            json!({"type": STRING, "description": described("a configured service"), "autocomplete": true})
        }
        ArgKind::Version => {
            json!({"type": STRING, "description": described("an image tag or version"), "max_length": 128})
        }
        ArgKind::Integer { min, max } => {
            let mut o = json!({"type": INTEGER, "description": described("a whole number")});
            if let Some(min) = min {
                o["min_value"] = json!(min);
            }
            if let Some(max) = max {
                o["max_value"] = json!(max);
            }
            o
        }
        ArgKind::Duration { max } => {
            let fallback = match max {
                Some(max) => format!("a duration such as 30m or 2h, at most {max}"),
                None => "a duration such as 30m or 2h".to_string(),
            };
            json!({"type": STRING, "description": described(&fallback), "max_length": 32})
        }
        ArgKind::Text { max_len } => {
            json!({"type": STRING, "description": described("text"), "max_length": (*max_len).clamp(1, 6000)})
        }
        ArgKind::Choice { values } => {
            if values.len() <= MAX_CHOICES {
                let choices: Vec<Value> = values.iter().map(|v| json!({"name": v, "value": v})).collect();
                json!({"type": STRING, "description": described("one of the listed values"), "choices": choices})
            } else {
                // Past Discord's 25 choices, the value is typed and checked
                // by the command parser as usual.
                json!({"type": STRING, "description": described("one of the values /help lists"), "max_length": 100})
            }
        }
        ArgKind::RequestId => {
            json!({"type": STRING, "description": described("a request id such as r-12"), "max_length": 32})
        }
        ArgKind::Command => json!({"type": STRING, "description": described("a command name"), "max_length": 32}),
        ArgKind::IncidentId => {
            json!({"type": STRING, "description": described("an incident id such as INC-3"), "max_length": 24})
        }
        ArgKind::AlertId => {
            json!({"type": STRING, "description": described("an alert id such as A-7"), "max_length": 24})
        }
        // Discord hands over the chosen member's id (see inbound's command_text).
        ArgKind::Person => json!({"type": USER, "description": described("a member of this server")}),
        ArgKind::Runbook => {
            json!({"type": STRING, "description": described("a runbook (/runbook list shows them)"), "max_length": 64})
        }
        ArgKind::Switch => json!({"type": BOOLEAN, "description": described("on or off")}),
    };
    option["name"] = json!(name);
    option["required"] = json!(required);
    option
}

/// Discord's limit on descriptions, cut at a character boundary.
fn clip(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Registry {
        Registry::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("commands")).unwrap()
    }

    /// Every shipped command is one Discord accepts: names of 1–32 lowercase
    /// characters, descriptions of 1–100, required options first, at most
    /// 25 options and 25 choices.
    #[test]
    fn every_shipped_command_fits_discords_rules() {
        let registry = shipped();
        let commands = application_commands(&registry);
        let commands = commands.as_array().unwrap();
        let names: Vec<&str> = commands.iter().map(|c| c["name"].as_str().unwrap()).collect();
        for spec in registry.commands() {
            match &spec.group {
                None => {
                    assert!(names.contains(&spec.name.as_str()), "{} is registered", spec.name);
                    for alias in &spec.aliases {
                        assert!(names.contains(&alias.as_str()), "alias {alias} is registered");
                    }
                }
                // `/incident declare` is the subcommand `declare` of `/incident`.
                Some(group) => {
                    let top = commands.iter().find(|c| c["name"] == group.as_str()).expect("the group is registered");
                    let word = spec.name.rsplit(' ').next().unwrap();
                    let subs = top["options"].as_array().unwrap();
                    assert!(subs.iter().any(|s| s["name"] == word && s["type"] == SUB_COMMAND), "{}", spec.name);
                }
            }
        }
        let valid_name = |n: &str| {
            (1..=32).contains(&n.chars().count())
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        let subcommands: Vec<&Value> = commands
            .iter()
            .flat_map(|c| c["options"].as_array().unwrap().iter().filter(|o| o["type"] == SUB_COMMAND))
            .collect();
        for command in commands.iter().chain(subcommands) {
            let name = command["name"].as_str().unwrap();
            assert!(valid_name(name), "{name}");
            let description = command["description"].as_str().unwrap();
            assert!((1..=100).contains(&description.chars().count()), "{name}: {description}");
            let options = command["options"].as_array().unwrap();
            assert!(options.len() <= 25, "{name}");
            let required: Vec<bool> = options.iter().map(|o| o["required"] == true).collect();
            assert!(required.windows(2).all(|w| w[0] || !w[1]), "{name}: a required option after an optional one");
            for option in options.iter().filter(|o| o["type"] != SUB_COMMAND) {
                let option_name = option["name"].as_str().unwrap();
                assert!(valid_name(option_name), "{name}.{option_name}");
                let text = option["description"].as_str().unwrap();
                assert!((1..=100).contains(&text.chars().count()), "{name}.{option_name}: {text}");
                assert!(option["choices"].as_array().is_none_or(|c| c.len() <= 25));
            }
        }
    }

    #[test]
    fn options_carry_their_types_and_bounds() {
        let commands = application_commands(&shipped());
        let find = |name: &str| commands.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
        let scale = find("scale");
        assert_eq!(
            scale["options"][0],
            json!({"name": "service", "type": 3, "description": "a configured service", "autocomplete": true, "required": true})
        );
        assert_eq!(scale["options"][1]["type"], 4);
        assert_eq!(
            (scale["options"][1]["min_value"].clone(), scale["options"][1]["max_value"].clone()),
            (json!(0), json!(500))
        );
        let emergency = scale["options"].as_array().unwrap().iter().find(|o| o["name"] == "emergency").unwrap().clone();
        assert_eq!((emergency["type"].clone(), emergency["required"].clone()), (json!(3), json!(false)));
        let lock = find("lock");
        let ttl = lock["options"].as_array().unwrap().iter().find(|o| o["name"] == "ttl").unwrap().clone();
        assert_eq!(
            (ttl["required"].clone(), ttl["description"].clone()),
            (json!(false), json!("Defaults to the configured lock TTL."))
        );
        let reason = lock["options"].as_array().unwrap().iter().find(|o| o["name"] == "reason").unwrap().clone();
        assert_eq!(reason["max_length"], 300);
        assert_eq!(find("history")["description"], find("audit")["description"], "an alias is the same command");
        assert_eq!(clip(&"x".repeat(150)).chars().count(), 100);
    }

    #[test]
    fn registering_again_changes_nothing_and_a_change_is_seen() {
        let wanted = application_commands(&shipped());
        // What Discord answers: our fields, its own added, defaults left out.
        let mut have = wanted.clone();
        for command in have.as_array_mut().unwrap() {
            command["id"] = json!("123");
            command["version"] = json!("9");
            command["application_id"] = json!("42");
            for option in command["options"].as_array_mut().unwrap() {
                if option["required"] == false {
                    option.as_object_mut().unwrap().remove("required");
                }
            }
        }
        have.as_array_mut().unwrap().reverse();
        assert!(same_commands(&wanted, &have, false));
        let mut changed = have.clone();
        changed[0]["description"] = json!("something else");
        assert!(!same_commands(&wanted, &changed, false));
        let mut fewer = have.clone();
        fewer.as_array_mut().unwrap().pop();
        assert!(!same_commands(&wanted, &fewer, false));
        assert!(!same_commands(&wanted, &json!({"message": "401: Unauthorized"}), false));
        // Something Discord still has that the files no longer say (a bound,
        // autocomplete) is a difference too.
        let mut stale = have.clone();
        stale[0]["options"][0]["min_value"] = json!(3);
        assert!(!same_commands(&wanted, &stale, false));
        // A guild's commands come back without install contexts (or null).
        let guild = guild_commands(&shipped());
        let mut stored = guild.clone();
        for command in stored.as_array_mut().unwrap() {
            command["contexts"] = Value::Null;
        }
        assert!(same_commands(&guild, &stored, true));
        assert!(guild[0].get("contexts").is_none());
    }
}
