//! The SQL behind the write side: the writer's connection and the counters it keeps,
//! staging one write (object and history event) inside the writer's transaction, and
//! compacting the history a batch at a time.

use rusqlite::{Connection, params};

use super::Written;
use super::compaction::{BATCH_ROWS, HistoryBounds, HistorySize};
use super::event::{Event, EventType};
use crate::admission::Served;
use crate::error::AppError;

/// The writer's connection and the counters mirrored from the `meta` table, as of the last
/// commit.
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
    /// The metrics fed by every commit (`metrics::Recorder`).
    pub(super) recorder: std::sync::Arc<crate::metrics::Recorder>,
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

impl Db {
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

    /// Writes the object (or removes it) at revision `rv` and records its event, inside the
    /// writer's open transaction; the caller moves the counters once that commits. Answers
    /// the event to broadcast then.
    pub(super) fn stage<R: Served>(
        conn: &Connection,
        rv: u64,
        object: &mut R,
        written: Written,
        prev: Option<String>,
        selection_changed: bool,
    ) -> Result<Event, AppError> {
        object.metadata_mut().resource_version = Some(rv);
        let body = serde_json::to_string(object).map_err(write_failed)?;
        let (node, phase) = object.index_columns();
        let name = object.name().to_string();
        let event_type = match written {
            Written::Created => EventType::Added,
            Written::Removed => EventType::Deleted,
            _ => EventType::Modified,
        };
        if written == Written::Removed {
            conn.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND name = ?2")
                .and_then(|mut s| s.execute(params![R::KIND, name]))
                .map_err(write_failed)?;
        } else {
            conn.prepare_cached(
                "INSERT INTO objects (kind, name, rv, node, phase, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, name) DO UPDATE SET rv = excluded.rv, node = excluded.node,
                 phase = excluded.phase, body = excluded.body",
            )
            .and_then(|mut s| s.execute(params![R::KIND, name, rv as i64, node, phase, body]))
            .map_err(write_failed)?;
        }
        conn.prepare_cached(
            "INSERT INTO events (rv, kind, name, type, body, prev) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                rv as i64,
                R::KIND,
                name,
                event_type.as_str(),
                body,
                prev
            ])
        })
        .map_err(write_failed)?;
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
