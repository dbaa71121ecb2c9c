//! The writer: one thread owns the write connection and commits the queued writes in
//! groups (group commit).
//!
//! Requests queue their write (a [`Job`]) and wait. The writer takes everything queued (up
//! to [`MAX_BATCH`]), opens one transaction, runs each job in a savepoint of its own (a job
//! that fails rolls back only itself and keeps its own error), commits once, then
//! broadcasts the batch's events in revision order and answers every job. One commit, so
//! one fsync under `synchronous=FULL`, serves the whole batch: the busier the store, the
//! larger the batches and the cheaper each write.
//!
//! Jobs in a batch run one after another on the one connection, so each reads the writes of
//! the jobs before it: an admission rule spanning objects (no double-booking) sees them
//! exactly as if they had committed alone.
//!
//! Architecture Invariant: no job is answered, and no event broadcast, before the commit
//! that holds it succeeded; the revision counter and the history's byte total move only
//! then. A failed commit fails every write of its batch and leaves the counters as they were.
//!
//! Checkpoints are off the write path: the write connection does not checkpoint
//! (`wal_autocheckpoint=0`); after every [`CHECKPOINT_EVERY`] committed writes the writer
//! nudges a checkpointer thread, which runs a `PASSIVE` checkpoint on its own connection
//! while writes go on.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::Written;
use super::db::{Db, write_failed};
use super::event::Event;
use super::read::View;
use crate::admission::Served;
use crate::error::AppError;

/// Most writes committed in one transaction; more wait for the next.
pub(super) const MAX_BATCH: usize = 512;

/// Committed writes between checkpoints (about the pages SQLite's own autocheckpoint waits
/// for: each write dirties a few pages, and a batch shares many).
const CHECKPOINT_EVERY: u64 = 1000;

/// What the batch's commit told a job that ran in it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Committed {
    /// The history is over its bounds: the write should compact before it answers.
    pub(super) compact: bool,
}

/// One write waiting for the writer.
pub(super) trait Job: Send {
    /// Runs the write inside the batch's transaction, in a savepoint of its own: an error
    /// rolls back this job's changes only.
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), AppError>;
    /// Answers the request once the batch's fate is known: `Ok` after its commit, else this
    /// job's own error or the batch's.
    fn answer(self: Box<Self>, outcome: Result<Committed, AppError>);
}

/// What the writer is asked to do.
pub(super) enum Op {
    /// A write, committed with whatever else is queued.
    Write(Box<dyn Job>),
    /// One compaction batch (its own transaction); answers whether it dropped events.
    Compact(oneshot::Sender<Result<bool, AppError>>),
}

/// The open transaction of a batch, as the jobs see it.
pub(super) struct Batch<'a> {
    conn: &'a Connection,
    /// The last revision staged (the committed one before the first write).
    revision: u64,
    compacted: u64,
    history_bytes: u64,
    events: Vec<Event>,
}

impl<'a> Batch<'a> {
    /// The database as this job sees it: committed state plus the batch's earlier writes.
    pub(super) fn view(&self) -> View<'a> {
        View {
            conn: self.conn,
            revision: self.revision,
            compacted: self.compacted,
        }
    }

    /// Writes `object` at the next revision and keeps its event for the broadcast after
    /// the commit; answers that event, to add to.
    pub(super) fn stage<R: Served>(
        &mut self,
        object: &mut R,
        written: Written,
        prev: Option<String>,
        selection_changed: bool,
    ) -> Result<&mut Event, AppError> {
        let event = Db::stage(
            self.conn,
            self.revision + 1,
            object,
            written,
            prev,
            selection_changed,
        )?;
        self.revision = event.rv;
        self.history_bytes +=
            (event.body.len() + event.prev.as_ref().map_or(0, String::len)) as u64;
        self.events.push(event);
        Ok(self.events.last_mut().expect("just pushed"))
    }

    /// Runs `job` in a savepoint. The outer error is the transaction's (the batch fails);
    /// the inner one the job's alone.
    fn savepoint(&mut self, job: &mut dyn Job) -> Result<Result<(), AppError>, AppError> {
        self.conn
            .execute_batch("SAVEPOINT write")
            .map_err(write_failed)?;
        let mark = (self.revision, self.history_bytes, self.events.len());
        // A panicking job (a bug in its decision) fails that request, not the writer.
        let ran =
            std::panic::catch_unwind(AssertUnwindSafe(|| job.run(self))).unwrap_or_else(|_| {
                Err(AppError::internal(
                    "database write failed: the write panicked",
                ))
            });
        if self.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O error): the
            // batch's earlier writes are gone too.
            return Err(ran
                .err()
                .unwrap_or_else(|| write_failed("the transaction was rolled back")));
        }
        match ran {
            Ok(()) => {
                self.conn
                    .execute_batch("RELEASE write")
                    .map_err(write_failed)?;
                Ok(Ok(()))
            }
            Err(e) => {
                (self.revision, self.history_bytes) = (mark.0, mark.1);
                self.events.truncate(mark.2);
                self.conn
                    .execute_batch("ROLLBACK TO write; RELEASE write")
                    .map_err(write_failed)?;
                Ok(Err(e))
            }
        }
    }
}

/// Starts the writer thread over `db`; it ends when every sender of its queue is gone.
/// `checkpoints` is the checkpointer's nudge, for a store with a write-ahead log.
pub(super) fn start(
    db: Arc<Mutex<Db>>,
    live: broadcast::Sender<Arc<Event>>,
    checkpoints: Option<SyncSender<()>>,
) -> std::io::Result<Sender<Op>> {
    let (ops, queue) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(&db, &live, &queue, checkpoints.as_ref()))?;
    Ok(ops)
}

fn lock(db: &Mutex<Db>) -> std::sync::MutexGuard<'_, Db> {
    // Writes are transactions and the counters move only after a commit, so a panic while
    // the lock was held left nothing half done.
    db.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(
    db: &Mutex<Db>,
    live: &broadcast::Sender<Arc<Event>>,
    queue: &Receiver<Op>,
    checkpoints: Option<&SyncSender<()>>,
) {
    let mut since_checkpoint = 0;
    while let Ok(first) = queue.recv() {
        let (mut jobs, mut compactions) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(op) = next {
            match op {
                Op::Write(job) => jobs.push(job),
                Op::Compact(reply) => compactions.push(reply),
            }
            next = if jobs.len() < MAX_BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        run_ops(
            db,
            live,
            jobs,
            compactions,
            checkpoints,
            &mut since_checkpoint,
        );
    }
}

/// Commits `jobs` as one batch, then runs the compactions asked for.
fn run_ops(
    db: &Mutex<Db>,
    live: &broadcast::Sender<Arc<Event>>,
    jobs: Vec<Box<dyn Job>>,
    compactions: Vec<oneshot::Sender<Result<bool, AppError>>>,
    checkpoints: Option<&SyncSender<()>>,
    since_checkpoint: &mut u64,
) {
    let mut db = lock(db);
    if !jobs.is_empty() {
        *since_checkpoint += commit_batch(&mut db, jobs, live);
        if let Some(nudge) = checkpoints.filter(|_| *since_checkpoint >= CHECKPOINT_EVERY) {
            // Full means a checkpoint is already due; it will cover these writes too.
            let _ = nudge.try_send(());
            *since_checkpoint = 0;
        }
    }
    for reply in compactions {
        let _ = reply.send(db.compact_batch());
    }
}

/// Runs `jobs` in one transaction, commits, broadcasts and answers; answers how many
/// writes it committed.
pub(super) fn commit_batch(
    db: &mut Db,
    mut jobs: Vec<Box<dyn Job>>,
    live: &broadcast::Sender<Arc<Event>>,
) -> u64 {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let staged = (|| {
        db.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(write_failed)?;
        let mut batch = Batch {
            conn: &db.conn,
            revision: db.revision,
            compacted: db.compacted,
            history_bytes: db.history_bytes,
            events: Vec::new(),
        };
        for job in &mut jobs {
            outcomes.push(batch.savepoint(job.as_mut())?);
        }
        if batch.events.is_empty() {
            // Nothing to keep (reads, dry runs, refusals): no commit, no fsync.
            db.conn.execute_batch("ROLLBACK").map_err(write_failed)?;
        } else {
            db.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'revision'")
                .and_then(|mut s| s.execute([batch.revision as i64]))
                .map_err(write_failed)?;
            db.conn.execute_batch("COMMIT").map_err(write_failed)?;
        }
        Ok::<_, AppError>((batch.revision, batch.history_bytes, batch.events))
    })();
    let (revision, history_bytes, events) = match staged {
        Ok(staged) => staged,
        Err(e) => {
            if !db.conn.is_autocommit() {
                let _ = db.conn.execute_batch("ROLLBACK");
            }
            tracing::warn!(error = %e, writes = jobs.len(), "a write batch failed");
            for job in jobs {
                job.answer(Err(e.clone()));
            }
            return 0;
        }
    };
    let written = events.len() as u64;
    db.revision = revision;
    db.history_bytes = history_bytes;
    if !events.is_empty() {
        db.recorder.committed(&events, chrono::Utc::now());
    }
    for event in events {
        // A send fails only when nobody watches, which is fine.
        let _ = live.send(Arc::new(event));
    }
    let committed = Committed {
        compact: db.bounds.exceeded(db.history_size()),
    };
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        job.answer(outcome.map(|()| committed));
    }
    written
}

/// Starts the checkpointer for the database file at `path`: a thread with its own
/// connection that runs a `PASSIVE` checkpoint each time it is nudged, and ends when its
/// nudge is dropped (with the writer).
pub(super) fn start_checkpointer(conn: Connection) -> std::io::Result<SyncSender<()>> {
    let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match done {
                    Ok((frames, copied)) => tracing::debug!(frames, copied, "checkpointed"),
                    Err(e) => tracing::warn!(error = %e, "checkpointing the database failed"),
                }
            }
        })?;
    Ok(nudge)
}
