//! `opsbot slack-manifest`: a Slack app manifest generated from the command
//! files, for Slack's "create app from manifest".

use crate::command::Registry;
use serde_json::{json, Value};

/// Bot scopes opsbot needs, and why.
pub const BOT_SCOPES: [&str; 7] = [
    "commands",          // slash commands
    "chat:write",        // replies, cards, progress threads
    "pins:write",        // an incident's summary, pinned
    "reactions:read",    // ✅ / ❌ votes
    "app_mentions:read", // @opsbot status api-service
    "users:read",        // display names
    "files:write",       // the /report chart
];

pub const BOT_EVENTS: [&str; 2] = ["app_mention", "reaction_added"];

/// Asked besides, only with `[incidents] dedicated_channels` on: each
/// incident's own (private) channel, made and the declarer invited.
pub const CHANNEL_SCOPE: &str = "groups:write";

/// The manifest. With `base_url` the HTTP endpoints are filled in; without it
/// the app is set up for Socket Mode.
pub fn manifest(registry: &Registry, base_url: Option<&str>, name: &str, incident_channels: bool) -> Value {
    let mut scopes: Vec<&str> = BOT_SCOPES.to_vec();
    if incident_channels {
        scopes.push(CHANNEL_SCOPE);
    }
    let base = base_url.map(|u| u.trim_end_matches('/').to_string());
    let mut commands = Vec::new();
    // One slash command per command outside a group (and alias), and one
    // per group: Slack hands `/incident declare …` over as `/incident`.
    // A group's commands take people (`/incident lead @dave`): Slack sends
    // a mention as the person's id only with escaping on (then links and
    // channels arrive escaped too, as inert text).
    let mut entries: Vec<(String, String, String, bool)> = Vec::new();
    for spec in registry.commands().filter(|c| c.group.is_none()) {
        let hint = spec.usage.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        for name in std::iter::once(&spec.name).chain(&spec.aliases) {
            entries.push((name.clone(), spec.summary.clone(), hint.clone(), false));
        }
    }
    for group in registry.top_level_names().into_iter().filter(|n| registry.is_group(n)) {
        let words: Vec<String> = registry
            .group_members(&group)
            .iter()
            .map(|c| c.name.rsplit(' ').next().unwrap_or(&c.name).to_string())
            .collect();
        let summary = format!("{}: {}", group, words.join(", "));
        entries.push((group, summary, format!("{} …", words.join("|")), true));
    }
    for (name, summary, hint, escape) in entries {
        let mut command = json!({
            "command": format!("/{name}"),
            "description": summary.chars().take(100).collect::<String>(),
            "usage_hint": hint.chars().take(100).collect::<String>(),
            "should_escape": escape,
        });
        if let Some(base) = &base {
            command["url"] = json!(format!("{base}/slack/commands"));
        }
        commands.push(command);
    }
    let mut settings = json!({
        "event_subscriptions": { "bot_events": BOT_EVENTS },
        "interactivity": { "is_enabled": true },
        "org_deploy_enabled": false,
        "socket_mode_enabled": base.is_none(),
        "token_rotation_enabled": false,
    });
    if let Some(base) = &base {
        settings["event_subscriptions"]["request_url"] = json!(format!("{base}/slack/events"));
        settings["interactivity"]["request_url"] = json!(format!("{base}/slack/interactivity"));
    }
    json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": name,
            "description": "Deploys, rollbacks and restarts from chat, behind approvals, with an audit trail.",
            "background_color": "#1d2b3a",
        },
        "features": {
            "bot_user": { "display_name": name, "always_online": true },
            "slash_commands": commands,
        },
        "oauth_config": { "scopes": { "bot": scopes } },
        "settings": settings,
    })
}
