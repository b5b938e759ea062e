//! Freeze windows: weekly (`Fri 15:00` → `Mon 06:00`, UTC) or absolute
//! (RFC 3339 start and end). Pure time arithmetic.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};

const MINUTES_PER_WEEK: u32 = 7 * 24 * 60;

/// One end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Minute of the week, Monday 00:00 UTC = 0.
    Weekly(u32),
    Absolute(DateTime<Utc>),
}

impl WindowSpec {
    pub fn parse(text: &str) -> Result<WindowSpec, String> {
        let text = text.trim();
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(WindowSpec::Absolute(at.with_timezone(&Utc)));
        }
        let Some((day, time)) = text.split_once(' ') else {
            return Err(format!("`{text}` is neither `Ddd HH:MM` nor an RFC 3339 time"));
        };
        let day: Weekday = day.parse().map_err(|_| format!("`{day}` is not a weekday (Mon … Sun)"))?;
        let (h, m) = time.trim().split_once(':').ok_or_else(|| format!("`{time}` is not HH:MM"))?;
        let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
            _ => return Err(format!("`{time}` is not a time of day HH:MM")),
        };
        Ok(WindowSpec::Weekly(day.num_days_from_monday() * 1440 + h * 60 + m))
    }
}

fn minute_of_week(at: DateTime<Utc>) -> u32 {
    at.weekday().num_days_from_monday() * 1440 + at.hour() * 60 + at.minute()
}

/// A configured freeze: during it, the listed commands in the listed
/// environments are denied, or need `approvals` approvals.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeWindow {
    pub name: String,
    pub environments: Vec<String>,
    pub commands: Vec<String>,
    pub from: WindowSpec,
    pub to: WindowSpec,
    /// `None`: denied outright while the window is active.
    pub approvals: Option<u32>,
}

impl FreezeWindow {
    pub fn new(
        name: String,
        environments: Vec<String>,
        commands: Vec<String>,
        from: WindowSpec,
        to: WindowSpec,
        approvals: Option<u32>,
    ) -> Result<FreezeWindow, String> {
        match (from, to) {
            (WindowSpec::Weekly(a), WindowSpec::Weekly(b)) if a == b => {
                return Err("the window starts and ends at the same time".into())
            }
            (WindowSpec::Absolute(a), WindowSpec::Absolute(b)) if a >= b => {
                return Err("the window ends before it starts".into())
            }
            (WindowSpec::Weekly(_), WindowSpec::Weekly(_)) | (WindowSpec::Absolute(_), WindowSpec::Absolute(_)) => {}
            _ => return Err("from and to must both be weekly or both be absolute".into()),
        }
        Ok(FreezeWindow { name, environments, commands, from, to, approvals })
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        match (self.from, self.to) {
            (WindowSpec::Absolute(a), WindowSpec::Absolute(b)) => a <= now && now < b,
            (WindowSpec::Weekly(a), WindowSpec::Weekly(b)) => {
                let m = minute_of_week(now) % MINUTES_PER_WEEK;
                if a < b {
                    a <= m && m < b
                } else {
                    m >= a || m < b
                }
            }
            _ => false,
        }
    }

    pub fn applies(&self, policy: &str, environment: &str, now: DateTime<Utc>) -> bool {
        self.commands.iter().any(|c| c == policy)
            && self.environments.iter().any(|e| e == "*" || e == environment)
            && self.is_active(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekend_freeze_wraps_around_the_week() {
        let w = FreezeWindow::new(
            "weekend".into(),
            vec!["production".into()],
            vec!["deploy".into()],
            WindowSpec::parse("Fri 15:00").unwrap(),
            WindowSpec::parse("Mon 06:00").unwrap(),
            Some(2),
        )
        .unwrap();
        // 2026-11-27 is a Friday.
        let cases = [
            ("2026-11-27T14:59:00Z", false),
            ("2026-11-27T15:00:00Z", true),
            ("2026-11-28T12:00:00Z", true),
            ("2026-11-29T23:59:00Z", true),
            ("2026-11-30T05:59:00Z", true),
            ("2026-11-30T06:00:00Z", false),
            ("2026-12-02T12:00:00Z", false),
        ];
        for (time, active) in cases {
            assert_eq!(w.is_active(at(time)), active, "{time}");
        }
        assert!(w.applies("deploy", "production", at("2026-11-28T12:00:00Z")));
        assert!(!w.applies("deploy", "staging", at("2026-11-28T12:00:00Z")));
        assert!(!w.applies("restart", "production", at("2026-11-28T12:00:00Z")));
    }

    #[test]
    fn bad_window_ends_are_refused() {
        assert!(WindowSpec::parse("Fry 15:00").is_err());
        assert!(WindowSpec::parse("Fri 25:00").is_err());
        assert!(WindowSpec::parse("tomorrow").is_err());
        let a = WindowSpec::parse("2026-12-24T00:00:00Z").unwrap();
        let b = WindowSpec::parse("2026-12-26T00:00:00Z").unwrap();
        assert!(FreezeWindow::new("x".into(), vec![], vec![], b, a, None).is_err());
        assert!(FreezeWindow::new("x".into(), vec![], vec![], a, WindowSpec::Weekly(5), None).is_err());
        let w = FreezeWindow::new("x".into(), vec![], vec![], a, b, None).unwrap();
        assert!(w.is_active(at("2026-12-25T10:00:00Z")));
        assert!(!w.is_active(at("2026-12-26T00:00:00Z")));
    }
}
