//! Starting a store from a backup (`kohakuriver server --restore FILE`).
//!
//! The backup is checked (an SQLite file with this server's schema, no newer, that passes
//! `PRAGMA quick_check`), copied beside the database under a temporary name, migrated,
//! given a new store id, and only then renamed into place, so a failed restore leaves no
//! half-written database behind. The new id makes every watcher of the store the backup
//! came from list again (410) instead of resuming by revision number.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::Error;
use crate::schema::{self, SCHEMA_VERSION};

fn failed(context: String) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Database { context, source }
}

/// Makes `db` (which must not exist) from the backup file `backup`; answers the restored
/// store's new id.
pub fn restore(backup: &Path, db: &Path) -> Result<String, Error> {
    if db.exists() {
        return Err(Error::Corrupt(format!(
            "{} already exists; a restore never overwrites a database",
            db.display()
        )));
    }
    let shown = backup.display();
    let source = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(failed(format!("opening the backup {shown}")))?;
    check_backup(&source).map_err(|why| {
        Error::Corrupt(format!(
            "{shown} is not a kohakuriver backup this server can restore: {why}"
        ))
    })?;
    let temp = temp_beside(db);
    let _ = std::fs::remove_file(&temp);
    let made = (|| {
        source
            .execute("VACUUM INTO ?1", [temp.to_string_lossy()])
            .map_err(failed(format!("copying {shown} to {}", temp.display())))?;
        let mut conn = Connection::open(&temp)
            .map_err(failed(format!("opening the copy {}", temp.display())))?;
        schema::migrate(&mut conn)?;
        let id = schema::new_store_id(&conn)?;
        conn.close()
            .map_err(|(_, e)| failed("closing the restored copy".into())(e))?;
        std::fs::rename(&temp, db).map_err(|e| {
            Error::Corrupt(format!(
                "cannot move the restored copy {} to {}: {e}",
                temp.display(),
                db.display()
            ))
        })?;
        Ok(id)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    made
}

/// Checks that `backup` is a store this server can restore; answers its revision.
pub fn check(backup: &Path) -> Result<u64, Error> {
    let shown = backup.display();
    let conn = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(failed(format!("opening the backup {shown}")))?;
    check_backup(&conn).map_err(|why| {
        Error::Corrupt(format!(
            "{shown} is not a kohakuriver backup this server can restore: {why}"
        ))
    })
}

/// Why `conn` cannot be restored, if it cannot; else its revision.
fn check_backup(conn: &Connection) -> Result<u64, String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version == 0 {
        return Err("it has no kohakuriver schema".into());
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "its schema version {version} is newer than {SCHEMA_VERSION}; restore it with a newer server"
        ));
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(format!("PRAGMA quick_check says {check}"));
    }
    let revision = conn
        .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| format!("no revision counter ({e})"))?;
    Ok(revision as u64)
}

fn temp_beside(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    db.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SyncMode;
    use crate::store::{Change, HistoryBounds, Store};
    use kohakuriver_api::Task;

    #[tokio::test]
    async fn a_backup_restores_with_its_objects_and_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let live = Store::open(
            Some(&dir.path().join("live.db")),
            SyncMode::Full,
            HistoryBounds::default(),
        )
        .unwrap();
        live.write("a".into(), false, |_, _| {
            Ok((Change::Put(Task::test("a")), ()))
        })
        .await
        .unwrap();
        let backup = dir.path().join("backup.db");
        live.backup(backup.clone()).await.unwrap();
        let restored = dir.path().join("restored.db");
        let id = restore(&backup, &restored).unwrap();
        assert_ne!(id, live.id());
        let store = Store::open(Some(&restored), SyncMode::Full, HistoryBounds::default()).unwrap();
        assert_eq!(store.id(), id);
        assert_eq!(store.revision(), 1);
        assert!(store.get::<Task>("a".into()).await.unwrap().is_some());
    }

    #[test]
    fn a_restore_refuses_an_existing_database_and_a_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, "").unwrap();
        let e = restore(&db, &db).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE x (y)")
            .unwrap();
        let e = restore(&other, &dir.path().join("new.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no kohakuriver schema"), "{e}");
        assert!(!dir.path().join("new.db").exists());
    }
}
