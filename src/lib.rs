//! opsbot: a chat-ops bot. People type slash commands in Slack, Discord or a
//! terminal; opsbot parses them against command files, asks the policy, waits
//! for approvals where needed, runs the action on a backend, and writes every
//! step to a hash-chained audit trail.
//!
//! Code map (follow one event top to bottom):
//! - [`chat`]: adapters (console now) turn input into [`event::Event`]s and
//!   render [`chat::Reply`]s.
//! - [`engine`]: the core; dispatches events, owns the ordering rules.
//! - [`command`]: `commands/*.toml` → registry → typed [`command::Request`].
//! - [`policy`]: pure decisions (rules, freezes, locks, break-glass).
//! - [`approval`]: pending requests, votes, action digests.
//! - [`action`]: the [`action::Action`] enum and executors (simulated now).
//! - [`audit`]: the hash-chained trail with group commit; [`store`]: the rest
//!   of the durable state, in the same sled database.
//! - [`config`]: validated configuration; [`clock`]: time and durations;
//!   [`names`]: display names that label actors in the audit trail.
//!
//! Invariants:
//! - Only `chat::*` will import slack-morphism or serenity; only `action::*` will
//!   import kube or the AWS SDK; only `audit` and `store` import sled.
//! - `command` and `policy` do no I/O and are tested with tables.
//! - Nothing mutates infrastructure before its intent record is durable, and
//!   nobody is told something happened before its record is durable.
//! - No user text becomes a shell word, a command-line flag, or a resource name
//!   the config did not list: services are looked up in config, versions must
//!   be image tags, numbers are bounded.

// Errors are the cold path (a typo, a refusal); carrying usage text and
// suggestions by value keeps them simple, and their size costs nothing measurable.
#![allow(clippy::result_large_err)]

pub mod action;
pub mod admin;
pub mod app;
pub mod approval;
pub mod audit;
pub mod chat;
pub mod checkpoints;
pub mod clock;
pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod server;
pub mod store;
pub mod tasks;

pub use error::{Error, Result};
