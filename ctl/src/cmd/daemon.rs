//! Flags shared by the daemons (`server`, `controllers`, `agent`, `up`) and the pieces that
//! turn them into the libraries' configs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kohakuriver_controllers::ControllersConfig;
use kohakuriver_node_agent::AgentConfig;
use kohakuriver_node_agent::gpu::StaticGpuSource;

use crate::wait::parse_duration;

/// The API server's limits (see ARCHITECTURE.md, Limits).
#[derive(clap::Args, Debug, Clone)]
pub struct LimitFlags {
    /// Most connections open at once; one more is closed at once.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A request's headers must arrive within this long, or its connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this long, or it is refused and its
    /// connection closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Requests per second each identity (token) may make, past its burst; 429 with
    /// Retry-After above it. Controllers and nodes are not limited; 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub rate_limit: u32,
    /// Requests an identity may make at once above --rate-limit.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub rate_burst: u32,
    /// Most open watches per identity (agents hold one or two); 429 above it.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_watches_per_identity: usize,
    /// Most open watches in all; 429 above it.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub max_watches: usize,
}

impl LimitFlags {
    /// The server's limits.
    pub fn limits(&self) -> kohakuriver_apiserver::Limits {
        kohakuriver_apiserver::Limits {
            http: kohakuriver_tls::HttpLimits {
                header_timeout: self.header_timeout,
                body_timeout: self.body_timeout,
                max_connections: self.max_connections as usize,
            },
            rate_per_second: self.rate_limit,
            rate_burst: self.rate_burst,
            watches_per_identity: self.max_watches_per_identity,
            watches_total: self.max_watches,
        }
    }
}

/// How the API server keeps its store, and whether it starts from a backup.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreFlags {
    /// full: every acknowledged write is on disk (fsync) and survives a power cut. normal:
    /// faster; an acknowledged write survives a crash of this process, but a power cut or
    /// OS crash may lose the last ones (watchers then list again after every restart).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SyncFlag::Full)]
    pub sync: SyncFlag,
    /// Start from this backup (`kohakuriver backup --to FILE`). Refused when the database
    /// already exists, unless --force. The restored store gets a new store id, so watchers
    /// of the old one list again.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// With --restore: move an existing database aside (to DB.before-restore-TIME) instead
    /// of refusing. Stop any server using it first.
    #[arg(long, requires = "restore")]
    pub force: bool,
    /// How many events the watch history keeps; watchers further behind must list again
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub watch_history: Option<u64>,
    /// How many bytes of objects the watch history keeps (each change keeps the object and
    /// its previous version); beyond it the oldest events are dropped, and watchers further
    /// behind must list again [default: 256Mi].
    #[arg(long, value_name = "SIZE", value_parser = kohakuriver_api::quantity::parse_bytes)]
    pub watch_history_bytes: Option<u64>,
}

/// `--sync`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFlag {
    /// synchronous=FULL.
    Full,
    /// synchronous=NORMAL.
    Normal,
}

impl StoreFlags {
    /// The SQLite sync mode.
    pub fn sync_mode(&self) -> kohakuriver_apiserver::SyncMode {
        match self.sync {
            SyncFlag::Full => kohakuriver_apiserver::SyncMode::Full,
            SyncFlag::Normal => kohakuriver_apiserver::SyncMode::Normal,
        }
    }

    /// Makes `db` from `--restore`, if given. An existing database is refused, or with
    /// `--force` renamed aside (with its WAL files), never overwritten.
    pub fn restore_into(&self, db: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::{Context, bail};
        let Some(backup) = &self.restore else {
            return Ok(());
        };
        if db.as_os_str() == ":memory:" {
            bail!("--restore needs a database file; drop --db :memory:");
        }
        if db.exists() {
            if !self.force {
                bail!(
                    "{} already exists: --restore never replaces a database silently; stop the server using it and add --force to move it aside, or choose another --data-dir",
                    db.display()
                );
            }
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", db.display()));
                if from.exists() {
                    let to =
                        PathBuf::from(format!("{}.before-restore-{stamp}{suffix}", db.display()));
                    std::fs::rename(&from, &to).with_context(|| {
                        format!("cannot move {} aside to {}", from.display(), to.display())
                    })?;
                    eprintln!("moved {} aside to {}", from.display(), to.display());
                }
            }
        }
        let id = kohakuriver_apiserver::restore(backup, db)
            .with_context(|| format!("cannot restore {}", backup.display()))?;
        eprintln!(
            "restored {} into {} (new store id {id})",
            backup.display(),
            db.display()
        );
        Ok(())
    }
}

/// Controller settings.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerFlags {
    /// A node silent for longer than this is NotReady: its tasks with retries left are
    /// re-queued, the others are Unknown (see --lost-after).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub node_grace: Duration,
    /// A task with no retry left whose node stops answering is Unknown (it may still run
    /// there, and keeps its cores) until the node comes back, is deleted, or stays away
    /// this long; then it is Lost.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub lost_after: Duration,
    /// First delay before a failed task is retried; it doubles per retry.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Longest delay between retries.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub retry_backoff_max: Duration,
    /// Events that last happened longer ago than this are deleted.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub event_ttl: Duration,
}

impl ControllerFlags {
    /// The controllers' config.
    pub fn config(&self) -> ControllersConfig {
        let mut config = ControllersConfig {
            node_grace: self.node_grace,
            lost_after: self.lost_after,
            event_ttl: self.event_ttl,
            ..Default::default()
        };
        config.retry.base = self.retry_backoff;
        config.retry.cap = self.retry_backoff_max;
        config
    }
}

/// Node agent settings.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentFlags {
    /// This node's name (default: the host name, lowercased).
    #[arg(long, value_name = "NODE")]
    pub name: Option<String>,
    /// Shared storage, mounted at /shared in every task container; environment tarballs
    /// are read from DIR/kohakuriver-containers/NAME.tar.
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Address of the agent's log endpoint [default: where the server reaches it: 127.0.0.1:8001
    /// for a server on loopback, else port 8001 on the address this machine uses to reach
    /// the server].
    #[arg(long = "agent-listen", value_name = "ADDR:PORT")]
    pub agent_listen: Option<SocketAddr>,
    /// URL under which the server reaches the log endpoint (default: derived from the listen
    /// address).
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Use this many fake GPUs instead of NVML (for testing without GPUs).
    #[arg(long, value_name = "N", conflicts_with = "gpu_file")]
    pub fake_gpus: Option<u32>,
    /// Use the GPU list in this JSON/YAML file instead of NVML.
    #[arg(long, value_name = "FILE")]
    pub gpu_file: Option<PathBuf>,
    /// Read cores and NUMA topology from this sysfs root instead of /sys.
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sysfs_root: PathBuf,
    /// Heartbeat interval.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How often GPUs and task containers are measured (`top`, the agent's /metrics, the
    /// IdleGPU flag); the heartbeat carries the last sample. At least 1s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_usage_interval)]
    pub usage_interval: Duration,
    /// Time a killed task has between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// How long the agent may go without reaching the server before it stops the
    /// containers of tasks that have a retry left (the server re-queues them elsewhere).
    /// fence-after + kill-grace must be below the server's --node-grace.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub fence_after: Duration,
    /// How long an image pull may take; a task whose pull takes longer fails with
    /// ImagePullFailed.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub pull_timeout: Duration,
    /// Host mounts allowed on this node: every mount's real path (symlinks resolved) must be
    /// under one of these, whatever the server allowed [default: the server's decision, with
    /// symlinks kept inside the server's user mount prefixes].
    #[arg(long, value_name = "PREFIX[,PREFIX]", value_delimiter = ',')]
    pub allow_mounts: Option<Vec<PathBuf>>,
    /// Size of one engine log file of a task container before Docker rotates it; the agent
    /// sets it on every container, so the daemon's `log-opts` never apply.
    #[arg(long, value_name = "SIZE", default_value = "256Mi", value_parser = parse_log_size)]
    pub log_max_size: u64,
    /// Engine log files kept per task container (at least 2, so the agent can prove after a
    /// restart that nothing was rotated away).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..))]
    pub log_max_file: u32,
    /// Remove the captured output of tasks that finished longer ago than this, even while
    /// the task object is kept (reading it then answers why); e.g. 7d [default: keep it
    /// until the task is deleted, by `delete` or its ttlSecondsAfterFinished].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub log_retention: Option<Duration>,
    /// Most bytes of stdout+stderr captured per task; beyond it the log ends with a marker
    /// line, the rest of the output is dropped, and the task's status carries condition
    /// LogsTruncated. 0: no limit.
    #[arg(long, value_name = "SIZE", default_value = "10Gi", value_parser = kohakuriver_api::quantity::parse_bytes)]
    pub max_log_bytes_per_task: u64,
    /// How long Ctrl-C/SIGTERM waits for steps under way (a container being created, a
    /// status being written) before the agent exits anyway; containers keep running.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Most connections open at once on the agent's endpoint (the server's log proxy opens
    /// one per log being read); one more is closed at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_max_connections: u32,
}

/// Parses `--usage-interval`: a duration of at least a second (measuring every container
/// more often would cost more than it tells).
fn parse_usage_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_secs(1) {
        return Err(format!(
            "invalid usage interval {text:?}: it must be at least 1s, e.g. 10s"
        ));
    }
    Ok(interval)
}

/// Parses `--log-max-size` (512M, 1Gi, bytes).
fn parse_log_size(text: &str) -> Result<u64, String> {
    match kohakuriver_api::quantity::parse_bytes(text)? {
        0 => Err(format!(
            "invalid log size {text:?}: it must be at least one byte, e.g. 256Mi"
        )),
        n => Ok(n),
    }
}

impl AgentFlags {
    /// The agent's config, talking to `server_url` and keeping its files under `data_dir`.
    pub fn config(
        &self,
        server_url: &str,
        data_dir: PathBuf,
        default_image: Option<String>,
    ) -> AgentConfig {
        let mut config = AgentConfig::new(self.node_name(), server_url, data_dir);
        config.shared_dir = self.shared_dir.clone();
        if let Some(listen) = self.agent_listen {
            config.listen = listen;
        }
        config.advertise_url = self.advertise_url.clone();
        config.sysfs_root = self.sysfs_root.clone();
        config.static_gpus = match (&self.fake_gpus, &self.gpu_file) {
            (Some(n), _) => Some(StaticGpuSource::Count(*n)),
            (None, Some(file)) => Some(StaticGpuSource::File(file.clone())),
            (None, None) => None,
        };
        config.heartbeat_interval = self.heartbeat_interval;
        config.usage_interval = self.usage_interval;
        config.kill_grace = self.kill_grace;
        config.fence_after = self.fence_after;
        config.pull_timeout = self.pull_timeout;
        config.default_image = default_image;
        config.allow_mounts = self.allow_mounts.clone();
        config.log_limits = kohakuriver_node_agent::container_config::LogLimits {
            max_size: self.log_max_size,
            max_file: self.log_max_file,
        };
        config.log_retention = self.log_retention;
        config.max_log_bytes_per_task = self.max_log_bytes_per_task;
        config.shutdown_timeout = self.shutdown_timeout;
        config.http_limits.max_connections = self.agent_max_connections as usize;
        config
    }

    /// The node name: the flag, else the host name.
    pub fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(host_name)
    }
}

/// This machine's host name, lowercased (node names are DNS names).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The default data dir: `$KOHAKURIVER_DATA_DIR`, else `~/.kohakuriver`, else `./kohakuriver-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KOHAKURIVER_DATA_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".kohakuriver"),
        None => PathBuf::from("kohakuriver-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sizes_parse() {
        // text -> bytes, or an error naming the value
        let cases: [(&str, Result<u64, &str>); 4] = [
            ("256Mi", Ok(256 * 1024 * 1024)),
            ("10m", Ok(10_000_000)),
            ("0", Err("\"0\"")),
            ("ten", Err("\"ten\"")),
        ];
        for (text, want) in cases {
            match (parse_log_size(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(message), Err(needle)) => assert!(message.contains(needle), "{message}"),
                (got, want) => panic!("{text}: {got:?} instead of {want:?}"),
            }
        }
    }

    #[test]
    fn usage_interval_is_at_least_a_second() {
        let cases: [(&str, Result<Duration, &str>); 4] = [
            ("10s", Ok(Duration::from_secs(10))),
            ("1s", Ok(Duration::from_secs(1))),
            ("500ms", Err("\"500ms\": it must be at least 1s")),
            ("0s", Err("\"0s\": it must be at least 1s")),
        ];
        for (text, want) in cases {
            match (parse_usage_interval(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(message), Err(needle)) => assert!(message.contains(needle), "{message}"),
                (got, want) => panic!("{text}: {got:?} instead of {want:?}"),
            }
        }
    }
}
