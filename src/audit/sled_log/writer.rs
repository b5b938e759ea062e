//! The audit writer: one thread that seals queued appends into commits,
//! writes them in the order `end::classify` knows, and flushes once each.

use super::*;

/// What the writer tells the rest of the process after each commit.
pub(super) struct Told {
    /// Followers (`audit tail --follow`).
    pub(super) notify: broadcast::Sender<AuditRecord>,
    pub(super) recent: Arc<RecentOutcomes>,
    /// The last acknowledged head.
    pub(super) acked: Arc<Mutex<Head>>,
    /// Why the store stopped, once a commit failed.
    pub(super) failed: Arc<Mutex<Option<String>>>,
}

pub(super) fn run_writer(
    db: Durable,
    tree: sled::Tree,
    mut head: Head,
    rx: mpsc::Receiver<Job>,
    hook: CommitHook,
    told: Told,
) {
    let Told { notify, recent, acked, failed } = told;
    let mut last_ts = Utc::now();
    // A job that did not fit in the last commit: it starts the next one.
    let mut carried: Option<Job> = None;
    loop {
        let next = match carried.take() {
            Some(job) => Ok(job),
            None => rx.recv_timeout(IDLE_COMMIT),
        };
        if let Some(problem) = failed.lock().expect("failed lock").clone() {
            // A commit failed: the store takes nothing more (see below).
            match next {
                Ok(job) => {
                    let _ = job.reply.send(Err(AuditError::Store(format!(
                        "the audit store failed earlier ({problem}) and takes no more records; restart opsbot"
                    ))));
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
            }
        }
        let first = match next {
            Ok(job) => job,
            Err(idle) => {
                // No appends: make the hook's queued writes durable anyway.
                match hook().and_then(|wrote| if wrote { db.flush() } else { Ok(()) }) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "audit writer: idle commit of queued state failed"),
                }
                if idle == mpsc::RecvTimeoutError::Disconnected {
                    break;
                }
                continue;
            }
        };
        // At most MAX_COMMIT records a commit (a job is never larger, see
        // `commit`): end::classify relies on it to tell a cut-off commit from
        // records added behind the head.
        let mut jobs = vec![first];
        let mut queued = jobs[0].entries.len();
        while queued < MAX_COMMIT {
            match rx.try_recv() {
                Ok(job) if queued + job.entries.len() > MAX_COMMIT => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => {
                    queued += job.entries.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let start_head = head.clone();
        let mut blocks = BlockWriter::new(head.seq + 1);
        let mut sealed: Vec<Vec<AuditRecord>> = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            let mut records = Vec::with_capacity(job.entries.len());
            for entry in job.entries.drain(..) {
                // Timestamps never go backwards along the chain, even if the wall clock does.
                last_ts = Utc::now().max(last_ts);
                let seq = head.seq + 1;
                let (record, stored) = chain::seal(seq, last_ts, entry, &head.hash);
                blocks.push(&record, &stored);
                head = Head { seq, hash: record.hash.clone() };
                records.push(record);
            }
            sealed.push(records);
        }
        // Plain inserts in order — unsealed blocks, index entries, `h`, the
        // sealed block, `c`, then the jobs' state changes — and one flush.
        // sled's `apply_batch` would make them atomic, but it seals and
        // writes sled's IO buffer twice per call; that cost a third of the
        // CPU of a busy bot. sled recovers a prefix of its log after a crash,
        // and `end::classify` knows every prefix this order can leave.
        let written = hook().and_then(|_| {
            if head != start_head {
                for (key, value) in blocks.finish(head.clone()).writes() {
                    tree.insert(key, value)?;
                }
            }
            Ok(())
        });
        let mut effects = jobs.iter_mut().filter_map(|job| job.then.take()).peekable();
        let written = written.and_then(|_| {
            effects.try_for_each(|effect| effect().map_err(|e| sled::Error::Unsupported(format!("state change: {e}"))))
        });
        let written = written.and_then(|_| db.flush());
        match written {
            Ok(()) => {
                *acked.lock().expect("acked lock") = head.clone();
                recent.note(sealed.iter().flatten());
                for (job, records) in jobs.into_iter().zip(sealed) {
                    // Followers (audit tail) are rare; clone only when one listens.
                    if notify.receiver_count() > 0 {
                        for record in &records {
                            let _ = notify.send(record.clone());
                        }
                    }
                    let _ = job.reply.send(Ok(records));
                }
            }
            Err(e) => {
                // Nothing in this batch is acknowledged, and the store takes
                // no more: a write or flush that failed means the disk is
                // failing, and undoing part of a commit in place could leave
                // an order no crash leaves. Instead the `f` mark, written
                // after everything this commit wrote, names the head before
                // it, and the next open drops what follows (its callers
                // were told it failed; outcomes in it are handed back to be
                // recorded again as unknown). If the mark cannot be written
                // either (sled refuses every write after its own I/O error),
                // what reached the disk is a prefix of this commit,
                // classified like a crash — or, if all of it landed, kept.
                // Readiness and liveness go false.
                let mark = serde_json::to_vec(&start_head).expect("head serialises");
                if let Err(also) = tree.insert(FAILED_KEY, mark).and_then(|_| db.flush()) {
                    tracing::error!(error = %also, "the failed-commit mark was not written either");
                }
                recent.forget();
                tracing::error!(error = %e, "audit commit failed; the audit store takes no more records until opsbot restarts");
                *failed.lock().expect("failed lock") = Some(e.to_string());
                for job in jobs {
                    let _ = job.reply.send(Err(AuditError::Store(e.to_string())));
                }
            }
        }
    }
}
