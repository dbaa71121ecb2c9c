//! Errors: `AppError`, what a request handler fails with (answered as the one `api::Status`
//! JSON shape with the HTTP code of its reason), and `Error`, what starting the server fails
//! with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kohakuriver_api::{Cause, Status, StatusReason};

/// A failed request, answered as a `Status` object with the matching HTTP code. Boxed so
/// `Result<_, AppError>` stays small on the happy path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct AppError(pub Box<Status>);

impl AppError {
    /// A failure with this reason and message.
    pub fn new(reason: StatusReason, message: impl Into<String>) -> AppError {
        AppError(Box::new(Status::new(reason, message)))
    }

    /// 401 Unauthorized: no credential, or an unknown, expired or revoked one.
    pub fn unauthorized(message: impl Into<String>) -> AppError {
        AppError::new(StatusReason::Unauthorized, message)
    }

    /// 403 Forbidden: the identity may not do this; the message names who and what.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusReason::Forbidden, message)
    }

    /// 400: the request could not be read.
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(StatusReason::BadRequest, message)
    }

    /// 404: no such object.
    pub fn not_found(kind: &str, name: &str) -> AppError {
        AppError(Box::new(Status::not_found(kind, name)))
    }

    /// 409: an object with this name exists.
    pub fn already_exists(kind: &str, name: &str) -> AppError {
        AppError(Box::new(
            Status::new(
                StatusReason::AlreadyExists,
                format!("{} {name:?} already exists", kind.to_ascii_lowercase()),
            )
            .with_object(kind, name),
        ))
    }

    /// 409: the writer read an older version than the stored one.
    pub fn conflict(kind: &str, name: &str, sent: u64, stored: u64) -> AppError {
        AppError(Box::new(
            Status::new(
                StatusReason::Conflict,
                format!(
                    "{} {name:?} was modified: the request carries resourceVersion {sent} but the stored object is at {stored}; read it again and retry",
                    kind.to_ascii_lowercase()
                ),
            )
            .with_object(kind, name),
        ))
    }

    /// 409: a status write about an attempt that is not the object's current one (see
    /// `kohakuriver_api::precondition`); `message` names the current one.
    pub fn stale(kind: &str, name: &str, message: impl Into<String>) -> AppError {
        AppError(Box::new(
            Status::new(StatusReason::Conflict, message).with_object(kind, name),
        ))
    }

    /// 409: a task's new binding would share cores, GPUs or memory with another task.
    pub fn binding_conflict(name: &str, why: &str) -> AppError {
        AppError(Box::new(
            Status::new(
                StatusReason::Conflict,
                format!("task {name:?} cannot be bound: {why}; schedule it again"),
            )
            .with_object("Task", name),
        ))
    }

    /// 410: the asked watch history is no longer kept.
    pub fn gone(asked: u64, oldest: u64) -> AppError {
        AppError::new(
            StatusReason::Gone,
            format!(
                "resourceVersion {asked} is too old: the watch history starts after {oldest}; list again and watch from the list's resourceVersion"
            ),
        )
    }

    /// 422: the object failed validation.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> AppError {
        AppError(Box::new(Status::invalid(kind, name, causes)))
    }

    /// 500: the server failed (a database error, say).
    pub fn internal(message: impl Into<String>) -> AppError {
        AppError::new(StatusReason::InternalError, message)
    }

    /// 429: a limit is reached; answered with `Retry-After: {retry_after_seconds}`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u32) -> AppError {
        AppError(Box::new(Status::too_many_requests(
            message,
            retry_after_seconds,
        )))
    }

    /// 503: something the server relies on is not available.
    pub fn unavailable(message: impl Into<String>) -> AppError {
        AppError::new(StatusReason::ServiceUnavailable, message)
    }

    /// The HTTP code to answer with.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Status> for AppError {
    fn from(status: Status) -> AppError {
        AppError(Box::new(status))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.0.code >= 500 {
            tracing::warn!(code = self.0.code, message = %self.0.message, "request failed");
        }
        let too_large = self.0.code == 413;
        let retry_after = self.0.details.as_ref().and_then(|d| d.retry_after_seconds);
        let mut response = (self.status_code(), axum::Json(*self.0)).into_response();
        if too_large {
            // The unread rest of the body is still on the connection; closing it is the only
            // way a keep-alive client does not take that rest for the next answer.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened, migrated or read.
    #[error("database error: {context}")]
    Database {
        /// What the server was doing.
        context: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database holds something this server cannot read.
    #[error("database is corrupt or from a newer server: {0}")]
    Corrupt(String),
    /// Serving HTTP failed.
    #[error("http server failed: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking database task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// A start-up step answered with an API error.
    #[error("{}", .0.0.message)]
    Api(#[from] AppError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_reasons() {
        assert_eq!(AppError::gone(1, 5).status_code(), StatusCode::GONE);
        assert_eq!(
            AppError::conflict("Task", "a", 1, 2).status_code(),
            StatusCode::CONFLICT
        );
        let e = AppError::conflict("Task", "a", 1, 2);
        assert!(e.0.message.contains("resourceVersion 1"), "{e}");
    }
}
