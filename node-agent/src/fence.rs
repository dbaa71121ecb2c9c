//! Fencing: an agent cut off from the server stops the containers the server will run
//! elsewhere.
//!
//! The agent records when it last reached the server (a heartbeat the server accepted).
//! Once `fence_after` has passed without contact, the server may soon declare the node lost
//! and re-queue every task that has a retry left, so the agent stops those tasks' containers
//! (SIGTERM, then SIGKILL after the kill grace) before that can happen: a task never runs in
//! two places. Tasks with no retry left keep running; the server keeps them (and their
//! cores) on this node until it hears back. Nothing is reported while cut off (nothing can
//! be); once contact returns, the reconciler reports what really happened, and a report for
//! an attempt the server has re-queued meanwhile is refused as stale and dropped.
//!
//! Timing: the server's node grace must exceed `fence_after` plus the kill grace, so the old
//! container is gone before the server re-queues its task (checked at start, see
//! [`check_timing`]).
//!
//! [`to_fence`] is the pure decision; `run` is the loop around it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kohakuriver_api::Task;
use tokio_util::sync::CancellationToken;

/// When the agent last reached the server, on the agent's monotonic clock.
#[derive(Debug)]
pub struct Contact {
    last: Mutex<Instant>,
}

impl Contact {
    /// Contact made now.
    pub fn now() -> Contact {
        Contact {
            last: Mutex::new(Instant::now()),
        }
    }

    /// Records a successful exchange with the server.
    pub fn reached(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long since the server was last reached.
    pub fn since(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// The names of the tasks whose containers must stop, given the tasks this agent caches
/// (as it last saw them), the time since it last reached the server, and `fence_after`.
///
/// Nothing is fenced before `fence_after`. After it, a task is fenced when it is not
/// terminal and the server would re-queue it should the node be declared lost
/// ([`Task::may_retry`], the rule the server uses), so it never runs twice. A task with no
/// retry left keeps running: stopping it would throw its work away for nothing.
pub fn to_fence<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    since_contact: Duration,
    fence_after: Duration,
) -> Vec<String> {
    if since_contact < fence_after {
        return Vec::new();
    }
    let mut names: Vec<String> = tasks
        .into_iter()
        .filter(|t| !t.status.phase.is_terminal() && t.may_retry())
        .map(|t| t.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Why the agent refuses to start with these timings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The server could re-queue a task before its old container is gone.
    #[error(
        "fence-after ({fence_after:?}) plus kill grace ({kill_grace:?}) must be below the server's node grace ({node_grace:?}), or a task cut off from the server could run in two places: lower the agent's --fence-after or --kill-grace, or raise the server's --node-grace"
    )]
    FenceTooLate {
        /// The agent's `--fence-after`.
        fence_after: Duration,
        /// The agent's `--kill-grace`.
        kill_grace: Duration,
        /// The server's `--node-grace`.
        node_grace: Duration,
    },
    /// The agent would fence between two heartbeats of a healthy connection.
    #[error(
        "the heartbeat interval ({heartbeat:?}) must be below fence-after ({fence_after:?}), or the agent stops tasks while connected: lower --heartbeat-interval or raise --fence-after"
    )]
    HeartbeatTooSlow {
        /// The agent's `--heartbeat-interval`.
        heartbeat: Duration,
        /// The agent's `--fence-after`.
        fence_after: Duration,
    },
}

/// Checks the timing inequality `fence_after + kill_grace < node_grace` (the server
/// re-queues a lost node's tasks only after their old containers are gone), and that a
/// healthy agent heartbeats more often than `fence_after`. `node_grace` is `None` when the
/// server does not know it (it runs no controllers).
pub fn check_timing(
    heartbeat: Duration,
    fence_after: Duration,
    kill_grace: Duration,
    node_grace: Option<Duration>,
) -> Result<(), TimingError> {
    if heartbeat >= fence_after {
        return Err(TimingError::HeartbeatTooSlow {
            heartbeat,
            fence_after,
        });
    }
    match node_grace {
        Some(node_grace) if fence_after.saturating_add(kill_grace) >= node_grace => {
            Err(TimingError::FenceTooLate {
                fence_after,
                kill_grace,
                node_grace,
            })
        }
        _ => Ok(()),
    }
}

/// How often the loop looks at the time since contact.
fn tick(fence_after: Duration) -> Duration {
    (fence_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Fences, whenever contact has been lost for `fence_after`, the tasks [`to_fence`] names,
/// until shutdown.
pub(crate) async fn run(
    reconciler: crate::reconciler::Reconciler,
    contact: Arc<Contact>,
    fence_after: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick(fence_after)) => {}
        }
        let since = contact.since();
        let names = to_fence(reconciler.cached_tasks().iter(), since, fence_after);
        // All at once, so every container is gone within one kill grace.
        futures::future::join_all(names.iter().map(|name| reconciler.fence(name, since))).await;
    }
}

#[cfg(test)]
mod tests {
    use kohakuriver_api::{DesiredState, TaskPhase};

    use super::*;

    fn task(name: &str, phase: TaskPhase, retries: u32, attempts: u32, started: bool) -> Task {
        let mut t = Task::new(name, vec!["sleep".into(), "60".into()]);
        t.metadata.uid = Some(format!("uid-{name}"));
        t.spec.retries = retries;
        t.status.phase = phase;
        t.status.attempts = attempts;
        if started {
            t.status.started_at = chrono::DateTime::from_timestamp(100, 0);
        }
        t
    }

    const AFTER: Duration = Duration::from_secs(15);

    #[test]
    fn fences_only_tasks_the_server_would_requeue_and_only_after_fence_after() {
        use TaskPhase::*;
        let mut killed = task("killed", Running, 3, 1, true);
        killed.spec.state = DesiredState::Killed;
        let mut deadline = task("deadline", Running, 3, 1, true);
        deadline.status.reason = Some("DeadlineExceeded".into());
        let mut deleting = task("deleting", Running, 3, 1, true);
        deleting.metadata.deletion_timestamp = chrono::DateTime::from_timestamp(200, 0);
        // (task, time since contact, fenced?)
        let cases: Vec<(Task, u64, bool)> = vec![
            // A retry left, running: fenced once fence_after has passed, not before.
            (task("r1", Running, 1, 1, true), 16, true),
            (task("r1", Running, 1, 1, true), 15, true),
            (task("r1", Running, 1, 1, true), 14, false),
            (task("r1", Running, 1, 1, true), 0, false),
            // Paused, or bound and not yet reported started: the server re-queues them too.
            (task("paused", Paused, 2, 1, true), 20, true),
            (task("assigned", Assigned, 1, 0, false), 20, true),
            // Retries used up: keeps running through the partition.
            (task("last", Running, 1, 2, true), 20, false),
            (task("none", Running, 0, 1, true), 20, false),
            (task("assigned0", Assigned, 0, 0, false), 20, false),
            // Killed, past its deadline or being deleted: the server does not re-queue.
            (killed, 20, false),
            (deadline, 20, false),
            (deleting, 20, false),
            // Finished: nothing to stop.
            (task("done", Succeeded, 3, 1, true), 20, false),
            (task("failed", Failed, 3, 1, true), 20, false),
        ];
        for (t, since, fenced) in cases {
            let got = to_fence([&t], Duration::from_secs(since), AFTER);
            assert_eq!(
                !got.is_empty(),
                fenced,
                "task {} ({:?}, retries {}, attempts {}) {since}s without contact",
                t.metadata.name,
                t.status.phase,
                t.spec.retries,
                t.status.attempts
            );
        }
    }

    #[test]
    fn fences_every_qualifying_task_in_name_order() {
        let tasks = [
            task("b", TaskPhase::Running, 1, 1, true),
            task("keep", TaskPhase::Running, 0, 1, true),
            task("a", TaskPhase::Running, 2, 1, true),
        ];
        assert_eq!(
            to_fence(tasks.iter(), Duration::from_secs(30), AFTER),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn timing_inequality_is_strict() {
        let s = Duration::from_secs;
        let hb = s(5);
        assert!(check_timing(hb, s(15), s(10), Some(s(30))).is_ok());
        assert!(check_timing(hb, s(15), s(10), Some(s(26))).is_ok());
        assert!(check_timing(hb, s(15), s(10), None).is_ok());
        assert!(check_timing(s(1), s(2), s(1), Some(s(6))).is_ok());
        let err = check_timing(hb, s(15), s(10), Some(s(25))).unwrap_err();
        let text = err.to_string();
        for needle in [
            "15s",
            "10s",
            "25s",
            "--fence-after",
            "--kill-grace",
            "--node-grace",
        ] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
        let err = check_timing(s(15), s(15), s(1), Some(s(60))).unwrap_err();
        assert!(matches!(err, TimingError::HeartbeatTooSlow { .. }), "{err}");
        assert!(err.to_string().contains("--heartbeat-interval"), "{err}");
    }
}
