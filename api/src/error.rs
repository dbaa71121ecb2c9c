//! The one error shape the API server answers with (`kind: Status`), as in Kubernetes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::FieldError;

/// A field-level cause of an error: which field, and what is wrong with it.
pub type Cause = FieldError;

/// Why a request failed, as a word a program can switch on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusReason {
    /// 400: the body or a parameter could not be read.
    BadRequest,
    /// 401: no credential, or an unknown, expired or revoked one.
    Unauthorized,
    /// 403: a known identity that may not do this.
    Forbidden,
    /// 404: no such object or path.
    NotFound,
    /// 405: the path does not take this method.
    MethodNotAllowed,
    /// 409: an object with this name exists.
    AlreadyExists,
    /// 409: the object changed since the `resourceVersion` the writer read.
    Conflict,
    /// 410: the asked watch history is no longer kept; list again.
    Gone,
    /// 410: a paged list's `continue` token is older than the kept history; list again
    /// from the start.
    Expired,
    /// 413: the body is over the size limit.
    RequestEntityTooLarge,
    /// 415: the body is neither JSON nor YAML.
    UnsupportedMediaType,
    /// 429: a limit on this caller (its request rate, its open watches) or on the whole
    /// server is reached; retry after `details.retryAfterSeconds` (also the `Retry-After`
    /// header).
    TooManyRequests,
    /// 422: the object is well-formed but not valid.
    Invalid,
    /// 500: the server failed.
    InternalError,
    /// 502/503: something the server depends on (an agent, the disk) failed.
    ServiceUnavailable,
    /// 504: the operation took too long.
    Timeout,
}

impl StatusReason {
    /// The HTTP status code for this reason.
    pub fn code(self) -> u16 {
        match self {
            StatusReason::BadRequest => 400,
            StatusReason::Unauthorized => 401,
            StatusReason::Forbidden => 403,
            StatusReason::NotFound => 404,
            StatusReason::MethodNotAllowed => 405,
            StatusReason::AlreadyExists | StatusReason::Conflict => 409,
            StatusReason::Gone | StatusReason::Expired => 410,
            StatusReason::RequestEntityTooLarge => 413,
            StatusReason::UnsupportedMediaType => 415,
            StatusReason::TooManyRequests => 429,
            StatusReason::Invalid => 422,
            StatusReason::InternalError => 500,
            StatusReason::ServiceUnavailable => 503,
            StatusReason::Timeout => 504,
        }
    }
}

/// Details of a failed request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The object's name, when one was involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The object's kind, when one was involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Field-level causes (for `Invalid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    /// For `TooManyRequests`: how many seconds to wait before trying again, as the
    /// `Retry-After` header says (Kubernetes' field of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// A failed request, as the server answers it: `{"kind":"Status","code":422,…}`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `v1`: client-go decodes an error body as a `Status` only with that version.
    pub api_version: String,
    /// Always `Status`.
    pub kind: String,
    /// Always `Failure`.
    pub status: String,
    /// The HTTP status code.
    pub code: u16,
    /// Why, as a word.
    pub reason: StatusReason,
    /// Why, as a sentence for people.
    pub message: String,
    /// The object and field-level causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

impl Status {
    /// A failure with this reason and message.
    pub fn new(reason: StatusReason, message: impl Into<String>) -> Status {
        Status {
            api_version: "v1".to_string(),
            kind: "Status".to_string(),
            status: "Failure".to_string(),
            code: reason.code(),
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Names the object concerned.
    pub fn with_object(mut self, kind: &str, name: &str) -> Status {
        let details = self.details.get_or_insert_with(StatusDetails::default);
        details.kind = Some(kind.to_string());
        details.name = Some(name.to_string());
        self
    }

    /// Adds field-level causes.
    pub fn with_causes(mut self, causes: Vec<Cause>) -> Status {
        self.details
            .get_or_insert_with(StatusDetails::default)
            .causes
            .extend(causes);
        self
    }

    /// A 422 for an object whose fields failed validation; the message lists every cause.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Status {
        let list: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
        let shown = if name.is_empty() { "(unnamed)" } else { name };
        Status::new(
            StatusReason::Invalid,
            format!("{kind} {shown:?} is invalid: {}", list.join("; ")),
        )
        .with_object(kind, name)
        .with_causes(causes)
    }

    /// A 429: a limit is reached; the message says which, with its value and flag. The
    /// caller should retry after `retry_after_seconds`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u32) -> Status {
        let mut status = Status::new(StatusReason::TooManyRequests, message);
        status
            .details
            .get_or_insert_with(StatusDetails::default)
            .retry_after_seconds = Some(retry_after_seconds);
        status
    }

    /// A 404 for a missing object.
    pub fn not_found(kind: &str, name: &str) -> Status {
        Status::new(
            StatusReason::NotFound,
            format!("{} {name:?} not found", kind.to_ascii_lowercase()),
        )
        .with_object(kind, name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Status {}
