//! The pure translation from a bound task to the container that runs it.
//!
//! [`container_config`] decides everything about a task's container (name, image, command,
//! environment, labels, working dir, mounts, cpuset, memory limit, GPU request) from the
//! task, its allocation and the agent's settings; it does no IO, so it carries most of the
//! unit tests. [`ContainerSpec::to_bollard`] is the equally pure translation to Docker's
//! create-container body.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::CreateContainerOptions;
use kohakuriver_api::{Allocation, CpuSet, Task, labels};

/// Label holding the attempt number a container was created for, so an agent can tell the
/// current attempt's container from a leftover of an earlier one.
pub const ATTEMPT_LABEL: &str = "kohakuriver.attempt";

/// Label holding the task's `status.binding` a container was created for: which binding
/// (attempt) of the task it runs, so a report about it names that attempt and a container
/// of an earlier one is never taken for the current one's.
pub const BINDING_LABEL: &str = "kohakuriver.binding";

/// Prefix of every task container's name.
pub const CONTAINER_PREFIX: &str = "kohakuriver-task-";

/// Directory under the shared dir holding environment tarballs (`NAME.tar`).
pub const ENVIRONMENTS_DIR: &str = "kohakuriver-containers";

/// Where shared storage appears inside task containers.
pub const SHARED_MOUNT: &str = "/shared";

/// Label holding the json-file `max-size` (bytes) the agent gave the container's engine log.
pub const LOG_MAX_SIZE_LABEL: &str = "kohakuriver.log-max-size";

/// Label holding the json-file `max-file` the agent gave the container's engine log.
pub const LOG_MAX_FILE_LABEL: &str = "kohakuriver.log-max-file";

/// How much of a container's output the engine keeps (json-file `max-size` × `max-file`).
///
/// The agent sets these on every container itself, so the daemon's defaults never apply:
/// they bound the node's disk, and they decide how long the agent may be away while a task
/// writes before output could be lost (see [`crate::log_capture`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes of one log file before the engine rotates it (at least 1).
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_file: u32,
}

impl Default for LogLimits {
    /// 256 MiB × 4: at most 1 GiB of engine log per container, and 768 MiB of it provably
    /// kept, which covers an agent restart during all but the most prolific tasks.
    fn default() -> LogLimits {
        LogLimits {
            max_size: 256 * 1024 * 1024,
            max_file: 4,
        }
    }
}

impl LogLimits {
    /// The limits recorded in a container's labels, None when it carries none (made by an
    /// agent that did not set them) or they are not numbers.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<LogLimits> {
        let max_size = labels.get(LOG_MAX_SIZE_LABEL)?.parse().ok()?;
        let max_file = labels.get(LOG_MAX_FILE_LABEL)?.parse().ok()?;
        Some(LogLimits { max_size, max_file })
    }

    /// Json bytes the engine holds for sure once it has rotated at least once and dropped
    /// a file: every kept file but the current one reached `max_size` before rotating. A
    /// log smaller than this has lost nothing; None when no size proves that (one file,
    /// which the engine truncates in place).
    pub fn proven_retention(&self) -> Option<u64> {
        (self.max_file >= 2).then(|| self.max_size.saturating_mul(u64::from(self.max_file - 1)))
    }
}

/// What the container builder needs to know about the agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentSettings {
    /// This node's name (label `kohakuriver.node`).
    pub node_name: String,
    /// Host directory mounted at `/shared`, if any.
    pub shared_dir: Option<PathBuf>,
    /// Image for tasks naming neither `image` nor `container`: the server's default, else
    /// the agent's.
    pub default_image: Option<String>,
    /// NUMA memory nodes the kernel really has. `cpuset_mems` is set only for these, so a
    /// faked topology (tests) never asks Docker for a memory node that does not exist.
    pub memory_nodes: CpuSet,
    /// True when `<shared_dir>/kohakuriver-containers` exists on the host (the shell looks):
    /// it is then bound read-only over the read-write `/shared`, so no task can replace an
    /// environment tarball that other tasks will load.
    pub protect_environments: bool,
    /// The engine log retention given to every container.
    pub log_limits: LogLimits,
}

/// Where a container's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry image: used when present locally, else pulled.
    Registry(String),
    /// A named environment `kohakuriver/NAME:base`, loaded from `tarball_dir/NAME.tar`
    /// (or the newest `NAME-<timestamp>.tar`) when missing locally or older than the tarball.
    Environment {
        /// The environment's name.
        name: String,
        /// Directory of tarballs; None when the node has no shared storage.
        tarball_dir: Option<PathBuf>,
    },
}

impl ImageSource {
    /// The image reference the container is created from.
    pub fn image(&self) -> String {
        match self {
            ImageSource::Registry(image) => image.clone(),
            ImageSource::Environment { name, .. } => environment_image(name),
        }
    }
}

/// The image of environment `name`: `kohakuriver/NAME:base`.
pub fn environment_image(name: &str) -> String {
    format!("kohakuriver/{name}:base")
}

/// The container name of task `task_name`.
pub fn container_name(task_name: &str) -> String {
    format!("{CONTAINER_PREFIX}{task_name}")
}

/// Everything about one task container, in our own terms.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    /// `kohakuriver-task-<task name>`.
    pub name: String,
    /// Where the image comes from.
    pub image: ImageSource,
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// Environment, sorted by name.
    pub env: BTreeMap<String, String>,
    /// Labels: task, uid, node, attempt.
    pub labels: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub working_dir: String,
    /// Bind mounts, `HOST:CONTAINER[:ro|rw]`.
    pub binds: Vec<String>,
    /// Pinned cores (`0-3`), None for no pinning.
    pub cpuset_cpus: Option<String>,
    /// Pinned memory node (`1`), None for no pinning.
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes (swap limited to the same, so the limit is real).
    pub memory_bytes: Option<i64>,
    /// GPU indices handed to the nvidia runtime.
    pub gpus: Vec<u32>,
    /// `--privileged`.
    pub privileged: bool,
    /// The engine log retention (json-file `max-size`, `max-file`).
    pub log_limits: LogLimits,
}

/// Why no container can be built for a task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Neither the task, the server nor the agent names an image.
    #[error(
        "task names neither image nor container and no default image is configured; give --image (spec.image) or start the server with --default-image"
    )]
    NoImage,
    /// The task has no uid (it was not stored by the server).
    #[error("task has no uid")]
    NoUid,
}

/// Builds the container for `task` holding `allocation` on this agent.
pub fn container_config(
    task: &Task,
    allocation: &Allocation,
    agent: &AgentSettings,
) -> Result<ContainerSpec, ConfigError> {
    let name = &task.metadata.name;
    let uid = task.metadata.uid.clone().ok_or(ConfigError::NoUid)?;
    let spec = &task.spec;

    let image = if let Some(image) = &spec.image {
        ImageSource::Registry(image.clone())
    } else if let Some(env_name) = &spec.container {
        ImageSource::Environment {
            name: env_name.clone(),
            tarball_dir: agent.shared_dir.as_ref().map(|d| d.join(ENVIRONMENTS_DIR)),
        }
    } else if let Some(image) = &agent.default_image {
        ImageSource::Registry(image.clone())
    } else {
        return Err(ConfigError::NoImage);
    };

    let attempt = task.status.attempts + 1;
    let mut env: BTreeMap<String, String> = spec.env.clone();
    // Our variables win over the user's: they describe what the task really got.
    let mut ours = vec![
        ("KOHAKURIVER_TASK", name.clone()),
        ("KOHAKURIVER_TASK_UID", uid.clone()),
        ("KOHAKURIVER_NODE", agent.node_name.clone()),
        ("KOHAKURIVER_ATTEMPT", attempt.to_string()),
        ("KOHAKURIVER_CPUS", allocation.cpus.clone()),
        (
            "KOHAKURIVER_GPUS",
            allocation
                .gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let Some(numa) = allocation.numa {
        ours.push(("KOHAKURIVER_NUMA", numa.to_string()));
    }
    let memory_bytes = allocation
        .memory_bytes
        .or_else(|| spec.resources.memory.as_ref().map(|m| m.bytes()));
    if let Some(bytes) = memory_bytes {
        ours.push(("KOHAKURIVER_MEMORY_BYTES", bytes.to_string()));
    }
    if agent.shared_dir.is_some() {
        ours.push(("KOHAKURIVER_SHARED_DIR", SHARED_MOUNT.to_string()));
    }
    for (key, value) in ours {
        env.insert(key.to_string(), value);
    }

    let labels = BTreeMap::from([
        (labels::TASK.to_string(), name.clone()),
        (labels::UID.to_string(), uid),
        (labels::NODE.to_string(), agent.node_name.clone()),
        (ATTEMPT_LABEL.to_string(), attempt.to_string()),
        (
            LOG_MAX_SIZE_LABEL.to_string(),
            agent.log_limits.max_size.max(1).to_string(),
        ),
        (
            LOG_MAX_FILE_LABEL.to_string(),
            agent.log_limits.max_file.max(1).to_string(),
        ),
        (BINDING_LABEL.to_string(), task.status.binding.to_string()),
    ]);

    let working_dir = spec.working_dir.clone().unwrap_or_else(|| {
        if agent.shared_dir.is_some() {
            SHARED_MOUNT.to_string()
        } else {
            "/".to_string()
        }
    });

    let mut binds = Vec::new();
    if let Some(shared) = &agent.shared_dir {
        binds.push(format!("{}:{SHARED_MOUNT}", shared.display()));
        if agent.protect_environments {
            // Docker mounts parents before children, so this covers the shared one.
            binds.push(format!(
                "{}:{SHARED_MOUNT}/{ENVIRONMENTS_DIR}:ro",
                shared.join(ENVIRONMENTS_DIR).display()
            ));
        }
    }
    binds.extend(spec.mounts.iter().cloned());

    let cpuset_cpus = Some(allocation.cpus.trim().to_string()).filter(|c| !c.is_empty());
    let cpuset_mems = allocation
        .numa
        .filter(|n| agent.memory_nodes.contains(*n))
        .map(|n| n.to_string());

    Ok(ContainerSpec {
        name: container_name(name),
        image,
        cmd: spec.command.clone(),
        env,
        labels,
        working_dir,
        binds,
        cpuset_cpus,
        cpuset_mems,
        memory_bytes: memory_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        gpus: allocation.gpus.clone(),
        privileged: spec.privileged,
        log_limits: LogLimits {
            max_size: agent.log_limits.max_size.max(1),
            max_file: agent.log_limits.max_file.max(1),
        },
    })
}

impl ContainerSpec {
    /// Docker's create-container options and body for this container.
    ///
    /// Bind mounts go to Docker as typed mounts (see [`bind_mount`]).
    ///
    /// The json-file log driver is asked for explicitly, with the agent's own `max-size` and
    /// `max-file`: Docker merges the daemon's `log-opts` into any option a container leaves
    /// unset, so only explicit options keep the daemon's rotation (often 10m × 3) from
    /// deciding what an agent restart can replay.
    pub fn to_bollard(&self) -> (CreateContainerOptions, ContainerCreateBody) {
        let options = CreateContainerOptions {
            name: Some(self.name.clone()),
            ..Default::default()
        };
        let device_requests = if self.gpus.is_empty() {
            None
        } else {
            Some(vec![DeviceRequest {
                driver: Some("nvidia".to_string()),
                count: None,
                device_ids: Some(self.gpus.iter().map(u32::to_string).collect()),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                options: None,
            }])
        };
        let host_config = HostConfig {
            // Typed bind mounts, not `Binds`: with `Binds` Docker silently creates a missing
            // host path (as root); a typed mount refuses it, so a typo fails the task with
            // the engine's "bind source path does not exist" instead.
            mounts: Some(self.binds.iter().map(|b| bind_mount(b)).collect::<Vec<_>>())
                .filter(|m| !m.is_empty()),
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            memory: self.memory_bytes,
            memory_swap: self.memory_bytes,
            device_requests,
            privileged: Some(self.privileged),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), self.log_limits.max_size.to_string()),
                    ("max-file".to_string(), self.log_limits.max_file.to_string()),
                ])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image.image()),
            cmd: Some(self.cmd.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            working_dir: Some(self.working_dir.clone()),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        (options, body)
    }
}

/// A typed bind mount for `HOST:CONTAINER[:ro|rw]` (already validated by the API server).
pub fn bind_mount(bind: &str) -> bollard::models::Mount {
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let read_only = parts.next() == Some("ro");
    bollard::models::Mount {
        source: Some(source),
        target: Some(target),
        typ: Some(bollard::models::MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::TaskPhase;

    fn agent() -> AgentSettings {
        AgentSettings {
            node_name: "n1".into(),
            shared_dir: None,
            default_image: Some("default:1".into()),
            memory_nodes: CpuSet::parse("0-1").unwrap(),
            protect_environments: false,
            log_limits: LogLimits {
                max_size: 1000,
                max_file: 3,
            },
        }
    }

    fn task() -> Task {
        let mut t = Task::test("job").command(&["echo", "hi"]);
        t.metadata.uid = Some("u-1".into());
        t
    }

    fn alloc(cpus: &str) -> Allocation {
        Allocation {
            cpus: cpus.into(),
            ..Default::default()
        }
    }

    fn check(task: &Task, allocation: &Allocation, agent: &AgentSettings) -> ContainerSpec {
        container_config(task, allocation, agent).unwrap()
    }

    #[test]
    fn name_labels_cmd_and_env() {
        let spec = check(&task(), &alloc("1"), &agent());
        assert_eq!(spec.name, "kohakuriver-task-job");
        assert_eq!(spec.cmd, vec!["echo", "hi"]);
        assert_eq!(spec.labels["kohakuriver.task"], "job");
        assert_eq!(spec.labels["kohakuriver.uid"], "u-1");
        assert_eq!(spec.labels["kohakuriver.node"], "n1");
        assert_eq!(spec.labels[ATTEMPT_LABEL], "1");
        assert_eq!(spec.env["KOHAKURIVER_TASK"], "job");
        assert_eq!(spec.env["KOHAKURIVER_CPUS"], "1");
        assert_eq!(spec.env["KOHAKURIVER_GPUS"], "");
        assert!(!spec.env.contains_key("KOHAKURIVER_NUMA"));
        assert_eq!(spec.cpuset_cpus.as_deref(), Some("1"));
        assert_eq!(spec.cpuset_mems, None);
        assert_eq!(spec.memory_bytes, None);
        assert!(spec.gpus.is_empty());
        assert!(!spec.privileged);
    }

    #[test]
    fn attempt_follows_status() {
        let mut t = task();
        t.status.attempts = 2;
        t.status.phase = TaskPhase::Assigned;
        let spec = check(&t, &alloc("0"), &agent());
        assert_eq!(spec.labels[ATTEMPT_LABEL], "3");
        assert_eq!(spec.env["KOHAKURIVER_ATTEMPT"], "3");
    }

    #[test]
    fn user_env_is_kept_but_ours_wins() {
        let mut t = task();
        t.spec.env.insert("A".into(), "1".into());
        t.spec.env.insert("KOHAKURIVER_TASK".into(), "spoof".into());
        let spec = check(&t, &alloc("0"), &agent());
        assert_eq!(spec.env["A"], "1");
        assert_eq!(spec.env["KOHAKURIVER_TASK"], "job");
    }

    #[test]
    fn working_dir_rules() {
        let mut shared = agent();
        shared.shared_dir = Some("/srv/shared".into());
        assert_eq!(check(&task(), &alloc(""), &agent()).working_dir, "/");
        let spec = check(&task(), &alloc(""), &shared);
        assert_eq!(spec.working_dir, "/shared");
        assert_eq!(spec.binds, vec!["/srv/shared:/shared"]);
        assert_eq!(spec.env["KOHAKURIVER_SHARED_DIR"], "/shared");
        let mut t = task();
        t.spec.working_dir = Some("/work".into());
        assert_eq!(check(&t, &alloc(""), &shared).working_dir, "/work");
    }

    #[test]
    fn mounts_follow_shared_dir() {
        let mut shared = agent();
        shared.shared_dir = Some("/s".into());
        let mut t = task();
        t.spec.mounts = vec!["/data:/data".into(), "/models:/models:ro".into()];
        assert_eq!(
            check(&t, &alloc(""), &shared).binds,
            vec!["/s:/shared", "/data:/data", "/models:/models:ro"]
        );
        assert_eq!(
            check(&t, &alloc(""), &agent()).binds,
            vec!["/data:/data", "/models:/models:ro"]
        );
    }

    #[test]
    fn environments_dir_is_read_only_over_the_shared_dir() {
        let mut shared = agent();
        shared.shared_dir = Some("/s".into());
        shared.protect_environments = true;
        let mut t = task();
        t.spec.mounts = vec!["/data:/data".into()];
        let spec = check(&t, &alloc(""), &shared);
        assert_eq!(
            spec.binds,
            vec![
                "/s:/shared",
                "/s/kohakuriver-containers:/shared/kohakuriver-containers:ro",
                "/data:/data"
            ]
        );
        let (_, body) = spec.to_bollard();
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(
            mounts[1].target.as_deref(),
            Some("/shared/kohakuriver-containers")
        );
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(mounts[0].read_only, Some(false));
        // Without shared storage the flag means nothing.
        let mut alone = agent();
        alone.protect_environments = true;
        assert_eq!(check(&t, &alloc(""), &alone).binds, vec!["/data:/data"]);
    }

    #[test]
    fn numa_gpus_memory_and_privileged() {
        let mut t = task().memory("512M");
        t.spec.privileged = true;
        let a = Allocation {
            cpus: "2-3".into(),
            numa: Some(1),
            gpus: vec![0, 3],
            memory_bytes: Some(256 << 20),
        };
        let spec = check(&t, &a, &agent());
        assert_eq!(spec.cpuset_cpus.as_deref(), Some("2-3"));
        assert_eq!(spec.cpuset_mems.as_deref(), Some("1"));
        // The allocation's figure is what the scheduler reserved; it wins over the spec.
        assert_eq!(spec.memory_bytes, Some(256 << 20));
        assert_eq!(spec.gpus, vec![0, 3]);
        assert_eq!(spec.env["KOHAKURIVER_GPUS"], "0,3");
        assert_eq!(spec.env["KOHAKURIVER_NUMA"], "1");
        assert_eq!(
            spec.env["KOHAKURIVER_MEMORY_BYTES"],
            (256u64 << 20).to_string()
        );
        assert!(spec.privileged);
    }

    #[test]
    fn memory_from_spec_when_allocation_has_none() {
        let t = task().memory("1G");
        assert_eq!(
            check(&t, &alloc("0"), &agent()).memory_bytes,
            Some(1_000_000_000)
        );
    }

    #[test]
    fn fake_numa_node_is_not_passed_to_docker() {
        let mut a = agent();
        a.memory_nodes = CpuSet::parse("0").unwrap();
        let alloc = Allocation {
            cpus: "1".into(),
            numa: Some(1),
            ..Default::default()
        };
        let spec = check(&task(), &alloc, &a);
        assert_eq!(spec.cpuset_mems, None);
        assert_eq!(spec.env["KOHAKURIVER_NUMA"], "1");
    }

    #[test]
    fn image_choice() {
        let mut t = task();
        t.spec.image = Some("ubuntu:22.04".into());
        assert_eq!(
            check(&t, &alloc(""), &agent()).image,
            ImageSource::Registry("ubuntu:22.04".into())
        );

        let mut t = task();
        t.spec.container = Some("torch".into());
        let mut shared = agent();
        shared.shared_dir = Some("/s".into());
        let spec = check(&t, &alloc(""), &shared);
        assert_eq!(
            spec.image,
            ImageSource::Environment {
                name: "torch".into(),
                tarball_dir: Some("/s/kohakuriver-containers".into())
            }
        );
        assert_eq!(spec.image.image(), "kohakuriver/torch:base");

        assert_eq!(
            check(&task(), &alloc(""), &agent()).image,
            ImageSource::Registry("default:1".into())
        );
        let mut none = agent();
        none.default_image = None;
        assert_eq!(
            container_config(&task(), &alloc(""), &none),
            Err(ConfigError::NoImage)
        );
    }

    #[test]
    fn task_without_uid_is_refused() {
        let mut t = task();
        t.metadata.uid = None;
        assert_eq!(
            container_config(&t, &alloc(""), &agent()),
            Err(ConfigError::NoUid)
        );
    }

    #[test]
    fn bollard_body_carries_everything() {
        let mut t = task().memory("64M");
        t.spec.privileged = true;
        t.spec.mounts = vec!["/d:/d:ro".into()];
        let a = Allocation {
            cpus: "0-1".into(),
            numa: Some(0),
            gpus: vec![1, 2],
            memory_bytes: Some(64_000_000),
        };
        let (options, body) = check(&t, &a, &agent()).to_bollard();
        assert_eq!(options.name.as_deref(), Some("kohakuriver-task-job"));
        assert_eq!(body.image.as_deref(), Some("default:1"));
        assert_eq!(body.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/"));
        let env = body.env.unwrap();
        assert!(env.contains(&"KOHAKURIVER_TASK=job".to_string()));
        assert!(env.contains(&"KOHAKURIVER_GPUS=1,2".to_string()));
        assert_eq!(body.labels.unwrap()["kohakuriver.uid"], "u-1");
        let host = body.host_config.unwrap();
        assert_eq!(host.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(host.cpuset_mems.as_deref(), Some("0"));
        assert_eq!(host.memory, Some(64_000_000));
        assert_eq!(host.memory_swap, Some(64_000_000));
        assert_eq!(host.privileged, Some(true));
        let mounts = host.mounts.expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source.as_deref(), Some("/d"));
        assert_eq!(mounts[0].target.as_deref(), Some("/d"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].typ, Some(bollard::models::MountType::BIND));
        assert_eq!(host.binds, None);
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log = log.config.unwrap();
        assert_eq!(log["max-size"], "1000");
        assert_eq!(log["max-file"], "3");
        let requests = host.device_requests.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            requests[0].device_ids,
            Some(vec!["1".to_string(), "2".to_string()])
        );
        assert_eq!(
            requests[0].capabilities,
            Some(vec![vec!["gpu".to_string()]])
        );
    }

    #[test]
    fn bollard_body_without_gpus_or_limits() {
        let (_, body) = check(&task(), &alloc(""), &agent()).to_bollard();
        let host = body.host_config.unwrap();
        assert_eq!(host.device_requests, None);
        assert_eq!(host.mounts, None);
        assert_eq!(host.cpuset_cpus, None);
        assert_eq!(host.memory, None);
        assert_eq!(host.binds, None);
    }

    #[test]
    fn log_limits_are_set_labelled_and_read_back() {
        // (max_size, max_file) set -> (labels, proven retention)
        type Case = (u64, u32, (&'static str, &'static str), Option<u64>);
        let cases: [Case; 4] = [
            (1000, 3, ("1000", "3"), Some(2000)),
            (10, 2, ("10", "2"), Some(10)),
            (10, 1, ("10", "1"), None),
            (0, 0, ("1", "1"), None),
        ];
        for (max_size, max_file, (size_label, file_label), retention) in cases {
            let mut a = agent();
            a.log_limits = LogLimits { max_size, max_file };
            let spec = check(&task(), &alloc(""), &a);
            assert_eq!(spec.labels[LOG_MAX_SIZE_LABEL], size_label, "{max_size}");
            assert_eq!(spec.labels[LOG_MAX_FILE_LABEL], file_label, "{max_file}");
            let read = LogLimits::from_labels(&spec.labels).unwrap();
            assert_eq!(read, spec.log_limits);
            assert_eq!(
                read.proven_retention(),
                retention,
                "{max_size} x {max_file}"
            );
        }
        assert_eq!(LogLimits::from_labels(&BTreeMap::new()), None);
        let bad = BTreeMap::from([
            (LOG_MAX_SIZE_LABEL.to_string(), "10m".to_string()),
            (LOG_MAX_FILE_LABEL.to_string(), "3".to_string()),
        ]);
        assert_eq!(LogLimits::from_labels(&bad), None);
    }
}
