//! A runbook's `sql` step: one fixed statement from a runbook file, against a
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
    /// The names of the columns returned.
    pub columns: Vec<String>,
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
            '/' if chars.get(i + 1) == Some(&'*') => {
                // A block comment (PostgreSQL's nest; a placeholder inside
                // one is not a use, however deep).
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
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

/// `text` without its comments (`-- …` and nested `/* … */`), quoted
/// text kept as it is.
pub fn without_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            quote @ ('\'' | '"') => {
                out.push(quote);
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    out.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    out.push(quote);
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
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

/// How long connecting may take before the step fails (nothing ran).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection of its own (never the bot's other sessions), with TLS when
/// the server offers it (`sslmode=prefer`, the default) or the URL asks for
/// it (`sslmode=require`), checked against the system's roots.
async fn connect(url: &str) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ActionError> {
    // Never the URL or the parser's words about it: they may hold a password.
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
        ActionError::Failed("the database URL is not a valid postgres:// URL or key=value string".into())
    })?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls()?))
        .await
        .map_err(|e| ActionError::Unreachable(format!("cannot connect to the database: {}", db_error(&e))))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

/// The TLS client setup, with the system's roots read from disk once.
pub(crate) fn tls() -> Result<rustls::ClientConfig, ActionError> {
    static TLS: std::sync::OnceLock<Result<rustls::ClientConfig, String>> = std::sync::OnceLock::new();
    let made = TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .map_err(|e| e.to_string())
    });
    made.clone().map_err(|e| ActionError::Failed(format!("TLS setup: {e}")))
}

/// Sets the step's `statement_timeout` on `client`, and boxes its values.
async fn prepare(
    client: &tokio_postgres::Client,
    statement: &Statement,
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, ActionError> {
    let millis = statement.timeout.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!("SET statement_timeout = {millis}"))
        .await
        .map_err(|e| ActionError::Failed(format!("setting statement_timeout: {}", db_error(&e))))?;
    Ok(statement.params.iter().map(SqlValue::boxed).collect())
}

/// Runs `text` with `params` to the end: the rows (up to 20 kept) and the
/// server's count (its CommandComplete tag: rows returned by a query, rows
/// changed by DML without RETURNING).
async fn query(
    client: &tokio_postgres::Client,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<SqlOutcome, tokio_postgres::Error> {
    let stream = client.query_raw(text, params.iter().copied()).await?;
    futures_util::pin_mut!(stream);
    let mut rows = Vec::new();
    let mut columns = Vec::new();
    let mut seen = 0u64;
    while let Some(row) = futures_util::StreamExt::next(&mut stream).await {
        let row = row?;
        seen += 1;
        if columns.is_empty() {
            columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        if rows.len() < 20 {
            rows.push(row_text(&row));
        }
    }
    let count = stream.rows_affected().unwrap_or(seen).max(seen);
    Ok(SqlOutcome { rows: count, columns, sample: rows })
}

/// Runs `statement` against the database at `url`.
///
/// Failed means it did not take effect (refused before running, or the
/// server rolled it back); unknown means it may have: the connection was
/// lost while it ran or while committing, or it went over its cap after
/// running a statement whose effects a rollback cannot undo.
pub async fn run(url: &str, statement: &Statement) -> Result<SqlOutcome, ActionError> {
    let (client, driver) = connect(url).await?;
    let result = run_on(&client, statement).await;
    drop(client);
    let _ = driver.await;
    result
}

/// `opsbot check --live` for a database target: it can be reached, and as
/// whom (a superuser is named: runbooks should run as a role of their own).
pub async fn check_live(url: &str) -> Result<String, ActionError> {
    let (client, driver) = connect(url).await?;
    let found = client
        .query_one(
            "SELECT current_user::text, rolsuper, pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await;
    drop(client);
    let _ = driver.await;
    let row = found.map_err(|e| ActionError::Failed(format!("reading its own role: {}", db_error(&e))))?;
    let (user, superuser, signals): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(match (superuser, signals) {
        (true, _) => format!("connected as {user}, a superuser: give runbooks a role of their own (docs/runbooks.md)"),
        (false, true) => format!("connected as {user} (not a superuser; may end other roles' sessions)"),
        (false, false) => format!(
            "connected as {user} (not a superuser; cannot end other roles' sessions: it lacks pg_signal_backend)"
        ),
    })
}

/// A dry run: the step's preview (or, for a read-only step, the statement
/// itself) in a read-only transaction that is rolled back; the rows it finds
/// are what the step would touch. Signalling functions are refused in both
/// by the runbook checks, so a preview changes nothing.
pub async fn preview(url: &str, statement: &Statement) -> Result<SqlOutcome, ActionError> {
    let text = match (&statement.preview, statement.read_only) {
        (Some(preview), _) => preview.as_str(),
        (None, true) => statement.text.as_str(),
        (None, false) => return Err(ActionError::Failed("this step has no preview statement".into())),
    };
    let (client, driver) = connect(url).await?;
    let result = async {
        let boxed = prepare(&client, statement).await?;
        let params: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        read_only(&client, text, &params).await
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// `text` in a read-only transaction, rolled back.
async fn read_only(
    client: &tokio_postgres::Client,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<SqlOutcome, ActionError> {
    let failed = |what: &str, e: tokio_postgres::Error| ActionError::Failed(format!("{what}: {}", db_error(&e)));
    client.batch_execute("BEGIN READ ONLY").await.map_err(|e| failed("starting the preview", e))?;
    let found = query(client, text, params).await;
    let _ = client.batch_execute("ROLLBACK").await;
    found.map_err(|e| failed("the preview", e))
}

async fn run_on(client: &tokio_postgres::Client, statement: &Statement) -> Result<SqlOutcome, ActionError> {
    let failed = |what: &str, e: tokio_postgres::Error| ActionError::Failed(format!("{what}: {}", db_error(&e)));
    let boxed = prepare(client, statement).await?;
    let params: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
    if let Some(preview) = &statement.preview {
        let found = read_only(client, preview, &params).await?;
        if found.rows > statement.max_rows {
            return Err(ActionError::Failed(format!(
                "it would touch {} rows, more than this step's cap of {}; nothing was run",
                found.rows, statement.max_rows
            )));
        }
    }
    let begin = if statement.read_only { "BEGIN READ ONLY" } else { "BEGIN" };
    client.batch_execute(begin).await.map_err(|e| failed("starting the transaction", e))?;
    let outcome = match query(client, &statement.text, &params).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            // The server refused it (its transaction is void), or the
            // connection went while it ran: then nobody can say.
            return Err(match e.as_db_error() {
                Some(_) => failed("the statement", e),
                None => ActionError::Unknown(format!(
                    "the connection was lost while the statement ran ({}); check the database",
                    db_error(&e)
                )),
            });
        }
    };
    if outcome.rows > statement.max_rows {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(ActionError::Unknown(format!(
            "it touched {} rows, more than this step's cap of {}; its transaction was rolled back, but what a rollback cannot undo (ended sessions, say) stands; check the database",
            outcome.rows, statement.max_rows
        )));
    }
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(outcome),
        Err(e) if e.as_db_error().is_some() => Err(failed("committing (nothing was kept)", e)),
        Err(e) => Err(ActionError::Unknown(format!(
            "the connection was lost while committing ({}); the statement may or may not have taken effect",
            db_error(&e)
        ))),
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
                .or_else(|_| {
                    row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
                        .map(|v| v.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default())
                })
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
        assert_eq!(placeholders("SELECT $1 /* $2 /* $3 */ $4 */ + $5").unwrap(), [1, 5]);
        assert_eq!(
            without_comments("SELECT 1 -- pg_backend_pid()\n, '/* kept */' /* gone /* too */ */"),
            "SELECT 1 \n, '/* kept */'  "
        );
        assert!(check_binding("SELECT pg_terminate_backend(pid) WHERE x < now() - $1::interval", 1).is_ok());
        assert!(check_binding("SELECT 1", 1).unwrap_err().contains("uses no $n but the step binds 1"));
        assert!(check_binding("SELECT $2", 2).unwrap_err().contains("uses $2"));
        assert!(placeholders("SELECT $$ body $$").unwrap_err().contains("dollar quoting"));
    }
}
