//! `cargo bench`: the hot paths of the core.
//!
//! - `parse_and_policy`: one slash command parsed against the shipped command
//!   files and decided by the demo policy (target: under 10 µs).
//! - `durable_append/{1,64}_writers`: audit appends that return only once
//!   fsynced, from 1 and from 64 concurrent writers (target: 20,000/s with 64,
//!   which needs group commit). Runs on a real directory, not tmpfs-only
//!   memory: set OPSBOT_BENCH_DIR to choose the disk.
//! - `durable_append/postgres_{1,64}_writers`: the same against the
//!   PostgreSQL store, when OPSBOT_BENCH_PG_URL names a database
//!   (bench/store-postgres/run.sh starts a local one with fsync on).
//! - `dedup/new_key_after_600k`: one delivery's exactly-once check, a new
//!   key against a window already holding 600,000 (the end of the Slack load
//!   benchmark).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opsbot::audit::{AuditEntry, AuditLog, RecordKind};
use opsbot::command;
use opsbot::config;
use opsbot::event::Actor;
use opsbot::policy::{self, Subject};
use opsbot::store::{SledStore, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn parse_and_policy(c: &mut Criterion) {
    let loaded = config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")).expect("demo config");
    let services = loaded.config.service_names();
    let actor = Actor::parse("console:alice").unwrap();
    let now = chrono::Utc::now();
    let mut group = c.benchmark_group("parse_and_policy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("deploy_production", |b| {
        b.iter(|| {
            let parsed =
                command::parse(&loaded.registry, &services, std::hint::black_box("/deploy api-service v1.4.2"))
                    .unwrap();
            let service = parsed.service().and_then(|s| loaded.config.services.get(s));
            let subject = Subject {
                actor: &actor,
                granted: &[],
                policy: &parsed.policy,
                mutates: parsed.mutates,
                service,
                environment: None,
                frozen_with: &[],
                channel: "console:ops",
                emergency: None,
                hold: None,
                incident: None,
                now,
            };
            std::hint::black_box(policy::evaluate(&loaded.config, &subject))
        })
    });
    group.bench_function("typo_with_suggestion", |b| {
        b.iter(|| {
            std::hint::black_box(
                command::parse(&loaded.registry, &services, std::hint::black_box("/deplyo api-servce v1.4.2")).is_err(),
            )
        })
    });
    group.finish();
}

/// Appends from `writers` tasks until `iterations` are made; the time per append.
fn appends(runtime: &tokio::runtime::Runtime, audit: &Arc<dyn AuditLog>, writers: usize, iterations: u64) -> Duration {
    let per_writer = (iterations as usize).div_ceil(writers);
    runtime.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(writers);
        for w in 0..writers {
            let audit = audit.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let entry = AuditEntry::new(RecordKind::Request).detail(format!("writer {w} append {i}"));
                    audit.append(entry).await.expect("durable append");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Report time per append actually made.
        start.elapsed().mul_f64(iterations as f64 / (per_writer * writers) as f64)
    })
}

fn durable_appends(c: &mut Criterion) {
    let base = std::env::var_os("OPSBOT_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for writers in [1usize, 64] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let audit: Arc<dyn AuditLog> = store.audit();
        group.bench_function(format!("{writers}_writers"), |b| {
            b.iter_custom(|iterations| appends(&runtime, &audit, writers, iterations))
        });
        store.audit().close();
    }
    // The PostgreSQL store's trail, when a database is given
    // (bench/store-postgres/run.sh starts a local one with fsync on).
    if let Ok(url) = std::env::var("OPSBOT_BENCH_PG_URL") {
        for writers in [1usize, 64] {
            let (_, log) = opsbot::store::postgres::open(&url).expect("the benchmark's database");
            let audit: Arc<dyn AuditLog> = log.clone();
            group.bench_function(format!("postgres_{writers}_writers"), |b| {
                b.iter_custom(|iterations| appends(&runtime, &audit, writers, iterations))
            });
            log.close();
        }
    }
    group.finish();
}

fn dedup(c: &mut Criterion) {
    let store = SledStore::temporary().unwrap();
    let now = chrono::Utc::now();
    for i in 0..600_000 {
        assert!(store.first_delivery(&format!("slack:trigger:fill.{i}"), now).unwrap());
    }
    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("new_key_after_600k", |b| {
        b.iter(|| {
            i += 1;
            assert!(store.first_delivery(&format!("slack:trigger:bench.{i}"), now).unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, parse_and_policy, durable_appends, dedup);
criterion_main!(benches);
