//! Resource types, parsing and validation for KohakuRiver.
//!
//! This crate is the contract every other crate speaks: the `Task` and `Node` objects as
//! stored by the API server, the grammars users type (targets, memory sizes, label and field
//! selectors, cpusets), validation with errors that name the field and the bad value, the
//! one error shape the server answers with, and watch events. It does no IO and knows no
//! clock: anything time-dependent takes `now` as an argument.

pub mod agent_url;
pub mod auth;
pub mod columns;
pub mod cpuset;
pub mod dependency;
pub mod discovery;
pub mod error;
pub mod event;
pub mod field_manager;
pub mod field_validation;
pub mod group;
pub mod info;
pub mod json_patch;
pub mod logstream;
pub mod manifest;
pub mod media;
pub mod meta;
pub mod node;
pub mod openapi;
pub mod outcome;
pub mod precondition;
pub mod quantity;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod table;
pub mod target;
pub mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod usage;
pub mod validation;
pub mod watch;

pub use auth::{Identity, Policy, Role};
pub use cpuset::CpuSet;
pub use dependency::{Dependency, DependencyCondition, DependencyKind};
pub use error::{Cause, Status, StatusReason};
pub use event::{Event, EventSource, EventType, InvolvedObject};
pub use group::{TaskGroup, TaskGroupSpec, TaskGroupStatus};
pub use info::ServerInfo;
pub use logstream::LogStream;
pub use manifest::{Manifest, ManifestError};
pub use meta::{Condition, ConditionStatus, ObjectMeta, OwnerReference, Timestamp};
pub use node::{Gpu, Node, NodeResources, NodeSpec, NodeStatus, NodeUsage, NumaNode};
pub use quantity::Memory;
pub use resource::Resource;
pub use selector::{FieldSelector, LabelSelector, Selectable};
pub use target::Target;
pub use task::{
    Allocation, DesiredState, Placement, Resources, Task, TaskPhase, TaskSpec, TaskStatus,
};
pub use usage::{GpuUsage, TaskUsage};
pub use validation::FieldError;
pub use watch::{ApplyOutcome, ApplyResult, Bookmark, List, ListMeta, WatchEvent};

/// The `apiVersion` of every object this project serves.
pub const API_VERSION: &str = "kohakuriver/v1";

/// The API group path prefix: `/apis/kohakuriver/v1`.
pub const API_PREFIX: &str = "/apis/kohakuriver/v1";

/// Finalizer the API server puts on every task once it is bound to a node. The owning agent
/// (or, for a node that is gone, the node lifecycle controller) removes it after the task's
/// container is gone, so a deleted task never leaves a container running unseen.
pub const CONTAINER_FINALIZER: &str = "kohakuriver.io/container";

/// The task condition that records a gap in contact with its node: True (reason
/// `NodeUnreachable`) while the task is `Unknown`, False (reason `NodeReachable`) once its
/// agent reported again.
pub const NODE_UNREACHABLE_CONDITION: &str = "NodeUnreachable";

/// Label keys put on every task container, so an agent can find its containers again.
pub mod labels {
    /// The task's name.
    pub const TASK: &str = "kohakuriver.task";
    /// The task's uid: a task deleted and recreated under the same name is another task.
    pub const UID: &str = "kohakuriver.uid";
    /// The node (agent) that created the container.
    pub const NODE: &str = "kohakuriver.node";
}
