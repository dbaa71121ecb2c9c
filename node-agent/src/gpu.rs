//! GPU inventory: NVML on real machines, a static list from config for tests.
//!
//! The agent asks a [`GpuInventory`] once at start and again at every heartbeat (health can
//! change). A machine without the NVIDIA driver runs with no GPUs: [`NvmlInventory`] logs one
//! info line and then reports an empty list, it never fails the agent.

use std::path::{Path, PathBuf};

use kohakuriver_api::Gpu;
use serde::Deserialize;

/// Why a static GPU list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The file could not be read.
    #[error("cannot read gpu list {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON/YAML list of GPUs.
    #[error("cannot parse gpu list {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_yaml::Error,
    },
}

/// Something that knows the node's GPUs.
pub trait GpuInventory: Send + Sync + 'static {
    /// The GPUs, ordered by index. Never fails: an inventory that cannot see its GPUs
    /// reports none.
    fn gpus(&self) -> Vec<Gpu>;
}

/// A fixed GPU list, for tests and for machines where NVML is not wanted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StaticGpus(pub Vec<Gpu>);

/// Where a static GPU list comes from, as written in the agent config.
#[derive(Clone, Debug, PartialEq)]
pub enum StaticGpuSource {
    /// `n` fake GPUs `0..n`, named `Fake GPU`, 16 GiB each, on NUMA node 0.
    Count(u32),
    /// A JSON or YAML file holding a list of `Gpu` objects (`index`, `uuid`, `name`,
    /// `memoryBytes`, `numa`, `healthy`).
    File(PathBuf),
    /// This exact list.
    List(Vec<Gpu>),
}

impl StaticGpus {
    /// `n` fake GPUs with indices `0..n`.
    pub fn fake(count: u32) -> StaticGpus {
        StaticGpus(
            (0..count)
                .map(|index| Gpu {
                    index,
                    uuid: format!("GPU-fake-{index:04}"),
                    name: "Fake GPU".to_string(),
                    memory_bytes: 16 << 30,
                    numa: Some(0),
                    healthy: true,
                })
                .collect(),
        )
    }

    /// Reads a JSON or YAML list of GPUs (YAML is a superset of JSON).
    pub fn from_file(path: &Path) -> Result<StaticGpus, GpuError> {
        let text = std::fs::read_to_string(path).map_err(|source| GpuError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        StaticGpus::parse(&text).map_err(|source| GpuError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses a JSON or YAML list of GPUs, sorted by index.
    pub fn parse(text: &str) -> Result<StaticGpus, serde_yaml::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Doc {
            List(Vec<Gpu>),
            Wrapped { gpus: Vec<Gpu> },
        }
        let mut gpus = match serde_yaml::from_str::<Doc>(text)? {
            Doc::List(gpus) | Doc::Wrapped { gpus } => gpus,
        };
        gpus.sort_by_key(|g| g.index);
        Ok(StaticGpus(gpus))
    }

    /// Builds the list a config source describes.
    pub fn from_source(source: &StaticGpuSource) -> Result<StaticGpus, GpuError> {
        match source {
            StaticGpuSource::Count(n) => Ok(StaticGpus::fake(*n)),
            StaticGpuSource::File(path) => StaticGpus::from_file(path),
            StaticGpuSource::List(gpus) => Ok(StaticGpus(gpus.clone())),
        }
    }
}

impl GpuInventory for StaticGpus {
    fn gpus(&self) -> Vec<Gpu> {
        self.0.clone()
    }
}

/// GPUs seen through NVML. Holds the library open for the agent's life; without a driver it
/// holds nothing and reports no GPUs.
pub struct NvmlInventory {
    nvml: Option<nvml_wrapper::Nvml>,
    sysfs_root: PathBuf,
}

impl NvmlInventory {
    /// Opens NVML. When the library or driver is missing, logs one info line and returns an
    /// inventory that reports no GPUs. `sysfs_root` is used to find a GPU's NUMA node when
    /// the driver cannot tell.
    pub fn open(sysfs_root: &Path) -> NvmlInventory {
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(nvml) => Some(nvml),
            Err(err) => {
                tracing::info!(error = %err, "nvml not available, running with no gpus");
                None
            }
        };
        NvmlInventory {
            nvml,
            sysfs_root: sysfs_root.to_path_buf(),
        }
    }

    fn numa_of(&self, device: &nvml_wrapper::Device<'_>) -> Option<u32> {
        if let Ok(id) = device.numa_node_id() {
            return Some(id);
        }
        // Older drivers: the PCI device's numa_node file (-1 means unknown).
        let bus_id = device.pci_info().ok()?.bus_id.to_ascii_lowercase();
        // NVML writes an 8-hex-digit domain; sysfs uses 4.
        let short = bus_id
            .strip_prefix("0000")
            .filter(|rest| rest.len() == 12)
            .unwrap_or(&bus_id);
        let text = std::fs::read_to_string(
            self.sysfs_root
                .join("bus/pci/devices")
                .join(short)
                .join("numa_node"),
        )
        .ok()?;
        text.trim()
            .parse::<i64>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
    }
}

impl GpuInventory for NvmlInventory {
    fn gpus(&self) -> Vec<Gpu> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = match nvml.device_count() {
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(error = %err, "nvml cannot count gpus");
                return Vec::new();
            }
        };
        let mut gpus = Vec::new();
        for i in 0..count {
            let device = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(err) => {
                    // A GPU that NVML cannot open is reported unhealthy, so it is never
                    // allocated but stays visible.
                    gpus.push(Gpu {
                        index: i,
                        uuid: String::new(),
                        name: format!("unreadable gpu ({err})"),
                        memory_bytes: 0,
                        numa: None,
                        healthy: false,
                    });
                    continue;
                }
            };
            let memory = device.memory_info();
            gpus.push(Gpu {
                index: device.index().unwrap_or(i),
                uuid: device.uuid().unwrap_or_default(),
                name: device.name().unwrap_or_default(),
                memory_bytes: memory.as_ref().map(|m| m.total).unwrap_or(0),
                numa: self.numa_of(&device),
                healthy: memory.is_ok(),
            });
        }
        gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_count_gives_indexed_healthy_gpus() {
        let gpus = StaticGpus::fake(3).gpus();
        assert_eq!(
            gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(gpus.iter().all(|g| g.healthy && g.numa == Some(0)));
        assert_ne!(gpus[0].uuid, gpus[1].uuid);
    }

    #[test]
    fn parses_yaml_list_sorted_with_defaults() {
        let list = StaticGpus::parse(
            "- {index: 1, uuid: GPU-b, name: A100, memoryBytes: 80, numa: 1}\n- {index: 0, healthy: false}\n",
        )
        .unwrap();
        assert_eq!(list.0[0].index, 0);
        assert!(!list.0[0].healthy);
        assert_eq!(list.0[1].name, "A100");
        assert_eq!(list.0[1].numa, Some(1));
        assert!(list.0[1].healthy);
    }

    #[test]
    fn parses_json_wrapped_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpus.json");
        std::fs::write(&path, r#"{"gpus": [{"index": 0, "uuid": "GPU-x"}]}"#).unwrap();
        let list = StaticGpus::from_source(&StaticGpuSource::File(path)).unwrap();
        assert_eq!(list.0.len(), 1);
        assert_eq!(list.0[0].uuid, "GPU-x");
    }

    #[test]
    fn bad_file_names_the_path() {
        let err = StaticGpus::from_file(Path::new("/nonexistent/gpus.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/gpus.yaml"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.yaml");
        std::fs::write(&path, "index: [").unwrap();
        assert!(matches!(
            StaticGpus::from_file(&path),
            Err(GpuError::Parse { .. })
        ));
    }

    #[test]
    fn nvml_without_driver_reports_no_gpus() {
        // The test machines have no NVIDIA driver; on one that has, this still must not panic.
        let inv = NvmlInventory::open(Path::new("/sys"));
        let _ = inv.gpus();
    }
}
