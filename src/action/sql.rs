//! A runbook's `sql` step (groundwork for issue #16, not wired to the
//! engine yet): one fixed statement from a runbook file, against a
//! database target from config, with the runbook's typed parameters bound
//! as `$n` (never spliced into the text), a `statement_timeout`, read-only
//! steps in a read-only transaction, and a cap on rows: a preview (a
//! read-only count of what the statement would touch) is checked against
//! the cap before the statement runs, because some effects cannot be
//! rolled back (`pg_terminate_backend`); rows a statement returns or
//! changes beyond the cap roll its transaction back.
//!
//! Only this module (in `action`) imports the database driver.

use super::ActionError;
use bytes::{BufMut, BytesMut};
use std::time::Duration;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

type SqlResult = Result<IsNull, Box<dyn std::error::Error + Sync + Send>>;

/// A whole number, bound as whichever integer type the statement's context
/// gives its `$n` (refused if it does not fit).
#[derive(Debug)]
struct Int(i64);

impl ToSql for Int {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> SqlResult {
        match *ty {
            Type::INT2 => out.put_i16(i16::try_from(self.0)?),
            Type::INT4 => out.put_i32(i32::try_from(self.0)?),
            _ => out.put_i64(self.0),
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }
    to_sql_checked!();
}

/// A duration, bound as an `interval` (microseconds; no days or months).
#[derive(Debug)]
struct Interval(Duration);

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> SqlResult {
        out.put_i64(i64::try_from(self.0.as_micros())?);
        out.put_i32(0);
        out.put_i32(0);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

/// A parameter value, already checked against its declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Integer(i64),
    /// Bound as an `interval` (write `$1::interval` where the context does
    /// not say so).
    Interval(Duration),
}

impl SqlValue {
    fn boxed(&self) -> Box<dyn ToSql + Sync + Send> {
        match self {
            SqlValue::Text(text) => Box::new(text.clone()),
            SqlValue::Integer(n) => Box::new(Int(*n)),
            SqlValue::Interval(d) => Box::new(Interval(*d)),
        }
    }

    /// As shown in a dry run.
    pub fn shown(&self) -> String {
        match self {
            SqlValue::Text(text) => format!("'{}'", text.replace('\'', "''")),
            SqlValue::Integer(n) => n.to_string(),
            SqlValue::Interval(d) => format!("'{} seconds'", d.as_secs()),
        }
    }
}

/// One statement to run.
#[derive(Debug, Clone)]
pub struct Statement {
    pub text: String,
    pub params: Vec<SqlValue>,
    /// Runs in a read-only transaction.
    pub read_only: bool,
    /// Rows it may return or change.
    pub max_rows: u64,
    pub timeout: Duration,
    /// A read-only statement with the same parameters whose row count is
    /// what `text` would touch; checked against `max_rows` first.
    pub preview: Option<String>,
}

/// What a statement did.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlOutcome {
    /// Rows returned (for a query) or changed (for DML).
    pub rows: u64,
    /// The first rows returned, each column as text (for the thread).
    pub sample: Vec<Vec<String>>,
}

/// The `$n` placeholders `text` uses, outside quotes and comments.
pub fn placeholders(text: &str) -> Result<Vec<usize>, String> {
    let mut found = std::collections::BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\'' | '"' => {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
                if end > start {
                    let n: usize = chars[start..end].iter().collect::<String>().parse().map_err(|_| "a huge $n")?;
                    found.insert(n);
                    i = end;
                    continue;
                } else {
                    return Err("`$` that is not a parameter ($1, $2 …): dollar quoting is not allowed".into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(found.into_iter().collect())
}

/// Checks that `text` uses exactly `$1`..`$count`, each at least once.
pub fn check_binding(text: &str, count: usize) -> Result<(), String> {
    let used = placeholders(text)?;
    let wanted: Vec<usize> = (1..=count).collect();
    if used != wanted {
        return Err(format!(
            "the statement uses {} but the step binds {count} parameter(s): bind exactly what it uses",
            if used.is_empty() {
                "no $n".to_string()
            } else {
                used.iter().map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
            }
        ));
    }
    Ok(())
}

/// Runs `statement` against the database at `url` on a connection of its
/// own (never the bot's other sessions).
pub async fn run(url: &str, statement: &Statement) -> Result<SqlOutcome, ActionError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| ActionError::Unreachable(format!("cannot connect to the database: {}", db_error(&e))))?;
    let driver = tokio::spawn(connection);
    let result = run_on(&client, statement).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn run_on(client: &tokio_postgres::Client, statement: &Statement) -> Result<SqlOutcome, ActionError> {
    let failed = |what: &str, e: tokio_postgres::Error| ActionError::Failed(format!("{what}: {}", db_error(&e)));
    let millis = statement.timeout.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!("SET statement_timeout = {millis}"))
        .await
        .map_err(|e| failed("setting statement_timeout", e))?;
    let boxed: Vec<Box<dyn ToSql + Sync + Send>> = statement.params.iter().map(SqlValue::boxed).collect();
    let params: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
    if let Some(preview) = &statement.preview {
        client.batch_execute("BEGIN READ ONLY").await.map_err(|e| failed("starting the preview", e))?;
        let counted = client.query(preview.as_str(), &params).await;
        let _ = client.batch_execute("ROLLBACK").await;
        let rows = counted.map_err(|e| failed("the preview", e))?.len() as u64;
        if rows > statement.max_rows {
            return Err(ActionError::Failed(format!(
                "it would touch {rows} rows, more than this step's cap of {}; nothing was run",
                statement.max_rows
            )));
        }
    }
    let begin = if statement.read_only { "BEGIN READ ONLY" } else { "BEGIN" };
    client.batch_execute(begin).await.map_err(|e| failed("starting the transaction", e))?;
    let outcome = match client.query(statement.text.as_str(), &params).await {
        Ok(rows) if rows.is_empty() => {
            // DML without RETURNING: ask how many rows it changed.
            Ok(SqlOutcome { rows: 0, sample: Vec::new() })
        }
        Ok(rows) => Ok(SqlOutcome { rows: rows.len() as u64, sample: rows.iter().take(20).map(row_text).collect() }),
        Err(e) => Err(failed("the statement", e)),
    };
    match outcome {
        Ok(outcome) if outcome.rows > statement.max_rows => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(ActionError::Failed(format!(
                "it touched {} rows, more than this step's cap of {}; its transaction was rolled back",
                outcome.rows, statement.max_rows
            )))
        }
        Ok(outcome) => {
            client.batch_execute("COMMIT").await.map_err(|e| failed("committing", e))?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

fn row_text(row: &tokio_postgres::Row) -> Vec<String> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .or_else(|_| row.try_get::<_, Option<i32>>(i).map(|v| v.map(|n| n.to_string()).unwrap_or_default()))
                .or_else(|_| row.try_get::<_, Option<i64>>(i).map(|v| v.map(|n| n.to_string()).unwrap_or_default()))
                .or_else(|_| row.try_get::<_, Option<bool>>(i).map(|v| v.map(|b| b.to_string()).unwrap_or_default()))
                .unwrap_or_else(|_| "?".into())
        })
        .collect()
}

/// The server's message (never the URL, which may hold a password).
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_outside_quotes_and_comments_must_match_the_binding() {
        assert_eq!(placeholders("SELECT $1, '$2', \"$3\" -- $4\n, $2").unwrap(), [1, 2]);
        assert!(check_binding("SELECT pg_terminate_backend(pid) WHERE x < now() - $1::interval", 1).is_ok());
        assert!(check_binding("SELECT 1", 1).unwrap_err().contains("uses no $n but the step binds 1"));
        assert!(check_binding("SELECT $2", 2).unwrap_err().contains("uses $2"));
        assert!(placeholders("SELECT $$ body $$").unwrap_err().contains("dollar quoting"));
    }
}
