//! The SQLite store: objects by kind and name, one global revision counter, and the watch
//! history, plus the broadcast channel that feeds live watches.
//!
//! `Store` is a cheap `Clone` handle around one connection behind a `std::sync::Mutex`.
//! A std mutex is right here: every critical section is short, synchronous SQLite work that
//! runs inside `spawn_blocking`, never across an `.await`, and one writer at a time is what
//! SQLite allows anyway. Holding the lock from "read current object" to "commit and
//! broadcast" makes each write an atomic read-modify-write (so optimistic concurrency checks
//! cannot race) and makes live events leave in revision order.
//!
//! Architecture Invariant: a write is committed before it is broadcast or acknowledged, so
//! everything a client was told about survives a crash, and every revision a watcher sees
//! live is also readable from the history table.

mod compaction;
mod credentials;
mod db;
mod event;
mod restore;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, params};
use tokio::sync::broadcast;

use crate::admission::{Served, finalized};
use crate::error::{AppError, Error};
use crate::pages::Continue;
use crate::schema::{self, SyncMode};
pub use compaction::HistoryBounds;
pub use credentials::TokenRecord;
use db::{Db, read_failed};
pub use event::{Event, EventType};
use kohakuriver_api::Selectable;
pub use restore::{check as check_backup, restore};

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

/// A cheap `Clone` handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Mutex<Db>,
    live: broadcast::Sender<Arc<Event>>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// The store's identity (see [`Store::id`]).
    id: String,
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
        let id = match (path, sync) {
            (Some(_), SyncMode::Normal) => schema::new_store_id(&conn)?,
            _ => schema::store_id(&conn)?,
        };
        tracing::info!(revision, compacted, history_bytes, store_id = %id, sync = sync.pragma(), "opened store");
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Store {
            inner: Arc::new(Inner {
                db: Mutex::new(Db {
                    conn,
                    revision,
                    compacted,
                    bounds,
                    history_bytes,
                }),
                live,
                path: path.map(Path::to_path_buf),
                id,
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
                .blocking(move |_, db| {
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

    /// Runs `f` on the locked database in a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &mut Db) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = store.lock();
            f(&store, &mut db)
        })
        .await
        .map_err(|e| AppError::internal(format!("database task failed: {e}")))?
    }

    /// The last committed revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Reads one object.
    pub async fn get<R: Served>(&self, name: String) -> Result<Option<R>, AppError> {
        self.blocking(move |_, db| db.load::<R>(&name)).await
    }

    /// Reads the JSON of every object of a kind, ordered by name, with the revision it was
    /// read at. `node` and `phase` narrow the read through the indexed columns.
    pub async fn list(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
    ) -> Result<(u64, Vec<String>), AppError> {
        self.blocking(move |_, db| {
            let bodies = db.bodies(kind, node.as_deref(), phase.as_deref())?;
            Ok((db.revision, bodies))
        })
        .await
    }

    /// One page of a paged list (`limit`, 0 for all), at the current revision or, with a
    /// `continue` token, at the token's revision after its name (see `crate::pages`); 410
    /// Expired when the history no longer reaches back to that revision. `matches` is the
    /// selection, applied to each object as of the list's revision; `count` asks for how
    /// many items remain after the page.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_page(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
        from: Option<Continue>,
        limit: usize,
        matches: impl Fn(&str) -> bool + Send + 'static,
        count: bool,
    ) -> Result<ListPage, AppError> {
        self.blocking(move |_, db| {
            let (revision, after, known) = match from {
                None => (db.revision, String::new(), None),
                Some(from) => {
                    if from.revision < db.compacted || from.revision > db.revision {
                        return Err(AppError::new(
                            kohakuriver_api::StatusReason::Expired,
                            format!(
                                "the continue token's resourceVersion {} is not kept: the history holds {} to {}; list again from the start without continue",
                                from.revision, db.compacted, db.revision
                            ),
                        ));
                    }
                    (from.revision, from.after, from.remaining)
                }
            };
            // What the previous page left is what this one and the later ones hold, so only
            // a list's first page counts.
            let (page, counted) = db.page(
                kind,
                node.as_deref(),
                phase.as_deref(),
                revision,
                &after,
                limit,
                &matches,
                count && known.is_none(),
            )?;
            let remaining = match known {
                Some(known) if count => Some(known.saturating_sub(page.bodies.len() as u64)),
                _ => counted,
            }
            .filter(|_| page.more_after.is_some());
            Ok(ListPage {
                revision,
                bodies: page.bodies,
                next: page.more_after.map(|after| Continue {
                    revision,
                    after,
                    remaining,
                }),
                remaining,
            })
        })
        .await
    }

    /// Reads every object of a kind and opens a live subscription at the same revision, so
    /// a fresh watch misses nothing between its initial list and its live events.
    pub async fn snapshot(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
    ) -> Result<(Subscription, Vec<String>), AppError> {
        self.blocking(move |store, db| {
            let bodies = db.bodies(kind, node.as_deref(), phase.as_deref())?;
            let sub = Subscription {
                receiver: store.inner.live.subscribe(),
                revision: db.revision,
            };
            Ok((sub, bodies))
        })
        .await
    }

    /// Opens a live subscription for a watch resuming after revision `after`; 410 Gone when
    /// the history no longer reaches back that far, or `after` is past the current revision.
    pub async fn subscribe_after(&self, after: u64) -> Result<Subscription, AppError> {
        self.blocking(move |store, db| {
            db.check_retained(after)?;
            // A version from the future means the client saw another database (the file was
            // replaced or wiped); resuming would silently skip revisions, so make it re-list.
            if after > db.revision {
                return Err(AppError::new(
                    kohakuriver_api::StatusReason::Gone,
                    format!(
                        "resourceVersion {after} is newer than the store's revision {}; list again and watch from the list's resourceVersion",
                        db.revision
                    ),
                ));
            }
            Ok(Subscription {
                receiver: store.inner.live.subscribe(),
                revision: db.revision,
            })
        })
        .await
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
        self.blocking(move |_, db| {
            db.check_retained(after)?;
            let up_to = up_to.unwrap_or(db.revision);
            let mut stmt = db
                .conn
                .prepare_cached(
                    "SELECT rv, type, body, prev FROM events WHERE rv > ?1 AND rv <= ?2 AND kind = ?3 ORDER BY rv LIMIT ?4",
                )
                .map_err(read_failed)?;
            let rows = stmt
                .query_map(
                    params![after as i64, up_to as i64, kind, limit as i64],
                    |row| {
                        Ok(Event {
                            rv: row.get::<_, i64>(0)? as u64,
                            kind: kind.to_string(),
                            event_type: EventType::parse(&row.get::<_, String>(1)?),
                            body: row.get(2)?,
                            selection_changed: row.get::<_, Option<String>>(3)?.is_some(),
                            prev: row.get(3)?,
                            body_fields: None,
                            prev_fields: None,
                        })
                    },
                )
                .map_err(read_failed)?;
            let events = rows
                .map(|r| r.map(Arc::new))
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_failed)?;
            let reached = if events.len() == limit {
                events.last().map_or(up_to, |e| e.rv)
            } else {
                up_to
            };
            Ok((events, reached))
        })
        .await
    }

    /// The one write path. Under the lock: reads the current object, asks `decide` what to
    /// do, checks a put against the other stored objects (`Served::admit_against`), and
    /// (unless `dry_run`) commits the change with the next revision and broadcasts
    /// its event. A put that leaves a deleting object without finalizers removes it.
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
        let (object, written, extra, compact) = self
            .blocking(move |store, db| {
                let current = db.load::<R>(&name)?;
                let existed = current.is_some();
                let previous = current.clone();
                let (change, extra) = decide(current, &*db)?;
                let change = match change {
                    Change::Put(object) if finalized(&object) => Change::Remove(object),
                    other => other,
                };
                // Rules spanning objects (no double-booking) run here, under the same lock as
                // the commit, so no other write can slip in between the check and the write.
                if let Change::Put(object) = &change {
                    object.admit_against(previous.as_ref(), &*db)?;
                }
                let (mut object, written) = match change {
                    Change::Unchanged(object) => {
                        return Ok((object, Written::Unchanged, extra, false));
                    }
                    Change::Put(object) if existed => (object, Written::Updated),
                    Change::Put(object) => (object, Written::Created),
                    Change::Remove(object) => (object, Written::Removed),
                };
                if dry_run {
                    return Ok((object, written, extra, false));
                }
                // The state before every change is kept: filtered watches learn from it that an
                // object left or entered their selection, and later pages of a paged list read
                // the object as of their revision from it.
                let previous =
                    previous.filter(|_| matches!(written, Written::Updated | Written::Removed));
                // What selectors see of both states, extracted here once (from the objects in
                // hand) for every filtered watcher of the live event.
                let body_fields = Selectable::of(&object);
                let prev_fields = previous.as_ref().map(Selectable::of);
                let selection_changed =
                    written == Written::Updated && prev_fields.as_ref() != Some(&body_fields);
                let prev = previous
                    .map(|p| serde_json::to_string(&p))
                    .transpose()
                    .map_err(|e| AppError::internal(format!("database write failed: {e}")))?;
                let mut event = db.commit(&mut object, written, prev, selection_changed)?;
                event.body_fields = Some(body_fields);
                event.prev_fields = prev_fields;
                // Sent while the lock is held so live events leave in revision order. A send
                // fails only when nobody watches, which is fine.
                let _ = store.inner.live.send(Arc::new(event));
                let compact = db.bounds.exceeded(db.history_size());
                Ok((object, written, extra, compact))
            })
            .await?;
        if compact {
            self.compact().await;
        }
        Ok((object, written, extra))
    }

    /// Compacts the history back under its bounds, one batch per transaction, taking the
    /// lock anew for each so other requests go between batches. The write that asked is
    /// already committed, so a failure here is logged, not answered; the next write that
    /// finds the history over its bounds tries again.
    async fn compact(&self) {
        loop {
            match self.blocking(|_, db| db.compact_batch()).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Task;

    type Decision = Result<(Change<Task>, ()), AppError>;

    /// Bounds on the number of events only.
    fn events(n: u64) -> HistoryBounds {
        HistoryBounds {
            events: n,
            bytes: u64::MAX / 2,
        }
    }

    fn put(task: Task) -> impl FnOnce(Option<Task>, &dyn crate::admission::Stored) -> Decision {
        move |_, _| Ok((Change::Put(task), ()))
    }

    #[tokio::test]
    async fn writes_take_consecutive_revisions_and_land_in_history() {
        let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
        let (a, w, ()) = store
            .write("a".into(), false, put(Task::test("a")))
            .await
            .unwrap();
        assert_eq!(
            (a.metadata.resource_version, w),
            (Some(1), Written::Created)
        );
        let (a, w, ()) = store.write("a".into(), false, put(a)).await.unwrap();
        assert_eq!(
            (a.metadata.resource_version, w),
            (Some(2), Written::Updated)
        );
        let (events, reached) = store.history("Task", 0, None, 10).await.unwrap();
        assert_eq!(reached, 2);
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, [EventType::Added, EventType::Modified]);
    }

    #[tokio::test]
    async fn a_resume_from_a_revision_the_store_never_reached_is_gone() {
        let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
        store
            .write("a".into(), false, put(Task::test("a")))
            .await
            .unwrap();
        assert!(store.subscribe_after(1).await.is_ok());
        let e = store.subscribe_after(5).await.err().unwrap();
        assert_eq!(e.0.code, 410);
        assert!(e.0.message.contains("resourceVersion 5 is newer"), "{e}");
    }

    #[tokio::test]
    async fn a_file_store_keeps_its_id_when_durable_and_changes_it_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let id = |sync| {
            Store::open(Some(&path), sync, events(100))
                .unwrap()
                .id()
                .to_string()
        };
        let first = id(SyncMode::Full);
        assert_eq!(id(SyncMode::Full), first);
        let normal = id(SyncMode::Normal);
        assert_ne!(normal, first);
        assert_eq!(id(SyncMode::Full), normal);
    }

    #[tokio::test]
    async fn compaction_makes_old_versions_gone() {
        let store = Store::open(None, SyncMode::Normal, events(3)).unwrap();
        for i in 0..10 {
            let name = format!("t{i}");
            store
                .write(name.clone(), false, put(Task::test(&name)))
                .await
                .unwrap();
        }
        let e = store.history("Task", 2, None, 10).await.unwrap_err();
        assert_eq!(e.0.code, 410);
        let (events, _) = store.history("Task", 7, None, 10).await.unwrap();
        assert_eq!(events.len(), 3);
    }

    #[tokio::test]
    async fn the_history_stays_under_its_byte_bound_and_watchers_behind_it_are_gone() {
        // The case that made the bound: label patches on one large task, each of which
        // keeps the whole task twice (as written, and as it was) in the history; 100 of
        // them on a 900 KB task once grew the database by 180 MB.
        let cap = 20 * 1024 * 1024;
        let bounds = HistoryBounds {
            events: 100_000,
            bytes: cap,
        };
        let store = Store::open(None, SyncMode::Normal, bounds).unwrap();
        let big = Task::test("big").command(&[&"x".repeat(900_000)]);
        let (mut task, _, ()) = store.write("big".into(), false, put(big)).await.unwrap();
        for i in 0..100 {
            task.metadata.labels.insert("round".into(), i.to_string());
            (task, _, ()) = store.write("big".into(), false, put(task)).await.unwrap();
            let counted = store.lock().history_bytes;
            assert!(counted <= cap, "after patch {i}: {counted} bytes kept");
        }
        let (kept, counted) = {
            let db = store.lock();
            (db::history_bytes(&db.conn).unwrap(), db.history_bytes)
        };
        assert_eq!(kept, counted, "the running total is the history's size");
        assert!(kept > cap / 2, "compaction went too far: {kept} bytes kept");
        let used = store.with_conn(|c| {
            let pragma = |name: &str| -> u64 {
                c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                    .unwrap() as u64
            };
            (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
        });
        assert!(
            used <= cap + compaction::BATCH_BYTES,
            "the database holds {used} bytes"
        );
        // A watcher (or a continue token) from before the compaction point must list again.
        let e = store.history("Task", 1, None, 10).await.unwrap_err();
        assert_eq!(e.0.code, 410, "{e}");
        let e = store.subscribe_after(1).await.err().unwrap();
        assert_eq!(e.0.code, 410, "{e}");
        // One at the compaction point still reads every event after it.
        let compacted = store.lock().compacted;
        let (events, reached) = store.history("Task", compacted, None, 200).await.unwrap();
        assert_eq!(reached, 101);
        assert_eq!(events.len() as u64, 101 - compacted);
    }

    #[tokio::test]
    async fn the_history_size_is_counted_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(Some(&path), SyncMode::Full, events(100)).unwrap();
        let (a, ..) = store
            .write("a".into(), false, put(Task::test("a")))
            .await
            .unwrap();
        store.write("a".into(), false, put(a)).await.unwrap();
        let counted = store.lock().history_bytes;
        assert!(counted > 0);
        drop(store);
        let reopened = Store::open(Some(&path), SyncMode::Full, events(100)).unwrap();
        assert_eq!(reopened.lock().history_bytes, counted);
    }

    #[tokio::test]
    async fn a_failed_write_leaves_nothing_behind() {
        let store = Store::open(None, SyncMode::Normal, events(100)).unwrap();
        store
            .write("a".into(), false, put(Task::test("a")))
            .await
            .unwrap();
        // Simulate a full disk: forbid the database from growing.
        store.with_conn(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            c.pragma_update(None, "max_page_count", pages).unwrap();
        });
        let big = Task::test("b").command(&[&"x".repeat(200_000)]);
        let e = store.write("b".into(), false, put(big)).await.unwrap_err();
        assert_eq!(e.0.code, 500);
        assert!(e.0.message.starts_with("database write failed"), "{e}");
        assert_eq!(store.revision(), 1);
        assert!(store.get::<Task>("b".into()).await.unwrap().is_none());
        let (events, _) = store.history("Task", 0, None, 10).await.unwrap();
        assert_eq!(events.len(), 1);
    }
}
