//! The front of a group-commit writer, shared by the sled and PostgreSQL
//! trails: appends wait for room in a bounded queue (backpressure, not an
//! unbounded backlog), go to the writer thread as jobs, and resolve when the
//! writer answers.

use super::{AuditEntry, AuditError, AuditRecord, Effect, MAX_COMMIT};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// One append, as the writer takes it.
pub struct Job {
    pub entries: Vec<AuditEntry>,
    pub then: Option<Effect>,
    pub reply: oneshot::Sender<Result<Vec<AuditRecord>, AuditError>>,
    /// Held until the writer takes the job: bounds the queue.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The appending side of the queue.
pub struct Queue {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    room: Arc<Semaphore>,
}

impl Queue {
    /// A queue holding at most `limit` jobs, and the writer's end of it.
    pub fn new(limit: usize) -> (Queue, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel();
        (Queue { jobs: Mutex::new(Some(tx)), room: Arc::new(Semaphore::new(limit)) }, rx)
    }

    /// Hands `entries` (and the state change to make with them) to the
    /// writer; resolves with the records once it has committed them.
    pub async fn submit(&self, entries: Vec<AuditEntry>, then: Option<Effect>) -> Result<Vec<AuditRecord>, AuditError> {
        if entries.len() > MAX_COMMIT {
            return Err(AuditError::Store(format!(
                "{} records in one append; at most {MAX_COMMIT} go in one commit",
                entries.len()
            )));
        }
        let permit = self.room.clone().acquire_owned().await.map_err(|_| AuditError::Closed)?;
        let (reply, done) = oneshot::channel();
        let sent = match self.jobs.lock().expect("audit queue lock").as_ref() {
            Some(jobs) => jobs.send(Job { entries, then, reply, _permit: permit }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(AuditError::Closed);
        }
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Takes no more jobs; the writer ends once it has answered the queued ones.
    pub fn close(&self) {
        drop(self.jobs.lock().expect("audit queue lock").take());
    }
}
