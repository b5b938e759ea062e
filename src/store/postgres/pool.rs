//! Connections to PostgreSQL for synchronous callers. The [`Store`] trait is
//! synchronous and is called from inside tokio tasks, where the blocking
//! client cannot run (it drives a runtime of its own). So each connection
//! lives on a thread of its own; a call sends it a job and waits for the
//! answer. A connection that broke is made again on the next job.
//!
//! The audit writer's connection is the exception: it stays on the writer's
//! thread, and while a commit's transaction is open, store writes made on
//! that thread (an [`crate::audit::Effect`] releasing a run lock) go into the
//! same transaction, so they land with the commit's records or not at all.
//!
//! [`Store`]: crate::store::Store

use crate::store::StoreError;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A pooled connection idle longer than this is checked before it is used.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any one statement of the store may run; a stuck database fails
/// the call instead of holding the caller.
const STATEMENT_TIMEOUT: &str = "15s";

type Job = Box<dyn FnOnce(Result<&mut postgres::Client, String>) + Send>;

thread_local! {
    /// On the audit writer's thread, while its commit's transaction is open:
    /// which database (its `Pg`'s id) and the connection holding the transaction.
    static IN_COMMIT: RefCell<Option<(u64, postgres::Client)>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A database: its URL and a few connections on threads of their own.
pub struct Pg {
    id: u64,
    url: Arc<String>,
    jobs: mpsc::Sender<Job>,
    /// The leader's term this process writes in (0: none): each connection
    /// says it (`SET opsbot.term`), and the state tables' trigger refuses a
    /// write once another term leads.
    term: Arc<AtomicU64>,
}

/// The server's words (never the URL, which may hold a password).
pub fn db_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn store_error(e: postgres::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {}", db_error(&e)))
}

/// One connection, with TLS when the server offers it (`sslmode=prefer`,
/// the default) or the URL asks for it, checked against the system's roots.
pub fn connect(url: &str) -> Result<postgres::Client, String> {
    // Never the URL or the parser's words about it: they may hold a password.
    let mut config: postgres::Config =
        url.parse().map_err(|_| "the store's URL is not a valid postgres:// URL or key=value string".to_string())?;
    // A peer that vanished (its host lost, the network cut) is noticed in
    // seconds, on both ends, rather than after the system's two hours.
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(10))
        .application_name("opsbot");
    let tls = crate::action::sql::tls().map_err(|e| e.to_string())?;
    let mut client = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .map_err(|e| format!("cannot connect to the store's database: {}", db_error(&e)))?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET idle_in_transaction_session_timeout = '30s'; \
             SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3"
        ))
        .map_err(|e| format!("the store's database: {}", db_error(&e)))?;
    Ok(client)
}

impl Pg {
    /// `connections` threads for `url`; each connects on its first job. The
    /// URL is checked by connecting once now, so a wrong one is said at start.
    pub fn open(url: &str, connections: usize) -> Result<Pg, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let url = Arc::new(url.to_string());
        let term = Arc::new(AtomicU64::new(0));
        for n in 0..connections.max(1) {
            let (queue, url, term) = (queue.clone(), url.clone(), term.clone());
            let mut client: Option<postgres::Client> = None;
            let mut said_term = 0;
            let mut used = std::time::Instant::now();
            std::thread::Builder::new()
                .name(format!("opsbot-pg-{n}"))
                .spawn(move || loop {
                    let job = match queue.lock().expect("pg queue").recv() {
                        Ok(job) => job,
                        Err(_) => return, // the Pg is gone
                    };
                    // A connection idle for a while may have been dropped by
                    // the server (a failover, an idle timeout) without this
                    // side knowing: asked first, so the job does not fail on it.
                    if used.elapsed() > IDLE_CHECK {
                        if let Some(c) = client.as_mut() {
                            if c.simple_query("").is_err() {
                                client = None;
                            }
                        }
                    }
                    used = std::time::Instant::now();
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = None;
                        said_term = 0;
                        match connect(&url) {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                job(Err(e));
                                continue;
                            }
                        }
                    }
                    let connection = client.as_mut().expect("connected");
                    let now = term.load(Ordering::SeqCst);
                    if now != said_term {
                        if let Err(e) = connection.batch_execute(&format!("SET opsbot.term = '{now}'")) {
                            job(Err(format!("the store's database: {}", db_error(&e))));
                            continue;
                        }
                        said_term = now;
                    }
                    job(Ok(connection));
                })
                .map_err(|e| StoreError::Io(format!("cannot start a store thread: {e}")))?;
        }
        let pg = Pg { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), url, jobs, term };
        pg.call(|c| c.batch_execute("SELECT 1"))?;
        Ok(pg)
    }

    /// A connection made on a thread of its own (the blocking client cannot
    /// connect on a thread that runs tokio tasks).
    pub fn connect_aside(&self) -> Result<postgres::Client, String> {
        let url = self.url.clone();
        std::thread::spawn(move || connect(&url)).join().map_err(|_| "connecting panicked".to_string())?
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The term this process writes in, once it leads.
    pub fn term(&self) -> Option<u64> {
        Some(self.term.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    /// From now on this process's state writes are made in `term`, and
    /// refused by the database once another term leads.
    pub fn fence(&self, term: u64) {
        self.term.store(term, Ordering::SeqCst);
    }

    /// Runs `f` on a connection and waits for its answer; inside an open
    /// audit commit on this thread, in that commit's transaction.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        let mine = IN_COMMIT.with(|c| c.borrow().as_ref().is_some_and(|(id, _)| *id == self.id));
        if mine {
            return IN_COMMIT.with(|c| {
                let mut c = c.borrow_mut();
                let (_, client) = c.as_mut().expect("checked above");
                f(client).map_err(store_error)
            });
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let answer = match client {
                Ok(client) => f(client).map_err(store_error),
                Err(e) => Err(StoreError::Io(e)),
            };
            let _ = tx.send(answer);
        });
        self.jobs.send(job).map_err(|_| StoreError::Io("the store's connections have stopped".into()))?;
        let wait = || rx.recv().map_err(|_| StoreError::Io("a store connection stopped while answering".into()));
        // On a tokio worker: let the runtime move its other tasks elsewhere
        // while this one waits for the database.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)?
            }
            _ => wait()?,
        }
    }

    /// Makes `client` this thread's open commit for this database: until
    /// [`Pg::end_commit`], [`Pg::call`]s on this thread use it.
    pub fn begin_commit(&self, client: postgres::Client) {
        IN_COMMIT.with(|c| *c.borrow_mut() = Some((self.id, client)));
    }

    /// Runs `f` on this thread's open commit's connection.
    pub fn on_commit<R>(&self, f: impl FnOnce(&mut postgres::Client) -> R) -> R {
        IN_COMMIT.with(|c| {
            let mut c = c.borrow_mut();
            let (_, client) = c.as_mut().expect("a commit is open on this thread");
            f(client)
        })
    }

    /// Takes this thread's commit connection back.
    pub fn end_commit(&self) -> postgres::Client {
        IN_COMMIT.with(|c| c.borrow_mut().take().expect("a commit is open on this thread").1)
    }
}
