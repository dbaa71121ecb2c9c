//! How an attempt ended, decided once and written into a task's status one way.
//!
//! [`exited`] turns what the engine says about a finished container (exit code, the OOM
//! killer, fencing) into an [`Outcome`]; [`finish`] writes an outcome into the status
//! (phase, reason, message, the finish time and the `Succeeded`/`Failed` condition), and
//! [`stop_running`] closes the `Running` condition. The agent observes, calls them and
//! reports; the rules live here with their case table. Pure: `now` is passed in.

use crate::meta::{ConditionStatus, Timestamp, set_condition};
use crate::task::{Task, TaskPhase};

/// What the engine says about a container that exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The process's exit code.
    pub code: i64,
    /// The kernel's out-of-memory killer ended it.
    pub oom_killed: bool,
    /// The agent stopped it after this many seconds without the server (fencing), with
    /// the node's name.
    pub fenced: Option<(u64, String)>,
    /// The engine's own error text for the container, if any.
    pub engine_error: Option<String>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Succeeded,
    /// It failed; `reason` is a CamelCase word, `message` a sentence naming what to do.
    Failed {
        /// E.g. `Error`, `OOMKilled`, `Fenced`, `StartFailed`, `LogCaptureFailed`.
        reason: String,
        /// For people.
        message: String,
    },
    /// It was killed on request (`spec.state: Killed`).
    Killed,
}

impl Outcome {
    /// A failure with this reason and message.
    pub fn failed(reason: impl Into<String>, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The outcome of an exited container (pure).
pub fn exited(exit: &Exit) -> Outcome {
    let code = exit.code;
    if code == 0 && !exit.oom_killed {
        return Outcome::Succeeded;
    }
    if exit.oom_killed {
        return Outcome::failed(
            "OOMKilled",
            format!(
                "killed by the out-of-memory killer (exit code {code}); raise resources.memory"
            ),
        );
    }
    if let Some((secs, node)) = &exit.fenced {
        return Outcome::failed(
            "Fenced",
            format!(
                "stopped by the agent of node {node} after {secs}s without contact with the server (--fence-after), so that it never runs in two places (exit code {code})"
            ),
        );
    }
    let engine = exit
        .engine_error
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    Outcome::failed("Error", format!("exited with code {code}{engine}"))
}

/// Closes the `Running` condition: the container is no longer running, for `reason`
/// (`Exited`, `Killed`).
pub fn stop_running(task: &mut Task, reason: &str, now: Timestamp) {
    let generation = task.metadata.generation;
    set_condition(
        &mut task.status.conditions,
        "Running",
        ConditionStatus::False,
        Some(reason),
        None,
        generation,
        now,
    );
}

/// Writes `outcome` into the task's status: its terminal phase, reason and message, when
/// it finished, and the `Succeeded` or `Failed` condition.
pub fn finish(task: &mut Task, outcome: &Outcome, finished_at: Timestamp, now: Timestamp) {
    let generation = task.metadata.generation;
    let status = &mut task.status;
    status.finished_at = Some(finished_at);
    match outcome {
        Outcome::Succeeded => {
            status.phase = TaskPhase::Succeeded;
            status.reason = None;
            status.message = None;
            set_condition(
                &mut status.conditions,
                "Succeeded",
                ConditionStatus::True,
                Some("Completed"),
                None,
                generation,
                now,
            );
        }
        Outcome::Failed { reason, message } => {
            status.phase = TaskPhase::Failed;
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
            set_condition(
                &mut status.conditions,
                "Failed",
                ConditionStatus::True,
                Some(reason),
                Some(message),
                generation,
                now,
            );
        }
        Outcome::Killed => {
            status.phase = TaskPhase::Killed;
            status.reason = Some("Killed".to_string());
            status.message = Some("killed on request".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::find_condition;

    fn exit(code: i64) -> Exit {
        Exit {
            code,
            oom_killed: false,
            fenced: None,
            engine_error: None,
        }
    }

    #[test]
    fn exits_decide_the_outcome() {
        let fenced = Exit {
            fenced: Some((15, "gpu-01".into())),
            ..exit(137)
        };
        let oom = Exit {
            oom_killed: true,
            ..exit(137)
        };
        let oom_zero = Exit {
            oom_killed: true,
            ..exit(0)
        };
        let engine = Exit {
            engine_error: Some("bad thing".into()),
            ..exit(1)
        };
        let (zero, three) = (exit(0), exit(3));
        let cases: Vec<(&Exit, Option<&str>, &str)> = vec![
            (&zero, None, ""),
            (&three, Some("Error"), "exited with code 3"),
            (&engine, Some("Error"), "exited with code 1: bad thing"),
            (&oom, Some("OOMKilled"), "raise resources.memory"),
            (&oom_zero, Some("OOMKilled"), "exit code 0"),
            (&fenced, Some("Fenced"), "node gpu-01 after 15s"),
        ];
        for (exit, reason, message) in cases {
            match (exited(exit), reason) {
                (Outcome::Succeeded, None) => {}
                (
                    Outcome::Failed {
                        reason: r,
                        message: m,
                    },
                    Some(want),
                ) => {
                    assert_eq!(r, want, "{exit:?}");
                    assert!(m.contains(message), "{exit:?}: {m}");
                }
                (other, _) => panic!("{exit:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn finish_writes_phase_reason_time_and_condition() {
        let now = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
        let ended = chrono::DateTime::from_timestamp(990, 0).unwrap();
        let mut t = Task::new("t", vec!["true".into()]);
        t.metadata.generation = Some(2);
        stop_running(&mut t, "Exited", now);
        finish(&mut t, &Outcome::Succeeded, ended, now);
        assert_eq!(t.status.phase, TaskPhase::Succeeded);
        assert_eq!(t.status.finished_at, Some(ended));
        let running = find_condition(&t.status.conditions, "Running").unwrap();
        assert_eq!(
            (running.status, running.reason.as_deref()),
            (ConditionStatus::False, Some("Exited"))
        );
        let done = find_condition(&t.status.conditions, "Succeeded").unwrap();
        assert_eq!(done.reason.as_deref(), Some("Completed"));
        assert_eq!(done.observed_generation, Some(2));

        let mut t = Task::new("t", vec!["false".into()]);
        finish(
            &mut t,
            &Outcome::failed("StartFailed", "no such file"),
            now,
            now,
        );
        assert_eq!(t.status.phase, TaskPhase::Failed);
        assert_eq!(t.status.reason.as_deref(), Some("StartFailed"));
        let failed = find_condition(&t.status.conditions, "Failed").unwrap();
        assert_eq!(failed.message.as_deref(), Some("no such file"));
        assert!(find_condition(&t.status.conditions, "Running").is_none());

        let mut t = Task::new("t", vec!["sleep".into()]);
        finish(&mut t, &Outcome::Killed, now, now);
        assert_eq!(t.status.phase, TaskPhase::Killed);
        assert_eq!(t.status.message.as_deref(), Some("killed on request"));
        assert!(t.status.conditions.is_empty());
    }
}
