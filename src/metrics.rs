//! Prometheus metrics in text exposition format, kept in plain atomics and
//! small maps: requests by platform/command/outcome, ack latency, pending
//! approvals (read at scrape time), actions by outcome, Slack 429s, Slack
//! threads followed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the ack latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, String), u64>>,
    actions: Mutex<BTreeMap<String, u64>>,
    /// Webhooks (alert senders, CI) by source and answer.
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    ack_buckets: [AtomicU64; BUCKETS.len()],
    ack_count: AtomicU64,
    ack_sum_micros: AtomicU64,
    pub rejected_signatures: AtomicU64,
    pub slack: OutboundMetrics,
    pub discord: OutboundMetrics,
}

/// One platform's send queues (see [`crate::chat::outbound`]).
#[derive(Default)]
pub struct OutboundMetrics {
    /// Answers of 429 from the platform's API.
    pub rate_limited: AtomicU64,
    /// Requests whose card or thread opsbot still follows (gauge).
    pub threads: AtomicU64,
    /// Messages accepted and not yet delivered or given up (gauge).
    pub queued: AtomicU64,
    /// Channels with a live send queue (gauge; idle ones end).
    pub channels: AtomicU64,
    /// Messages dropped because their channel's queue was full (plain
    /// replies and private notes only; cards and outcomes wait for room).
    pub dropped: AtomicU64,
    /// Messages given up after the platform kept failing them.
    pub undelivered: AtomicU64,
}

impl OutboundMetrics {
    fn render(&self, platform: &str, title: &str, out: &mut String) {
        let series: [(&str, &str, &str, &AtomicU64); 6] = [
            ("rate_limited_total", "counter", "API answers of 429.", &self.rate_limited),
            ("threads", "gauge", "Requests whose card or thread opsbot follows until they end.", &self.threads),
            ("queued", "gauge", "Messages accepted and not yet delivered.", &self.queued),
            ("channels", "gauge", "Channels with a live send queue.", &self.channels),
            (
                "dropped_total",
                "counter",
                "Plain replies dropped because their channel's send queue was full.",
                &self.dropped,
            ),
            ("undelivered_total", "counter", "Messages given up after repeated failures.", &self.undelivered),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP opsbot_{platform}_{name} {title}: {help}\n# TYPE opsbot_{platform}_{name} {kind}"
            );
            let _ = writeln!(out, "opsbot_{platform}_{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, platform: crate::event::Platform, command: &str, outcome: &str) {
        let mut map = self.requests.lock().expect("metrics lock");
        *map.entry((platform.name().to_string(), command.to_string(), outcome.to_string())).or_default() += 1;
    }

    /// The send-queue counters of `platform` (the console has none; it
    /// shares Slack's, which it never moves).
    pub fn outbound(&self, platform: crate::event::Platform) -> &OutboundMetrics {
        match platform {
            crate::event::Platform::Discord => &self.discord,
            crate::event::Platform::Slack | crate::event::Platform::Console => &self.slack,
        }
    }

    pub fn action(&self, outcome: &str) {
        *self.actions.lock().expect("metrics lock").entry(outcome.to_string()).or_default() += 1;
    }

    /// One webhook answered (`source`: an alert sender or `ci`): `answer`
    /// is `changed`, `unchanged` (repeats, twins, retries), `recorded`,
    /// `unauthorized`, `malformed`, `too_large`, `unavailable` or `busy`.
    pub fn webhook(&self, source: &str, answer: &str) {
        let mut map = self.webhooks.lock().expect("metrics lock");
        *map.entry((source.to_string(), answer.to_string())).or_default() += 1;
    }

    pub fn ack_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.ack_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ack_count.fetch_add(1, Ordering::Relaxed);
        self.ack_sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition text; `pending` is the number of open approval requests.
    pub fn render(&self, pending: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP opsbot_requests_total Commands and votes received, by platform, command and outcome.\n# TYPE opsbot_requests_total counter\n");
        for ((platform, command, outcome), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "opsbot_requests_total{{platform=\"{}\",command=\"{}\",outcome=\"{}\"}} {n}",
                escape(platform),
                escape(command),
                escape(outcome)
            );
        }
        out.push_str("# HELP opsbot_ack_seconds Time from receiving a chat request to acknowledging it.\n# TYPE opsbot_ack_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "opsbot_ack_seconds_bucket{{le=\"{bound}\"}} {}",
                self.ack_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.ack_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "opsbot_ack_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "opsbot_ack_seconds_sum {}", self.ack_sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "opsbot_ack_seconds_count {count}");
        out.push_str(
            "# HELP opsbot_pending_approvals Approval requests still open.\n# TYPE opsbot_pending_approvals gauge\n",
        );
        let _ = writeln!(out, "opsbot_pending_approvals {pending}");
        out.push_str(
            "# HELP opsbot_actions_total Actions finished, by outcome.\n# TYPE opsbot_actions_total counter\n",
        );
        for (outcome, n) in self.actions.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "opsbot_actions_total{{outcome=\"{}\"}} {n}", escape(outcome));
        }
        out.push_str("# HELP opsbot_rejected_signatures_total Requests refused for a bad or missing signature.\n# TYPE opsbot_rejected_signatures_total counter\n");
        let _ = writeln!(out, "opsbot_rejected_signatures_total {}", self.rejected_signatures.load(Ordering::Relaxed));
        out.push_str("# HELP opsbot_webhooks_total Webhooks received (alert senders, CI), by source and answer.\n# TYPE opsbot_webhooks_total counter\n");
        for ((source, answer), n) in self.webhooks.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "opsbot_webhooks_total{{source=\"{}\",answer=\"{}\"}} {n}",
                escape(source),
                escape(answer)
            );
        }
        self.slack.render("slack", "Slack", &mut out);
        self.discord.render("discord", "Discord", &mut out);
        out
    }
}
