//! Reports from the audit trail alone: the alert noise report
//! ([`noise`]) and the delivery numbers ([`delivery`]), with a chart of the
//! latter ([`chart`]). Each is a scan: records go in one at a time (from a
//! running bot's trail or the store), the figures come out. Pure: no I/O.

pub mod chart;
pub mod delivery;
pub mod noise;

use chrono::{DateTime, Utc};

/// How many records a report reads at most.
pub const SCAN_LIMIT: usize = 500_000;

/// The span a report covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Period {
    /// The `span` up to `now`.
    pub fn last(span: std::time::Duration, now: DateTime<Utc>) -> Period {
        Period { since: now - chrono::Duration::from_std(span).unwrap_or(chrono::Duration::days(30)), until: now }
    }

    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        at >= self.since && at <= self.until
    }

    pub fn describe(&self) -> String {
        format!("from {} to {}", self.since.format("%Y-%m-%d %H:%M"), self.until.format("%Y-%m-%d %H:%M UTC"))
    }
}

/// The median (of an even count, the mean of the two middle values,
/// rounded down), sorting `values`.
pub fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]).div_euclid(2) })
}

pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

/// Seconds as people say them: `2400` → `40m`, `7200` → `2h 0m`.
pub fn human_secs(secs: i64) -> String {
    crate::incident::human(chrono::Duration::seconds(secs))
}

#[cfg(test)]
mod tests;
