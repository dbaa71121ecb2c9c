//! The events the agent reports about the tasks it runs: what each step says (pure) and the
//! handle the reconciler reports through.
//!
//! `Pulling`/`Pulled` (or the image was already present, or loaded from a tarball),
//! `Created`, `Started`, `Killing`, `Exited` with the code (Normal for 0, Warning
//! otherwise), `OOMKilled`, and each failure the agent reports with its reason
//! (`ImagePullFailed`, `StartFailed`, `ImageNotFound`, `MountNotAllowed`…). Messages name
//! nothing that changes per attempt, so a crash loop folds into one event per reason.

use std::time::Duration;

use kohakuriver_api::{EventType, Task};
use kohakuriver_client::{ObjectRef, Recorder};

use crate::image::Provided;

/// One event: type, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

fn said(type_: EventType, reason: &str, message: String) -> Said {
    Said {
        type_,
        reason: reason.to_string(),
        message,
    }
}

/// A pull or a load is starting.
pub fn fetching(image: &str, how: Provided) -> Said {
    match how {
        Provided::Loaded => said(
            EventType::Normal,
            "Pulling",
            format!("loading image {image:?} from its environment tarball"),
        ),
        _ => said(
            EventType::Normal,
            "Pulling",
            format!("pulling image {image:?}"),
        ),
    }
}

/// The image is there.
pub fn provided(image: &str, how: Provided) -> Said {
    let message = match how {
        Provided::Present => format!("image {image:?} already present on the node"),
        Provided::Pulled => format!("pulled image {image:?}"),
        Provided::Loaded => format!("loaded image {image:?} from its environment tarball"),
    };
    said(EventType::Normal, "Pulled", message)
}

/// The container was created.
pub fn created(container: &str) -> Said {
    said(
        EventType::Normal,
        "Created",
        format!("created container {container}"),
    )
}

/// The container was started.
pub fn started(container: &str) -> Said {
    said(
        EventType::Normal,
        "Started",
        format!("started container {container}"),
    )
}

/// The container is being stopped.
pub fn killing(container: &str, grace: Duration) -> Said {
    said(
        EventType::Normal,
        "Killing",
        format!(
            "stopping container {container} (SIGTERM, then SIGKILL after {}s)",
            grace.as_secs()
        ),
    )
}

/// The container exited.
pub fn exited(code: i64, oom_killed: bool) -> Said {
    if oom_killed {
        return said(
            EventType::Warning,
            "OOMKilled",
            format!(
                "the container used more memory than its limit and was killed (exit code {code})"
            ),
        );
    }
    let type_ = if code == 0 {
        EventType::Normal
    } else {
        EventType::Warning
    };
    said(
        type_,
        "Exited",
        format!("container exited with code {code}"),
    )
}

/// The task failed with `reason` before or without a container.
pub fn failed(reason: &str, message: &str) -> Said {
    said(EventType::Warning, reason, message.to_string())
}

/// Where the reconciler reports; without a recorder (tests of the reconciler alone) it
/// reports nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskEvents(pub Option<Recorder>);

impl TaskEvents {
    /// Records `said` about `task`.
    pub fn say(&self, task: &Task, said: Said) {
        if let Some(recorder) = &self.0 {
            recorder.record(
                &ObjectRef::of(task),
                said.type_,
                &said.reason,
                &said.message,
            );
        }
    }

    /// Writes what is still held back by the write budgets (at shutdown), waiting at most
    /// `limit` for the server.
    pub async fn flush(&self, limit: Duration) {
        if let Some(recorder) = &self.0
            && tokio::time::timeout(limit, recorder.flush()).await.is_err()
        {
            tracing::warn!(?limit, "events not all written before shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: Said) -> String {
        format!("{} {}: {}", s.type_, s.reason, s.message)
    }

    #[test]
    fn what_each_step_says() {
        let cases = [
            (
                fetching("busybox", Provided::Pulled),
                "Normal Pulling: pulling image \"busybox\"",
            ),
            (
                provided("busybox", Provided::Present),
                "Normal Pulled: image \"busybox\" already present on the node",
            ),
            (
                provided("busybox", Provided::Pulled),
                "Normal Pulled: pulled image \"busybox\"",
            ),
            (
                created("kohakuriver-task-a"),
                "Normal Created: created container kohakuriver-task-a",
            ),
            (
                started("kohakuriver-task-a"),
                "Normal Started: started container kohakuriver-task-a",
            ),
            (
                killing("c", Duration::from_secs(10)),
                "Normal Killing: stopping container c (SIGTERM, then SIGKILL after 10s)",
            ),
            (
                exited(0, false),
                "Normal Exited: container exited with code 0",
            ),
            (
                exited(3, false),
                "Warning Exited: container exited with code 3",
            ),
            (
                exited(137, true),
                "Warning OOMKilled: the container used more memory than its limit and was killed (exit code 137)",
            ),
            (
                failed("ImagePullFailed", "no such registry"),
                "Warning ImagePullFailed: no such registry",
            ),
        ];
        for (said, want) in cases {
            assert_eq!(line(said), want);
        }
    }
}
