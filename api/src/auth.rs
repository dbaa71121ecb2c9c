//! Who may do what. Identities and roles, the verbs and targets of the API, and
//! [`authorize`], the one pure function every request's permission comes from. Also the
//! admission policy for dangerous specs ([`check_spec`]), who may write which part of a
//! task's status ([`check_task_status`]), and the token format.
//!
//! Roles, from least to most: `viewer` reads tasks, nodes and logs; `user` also submits
//! tasks and manages its own; `operator` manages every task and cordons nodes; `admin` also
//! manages tokens. Machines have their own roles: `node` (an agent, bound to one node name),
//! `controllers` (scheduler and lifecycles) and `join` (may only exchange itself for a node
//! credential).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::group::TaskGroup;
use crate::meta::Timestamp;
use crate::node::{Node, NodeStatus};
use crate::resource::Resource;
use crate::task::{Allocation, Task, TaskPhase, TaskSpec};
use crate::{CpuSet, DesiredState};

/// The prefix of every token: `krv_<id>_<secret>`.
pub const TOKEN_PREFIX: &str = "krv_";
/// Length of a token's public id part.
pub const TOKEN_ID_LEN: usize = 8;
/// Length of a token's secret part (base62, about 190 bits).
pub const TOKEN_SECRET_LEN: usize = 32;

/// What an identity is allowed to be.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads tasks, nodes and logs.
    Viewer,
    /// Submits tasks; kills, pauses, resumes, changes and deletes its own.
    User,
    /// Everything a user may, on every task; cordons nodes; privileged tasks and host mounts.
    Operator,
    /// Everything an operator may; manages tokens.
    Admin,
    /// A node agent: its own Node, and the tasks bound to it.
    Node,
    /// The scheduler and lifecycle controllers: bind tasks and write lifecycle status.
    Controllers,
    /// A join credential: may only be exchanged for a node credential.
    Join,
    /// A monitoring scraper: reads `GET /metrics` and nothing else of the cluster.
    Metrics,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Viewer,
        Role::User,
        Role::Operator,
        Role::Admin,
        Role::Node,
        Role::Controllers,
        Role::Join,
        Role::Metrics,
    ];

    /// The role's name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Node => "node",
            Role::Controllers => "controllers",
            Role::Join => "join",
            Role::Metrics => "metrics",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("{s:?} is not a role; expected one of {}", names.join(", "))
            })
    }

    /// Rank among the people's roles (viewer < user < operator < admin); machines have none.
    fn rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(0),
            Role::User => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
            Role::Node | Role::Controllers | Role::Join | Role::Metrics => None,
        }
    }

    /// True when this is a people's role at least as strong as `other`.
    pub fn at_least(self, other: Role) -> bool {
        matches!((self.rank(), other.rank()), (Some(a), Some(b)) if a >= b)
    }

    /// What the role may do, in one line per ability (for `whoami`).
    pub fn abilities(self) -> &'static [&'static str] {
        match self {
            Role::Viewer => &["read tasks, nodes and task logs"],
            Role::User => &[
                "read tasks, nodes and task logs",
                "submit tasks",
                "kill, pause, resume, change and delete your own tasks",
                "mount host paths under the allowed prefixes",
            ],
            Role::Operator => &[
                "read tasks, nodes and task logs",
                "submit tasks",
                "kill, pause, resume, change and delete any task",
                "cordon and uncordon nodes",
                "run privileged tasks and mount any host path (as the server's policy allows)",
            ],
            Role::Admin => &[
                "everything an operator may",
                "delete nodes",
                "create, list and revoke tokens",
            ],
            Role::Node => &[
                "register and update its own node",
                "read the tasks bound to it and write their status",
            ],
            Role::Controllers => &[
                "read every task and node",
                "bind tasks and write their lifecycle status",
                "kill tasks past their deadline and delete finished tasks",
            ],
            Role::Join => &["exchange itself for a node credential (kohakuriver agent --token)"],
            Role::Metrics => &["read the server's metrics (GET /metrics)"],
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a request: a name and a role. For a node, the name is its node name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The token's name (a person, a pipeline, a node name).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Identity {
    /// An identity.
    pub fn new(name: impl Into<String>, role: Role) -> Identity {
        Identity {
            name: name.into(),
            role,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one object.
    Get,
    /// List a collection.
    List,
    /// Watch a collection.
    Watch,
    /// Create an object.
    Create,
    /// Change an object's spec, labels or annotations.
    Update,
    /// Set a task's desired state to Killed.
    Kill,
    /// Set a task's desired state to Paused.
    Pause,
    /// Set a paused task's desired state back to Running.
    Resume,
    /// Remove a finalizer and nothing else.
    RemoveFinalizer,
    /// Write the status subresource.
    UpdateStatus,
    /// Delete an object.
    Delete,
    /// Read a task's output.
    Logs,
    /// Create, list or revoke tokens.
    ManageTokens,
    /// Exchange a join credential for a node credential.
    Join,
    /// Read the secret the server uses to call a node's agent.
    NodeCredentials,
    /// Copy the whole store (`GET /backup`).
    Backup,
}

impl Verb {
    /// The verb as a sentence says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "read",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "change",
            Verb::Kill => "kill",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::RemoveFinalizer => "remove a finalizer of",
            Verb::UpdateStatus => "write the status of",
            Verb::Delete => "delete",
            Verb::Logs => "read the logs of",
            Verb::ManageTokens => "manage",
            Verb::Join => "join as",
            Verb::NodeCredentials => "read the agent credentials of",
            Verb::Backup => "back up",
        }
    }

    /// True for verbs that only read.
    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch | Verb::Logs)
    }
}

/// What a request acts on.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The server's own endpoints (info, schemas, whoami).
    Server,
    /// API discovery (`/api`, `/apis/…`), `/version` and the OpenAPI documents: what the
    /// server serves, which every identity that uses the API may read.
    Discovery,
    /// The task collection; `node` is the node a `status.node=NAME` field selector pins it to.
    Tasks {
        /// The node the request is limited to, if any.
        node: Option<&'a str>,
    },
    /// One task: the stored one, or the new one on create.
    Task(&'a Task),
    /// The task group collection.
    TaskGroups,
    /// One task group: the stored one, or the new one on create.
    TaskGroup(&'a TaskGroup),
    /// The event collection.
    Events,
    /// One event: the stored one, or the new one on create.
    Event(&'a Event),
    /// The node collection.
    Nodes,
    /// One node, by name.
    Node(&'a str),
    /// The token store.
    Tokens,
    /// The whole store: every object, the watch history, token hashes and the server's keys.
    Store,
    /// The server's Prometheus metrics (`GET /metrics`): counts and latencies, plus the
    /// names of nodes (heartbeat ages), never an object's spec or output.
    Metrics,
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Target::Server => "the server".to_string(),
            Target::Discovery => "the API discovery documents".to_string(),
            Target::Tasks { node: Some(n) } => format!("the tasks of node {n}"),
            Target::Tasks { node: None } => "tasks".to_string(),
            Target::Task(t) => {
                let mut s = format!("task {}", t.metadata.name);
                match (&t.metadata.owner, &t.status.node) {
                    (Some(owner), _) => s.push_str(&format!(" owned by {owner:?}")),
                    (None, _) => s.push_str(" (no owner)"),
                }
                s
            }
            Target::TaskGroups => "task groups".to_string(),
            Target::TaskGroup(g) => match &g.metadata.owner {
                Some(owner) => format!("task group {} owned by {owner:?}", g.metadata.name),
                None => format!("task group {} (no owner)", g.metadata.name),
            },
            Target::Events => "events".to_string(),
            Target::Event(e) => format!(
                "event {} about {}",
                e.metadata.name,
                e.involved_object.kind_name()
            ),
            Target::Nodes => "nodes".to_string(),
            Target::Node(n) => format!("node {n}"),
            Target::Tokens => "tokens".to_string(),
            Target::Store => "the store".to_string(),
            Target::Metrics => "the server's metrics".to_string(),
        }
    }
}

/// The server's authorization settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Users see only their own tasks and logs (Slurm's PrivateData).
    pub private_tasks: bool,
    /// The weakest role that may run privileged tasks (default operator).
    pub privileged_for: Role,
    /// Host paths a `user` may mount (and everything below them).
    pub user_mount_prefixes: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            private_tasks: false,
            privileged_for: Role::Operator,
            user_mount_prefixes: Vec::new(),
        }
    }
}

/// A refusal, with the sentence that explains it, e.g.
/// `user "bob" may not kill task t1 owned by "alice"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial(pub String);

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn deny(
    who: &Identity,
    verb: Verb,
    target: &Target<'_>,
    why: &str,
) -> Result<(), Denial> {
    let mut message = format!(
        "{} {:?} may not {} {}",
        who.role,
        who.name,
        verb.as_str(),
        target.describe()
    );
    if !why.is_empty() {
        message.push_str(": ");
        message.push_str(why);
    }
    Err(Denial(message))
}

/// True when `identity` owns `task`.
pub fn owns(identity: &Identity, task: &Task) -> bool {
    task.metadata.owner.as_deref() == Some(identity.name.as_str())
}

/// Decides whether `identity` may do `verb` on `target`. Spec policy (privileged tasks,
/// host mounts) is [`check_spec`]; status contents are [`check_task_status`].
pub fn authorize(
    identity: &Identity,
    verb: Verb,
    target: &Target<'_>,
    policy: &Policy,
) -> Result<(), Denial> {
    use Verb::*;
    let who = identity;
    let refuse = |why: &str| deny(who, verb, target, why);
    // Every identity may read what the server says about itself.
    if let Target::Server = target {
        return match verb {
            Get => Ok(()),
            Join if who.role == Role::Join => Ok(()),
            _ => refuse(""),
        };
    }
    // Every identity that uses the API may learn what it serves, as every authenticated
    // Kubernetes user may; a join credential uses nothing but `POST /join`, a metrics
    // credential nothing but `GET /metrics`.
    if let Target::Discovery = target {
        return match verb {
            Get if !matches!(who.role, Role::Join | Role::Metrics) => Ok(()),
            _ if who.role == Role::Metrics => {
                refuse("a metrics credential may only read GET /metrics")
            }
            _ => refuse("a join credential may only join a node (kohakuriver agent --token)"),
        };
    }
    // The metrics are read by every person and by a metrics-only credential (a
    // Prometheus scraper that should see nothing else); machines' credentials are for
    // their own work.
    if let Target::Metrics = target {
        return match verb {
            Get if who.role == Role::Metrics || who.role.at_least(Role::Viewer) => Ok(()),
            _ if who.role.at_least(Role::Viewer) => refuse("the metrics are only read"),
            _ => refuse(
                "the metrics are read by people's credentials (viewer and up) and metrics credentials (token create --role metrics)",
            ),
        };
    }
    match who.role {
        Role::Join => refuse("a join credential may only join a node (kohakuriver agent --token)"),
        Role::Metrics => refuse("a metrics credential may only read GET /metrics"),
        Role::Node => match target {
            Target::Node(name) if *name == who.name => match verb {
                Get | Create | Update | UpdateStatus | NodeCredentials => Ok(()),
                _ => refuse(""),
            },
            Target::Node(_) | Target::Nodes => {
                refuse("a node may only read and write its own Node")
            }
            Target::Tasks { node: Some(n) } if *n == who.name => match verb {
                List | Watch => Ok(()),
                _ => refuse(""),
            },
            Target::Tasks { .. } => refuse(&format!(
                "a node may only list the tasks bound to it (fieldSelector=status.node={})",
                who.name
            )),
            Target::Task(t) if t.status.node.as_deref() == Some(who.name.as_str()) => match verb {
                Get | UpdateStatus | RemoveFinalizer => Ok(()),
                _ => refuse("a node may only read the tasks bound to it and write their status"),
            },
            Target::Task(_) => refuse("the task is not bound to this node"),
            Target::TaskGroups | Target::TaskGroup(_) => {
                refuse("a node reads only the tasks bound to it, never task groups")
            }
            Target::Events | Target::Event(_) => events::node_on_events(who, verb, target),
            Target::Tokens
            | Target::Store
            | Target::Server
            | Target::Discovery
            | Target::Metrics => refuse(""),
        },
        Role::Controllers => match (verb, target) {
            (Get | List | Watch, Target::Tasks { .. } | Target::Task(_))
            | (Get | List | Watch, Target::Nodes | Target::Node(_)) => Ok(()),
            (UpdateStatus | Kill | RemoveFinalizer | Delete, Target::Task(_)) => Ok(()),
            (UpdateStatus, Target::Node(_)) => Ok(()),
            // The group controller: reads groups, writes their status, and creates their
            // members (tasks owned by a group, and only those).
            (Get | List | Watch | UpdateStatus, Target::TaskGroups | Target::TaskGroup(_)) => {
                Ok(())
            }
            (Create, Target::Task(t)) if t.metadata.owned_by(TaskGroup::KIND).is_some() => Ok(()),
            // Events: written by the scheduler and lifecycles, expired after --event-ttl.
            (Get | List | Watch | Create | Update | Delete, Target::Events | Target::Event(_)) => {
                Ok(())
            }
            _ => refuse("the controllers bind tasks and write lifecycle status only"),
        },
        Role::Viewer | Role::User | Role::Operator | Role::Admin => {
            authorize_person(who, verb, target, policy)
        }
    }
}

fn authorize_person(
    who: &Identity,
    verb: Verb,
    target: &Target<'_>,
    policy: &Policy,
) -> Result<(), Denial> {
    use Verb::*;
    let role = who.role;
    let refuse = |why: &str| deny(who, verb, target, why);
    match target {
        Target::Server | Target::Discovery | Target::Metrics => Ok(()),
        Target::Tokens => {
            if role == Role::Admin && verb == ManageTokens {
                Ok(())
            } else {
                refuse("only an admin manages tokens")
            }
        }
        // A backup holds every token hash and the server's own keys.
        Target::Store => {
            if role == Role::Admin && verb == Backup {
                Ok(())
            } else {
                refuse("only an admin backs up the store")
            }
        }
        Target::Nodes | Target::Node(_) => match verb {
            Get | List | Watch => Ok(()),
            Update if role.at_least(Role::Operator) => Ok(()),
            Create | Delete | UpdateStatus if role == Role::Admin => Ok(()),
            Update => refuse("cordoning nodes needs role operator"),
            NodeCredentials => refuse("only the node itself reads its agent credentials"),
            _ => {
                refuse("nodes register themselves; only an admin may create, delete or write them")
            }
        },
        Target::Tasks { .. } => match verb {
            Get | List | Watch => Ok(()),
            _ => refuse(""),
        },
        Target::TaskGroups => match verb {
            Get | List | Watch => Ok(()),
            _ => refuse(""),
        },
        Target::TaskGroup(group) => authorize_group(who, verb, group, policy),
        Target::Events | Target::Event(_) => events::person_on_events(who, verb, target, policy),
        Target::Task(task) if verb == Create && !task.metadata.owner_references.is_empty() => {
            refuse(
                "metadata.ownerReferences is set by the group controller on the members it creates; leave it out",
            )
        }
        Target::Task(task) => {
            let mine = owns(who, task);
            let private = policy.private_tasks && role == Role::User && !mine;
            match verb {
                Get | Logs if private => refuse("tasks are private to their owners on this server"),
                Get | List | Watch | Logs => Ok(()),
                UpdateStatus if role == Role::Admin => Ok(()),
                UpdateStatus => {
                    refuse("task status is written by the scheduler and the node agents")
                }
                Create if role.at_least(Role::User) => Ok(()),
                Update | Kill | Pause | Resume | Delete | RemoveFinalizer
                    if role.at_least(Role::Operator) || (role == Role::User && mine) =>
                {
                    Ok(())
                }
                _ if role == Role::Viewer => refuse("a viewer may only read"),
                _ if role == Role::User => refuse("a user may change only their own tasks"),
                _ => refuse(""),
            }
        }
    }
}

/// A person's rights on a task group: the same as on a task (a user creates groups and
/// manages their own, an operator every one, a viewer reads).
fn authorize_group(
    who: &Identity,
    verb: Verb,
    group: &TaskGroup,
    policy: &Policy,
) -> Result<(), Denial> {
    use Verb::*;
    let role = who.role;
    let target = Target::TaskGroup(group);
    let refuse = |why: &str| deny(who, verb, &target, why);
    let mine = group.metadata.owner.as_deref() == Some(who.name.as_str());
    let private = policy.private_tasks && role == Role::User && !mine;
    match verb {
        Get if private => refuse("task groups are private to their owners on this server"),
        Get | List | Watch => Ok(()),
        UpdateStatus if role == Role::Admin => Ok(()),
        UpdateStatus => refuse("a task group's status is written by the group controller"),
        Create if role.at_least(Role::User) => Ok(()),
        Update | Kill | Delete | RemoveFinalizer
            if role.at_least(Role::Operator) || (role == Role::User && mine) =>
        {
            Ok(())
        }
        _ if role == Role::Viewer => refuse("a viewer may only read"),
        _ if role == Role::User => refuse("a user may change only their own task groups"),
        _ => refuse(""),
    }
}

/// The owner a user's lists and watches are limited to (`--private-tasks`), if any.
pub fn list_scope<'a>(identity: &'a Identity, policy: &Policy) -> Option<&'a str> {
    (policy.private_tasks && identity.role == Role::User).then_some(identity.name.as_str())
}

/// What a change of a task's spec and metadata amounts to, for [`authorize`]: a kill, pause,
/// resume, the removal of finalizers alone, or a general update.
pub fn task_change(old: &Task, new: &Task) -> Verb {
    let meta_same = old.metadata.labels == new.metadata.labels
        && old.metadata.annotations == new.metadata.annotations;
    let mut spec = new.spec.clone();
    spec.state = old.spec.state;
    let only_state =
        meta_same && spec == old.spec && old.metadata.finalizers == new.metadata.finalizers;
    if only_state && old.spec.state != new.spec.state {
        return match new.spec.state {
            DesiredState::Killed => Verb::Kill,
            DesiredState::Paused => Verb::Pause,
            DesiredState::Running => Verb::Resume,
        };
    }
    let fewer_finalizers = new
        .metadata
        .finalizers
        .iter()
        .all(|f| old.metadata.finalizers.contains(f))
        && new.metadata.finalizers.len() < old.metadata.finalizers.len();
    if meta_same && new.spec == old.spec && fewer_finalizers {
        return Verb::RemoveFinalizer;
    }
    Verb::Update
}

/// Lexically normalised absolute path: `.` and `..` resolved, duplicate slashes gone. The
/// agent resolves symlinks on top of this (it alone sees the host's file system).
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// True when `path` is `prefix` or below it (both absolute, compared after normalising).
pub fn path_within(path: &str, prefix: &str) -> bool {
    let path = normalize_path(path);
    let prefix = normalize_path(prefix);
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// The host path of a mount `HOST:CONTAINER[:mode]`.
pub fn mount_host_path(mount: &str) -> &str {
    mount.split(':').next().unwrap_or(mount)
}

/// Admission policy for dangerous specs: privileged containers and host mounts. `old` is
/// the stored spec on an update (only what changes is judged, so tightening the policy
/// never blocks an unrelated edit); `None` on create. The refusal names the field and the
/// rule.
pub fn check_spec(
    identity: &Identity,
    spec: &TaskSpec,
    old: Option<&TaskSpec>,
    policy: &Policy,
) -> Result<(), Denial> {
    let who = format!("{} {:?}", identity.role, identity.name);
    let privileged_changed = old.is_none_or(|o| o.privileged != spec.privileged);
    if spec.privileged && privileged_changed && !identity.role.at_least(policy.privileged_for) {
        return Err(Denial(format!(
            "{who} may not run privileged tasks: spec.privileged needs role {} or above (server flag --privileged-for)",
            policy.privileged_for
        )));
    }
    if identity.role.at_least(Role::Operator) {
        return Ok(());
    }
    for (i, mount) in spec.mounts.iter().enumerate() {
        if old.is_some_and(|o| o.mounts.contains(mount)) {
            continue;
        }
        let host = mount_host_path(mount);
        if !policy
            .user_mount_prefixes
            .iter()
            .any(|p| path_within(host, p))
        {
            let allowed = if policy.user_mount_prefixes.is_empty() {
                "none are allowed on this server".to_string()
            } else {
                format!("allowed: {}", policy.user_mount_prefixes.join(", "))
            };
            return Err(Denial(format!(
                "{who} may not mount host path {host:?} (spec.mounts[{i}]): a {} may mount only under the server's --user-mount-prefixes ({allowed}); ask an operator",
                identity.role
            )));
        }
    }
    Ok(())
}

/// Why a status write is refused: the writer may not make it (403), it is about an attempt
/// that is not the current one (409), or the new status is not a legal successor of the
/// stored one (422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusRefusal {
    /// The identity may not make this change.
    Forbidden(String),
    /// The write is about an attempt that is no longer the task's current one: a node
    /// writing a task bound elsewhere now (409).
    Stale(String),
    /// No writer may make this change.
    Invalid {
        /// The status field at fault.
        field: String,
        /// Why.
        message: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> StatusRefusal {
    StatusRefusal::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// True when a task may go from phase `from` to `to` (staying is always allowed).
pub fn legal_transition(from: TaskPhase, to: TaskPhase) -> bool {
    use TaskPhase::*;
    if from == to {
        return true;
    }
    match from {
        Pending => matches!(to, Assigned | Failed | Killed),
        Assigned | Running | Paused => to != Assigned || from == Assigned,
        // The node came back (its agent reports what happened), or it is lost for good.
        Unknown => !matches!(to, Pending | Assigned),
        // A failed attempt goes back to the queue when retries remain.
        Failed => to == Pending,
        Succeeded | Killed | Lost => false,
    }
}

/// Phases only the node a task is bound to reports.
fn runtime_phase(phase: TaskPhase) -> bool {
    matches!(
        phase,
        TaskPhase::Running | TaskPhase::Paused | TaskPhase::Succeeded
    )
}

/// Checks a write of a task's status by `identity` against the stored task and its node:
/// only the controllers (or an admin) bind, unbind or write lifecycle phases; only the
/// bound node reports runtime phases; only legal transitions; and a new binding must fit
/// its node and match the spec. `node` is the node of the new binding, when it exists.
pub fn check_task_status(
    identity: &Identity,
    current: &Task,
    new: &Task,
    node: Option<&Node>,
) -> Result<(), StatusRefusal> {
    let (old, s) = (&current.status, &new.status);
    let who = format!("{} {:?}", identity.role, identity.name);
    let binding_changed = old.node != s.node || old.allocation != s.allocation;
    let scheduler = matches!(identity.role, Role::Controllers | Role::Admin);
    let bound_node = identity.role == Role::Node && old.node.as_deref() == Some(&identity.name);
    if identity.role == Role::Node && !bound_node && !binding_changed {
        // The task was bound here once (or the write would make no sense); it is another
        // attempt's now, so this is a late report: stale, not forbidden.
        return Err(StatusRefusal::Stale(format!(
            "task {} is {} now, not to node {:?}: this report is stale; drop it",
            current.metadata.name,
            crate::precondition::describe(old),
            identity.name
        )));
    }
    if !scheduler && !bound_node {
        return Err(StatusRefusal::Forbidden(format!(
            "{who} may not write the status of task {}",
            current.metadata.name
        )));
    }
    if binding_changed && !scheduler {
        return Err(StatusRefusal::Forbidden(format!(
            "{who} may not change the binding of task {} (status.node, status.allocation): only the scheduler binds",
            current.metadata.name
        )));
    }
    if !legal_transition(old.phase, s.phase) {
        return Err(invalid(
            "status.phase",
            format!("a task cannot go from {} to {}", old.phase, s.phase),
        ));
    }
    if old.phase != s.phase && runtime_phase(s.phase) && !bound_node {
        return Err(StatusRefusal::Forbidden(format!(
            "{who} may not report phase {} for task {}: only its node's agent does",
            s.phase, current.metadata.name
        )));
    }
    if old.phase != s.phase && s.phase == TaskPhase::Unknown && !scheduler {
        return Err(StatusRefusal::Forbidden(format!(
            "{who} may not mark task {} Unknown: only the controllers do, when its node stops answering",
            current.metadata.name
        )));
    }
    if s.phase == TaskPhase::Assigned && s.node.is_none() {
        return Err(invalid(
            "status.node",
            "an Assigned task must name its node",
        ));
    }
    if binding_changed && let (Some(node_name), Some(allocation)) = (&s.node, &s.allocation) {
        if old.node.is_some() && old.node != s.node && !s.phase.is_terminal() {
            return Err(invalid(
                "status.node",
                "a bound task cannot move to another node; re-queue it (phase Pending, no node) first",
            ));
        }
        let Some(node) = node else {
            return Err(invalid(
                "status.node",
                format!("node {node_name:?} does not exist"),
            ));
        };
        check_fit(new, allocation, &node.status)?;
        if let Some(wanted) = &new.spec.placement.node
            && wanted != node_name
        {
            return Err(invalid(
                "status.node",
                format!("the task must run on node {wanted:?} (spec.placement.node)"),
            ));
        }
    } else if binding_changed && s.node.is_some() != s.allocation.is_some() {
        return Err(invalid(
            "status.allocation",
            "status.node and status.allocation are set together",
        ));
    }
    Ok(())
}

/// Most cores, GPUs and NUMA nodes a node may report, and the longest cpuset text: real
/// machines stay far below, and the bounds keep every later computation small.
pub const MAX_NODE_CORES: u32 = 4096;
/// See [`MAX_NODE_CORES`].
pub const MAX_NODE_GPUS: usize = 64;
/// See [`MAX_NODE_CORES`].
pub const MAX_NUMA_NODES: usize = 64;
/// See [`MAX_NODE_CORES`].
pub const MAX_CPUSET_RANGES: usize = 256;

/// The cores a node has: the union of its NUMA nodes' cpusets, or `0..capacity.cpu`.
pub fn node_cores(status: &NodeStatus) -> CpuSet {
    let from_numa: CpuSet = status
        .numa
        .iter()
        .flat_map(|n| {
            CpuSet::parse(&n.cpus)
                .unwrap_or_default()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    if from_numa.is_empty() {
        (0..status.capacity.cpu).collect()
    } else {
        from_numa
    }
}

/// A binding's allocation must exist on its node and be what the spec asks for.
fn check_fit(task: &Task, allocation: &Allocation, node: &NodeStatus) -> Result<(), StatusRefusal> {
    let cpus = CpuSet::parse(&allocation.cpus).map_err(|e| invalid("status.allocation.cpus", e))?;
    let have = node_cores(node);
    if let Some(core) = cpus.iter().find(|c| !have.contains(*c)) {
        return Err(invalid(
            "status.allocation.cpus",
            format!("core {core} does not exist on the node (it has {have})"),
        ));
    }
    let want_cpu = task.spec.resources.cpu as usize;
    if cpus.len() != want_cpu {
        return Err(invalid(
            "status.allocation.cpus",
            format!(
                "{} cores allocated but the spec asks for {want_cpu}",
                cpus.len()
            ),
        ));
    }
    for g in &allocation.gpus {
        if !node.gpus.iter().any(|gpu| gpu.index == *g) {
            return Err(invalid(
                "status.allocation.gpus",
                format!("GPU {g} does not exist on the node"),
            ));
        }
    }
    let mut distinct = allocation.gpus.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != allocation.gpus.len() || distinct.len() as u32 != task.gpu_count() {
        return Err(invalid(
            "status.allocation.gpus",
            format!(
                "{:?} allocated but the spec asks for {} distinct GPUs",
                allocation.gpus,
                task.gpu_count()
            ),
        ));
    }
    if let Some(ids) = &task.spec.placement.gpu_ids {
        let mut want = ids.clone();
        want.sort_unstable();
        if want != distinct {
            return Err(invalid(
                "status.allocation.gpus",
                format!("the spec names GPUs {ids:?} (spec.placement.gpuIds)"),
            ));
        }
    }
    let want_memory = task.spec.resources.memory.as_ref().map(|m| m.bytes());
    if allocation.memory_bytes != want_memory {
        return Err(invalid(
            "status.allocation.memoryBytes",
            format!(
                "{:?} allocated but the spec asks for {want_memory:?}",
                allocation.memory_bytes
            ),
        ));
    }
    if let (Some(want), Some(got)) = (task.spec.placement.numa, allocation.numa)
        && want != got
    {
        return Err(invalid(
            "status.allocation.numa",
            format!("the spec asks for NUMA node {want}"),
        ));
    }
    Ok(())
}

/// Bounds on what an agent may report, checked before anything else looks at it.
pub fn validate_node_status(status: &NodeStatus) -> Vec<crate::FieldError> {
    use crate::FieldError;
    let mut errors = Vec::new();
    for (field, r) in [
        ("status.capacity", &status.capacity),
        ("status.allocatable", &status.allocatable),
    ] {
        if r.cpu > MAX_NODE_CORES {
            errors.push(FieldError::new(
                format!("{field}.cpu"),
                format!(
                    "{} cores is more than the {MAX_NODE_CORES} a node may have",
                    r.cpu
                ),
            ));
        }
        if r.gpus as usize > MAX_NODE_GPUS {
            errors.push(FieldError::new(
                format!("{field}.gpus"),
                format!(
                    "{} GPUs is more than the {MAX_NODE_GPUS} a node may have",
                    r.gpus
                ),
            ));
        }
    }
    if status.numa.len() > MAX_NUMA_NODES {
        errors.push(FieldError::new(
            "status.numa",
            format!(
                "{} NUMA nodes is more than {MAX_NUMA_NODES}",
                status.numa.len()
            ),
        ));
    }
    if status.gpus.len() > MAX_NODE_GPUS {
        errors.push(FieldError::new(
            "status.gpus",
            format!("{} GPUs is more than {MAX_NODE_GPUS}", status.gpus.len()),
        ));
    }
    if let Some(usage) = &status.usage {
        errors.extend(validate_usage(usage));
    }
    for (i, numa) in status.numa.iter().enumerate().take(MAX_NUMA_NODES) {
        let field = format!("status.numa[{i}].cpus");
        let ranges = numa.cpus.split(',').count();
        if numa.cpus.len() > 16 * MAX_CPUSET_RANGES || ranges > MAX_CPUSET_RANGES {
            errors.push(FieldError::new(
                field,
                format!("{ranges} ranges is more than {MAX_CPUSET_RANGES}"),
            ));
            continue;
        }
        match CpuSet::parse_bounded(&numa.cpus, MAX_NODE_CORES) {
            Ok(_) => {}
            Err(e) => errors.push(FieldError::new(field, e)),
        }
    }
    if let Some(address) = &status.address
        && let Err(e) = check_agent_address(address)
    {
        errors.push(FieldError::new("status.address", e));
    }
    if let Some(image) = &status.default_image
        && (image.is_empty()
            || image.len() > MAX_IMAGE_REF
            || image.chars().any(char::is_whitespace))
    {
        errors.push(FieldError::new(
            "status.defaultImage",
            format!("must be an image reference of 1 to {MAX_IMAGE_REF} characters without spaces"),
        ));
    }
    errors
}

/// The longest image reference a node may report.
const MAX_IMAGE_REF: usize = 512;

/// Bounds on the usage figures a heartbeat carries: at most as many GPU readings as a node
/// may have GPUs, at most [`crate::usage::MAX_USAGE_TASKS`] task entries, each naming a uid
/// of at most 64 characters.
fn validate_usage(usage: &crate::NodeUsage) -> Vec<crate::FieldError> {
    use crate::FieldError;
    use crate::usage::MAX_USAGE_TASKS;
    let mut errors = Vec::new();
    if usage.gpus.len() > MAX_NODE_GPUS {
        errors.push(FieldError::new(
            "status.usage.gpus",
            format!("{} GPUs is more than {MAX_NODE_GPUS}", usage.gpus.len()),
        ));
    }
    if usage.tasks.len() > MAX_USAGE_TASKS {
        errors.push(FieldError::new(
            "status.usage.tasks",
            format!(
                "{} tasks is more than the {MAX_USAGE_TASKS} one node may report",
                usage.tasks.len()
            ),
        ));
    }
    for (i, task) in usage.tasks.iter().enumerate().take(MAX_USAGE_TASKS) {
        if task.uid.is_empty() || task.uid.len() > 64 {
            errors.push(FieldError::new(
                format!("status.usage.tasks[{i}].uid"),
                format!(
                    "{:?} must be a task uid of 1 to 64 characters",
                    task.uid.chars().take(80).collect::<String>()
                ),
            ));
        }
    }
    errors
}

/// An agent address is `http://HOST:PORT` or `https://HOST:PORT`, with no path, query,
/// user name or fragment, so the server's calls to it cannot be steered elsewhere.
pub fn check_agent_address(address: &str) -> Result<(), String> {
    let expected = "expected http://HOST:PORT or https://HOST:PORT";
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .ok_or_else(|| format!("{address:?}: {expected}"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = rest.is_empty()
        || address.len() > 256
        || rest.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace() || c.is_control()
        });
    if bad {
        return Err(format!("{address:?}: {expected}"));
    }
    Ok(())
}

/// The parts of a token `krv_<id>_<secret>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenParts<'a> {
    /// The public id, shown by `token list`.
    pub id: &'a str,
    /// The secret, shown once.
    pub secret: &'a str,
}

/// Splits a token into id and secret; `None` when it is not one of ours.
pub fn parse_token(token: &str) -> Option<TokenParts<'_>> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == TOKEN_ID_LEN
        && secret.len() == TOKEN_SECRET_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(TokenParts { id, secret })
}

/// A stored token as `token list` shows it: never its secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenInfo {
    /// The public id (`krv_<id>_…`).
    pub id: String,
    /// Whose it is: a person, a pipeline, or the node name for role `node`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When it was last accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    /// For a join token: how many more nodes may join with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
}

/// `POST /tokens`: what token to make.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// Whose it is; for role `node`, the node name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lifetime in seconds; none for no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// For role `join`: how many nodes may join with it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// The answer to `POST /tokens` and `POST /join`: the token, shown this once.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatedToken {
    /// The whole token, `krv_<id>_<secret>`.
    pub token: String,
    /// Its stored description.
    pub info: TokenInfo,
    /// SHA-256 fingerprint of the server's CA certificate (hex), when it serves TLS: a
    /// node's first contact checks it (`TOKEN@sha256:HEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

/// `GET /tokens`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenList {
    /// Every token, newest first.
    pub items: Vec<TokenInfo>,
}

/// `GET /whoami`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhoAmI {
    /// The identity's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// What the role may do, one line each.
    pub may: Vec<String>,
    /// False when the server runs with `--insecure-no-auth` (everyone is admin).
    pub authenticated: bool,
}

/// `POST /join` with a join credential: the node to join as.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node name the new credential is bound to.
    pub node: String,
}

/// `GET /nodes/{name}/credentials`, for that node's agent only: the secret the server
/// presents when it calls the agent's endpoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCredentials {
    /// Sent by the server as `Authorization: Bearer <agentSecret>`.
    pub agent_secret: String,
}

mod events;
#[cfg(test)]
mod tests;
