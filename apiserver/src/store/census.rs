//! The metrics' census as the store holds it when it opens: tasks per phase, since when each
//! Pending task waits, and each node's last heartbeat. Read once, before the writer starts,
//! so every later commit is counted on top of it exactly once (see `metrics::Recorder`).

use kohakuriver_api::{Node, Resource, Task, Timestamp};
use rusqlite::Connection;

use crate::metrics::{Census, pending_since};

fn timestamp(text: Option<String>) -> Option<Timestamp> {
    text.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Counts the stored tasks and nodes; `now` stands for nodes that never sent a heartbeat.
pub(super) fn read(conn: &Connection, now: Timestamp) -> rusqlite::Result<Census> {
    let mut census = Census::default();
    // Only Pending tasks' bodies are read (for their times), through the phase index.
    let mut phases = conn.prepare(
        "SELECT phase, COUNT(*) FROM objects WHERE kind = ?1 AND phase != 'Pending' GROUP BY phase",
    )?;
    let mut rows = phases.query([Task::KIND])?;
    while let Some(row) = rows.next()? {
        let phase: String = row.get(0)?;
        let count: i64 = row.get(1)?;
        census.seed_phase(&phase, count as u64);
    }
    let mut pending = conn.prepare(
        "SELECT name, json_extract(body, '$.metadata.creationTimestamp'),
                json_extract(body, '$.status.finishedAt')
         FROM objects WHERE kind = ?1 AND phase = 'Pending'",
    )?;
    let mut rows = pending.query([Task::KIND])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let since = pending_since(timestamp(row.get(1)?), timestamp(row.get(2)?));
        census.seed_pending(&name, since.unwrap_or(now));
    }
    let mut nodes = conn.prepare(
        "SELECT name, json_extract(body, '$.status.lastHeartbeat') FROM objects WHERE kind = ?1",
    )?;
    let mut rows = nodes.query([Node::KIND])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let heartbeat = timestamp(row.get(1)?);
        // Seen when it was sent, on the agent's clock, until this server sees the next.
        census.seed_node(&name, heartbeat, heartbeat.map_or(now, |h| h.min(now)));
    }
    Ok(census)
}
