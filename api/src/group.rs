//! The `TaskGroup` resource: one task template run once per index of an index set (a task
//! array, as Slurm's `--array=0-99%8` or Kubernetes' Indexed Job), at most `parallelism`
//! members at a time.
//!
//! The group controller (`controllers/src/group.rs`) creates the members: tasks named
//! `<group>-<index>`, labelled `kohakuriver.io/group=<group>`, owned by the group through
//! an `ownerReference`, with `KOHAKURIVER_ARRAY_INDEX` and `KOHAKURIVER_GROUP` in their
//! environment and `$(VAR)` expanded in their command ([`member::member_task`]). The index
//! grammar is [`indexes`]; validation is [`validate`].

pub mod indexes;
pub mod member;
pub mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, ConditionStatus, ObjectMeta, Timestamp, find_condition};
use crate::resource::{Resource, STATUS_SUBRESOURCE, Subresource};
use crate::task::{TaskPhase, TaskSpec};

/// The label every member carries, naming its group.
pub const GROUP_LABEL: &str = "kohakuriver.io/group";
/// The label every member carries, giving its index.
pub const INDEX_LABEL: &str = "kohakuriver.io/array-index";
/// The environment variable holding a member's index.
pub const INDEX_ENV: &str = "KOHAKURIVER_ARRAY_INDEX";
/// The environment variable holding a member's group name.
pub const GROUP_ENV: &str = "KOHAKURIVER_GROUP";
/// At most this many failed members are named in `status.failedMembers`; the count in
/// `status.counts` is always whole.
pub const MAX_FAILED_LISTED: usize = 100;

/// A task array: `spec.template` run once per index of `spec.indexes`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskGroup {
    /// Always `kohakuriver/v1`.
    pub api_version: String,
    /// Always `TaskGroup`.
    pub kind: String,
    /// Name, labels and server-owned bookkeeping.
    pub metadata: ObjectMeta,
    /// What to run, for which indexes, how many at once.
    pub spec: TaskGroupSpec,
    /// How the members are doing, written by the group controller.
    #[serde(default)]
    pub status: TaskGroupStatus,
}

/// What a group runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskGroupSpec {
    /// The task every member is made from. Fixed once the group has started.
    pub template: TaskTemplate,
    /// The indexes, one member each: `"0-99"`, `"0-9,20,30-32"` (comma-separated numbers and
    /// inclusive ranges, each index once). Fixed once the group has started.
    pub indexes: String,
    /// The most members unfinished (created and not yet Succeeded, Failed, Killed or Lost)
    /// at once; absent means all. May change at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// When to give up; absent means every member runs whatever the others do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// `Running` (default) or `Killed`: a killed group creates no more members and kills
    /// the unfinished ones (`kohakuriver task kill GROUP`).
    #[serde(default, skip_serializing_if = "GroupState::is_running")]
    pub state: GroupState,
}

/// The task template of a group: the labels and annotations every member gets (besides the
/// group's own label) and the member's spec.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskTemplate {
    /// Labels and annotations for every member.
    #[serde(default, skip_serializing_if = "TemplateMeta::is_empty")]
    pub metadata: TemplateMeta,
    /// The member's spec; `$(KOHAKURIVER_ARRAY_INDEX)` and `$(KOHAKURIVER_GROUP)` in its
    /// command are expanded per member.
    pub spec: TaskSpec,
}

/// The metadata a template may set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    /// Labels for every member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for every member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateMeta {
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// When a group stops.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePolicy {
    /// After this many members ended without success (Failed, Killed or Lost), create no
    /// more and kill the unfinished ones. At least 1.
    pub max_failures: u32,
}

/// What the user wants of the group as a whole.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GroupState {
    /// Run the members.
    #[default]
    Running,
    /// Create no more members and kill the unfinished ones.
    Killed,
}

impl GroupState {
    fn is_running(&self) -> bool {
        *self == GroupState::Running
    }
}

/// How a group's members are doing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskGroupStatus {
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the controller accepted the group and began creating members. From then on
    /// `spec.template` and `spec.indexes` are fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When every member that will ever run had finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// How many members the group has (the size of `spec.indexes`).
    #[serde(default)]
    pub total: u32,
    /// Members per phase, and those not created yet.
    #[serde(default)]
    pub counts: MemberCounts,
    /// The indexes whose member succeeded (`0-3,7`): kept when a finished member is deleted
    /// (its `ttlSecondsAfterFinished`, or by hand), so it is not made again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub succeeded_indexes: String,
    /// The indexes whose member ended without success, kept likewise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed_indexes: String,
    /// The members that ended without success, by index (at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_members: Vec<FailedMember>,
    /// `Complete` (every member succeeded) and `Failed` (the failure policy tripped, the
    /// group was killed, or it finished with failures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How many members are in each phase; `notCreated` counts the indexes without a member.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberCounts {
    /// Indexes whose member does not exist yet (or never will, once the group stopped).
    #[serde(default)]
    pub not_created: u32,
    /// Members waiting for a node.
    #[serde(default)]
    pub pending: u32,
    /// Members bound to a node, not yet running.
    #[serde(default)]
    pub assigned: u32,
    /// Members running.
    #[serde(default)]
    pub running: u32,
    /// Members paused.
    #[serde(default)]
    pub paused: u32,
    /// Members whose node went silent.
    #[serde(default)]
    pub unknown: u32,
    /// Members that exited 0.
    #[serde(default)]
    pub succeeded: u32,
    /// Members that failed.
    #[serde(default)]
    pub failed: u32,
    /// Members killed.
    #[serde(default)]
    pub killed: u32,
    /// Members lost with their node.
    #[serde(default)]
    pub lost: u32,
}

impl MemberCounts {
    /// Counts one member in `phase`.
    pub fn add(&mut self, phase: TaskPhase) {
        let slot = match phase {
            TaskPhase::Pending => &mut self.pending,
            TaskPhase::Assigned => &mut self.assigned,
            TaskPhase::Running => &mut self.running,
            TaskPhase::Paused => &mut self.paused,
            TaskPhase::Unknown => &mut self.unknown,
            TaskPhase::Succeeded => &mut self.succeeded,
            TaskPhase::Failed => &mut self.failed,
            TaskPhase::Killed => &mut self.killed,
            TaskPhase::Lost => &mut self.lost,
        };
        *slot += 1;
    }

    /// Members created and not finished.
    pub fn unfinished(&self) -> u32 {
        self.pending + self.assigned + self.running + self.paused + self.unknown
    }

    /// Members that ended without success.
    pub fn failures(&self) -> u32 {
        self.failed + self.killed + self.lost
    }

    /// `3 running, 2 pending, 5 succeeded, 10 not created`: the non-zero counts.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (self.running, "running"),
            (self.paused, "paused"),
            (self.assigned, "assigned"),
            (self.pending, "pending"),
            (self.unknown, "unknown"),
            (self.succeeded, "succeeded"),
            (self.failed, "failed"),
            (self.killed, "killed"),
            (self.lost, "lost"),
            (self.not_created, "not created"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, word)| format!("{n} {word}"))
        .collect();
        if parts.is_empty() {
            "no members".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A member that ended without success.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailedMember {
    /// Its index.
    pub index: u32,
    /// Its task's name.
    pub name: String,
    /// `Failed`, `Killed` or `Lost`.
    pub phase: TaskPhase,
    /// The command's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The task's reason (`Error`, `OOMKilled`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl TaskGroup {
    /// A group with this name, template spec and index set, everything else default.
    pub fn new(name: impl Into<String>, spec: TaskSpec, indexes: impl Into<String>) -> TaskGroup {
        TaskGroup {
            api_version: crate::API_VERSION.to_string(),
            kind: "TaskGroup".to_string(),
            metadata: ObjectMeta::named(name),
            spec: TaskGroupSpec {
                template: TaskTemplate {
                    metadata: TemplateMeta::default(),
                    spec,
                },
                indexes: indexes.into(),
                parallelism: None,
                failure_policy: None,
                state: GroupState::Running,
            },
            status: TaskGroupStatus::default(),
        }
    }

    /// True when condition `type_` is True.
    pub fn condition_holds(&self, type_: &str) -> bool {
        find_condition(&self.status.conditions, type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// True once the group will change no more: every member it will run has finished.
    pub fn is_finished(&self) -> bool {
        self.status.finished_at.is_some()
    }
}

impl Resource for TaskGroup {
    const KIND: &'static str = "TaskGroup";
    const PLURAL: &'static str = "taskgroups";
    const SINGULAR: &'static str = "taskgroup";
    const SHORT_NAMES: &'static [&'static str] = &["tg"];
    const CATEGORIES: &'static [&'static str] = &["all", "kohakuriver"];
    const SUBRESOURCES: &'static [Subresource] = &[STATUS_SUBRESOURCE];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["metadata.name", "metadata.owner"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn field(&self, path: &str) -> Option<String> {
        match path {
            "metadata.name" => Some(self.metadata.name.clone()),
            "metadata.owner" => Some(self.metadata.owner.clone().unwrap_or_default()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_yaml_gets_defaults_and_round_trips() {
        let text = "apiVersion: kohakuriver/v1\nkind: TaskGroup\nmetadata: {name: sweep}\nspec:\n  indexes: 0-9\n  template:\n    spec: {command: [echo, $(KOHAKURIVER_ARRAY_INDEX)]}\n";
        let g: TaskGroup = serde_yaml::from_str(text).unwrap();
        assert_eq!(g.spec.state, GroupState::Running);
        assert_eq!(g.spec.parallelism, None);
        assert_eq!(g.spec.template.spec.resources.cpu, 1);
        let again: TaskGroup = serde_yaml::from_str(&serde_yaml::to_string(&g).unwrap()).unwrap();
        assert_eq!(again, g);
    }

    #[test]
    fn counts_summarise_non_zero_phases() {
        let mut c = MemberCounts {
            not_created: 10,
            ..Default::default()
        };
        c.add(TaskPhase::Running);
        c.add(TaskPhase::Failed);
        c.add(TaskPhase::Lost);
        assert_eq!(c.summary(), "1 running, 1 failed, 1 lost, 10 not created");
        assert_eq!((c.unfinished(), c.failures()), (1, 2));
        assert_eq!(MemberCounts::default().summary(), "no members");
    }
}
