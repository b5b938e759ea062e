//! The PostgreSQL store (`[store] type = "postgres"`): the audit trail
//! ([`PgAuditLog`]) and the state besides it ([`PgStore`]) in one database
//! that several replicas share. The tables and their guards are in
//! `schema.sql`; `pool` holds the connections.

mod audit;
mod leader;
mod pool;
mod state;

pub(crate) use audit::insert_records;
pub use audit::PgAuditLog;
pub use leader::{Leader, Leading};
pub(crate) use pool::db_error;
pub use pool::Pg;
pub use state::PgStore;

use super::StoreError;
use std::sync::Arc;

/// The schema, as `opsbot store schema` prints it.
pub const SCHEMA: &str = include_str!("schema.sql");

/// Every table the schema makes: when all are there, it is not applied again
/// (a bot role without CREATE can then start).
pub(crate) const TABLES: [&str; 10] = [
    "opsbot_audit",
    "opsbot_leader",
    "opsbot_requests",
    "opsbot_run_locks",
    "opsbot_holds",
    "opsbot_dedup",
    "opsbot_incidents",
    "opsbot_alerts",
    "opsbot_alert_keys",
    "opsbot_links",
];

/// The id sequences: requests, incidents, alert groups.
pub(crate) const SEQUENCES: [&str; 3] = ["opsbot_request_ids", "opsbot_incident_ids", "opsbot_alert_ids"];

/// Connections the state store keeps (the audit writer has one more).
const CONNECTIONS: usize = 4;

/// The store and trail in the database at `url`; the schema is made first
/// if any of it is missing.
pub fn open(url: &str) -> Result<(PgStore, Arc<PgAuditLog>), StoreError> {
    let pg = Arc::new(Pg::open(url, CONNECTIONS)?);
    ensure_schema(&pg)?;
    check_guards(&pg)?;
    let audit = PgAuditLog::open(pg.clone())?;
    Ok((PgStore::new(pg), audit))
}

/// The trail's guards are in place (a missing trigger is a changed schema:
/// opsbot will not write to it), and whether this role could still change
/// the trail (it owns the table or was granted more than SELECT and
/// INSERT): said loudly, as the documented grants are the point.
fn check_guards(pg: &Pg) -> Result<(), StoreError> {
    let (triggers, owner, can_change): (i64, bool, bool) = pg.call(|c| {
        // The two triggers refusing changes, and the chain's foreign key
        // (its checks are triggers too: disabling them shows here).
        let triggers: i64 = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'opsbot_audit'::regclass AND tgenabled <> 'D'
                         AND tgname IN ('opsbot_audit_no_change', 'opsbot_audit_no_truncate'))
                      + (SELECT count(*) FROM pg_constraint c WHERE c.conrelid = 'opsbot_audit'::regclass
                         AND c.conname = 'opsbot_audit_chain' AND c.convalidated
                         AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D'))",
                &[],
            )?
            .get(0);
        let owner: bool = c
            .query_one(
                "SELECT pg_get_userbyid(relowner) = current_user FROM pg_class WHERE oid = 'opsbot_audit'::regclass",
                &[],
            )?
            .get(0);
        let can_change: bool =
            c.query_one("SELECT has_table_privilege('opsbot_audit', 'UPDATE, DELETE, TRUNCATE')", &[])?.get(0);
        Ok((triggers, owner, can_change))
    })?;
    if triggers != 3 {
        return Err(StoreError::Open {
            path: "[store] postgres".into(),
            reason: "the trail's table is missing its guards (the triggers that refuse changes and check the chain are gone or disabled): opsbot will not write to it; have the database's owner apply `opsbot store schema` again and run `opsbot audit verify`".into(),
        });
    }
    if owner || can_change {
        tracing::warn!(
            owns_the_table = owner,
            "the store's database role could change the audit trail (it owns opsbot_audit or may UPDATE, DELETE or TRUNCATE it): give the bot a role with only the grants in docs/production.md"
        );
    }
    Ok(())
}

/// The trail alone, for the command line's reads (`audit verify`, `export`,
/// `tail`, reports): the schema is not made, so a wrong database says so.
pub fn open_trail(url: &str) -> Result<Arc<PgAuditLog>, StoreError> {
    let pg = Arc::new(Pg::open(url, 1)?);
    Ok(PgAuditLog::open(pg)?)
}

pub(crate) fn ensure_schema(pg: &Pg) -> Result<(), StoreError> {
    let missing: Vec<String> = pg.call(|c| {
        let mut missing = Vec::new();
        for table in TABLES {
            let there: Option<String> = c.query_one("SELECT to_regclass($1)::text", &[&table])?.get(0);
            if there.is_none() {
                missing.push(table.to_string());
            }
        }
        Ok(missing)
    })?;
    if missing.is_empty() {
        return Ok(());
    }
    // Replicas starting together make it one at a time.
    pg.call(|c| {
        let mut t = c.transaction()?;
        t.batch_execute("SELECT pg_advisory_xact_lock(7021584529700000000)")?;
        t.batch_execute(SCHEMA)?;
        t.commit()
    })
    .map_err(|e| {
        StoreError::Open {
            path: "[store] postgres".into(),
            reason: format!(
                "the tables {} are missing and could not be made ({e}); have the database's owner run `opsbot store schema | psql …` and grant the bot's role what docs/production.md lists",
                missing.join(", ")
            ),
        }
    })
}
