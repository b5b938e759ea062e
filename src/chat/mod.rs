//! Chat adapters. Each verifies and translates its platform's input into
//! [`crate::event::Event`]s, and implements the core's reply port
//! ([`crate::engine::reply::ChatSink`]) to render [`Reply`] values its own
//! way (Block Kit buttons, Discord components, plain terminal lines).

pub mod console;
pub mod discord;
pub mod outbound;
pub mod signature;
pub mod slack;

use crate::audit::BoxFuture;
use crate::engine::reply::{ChatError, ChatSink, Reply};
use crate::event::ReplyTarget;

/// Sends each reply to the adapter of its channel's platform.
#[derive(Default)]
pub struct PlatformSinks {
    pub slack: Option<std::sync::Arc<dyn ChatSink>>,
    pub discord: Option<std::sync::Arc<dyn ChatSink>>,
    pub console: Option<std::sync::Arc<dyn ChatSink>>,
}

impl PlatformSinks {
    /// The adapter of `target`'s platform, if it runs.
    fn sink_for(&self, target: &ReplyTarget) -> Option<&std::sync::Arc<dyn ChatSink>> {
        match target.platform() {
            Some(crate::event::Platform::Slack) => self.slack.as_ref(),
            Some(crate::event::Platform::Console) => self.console.as_ref(),
            Some(crate::event::Platform::Discord) => self.discord.as_ref(),
            None => None,
        }
    }
}

impl ChatSink for PlatformSinks {
    fn send<'a>(&'a self, target: &'a ReplyTarget, reply: Reply) -> BoxFuture<'a, Result<(), ChatError>> {
        match self.sink_for(target) {
            Some(sink) => sink.send(target, reply),
            None => {
                let channel = target.channel.clone();
                Box::pin(async move { Err(ChatError::Delivery(format!("no adapter is running for {channel}"))) })
            }
        }
    }

    fn open_channel<'a>(
        &'a self,
        near: &'a ReplyTarget,
        name: &'a str,
        members: &'a [crate::event::Actor],
    ) -> BoxFuture<'a, Result<ReplyTarget, ChatError>> {
        match self.sink_for(near) {
            Some(sink) => sink.open_channel(near, name, members),
            None => {
                let channel = near.channel.clone();
                Box::pin(async move { Err(ChatError::Delivery(format!("no adapter is running for {channel}"))) })
            }
        }
    }
}

/// Replaces each word of `text` that `is_identity` takes for one of
/// opsbot's platform-qualified identities (trailing punctuation aside) with
/// its `mention`.
pub fn mentions_in(text: &str, is_identity: impl Fn(&str) -> bool, mention: impl Fn(&str) -> String) -> String {
    text.split(' ')
        .map(|word| {
            // The identity is the word's start up to the first character
            // no identity has (`slack:U1's`, `slack:U1),`), less a final
            // `.` or `:` (the end of a sentence).
            let end = word
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.')))
                .unwrap_or(word.len());
            let trimmed = word[..end].trim_end_matches([':', '.']);
            if is_identity(trimmed) {
                format!("{}{}", mention(trimmed), &word[trimmed.len()..])
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of `text` that fit in `max` characters together (the
/// end of the last line, if even that one is longer).
pub fn newest_lines(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut kept = Vec::new();
    let mut used = 0;
    for line in text.lines().rev() {
        let cost = line.chars().count() + usize::from(!kept.is_empty());
        if used + cost > max {
            break;
        }
        used += cost;
        kept.push(line);
    }
    if kept.is_empty() {
        let last = text.lines().last().unwrap_or("");
        let skip = last.chars().count().saturating_sub(max);
        return last.chars().skip(skip).collect();
    }
    kept.reverse();
    kept.join("\n")
}

/// Splits text into chunks of at most `max` characters, preferring line breaks.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        let mut line = line;
        while line.chars().count() > max {
            if !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
            }
            let cut = line.char_indices().nth(max).map(|(i, _)| i).unwrap_or(line.len());
            chunks.push(line[..cut].to_string());
            line = &line[cut..];
        }
        if current.chars().count() + line.chars().count() > max {
            chunks.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_at_line_ends_within_the_limit() {
        let text = (0..500).map(|i| format!("line {i} of the status report")).collect::<Vec<_>>().join("\n");
        let chunks = split(&text, 1000);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.chars().count() <= 1000));
        assert_eq!(chunks.concat(), text);
        let long_line = "x".repeat(2500);
        let chunks = split(&long_line, 1000);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), long_line);
    }

    #[test]
    fn the_newest_lines_that_fit_are_kept() {
        let text = (0..100).map(|i| format!("line {i:03}")).collect::<Vec<_>>().join("\n");
        assert_eq!(newest_lines(&text, 17), "line 098\nline 099");
        assert_eq!(newest_lines(&text, 5000), text);
        assert_eq!(newest_lines("abcdef", 3), "def");
    }
}
