//! The one integration-test binary (each extra test binary relinks everything).
//!
//! - `engine`: the core in-process, with a manual clock; includes the property
//!   test over random users, groups, votes and timings.
//! - `console`: the real `opsbot` binary driven through stdin, end to end.
//! - `audit`: tampering with the stored trail, and the CLI over a running bot.
//! - `crash`: kill -9 while actions run, then verify and recover.
//! - `ecs`: the ECS backend against moto (seeded by `ecs_seed.py`) and a
//!   scripted ECS API for rollout watching; smoke tests against a local server.
//! - `kubernetes`: the fake API server (`fake_k8s`) proven with the real
//!   kubectl, then the kube-rs backend driven from the console against it.
//! - `discord`: `opsbot serve` against `fake_discord` (REST and gateway on one
//!   port, proven with discord.py), interactions signed with Ed25519.
//! - `manifests`: deploy/kubernetes rendered by kubectl, typed, held to the
//!   code (probes, secrets, RBAC verbs), and run as its pod would be.
//! - `runbook`: runbooks through the console against a real PostgreSQL, a
//!   local HTTP server and the fake Kubernetes API server (Jobs).
//! - `slack`: `opsbot serve` against `fake_slack`, a fake Slack Web API and
//!   Socket Mode on 127.0.0.1, with requests signed as Slack signs them.

#![allow(clippy::result_large_err)] // test fakes return axum responses as errors

mod alerts;
mod audit;
mod aws_proxy;
mod console;
mod crash;
mod discord;
mod ecs;
mod engine;
mod failover;
mod fake_discord;
mod fake_ecs;
mod fake_k8s;
mod fake_slack;
mod kubernetes;
mod manifests;
mod postgres;
mod relay;
mod runbook;
mod slack;
mod store;
mod support;
