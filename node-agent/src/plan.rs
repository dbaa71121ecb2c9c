//! The reconcile decision: what to do next, given the task as the server has it and the
//! container as the engine has it.
//!
//! [`plan`] is pure and level-triggered: it never asks why it was called, only compares the
//! desired state with the observed one. The reconciler runs the steps, looks again, and
//! plans again until nothing is left to do. Two rules make it safe to call any number of
//! times: a task is never run twice (a missing container of a task that already started is
//! reported lost, not recreated), and a terminal task is never restarted.

use kohakuriver_api::{CONTAINER_FINALIZER, DesiredState, Task, TaskPhase};

use crate::runtime::{ContainerState, ContainerStatus};

/// One action of the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Make sure the image is there (present, pulled or loaded), then create the container.
    Create,
    /// Start the created container.
    Start,
    /// `docker pause`.
    Pause,
    /// `docker unpause`.
    Unpause,
    /// SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// Phase Running, with the container's id, start time and attempt.
    ReportRunning,
    /// Phase Paused.
    ReportPaused,
    /// Phase Succeeded (exit 0) or Failed (reason `OOMKilled` or `Error`).
    ReportExited {
        /// The command's exit code.
        exit_code: i64,
        /// True when the OOM killer ended it.
        oom_killed: bool,
    },
    /// Phase Killed (on request).
    ReportKilled,
    /// Phase Failed, reason `ContainerLost`: the container of a started task vanished. It is
    /// not recreated, because the command may have had effects already.
    ReportContainerLost,
    /// Remove the container, once its log capture is final.
    RemoveContainer,
    /// Drop [`CONTAINER_FINALIZER`] so a deleted task can go.
    RemoveFinalizer,
}

/// Whether a container found under the task's name belongs to the task's current attempt.
fn is_current(task: &Task, container: &ContainerState) -> bool {
    if container.uid() != task.metadata.uid.as_deref() {
        return false;
    }
    // The binding names the attempt exactly: a container of another binding is a
    // leftover of an earlier attempt, whatever the attempt counters say.
    if let Some(binding) = container.binding()
        && task.status.binding != 0
    {
        return binding == task.status.binding;
    }
    let Some(attempt) = container.attempt() else {
        // Unlabelled attempt: trust the uid.
        return true;
    };
    let reported = task.status.attempts;
    match task.status.phase {
        // Not reported as started yet: this attempt's container may exist already (the agent
        // created it and then restarted), an earlier attempt's is a leftover.
        TaskPhase::Pending | TaskPhase::Assigned => attempt > reported,
        _ => attempt >= reported,
    }
}

/// What to do next for `desired`, whose container (found by name) is `actual`.
pub fn plan(desired: &Task, actual: Option<&ContainerState>) -> Vec<Step> {
    use Step::*;
    let has_finalizer = desired
        .metadata
        .finalizers
        .iter()
        .any(|f| f == CONTAINER_FINALIZER);

    if desired.metadata.is_deleting() {
        let mut steps = match actual {
            Some(c) if c.status.is_alive() => vec![Stop, RemoveContainer],
            Some(_) => vec![RemoveContainer],
            None => vec![],
        };
        if has_finalizer {
            steps.push(RemoveFinalizer);
        }
        return steps;
    }

    // A leftover of another task with the same name, or of an earlier attempt: clear it out
    // of the way; the next round plans for the current attempt.
    if let Some(c) = actual
        && !is_current(desired, c)
    {
        return if c.status.is_alive() {
            vec![Stop, RemoveContainer]
        } else {
            vec![RemoveContainer]
        };
    }

    let phase = desired.status.phase;
    if phase.is_terminal() {
        return match actual {
            Some(c) if c.status.is_alive() => vec![Stop, RemoveContainer],
            Some(_) => vec![RemoveContainer],
            None => vec![],
        };
    }
    // Unknown: the server lost touch with this node while the task ran; the container says
    // what really happened, and is reported like a Running task's.
    if !matches!(
        phase,
        TaskPhase::Assigned | TaskPhase::Running | TaskPhase::Paused | TaskPhase::Unknown
    ) {
        // Pending: not (or no longer) bound for running here.
        return vec![];
    }

    if desired.spec.state == DesiredState::Killed {
        return match actual {
            Some(c) if c.status.is_alive() => vec![Stop],
            Some(c) if c.status == ContainerStatus::Transitioning => vec![],
            Some(_) => vec![ReportKilled, RemoveContainer],
            None => vec![ReportKilled],
        };
    }

    let Some(c) = actual else {
        return if phase == TaskPhase::Assigned {
            vec![Create, Start]
        } else {
            vec![ReportContainerLost]
        };
    };
    let reported_container = desired.status.container_id.as_deref() == Some(c.id.as_str());
    match c.status {
        ContainerStatus::Created => vec![Start],
        ContainerStatus::Running => {
            if desired.spec.state == DesiredState::Paused {
                vec![Pause]
            } else if phase != TaskPhase::Running || !reported_container {
                vec![ReportRunning]
            } else {
                vec![]
            }
        }
        ContainerStatus::Paused => {
            if desired.spec.state == DesiredState::Running {
                vec![Unpause]
            } else if phase != TaskPhase::Paused || !reported_container {
                vec![ReportPaused]
            } else {
                vec![]
            }
        }
        ContainerStatus::Exited => vec![
            ReportExited {
                exit_code: c.exit_code.unwrap_or(-1),
                oom_killed: c.oom_killed,
            },
            RemoveContainer,
        ],
        ContainerStatus::Transitioning => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::Step::*;
    use super::*;
    use std::collections::BTreeMap;

    use crate::container_config::ATTEMPT_LABEL;
    use kohakuriver_api::labels;

    fn task(phase: TaskPhase, state: DesiredState) -> Task {
        let mut t = Task::test("t").state(state).phase(phase);
        t.metadata.uid = Some("u1".into());
        t.metadata.finalizers = vec![CONTAINER_FINALIZER.into()];
        if !matches!(phase, TaskPhase::Pending | TaskPhase::Assigned) {
            t.status.attempts = 1;
            t.status.container_id = Some("c1".into());
        }
        t
    }

    fn container(status: ContainerStatus) -> ContainerState {
        ContainerState {
            id: "c1".into(),
            name: "kohakuriver-task-t".into(),
            labels: BTreeMap::from([
                (labels::UID.to_string(), "u1".to_string()),
                (ATTEMPT_LABEL.to_string(), "1".to_string()),
            ]),
            status,
            exit_code: (status == ContainerStatus::Exited).then_some(0),
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn check(phase: TaskPhase, state: DesiredState, c: Option<ContainerStatus>) -> Vec<Step> {
        plan(&task(phase, state), c.map(container).as_ref())
    }

    use ContainerStatus as C;
    use DesiredState as D;
    use TaskPhase as P;

    #[test]
    fn table() {
        let cases: &[(P, D, Option<C>, Vec<Step>)] = &[
            // Fresh binding: create and start.
            (P::Assigned, D::Running, None, vec![Create, Start]),
            (P::Assigned, D::Running, Some(C::Created), vec![Start]),
            (
                P::Assigned,
                D::Running,
                Some(C::Running),
                vec![ReportRunning],
            ),
            (P::Running, D::Running, Some(C::Running), vec![]),
            (P::Running, D::Running, Some(C::Transitioning), vec![]),
            // Exit.
            (
                P::Running,
                D::Running,
                Some(C::Exited),
                vec![
                    ReportExited {
                        exit_code: 0,
                        oom_killed: false,
                    },
                    RemoveContainer,
                ],
            ),
            // Never run twice: a started task whose container vanished is reported lost.
            (P::Running, D::Running, None, vec![ReportContainerLost]),
            (P::Paused, D::Paused, None, vec![ReportContainerLost]),
            // Pause and resume.
            (P::Running, D::Paused, Some(C::Running), vec![Pause]),
            (P::Running, D::Paused, Some(C::Paused), vec![ReportPaused]),
            (P::Paused, D::Paused, Some(C::Paused), vec![]),
            (P::Paused, D::Running, Some(C::Paused), vec![Unpause]),
            (P::Paused, D::Running, Some(C::Running), vec![ReportRunning]),
            (P::Assigned, D::Paused, None, vec![Create, Start]),
            (P::Assigned, D::Paused, Some(C::Running), vec![Pause]),
            // Kill.
            (P::Running, D::Killed, Some(C::Running), vec![Stop]),
            (P::Paused, D::Killed, Some(C::Paused), vec![Stop]),
            (
                P::Running,
                D::Killed,
                Some(C::Exited),
                vec![ReportKilled, RemoveContainer],
            ),
            (P::Assigned, D::Killed, None, vec![ReportKilled]),
            (
                P::Assigned,
                D::Killed,
                Some(C::Created),
                vec![ReportKilled, RemoveContainer],
            ),
            // Terminal tasks are never restarted; leftovers are cleaned up.
            (P::Succeeded, D::Running, None, vec![]),
            (
                P::Failed,
                D::Running,
                Some(C::Exited),
                vec![RemoveContainer],
            ),
            (P::Killed, D::Killed, Some(C::Exited), vec![RemoveContainer]),
            (
                P::Lost,
                D::Running,
                Some(C::Running),
                vec![Stop, RemoveContainer],
            ),
            // Pending: not ours to run.
            (P::Pending, D::Running, None, vec![]),
            // Unknown (the node was unreachable, now back): what the container did is
            // reported; nothing is created again.
            (
                P::Unknown,
                D::Running,
                Some(C::Running),
                vec![ReportRunning],
            ),
            (P::Unknown, D::Paused, Some(C::Paused), vec![ReportPaused]),
            (
                P::Unknown,
                D::Running,
                Some(C::Exited),
                vec![
                    ReportExited {
                        exit_code: 0,
                        oom_killed: false,
                    },
                    RemoveContainer,
                ],
            ),
            (P::Unknown, D::Running, None, vec![ReportContainerLost]),
            (P::Unknown, D::Killed, Some(C::Running), vec![Stop]),
        ];
        for (phase, state, c, expected) in cases {
            assert_eq!(
                &check(*phase, *state, *c),
                expected,
                "phase {phase}, desired {state}, container {c:?}"
            );
        }
    }

    #[test]
    fn exit_codes_and_oom_reach_the_report() {
        let t = task(P::Running, D::Running);
        let mut c = container(C::Exited);
        c.exit_code = Some(137);
        c.oom_killed = true;
        assert_eq!(
            plan(&t, Some(&c))[0],
            ReportExited {
                exit_code: 137,
                oom_killed: true
            }
        );
    }

    #[test]
    fn deletion_stops_removes_then_drops_the_finalizer() {
        let mut t = task(P::Running, D::Running);
        t.metadata.deletion_timestamp = Some(chrono::Utc::now());
        assert_eq!(
            plan(&t, Some(&container(C::Running))),
            vec![Stop, RemoveContainer, RemoveFinalizer]
        );
        assert_eq!(
            plan(&t, Some(&container(C::Exited))),
            vec![RemoveContainer, RemoveFinalizer]
        );
        assert_eq!(plan(&t, None), vec![RemoveFinalizer]);
        t.metadata.finalizers.clear();
        assert_eq!(plan(&t, None), vec![]);
    }

    #[test]
    fn another_tasks_container_is_removed_not_adopted() {
        let t = task(P::Assigned, D::Running);
        let mut c = container(C::Running);
        c.labels.insert(labels::UID.into(), "other".into());
        assert_eq!(plan(&t, Some(&c)), vec![Stop, RemoveContainer]);
        c.status = C::Exited;
        assert_eq!(plan(&t, Some(&c)), vec![RemoveContainer]);
    }

    #[test]
    fn earlier_attempts_container_is_removed_before_a_retry() {
        let mut t = task(P::Assigned, D::Running);
        t.status.attempts = 1;
        // Attempt 1's container, exited: a leftover.
        assert_eq!(plan(&t, Some(&container(C::Exited))), vec![RemoveContainer]);
        // Attempt 2's container, created before an agent restart: adopted.
        let mut c = container(C::Created);
        c.labels.insert(ATTEMPT_LABEL.into(), "2".into());
        assert_eq!(plan(&t, Some(&c)), vec![Start]);
    }

    #[test]
    fn adopted_running_container_is_reported_even_if_ids_differ() {
        let mut t = task(P::Running, D::Running);
        t.status.container_id = None;
        assert_eq!(plan(&t, Some(&container(C::Running))), vec![ReportRunning]);
    }
}
