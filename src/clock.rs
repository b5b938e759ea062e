//! Time: the clock the core reads, and the human duration format used in config
//! files and commands (`30m`, `1h30m`, `500ms`, `7d`).
//!
//! The core never calls `Utc::now()` directly: it asks a [`Clock`], so tests can
//! move time by hand and expiry can be proven without sleeping.

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;

/// Where the core gets "now" from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock poisoned");
        *now += chrono::Duration::from_std(by).expect("duration in range");
    }
    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("clock poisoned") = to;
    }
    /// The current manual time (same as [`Clock::now`], without the trait in scope).
    pub fn now_for_test(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

/// Parses `90s`, `30m`, `1h30m`, `500ms`, `7d`. A bare number is refused: a
/// unit-less `30` is ambiguous and the caller is told to add a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like 30m, 2h or 1h30m".into());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; write it like 30m, 2h or 1h30m"));
        }
        let number: u128 = rest[..digits].parse().map_err(|_| format!("`{text}` has a number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" | "sec" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` needs a unit: ms, s, m, h or d (for example 30m)")),
            other => return Err(format!("`{other}` in `{text}` is not a unit; use ms, s, m, h or d")),
        };
        total =
            total.checked_add(number.saturating_mul(millis_per_unit)).ok_or_else(|| format!("`{text}` is too long"))?;
        rest = &rest[unit_len..];
    }
    // A year is far beyond any sensible TTL or timeout; refusing keeps arithmetic safe.
    if total > 366 * 86_400_000 {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration the way [`parse_duration`] reads it (`1h30m`, `45s`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_round_trip() {
        let cases = [
            ("30m", Some(1_800_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("7d", Some(604_800_000)),
            ("45s", Some(45_000)),
            ("30", None),
            ("", None),
            ("m", None),
            ("5 minutes", None),
            ("2w", None),
            ("400d", None),
            ("99999999999999999999999999999999999999999h", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "parse_duration({text:?})");
            if let Some(ms) = want {
                let back = format_duration(Duration::from_millis(ms));
                assert_eq!(parse_duration(&back).unwrap().as_millis() as u64, ms);
            }
        }
    }
}
