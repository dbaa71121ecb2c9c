//! The SQLite store: objects by kind and name, one global revision counter, and the watch
//! history, plus the broadcast channel that feeds live watches.
//!
//! `Store` is a cheap `Clone` handle. Writes go to one writer thread (`writer`), which
//! owns the write connection and commits whatever requests have queued in one transaction
//! (group commit), each write in a savepoint of its own. Reads never wait for it: a
//! file-backed store reads through a small pool of read-only connections (`read`), each
//! read one WAL snapshot that carries its own revision. An in-memory store reads on the
//! write connection between the writer's batches (under its `std::sync::Mutex`, whose
//! critical sections are short, synchronous and never cross an `.await`): a shared-cache
//! memory database has table locks instead of WAL snapshots, so a second connection would
//! either wait for the writer anyway or read uncommitted rows. In-memory stores serve tests
//! and benchmarks; servers keep a file.
//!
//! Architecture Invariant: a write is committed before it is broadcast or acknowledged, so
//! everything a client was told about survives a crash, and every revision a watcher sees
//! live is also readable from the history table. Live events leave in revision order.

mod census;
mod compaction;
mod credentials;
mod db;
mod event;
mod paging;
mod read;
mod restore;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_concurrent;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use crate::admission::Served;
use crate::error::{AppError, Error};
use crate::metrics::Recorder;
use crate::pages::Continue;
use crate::schema::{self, SyncMode};
pub use compaction::HistoryBounds;
pub use credentials::TokenRecord;
use db::Db;
pub use event::{Event, EventType};
use read::{Readers, View, read_in};
pub use restore::{check as check_backup, restore};
use writer::Op;

/// How many live events a watcher may fall behind before it re-reads from SQLite.
const LIVE_BUFFER: usize = 4096;

/// What an admission decision asks the store to do.
#[derive(Debug)]
pub enum Change<R> {
    /// Nothing to write; answer with this (the stored) object.
    Unchanged(R),
    /// Create or replace the object.
    Put(R),
    /// Remove the object; this is its last state.
    Remove(R),
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The object was created.
    Created,
    /// The object was changed.
    Updated,
    /// The object was removed.
    Removed,
    /// Nothing was written.
    Unchanged,
}

/// Waits for the writer thread's answer in a blocking task rather than on the async
/// receiver. The wait costs a blocking thread, as the write itself did before writes were
/// batched, and tells tokio that work is under way: a runtime with a paused clock (the
/// controllers' tests) advances time only when nothing runs, and a write in progress on
/// the writer's own thread would otherwise look like idleness, letting a client's request
/// timeout fire in virtual time while the write is still being committed.
async fn awaited<T: Send + 'static>(answer: oneshot::Receiver<T>) -> Result<T, AppError> {
    tokio::task::spawn_blocking(move || answer.blocking_recv())
        .await
        .map_err(|e| AppError::internal(format!("database task failed: {e}")))?
        .map_err(|_| writer_stopped())
}

/// A cheap `Clone` handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The write connection and its counters: the writer's during a batch; credentials,
    /// in-memory reads and in-memory backups take it between batches.
    db: Arc<Mutex<Db>>,
    /// The writer's queue.
    writes: Sender<Op>,
    /// The read-only connections of a file-backed store; `None` in memory.
    readers: Option<Readers>,
    live: broadcast::Sender<Arc<Event>>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// The store's identity (see [`Store::id`]).
    id: String,
    /// The metrics the writer feeds; write latency is recorded here too.
    recorder: Arc<Recorder>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The revision every page of the list is read at.
    pub revision: u64,
    /// The objects' JSON, ordered by name.
    pub bodies: Vec<String>,
    /// Where the next page starts, when items remain.
    pub next: Option<Continue>,
    /// How many items remain after this page, when asked for and items remain.
    pub remaining: Option<u64>,
}

/// A live subscription opened at a known revision.
pub struct Subscription {
    /// Live events after `revision`.
    pub receiver: broadcast::Receiver<Arc<Event>>,
    /// Every event up to this revision is in the history table (or compacted).
    pub revision: u64,
}

impl Store {
    /// Opens (creating and migrating if needed) the database; `None` is in-memory.
    ///
    /// Under `SyncMode::Normal` a power cut may lose the last commits, and their revision
    /// numbers would then be handed out again for other writes; a watcher that saw the lost
    /// ones could resume past the reused ones without noticing. So a file opened in that
    /// mode takes a new store id, which sends every watcher of the previous run back to a
    /// list (410). Under `Full` no acknowledged commit is lost and the id stays.
    ///
    /// The history's byte total is summed here, once; writes and compactions keep it.
    pub fn open(
        path: Option<&Path>,
        sync: SyncMode,
        bounds: HistoryBounds,
    ) -> Result<Store, Error> {
        let db_err = |context: &str| {
            let context = context.to_string();
            move |source| Error::Database { context, source }
        };
        let mut conn = match path {
            Some(p) => Connection::open(p).map_err(db_err(&format!("opening {}", p.display())))?,
            None => Connection::open_in_memory().map_err(db_err("opening in-memory database"))?,
        };
        schema::configure(&conn, sync)?;
        schema::migrate(&mut conn)?;
        let meta = |key: &str| -> Result<u64, Error> {
            let v: i64 = conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .map_err(db_err("reading the revision counter"))?;
            Ok(v as u64)
        };
        let revision = meta("revision")?;
        let compacted = meta("compacted")?;
        let history_bytes = db::history_bytes(&conn).map_err(db_err("sizing the watch history"))?;
        // Before the writer starts, so every later commit counts on top of it exactly once.
        let census =
            census::read(&conn, chrono::Utc::now()).map_err(db_err("counting tasks and nodes"))?;
        let recorder = Arc::new(Recorder::new(census));
        let id = match (path, sync) {
            (Some(_), SyncMode::Normal) => schema::new_store_id(&conn)?,
            _ => schema::store_id(&conn)?,
        };
        tracing::info!(revision, compacted, history_bytes, store_id = %id, sync = sync.pragma(), "opened store");
        // The writer never checkpoints on a commit's way; a thread of its own does (see
        // `writer`).
        let checkpoints = match path {
            Some(p) => {
                conn.pragma_update(None, "wal_autocheckpoint", 0)
                    .map_err(db_err("turning off automatic checkpoints"))?;
                let checkpointer = Connection::open(p)
                    .map_err(db_err(&format!("opening {} to checkpoint", p.display())))?;
                schema::configure(&checkpointer, sync)?;
                Some(writer::start_checkpointer(checkpointer)?)
            }
            None => None,
        };
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let db = Arc::new(Mutex::new(Db {
            conn,
            revision,
            compacted,
            bounds,
            history_bytes,
            recorder: recorder.clone(),
        }));
        let writes = writer::start(db.clone(), live.clone(), checkpoints)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                writes,
                readers: path.map(|p| Readers::new(p.to_path_buf())),
                live,
                path: path.map(Path::to_path_buf),
                id,
                recorder,
            }),
        })
    }

    /// The store's identity: a random id made with the database and made anew by a restore
    /// (and by every open under `SyncMode::Normal`). Lists carry it as
    /// `metadata.storeId`; a watch naming another one (`storeId=`) is 410 Gone, so a
    /// watcher never resumes by revision number into another store's history.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Writes a consistent copy of the whole database to `to`, a file that must not exist
    /// yet (`VACUUM INTO`). A file-backed store copies through a connection of its own, a
    /// read transaction that WAL lets run beside the writer, so writes go on meanwhile; an
    /// in-memory store copies under the store lock.
    pub async fn backup(&self, to: PathBuf) -> Result<(), AppError> {
        let backup_failed =
            |e: rusqlite::Error| AppError::internal(format!("backing up the store failed: {e}"));
        let Some(path) = self.inner.path.clone() else {
            return self
                .locked(move |db| {
                    db.conn
                        .execute("VACUUM INTO ?1", [to.to_string_lossy()])
                        .map_err(backup_failed)?;
                    Ok(())
                })
                .await;
        };
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(backup_failed)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backup_failed)?;
            conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
                .map_err(backup_failed)?;
            Ok(())
        })
        .await
        .map_err(|e| AppError::internal(format!("backup task failed: {e}")))?
    }

    fn lock(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave half a write behind: writes are
        // transactions and the counters move only after a commit. So a poisoned lock is safe
        // to keep using.
        self.inner.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the locked write connection in a blocking thread (between the writer's
    /// batches).
    async fn locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&mut store.lock()))
            .await
            .map_err(|e| AppError::internal(format!("database task failed: {e}")))?
    }

    /// Runs `f` on a fresh snapshot of the store in a blocking thread: on a read-only
    /// connection of its own for a file, on the write connection between batches in memory.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&View<'_>) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || match &store.inner.readers {
            Some(readers) => readers.read(f),
            None => read_in(&mut store.lock().conn, f),
        })
        .await
        .map_err(|e| AppError::internal(format!("database task failed: {e}")))?
    }

    /// Hands `op` to the writer (see [`awaited`] for its answer).
    fn submit(&self, op: Op) -> Result<(), AppError> {
        self.inner.writes.send(op).map_err(|_| writer_stopped())
    }

    /// The metrics the store's writes feed.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    /// The database's size in bytes: a file's with its write-ahead log; an in-memory
    /// database's pages (read between the writer's batches).
    pub fn size_bytes(&self) -> Result<u64, AppError> {
        let failed = |e: &dyn std::fmt::Display| {
            AppError::internal(format!("reading the database's size failed: {e}"))
        };
        match &self.inner.path {
            Some(path) => {
                let main = std::fs::metadata(path).map_err(|e| failed(&e))?.len();
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                let wal = std::fs::metadata(&wal).map_or(0, |m| m.len());
                Ok(main + wal)
            }
            None => {
                let db = self.lock();
                let pages = |pragma: &str| {
                    db.conn
                        .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                        .map_err(|e| failed(&e))
                };
                Ok((pages("page_count")? * pages("page_size")?) as u64)
            }
        }
    }

    /// The last committed revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Reads one object.
    pub async fn get<R: Served>(&self, name: String) -> Result<Option<R>, AppError> {
        self.read(move |view| view.load::<R>(&name)).await
    }

    /// Reads the JSON of every object of a kind, ordered by name, with the revision it was
    /// read at. `node` and `phase` narrow the read through the indexed columns.
    pub async fn list(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
    ) -> Result<(u64, Vec<String>), AppError> {
        self.read(move |view| {
            let bodies = view.bodies(kind, node.as_deref(), phase.as_deref())?;
            Ok((view.revision, bodies))
        })
        .await
    }

    /// Reads every object of a kind and opens a live subscription at the same revision, so
    /// a fresh watch misses nothing between its initial list and its live events.
    ///
    /// The subscription opens before the read's snapshot is taken: every write committed
    /// after the snapshot is then in the subscription, and the ones the subscription holds
    /// from before it (at or below the snapshot's revision, already in the list) are for
    /// the watcher to skip, which it does by revision.
    pub async fn snapshot(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
    ) -> Result<(Subscription, Vec<String>), AppError> {
        let receiver = self.inner.live.subscribe();
        let (revision, bodies) = self.list(kind, node, phase).await?;
        Ok((Subscription { receiver, revision }, bodies))
    }

    /// Opens a live subscription for a watch resuming after revision `after`; 410 Gone when
    /// the history no longer reaches back that far, or `after` is past the current revision.
    /// As with [`Store::snapshot`], the subscription opens before the revision is read.
    pub async fn subscribe_after(&self, after: u64) -> Result<Subscription, AppError> {
        let receiver = self.inner.live.subscribe();
        let revision = self
            .read(move |view| {
                view.check_retained(after)?;
                // A version from the future means the client saw another database (the file
                // was replaced or wiped); resuming would silently skip revisions, so make it
                // re-list.
                if after > view.revision {
                    return Err(AppError::new(
                        kohakuriver_api::StatusReason::Gone,
                        format!(
                            "resourceVersion {after} is newer than the store's revision {}; list again and watch from the list's resourceVersion",
                            view.revision
                        ),
                    ));
                }
                Ok(view.revision)
            })
            .await?;
        Ok(Subscription { receiver, revision })
    }

    /// Up to `limit` events of `kind` with `after < rv <= up_to`, oldest first, and the
    /// revision the read reached (`up_to`, or the last event's when `limit` cut it short);
    /// 410 Gone when events after `after` were compacted away.
    pub async fn history(
        &self,
        kind: &'static str,
        after: u64,
        up_to: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Arc<Event>>, u64), AppError> {
        let (events, reached) = self
            .read(move |view| {
                let up_to = up_to.unwrap_or(view.revision);
                view.history(kind, after, up_to, limit)
            })
            .await?;
        Ok((events.into_iter().map(Arc::new).collect(), reached))
    }

    /// The one write path. Queues the write for the writer, which (inside its batch's
    /// transaction) reads the current object, asks `decide` what to do, checks a put
    /// against the other stored objects (`Served::admit_against`), and (unless `dry_run`)
    /// stages the change with the next revision; once the batch commits it broadcasts the
    /// event and answers. A put that leaves a deleting object without finalizers removes it.
    /// Answers the object as stored (or as it would be), what happened, and `decide`'s extra
    /// value. A write that leaves the history over its bounds then compacts it (see
    /// `compaction`) before answering.
    pub async fn write<R, T, F>(
        &self,
        name: String,
        dry_run: bool,
        decide: F,
    ) -> Result<(R, Written, T), AppError>
    where
        R: Served,
        T: Send + 'static,
        F: FnOnce(Option<R>, &dyn crate::admission::Stored) -> Result<(Change<R>, T), AppError>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = std::time::Instant::now();
        self.submit(Op::Write(Box::new(write::Pending {
            name,
            dry_run,
            decide: Some(decide),
            done: None,
            reply,
        })))?;
        let (object, written, extra, compact) = awaited(answer).await??;
        self.inner.recorder.wrote(queued.elapsed());
        if compact {
            self.compact().await;
        }
        Ok((object, written, extra))
    }

    /// Compacts the history back under its bounds, one batch per transaction, each queued
    /// to the writer anew so other writes go between batches. The write that asked is
    /// already committed, so a failure here is logged, not answered; the next write that
    /// finds the history over its bounds tries again.
    async fn compact(&self) {
        loop {
            let (reply, answer) = oneshot::channel();
            let done = match self.submit(Op::Compact(reply)) {
                Ok(()) => awaited(answer).await.unwrap_or_else(Err),
                Err(e) => Err(e),
            };
            match done {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "compacting the watch history failed");
                    return;
                }
            }
        }
    }

    #[cfg(test)]
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.lock().conn)
    }
}

/// The writer thread is gone (it panicked outside a job): nothing can be written.
fn writer_stopped() -> AppError {
    AppError::internal("database write failed: the store's writer stopped")
}
