//! An incident's timeline from the audit trail: its own records (declare,
//! lead, updates, severity, notes, resolve) and, while it was open, every
//! decision, vote, action and outcome on its services; with the time to
//! mitigate (the first change on its services that succeeded) and to
//! resolve. Rendered as a postmortem skeleton in Markdown, or as JSON.

use super::{human, sev, Incident};
use crate::audit::{AuditRecord, RecordKind, Verdict};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;

/// `--format` of `opsbot incident export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format `{other}`; use md or json")),
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The record's kind (`incident`, `decision`, `vote`, `intent`, `outcome` …).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Verdict>,
    pub text: String,
}

/// Records a timeline reads at most, past its declaration: enough for a
/// busy day on its services; `opsbot incident export` says when it stopped.
pub const SCAN_LIMIT: usize = 500_000;

/// Reading the trail for one incident, oldest first: keeps the records
/// that belong to it, and stops past its resolve or at [`SCAN_LIMIT`].
pub struct TimelineScan {
    incident: Incident,
    scanned: usize,
    cut_short: bool,
    kept: Vec<AuditRecord>,
    /// The requests with a record kept (see [`Timeline::belongs`]).
    requests: HashSet<String>,
}

impl TimelineScan {
    pub fn new(incident: &Incident) -> TimelineScan {
        TimelineScan {
            incident: incident.clone(),
            scanned: 0,
            cut_short: false,
            kept: Vec::new(),
            requests: HashSet::new(),
        }
    }

    /// Keeps `record` if it belongs; false once reading may stop.
    pub fn take(&mut self, record: AuditRecord) -> bool {
        // The resolve's own record is stamped a moment after the resolve.
        if let Some(resolved) = self.incident.resolved_at {
            if record.ts > resolved + chrono::Duration::minutes(1) {
                return false;
            }
        }
        self.scanned += 1;
        if self.scanned > SCAN_LIMIT {
            self.cut_short = true;
            return false;
        }
        if Timeline::belongs(&self.incident, &record, &mut self.requests) {
            self.kept.push(record);
        }
        true
    }

    /// The timeline of what was kept.
    pub fn finish(self) -> Timeline {
        let mut timeline = Timeline::build(&self.incident, self.kept);
        timeline.cut_short = self.cut_short;
        timeline
    }
}

/// An incident and the records that tell its story.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub incident: Incident,
    pub entries: Vec<Entry>,
    /// The trail was read only up to [`SCAN_LIMIT`] records.
    pub cut_short: bool,
    /// When the first change on its services succeeded while it was open.
    pub mitigated_at: Option<DateTime<Utc>>,
    /// Which change that was (`r-7 rollback api-service …`).
    pub mitigated_by: Option<String>,
}

/// Records of these kinds about an incident's services belong to its
/// story; requests (each also has a decision record) and progress lines do not.
fn tells_the_story(kind: RecordKind) -> bool {
    matches!(
        kind,
        RecordKind::Decision
            | RecordKind::Vote
            | RecordKind::Intent
            | RecordKind::Step
            | RecordKind::Outcome
            | RecordKind::Expired
            | RecordKind::Lock
            | RecordKind::Alert
    )
}

impl Timeline {
    /// Whether `record` belongs to `incident`'s timeline. `requests` holds
    /// the ids of requests with a record kept so far (oldest first): a
    /// record that names no service (a runbook run's own outcome) belongs
    /// when its request's earlier records did.
    pub fn belongs(incident: &Incident, record: &AuditRecord, requests: &mut HashSet<String>) -> bool {
        let entry = &record.entry;
        if entry.request_id.as_deref() == Some(incident.id.as_str()) {
            // Its own changes, and the attempts refused (a request's own
            // record says no more than its decision).
            return matches!(entry.kind, RecordKind::Incident | RecordKind::Decision);
        }
        let open_then =
            record.ts >= incident.declared_at && incident.resolved_at.is_none_or(|resolved| record.ts <= resolved);
        let on_its_services = match &entry.service {
            Some(service) => incident.services.contains(service),
            None => entry.request_id.as_ref().is_some_and(|id| requests.contains(id)),
        };
        let belongs = open_then && tells_the_story(entry.kind) && on_its_services;
        if belongs {
            if let Some(id) = &entry.request_id {
                requests.insert(id.clone());
            }
        }
        belongs
    }

    /// From the trail's records (oldest first); those that do not belong are skipped.
    pub fn build(incident: &Incident, records: impl IntoIterator<Item = AuditRecord>) -> Timeline {
        let mut entries = Vec::new();
        let mut mitigated = None;
        let mut requests = HashSet::new();
        for record in records.into_iter().filter(|r| Self::belongs(incident, r, &mut requests)) {
            let entry = &record.entry;
            let text = match entry.kind {
                RecordKind::Incident => entry.detail.clone(),
                _ => {
                    let what = entry.command.as_deref().unwrap_or("");
                    let id = entry.request_id.as_deref().map(|id| format!(" {id}")).unwrap_or_default();
                    let outcome = entry.outcome.map(|o| format!(" {o}")).unwrap_or_default();
                    let detail = if entry.detail.is_empty() { String::new() } else { format!(": {}", entry.detail) };
                    format!("{what}{id}{outcome}{detail}")
                }
            };
            if mitigated.is_none()
                && entry.kind == RecordKind::Outcome
                && entry.outcome == Some(Verdict::Succeeded)
                && entry.request_id.as_deref() != Some(incident.id.as_str())
            {
                let id = entry.request_id.clone().unwrap_or_default();
                let what = entry.command.clone().unwrap_or_default();
                let service = entry.service.clone().unwrap_or_default();
                mitigated = Some((record.ts, format!("{id} {what} {service}")));
            }
            entries.push(Entry {
                seq: record.seq,
                at: record.ts,
                who: entry.actor.clone(),
                request_id: entry.request_id.clone(),
                service: entry.service.clone(),
                kind: serde_json::to_value(entry.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                outcome: entry.outcome,
                text,
            });
        }
        let (mitigated_at, mitigated_by) = match mitigated {
            Some((at, by)) => (Some(at), Some(by)),
            None => (None, None),
        };
        Timeline { incident: incident.clone(), entries, mitigated_at, mitigated_by, cut_short: false }
    }

    pub fn time_to_mitigate(&self) -> Option<chrono::Duration> {
        self.mitigated_at.map(|at| at - self.incident.declared_at)
    }

    pub fn time_to_resolve(&self) -> Option<chrono::Duration> {
        self.incident.resolved_at.map(|at| at - self.incident.declared_at)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.to_markdown(),
            Format::Json => serde_json::to_string_pretty(&self.to_json()).expect("a timeline serialises"),
        }
    }

    /// The lines `/incident timeline` shows in chat (newest `limit`).
    pub fn chat_lines(&self, limit: usize) -> String {
        let mut out = format!("{} timeline ({} entries", self.incident.id, self.entries.len());
        if self.entries.len() > limit {
            out.push_str(&format!(", newest {limit} shown; `opsbot incident export {}` has all", self.incident.id));
        }
        out.push(')');
        if self.cut_short {
            out.push_str(&format!("\n(read only the first {SCAN_LIMIT} records after it was declared)"));
        }
        out.push_str(&self.durations_line());
        for entry in self.entries.iter().skip(self.entries.len().saturating_sub(limit)) {
            let who = entry.who.as_deref().unwrap_or("opsbot");
            out.push_str(&format!(
                "\n{} {who}: {}",
                entry.at.format("%H:%M:%S"),
                crate::engine::reply::typed(&entry.text)
            ));
        }
        out
    }

    fn durations_line(&self) -> String {
        let mitigate = match (self.time_to_mitigate(), &self.mitigated_by) {
            (Some(d), Some(by)) => format!("{} ({by})", human(d)),
            _ => "not yet (no change on its services has succeeded)".to_string(),
        };
        let resolve = match self.time_to_resolve() {
            Some(d) => human(d),
            None => "still open".to_string(),
        };
        format!("\ntime to mitigate: {mitigate}; time to resolve: {resolve}")
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "incident": self.incident,
            "time_to_mitigate_seconds": self.time_to_mitigate().map(|d| d.num_seconds()),
            "mitigated_by": self.mitigated_by,
            "time_to_resolve_seconds": self.time_to_resolve().map(|d| d.num_seconds()),
            "cut_short": self.cut_short,
            "timeline": self.entries,
        })
    }

    /// A postmortem skeleton: the facts filled in from the trail, the
    /// judgement left for people. Every text from the trail is escaped
    /// ([`markdown_text`]): typed titles and notes stay text.
    pub fn to_markdown(&self) -> String {
        let i = &self.incident;
        let cell = |text: &str| markdown_text(text);
        let mut out = format!("# {}: {}\n\n", i.id, cell(&i.title));
        out.push_str(&format!("- Severity: {} (at export)\n", sev(i.severity)));
        out.push_str(&format!("- Lead: {}\n", i.lead));
        out.push_str(&format!("- Declared: {} by {}\n", i.declared_at.format("%Y-%m-%d %H:%M:%S UTC"), i.declared_by));
        match (&i.resolved_at, &i.resolved_by) {
            (Some(at), by) => out.push_str(&format!(
                "- Resolved: {}{}\n",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()
            )),
            (None, _) => out.push_str("- Resolved: not yet\n"),
        }
        let services = if i.services.is_empty() { "none named".to_string() } else { i.services.join(", ") };
        out.push_str(&format!("- Services: {services}\n"));
        let mitigate = match (self.time_to_mitigate(), &self.mitigated_by) {
            (Some(d), Some(by)) => format!("{} (first successful change: {by})", human(d)),
            _ => "not reached".to_string(),
        };
        out.push_str(&format!("- Time to mitigate: {mitigate}\n"));
        out.push_str(&format!(
            "- Time to resolve: {}\n",
            self.time_to_resolve().map(human).unwrap_or_else(|| "still open".into())
        ));
        if self.cut_short {
            out.push_str(&format!("\n_The timeline below stops after the first {SCAN_LIMIT} records of the trail after the declaration._\n"));
        }
        out.push_str("\n## Summary\n\n");
        out.push_str(&match &i.resolution {
            Some(text) => format!("{}\n", cell(text)),
            None => "_To be written._\n".to_string(),
        });
        out.push_str("\n## Timeline\n\n| time (UTC) | who | what |\n| --- | --- | --- |\n");
        for entry in &self.entries {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                entry.at.format("%Y-%m-%d %H:%M:%S"),
                cell(entry.who.as_deref().unwrap_or("opsbot")),
                cell(&entry.text)
            ));
        }
        for heading in ["Impact", "Root cause", "What went well", "What went wrong", "Action items"] {
            out.push_str(&format!("\n## {heading}\n\n_To be written._\n"));
        }
        out
    }
}

/// `text` as inert Markdown on one line: every character Markdown (or the
/// HTML it allows) gives a meaning to is backslash-escaped, `<` and `>` as
/// entities, and line breaks become spaces, so a typed title or note can
/// neither format, link, hide the rest of the document nor break a table.
pub fn markdown_text(text: &str) -> String {
    let text = text.trim_start();
    let mut out = String::with_capacity(text.len() + 8);
    // `1. x` at the start would be a numbered list: `1\. x` is not.
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && text[digits..].starts_with(['.', ')']) {
        out.push_str(&text[..digits]);
        out.push('\\');
        out.push_str(&text[digits..digits + 1]);
        return out + &markdown_text_rest(&text[digits + 1..]);
    }
    out.push_str(&markdown_text_rest(text));
    out
}

fn markdown_text_rest(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // `@` too: pasted into an issue tracker, `@team` would notify.
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '!' | '|' | '~' | '@' => {
                out.push('\\');
                out.push(c);
            }
            // At the start, `-`, `+`, `=` and `>` make a list, a heading rule or a quote.
            '-' | '+' | '=' if out.is_empty() => {
                out.push('\\');
                out.push(c);
            }
            // `https://…` would become a link: `https\://…` does not.
            ':' if chars.peek() == Some(&'/') => out.push_str("\\:"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
