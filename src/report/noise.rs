//! The noise report: per alert name, how often it fired, how often anyone
//! acted on it (acknowledged, silenced, declared an incident, ran a
//! runbook, rolled back), and how long the first action took. From the
//! trail's alert records alone.

use super::{median, Period, SCAN_LIMIT};
use crate::audit::{AuditRecord, RecordKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One alert name's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseRow {
    pub name: String,
    /// Times an alert of it started firing (a flap counts again).
    pub fired: u64,
    /// Alert groups (threads) it had.
    pub groups: u64,
    /// Groups someone acted on.
    pub acted_on: u64,
    /// Median, over the groups acted on, from its first firing to its first action.
    pub median_first_action_secs: Option<i64>,
}

/// One alert group as the scan saw it: when each alert name in it first
/// fired, and the first action on the group.
#[derive(Default)]
struct Seen {
    fired: BTreeMap<String, DateTime<Utc>>,
    first_action: Option<DateTime<Utc>>,
}

/// The report: its rows, noisiest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Noise {
    pub rows: Vec<NoiseRow>,
    /// Alert threads that fired in the period, and how many anyone acted on.
    pub threads: u64,
    pub acted_threads: u64,
    /// More alert records than one report reads were in the period: the
    /// rows cover the oldest [`SCAN_LIMIT`].
    pub cut_short: bool,
}

/// Reads alert records in `period`; [`NoiseScan::finish`] gives the rows.
#[derive(Default)]
pub struct NoiseScan {
    /// By group id.
    groups: HashMap<String, Seen>,
    fired: BTreeMap<String, u64>,
    kept: usize,
    cut_short: bool,
}

impl NoiseScan {
    /// Takes one record (any kind); false once it has kept [`SCAN_LIMIT`].
    pub fn take(&mut self, record: &AuditRecord, period: &Period) -> bool {
        let entry = &record.entry;
        if entry.kind != RecordKind::Alert || !period.holds(record.ts) {
            return true;
        }
        self.kept += 1;
        if self.kept > SCAN_LIMIT {
            self.cut_short = true;
            return false;
        }
        let (Some(group), Some(args)) = (&entry.request_id, &entry.args) else { return true };
        // A state change names its own alert; an action, the group.
        let Some(name) = args["name"].as_str().or(args["alert"].as_str()) else { return true };
        let event = args["event"].as_str().unwrap_or("");
        let seen = self.groups.entry(group.clone()).or_default();
        match event {
            "fired" | "refired" => {
                *self.fired.entry(name.to_string()).or_default() += 1;
                seen.fired.entry(name.to_string()).or_insert(record.ts);
            }
            "acknowledged" | "silenced" => {
                seen.first_action.get_or_insert(record.ts);
            }
            e if e.starts_with("acted:") => {
                seen.first_action.get_or_insert(record.ts);
            }
            _ => {}
        }
        true
    }

    /// Noisiest first (most firings, then fewest acted on).
    pub fn finish(self) -> Noise {
        let mut by_name: BTreeMap<String, (u64, u64, Vec<i64>)> = BTreeMap::new();
        // An action on a group counts for each alert name that fired in it.
        let fired_groups = self.groups.values().filter(|s| !s.fired.is_empty());
        let (threads, acted_threads) =
            fired_groups.fold((0, 0), |(t, a), s| (t + 1, a + u64::from(s.first_action.is_some())));
        for seen in self.groups.into_values() {
            for (name, fired_at) in seen.fired {
                let row = by_name.entry(name).or_default();
                row.0 += 1;
                if let Some(acted) = seen.first_action {
                    row.1 += 1;
                    row.2.push((acted - fired_at).num_seconds().max(0));
                }
            }
        }
        let mut rows: Vec<NoiseRow> = by_name
            .into_iter()
            .map(|(name, (groups, acted_on, mut waits))| NoiseRow {
                fired: self.fired.get(&name).copied().unwrap_or(0),
                name,
                groups,
                acted_on,
                median_first_action_secs: median(&mut waits),
            })
            .collect();
        rows.sort_by(|a, b| b.fired.cmp(&a.fired).then(a.acted_on.cmp(&b.acted_on)).then(a.name.cmp(&b.name)));
        Noise { rows, threads, acted_threads, cut_short: self.cut_short }
    }
}

/// The report as text.
pub fn noise_text(noise: &Noise, period: &Period) -> String {
    let rows = &noise.rows;
    if rows.is_empty() {
        return format!("No alert fired {}.", period.describe());
    }
    let fired: u64 = rows.iter().map(|r| r.fired).sum();
    let (threads, acted) = (noise.threads, noise.acted_threads);
    let mut out = format!(
        "Alert noise {}: {fired} firings in {threads} threads; {acted} acted on ({}).",
        period.describe(),
        super::percent(acted, threads)
    );
    out.push_str("\nalert · fired · threads · acted on · median to first action");
    for row in rows.iter().take(25) {
        let wait = row.median_first_action_secs.map(super::human_secs).unwrap_or_else(|| "—".into());
        let flag = if row.acted_on == 0 { "  ← nobody acted: fix or delete it" } else { "" };
        out.push_str(&format!(
            "\n{} · {} · {} · {} ({}) · {wait}{flag}",
            crate::engine::reply::typed(&row.name),
            row.fired,
            row.groups,
            row.acted_on,
            super::percent(row.acted_on, row.groups)
        ));
    }
    if noise.cut_short {
        out.push_str(&format!(
            "\n(More than {SCAN_LIMIT} alert records in the period: these figures cover the oldest of them. Ask for a shorter period.)"
        ));
    }
    if rows.len() > 25 {
        out.push_str(&format!("\n… and {} more alert names (`opsbot report alerts` lists all)", rows.len() - 25));
    }
    out
}
