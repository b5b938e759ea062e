//! opsbot: a chat-ops bot. People type slash commands in Slack, Discord or a
//! terminal; opsbot parses them against command files, asks the policy, waits
//! for approvals where needed, runs the action on a backend, and writes every
//! step to a hash-chained audit trail.
//!
//! Code map (follow one event top to bottom):
//! - [`chat`]: the adapters: console, Slack, Discord; Slack and Discord
//!   share the bounded send queues (`chat::outbound`) and differ in their
//!   `Wire`; each implements the core's reply port.
//! - [`engine`]: the core; dispatches events, owns the ordering rules, the
//!   executor port ([`engine::Executors`]) and the reply port
//!   ([`engine::reply::ChatSink`], [`engine::reply::Reply`], marks for text a
//!   person typed).
//! - [`command`]: `commands/*.toml` → registry → typed [`command::Request`];
//!   [`command::Kind`] says what a request is (a change, an admin action, a
//!   read, a vote), and so which paths it may take.
//! - [`policy`]: pure decisions (rules, freezes, locks, break-glass).
//! - [`approval`]: pending requests, votes, action digests.
//! - [`incident`]: incidents (lead, severity, services), their summary and
//!   their timeline from the trail; an open SEV1/SEV2 is a policy input.
//! - [`alert`]: alert intake: the senders' payloads as notices, their
//!   credentials, and alert groups (one thread each, repeats changing
//!   nothing); [`engine`] keeps the groups and turns buttons into commands.
//! - [`report`]: the noise report and the delivery numbers (and their
//!   chart), scans over the trail alone.
//! - [`action`]: the [`action::Action`] enum and executors: simulated,
//!   Kubernetes, ECS (and runbook steps, Alertmanager silences).
//! - [`audit`]: the hash-chained trail (group commit, sealed commits, read-only
//!   verify/export, repair, signed checkpoints); [`store`]: the rest of the
//!   durable state behind the [`store::Store`] trait (sled, in memory).
//! - [`admin`]: the admin socket and the `audit` commands; [`checkpoints`]:
//!   making and publishing checkpoints; [`tasks`]: every background task,
//!   tracked; [`server`]: the HTTP listener.
//! - [`config`]: validated configuration; [`clock`]: time and durations;
//!   [`names`]: display names that label actors in the audit trail.
//!
//! Invariants:
//! - Only `chat::*` imports slack-morphism (or serenity); only `action::*`
//!   imports kube or the AWS SDK; only `audit` and `store` import sled.
//! - `command`, `policy`, `alert` and `report` do no I/O and are tested
//!   with tables.
//! - Nothing mutates infrastructure before its intent record is durable
//!   (fdatasync by default), and nobody is told something happened before its
//!   record is durable.
//! - An outcome is the live state, read back: success means what the request
//!   named runs now; when the bot cannot know, the outcome is `unknown`.
//! - Decide, then announce: nothing is said in a channel before it is decided
//!   (locks taken, policy passed).
//! - Readers never write: `audit verify`/`export` open the store read-only.
//! - No user text becomes a shell word, a command-line flag, a resource name
//!   the config did not list, or chat markup: services are looked up in
//!   config, versions must be image tags, numbers are bounded, and typed text
//!   (a sender's alert name and summary too) is marked so adapters escape it.
//! - An alert sender hears 2xx only once the alert's records and its group
//!   are durable (one commit); its credentials are checked before its body
//!   is read.
//! - Every queue is bounded and every task tracked; a task that dies makes
//!   readiness false.

// Errors are the cold path (a typo, a refusal); carrying usage text and
// suggestions by value keeps them simple, and their size costs nothing measurable.
#![allow(clippy::result_large_err)]

pub mod action;
pub mod admin;
pub mod alert;
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
pub mod incident;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod report;
pub mod runbook;
pub mod server;
pub mod standby;
pub mod store;
pub mod tasks;

pub use error::{Error, Result};
