//! The one integration-test binary (each extra test binary relinks everything).
//!
//! - `engine`: the core in-process, with a manual clock; includes the property
//!   test over random users, groups, votes and timings.
//! - `console`: the real `opsbot` binary driven through stdin, end to end.
//! - `audit`: tampering with the stored trail, and the CLI over a running bot.
//! - `crash`: kill -9 while actions run, then verify and recover.
//! - `slack`: `opsbot serve` against `fake_slack`, a fake Slack Web API and
//!   Socket Mode on 127.0.0.1, with requests signed as Slack signs them.

mod audit;
mod console;
mod crash;
mod engine;
mod fake_slack;
mod slack;
mod support;
