//! [`Store`] on PostgreSQL: pending approvals, run locks, holds, dedup keys,
//! incidents, alert groups and links, shared by every replica on the same
//! database. Each write is its own statement (durable when it returns);
//! the ones that must be atomic across replicas are single statements:
//! taking a run lock, recording a delivery key.

use super::pool::Pg;
use crate::alert::group::AlertGroup;
use crate::approval::PendingRequest;
use crate::audit::{BoxFuture, Effect};
use crate::incident::Incident;
use crate::policy::Hold;
use crate::store::{alert_key, alert_number, RunLock, Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The store's state tables, on a shared [`Pg`].
#[derive(Clone)]
pub struct PgStore {
    pg: Arc<Pg>,
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `r-12` → 12 (the order requests are listed in).
fn number(id: &str) -> i64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl PgStore {
    pub fn new(pg: Arc<Pg>) -> PgStore {
        PgStore { pg }
    }

    pub fn pg(&self) -> &Arc<Pg> {
        &self.pg
    }

    fn next(&self, sequence: &'static str, prefix: &'static str) -> Result<String, StoreError> {
        let n: i64 = self.pg.call(move |c| Ok(c.query_one(&format!("SELECT nextval('{sequence}')"), &[])?.get(0)))?;
        Ok(format!("{prefix}{n}"))
    }

    fn body(&self, sql: &'static str, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.pg.call(move |c| Ok(c.query_opt(sql, &[&key])?.map(|row| row.get(0))))
    }

    /// Writes a numbered record (`r-12`, `INC-3`) of `table` (`id`, `n`,
    /// `open`, `body`), new or changed.
    fn put_numbered(&self, table: &'static str, id: &str, open: bool, body: String) -> Result<(), StoreError> {
        let (id, n) = (id.to_string(), number(id));
        self.pg.call(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO {table} (id, n, open, body) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, body = EXCLUDED.body"
                ),
                &[&id, &n, &open, &body],
            )?;
            Ok(())
        })
    }

    fn bodies(&self, sql: &'static str) -> Result<Vec<String>, StoreError> {
        self.pg.call(move |c| Ok(c.query(sql, &[])?.iter().map(|row| row.get(0)).collect()))
    }
}

fn release(c: &mut postgres::Client, service: &str, request_id: &str) -> Result<(), postgres::Error> {
    c.execute("DELETE FROM opsbot_run_locks WHERE service = $1 AND request_id = $2", &[&service, &request_id])?;
    Ok(())
}

impl Store for PgStore {
    fn term(&self) -> Option<u64> {
        self.pg.term()
    }

    fn next_request_id(&self) -> Result<String, StoreError> {
        self.next("opsbot_request_ids", "r-")
    }

    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError> {
        self.put_numbered("opsbot_requests", &request.id, request.state.is_open(), json(request)?)
    }

    fn get_pending(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        self.body("SELECT body FROM opsbot_requests WHERE id = $1", id)?
            .map(|body| parse(&format!("request {id}"), &body))
            .transpose()
    }

    fn open_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        let bodies = self.bodies("SELECT body FROM opsbot_requests WHERE open ORDER BY n")?;
        bodies.iter().map(|b| parse("an open request", b)).collect()
    }

    fn open_count(&self) -> usize {
        let counted =
            self.pg.call(|c| Ok(c.query_one("SELECT count(*) FROM opsbot_requests WHERE open", &[])?.get::<_, i64>(0)));
        match counted {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count open requests");
                0
            }
        }
    }

    fn acquire_run_lock(
        &self,
        service: &str,
        lock: RunLock,
        now: DateTime<Utc>,
    ) -> Result<Result<(), RunLock>, StoreError> {
        let (service, body) = (service.to_string(), json(&lock)?);
        // One statement: whichever replica's insert or takeover lands first
        // holds it; an unexpired lock of another request is left alone.
        let held: Option<String> = self.pg.call(move |c| {
            let taken = c.query_opt(
                "INSERT INTO opsbot_run_locks (service, request_id, until, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service) DO UPDATE SET request_id = EXCLUDED.request_id, until = EXCLUDED.until, body = EXCLUDED.body
                 WHERE opsbot_run_locks.until <= $5 OR opsbot_run_locks.request_id = EXCLUDED.request_id
                 RETURNING 1",
                &[&service, &lock.request_id, &lock.until, &body, &now],
            )?;
            if taken.is_some() {
                return Ok(None);
            }
            Ok(c.query_opt("SELECT body FROM opsbot_run_locks WHERE service = $1", &[&service])?.map(|r| r.get(0)))
        })?;
        match held {
            None => Ok(Ok(())),
            Some(body) => Ok(Err(parse("a run lock", &body)?)),
        }
    }

    fn release_run_lock(&self, service: &str, request_id: &str) -> Result<(), StoreError> {
        let (service, request_id) = (service.to_string(), request_id.to_string());
        self.pg.call(move |c| release(c, &service, &request_id))
    }

    /// Run by the audit writer inside its commit's transaction (see
    /// [`Pg::call`]): the release lands with the outcome record or not at all.
    fn run_lock_release(&self, service: &str, request_id: &str) -> Effect {
        let (store, service, request_id) = (self.clone(), service.to_string(), request_id.to_string());
        Box::new(move || store.release_run_lock(&service, &request_id).map_err(|e| e.to_string()))
    }

    fn run_locks(&self) -> Result<Vec<(String, RunLock)>, StoreError> {
        let rows: Vec<(String, String)> = self.pg.call(|c| {
            Ok(c.query("SELECT service, body FROM opsbot_run_locks ORDER BY service", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        rows.into_iter().map(|(service, body)| Ok((service, parse("a run lock", &body)?))).collect()
    }

    fn set_hold(&self, service: &str, hold: &Hold) -> Result<(), StoreError> {
        let (service, body) = (service.to_string(), json(hold)?);
        self.pg.call(move |c| {
            c.execute(
                "INSERT INTO opsbot_holds (service, body) VALUES ($1, $2)
                 ON CONFLICT (service) DO UPDATE SET body = EXCLUDED.body",
                &[&service, &body],
            )?;
            Ok(())
        })
    }

    fn active_hold(&self, service: &str, now: DateTime<Utc>) -> Result<Option<Hold>, StoreError> {
        let hold: Option<Hold> = self
            .body("SELECT body FROM opsbot_holds WHERE service = $1", service)?
            .map(|body| parse("a hold", &body))
            .transpose()?;
        Ok(hold.filter(|h| h.until > now))
    }

    fn remove_hold(&self, service: &str) -> Result<Option<Hold>, StoreError> {
        self.body("DELETE FROM opsbot_holds WHERE service = $1 RETURNING body", service)?
            .map(|body| parse("a hold", &body))
            .transpose()
    }

    fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let (key, window) = (key.to_string(), crate::store::dedup::window_of(now) as i64);
        // One statement, so two replicas given the same delivery cannot both
        // take it (the second insert into the window conflicts): taken unless
        // already taken in this window or the one before.
        self.pg.call(move |c| {
            Ok(c.query_opt(
                "INSERT INTO opsbot_dedup (key, win)
                 SELECT $1::text, $2::bigint
                 WHERE NOT EXISTS (SELECT 1 FROM opsbot_dedup WHERE key = $1::text AND win = $2::bigint - 1)
                 ON CONFLICT DO NOTHING RETURNING 1",
                &[&key, &window],
            )?
            .is_some())
        })
    }

    fn sweep_dedup(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let keep_from = crate::store::dedup::window_of(now).saturating_sub(1) as i64;
        // How many windows were forgotten, as the other stores count.
        let n: i64 = self.pg.call(move |c| {
            let sql = "WITH gone AS (DELETE FROM opsbot_dedup WHERE win < $1 RETURNING win) SELECT count(DISTINCT win) FROM gone";
            Ok(c.query_one(sql, &[&keep_from])?.get(0))
        })?;
        Ok(n as usize)
    }

    fn next_incident_id(&self) -> Result<String, StoreError> {
        self.next("opsbot_incident_ids", "INC-")
    }

    fn put_incident(&self, incident: &Incident) -> Result<(), StoreError> {
        self.put_numbered("opsbot_incidents", &incident.id, incident.resolved_at.is_none(), json(incident)?)
    }

    fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.body("SELECT body FROM opsbot_incidents WHERE id = $1", id)?
            .map(|body| parse(&format!("incident {id}"), &body))
            .transpose()
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let bodies = self.bodies("SELECT body FROM opsbot_incidents WHERE open ORDER BY n")?;
        bodies.iter().map(|b| parse("an open incident", b)).collect()
    }

    fn next_alert_id(&self) -> Result<String, StoreError> {
        self.next("opsbot_alert_ids", "A-")
    }

    fn put_alert(&self, group: &AlertGroup) -> Result<(), StoreError> {
        let (id, key, body) = (group.id.clone(), alert_key(group.source, &group.key), json(group)?);
        // Both rows or neither, in one statement (an audit commit may make
        // this write inside its own transaction). The newest group of a key
        // wins, whichever replica writes last.
        self.pg.call(move |c| {
            c.execute(
                "WITH saved AS (
                     INSERT INTO opsbot_alerts (id, body) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body RETURNING id)
                 INSERT INTO opsbot_alert_keys (key, id) SELECT $3, id FROM saved
                 ON CONFLICT (key) DO UPDATE SET id = EXCLUDED.id
                 WHERE split_part(opsbot_alert_keys.id, '-', 2)::bigint <= split_part(EXCLUDED.id, '-', 2)::bigint",
                &[&id, &body, &key],
            )?;
            Ok(())
        })
    }

    fn get_alert(&self, id: &str) -> Result<Option<AlertGroup>, StoreError> {
        if alert_number(id).is_none() {
            return Ok(None);
        }
        self.body("SELECT body FROM opsbot_alerts WHERE id = $1", id)?
            .map(|body| parse(&format!("alert {id}"), &body))
            .transpose()
    }

    fn alert_for(&self, source: crate::alert::Source, key: &str) -> Result<Option<AlertGroup>, StoreError> {
        self.body(
            "SELECT a.body FROM opsbot_alert_keys k JOIN opsbot_alerts a ON a.id = k.id WHERE k.key = $1",
            &alert_key(source, key),
        )?
        .map(|body| parse("an alert group", &body))
        .transpose()
    }

    fn link(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.pg.call(move |c| {
            c.execute(
                "INSERT INTO opsbot_links (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    fn resolve(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.body("SELECT value FROM opsbot_links WHERE key = $1", key)
    }

    /// Every write above was committed when it returned.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
