//! The SQLite schema and its migrations, versioned in code through `PRAGMA user_version`,
//! plus the connection pragmas the store relies on.
//!
//! Each migration runs once, in order, inside a transaction that also bumps
//! `user_version`, so a crash mid-migration leaves the previous version intact.

use rusqlite::Connection;

use crate::error::Error;

/// How hard SQLite works to keep a commit on a power cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous=NORMAL`: in WAL mode a commit survives a process crash (kill -9); only an
    /// OS crash or power cut may lose the last commits. Faster. The store takes a new id at
    /// every open in this mode, since revisions lost on a power cut would otherwise be
    /// reused (see `Store::open`).
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it is acknowledged; survives power
    /// cuts. The default.
    #[default]
    Full,
}

impl SyncMode {
    /// The value of `PRAGMA synchronous` for this mode.
    pub fn pragma(self) -> &'static str {
        match self {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        }
    }
}

/// The migrations, in order; migration `i` brings the database to `user_version = i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: objects, the watch history and the revision counter.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
     CREATE TABLE objects (
         kind  TEXT NOT NULL,
         name  TEXT NOT NULL,
         rv    INTEGER NOT NULL,
         node  TEXT NOT NULL DEFAULT '',
         phase TEXT NOT NULL DEFAULT '',
         body  TEXT NOT NULL,
         PRIMARY KEY (kind, name)
     ) WITHOUT ROWID;
     CREATE INDEX objects_by_node ON objects (kind, node);
     CREATE INDEX objects_by_phase ON objects (kind, phase);
     CREATE TABLE events (
         rv   INTEGER PRIMARY KEY,
         kind TEXT NOT NULL,
         name TEXT NOT NULL,
         type TEXT NOT NULL,
         body TEXT NOT NULL
     );",
    // 2: the previous state of a modified object, kept when its labels or selectable fields
    // changed, so a filtered watch can tell a watcher that an object left (or entered) its
    // selection.
    "ALTER TABLE events ADD COLUMN prev TEXT;",
    // 3: credentials. Only a hash of each token's secret is kept; `secrets` holds the
    // server's own keys (the one agent credentials are derived from).
    "CREATE TABLE tokens (
         id           TEXT PRIMARY KEY,
         name         TEXT NOT NULL,
         role         TEXT NOT NULL,
         hash         BLOB NOT NULL,
         created_at   TEXT NOT NULL,
         expires_at   TEXT,
         last_used_at TEXT,
         uses_left    INTEGER
     ) WITHOUT ROWID;
     CREATE TABLE secrets (
         key   TEXT PRIMARY KEY,
         value BLOB NOT NULL
     ) WITHOUT ROWID;",
    // 4: `metadata.resourceVersion` in stored bodies becomes a decimal string, as the wire
    // carries it (lists and watches splice stored bodies in unparsed). The `rv` columns stay
    // integers.
    "UPDATE objects SET body = json_set(body, '$.metadata.resourceVersion',
         CAST(json_extract(body, '$.metadata.resourceVersion') AS TEXT))
     WHERE json_type(body, '$.metadata.resourceVersion') = 'integer';
     UPDATE events SET body = json_set(body, '$.metadata.resourceVersion',
         CAST(json_extract(body, '$.metadata.resourceVersion') AS TEXT))
     WHERE json_type(body, '$.metadata.resourceVersion') = 'integer';
     UPDATE events SET prev = json_set(prev, '$.metadata.resourceVersion',
         CAST(json_extract(prev, '$.metadata.resourceVersion') AS TEXT))
     WHERE prev IS NOT NULL AND json_type(prev, '$.metadata.resourceVersion') = 'integer';",
    // 5: the store's identity, a random id made when the database is (or, for an older
    // database, when it migrates). Lists carry it and a watch may name it, so a watcher
    // never resumes against another store (a restored backup, a replaced file) by
    // revision number alone.
    "INSERT INTO secrets (key, value) VALUES ('store_id', lower(hex(randomblob(16))));",
];

/// Gives the store a new random id: after a restore, or when revisions may have been lost.
pub fn new_store_id(conn: &Connection) -> Result<String, Error> {
    conn.query_row(
        "INSERT INTO secrets (key, value) VALUES ('store_id', lower(hex(randomblob(16))))
         ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING value",
        [],
        |row| row.get(0),
    )
    .map_err(db("making a new store id"))
}

/// The store's id.
pub fn store_id(conn: &Connection) -> Result<String, Error> {
    conn.query_row(
        "SELECT value FROM secrets WHERE key = 'store_id'",
        [],
        |row| row.get(0),
    )
    .map_err(db("reading the store id"))
}

/// The schema version this server writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn db(context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database {
        context: context.to_string(),
        source,
    }
}

/// Sets the pragmas every connection needs: WAL, the sync mode, a busy timeout and
/// foreign keys.
pub fn configure(conn: &Connection, sync: SyncMode) -> Result<(), Error> {
    // journal_mode answers with the mode in force; an in-memory database stays "memory".
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(db("setting journal_mode=WAL"))?;
    tracing::debug!(journal_mode = %mode, "sqlite journal mode");
    let sync = sync.pragma();
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync};
         PRAGMA busy_timeout=5000;
         PRAGMA foreign_keys=ON;"
    ))
    .map_err(db("setting pragmas"))?;
    Ok(())
}

/// Brings the schema to `SCHEMA_VERSION`; refuses a database from a newer server.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db("reading user_version"))?;
    if current > SCHEMA_VERSION {
        return Err(Error::Corrupt(format!(
            "schema version {current} is newer than {SCHEMA_VERSION}, the newest this server knows; run a newer server"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction().map_err(db("starting a migration"))?;
        tx.execute_batch(sql).map_err(db("running a migration"))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(db("setting user_version"))?;
        tx.commit().map_err(db("committing a migration"))?;
        tracing::info!(version, "migrated database schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn, SyncMode::Normal).unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(Error::Corrupt(_))));
    }

    #[test]
    fn the_sync_mode_reaches_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, want) in [(SyncMode::Full, 2), (SyncMode::Normal, 1)] {
            let conn = Connection::open(dir.path().join("db")).unwrap();
            configure(&conn, mode).unwrap();
            let got: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, want, "{mode:?}");
        }
        assert_eq!(SyncMode::default(), SyncMode::Full);
    }

    #[test]
    fn a_store_has_an_id_until_it_gets_a_new_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let id = store_id(&conn).unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(store_id(&conn).unwrap(), id);
        let new = new_store_id(&conn).unwrap();
        assert_ne!(new, id);
        assert_eq!(store_id(&conn).unwrap(), new);
    }

    #[test]
    fn stored_resource_versions_become_strings() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&MIGRATIONS[..3].join(";\n")).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        let old = r#"{"apiVersion":"kohakuriver/v1","kind":"Task","metadata":{"name":"a","resourceVersion":7,"labels":{"x":"1"}},"spec":{"cores":2}}"#;
        conn.execute(
            "INSERT INTO objects (kind, name, rv, body) VALUES ('Task', 'a', 7, ?1)",
            [old],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (rv, kind, name, type, body, prev) VALUES (7, 'Task', 'a', 'MODIFIED', ?1, ?1)",
            [old],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let want = old.replace("\"resourceVersion\":7", "\"resourceVersion\":\"7\"");
        let body: String = conn
            .query_row("SELECT body FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(body, want);
        let (body, prev): (String, String) = conn
            .query_row("SELECT body, prev FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (body.as_str(), prev.as_str()),
            (want.as_str(), want.as_str())
        );
    }
}
