//! Text for `/status` and `/audit`.

use super::Engine;
use crate::audit::{AuditQuery, AuditRecord, LOOK_BACK};
use crate::config::Service;
use crate::error::Result;

/// One audit record as a chat line.
pub fn audit_line(record: &AuditRecord) -> String {
    let e = &record.entry;
    let mut line = format!("#{} {} {:?}", record.seq, record.ts.format("%Y-%m-%d %H:%M:%S"), e.kind).to_lowercase();
    for part in [&e.request_id, &e.actor, &e.command, &e.service].into_iter().flatten() {
        line.push(' ');
        line.push_str(part);
    }
    if let Some(outcome) = e.outcome {
        line.push(' ');
        line.push_str(outcome.name());
    }
    if !e.detail.is_empty() {
        // Details quote what people typed (lock and deny reasons, input
        // echoed back): data, never markup or a mention.
        let detail: String = e.detail.chars().take(120).collect();
        line.push_str(" — ");
        line.push_str(&crate::engine::reply::typed(&detail));
    }
    line
}

/// The longest a `/status` waits for its backend.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Engine {
    pub(super) async fn status_text(&self, service: &Service) -> Result<String> {
        let now = self.clock.now();
        // Backends have their own timeouts; this one holds whatever they do,
        // so a /status always ends with an answer.
        let status = self.executors.for_service(service).status(service);
        let mut text = match tokio::time::timeout(STATUS_TIMEOUT, status).await {
            Ok(text) => text?,
            Err(_) => {
                return Err(crate::action::ActionError::Unreachable(format!(
                    "{}'s backend did not answer within {} s; try again, or check the backend",
                    service.name,
                    STATUS_TIMEOUT.as_secs()
                ))
                .into())
            }
        };
        if let Some(hold) = self.store.active_hold(&service.name, now)? {
            text.push_str(&format!(
                "\n  🔒 locked by {} until {}: {}",
                hold.by,
                hold.until.format("%Y-%m-%d %H:%M UTC"),
                crate::engine::reply::typed(&hold.reason)
            ));
        }
        for request in self.store.open_requests()?.into_iter().filter(|r| r.service == service.name) {
            text.push_str(&format!(
                "\n  waiting: {} {} by {} (expires {})",
                request.id,
                request.request.describe(),
                request.requester,
                request.expires_at.format("%H:%M UTC")
            ));
        }
        let recent = self.audit.newest_outcomes(&service.name, 3)?;
        let changes: Vec<&AuditRecord> = recent.iter().rev().collect();
        if !changes.is_empty() {
            text.push_str("\n  last changes:");
            for record in changes {
                text.push_str(&format!("\n    {}", audit_line(record)));
            }
        }
        Ok(text)
    }

    pub(super) fn audit_text(&self, service: Option<&str>, limit: usize) -> Result<String> {
        let records = self.audit.read(&AuditQuery {
            service: service.map(str::to_string),
            limit: Some(limit),
            look_back: Some(LOOK_BACK),
            ..Default::default()
        })?;
        if records.is_empty() {
            return Ok("No audit records yet.".into());
        }
        let mut text = format!("Last {} audit record(s):", records.len());
        for record in &records {
            text.push_str("\n  ");
            text.push_str(&audit_line(record));
        }
        Ok(text)
    }
}
