//! The group controller's decisions: what to do for one `TaskGroup` given its members.
//!
//! [`plan_group`] is a pure function of (group, members, creates in flight, now); the loop in
//! `group_loop.rs` acts on it. Rules, in order:
//! - Not started (`status.startedAt` unset): write the status with `startedAt` first and
//!   create nothing. The server fixes `spec.template` and `spec.indexes` once `startedAt`
//!   is stored, and that write carries the group's `resourceVersion`, so every member is
//!   made from a template that can no longer change.
//! - Stopped (the failure policy tripped, or `spec.state: Killed`): create nothing, kill
//!   every unfinished member.
//! - Otherwise create the lowest indexes without a member, as many as
//!   `parallelism - unfinished - in flight` allows. Architecture Invariant: members created
//!   and not finished, plus creates in flight, never exceed `parallelism`, so no watch event
//!   can show more members running than that; after a restart nothing is created until the
//!   task cache is listed, which holds every member an earlier run created.
//! - The status counts members per phase (in-flight creates, and failed members with
//!   retries left, as Pending; indexes without a member as `notCreated`), names failed members, and sets `Complete` (every member
//!   succeeded) or `Failed` (policy tripped, killed, or finished with failures).
//!
//! - `status.succeededIndexes` and `failedIndexes` record finished indexes, so a finished
//!   member deleted later (its `ttlSecondsAfterFinished`, or by hand) is neither made
//!   again nor forgotten in the counts; an unfinished member deleted by hand is made again.
//!
//! [`plan_orphans`] names members whose group is gone (deleted, or deleted and made again
//! under the same name: another uid): the loop deletes them, which is how deleting a group
//! deletes its members and, through their container finalizer, stops their containers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kohakuriver_api::group::indexes::{format_indexes, parse_indexes, parse_recorded};
use kohakuriver_api::group::member::{member_index, member_name};
use kohakuriver_api::group::{
    FailedMember, GroupState, MAX_FAILED_LISTED, MemberCounts, TaskGroup, TaskGroupStatus,
};
use kohakuriver_api::meta::{ConditionStatus, Timestamp, set_condition};
use kohakuriver_api::{DesiredState, Resource, Task, TaskPhase};

use crate::retry::may_retry;

/// What the group controller does for one group now.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GroupPlan {
    /// Create the members of these indexes.
    pub create: Vec<u32>,
    /// Set `spec.state: Killed` on these members.
    pub kill: Vec<String>,
    /// Write this status (with the group's `resourceVersion` as precondition).
    pub status: Option<TaskGroupStatus>,
}

/// Decides what to do for `group`. `members` are the cached tasks labelled with the group's
/// name (only those whose owner reference names this group's uid count); `in_flight` are the
/// indexes whose create was sent and not yet seen in the cache.
pub fn plan_group(
    group: &TaskGroup,
    members: &[&Task],
    in_flight: &BTreeSet<u32>,
    now: Timestamp,
) -> GroupPlan {
    let Ok(indexes) = parse_indexes(&group.spec.indexes) else {
        // Admission refuses such a group; nothing sensible can be made of one.
        return GroupPlan::default();
    };
    let by_index: BTreeMap<u32, &Task> = members
        .iter()
        .filter_map(|t| member_index(t, group).map(|i| (i, *t)))
        .collect();
    let recorded_ok: BTreeSet<u32> = parse_recorded(&group.status.succeeded_indexes)
        .into_iter()
        .collect();
    let recorded_failed: BTreeSet<u32> = parse_recorded(&group.status.failed_indexes)
        .into_iter()
        .collect();
    let mut counts = MemberCounts::default();
    let mut failed: Vec<FailedMember> = Vec::new();
    let mut missing = Vec::new();
    let (mut ok_now, mut failed_now) = (Vec::new(), Vec::new());
    for &index in &indexes {
        match by_index.get(&index) {
            // A failed member with retries left goes back to Pending (task lifecycle): it
            // still holds its slot, and is no failure yet.
            Some(task) if task.status.phase == TaskPhase::Failed && may_retry(task) => {
                counts.add(TaskPhase::Pending)
            }
            Some(task) => {
                counts.add(task.status.phase);
                if task.status.phase == TaskPhase::Succeeded {
                    ok_now.push(index);
                }
                if task.status.phase.is_terminal() && task.status.phase != TaskPhase::Succeeded {
                    failed_now.push(index);
                    failed.push(FailedMember {
                        index,
                        name: task.metadata.name.clone(),
                        phase: task.status.phase,
                        exit_code: task.status.exit_code,
                        reason: task.status.reason.clone(),
                        finished_at: task.status.finished_at,
                    });
                }
            }
            // A finished member deleted since (TTL, or by hand) stays finished.
            None if recorded_ok.contains(&index) => {
                counts.add(TaskPhase::Succeeded);
                ok_now.push(index);
            }
            None if recorded_failed.contains(&index) => {
                counts.add(TaskPhase::Failed);
                failed_now.push(index);
                let listed = group
                    .status
                    .failed_members
                    .iter()
                    .find(|m| m.index == index);
                failed.extend(listed.cloned());
            }
            None if in_flight.contains(&index) => counts.add(TaskPhase::Pending),
            None => {
                counts.not_created += 1;
                missing.push(index);
            }
        }
    }
    let total = indexes.len() as u32;
    let failures = counts.failures();
    let policy = group.spec.failure_policy.as_ref();
    let tripped = policy.is_some_and(|p| failures >= p.max_failures);
    let killed = group.spec.state == GroupState::Killed;
    let started = group.status.started_at.is_some();

    let mut plan = GroupPlan::default();
    if started && (tripped || killed) {
        plan.kill = by_index
            .values()
            .filter(|t| {
                let retrying = t.status.phase == TaskPhase::Failed && may_retry(t);
                (retrying || !t.status.phase.is_terminal()) && t.spec.state != DesiredState::Killed
            })
            .map(|t| t.metadata.name.clone())
            .collect();
    } else if started {
        let limit = group.spec.parallelism.unwrap_or(total);
        let busy = counts.unfinished();
        let room = limit.saturating_sub(busy) as usize;
        plan.create = missing.iter().copied().take(room).collect();
    }

    let stopped = tripped || killed;
    let finished = started && counts.unfinished() == 0 && (counts.not_created == 0 || stopped);
    let mut status = group.status.clone();
    status.started_at = Some(group.status.started_at.unwrap_or(now));
    status.observed_generation = group.metadata.generation;
    status.total = total;
    status.counts = counts.clone();
    failed.sort_by_key(|m| m.index);
    failed.truncate(MAX_FAILED_LISTED);
    status.succeeded_indexes = format_indexes(ok_now);
    status.failed_indexes = format_indexes(failed_now);
    status.failed_members = failed;
    status.finished_at = if finished {
        Some(group.status.finished_at.unwrap_or(now))
    } else {
        None
    };
    let generation = group.metadata.generation;
    if counts.succeeded == total {
        set_condition(
            &mut status.conditions,
            "Complete",
            ConditionStatus::True,
            Some("AllSucceeded"),
            Some(&format!("all {total} members succeeded")),
            generation,
            now,
        );
    }
    let failure = if tripped {
        let max = policy.map_or(0, |p| p.max_failures);
        Some((
            "FailureLimit",
            format!(
                "{failures} members ended without success (failurePolicy.maxFailures {max}): {}",
                failed_names(&status)
            ),
        ))
    } else if killed {
        Some((
            "Killed",
            "the group was killed (spec.state Killed)".to_string(),
        ))
    } else if finished && failures > 0 {
        Some((
            "MembersFailed",
            format!(
                "{failures} of {total} members ended without success: {}",
                failed_names(&status)
            ),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        set_condition(
            &mut status.conditions,
            "Failed",
            ConditionStatus::True,
            Some(reason),
            Some(&message),
            generation,
            now,
        );
    }
    if status != group.status {
        plan.status = Some(status);
    }
    plan
}

/// `sweep-3 (exit 2), sweep-7 (Lost)`: the failed members listed in `status`.
fn failed_names(status: &TaskGroupStatus) -> String {
    let names: Vec<String> = status
        .failed_members
        .iter()
        .map(|m| match m.exit_code {
            Some(code) => format!("{} (exit {code})", m.name),
            None => format!("{} ({})", m.name, m.phase),
        })
        .collect();
    names.join(", ")
}

/// The tasks owned by a `TaskGroup` that no longer exists (no group of that name, or one
/// with another uid), not already being deleted: the loop deletes them.
pub fn plan_orphans<'a>(
    groups: &HashMap<String, Arc<TaskGroup>>,
    tasks: impl Iterator<Item = &'a Task>,
) -> Vec<(String, String)> {
    tasks
        .filter(|t| !t.metadata.is_deleting())
        .filter_map(|t| {
            let owner = t.metadata.owned_by(TaskGroup::KIND)?;
            let alive = groups
                .get(&owner.name)
                .is_some_and(|g| g.metadata.uid.as_deref() == Some(owner.uid.as_str()));
            (!alive).then(|| {
                (
                    t.metadata.name.clone(),
                    t.metadata.uid.clone().unwrap_or_default(),
                )
            })
        })
        .collect()
}

/// The name of the member of `group` at `index` (for the loop's logs and creates).
pub fn name_of(group: &TaskGroup, index: u32) -> String {
    member_name(&group.metadata.name, index)
}

#[cfg(test)]
mod tests;
