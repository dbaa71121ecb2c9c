//! The client's one error type.

use kohakuriver_api::{Status, StatusReason};

/// Everything that can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a `Status` (404, 409, 422…). Boxed to keep `Result`s small.
    #[error("{0}")]
    Api(Box<Status>),
    /// The server could not be reached at all (refused, unknown host, timed out connecting).
    #[error(
        "cannot reach the KohakuRiver server at {url} ({})",
        connect_reason(source)
    )]
    Connect {
        /// The server's base URL.
        url: String,
        /// What the HTTP stack reported.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS connection failed: the server's certificate is not trusted, or it does not
    /// speak TLS at all.
    #[error("cannot connect securely to the KohakuRiver server at {url}: {reason}")]
    Tls {
        /// The server's base URL.
        url: String,
        /// What went wrong and what to do.
        reason: String,
        /// What the HTTP stack reported.
        #[source]
        source: reqwest::Error,
    },
    /// The CA or the credential's CA fingerprint is not usable, or the server's CA does not
    /// match the fingerprint.
    #[error(transparent)]
    TlsConfig(#[from] kohakuriver_tls::Error),
    /// The token holds characters that cannot go in an HTTP header.
    #[error("the token is not usable: it must be one line of printable characters (krv_…)")]
    InvalidToken,
    /// The server answered an error that is not a `Status` (a proxy page, a crash).
    #[error("the server answered {code}: {text}")]
    Unexpected {
        /// The HTTP status code.
        code: u16,
        /// The start of the body.
        text: String,
    },
    /// The request failed after connecting (reset, timed out, body unreadable).
    #[error("request to the KohakuRiver server failed: {0}")]
    Http(#[source] reqwest::Error),
    /// The server's answer was not what the API promises.
    #[error("cannot read the server's answer: {0}")]
    Decode(String),
    /// The base URL given to [`crate::Client::new`] is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The server did not answer a request within the client's request timeout.
    #[error(
        "the KohakuRiver server did not answer within {}s; it may be overloaded or unreachable (the client's request timeout is ClientOptions::request_timeout)",
        .0.as_secs_f64()
    )]
    Timeout(std::time::Duration),
    /// A watch stream sent a line longer than the client accepts.
    #[error(
        "the server sent a watch line longer than {0} bytes, the client's limit; the stream was dropped"
    )]
    LineTooLong(usize),
    /// A watch stream stayed silent for longer than the server's bookmark interval allows.
    #[error("watch stream was silent for {0:?}; reconnecting")]
    Idle(std::time::Duration),
}

impl Error {
    /// The server's `Status`, when it answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api(status) => Some(status.as_ref()),
            _ => None,
        }
    }

    fn reason(&self) -> Option<StatusReason> {
        self.status().map(|s| s.reason)
    }

    /// 404: no such object.
    pub fn is_not_found(&self) -> bool {
        self.reason() == Some(StatusReason::NotFound)
            || matches!(self, Error::Unexpected { code: 404, .. })
    }

    /// 409 Conflict: the object changed since the `resourceVersion` the writer read.
    pub fn is_conflict(&self) -> bool {
        self.reason() == Some(StatusReason::Conflict)
    }

    /// 409 AlreadyExists: create of a name that is taken.
    pub fn is_already_exists(&self) -> bool {
        self.reason() == Some(StatusReason::AlreadyExists)
    }

    /// 410 Gone (or Expired, for a paged list's `continue` token): the history no longer
    /// reaches back that far; list again.
    pub fn is_gone(&self) -> bool {
        matches!(
            self.reason(),
            Some(StatusReason::Gone | StatusReason::Expired)
        )
    }

    /// True for 401: no credential, or one the server does not accept.
    pub fn is_unauthorized(&self) -> bool {
        self.reason() == Some(StatusReason::Unauthorized)
    }

    /// True for 403: the credential's identity may not do this.
    pub fn is_forbidden(&self) -> bool {
        self.reason() == Some(StatusReason::Forbidden)
    }

    /// 422 Invalid: the object failed validation (or changed an immutable field).
    pub fn is_invalid(&self) -> bool {
        self.reason() == Some(StatusReason::Invalid)
    }

    /// True when the server could not be reached at all, or not securely.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Tls { .. })
    }
}

/// Maps an HTTP error answer to an [`Error`]: a `Status` body becomes [`Error::Api`],
/// anything else a readable [`Error::Unexpected`] with the code and the start of the text.
pub(crate) fn from_error_body(code: u16, body: &[u8]) -> Error {
    let status = serde_json::from_slice::<Status>(body).ok();
    if let Some(status) = status.filter(|s| s.kind == "Status") {
        return Error::Api(Box::new(status));
    }
    const MAX: usize = 500;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let text = if text.is_empty() {
        "(empty body)".to_string()
    } else if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text.to_string()
    };
    Error::Unexpected { code, text }
}

/// When a connection failed in TLS: what went wrong, and what to do about it.
pub(crate) fn tls_reason(err: &reqwest::Error) -> Option<String> {
    use kohakuriver_tls::rustls;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(describe_tls(tls));
        }
        // tokio-rustls wraps the rustls error in io::Errors, whose `source()` skips the
        // wrapped error itself: descend into it instead.
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => current.source(),
        };
    }
    None
}

fn describe_tls(err: &kohakuriver_tls::rustls::Error) -> String {
    use kohakuriver_tls::rustls::CertificateError as C;
    use kohakuriver_tls::rustls::Error as E;
    match err {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "its certificate does not name the host in the URL; use a host name or IP the certificate names (--tls-san when the server uses --tls-self-signed)".to_string()
        }
        E::InvalidCertificate(reason) => {
            let why = match reason {
                C::UnknownIssuer => "it is signed by a CA this client does not know".to_string(),
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "it is not valid yet (is a clock wrong?)".to_string()
                }
                other => format!("{other:?}").to_lowercase(),
            };
            format!(
                "its certificate is not trusted: {why}; give the cluster's CA with --ca FILE or KOHAKURIVER_CA (a server started with --tls-self-signed keeps it in its data dir as tls/ca.pem)"
            )
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "it did not answer in TLS; is it serving plain http://?".to_string()
        }
        other => other.to_string().to_lowercase(),
    }
}

/// True when an `http://` request got an answer that is not HTTP, as when the server speaks
/// TLS. hyper says so only in its message ("invalid HTTP version parsed"), so this reads it;
/// if the wording ever changes, the plain error is shown instead.
pub(crate) fn answered_not_http(err: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if current.to_string().contains("invalid HTTP version") {
            return true;
        }
        cause = current.source();
    }
    false
}

/// A short, lowercase reason for a failed connection: `connection refused`, `timed out`…
/// taken from the innermost error, since reqwest's own message only says "error sending
/// request".
pub(crate) fn connect_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(next) = innermost.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        innermost = next;
    }
    innermost.to_string().to_lowercase()
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::TimedOut => "timed out".to_string(),
        ErrorKind::ConnectionReset => "connection reset".to_string(),
        ErrorKind::AddrNotAvailable => "address not available".to_string(),
        _ => {
            // Drop the "(os error N)" suffix: it helps nobody reading a one-line error.
            let text = io.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_becomes_api_error() {
        let status = Status::not_found("Task", "a");
        let body = serde_json::to_vec(&status).unwrap();
        let err = from_error_body(404, &body);
        assert!(err.is_not_found());
        assert!(!err.is_conflict());
        assert_eq!(err.to_string(), "task \"a\" not found");
        assert_eq!(err.status(), Some(&status));
    }

    #[test]
    fn conflict_gone_invalid_are_told_apart() {
        let e = |reason| Error::Api(Box::new(Status::new(reason, "x")));
        assert!(e(StatusReason::Conflict).is_conflict());
        assert!(!e(StatusReason::AlreadyExists).is_conflict());
        assert!(e(StatusReason::AlreadyExists).is_already_exists());
        assert!(e(StatusReason::Gone).is_gone());
        assert!(e(StatusReason::Invalid).is_invalid());
    }

    #[test]
    fn other_bodies_keep_code_and_text() {
        let err = from_error_body(502, b"<html>bad gateway</html>\n");
        assert_eq!(
            err.to_string(),
            "the server answered 502: <html>bad gateway</html>"
        );
        let err = from_error_body(500, b"");
        assert_eq!(err.to_string(), "the server answered 500: (empty body)");
        let long = "é".repeat(400);
        let text = from_error_body(500, long.as_bytes()).to_string();
        assert!(text.ends_with('…') && text.len() < 600, "{text}");
        // JSON that is not a Status is shown as text.
        let err = from_error_body(404, br#"{"kind":"Task"}"#);
        assert!(matches!(err, Error::Unexpected { code: 404, .. }));
        assert!(err.is_not_found());
    }

    #[test]
    fn io_reasons_are_short() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&e), "connection refused");
        let e = std::io::Error::other("No route to host (os error 113)");
        assert_eq!(io_reason(&e), "no route to host");
    }
}
