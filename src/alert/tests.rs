//! The senders' payloads as their documentation shows them.

use super::*;

const AM_FIRING: &str = r#"{
  "version": "4",
  "groupKey": "{}/{service=~\".+\"}:{alertname=\"PoolSaturated\"}",
  "truncatedAlerts": 2,
  "status": "firing",
  "receiver": "opsbot",
  "groupLabels": {"alertname": "PoolSaturated"},
  "commonLabels": {"alertname": "PoolSaturated", "severity": "page"},
  "commonAnnotations": {"summary": "Connection pool saturated"},
  "externalURL": "http://alertmanager:9093",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "PoolSaturated", "service": "api-service", "instance": "api-1"},
     "annotations": {"summary": "Connection pool saturated. Quick fix: restart app servers", "runbook": "connection-pool"},
     "startsAt": "2026-12-01T03:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
     "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c8f2b9a1d3e4f5a6"},
    {"status": "resolved", "labels": {"alertname": "PoolSaturated", "service": "api-service", "instance": "api-2"},
     "annotations": {}, "startsAt": "2026-12-01T02:50:00Z", "endsAt": "2026-12-01T02:58:00Z",
     "generatorURL": "", "fingerprint": "0a1b2c3d4e5f6a7b"}
  ]
}"#;

#[test]
fn an_alertmanager_group_becomes_one_notice_per_alert() {
    let (notices, truncated) = alertmanager(AM_FIRING.as_bytes()).unwrap();
    assert_eq!(truncated, 2);
    assert_eq!(notices.len(), 2);
    let first = &notices[0];
    assert_eq!(first.state, State::Firing);
    assert_eq!(first.name, "PoolSaturated");
    assert_eq!(first.labels["service"], "api-service");
    assert_eq!(first.annotations["runbook"], "connection-pool");
    assert_eq!(first.summary, "Connection pool saturated. Quick fix: restart app servers");
    assert!(first.ends_at.is_none(), "Alertmanager's zero time is no end");
    assert_eq!(notices[1].state, State::Resolved);
    assert!(notices[1].ends_at.is_some());
    // The same delivery again (an HA pair's twin) reads the same: its
    // group and fingerprints are what intake tells repeats by.
    let (again, _) = alertmanager(AM_FIRING.as_bytes()).unwrap();
    assert_eq!(again, notices);
}

#[test]
fn malformed_alertmanager_bodies_say_what_is_wrong() {
    let bad = |body: &str| alertmanager(body.as_bytes()).unwrap_err().0;
    assert!(bad("{").contains("not a Alertmanager payload"), "{}", bad("{"));
    assert!(bad(&AM_FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"")).contains("version 3"));
    assert!(bad(&AM_FIRING.replacen("\"status\": \"firing\"", "\"status\": \"burning\"", 1)).contains("burning"));
    assert!(bad(&AM_FIRING.replace("\"fingerprint\": \"c8f2b9a1d3e4f5a6\"", "\"fingerprint\": \"\""))
        .contains("no fingerprint"));
}

#[test]
fn a_datadog_body_from_the_documented_template() {
    let body = DATADOG_TEMPLATE
        .replace("$ALERT_ID", "1234567")
        .replace("$ALERT_CYCLE_KEY", "7654321")
        .replace("$ALERT_TRANSITION", "Triggered")
        .replace("$AGGREG_KEY", "abc123")
        .replace("$EVENT_TITLE", "[Triggered] Connection pool saturated on api")
        .replace("$EVENT_MSG", "Quick fix: restart app servers")
        .replace("$TAGS", "service:api-service,env:production,critical")
        .replace("$DATE", "1764558000000")
        .replace("$LINK", "https://app.datadoghq.com/monitors/1234567");
    let notice = datadog(body.as_bytes()).unwrap();
    assert_eq!(notice.state, State::Firing);
    assert_eq!(notice.group, "abc123");
    assert_eq!(notice.fingerprint, "1234567:7654321");
    assert_eq!(notice.labels["service"], "api-service");
    assert_eq!(notice.labels["critical"], "");
    assert_eq!(notice.starts_at.unwrap().timestamp(), 1_764_558_000);
    let recovered = datadog(body.replace("Triggered\"", "Recovered\"").as_bytes()).unwrap();
    assert_eq!(recovered.state, State::Resolved);
    assert_eq!(recovered.fingerprint, notice.fingerprint, "the same alert, resolved");
    // The template pasted with its variables unfilled: refused. A
    // transition opsbot does not know fires (Datadog never retries a 400).
    assert!(datadog(DATADOG_TEMPLATE.as_bytes()).unwrap_err().0.contains("was not filled in"));
    assert_eq!(datadog(body.replace("Triggered\"", "Escalated\"").as_bytes()).unwrap().state, State::Firing);
}

const PD_TRIGGERED: &str = r#"{"event":{"id":"01DEN4HPBQAAAG05V5QQYBRZMF","event_type":"incident.triggered","resource_type":"incident",
 "occurred_at":"2020-10-02T18:45:22.169Z","agent":{"html_url":"https://acme.pagerduty.com/users/PLH1HKV","id":"PLH1HKV","self":"https://api.pagerduty.com/users/PLH1HKV","summary":"Tenex Engineer","type":"user_reference"},
 "client":null,"data":{"id":"PGR0VU2","type":"incident","self":"https://api.pagerduty.com/incidents/PGR0VU2","html_url":"https://acme.pagerduty.com/incidents/PGR0VU2",
 "number":2,"status":"triggered","incident_key":"d3640fbd41094207a1c11e58e46b1662","created_at":"2020-04-09T15:16:27Z","title":"A little bump in the road",
 "service":{"html_url":"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":"https://api.pagerduty.com/services/PF9KMXH","summary":"api-service","type":"service_reference"},
 "assignees":[],"escalation_policy":{"id":"PJ7Q3MP","summary":"Default","type":"escalation_policy_reference"},"teams":[],"priority":null,"urgency":"high","conference_bridge":null,"resolve_reason":null}}}"#;

#[test]
fn a_pagerduty_incident_event_and_its_rotated_signatures() {
    let notice = pagerduty(PD_TRIGGERED.as_bytes()).unwrap().unwrap();
    assert_eq!(notice.state, State::Firing);
    assert_eq!(notice.group, "PGR0VU2");
    assert_eq!(notice.labels["service"], "api-service");
    assert_eq!(notice.delivery.as_deref(), Some("01DEN4HPBQAAAG05V5QQYBRZMF"), "a retry carries the same event id");
    let ping = r#"{"event":{"id":"x","event_type":"pagey.ping","resource_type":"pagey","occurred_at":null,"data":{}}}"#;
    assert_eq!(pagerduty(ping.as_bytes()).unwrap(), None);
    // A note on an incident: its data is the note, not the incident.
    let note = r#"{"event":{"id":"01DEN4","event_type":"incident.annotated","resource_type":"incident","occurred_at":"2020-10-02T18:50:00Z",
      "data":{"incident":{"id":"PGR0VU2","type":"incident_reference"},"id":"PWL7QXS","content":"Restarted the pool","trimmed":false,"type":"incident_note"}}}"#;
    assert_eq!(pagerduty(note.as_bytes()).unwrap(), None);
    let retyped = PD_TRIGGERED.replace("incident.triggered", "incident.priority_updated");
    assert_eq!(pagerduty(retyped.as_bytes()).unwrap(), None);
    let sign = |secret: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(PD_TRIGGERED.as_bytes());
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    let body = PD_TRIGGERED.as_bytes();
    let (old, new) = ("old-secret".to_string(), "new-secret".to_string());
    // During rotation PagerDuty sends one signature per secret.
    let both = format!("{},{}", sign("old-secret"), sign("new-secret"));
    assert!(pagerduty_signed(&both, body, std::slice::from_ref(&new)));
    assert!(pagerduty_signed(&sign("old-secret"), body, &[old.clone(), new.clone()]));
    assert!(!pagerduty_signed(&sign("other"), body, &[old.clone(), new.clone()]));
    assert!(!pagerduty_signed(&both, b"{\"tampered\":1}", &[old, new.clone()]));
    assert!(!pagerduty_signed("v1=zz, v0=abc", body, &[new]));
}

#[test]
fn secrets_compare_whole() {
    assert!(same_secret("s3cret", "s3cret"));
    assert!(!same_secret("s3cre", "s3cret"));
    assert!(!same_secret("s3cret", "s3creT"));
    assert!(!same_secret("", "x"));
    // Lengths 256 apart do not cancel out.
    assert!(!same_secret(&"a".repeat(256), ""));
}

/// Bodies captured from Debian's prometheus-alertmanager 0.25.0 (an alert
/// posted to its API, then ended), as its webhook sent them.
#[test]
fn a_real_alertmanagers_firing_then_resolved_bodies() {
    let (firing, _) = alertmanager(include_bytes!("fixtures/alertmanager-0.25-firing.json")).unwrap();
    let (resolved, _) = alertmanager(include_bytes!("fixtures/alertmanager-0.25-resolved.json")).unwrap();
    assert_eq!((firing.len(), resolved.len()), (1, 1));
    assert_eq!(firing[0].state, State::Firing);
    assert_eq!(resolved[0].state, State::Resolved);
    assert_eq!(firing[0].group, resolved[0].group, "one thread");
    assert_eq!(firing[0].fingerprint, resolved[0].fingerprint, "the same alert");
    assert_eq!(firing[0].labels["service"], "api-service");
    assert!(resolved[0].ends_at.is_some() && firing[0].ends_at.is_none());
}
