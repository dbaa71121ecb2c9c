//! The SQL behind credentials: stored tokens (a hash of each secret, never the secret) and
//! the server's own keys. These tables have no revisions and no watch history: tokens are
//! not objects users watch, and their secrets must never reach the history. The calls are
//! blocking (they take the write connection between the writer's batches): call them from
//! `spawn_blocking` on a runtime.

use rusqlite::{OptionalExtension, params};

use kohakuriver_api::Timestamp;
use kohakuriver_api::auth::{Role, TokenInfo};

use super::Store;
use super::db::{read_failed, write_failed};
use crate::error::AppError;

/// A stored token: its description and the SHA-256 of its secret.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// What `token list` shows.
    pub info: TokenInfo,
    /// SHA-256 of the secret part.
    pub hash: [u8; 32],
}

fn parse_time(text: Option<String>) -> Option<Timestamp> {
    text.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn time_text(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_rfc3339())
}

impl Store {
    /// Every stored token.
    pub fn load_tokens(&self) -> Result<Vec<TokenRecord>, AppError> {
        let db = self.lock();
        {
            let mut stmt = db
                .conn
                .prepare(
                    "SELECT id, name, role, hash, created_at, expires_at, last_used_at, uses_left FROM tokens",
                )
                .map_err(read_failed)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, Option<i64>>(7)?,
                    ))
                })
                .map_err(read_failed)?;
            let mut records = Vec::new();
            for row in rows {
                let (id, name, role, hash, created, expires, used, uses) =
                    row.map_err(read_failed)?;
                let role = Role::parse(&role).map_err(|e| {
                    AppError::internal(format!("stored token {id} is unreadable: {e}"))
                })?;
                let hash: [u8; 32] = hash.try_into().map_err(|_| {
                    AppError::internal(format!("stored token {id} has a malformed hash"))
                })?;
                records.push(TokenRecord {
                    info: TokenInfo {
                        id,
                        name,
                        role,
                        created_at: parse_time(Some(created)).unwrap_or_default(),
                        expires_at: parse_time(expires),
                        last_used_at: parse_time(used),
                        uses_left: uses.map(|u| u.clamp(0, u32::MAX as i64) as u32),
                    },
                    hash,
                });
            }
            Ok(records)
        }
    }

    /// Stores a token, or replaces the one with the same id.
    pub fn put_token(&self, record: &TokenRecord) -> Result<(), AppError> {
        let db = self.lock();
        {
            let i = &record.info;
            db.conn
                .execute(
                    "INSERT OR REPLACE INTO tokens (id, name, role, hash, created_at, expires_at, last_used_at, uses_left)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        i.id,
                        i.name,
                        i.role.as_str(),
                        record.hash.to_vec(),
                        i.created_at.to_rfc3339(),
                        time_text(i.expires_at),
                        time_text(i.last_used_at),
                        i.uses_left.map(i64::from),
                    ],
                )
                .map_err(write_failed)?;
            Ok(())
        }
    }

    /// Removes a token; true when it existed.
    pub fn delete_token(&self, id: &str) -> Result<bool, AppError> {
        let db = self.lock();
        {
            let n = db
                .conn
                .execute("DELETE FROM tokens WHERE id = ?1", [id])
                .map_err(write_failed)?;
            Ok(n > 0)
        }
    }

    /// Records when tokens were last used.
    pub fn touch_tokens(&self, used: &[(String, Timestamp)]) -> Result<(), AppError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut db = self.lock();
        {
            let tx = db.conn.transaction().map_err(write_failed)?;
            for (id, at) in used {
                tx.execute(
                    "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2",
                    params![at.to_rfc3339(), id],
                )
                .map_err(write_failed)?;
            }
            tx.commit().map_err(write_failed)
        }
    }

    /// The server's key named `key`, made by `make` and stored on first use.
    pub fn secret(&self, key: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, AppError> {
        let db = self.lock();
        let stored: Option<Vec<u8>> = db
            .conn
            .query_row("SELECT value FROM secrets WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(read_failed)?;
        if let Some(value) = stored {
            return Ok(value);
        }
        let value = make();
        db.conn
            .execute(
                "INSERT INTO secrets (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(write_failed)?;
        Ok(value)
    }
}
