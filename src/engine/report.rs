//! `/alerts noisy` and `/report` in chat: the reports of [`crate::report`]
//! over this bot's trail, read on a blocking thread (each keeps at most
//! [`crate::report::SCAN_LIMIT`] records, and says so), and the delivery report's chart
//! attached where the platform takes files.

use super::{Engine, Error, Result};
use crate::audit::{AuditQuery, RecordKind};
use crate::engine::reply::Reply;
use crate::event::ReplyTarget;
use crate::report::delivery::{DeliveryReport, DeliveryScan};
use crate::report::noise::{noise_text, NoiseScan};
use crate::report::Period;
use std::time::Duration;

/// `/alerts noisy` without a period: the last week.
const NOISE_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// `/report` without a period: the last 30 days.
const REPORT_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

impl Engine {
    pub(super) async fn noisy_alerts_text(&self, period: Option<Duration>) -> Result<String> {
        let period = Period::last(period.unwrap_or(NOISE_PERIOD), self.clock.now());
        let audit = self.audit.clone();
        let query = AuditQuery { since: Some(period.since), kind: Some(RecordKind::Alert), ..Default::default() };
        tokio::task::spawn_blocking(move || {
            let mut scan = NoiseScan::default();
            audit.each(&query, &mut |record| scan.take(&record, &period))?;
            Ok(noise_text(&scan.finish(), &period))
        })
        .await
        .map_err(|e| Error::Io(format!("the noise report stopped: {e}")))?
    }

    /// The delivery report over this bot's trail.
    pub async fn delivery_report(&self, service: Option<&str>, period: Option<Duration>) -> Result<DeliveryReport> {
        if let Some(service) = service.filter(|s| !self.config.services.contains_key(*s)) {
            return Err(Error::Invalid(format!("{service} is not a configured service")));
        }
        let period = Period::last(period.unwrap_or(REPORT_PERIOD), self.clock.now());
        let audit = self.audit.clone();
        let targets = self.config.reports.clone();
        // Incidents declared before the period may be resolved in it, and
        // a deployment's failure can show after: read a window around it.
        let service = service.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            // The whole trail, once: before the period, CI's commit records
            // and which versions were deployed already (see DeliveryScan::read).
            let mut scan = DeliveryScan::new(targets, period, service);
            audit.each(&AuditQuery::default(), &mut |record| scan.read(&record))?;
            Ok(scan.finish())
        })
        .await
        .map_err(|e| Error::Io(format!("the delivery report stopped: {e}")))?
    }

    /// `/report [service] [period]`: the figures as text, then the chart.
    pub(super) async fn report_reply(
        &self,
        service: Option<&str>,
        period: Option<Duration>,
        reply: &ReplyTarget,
    ) -> Result<()> {
        let report = self.delivery_report(service, period).await?;
        self.say(reply, Reply::Text(report.text())).await;
        match crate::report::chart::png(&report) {
            Ok(png) => {
                let scope = report.service.clone().unwrap_or_else(|| "all services".into());
                let comment = format!("Weekly deploys, change failures and recovery time · {scope}");
                let filename = format!("delivery-{}.png", report.until.format("%Y-%m-%d"));
                self.say(reply, Reply::Chart { filename, png: std::sync::Arc::new(png), comment }).await;
            }
            Err(e) => tracing::warn!(error = %e, "the delivery chart was not drawn"),
        }
        Ok(())
    }
}

/// What CI says about a build: `service`'s `version` is `commit`, made at
/// `committed_at` (`POST /ci/commits`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRecord {
    pub service: String,
    pub version: String,
    pub commit: String,
    pub committed_at: chrono::DateTime<chrono::Utc>,
}

impl Engine {
    /// Records a commit CI reported; the answer once it is durable. A
    /// service the configuration does not list, a version that is not an
    /// image tag, a commit that is not one, or a time in the future is
    /// refused (`Error::Invalid`, naming it).
    pub async fn take_commit(&self, record: CommitRecord) -> Result<()> {
        let Some(service) = self.config.services.get(&record.service) else {
            return Err(Error::Invalid(format!("`{}` is not a configured service", record.service)));
        };
        let tag_ok = !record.version.is_empty()
            && record.version.len() <= 128
            && record.version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !tag_ok {
            return Err(Error::Invalid(format!("`{}` is not a version (an image tag)", record.version)));
        }
        let Some(commit) = crate::command::parse::commit_sha(&record.commit) else {
            return Err(Error::Invalid(format!("`{}` is not a commit (7 to 40 hex digits)", record.commit)));
        };
        if record.committed_at > self.clock.now() + chrono::Duration::minutes(5) {
            return Err(Error::Invalid("committed_at is in the future".into()));
        }
        let detail = format!(
            "{} {} is commit {commit}, committed {}",
            record.service,
            record.version,
            record.committed_at.format("%Y-%m-%d %H:%M UTC")
        );
        let entry = crate::audit::AuditEntry {
            command: Some("ci commit".into()),
            service: Some(service.name.clone()),
            environment: Some(service.environment.clone()),
            args: Some(serde_json::json!({"service": record.service, "version": record.version, "commit": commit,
                "committed_at": record.committed_at})),
            ..crate::audit::AuditEntry::new(RecordKind::Commit)
        }
        .detail(detail);
        self.audit.append(entry).await?;
        Ok(())
    }
}
