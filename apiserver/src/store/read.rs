//! Reading the store: a [`View`] is one consistent snapshot of the database (one read
//! transaction) together with the revision and compaction point it holds, and [`Readers`]
//! keeps the read-only connections that file-backed stores read through, beside the writer.
//!
//! Architecture Invariant: a view's revision and compaction point come from the `meta`
//! table inside the same transaction as everything else it reads, so a list's revision is
//! exactly the state it read, and a read that races a compaction sees either the events or
//! the moved compaction point (and answers 410), never a silent gap.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use kohakuriver_api::{Node, Resource, Task, TaskPhase};

use super::db::read_failed;
use super::event::{Event, EventType};
use crate::admission::{Served, Stored};
use crate::error::AppError;

/// How many idle read connections a file-backed store keeps open; busier moments open
/// more, which close when they are done.
const IDLE_READERS: usize = 4;

/// One snapshot of the store.
pub(super) struct View<'a> {
    pub(super) conn: &'a Connection,
    /// The last revision this view sees.
    pub(super) revision: u64,
    /// Events with `rv <= compacted` are gone from the history this view sees.
    pub(super) compacted: u64,
}

/// The phases in which a task no longer holds its allocation.
pub(super) const TERMINAL: [TaskPhase; 4] = [
    TaskPhase::Succeeded,
    TaskPhase::Failed,
    TaskPhase::Killed,
    TaskPhase::Lost,
];

fn first_column(row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

fn parse_stored<R: Served>(body: &str) -> Result<R, AppError> {
    serde_json::from_str(body)
        .map_err(|e| AppError::internal(format!("stored {} is unreadable: {e}", R::SINGULAR)))
}

/// Runs `f` on a snapshot read in one transaction on `conn`, rolled back afterwards (it
/// wrote nothing).
pub(super) fn read_in<T>(
    conn: &mut Connection,
    f: impl FnOnce(&View<'_>) -> Result<T, AppError>,
) -> Result<T, AppError> {
    let tx = conn.transaction().map_err(read_failed)?;
    // A deferred transaction takes its snapshot at its first read, which is this one.
    let (revision, compacted): (i64, i64) = tx
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE key = 'revision'),
                    (SELECT value FROM meta WHERE key = 'compacted')",
        )
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(read_failed)?;
    f(&View {
        conn: &tx,
        revision: revision as u64,
        compacted: compacted as u64,
    })
}

/// The read-only connections of a file-backed store. WAL lets each read its own snapshot
/// while the writer commits, so no read waits for a write and no write for a read.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database file at `path` (opened as they are needed).
    pub(super) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection, AppError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(read_failed)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(read_failed)?;
        Ok(conn)
    }

    /// Runs `f` on a fresh snapshot, on an idle connection or a new one. Blocking.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&View<'_>) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        // The lock only guards the list of idle connections, never a read.
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read_in(&mut conn, f);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }
}

impl Stored for View<'_> {
    fn tasks_on_node(&self, node: &str) -> Result<Vec<Task>, AppError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT body FROM objects INDEXED BY objects_by_node WHERE kind = ?1 AND node = ?2
                 AND phase NOT IN (?3, ?4, ?5, ?6) ORDER BY name",
            )
            .map_err(read_failed)?;
        let [a, b, c, d] = TERMINAL.map(TaskPhase::as_str);
        let rows = stmt
            .query_map(params![Task::KIND, node, a, b, c, d], first_column)
            .map_err(read_failed)?;
        rows.map(|body| parse_stored(&body.map_err(read_failed)?))
            .collect()
    }

    fn node(&self, name: &str) -> Result<Option<Node>, AppError> {
        self.load::<Node>(name)
    }

    fn task(&self, name: &str) -> Result<Option<Task>, AppError> {
        self.load::<Task>(name)
    }

    fn group_exists(&self, name: &str) -> Result<bool, AppError> {
        Ok(self.load::<kohakuriver_api::TaskGroup>(name)?.is_some())
    }
}

impl View<'_> {
    /// One object, if stored.
    pub(super) fn load<R: Served>(&self, name: &str) -> Result<Option<R>, AppError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM objects WHERE kind = ?1 AND name = ?2")
            .map_err(read_failed)?;
        let body: Option<String> = stmt
            .query_row(params![R::KIND, name], |row| row.get(0))
            .optional()
            .map_err(read_failed)?;
        body.map(|b| parse_stored(&b)).transpose()
    }

    /// The bodies of a kind ordered by name, narrowed by `node` or `phase`. The narrowed
    /// reads name their index: left to itself, SQLite walks the primary key to serve
    /// `ORDER BY name` and reads every object of the kind.
    pub(super) fn bodies(
        &self,
        kind: &str,
        node: Option<&str>,
        phase: Option<&str>,
    ) -> Result<Vec<String>, AppError> {
        let (sql, arg) = match (node, phase) {
            (Some(node), _) => (
                "SELECT body FROM objects INDEXED BY objects_by_node WHERE kind = ?1 AND node = ?2 ORDER BY name",
                Some(node),
            ),
            (None, Some(phase)) => (
                "SELECT body FROM objects INDEXED BY objects_by_phase WHERE kind = ?1 AND phase = ?2 ORDER BY name",
                Some(phase),
            ),
            (None, None) => (
                "SELECT body FROM objects WHERE kind = ?1 ORDER BY name",
                None,
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(read_failed)?;
        let rows = match arg {
            Some(arg) => stmt.query_map(params![kind, arg], first_column),
            None => stmt.query_map(params![kind], first_column),
        }
        .map_err(read_failed)?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(read_failed)
    }

    /// 410 Gone when events after `after` were compacted away.
    pub(super) fn check_retained(&self, after: u64) -> Result<(), AppError> {
        if after < self.compacted {
            Err(AppError::gone(after, self.compacted))
        } else {
            Ok(())
        }
    }

    /// Up to `limit` events of `kind` with `after < rv <= up_to`, oldest first, and the
    /// revision the read reached (`up_to`, or the last event's when `limit` cut it short);
    /// 410 Gone when events after `after` were compacted away.
    pub(super) fn history(
        &self,
        kind: &str,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), AppError> {
        self.check_retained(after)?;
        let mut stmt = self
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
        let events = rows.collect::<Result<Vec<_>, _>>().map_err(read_failed)?;
        let reached = if events.len() == limit {
            events.last().map_or(up_to, |e| e.rv)
        } else {
            up_to
        };
        Ok((events, reached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_phases_are_the_ones_that_release() {
        for phase in TaskPhase::ALL {
            assert_eq!(TERMINAL.contains(&phase), phase.is_terminal(), "{phase}");
        }
    }
}
