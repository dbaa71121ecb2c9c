//! What the machine has: online cores, NUMA topology and memory, read from sysfs and procfs.
//!
//! Both roots are configurable so tests can present a fake two-socket machine (a temp dir
//! laid out like `/sys` and `/proc`) mapped onto the real core ids of the test machine.
//! A machine without NUMA information is reported as one NUMA node holding every online core
//! and all memory, so the scheduler can treat every node the same way.

use std::path::{Path, PathBuf};

use kohakuriver_api::{CpuSet, NumaNode};

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A file that must exist could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file had content we do not understand.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// The machine as the scheduler needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Every online logical CPU.
    pub cpus: CpuSet,
    /// NUMA nodes with their (online) cores and memory; never empty.
    pub numa: Vec<NumaNode>,
    /// Total memory in bytes (`MemTotal` of `<procfs>/meminfo`).
    pub memory_bytes: u64,
}

impl Topology {
    /// Number of online logical CPUs.
    pub fn cpu_count(&self) -> u32 {
        self.cpus.len() as u32
    }
}

/// Reads the topology from `<sysfs_root>/devices/system/{cpu,node}` and
/// `<procfs_root>/meminfo`.
pub fn discover(sysfs_root: &Path, procfs_root: &Path) -> Result<Topology, DiscoveryError> {
    let memory_bytes = read_meminfo_total(&procfs_root.join("meminfo"))?;
    let online_path = sysfs_root.join("devices/system/cpu/online");
    let cpus = parse_cpuset(&online_path, &read(&online_path)?)?;

    let mut numa = Vec::new();
    let node_dir = sysfs_root.join("devices/system/node");
    if let Ok(entries) = std::fs::read_dir(&node_dir) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(id) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let cpulist_path = entry.path().join("cpulist");
            let node_cpus = parse_cpuset(&cpulist_path, &read(&cpulist_path)?)?;
            // Offline cores cannot be pinned; memory-only nodes (no online cores) are
            // skipped because no task can be placed on them.
            let online: CpuSet = node_cpus.iter().filter(|c| cpus.contains(*c)).collect();
            if online.is_empty() {
                continue;
            }
            let meminfo_path = entry.path().join("meminfo");
            let node_memory = match std::fs::read_to_string(&meminfo_path) {
                Ok(text) => parse_meminfo_total(&meminfo_path, &text)?,
                Err(_) => 0,
            };
            numa.push(NumaNode {
                id,
                cpus: online.to_string(),
                memory_bytes: node_memory,
            });
        }
    }
    numa.sort_by_key(|n| n.id);
    if numa.is_empty() {
        numa.push(NumaNode {
            id: 0,
            cpus: cpus.to_string(),
            memory_bytes,
        });
    }
    Ok(Topology {
        cpus,
        numa,
        memory_bytes,
    })
}

fn read(path: &Path) -> Result<String, DiscoveryError> {
    std::fs::read_to_string(path).map_err(|source| DiscoveryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_cpuset(path: &Path, text: &str) -> Result<CpuSet, DiscoveryError> {
    CpuSet::parse(text).map_err(|message| DiscoveryError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

fn read_meminfo_total(path: &Path) -> Result<u64, DiscoveryError> {
    parse_meminfo_total(path, &read(path)?)
}

/// Finds `MemTotal: N kB` in `/proc/meminfo` or `Node N MemTotal: N kB` in a NUMA node's
/// meminfo.
fn parse_meminfo_total(path: &Path, text: &str) -> Result<u64, DiscoveryError> {
    meminfo_field(text, "MemTotal").ok_or_else(|| DiscoveryError::Parse {
        path: path.to_path_buf(),
        message: "no MemTotal line".to_string(),
    })
}

/// The value in bytes of a `KEY: N kB` line of a meminfo file (a `Node N ` prefix is
/// allowed), or None when the key is absent.
pub fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.split_whitespace().last()? != key {
            return None;
        }
        let mut parts = value.split_whitespace();
        let number: u64 = parts.next()?.parse().ok()?;
        let unit = parts.next().unwrap_or("");
        Some(if unit.eq_ignore_ascii_case("kb") {
            number * 1024
        } else {
            number
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn proc_root(total_kb: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "meminfo",
            &format!("MemTotal:       {total_kb} kB\nMemFree:        1 kB\nMemAvailable:   2 kB\n"),
        );
        dir
    }

    #[test]
    fn two_socket_machine() {
        let sys = tempfile::tempdir().unwrap();
        write(sys.path(), "devices/system/cpu/online", "0-3\n");
        write(sys.path(), "devices/system/node/node0/cpulist", "0-1\n");
        write(
            sys.path(),
            "devices/system/node/node0/meminfo",
            "Node 0 MemTotal:       1024 kB\nNode 0 MemFree:  1 kB\n",
        );
        write(sys.path(), "devices/system/node/node1/cpulist", "2-3\n");
        write(
            sys.path(),
            "devices/system/node/node1/meminfo",
            "Node 1 MemTotal:       2048 kB\n",
        );
        write(sys.path(), "devices/system/node/possible", "0-1\n");
        let proc = proc_root(4096);
        let topo = discover(sys.path(), proc.path()).unwrap();
        assert_eq!(topo.cpu_count(), 4);
        assert_eq!(topo.memory_bytes, 4096 * 1024);
        assert_eq!(
            topo.numa,
            vec![
                NumaNode {
                    id: 0,
                    cpus: "0-1".into(),
                    memory_bytes: 1024 * 1024
                },
                NumaNode {
                    id: 1,
                    cpus: "2-3".into(),
                    memory_bytes: 2048 * 1024
                },
            ]
        );
    }

    #[test]
    fn no_numa_directory_means_one_node_with_everything() {
        let sys = tempfile::tempdir().unwrap();
        write(sys.path(), "devices/system/cpu/online", "0-7\n");
        let proc = proc_root(8);
        let topo = discover(sys.path(), proc.path()).unwrap();
        assert_eq!(
            topo.numa,
            vec![NumaNode {
                id: 0,
                cpus: "0-7".into(),
                memory_bytes: 8192
            }]
        );
    }

    #[test]
    fn offline_cores_and_memory_only_nodes_are_left_out() {
        let sys = tempfile::tempdir().unwrap();
        write(sys.path(), "devices/system/cpu/online", "0-2\n");
        write(sys.path(), "devices/system/node/node0/cpulist", "0-3\n");
        write(sys.path(), "devices/system/node/node1/cpulist", "\n");
        write(sys.path(), "devices/system/node/node10/cpulist", "4-5\n");
        let proc = proc_root(8);
        let topo = discover(sys.path(), proc.path()).unwrap();
        assert_eq!(topo.numa.len(), 1);
        assert_eq!(topo.numa[0].cpus, "0-2");
        assert_eq!(topo.numa[0].memory_bytes, 0);
    }

    #[test]
    fn missing_online_file_is_a_clear_error() {
        let sys = tempfile::tempdir().unwrap();
        let proc = proc_root(8);
        let err = discover(sys.path(), proc.path()).unwrap_err();
        assert!(
            err.to_string().contains("devices/system/cpu/online"),
            "{err}"
        );
    }

    #[test]
    fn meminfo_field_reads_node_prefixed_and_plain_lines() {
        assert_eq!(
            meminfo_field("Node 3 MemTotal:  10 kB\n", "MemTotal"),
            Some(10240)
        );
        assert_eq!(
            meminfo_field("MemAvailable: 3 kB\nMemTotal: 5 kB", "MemAvailable"),
            Some(3072)
        );
        assert_eq!(
            meminfo_field("HugePages_Total: 0\n", "HugePages_Total"),
            Some(0)
        );
        assert_eq!(meminfo_field("MemFree: 1 kB\n", "MemTotal"), None);
    }

    #[test]
    fn real_machine_is_readable() {
        let topo = discover(Path::new("/sys"), Path::new("/proc")).unwrap();
        assert!(topo.cpu_count() >= 1);
        assert!(!topo.numa.is_empty());
        assert!(topo.memory_bytes > 0);
    }
}
