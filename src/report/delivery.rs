//! Delivery numbers from the trail alone: deploy and rollback outcomes,
//! and incidents. Definitions (docs/reports.md says the same):
//!
//! - a **deployment** is a `/deploy` that ran to an outcome in a reported
//!   environment; it **succeeded** when its outcome did (the new version
//!   verified live), else it **failed verification** (failed, unknown,
//!   interrupted). Refused ones (busy) ran nothing and are not counted.
//! - **deployment frequency**: successful deployments per week, per service
//!   and in all; rollbacks are counted beside them, not in them.
//! - **deployment success rate**: successful deployments / deployments.
//! - **change failure rate**: deployments that failed verification, or were
//!   followed within `failure_window` (and before the service's next
//!   deployment) by a rollback of their service or an incident naming it,
//!   / deployments. Each deployment counts once, however many signals.
//! - **failed-deployment recovery time**: from a failed deployment to the
//!   next change of its service that succeeded after the failure showed
//!   (a rollback, or a fix deployed), else the incident's resolve.
//! - **incident time to restore**: declared → resolved.
//! - **lead time for changes**: only from deployments that carry a commit
//!   time; otherwise "n/a" with how many do.

use super::{median, Period, SCAN_LIMIT};
use crate::audit::{AuditRecord, RecordKind, Verdict};
use crate::incident::Incident;
use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// `[reports]`: what the numbers are held against.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// Environments whose deployments count (default: `production`).
    pub environments: Vec<String>,
    /// How long after a deployment a rollback or incident counts against it.
    pub failure_window: std::time::Duration,
    pub deploys_per_week: f64,
    /// Percent.
    pub success_rate: f64,
    /// Percent; none: only the band is shown.
    pub change_failure_rate: Option<f64>,
    pub time_to_restore: std::time::Duration,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            environments: vec!["production".into()],
            failure_window: std::time::Duration::from_secs(24 * 3600),
            deploys_per_week: 10.0,
            success_rate: 95.0,
            change_failure_rate: None,
            time_to_restore: std::time::Duration::from_secs(30 * 60),
        }
    }
}

/// The DORA report the bands come from.
pub const BANDS_SOURCE: &str = "DORA, Accelerate State of DevOps Report 2024";

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Deployment {
    id: String,
    service: String,
    at: DateTime<Utc>,
    succeeded: bool,
    version: Option<String>,
    commit: Option<String>,
    commit_time: Option<DateTime<Utc>>,
    /// The first signal that it failed (itself, a rollback, an incident).
    failed_at: Option<DateTime<Utc>>,
    recovered_at: Option<DateTime<Utc>>,
    /// The incident that named it, if that was its failure.
    incident: Option<String>,
}

/// Reads the trail; [`DeliveryScan::finish`] computes the report.
pub struct DeliveryScan {
    targets: Targets,
    period: Period,
    service: Option<String>,
    deployments: Vec<Deployment>,
    /// Successful rollbacks: (service, at).
    rollbacks: Vec<(String, DateTime<Utc>)>,
    incidents: BTreeMap<String, Incident>,
    /// Deploys whose intent was recorded: an outcome written at a restart
    /// (interrupted) names its request, not its command.
    deploy_intents: std::collections::HashSet<String>,
    /// Each deploy request's version and `--commit`, by request id.
    asked: HashMap<String, (Option<String>, Option<String>)>,
    /// CI's commit records: when each commit was made, by commit and by
    /// (service, version).
    commits: BTreeMap<String, Vec<DateTime<Utc>>>,
    builds: HashMap<(String, String), Vec<DateTime<Utc>>>,
    /// Versions deployed (successfully) before the records [`take`] reads:
    /// redeploying one later is not its first deploy.
    ///
    /// [`take`]: DeliveryScan::take
    deployed_before: std::collections::HashSet<(String, String)>,
    /// Records kept so far, and whether the scan stopped at [`SCAN_LIMIT`].
    kept: usize,
    cut_short: bool,
}

/// One figure against its target and band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub name: &'static str,
    /// None: not computable (no samples); `shown` says why.
    pub value: Option<f64>,
    pub unit: &'static str,
    pub samples: u64,
    pub shown: String,
    pub target: Option<String>,
    pub meets_target: Option<bool>,
    pub band: Option<&'static str>,
}

/// One week's bars and line in the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Week {
    /// Its Monday.
    pub start: chrono::NaiveDate,
    pub deploys: u64,
    pub failures: u64,
    pub rollbacks: u64,
    /// Median failed-deployment recovery time of the week's failures, minutes.
    pub recovery_minutes: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub service: Option<String>,
    pub environments: Vec<String>,
    pub figures: Vec<Figure>,
    /// Successful deployments per week, by service.
    pub per_service: BTreeMap<String, f64>,
    pub weeks: Vec<Week>,
    pub bands_source: &'static str,
    /// The trail held more deploy, rollback and incident records than one
    /// report reads: the figures cover the oldest [`SCAN_LIMIT`].
    pub cut_short: bool,
}

impl DeliveryScan {
    pub fn new(targets: Targets, period: Period, service: Option<String>) -> DeliveryScan {
        DeliveryScan {
            targets,
            period,
            service,
            deployments: Vec::new(),
            rollbacks: Vec::new(),
            incidents: BTreeMap::new(),
            deploy_intents: Default::default(),
            asked: HashMap::new(),
            commits: BTreeMap::new(),
            builds: HashMap::new(),
            deployed_before: Default::default(),
            kept: 0,
            cut_short: false,
        }
    }

    fn counts(&self, service: Option<&str>, environment: Option<&str>) -> bool {
        let env_ok = environment.is_some_and(|e| self.targets.environments.iter().any(|t| t == e));
        env_ok && (self.service.is_none() || self.service.as_deref() == service)
    }

    /// Takes one record (any kind; the scan keeps what it needs); false
    /// once it has kept [`SCAN_LIMIT`] (the report says it was cut short).
    /// Records after the period are still read: a rollback just after it
    /// can fail a deployment inside it.
    pub fn take(&mut self, record: &AuditRecord) -> bool {
        let entry = &record.entry;
        let deploy_request = entry.kind == RecordKind::Request && entry.command.as_deref() == Some("deploy");
        if !(deploy_request
            || matches!(
                entry.kind,
                RecordKind::Outcome | RecordKind::Incident | RecordKind::Intent | RecordKind::Commit
            ))
        {
            return true;
        }
        self.kept += 1;
        if self.kept > SCAN_LIMIT {
            self.cut_short = true;
            return false;
        }
        match entry.kind {
            RecordKind::Request => {
                if let (Some(id), Some(args)) = (&entry.request_id, &entry.args) {
                    let text = |key: &str| args[key].as_str().map(str::to_string);
                    self.asked.insert(id.clone(), (text("version"), text("commit")));
                }
            }
            RecordKind::Commit => self.take_commit(record),
            RecordKind::Intent if entry.command.as_deref() == Some("deploy") => {
                if let Some(id) = &entry.request_id {
                    self.deploy_intents.insert(id.clone());
                }
            }
            RecordKind::Outcome if self.counts(entry.service.as_deref(), entry.environment.as_deref()) => {
                let service = entry.service.clone().unwrap_or_default();
                let interrupted_deploy = entry.command.is_none()
                    && entry.request_id.as_ref().is_some_and(|id| self.deploy_intents.contains(id));
                let command = if interrupted_deploy { Some("deploy") } else { entry.command.as_deref() };
                match (command, entry.outcome) {
                    (_, Some(Verdict::Refused) | None) => {}
                    (Some("deploy"), Some(verdict)) => {
                        let id = entry.request_id.clone().unwrap_or_default();
                        let (version, commit) = self.asked.get(&id).cloned().unwrap_or_default();
                        self.deployments.push(Deployment {
                            id,
                            service,
                            at: record.ts,
                            succeeded: verdict == Verdict::Succeeded,
                            version,
                            commit,
                            commit_time: None,
                            failed_at: None,
                            recovered_at: None,
                            incident: None,
                        })
                    }
                    (Some("rollback"), Some(Verdict::Succeeded)) => self.rollbacks.push((service, record.ts)),
                    _ => {}
                }
            }
            RecordKind::Incident => {
                if let Some(incident) = entry.args.clone().and_then(|a| serde_json::from_value::<Incident>(a).ok()) {
                    self.incidents.insert(incident.id.clone(), incident);
                }
            }
            _ => {}
        }
        true
    }

    /// Where [`DeliveryScan::take`] starts reading: the period's start less
    /// the failure window (an incident declared before the period can
    /// resolve in it; a deployment's failure can show after it).
    pub fn reads_from(&self) -> DateTime<Utc> {
        self.period.since - Duration::from_std(self.targets.failure_window).unwrap_or_default()
    }

    /// Takes any record of the whole trail, oldest first: before
    /// [`DeliveryScan::reads_from`] only CI's commit records (a build is
    /// often committed long before it is deployed) and which versions were
    /// already deployed are kept; from then on, [`DeliveryScan::take`].
    pub fn read(&mut self, record: &AuditRecord) -> bool {
        if record.ts >= self.reads_from() {
            return self.take(record);
        }
        let entry = &record.entry;
        match entry.kind {
            RecordKind::Commit => self.take_commit(record),
            RecordKind::Request if entry.command.as_deref() == Some("deploy") => {
                if let (Some(id), Some(version)) =
                    (&entry.request_id, entry.args.as_ref().and_then(|a| a["version"].as_str()))
                {
                    self.asked.insert(id.clone(), (Some(version.to_string()), None));
                }
            }
            RecordKind::Outcome if entry.outcome == Some(Verdict::Succeeded) => {
                let asked = entry.request_id.as_ref().and_then(|id| self.asked.remove(id));
                if let (Some(service), Some((Some(version), _))) = (&entry.service, asked) {
                    self.deployed_before.insert((service.clone(), version));
                }
            }
            _ => {}
        }
        true
    }

    /// Takes a CI commit record.
    pub fn take_commit(&mut self, record: &AuditRecord) {
        let Some(args) = record.entry.args.as_ref().filter(|_| record.entry.kind == RecordKind::Commit) else {
            return;
        };
        let at = args["committed_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if let (Some(at), Some(commit), Some(service), Some(version)) =
            (at, args["commit"].as_str(), args["service"].as_str(), args["version"].as_str())
        {
            let times = self.commits.entry(commit.to_string()).or_default();
            if !times.contains(&at) {
                times.push(at);
            }
            let times = self.builds.entry((service.to_string(), version.to_string())).or_default();
            if !times.contains(&at) {
                times.push(at);
            }
        }
    }

    pub fn finish(mut self) -> DeliveryReport {
        // When each deployed version was committed: by the commit its
        // `--commit` names (a short SHA matches its full one), else by what
        // CI said that version of that service was built from; the newest
        // such commit made before the deploy. Only a version's first
        // successful deploy has a lead time (a redeploy changes nothing).
        self.deployments.sort_by_key(|d| d.at);
        let mut first = std::mem::take(&mut self.deployed_before);
        for d in &mut self.deployments {
            let Some(version) = d.version.clone().filter(|_| d.succeeded) else { continue };
            if !first.insert((d.service.clone(), version.clone())) {
                continue;
            }
            let before = |t: &&DateTime<Utc>| **t <= d.at;
            let by_commit = d.commit.as_ref().and_then(|c| {
                // CI's SHAs that start with the one given (it may be
                // short), and those it starts with (CI's may be short).
                let longer = self.commits.range(c.clone()..).take_while(|(sha, _)| sha.starts_with(c.as_str()));
                let shorter = (7..c.len()).filter_map(|n| self.commits.get_key_value(&c[..n]));
                longer.chain(shorter).flat_map(|(_, times)| times.iter()).filter(before).max()
            });
            let by_build = self.builds.get(&(d.service.clone(), version)).and_then(|t| t.iter().filter(before).max());
            d.commit_time = by_commit.or(by_build).copied();
        }
        let window = Duration::from_std(self.targets.failure_window).unwrap_or(Duration::days(1));
        self.deployments.sort_by_key(|d| d.at);
        // Successful changes of each service (deploys and rollbacks): what recovers.
        let mut recoveries: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for d in self.deployments.iter().filter(|d| d.succeeded) {
            recoveries.entry(d.service.clone()).or_default().push(d.at);
        }
        for (service, at) in &self.rollbacks {
            recoveries.entry(service.clone()).or_default().push(*at);
        }
        for times in recoveries.values_mut() {
            times.sort();
        }
        let incidents: Vec<&Incident> = self.incidents.values().collect();
        let deployments = &mut self.deployments;
        for i in 0..deployments.len() {
            let service = deployments[i].service.clone();
            let at = deployments[i].at;
            let next = deployments[i + 1..].iter().find(|d| d.service == service).map(|d| d.at);
            let ends = next.map_or(at + window, |n| n.min(at + window));
            let d = &mut deployments[i];
            if !d.succeeded {
                d.failed_at = Some(at);
            }
            if d.failed_at.is_none() {
                if let Some((_, when)) = self.rollbacks.iter().find(|(s, t)| *s == service && *t > at && *t <= ends) {
                    d.failed_at = Some(*when);
                }
            }
            let named = incidents
                .iter()
                .filter(|inc| inc.services.contains(&service) && inc.declared_at > at && inc.declared_at <= ends)
                .min_by_key(|inc| inc.declared_at);
            if let Some(incident) = named {
                if d.failed_at.is_none_or(|f| incident.declared_at < f) {
                    d.failed_at = Some(incident.declared_at);
                    d.incident = Some(incident.id.clone());
                }
            }
            if let Some(failed) = d.failed_at {
                let changed = recoveries.get(&service).and_then(|t| t.iter().find(|t| **t >= failed).copied());
                let resolved = d
                    .incident
                    .as_ref()
                    .and_then(|id| incidents.iter().find(|i| &i.id == id))
                    .and_then(|i| i.resolved_at);
                d.recovered_at = match (changed, resolved) {
                    (Some(c), Some(r)) => Some(c.min(r)),
                    (c, r) => c.or(r),
                };
            }
        }
        let in_period: Vec<&Deployment> = self.deployments.iter().filter(|d| self.period.holds(d.at)).collect();
        let weeks_long = (self.period.until - self.period.since).num_seconds() as f64 / (7.0 * 86_400.0);
        let weeks_long = weeks_long.max(1.0 / 7.0);
        let succeeded = in_period.iter().filter(|d| d.succeeded).count() as u64;
        let attempts = in_period.len() as u64;
        let failed = in_period.iter().filter(|d| d.failed_at.is_some()).count() as u64;
        let rollbacks = self.rollbacks.iter().filter(|(_, t)| self.period.holds(*t)).count() as u64;
        let mut recovery: Vec<i64> =
            in_period.iter().filter_map(|d| Some((d.recovered_at? - d.at).num_seconds().max(0))).collect();
        let unrecovered = in_period.iter().filter(|d| d.failed_at.is_some() && d.recovered_at.is_none()).count();
        let mut restore: Vec<i64> = self
            .incidents
            .values()
            .filter(|i| self.period.holds(i.declared_at))
            .filter(|i| self.service.as_ref().is_none_or(|s| i.services.contains(s)))
            .filter_map(|i| Some((i.resolved_at? - i.declared_at).num_seconds().max(0)))
            .collect();
        let mut lead: Vec<i64> = in_period
            .iter()
            .filter(|d| d.succeeded)
            .filter_map(|d| Some((d.at - d.commit_time?).num_seconds().max(0)))
            .collect();
        let with_commits = lead.len() as u64;

        let t = &self.targets;
        let frequency = succeeded as f64 / weeks_long;
        let mut figures = vec![Figure {
            name: "deployment frequency",
            value: Some(frequency),
            unit: "per week",
            samples: succeeded,
            shown: format!("{frequency:.1}/week ({succeeded} deploys; rollbacks beside them: {rollbacks})"),
            target: Some(format!("> {} a week", t.deploys_per_week)),
            meets_target: Some(frequency > t.deploys_per_week),
            band: Some(frequency_band(frequency)),
        }];
        let rate = (attempts > 0).then(|| 100.0 * succeeded as f64 / attempts as f64);
        figures.push(Figure {
            name: "deployment success rate",
            value: rate,
            unit: "%",
            samples: attempts,
            shown: rate.map_or("n/a — no deployments".into(), |r| format!("{r:.1}% ({succeeded} of {attempts})")),
            target: Some(format!("> {}%", t.success_rate)),
            meets_target: rate.map(|r| r > t.success_rate),
            band: None,
        });
        let cfr = (attempts > 0).then(|| 100.0 * failed as f64 / attempts as f64);
        figures.push(Figure {
            name: "change failure rate",
            value: cfr,
            unit: "%",
            samples: attempts,
            shown: cfr.map_or("n/a — no deployments".into(), |r| format!("{r:.1}% ({failed} of {attempts})")),
            target: t.change_failure_rate.map(|c| format!("< {c}%")),
            meets_target: t.change_failure_rate.and_then(|c| cfr.map(|r| r < c)),
            band: cfr.map(failure_band),
        });
        let restore_target = t.time_to_restore.as_secs() as f64;
        for (name, samples, extra) in [
            ("failed-deployment recovery time", &mut recovery, format!(", {unrecovered} not recovered")),
            ("incident time to restore", &mut restore, String::new()),
        ] {
            let n = samples.len() as u64;
            let m = median(samples);
            figures.push(Figure {
                name,
                value: m.map(|s| s as f64 / 60.0),
                unit: "minutes (median)",
                samples: n,
                shown: m.map_or(format!("n/a — no samples{extra}"), |s| {
                    format!("median {} (n={n}{extra})", super::human_secs(s))
                }),
                target: Some(format!("< {}", crate::clock::format_duration(t.time_to_restore))),
                meets_target: m.map(|s| (s as f64) < restore_target),
                band: m.map(recovery_band),
            });
        }
        let lead_median = median(&mut lead);
        figures.push(Figure {
            name: "lead time for changes",
            value: lead_median.map(|s| s as f64 / 3600.0),
            unit: "hours (median)",
            samples: with_commits,
            shown: match lead_median {
                Some(s) => format!(
                    "median {} (n={with_commits} of {succeeded} deploys with commit data)",
                    super::human_secs(s)
                ),
                None => format!("n/a — {with_commits} of {succeeded} deploys have commit data"),
            },
            target: None,
            meets_target: None,
            band: lead_median.map(lead_band),
        });

        let mut per_service: BTreeMap<String, f64> = BTreeMap::new();
        for d in in_period.iter().filter(|d| d.succeeded) {
            *per_service.entry(d.service.clone()).or_default() += 1.0 / weeks_long;
        }
        let weeks = self.weeks(&in_period);
        DeliveryReport {
            since: self.period.since,
            until: self.period.until,
            service: self.service.clone(),
            environments: self.targets.environments.clone(),
            figures,
            per_service,
            weeks,
            bands_source: BANDS_SOURCE,
            cut_short: self.cut_short,
        }
    }

    fn weeks(&self, in_period: &[&Deployment]) -> Vec<Week> {
        let monday = |t: DateTime<Utc>| {
            let date = t.date_naive();
            date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()))
        };
        let mut weeks: BTreeMap<chrono::NaiveDate, (Week, Vec<i64>)> = BTreeMap::new();
        let mut day = monday(self.period.since);
        while day <= self.period.until.date_naive() {
            weeks.insert(
                day,
                (Week { start: day, deploys: 0, failures: 0, rollbacks: 0, recovery_minutes: None }, Vec::new()),
            );
            day = day + chrono::Days::new(7);
        }
        for d in in_period {
            let Some((week, times)) = weeks.get_mut(&monday(d.at)) else { continue };
            week.deploys += u64::from(d.succeeded);
            if d.failed_at.is_some() {
                week.failures += 1;
                if let Some(r) = d.recovered_at {
                    times.push((r - d.at).num_seconds().max(0));
                }
            }
        }
        for (_, at) in self.rollbacks.iter().filter(|(_, t)| self.period.holds(*t)) {
            if let Some((week, _)) = weeks.get_mut(&monday(*at)) {
                week.rollbacks += 1;
            }
        }
        weeks
            .into_values()
            .map(|(mut week, mut times)| {
                week.recovery_minutes = median(&mut times).map(|s| s as f64 / 60.0);
                week
            })
            .collect()
    }
}

/// DORA 2024: elite deploys on demand (several a day: two a day or more
/// here), high between daily and weekly, medium between weekly and
/// monthly, low less often.
fn frequency_band(per_week: f64) -> &'static str {
    if per_week >= 14.0 {
        "elite"
    } else if per_week >= 1.0 {
        "high"
    } else if per_week >= 12.0 / 52.0 {
        "medium"
    } else {
        "low"
    }
}

/// DORA 2024: elite 5%, high 20%, medium 10%, low 40%: at most 5% is
/// elite, at most 20% high or medium, more is low.
fn failure_band(percent: f64) -> &'static str {
    if percent <= 5.0 {
        "elite"
    } else if percent <= 20.0 {
        "high/medium"
    } else {
        "low"
    }
}

/// DORA 2024: elite under an hour, high and medium under a day, low a
/// week to a month.
fn recovery_band(secs: i64) -> &'static str {
    if secs < 3600 {
        "elite"
    } else if secs < 86_400 {
        "high/medium"
    } else {
        "low"
    }
}

/// DORA 2024: elite under a day, high a day to a week, medium a week to a
/// month, low longer.
fn lead_band(secs: i64) -> &'static str {
    match secs {
        s if s < 86_400 => "elite",
        s if s < 7 * 86_400 => "high",
        s if s < 31 * 86_400 => "medium",
        _ => "low",
    }
}

impl DeliveryReport {
    pub fn text(&self) -> String {
        let scope = match &self.service {
            Some(s) => s.clone(),
            None => "all services".into(),
        };
        let mut out = format!(
            "Delivery {} to {} · {scope} · environments {}",
            self.since.format("%Y-%m-%d"),
            self.until.format("%Y-%m-%d"),
            self.environments.join(", ")
        );
        for f in &self.figures {
            let target = match (&f.target, f.meets_target) {
                (Some(t), Some(true)) => format!(" · target {t} ✅"),
                (Some(t), Some(false)) => format!(" · target {t} ❌"),
                (Some(t), None) => format!(" · target {t}"),
                (None, _) => String::new(),
            };
            let band = f.band.map(|b| format!(" · DORA band: {b}")).unwrap_or_default();
            out.push_str(&format!("\n• {}: {}{target}{band}", f.name, f.shown));
        }
        if self.service.is_none() && self.per_service.len() > 1 {
            let each: Vec<String> = self.per_service.iter().map(|(s, n)| format!("{s} {n:.1}")).collect();
            out.push_str(&format!("\n• deploys a week by service: {}", each.join(", ")));
        }
        if self.cut_short {
            out.push_str(&format!(
                "\n(The trail holds more than {SCAN_LIMIT} deploy, rollback and incident records from the period's start: these figures cover the oldest of them. Ask for a shorter period.)"
            ));
        }
        out.push_str(&format!("\nBands: {}. Definitions: docs/reports.md.", self.bands_source));
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from("metric,value,unit,samples,target,meets_target,band\n");
        for f in &self.figures {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                f.name,
                f.value.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into()),
                f.unit,
                f.samples,
                f.target.clone().unwrap_or_default().replace(',', ""),
                f.meets_target.map(|m| m.to_string()).unwrap_or_default(),
                f.band.unwrap_or_default()
            ));
        }
        out
    }
}
