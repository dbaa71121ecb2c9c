//! Which engine refusals retrying can fix, and which it cannot.
//!
//! The agent retries a failed create or start only when trying again could succeed (the
//! engine restarting, a timeout). A refusal of the container's own configuration (a bind
//! source that does not exist, a cpuset beyond the host, memory below Docker's minimum, an
//! invalid reference, a GPU driver the host lacks) fails the same way every time, so the
//! task fails at once with the engine's words. [`classify`] is that decision, pure, tested
//! against messages real engines give.

/// Whether retrying a failed engine call can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The engine refused this container's configuration: retrying fails the same way.
    Permanent,
    /// The engine could not answer now (unreachable, overloaded, timed out): retry.
    Transient,
}

/// Parts of a 500 answer's message that mean the configuration itself is refused. Docker
/// answers some such refusals with 500 rather than 400 (a missing device driver, a runtime
/// that cannot exec the command).
const PERMANENT_500: &[&str] = &[
    "could not select device driver",
    "oci runtime create failed",
    "invalid mount config",
    "bind source path does not exist",
    "invalid reference format",
    "requested cpus are not available",
    "minimum memory limit",
    "no such file or directory",
    "executable file not found",
    "invalid argument",
    "unknown runtime specified",
];

/// Sorts a failed create or start by the HTTP status the engine answered with (None when it
/// did not answer at all: unreachable, timed out) and its message.
pub fn classify(status: Option<u16>, message: &str) -> Fault {
    let lower = message.to_ascii_lowercase();
    match status {
        // 400: the request is wrong; 403/404/409 have their own handling and are never
        // cured by waiting either (except a name conflict, which the caller sorts first).
        Some(400..=499) => Fault::Permanent,
        Some(500) if PERMANENT_500.iter().any(|p| lower.contains(p)) => Fault::Permanent,
        _ => Fault::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_from_a_real_engine() {
        use Fault::*;
        // Status and message as Docker 20.10 answers them.
        let cases: &[(Option<u16>, &str, Fault)] = &[
            (
                Some(400),
                "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-xyz2",
                Permanent,
            ),
            (
                Some(400),
                "Requested CPUs are not available - requested 999, available: 0-1",
                Permanent,
            ),
            (Some(400), "Minimum memory limit allowed is 6MB", Permanent),
            (
                Some(400),
                "invalid reference format: repository name must be lowercase",
                Permanent,
            ),
            (
                Some(400),
                "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory: unknown",
                Permanent,
            ),
            (
                Some(500),
                "could not select device driver \"nvidia\" with capabilities: [[gpu]]",
                Permanent,
            ),
            (
                Some(500),
                "OCI runtime create failed: container_linux.go:380: starting container process caused: exec: \"x\": executable file not found in $PATH: unknown",
                Permanent,
            ),
            (Some(500), "context deadline exceeded", Transient),
            (
                Some(500),
                "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
                Transient,
            ),
            (Some(503), "service unavailable", Transient),
            (
                None,
                "error trying to connect: No such file or directory (os error 2)",
                Transient,
            ),
            (None, "Timeout error", Transient),
        ];
        for (status, message, want) in cases {
            assert_eq!(classify(*status, message), *want, "{status:?} {message}");
        }
    }
}
