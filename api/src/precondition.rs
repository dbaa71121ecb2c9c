//! Which attempt a status write is about, and the refusal of writes about another one.
//!
//! A task can be bound, re-queued and bound again (retries, a lost node); each bind starts
//! a new attempt. The server names attempts with `status.binding`, a counter it stamps at
//! every bind ([`stamp_binding`]); no client sets it. An agent's status write carries the
//! task's uid, its own node and the binding it reports on, and [`check_status_precondition`]
//! refuses it (409) when the task is another one now, is bound elsewhere, or is at another
//! binding: that is a late report of an old attempt, and must not land on the new one.
//!
//! Architecture Invariant: a status write naming binding N never changes a task whose
//! stored binding is not N.

use crate::{Task, TaskPhase, TaskStatus};

/// Why a status write is stale; the message names what the task is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale(pub String);

/// Checks the preconditions a status write carries against the stored task: the uid the
/// writer sent (`metadata.uid` of its body, if any), and its status's `node` and `binding`.
///
/// A body with binding 0 names no attempt and is not checked against one (a writer that
/// never saw a binding). A body reporting a run (a phase past Assigned) that names a node
/// other than the stored one is stale; binds (Pending, Assigned) are the binding rules'.
pub fn check_status_precondition(
    current: &Task,
    sent_uid: Option<&str>,
    body: &TaskStatus,
) -> Result<(), Stale> {
    let name = &current.metadata.name;
    let stored = &current.status;
    let now = || describe(stored);
    if let Some(sent) = sent_uid
        && current.metadata.uid.as_deref() != Some(sent)
    {
        return Err(Stale(format!(
            "task {name:?} is another task now (uid {}), not uid {sent}; drop this write",
            current.metadata.uid.as_deref().unwrap_or("none")
        )));
    }
    if body.binding != 0 && body.binding != stored.binding {
        return Err(Stale(format!(
            "task {name:?} is {} now; this write is for binding {}, an earlier attempt: drop it",
            now(),
            body.binding
        )));
    }
    // Writes that leave the task waiting (Pending, Assigned) are the scheduler's, judged
    // by the binding rules; a write of any other phase reports what a run came to.
    let reports = !matches!(body.phase, TaskPhase::Pending | TaskPhase::Assigned);
    if let Some(writer) = &body.node
        && stored.node.as_ref() != Some(writer)
        && reports
    {
        return Err(Stale(format!(
            "task {name:?} is {} now, not on node {writer:?}: drop this write",
            now()
        )));
    }
    Ok(())
}

/// Where the stored status puts the task, for messages: `bound to node "a" (binding 3)`.
pub fn describe(status: &TaskStatus) -> String {
    match &status.node {
        Some(node) => format!("bound to node {node:?} (binding {})", status.binding),
        None => format!("not bound to any node (last binding {})", status.binding),
    }
}

/// Sets the server-owned `binding` of a status being written over `old`: one more than the
/// stored count when the write binds the task to a node (from unbound, or to another
/// node), the stored count otherwise, whatever the body said.
pub fn stamp_binding(old: &TaskStatus, new: &mut TaskStatus) {
    let binds = new.node.is_some() && new.node != old.node;
    new.binding = old.binding + u32::from(binds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(node: Option<&str>, binding: u32, phase: TaskPhase) -> Task {
        let mut t = Task::test("t");
        t.metadata.uid = Some("u1".into());
        t.status.node = node.map(str::to_string);
        t.status.binding = binding;
        t.status.phase = phase;
        t
    }

    fn check(current: &Task, uid: Option<&str>, body: &Task) -> String {
        match check_status_precondition(current, uid, &body.status) {
            Ok(()) => "ok".into(),
            Err(Stale(m)) => format!("409 {m}"),
        }
    }

    #[test]
    fn precondition_table() {
        use TaskPhase::*;
        let assigned_a2 = task(Some("a"), 2, Assigned);
        let running_a2 = task(Some("a"), 2, Running);
        let pending = task(None, 1, Pending);
        let cases: Vec<(&str, &Task, Option<&str>, Task, &str)> = vec![
            (
                "the agent of the current attempt reports Running",
                &assigned_a2,
                Some("u1"),
                task(Some("a"), 2, Running),
                "ok",
            ),
            (
                "the agent of the current attempt reports the exit",
                &running_a2,
                Some("u1"),
                task(Some("a"), 2, Succeeded),
                "ok",
            ),
            (
                "a late report of binding 1 lands on binding 2 of the same node",
                &assigned_a2,
                Some("u1"),
                task(Some("a"), 1, Succeeded),
                "409 task \"t\" is bound to node \"a\" (binding 2) now; this write is for binding 1",
            ),
            (
                "a late report from the old node after a re-queue to another",
                &assigned_a2,
                Some("u1"),
                task(Some("b"), 2, Running),
                "409 task \"t\" is bound to node \"a\" (binding 2) now, not on node \"b\"",
            ),
            (
                "a late report after a re-queue, before the next bind",
                &pending,
                None,
                task(Some("a"), 1, Failed),
                "409 task \"t\" is not bound to any node (last binding 1) now, not on node \"a\"",
            ),
            (
                "a write for another task of the same name",
                &running_a2,
                Some("u0"),
                task(Some("a"), 2, Succeeded),
                "409 task \"t\" is another task now (uid u1), not uid u0",
            ),
            (
                "the scheduler binds an unbound task",
                &pending,
                None,
                task(Some("b"), 1, Assigned),
                "ok",
            ),
            (
                "the controllers re-queue (node cleared)",
                &running_a2,
                None,
                task(None, 2, Pending),
                "ok",
            ),
            (
                "a writer naming no binding is not checked against one",
                &running_a2,
                None,
                task(Some("a"), 0, Failed),
                "ok",
            ),
        ];
        for (what, current, uid, body, want) in cases {
            let got = check(current, uid, &body);
            assert!(got.starts_with(want), "{what}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn every_bind_is_a_new_binding() {
        let mut old = task(None, 0, TaskPhase::Pending).status;
        let mut new = task(Some("a"), 7, TaskPhase::Assigned).status;
        stamp_binding(&old, &mut new);
        assert_eq!(
            new.binding, 1,
            "the first bind is binding 1, whatever the body said"
        );
        old = new.clone();
        let mut running = old.clone();
        running.phase = TaskPhase::Running;
        running.binding = 9;
        stamp_binding(&old, &mut running);
        assert_eq!(running.binding, 1, "a write that does not bind keeps it");
        let mut requeued = running.clone();
        requeued.node = None;
        stamp_binding(&running, &mut requeued);
        assert_eq!(requeued.binding, 1);
        let mut again = requeued.clone();
        again.node = Some("a".into());
        stamp_binding(&requeued, &mut again);
        assert_eq!(
            again.binding, 2,
            "a re-bind to the same node is a new attempt"
        );
    }
}
