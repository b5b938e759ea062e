//! The chat platforms' sections, `[slack]` and `[discord]`: their send
//! queues are configured alike ([`queue`]); the rest is each platform's.

use super::parse::at_least;
use super::{DiscordMode, DiscordSettings, Problem, Registration, SlackMode, SlackSettings};
use crate::event::Actor;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlack {
    mode: Option<SlackMode>,
    channel_interval: Option<String>,
    channel_burst: Option<u32>,
    channel_idle: Option<String>,
    shutdown_grace: Option<String>,
    socket_ping: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscord {
    mode: Option<DiscordMode>,
    channel_interval: Option<String>,
    channel_burst: Option<u32>,
    channel_idle: Option<String>,
    shutdown_grace: Option<String>,
    register: Option<String>,
    identify_budget: Option<u32>,
    roles: Option<BTreeMap<String, Vec<String>>>,
}

/// A platform's send-queue keys (each section lists them itself: serde's
/// `flatten` would lose `deny_unknown_fields`, and so the report of a typo).
struct RawQueue {
    channel_interval: Option<String>,
    channel_burst: Option<u32>,
    channel_idle: Option<String>,
    shutdown_grace: Option<String>,
}

/// A platform's send queues, checked.
struct Queue {
    channel_interval: Duration,
    channel_burst: u32,
    channel_idle: Duration,
    shutdown_grace: Duration,
}

pub(super) type DurationOf<'a> = dyn FnMut(&str, Option<&str>, Duration, &mut Vec<Problem>) -> Duration + 'a;

/// `[section]`'s send-queue keys, with the platform's pace as defaults.
fn queue(
    path: &Path,
    section: &str,
    raw: RawQueue,
    (interval, burst, hint): (Duration, u32, &str),
    duration: &mut DurationOf,
    problems: &mut Vec<Problem>,
) -> Queue {
    let channel_interval =
        duration(&format!("{section}.channel_interval"), raw.channel_interval.as_deref(), interval, problems);
    let channel_burst = raw.channel_burst.unwrap_or(burst);
    if channel_burst == 0 {
        problems.push(Problem::new(path, &format!("{section}.channel_burst"), "must be at least 1".into(), hint));
    }
    let channel_idle =
        duration(&format!("{section}.channel_idle"), raw.channel_idle.as_deref(), Duration::from_secs(60), problems);
    // Positive but absurd: a lane ended and rebuilt for every message.
    at_least(path, &format!("{section}.channel_idle"), channel_idle, Duration::from_millis(100), problems);
    let shutdown_grace = duration(
        &format!("{section}.shutdown_grace"),
        raw.shutdown_grace.as_deref(),
        Duration::from_secs(30),
        problems,
    );
    Queue { channel_interval, channel_burst, channel_idle, shutdown_grace }
}

pub(super) fn slack(
    path: &Path,
    raw: RawSlack,
    duration: &mut DurationOf,
    problems: &mut Vec<Problem>,
) -> SlackSettings {
    let RawSlack { mode, channel_interval, channel_burst, channel_idle, shutdown_grace, socket_ping } = raw;
    let pace = (Duration::from_secs(1), 3, "3 suits Slack's limits");
    let Queue { channel_interval, channel_burst, channel_idle, shutdown_grace } = queue(
        path,
        "slack",
        RawQueue { channel_interval, channel_burst, channel_idle, shutdown_grace },
        pace,
        duration,
        problems,
    );
    let socket_ping = duration("slack.socket_ping", socket_ping.as_deref(), Duration::from_secs(10), problems);
    // A socket that reconnects every few milliseconds.
    at_least(path, "slack.socket_ping", socket_ping, Duration::from_millis(100), problems);
    SlackSettings {
        mode: mode.unwrap_or(SlackMode::Http),
        channel_interval,
        channel_burst,
        channel_idle,
        socket_ping,
        shutdown_grace,
    }
}

pub(super) fn discord(
    path: &Path,
    raw: RawDiscord,
    groups: &BTreeMap<String, BTreeSet<Actor>>,
    duration: &mut DurationOf,
    problems: &mut Vec<Problem>,
) -> DiscordSettings {
    let RawDiscord {
        mode,
        channel_interval,
        channel_burst,
        channel_idle,
        shutdown_grace,
        register,
        identify_budget,
        roles: raw_roles,
    } = raw;
    let pace = (Duration::from_millis(1000), 5, "5 suits Discord's 5 messages per 5 s per channel");
    let Queue { channel_interval, channel_burst, channel_idle, shutdown_grace } = queue(
        path,
        "discord",
        RawQueue { channel_interval, channel_burst, channel_idle, shutdown_grace },
        pace,
        duration,
        problems,
    );
    let snowflake = |id: &str| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    let register = match register.as_deref() {
        None | Some("off") => None,
        Some("global") => Some(Registration::Global),
        Some(other) => match other.strip_prefix("guild:") {
            Some(id) if snowflake(id) => Some(Registration::Guild(id.to_string())),
            _ => {
                problems.push(Problem::new(
                    path,
                    "discord.register",
                    format!("`{other}` is not a place to register commands"),
                    "write \"off\", \"global\" or \"guild:<guild id>\"",
                ));
                None
            }
        },
    };
    let identify_budget = identify_budget.unwrap_or(30);
    if !(1..=41).contains(&identify_budget) {
        problems.push(Problem::new(
            path,
            "discord.identify_budget",
            format!("{identify_budget} is not 1 to 41"),
            "Discord resets a token after 1,000 IDENTIFYs a day: 41 an hour at most (30 leaves room)",
        ));
    }
    let mut roles = BTreeMap::new();
    for (role, granted) in raw_roles.unwrap_or_default() {
        let key = format!("discord.roles.{role}");
        if !snowflake(&role) {
            problems.push(Problem::new(
                path,
                &key,
                format!("`{role}` is not a Discord role id"),
                "role ids are digits (Server Settings → Roles → ⋯ → Copy Role ID)",
            ));
            continue;
        }
        for group in granted.iter().filter(|g| !groups.contains_key(*g)) {
            problems.push(Problem::new(
                path,
                &key,
                format!("`{group}` is not a group in [groups]"),
                "name a group from [groups] (it may list no one: `sre = []`)",
            ));
        }
        roles.insert(role, granted);
    }
    DiscordSettings {
        mode: mode.unwrap_or(DiscordMode::Http),
        channel_interval,
        channel_burst,
        channel_idle,
        shutdown_grace,
        register,
        identify_budget,
        roles,
    }
}
