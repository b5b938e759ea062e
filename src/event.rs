//! Platform-neutral events: what every chat adapter turns its wire format into
//! before the core sees it. Nothing here knows Slack, Discord or a terminal.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The platforms an identity or a channel can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Slack,
    Discord,
    Console,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Slack, Platform::Discord, Platform::Console];

    /// The prefix of its identities and channels (`slack` in `slack:U1`).
    pub fn name(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Console => "console",
        }
    }

    pub fn from_name(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The platform of a `platform:id` text, if it names one.
    fn of(text: &str) -> Option<Platform> {
        text.split_once(':').and_then(|(p, _)| Platform::from_name(p))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A platform-qualified identity: `slack:U024BE7LH`, `discord:80351110224678912`,
/// `console:alice`. Policy, approvals and the audit trail only ever see these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    /// Checks the `platform:id` shape; the id is limited to characters platforms
    /// actually use, so an identity can never smuggle spaces or markup.
    pub fn parse(text: &str) -> Result<Actor, String> {
        qualified_id(text, "identity").map(|s| Actor(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn platform(&self) -> Platform {
        Platform::of(&self.0).expect("an Actor is parsed with a known platform")
    }
    /// The platform's own id (`U024BE7LH`), if this identity is on `platform`.
    pub fn id_on(&self, platform: Platform) -> Option<&str> {
        self.0.strip_prefix(platform.name()).and_then(|rest| rest.strip_prefix(':'))
    }
}

impl TryFrom<String> for Actor {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Actor::parse(&value)
    }
}
impl From<Actor> for String {
    fn from(actor: Actor) -> String {
        actor.0
    }
}
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates `platform:id` for identities and channels.
pub fn qualified_id<'a>(text: &'a str, what: &str) -> Result<&'a str, String> {
    let Some((platform, id)) = text.split_once(':') else {
        return Err(format!(
            "`{text}` is not a platform-qualified {what}; write it like slack:U024BE7LH, discord:80351110224678912 or console:alice"
        ));
    };
    if Platform::from_name(platform).is_none() {
        let names: Vec<&str> = Platform::ALL.iter().map(|p| p.name()).collect();
        return Err(format!("`{platform}` in `{text}` is not a platform; use one of {}", names.join(", ")));
    }
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !id_ok {
        return Err(format!("`{text}`: the {what} after `{platform}:` must be 1-64 letters, digits, `-`, `_` or `.`"));
    }
    Ok(text)
}

/// Where a reply goes: a channel on a platform, optionally inside a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTarget {
    /// Platform-qualified channel id, e.g. `slack:C0123456` or `console:ops`.
    pub channel: String,
    /// Platform thread handle (Slack `thread_ts`, the Discord message a
    /// thread hangs from), when the reply belongs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The request itself, when the platform answers through it (a Discord
    /// interaction, for 15 minutes). Never stored: it is a credential.
    #[serde(skip)]
    pub interaction: Option<InteractionHandle>,
}

/// A platform's handle on one request it waits to have answered (Discord's
/// interaction id and token). The token is a credential: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct InteractionHandle {
    pub id: String,
    pub token: String,
    /// Who made it: only they may be answered privately through it.
    pub user: Actor,
    /// When the platform stops taking answers through it.
    pub expires: std::time::Instant,
}

impl fmt::Debug for InteractionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InteractionHandle({}, <token>)", self.id)
    }
}

impl ReplyTarget {
    pub fn channel(channel: impl Into<String>) -> Self {
        Self { channel: channel.into(), thread: None, interaction: None }
    }
    pub fn in_thread(channel: impl Into<String>, thread: impl Into<String>) -> Self {
        Self { channel: channel.into(), thread: Some(thread.into()), interaction: None }
    }
    /// The channel's platform (`None` for a channel id with no known one).
    pub fn platform(&self) -> Option<Platform> {
        Platform::of(&self.channel)
    }
    /// The platform's own channel id, if the channel is on `platform`.
    pub fn channel_on(&self, platform: Platform) -> Option<&str> {
        self.channel.strip_prefix(platform.name()).and_then(|rest| rest.strip_prefix(':'))
    }
}

/// What an adapter hands the core. Owned data only.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A slash command or a mention, as the text after the bot's trigger
    /// (`/deploy api-service v1.4.2` or `deploy api-service v1.4.2`).
    Command {
        actor: Actor,
        text: String,
        reply: ReplyTarget,
        dedup_key: Option<String>,
        /// The role ids the platform says the actor holds (Discord's,
        /// authenticated with the event); `[discord.roles]` maps them to
        /// groups whenever a decision is made.
        roles: Vec<String>,
    },
    /// A vote from a button or a reaction on an approval request.
    Vote {
        actor: Actor,
        request_id: String,
        approve: bool,
        reply: ReplyTarget,
        dedup_key: Option<String>,
        /// The request's version the button was made for
        /// ([`crate::engine::reply::ApprovalView::version`]): a vote for another is refused.
        version: Option<String>,
        /// As for [`Event::Command`].
        roles: Vec<String>,
    },
}

impl Event {
    pub fn actor(&self) -> &Actor {
        match self {
            Event::Command { actor, .. } | Event::Vote { actor, .. } => actor,
        }
    }
    pub fn dedup_key(&self) -> Option<&str> {
        match self {
            Event::Command { dedup_key, .. } | Event::Vote { dedup_key, .. } => dedup_key.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_must_be_platform_qualified() {
        for good in ["slack:U024BE7LH", "discord:80351110224678912", "console:alice"] {
            assert!(Actor::parse(good).is_ok(), "{good}");
        }
        for bad in ["alice", "irc:bob", "slack:", "slack:U 1", "console:al<ice>", "slack:U1;rm"] {
            assert!(Actor::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Actor::parse("slack:U1").unwrap().platform(), Platform::Slack);
        assert_eq!(ReplyTarget::channel("discord:123").platform(), Some(Platform::Discord));
        assert_eq!(ReplyTarget::channel("irc:x").platform(), None);
    }
}
