//! The application commands Discord is told about, generated from the
//! command files (issue #15, item 3): one chat-input command per name and
//! alias, with typed options: a service with autocomplete from the
//! configured services, integers with their bounds, choices, text with its
//! length limit, switches as booleans. Required options come first, as
//! Discord demands. Registering them (`opsbot discord-register`) is not
//! built yet.

use crate::command::spec::ArgKind;
use crate::command::{CommandSpec, Registry};
use serde_json::{json, Value};

/// Discord's option types.
const STRING: u8 = 3;
const INTEGER: u8 = 4;
const BOOLEAN: u8 = 5;
/// Discord allows at most this many choices, and this long a description.
const MAX_CHOICES: usize = 25;
const MAX_DESCRIPTION: usize = 100;

/// Every command of `registry`, as the JSON array Discord's bulk-overwrite
/// endpoint (`PUT /applications/{id}/commands`) takes.
pub fn application_commands(registry: &Registry) -> Value {
    let mut commands = Vec::new();
    for spec in registry.commands() {
        for name in std::iter::once(&spec.name).chain(&spec.aliases) {
            commands.push(command(spec, name));
        }
    }
    Value::Array(commands)
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
            assert!(names.contains(&spec.name.as_str()), "{} is registered", spec.name);
            for alias in &spec.aliases {
                assert!(names.contains(&alias.as_str()), "alias {alias} is registered");
            }
        }
        let valid_name = |n: &str| {
            (1..=32).contains(&n.chars().count())
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        for command in commands {
            let name = command["name"].as_str().unwrap();
            assert!(valid_name(name), "{name}");
            let description = command["description"].as_str().unwrap();
            assert!((1..=100).contains(&description.chars().count()), "{name}: {description}");
            let options = command["options"].as_array().unwrap();
            assert!(options.len() <= 25, "{name}");
            let required: Vec<bool> = options.iter().map(|o| o["required"] == true).collect();
            assert!(required.windows(2).all(|w| w[0] || !w[1]), "{name}: a required option after an optional one");
            for option in options {
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
}
