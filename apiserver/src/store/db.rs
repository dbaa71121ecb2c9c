//! The SQL behind the store: reading objects, committing one write (object, history event,
//! revision counter) in a single transaction, and compacting the history a batch at a time.

use rusqlite::{Connection, OptionalExtension, params};

use kohakuriver_api::{Node, Resource, Task, TaskPhase};

use super::Written;
use super::compaction::{BATCH_ROWS, HistoryBounds, HistorySize};
use super::event::{Event, EventType};
use crate::admission::{Served, Stored};
use crate::error::AppError;
use crate::pages;
use kohakuriver_api::StatusReason;

/// The connection and the counters mirrored from the `meta` table.
pub(super) struct Db {
    pub(super) conn: Connection,
    /// The last committed revision.
    pub(super) revision: u64,
    /// Events with `rv <= compacted` were dropped from the history.
    pub(super) compacted: u64,
    /// How much history to keep.
    pub(super) bounds: HistoryBounds,
    /// The bytes of bodies the history keeps (`body` and `prev` of every event), counted
    /// at open and kept up to date by every commit and compaction.
    pub(super) history_bytes: u64,
}

/// The bytes an event's bodies take, as SQL over the `events` table.
const EVENT_BYTES: &str = "length(CAST(body AS BLOB)) + COALESCE(length(CAST(prev AS BLOB)), 0)";

/// The bytes of bodies the history table holds (read once, at open).
pub(super) fn history_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        &format!("SELECT COALESCE(SUM({EVENT_BYTES}), 0) FROM events"),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

pub(super) fn read_failed(e: impl std::fmt::Display) -> AppError {
    AppError::internal(format!("database read failed: {e}"))
}

pub(super) fn write_failed(e: impl std::fmt::Display) -> AppError {
    AppError::internal(format!("database write failed: {e}"))
}

fn first_column(row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

fn parse_stored<R: Served>(body: &str) -> Result<R, AppError> {
    serde_json::from_str(body)
        .map_err(|e| AppError::internal(format!("stored {} is unreadable: {e}", R::SINGULAR)))
}

/// The phases in which a task no longer holds its allocation.
const TERMINAL: [TaskPhase; 4] = [
    TaskPhase::Succeeded,
    TaskPhase::Failed,
    TaskPhase::Killed,
    TaskPhase::Lost,
];

impl Stored for Db {
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
}

impl Db {
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

    /// One page of the list of a kind as of `revision`, after the name `after`: up to
    /// `limit` (0: all) objects that `matches`, narrowed by `node` or `phase` through the
    /// indexes, with how many remain after the page when `count` asks. The caller checked
    /// that the history reaches back to `revision`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn page(
        &self,
        kind: &str,
        node: Option<&str>,
        phase: Option<&str>,
        revision: u64,
        after: &str,
        limit: usize,
        matches: &dyn Fn(&str) -> bool,
        count: bool,
    ) -> Result<(pages::Page, Option<u64>), AppError> {
        let restored = if revision < self.revision {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT name, type, prev FROM events WHERE rv > ?1 AND kind = ?2 ORDER BY rv",
                )
                .map_err(read_failed)?;
            let later = stmt
                .query_map(params![revision as i64, kind], |row| {
                    Ok(pages::Later {
                        name: row.get(0)?,
                        event_type: EventType::parse(&row.get::<_, String>(1)?),
                        prev: row.get(2)?,
                    })
                })
                .map_err(read_failed)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_failed)?;
            pages::restore(later, after).map_err(|name| {
                AppError::new(
                    StatusReason::Expired,
                    format!(
                        "the history kept no state of {name} as of resourceVersion {revision}; list again from the start without continue"
                    ),
                )
            })?
        } else {
            Default::default()
        };
        let restored_names: Vec<String> = restored
            .iter()
            .filter(|(_, state)| state.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let (sql, arg) = match (node, phase) {
            (Some(node), _) => (
                "SELECT name, body FROM objects INDEXED BY objects_by_node WHERE kind = ?1 AND node = ?4 AND name > ?2 AND rv <= ?3 ORDER BY name",
                Some(node),
            ),
            (None, Some(phase)) => (
                "SELECT name, body FROM objects INDEXED BY objects_by_phase WHERE kind = ?1 AND phase = ?4 AND name > ?2 AND rv <= ?3 ORDER BY name",
                Some(phase),
            ),
            (None, None) => (
                "SELECT name, body FROM objects WHERE kind = ?1 AND name > ?2 AND rv <= ?3 ORDER BY name",
                None,
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(read_failed)?;
        let pair =
            |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
        let rows = match arg {
            Some(arg) => stmt.query_map(params![kind, after, revision as i64, arg], pair),
            None => stmt.query_map(params![kind, after, revision as i64], pair),
        }
        .map_err(read_failed)?;
        let page =
            pages::take(pages::as_of(rows, restored), limit, matches).map_err(read_failed)?;
        let remaining = match (&page.more_after, count) {
            (Some(last), true) => {
                let unchanged: i64 = self
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM objects WHERE kind = ?1 AND name > ?2 AND rv <= ?3",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![kind, last, revision as i64], |r| r.get(0))
                    })
                    .map_err(read_failed)?;
                let restored = restored_names.iter().filter(|n| *n > last).count();
                Some(unchanged as u64 + restored as u64)
            }
            _ => None,
        };
        Ok((page, remaining))
    }

    pub(super) fn check_retained(&self, after: u64) -> Result<(), AppError> {
        if after < self.compacted {
            Err(AppError::gone(after, self.compacted))
        } else {
            Ok(())
        }
    }

    /// How large the history is.
    pub(super) fn history_size(&self) -> HistorySize {
        HistorySize {
            events: self.revision - self.compacted,
            bytes: self.history_bytes,
        }
    }

    /// Drops the oldest events, at most one batch, in one transaction, when the history is
    /// over its bounds; answers whether it dropped any (and so whether to go on).
    pub(super) fn compact_batch(&mut self) -> Result<bool, AppError> {
        let size = self.history_size();
        let oldest = {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT rv, {EVENT_BYTES} FROM events WHERE rv > ?1 ORDER BY rv LIMIT ?2"
                ))
                .map_err(read_failed)?;
            stmt.query_map(params![self.compacted as i64, BATCH_ROWS as i64], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })
            .map_err(read_failed)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_failed)?
        };
        let Some(cutoff) = self.bounds.cutoff(size, &oldest) else {
            return Ok(false);
        };
        let dropped: u64 = oldest
            .iter()
            .take_while(|(rv, _)| *rv <= cutoff)
            .map(|(_, len)| len)
            .sum();
        let tx = self.conn.transaction().map_err(write_failed)?;
        tx.prepare_cached("DELETE FROM events WHERE rv <= ?1")
            .and_then(|mut s| s.execute([cutoff as i64]))
            .map_err(write_failed)?;
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'compacted'")
            .and_then(|mut s| s.execute([cutoff as i64]))
            .map_err(write_failed)?;
        tx.commit().map_err(write_failed)?;
        self.compacted = cutoff;
        self.history_bytes = self.history_bytes.saturating_sub(dropped);
        Ok(true)
    }

    /// Writes the object (or removes it) with the next revision and records the event, in
    /// one transaction. The counters move only after commit.
    pub(super) fn commit<R: Served>(
        &mut self,
        object: &mut R,
        written: Written,
        prev: Option<String>,
        selection_changed: bool,
    ) -> Result<Event, AppError> {
        let rv = self.revision + 1;
        object.metadata_mut().resource_version = Some(rv);
        let body = serde_json::to_string(object).map_err(write_failed)?;
        let (node, phase) = object.index_columns();
        let name = object.name().to_string();
        let event_type = match written {
            Written::Created => EventType::Added,
            Written::Removed => EventType::Deleted,
            _ => EventType::Modified,
        };
        let tx = self.conn.transaction().map_err(write_failed)?;
        {
            if written == Written::Removed {
                tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND name = ?2")
                    .and_then(|mut s| s.execute(params![R::KIND, name]))
                    .map_err(write_failed)?;
            } else {
                tx.prepare_cached(
                    "INSERT INTO objects (kind, name, rv, node, phase, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (kind, name) DO UPDATE SET rv = excluded.rv, node = excluded.node,
                     phase = excluded.phase, body = excluded.body",
                )
                .and_then(|mut s| s.execute(params![R::KIND, name, rv as i64, node, phase, body]))
                .map_err(write_failed)?;
            }
            tx.prepare_cached(
                "INSERT INTO events (rv, kind, name, type, body, prev) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![rv as i64, R::KIND, name, event_type.as_str(), body, prev])
            })
            .map_err(write_failed)?;
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'revision'")
                .and_then(|mut s| s.execute([rv as i64]))
                .map_err(write_failed)?;
        }
        tx.commit().map_err(write_failed)?;
        self.revision = rv;
        self.history_bytes += (body.len() + prev.as_ref().map_or(0, String::len)) as u64;
        Ok(Event {
            rv,
            kind: R::KIND.to_string(),
            event_type,
            body,
            prev,
            selection_changed,
            body_fields: None,
            prev_fields: None,
        })
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
