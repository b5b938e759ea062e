//! The noise report: per alert name, how often it fired, how often anyone
//! acted on it (acknowledged, silenced, declared an incident, ran a
//! runbook, rolled back), and how long the first action took. From the
//! trail's alert records alone.

use super::{median, Period};
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

/// One alert group as the scan saw it.
struct Seen {
    name: String,
    first_fired: Option<DateTime<Utc>>,
    first_action: Option<DateTime<Utc>>,
}

/// Reads alert records in `period`; [`NoiseScan::finish`] gives the rows.
#[derive(Default)]
pub struct NoiseScan {
    /// By group id.
    groups: HashMap<String, Seen>,
    fired: BTreeMap<String, u64>,
}

impl NoiseScan {
    pub fn take(&mut self, record: &AuditRecord, period: &Period) {
        let entry = &record.entry;
        if entry.kind != RecordKind::Alert || !period.holds(record.ts) {
            return;
        }
        let (Some(group), Some(args)) = (&entry.request_id, &entry.args) else { return };
        let Some(name) = args["alert"].as_str() else { return };
        let event = args["event"].as_str().unwrap_or("");
        let seen = self.groups.entry(group.clone()).or_insert_with(|| Seen {
            name: name.to_string(),
            first_fired: None,
            first_action: None,
        });
        match event {
            "fired" | "refired" => {
                *self.fired.entry(name.to_string()).or_default() += 1;
                seen.first_fired.get_or_insert(record.ts);
            }
            "acknowledged" | "silenced" => {
                seen.first_action.get_or_insert(record.ts);
            }
            e if e.starts_with("acted:") => {
                seen.first_action.get_or_insert(record.ts);
            }
            _ => {}
        }
    }

    /// Noisiest first (most firings, then fewest acted on).
    pub fn finish(self) -> Vec<NoiseRow> {
        let mut by_name: BTreeMap<String, (u64, u64, Vec<i64>)> = BTreeMap::new();
        for seen in self.groups.into_values() {
            let Some(fired_at) = seen.first_fired else { continue };
            let row = by_name.entry(seen.name).or_default();
            row.0 += 1;
            if let Some(acted) = seen.first_action {
                row.1 += 1;
                row.2.push((acted - fired_at).num_seconds().max(0));
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
        rows
    }
}

/// The report as text.
pub fn noise_text(rows: &[NoiseRow], period: &Period) -> String {
    if rows.is_empty() {
        return format!("No alert fired {}.", period.describe());
    }
    let fired: u64 = rows.iter().map(|r| r.fired).sum();
    let groups: u64 = rows.iter().map(|r| r.groups).sum();
    let acted: u64 = rows.iter().map(|r| r.acted_on).sum();
    let mut out = format!(
        "Alert noise {}: {fired} firings in {groups} threads; {acted} acted on ({}).",
        period.describe(),
        super::percent(acted, groups)
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
    if rows.len() > 25 {
        out.push_str(&format!("\n… and {} more alert names (`opsbot report alerts` lists all)", rows.len() - 25));
    }
    out
}
