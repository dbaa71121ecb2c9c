//! `GET /backup` (admin): a consistent copy of the whole store, made while the server goes
//! on serving writes.
//!
//! The copy is written with SQLite's `VACUUM INTO` to a temporary file beside the database
//! (same disk, and a data dir only the server's user reads), opened, unlinked at once so no
//! copy of the token hashes and keys is left behind whatever happens to the request, and
//! streamed from the open handle.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kohakuriver_api::auth::{Target, Verb};

use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;

/// `GET /apis/kohakuriver/v1/backup`: the store as an SQLite file
/// (`application/vnd.sqlite3`), for `kohakuriver server --restore`.
pub async fn backup(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.allow(Verb::Backup, &Target::Store, &state.config().auth.policy)?;
    let temp = temp_path(state.config().db_path.as_deref());
    tracing::info!(by = %caller.identity(), to = %temp.display(), "backing up the store");
    let made = state.store().backup(temp.clone()).await;
    let opened = match made {
        Ok(()) => tokio::fs::File::open(&temp).await.map_err(|e| {
            AppError::internal(format!("cannot open the backup {}: {e}", temp.display()))
        }),
        Err(e) => Err(e),
    };
    // Unlinked whether or not it worked; an open handle keeps the data readable.
    let _ = tokio::fs::remove_file(&temp).await;
    let file = opened?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"kohakuriver-backup.db\"",
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.into());
    }
    Ok(response)
}

/// A fresh file name beside the database (in the system's temp dir for an in-memory store).
fn temp_path(db: Option<&std::path::Path>) -> PathBuf {
    let dir = db
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!(
        ".kohakuriver-backup-{}.tmp",
        uuid::Uuid::new_v4().simple()
    ))
}
