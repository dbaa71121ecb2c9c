//! Validation of objects before they are stored, with errors that name the field path and
//! the bad value. Pure functions; the API server calls them on every write.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::node::Node;
use crate::selector::{check_key, check_value};
use crate::task::{Task, TaskSpec};

/// Most cores one task may ask for; more is certainly a typo.
pub const MAX_TASK_CPUS: u32 = 4096;
/// Most GPUs one task may ask for.
pub const MAX_TASK_GPUS: u32 = 64;
/// Docker refuses memory limits under 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 100;

/// One invalid field.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// A word a program can switch on, as Kubernetes' `StatusCause.reason`
    /// (`FieldManagerConflict`); absent for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The field's path, e.g. `spec.resources.cpu` or `spec.mounts[1]`.
    pub field: String,
    /// What is wrong, naming the bad value and what was expected.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            reason: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a DNS-1123 label: 1–63 lowercase letters, digits or `-`, starting and ending with
/// a letter or digit.
pub fn check_dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() > 63 {
        return Err(format!(
            "{value:?} is {} characters long; at most 63 are allowed",
            value.len()
        ));
    }
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !chars_ok || value.starts_with('-') || value.ends_with('-') {
        return Err(format!(
            "{value:?} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (a host name): labels joined by `.`, at most 253 characters.
pub fn check_dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() > 253 {
        return Err(format!(
            "{value:?} is {} characters long; at most 253 are allowed",
            value.len()
        ));
    }
    for label in value.split('.') {
        check_dns_label(label).map_err(|_| {
            format!(
                "{value:?} is not a valid host name: use lowercase letters, digits, '-' and '.'"
            )
        })?;
    }
    Ok(())
}

pub(crate) fn check_labels(
    errors: &mut Vec<FieldError>,
    path: &str,
    map: &std::collections::BTreeMap<String, String>,
    check_values: bool,
) {
    for (k, v) in map {
        if let Err(e) = check_key(k) {
            errors.push(FieldError::new(format!("{path}.{k}"), e));
        }
        if check_values && let Err(e) = check_value(v) {
            errors.push(FieldError::new(format!("{path}.{k}"), e));
        }
    }
}

/// The most bytes an object's labels and annotations may hold together (keys and values),
/// 256 KiB as Kubernetes allows for annotations: they are stored with every version of the
/// object and sent to every watcher.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

pub(crate) fn check_metadata_size(
    errors: &mut Vec<FieldError>,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) {
    let size: usize = labels
        .iter()
        .chain(annotations)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_METADATA_BYTES {
        errors.push(FieldError::new(
            "metadata.annotations",
            format!(
                "labels and annotations hold {size} bytes together, over the limit of {MAX_METADATA_BYTES} bytes (256 KiB); keep large data elsewhere (a file under the shared dir, say)"
            ),
        ));
    }
}

fn check_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a mount `HOST:CONTAINER[:ro|rw]` with absolute paths.
pub fn check_mount(mount: &str) -> Result<(), String> {
    let expected = "expected HOST:CONTAINER[:ro|rw] with absolute paths, e.g. /data:/data:ro";
    let parts: Vec<&str> = mount.split(':').collect();
    let (src, dst) = match parts.as_slice() {
        [src, dst] => (*src, *dst),
        [src, dst, mode] => {
            if *mode != "ro" && *mode != "rw" {
                return Err(format!(
                    "mount {mount:?} has mode {mode:?}; the mode must be ro or rw"
                ));
            }
            (*src, *dst)
        }
        _ => return Err(format!("invalid mount {mount:?}: {expected}")),
    };
    for (what, path) in [("host path", src), ("container path", dst)] {
        if !path.starts_with('/') {
            return Err(format!(
                "mount {mount:?}: {what} {path:?} is not absolute; {expected}"
            ));
        }
    }
    if dst == "/" {
        return Err(format!(
            "mount {mount:?}: mounting over the container's / is not allowed"
        ));
    }
    Ok(())
}

/// Checks an image reference loosely: non-empty, no whitespace, no `://`.
fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("must not be empty".to_string());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) || image.contains("://") {
        return Err(format!(
            "{image:?} is not an image reference; expected e.g. ubuntu:22.04 or registry.example.com/team/image:tag"
        ));
    }
    Ok(())
}

fn check_container_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an environment name: use lowercase letters, digits, '-', '_' and '.'"
        ))
    }
}

/// The refusal of a memory limit below Docker's minimum, in the user's own words: `512`
/// is 512 bytes, and a bare number most likely meant megabytes.
fn memory_too_small(text: &str, bytes: u64) -> String {
    let unit = if bytes == 1 { "byte" } else { "bytes" };
    let hint = if text.trim().chars().all(|c| c.is_ascii_digit()) {
        format!("; did you mean {}M?", text.trim())
    } else {
        String::new()
    };
    format!("{text:?} is {bytes} {unit}, below Docker's minimum of 6Mi (6291456 bytes){hint}")
}

/// The errors of an object's `apiVersion` and `kind`, which must be ours and `kind`.
pub fn type_errors(api_version: &str, kind: &str, expected: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if api_version != crate::API_VERSION {
        errors.push(FieldError::new(
            "apiVersion",
            format!(
                "{api_version:?} is not supported; expected {:?}",
                crate::API_VERSION
            ),
        ));
    }
    if kind != expected {
        errors.push(FieldError::new(
            "kind",
            format!("{kind:?} where {expected:?} was expected"),
        ));
    }
    errors
}

/// Validates a task as written by a user (spec and metadata); status is not checked.
pub fn validate_task(task: &Task) -> Vec<FieldError> {
    let mut errors = Vec::new();
    errors.extend(type_errors(&task.api_version, &task.kind, "Task"));
    if let Err(e) = check_dns_label(&task.metadata.name) {
        errors.push(FieldError::new("metadata.name", e));
    }
    check_labels(&mut errors, "metadata.labels", &task.metadata.labels, true);
    check_labels(
        &mut errors,
        "metadata.annotations",
        &task.metadata.annotations,
        false,
    );
    check_metadata_size(
        &mut errors,
        &task.metadata.labels,
        &task.metadata.annotations,
    );
    validate_task_spec(&task.spec, &mut errors);
    errors.extend(crate::dependency::validate_dependencies(
        &task.metadata.name,
        &task.spec.depends_on,
    ));
    errors
}

fn validate_task_spec(spec: &TaskSpec, errors: &mut Vec<FieldError>) {
    if spec.command.is_empty() {
        errors.push(FieldError::new(
            "spec.command",
            "must not be empty: give the command and its arguments, e.g. [echo, hello]",
        ));
    } else if spec.command[0].is_empty() {
        errors.push(FieldError::new(
            "spec.command[0]",
            "the program name must not be empty",
        ));
    }
    if spec.image.is_some() && spec.container.is_some() {
        errors.push(FieldError::new(
            "spec.image",
            "image and container are mutually exclusive: give one of them",
        ));
    }
    if let Some(image) = &spec.image
        && let Err(e) = check_image(image)
    {
        errors.push(FieldError::new("spec.image", e));
    }
    if let Some(name) = &spec.container
        && let Err(e) = check_container_name(name)
    {
        errors.push(FieldError::new("spec.container", e));
    }
    for name in spec.env.keys() {
        if !check_env_name(name) {
            errors.push(FieldError::new(
                format!("spec.env.{name}"),
                format!(
                    "{name:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit"
                ),
            ));
        }
    }
    if let Some(dir) = &spec.working_dir
        && !dir.starts_with('/')
    {
        errors.push(FieldError::new(
            "spec.workingDir",
            format!("{dir:?} is not an absolute path"),
        ));
    }
    let r = &spec.resources;
    if r.cpu > MAX_TASK_CPUS {
        errors.push(FieldError::new(
            "spec.resources.cpu",
            format!(
                "{} cores is more than the {MAX_TASK_CPUS} a task may ask for",
                r.cpu
            ),
        ));
    }
    if r.gpus > MAX_TASK_GPUS {
        errors.push(FieldError::new(
            "spec.resources.gpus",
            format!(
                "{} GPUs is more than the {MAX_TASK_GPUS} a task may ask for",
                r.gpus
            ),
        ));
    }
    if let Some(memory) = &r.memory
        && memory.bytes() < MIN_MEMORY_BYTES
    {
        errors.push(FieldError::new(
            "spec.resources.memory",
            memory_too_small(memory.as_str(), memory.bytes()),
        ));
    }
    let p = &spec.placement;
    if let Some(node) = &p.node
        && let Err(e) = check_dns_subdomain(node)
    {
        errors.push(FieldError::new("spec.placement.node", e));
    }
    if let Some(ids) = &p.gpu_ids {
        if p.node.is_none() {
            errors.push(FieldError::new(
                "spec.placement.gpuIds",
                "exact GPU ids need a node: set spec.placement.node (or -t host::0,1)",
            ));
        }
        if ids.is_empty() {
            errors.push(FieldError::new(
                "spec.placement.gpuIds",
                "must not be empty when given; leave it out for no GPUs",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            if !seen.insert(id) {
                errors.push(FieldError::new(
                    "spec.placement.gpuIds",
                    format!("GPU id {id} is listed twice"),
                ));
            }
        }
        if r.gpus != 0 && r.gpus as usize != ids.len() {
            errors.push(FieldError::new(
                "spec.resources.gpus",
                format!(
                    "asks for {} GPUs but spec.placement.gpuIds names {}; give one or make them agree",
                    r.gpus,
                    ids.len()
                ),
            ));
        }
    }
    check_labels(
        errors,
        "spec.placement.nodeSelector",
        &p.node_selector,
        true,
    );
    for (i, mount) in spec.mounts.iter().enumerate() {
        if let Err(e) = check_mount(mount) {
            errors.push(FieldError::new(format!("spec.mounts[{i}]"), e));
        }
    }
    if spec.retries > MAX_RETRIES {
        errors.push(FieldError::new(
            "spec.retries",
            format!("{} is more than the {MAX_RETRIES} allowed", spec.retries),
        ));
    }
    if spec.timeout_seconds == Some(0) {
        errors.push(FieldError::new(
            "spec.timeoutSeconds",
            "must be at least 1; leave it out for no deadline",
        ));
    }
    if let Some(grace) = spec
        .kill_grace_seconds
        .filter(|g| *g > MAX_KILL_GRACE_SECONDS)
    {
        errors.push(FieldError::new(
            "spec.killGraceSeconds",
            format!("{grace} is more than the {MAX_KILL_GRACE_SECONDS} allowed (one hour)"),
        ));
    }
}

/// The longest `spec.killGraceSeconds`: one hour.
pub const MAX_KILL_GRACE_SECONDS: u64 = 3600;

/// Why a new task that names neither `image` nor `container` could never start, when the
/// server has no `--default-image` (pure): it is pinned to a registered node that reports
/// no default image, or it is not pinned and no registered node reports one. A task pinned
/// to a node that has not registered, or submitted before any node, may still find one
/// (it waits), so it is not refused.
pub fn unresolvable_image(pinned: Option<&str>, nodes: &[Node]) -> Option<FieldError> {
    let advice = "give an image with --image IMAGE (spec.image) or a container environment with --container NAME (spec.container), or start the server with --default-image IMAGE";
    let has_default = |n: &Node| n.status.default_image.is_some();
    let message = match pinned {
        Some(name) => {
            let node = nodes.iter().find(|n| n.metadata.name == name)?;
            if has_default(node) {
                return None;
            }
            format!(
                "the task names neither an image nor a container, and neither the server nor node {name:?} has a default image: {advice}"
            )
        }
        None if nodes.is_empty() || nodes.iter().any(has_default) => return None,
        None => format!(
            "the task names neither an image nor a container, and neither the server nor any of the {} registered nodes has a default image: {advice}",
            nodes.len()
        ),
    };
    Some(FieldError::new("spec.image", message))
}

/// Validates a node as written by a user or agent.
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errors = Vec::new();
    errors.extend(type_errors(&node.api_version, &node.kind, "Node"));
    if let Err(e) = check_dns_subdomain(&node.metadata.name) {
        errors.push(FieldError::new("metadata.name", e));
    }
    check_labels(&mut errors, "metadata.labels", &node.metadata.labels, true);
    check_labels(
        &mut errors,
        "metadata.annotations",
        &node.metadata.annotations,
        false,
    );
    check_metadata_size(
        &mut errors,
        &node.metadata.labels,
        &node.metadata.annotations,
    );
    errors
}

/// The spec fields that differ between `old` and `new` but may not change once the task is
/// scheduled; each names the field. Only the desired state, priority, retries, the
/// deadline, the TTL and the kill grace may still change. `new` is taken apart field by
/// field, so a field added to `TaskSpec` must be placed on one side or the other here.
pub fn immutable_changes(old: &TaskSpec, new: &TaskSpec) -> Vec<FieldError> {
    let TaskSpec {
        command,
        image,
        container,
        env,
        working_dir,
        resources,
        placement,
        mounts,
        privileged,
        // May change once bound:
        state: _,
        priority: _,
        retries: _,
        timeout_seconds: _,
        ttl_seconds_after_finished: _,
        kill_grace_seconds: _,
        depends_on,
    } = new;
    let mut errors = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            errors.push(FieldError::new(
                field,
                "cannot change once the task is scheduled; delete and recreate it (kohakuriver apply --force)",
            ));
        }
    };
    check("spec.command", &old.command == command);
    check("spec.image", &old.image == image);
    check("spec.container", &old.container == container);
    check("spec.env", &old.env == env);
    check("spec.workingDir", &old.working_dir == working_dir);
    check("spec.resources", &old.resources == resources);
    check("spec.placement", &old.placement == placement);
    check("spec.mounts", &old.mounts == mounts);
    check("spec.privileged", &old.privileged == privileged);
    check("spec.dependsOn", &old.depends_on == depends_on);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Memory;

    #[test]
    fn small_memory_is_told_in_the_users_words() {
        assert_eq!(
            memory_too_small("512", 512),
            "\"512\" is 512 bytes, below Docker's minimum of 6Mi (6291456 bytes); did you mean 512M?"
        );
        assert_eq!(
            memory_too_small("1Mi", 1_048_576),
            "\"1Mi\" is 1048576 bytes, below Docker's minimum of 6Mi (6291456 bytes)"
        );
        let mut t = task();
        t.spec.resources.memory = Some(Memory::parse("512").unwrap());
        let e = validate_task(&t);
        assert_eq!(e[0].field, "spec.resources.memory");
        assert!(!e[0].message.contains("Memory {"), "{}", e[0].message);
    }

    fn task() -> Task {
        Task::new("train", vec!["echo".into(), "hi".into()])
    }

    #[test]
    fn labels_and_annotations_are_bounded_together() {
        let mut t = task();
        t.metadata.labels.insert("a".into(), "b".into());
        // Exactly at the limit with the label's two bytes and the key's one.
        t.metadata
            .annotations
            .insert("n".into(), "x".repeat(MAX_METADATA_BYTES - 3));
        assert!(validate_task(&t).is_empty());
        t.metadata.annotations.insert("m".into(), String::new());
        let e = validate_task(&t);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "metadata.annotations");
        assert!(e[0].message.contains("262145 bytes"), "{}", e[0].message);
        assert!(e[0].message.contains("262144"), "{}", e[0].message);
    }

    fn check(edit: impl FnOnce(&mut Task), want: &[(&str, &str)]) {
        let mut t = task();
        edit(&mut t);
        let errors = validate_task(&t);
        assert_eq!(errors.len(), want.len(), "{errors:?}");
        for ((field, msg), got) in want.iter().zip(&errors) {
            assert_eq!(got.field, *field, "{got}");
            assert!(got.message.contains(msg), "{got} lacks {msg:?}");
        }
    }

    #[test]
    fn valid_task_passes() {
        check(|_| {}, &[]);
        check(
            |t| {
                t.spec.placement.node = Some("gpu-01.lab".into());
                t.spec.placement.gpu_ids = Some(vec![0, 1]);
                t.spec.mounts = vec!["/data:/data".into(), "/m:/models:ro".into()];
                t.spec.env.insert("WANDB_MODE".into(), "offline".into());
                t.spec.resources.memory = Some(Memory::parse("8G").unwrap());
            },
            &[],
        );
    }

    #[test]
    fn every_rule_names_field_and_value() {
        check(
            |t| t.api_version = "v2".into(),
            &[("apiVersion", "\"v2\" is not supported")],
        );
        check(|t| t.kind = "Pod".into(), &[("kind", "\"Pod\"")]);
        check(
            |t| t.metadata.name = "Bad_Name".into(),
            &[("metadata.name", "\"Bad_Name\" is not a valid name")],
        );
        check(
            |t| t.metadata.name = "a".repeat(64),
            &[("metadata.name", "64 characters")],
        );
        check(
            |t| t.metadata.name = String::new(),
            &[("metadata.name", "must not be empty")],
        );
        check(
            |t| {
                t.metadata.labels.insert("team".into(), "a b".into());
            },
            &[("metadata.labels.team", "label value \"a b\"")],
        );
        check(
            |t| t.spec.command.clear(),
            &[("spec.command", "must not be empty")],
        );
        check(
            |t| t.spec.command[0].clear(),
            &[("spec.command[0]", "program name")],
        );
        check(
            |t| {
                t.spec.image = Some("ubuntu".into());
                t.spec.container = Some("env".into());
            },
            &[("spec.image", "mutually exclusive")],
        );
        check(
            |t| t.spec.image = Some("bad image".into()),
            &[("spec.image", "\"bad image\" is not an image reference")],
        );
        check(
            |t| t.spec.container = Some("My Env".into()),
            &[("spec.container", "\"My Env\"")],
        );
        check(
            |t| {
                t.spec.env.insert("1BAD".into(), "x".into());
            },
            &[(
                "spec.env.1BAD",
                "\"1BAD\" is not a valid environment variable name",
            )],
        );
        check(
            |t| t.spec.working_dir = Some("rel".into()),
            &[("spec.workingDir", "\"rel\" is not an absolute path")],
        );
        check(
            |t| t.spec.resources.cpu = 5000,
            &[("spec.resources.cpu", "5000 cores")],
        );
        check(
            |t| t.spec.resources.gpus = 65,
            &[("spec.resources.gpus", "65 GPUs")],
        );
        check(
            |t| t.spec.resources.memory = Some(Memory::parse("1M").unwrap()),
            &[("spec.resources.memory", "minimum of 6Mi")],
        );
        check(
            |t| t.spec.placement.gpu_ids = Some(vec![0]),
            &[("spec.placement.gpuIds", "need a node")],
        );
        check(
            |t| {
                t.spec.placement.node = Some("n".into());
                t.spec.placement.gpu_ids = Some(vec![0, 0]);
            },
            &[("spec.placement.gpuIds", "listed twice")],
        );
        check(
            |t| {
                t.spec.placement.node = Some("n".into());
                t.spec.placement.gpu_ids = Some(vec![0]);
                t.spec.resources.gpus = 2;
            },
            &[(
                "spec.resources.gpus",
                "asks for 2 GPUs but spec.placement.gpuIds names 1",
            )],
        );
        check(
            |t| t.spec.placement.node = Some("No_De".into()),
            &[("spec.placement.node", "not a valid host name")],
        );
        check(
            |t| t.spec.mounts = vec!["data:/data".into()],
            &[("spec.mounts[0]", "host path \"data\" is not absolute")],
        );
        check(
            |t| t.spec.mounts = vec!["/a:/b:rx".into()],
            &[("spec.mounts[0]", "mode \"rx\"")],
        );
        check(
            |t| t.spec.mounts = vec!["/a".into()],
            &[("spec.mounts[0]", "invalid mount \"/a\"")],
        );
        check(
            |t| t.spec.mounts = vec!["/a:/".into()],
            &[("spec.mounts[0]", "over the container's /")],
        );
        check(
            |t| t.spec.retries = 101,
            &[("spec.retries", "101 is more than")],
        );
        check(
            |t| t.spec.timeout_seconds = Some(0),
            &[("spec.timeoutSeconds", "at least 1")],
        );
        check(
            |t| t.spec.kill_grace_seconds = Some(3601),
            &[(
                "spec.killGraceSeconds",
                "3601 is more than the 3600 allowed",
            )],
        );
    }

    #[test]
    fn a_task_with_no_image_anywhere_is_refused() {
        let node = |name: &str, image: Option<&str>| {
            let mut n = Node::new(name);
            n.status.default_image = image.map(str::to_string);
            n
        };
        let bare = [node("a", None), node("b", None)];
        let one = [node("a", None), node("b", Some("ubuntu:22.04"))];
        let e = unresolvable_image(None, &bare).expect("refused");
        assert_eq!(e.field, "spec.image");
        assert!(
            e.message.contains("any of the 2 registered nodes"),
            "{}",
            e.message
        );
        assert!(e.message.contains("--image IMAGE"), "{}", e.message);
        assert_eq!(unresolvable_image(None, &one), None);
        assert_eq!(unresolvable_image(None, &[]), None, "no node yet: it waits");
        let e = unresolvable_image(Some("a"), &one).expect("refused");
        assert!(e.message.contains("node \"a\""), "{}", e.message);
        assert_eq!(unresolvable_image(Some("b"), &one), None);
        assert_eq!(
            unresolvable_image(Some("late"), &bare),
            None,
            "not registered: it waits"
        );
    }

    #[test]
    fn node_names_are_host_names() {
        let mut n = Node::new("gpu-01.lab");
        assert!(validate_node(&n).is_empty());
        n.metadata.name = "GPU 01".into();
        let e = validate_node(&n);
        assert_eq!(e[0].field, "metadata.name");
    }

    #[test]
    fn immutable_fields_are_named() {
        let old = task().spec;
        let mut new = old.clone();
        new.state = crate::task::DesiredState::Killed;
        new.priority = 5;
        assert!(immutable_changes(&old, &new).is_empty());
        new.command = vec!["other".into()];
        new.resources.cpu = 4;
        let fields: Vec<String> = immutable_changes(&old, &new)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.command", "spec.resources"]);
    }
}
