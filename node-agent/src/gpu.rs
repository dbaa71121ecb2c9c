//! GPU inventory and live readings: NVML on real machines, a static list from config, and a
//! scripted fake for tests.
//!
//! The agent asks a [`GpuInventory`] for its GPUs once at start and again at every heartbeat
//! (health can change), and for their live readings (utilisation, memory, temperature,
//! power) at every usage sample. A machine without the NVIDIA driver runs with no GPUs:
//! [`NvmlInventory`] logs one info line and then reports an empty list and no readings, it
//! never fails the agent. [`FakeGpus`] holds readings a test sets, so everything built on
//! readings (node usage, task usage, the idle-GPU flag, the agent's metrics) is tested
//! without a GPU.

use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use kohakuriver_api::{Gpu, GpuUsage};
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

    /// Each GPU's live readings now, ordered by index. Never fails: a GPU that cannot be
    /// read has no entry, and a source that measures nothing (a static list) reports none.
    fn readings(&self) -> Vec<GpuUsage>;
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

    /// A list written in a config file describes GPUs, it does not measure them: no
    /// readings, so nothing is shown that was not measured.
    fn readings(&self) -> Vec<GpuUsage> {
        Vec::new()
    }
}

/// GPUs whose readings a test sets: the fake that drives every test of usage, the idle-GPU
/// flag and the GPU metrics. A cheap `Clone` handle; clones share the readings. A std
/// `Mutex` is right: it is held only to copy a short list.
#[derive(Clone, Debug, Default)]
pub struct FakeGpus {
    inventory: Vec<Gpu>,
    readings: Arc<Mutex<Vec<GpuUsage>>>,
}

impl FakeGpus {
    /// `count` GPUs as [`StaticGpus::fake`] makes them, each read as idle (0 %) with
    /// 1 GiB of its 16 GiB in use, at 40 °C and 60 W.
    pub fn new(count: u32) -> FakeGpus {
        let inventory = StaticGpus::fake(count).0;
        let readings = inventory
            .iter()
            .map(|g| GpuUsage {
                index: g.index,
                utilization_percent: 0,
                memory_used_bytes: 1 << 30,
                memory_total_bytes: g.memory_bytes,
                temperature_celsius: Some(40),
                power_watts: Some(60.0),
            })
            .collect();
        FakeGpus {
            inventory,
            readings: Arc::new(Mutex::new(readings)),
        }
    }

    /// Sets GPU `index`'s utilisation and memory in use (a GPU it does not have is ignored).
    pub fn set(&self, index: u32, utilization_percent: u32, memory_used_bytes: u64) {
        let mut readings = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = readings.iter_mut().find(|r| r.index == index) {
            r.utilization_percent = utilization_percent;
            r.memory_used_bytes = memory_used_bytes;
        }
    }

    /// Replaces every reading (an empty list: the GPUs cannot be read now).
    pub fn set_readings(&self, readings: Vec<GpuUsage>) {
        *self.readings.lock().unwrap_or_else(|e| e.into_inner()) = readings;
    }
}

impl GpuInventory for FakeGpus {
    fn gpus(&self) -> Vec<Gpu> {
        self.inventory.clone()
    }

    fn readings(&self) -> Vec<GpuUsage> {
        self.readings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One GPU's reading from what NVML answered: None when neither its utilisation nor its
/// memory could be read (no entry is better than zeros that were never measured).
/// `power_milliwatts` is NVML's unit; the reading is in watts.
pub fn nvml_reading(
    index: u32,
    utilization_percent: Option<u32>,
    memory_used_total: Option<(u64, u64)>,
    temperature_celsius: Option<u32>,
    power_milliwatts: Option<u32>,
) -> Option<GpuUsage> {
    if utilization_percent.is_none() && memory_used_total.is_none() {
        return None;
    }
    let (memory_used_bytes, memory_total_bytes) = memory_used_total.unwrap_or((0, 0));
    Some(GpuUsage {
        index,
        utilization_percent: utilization_percent.unwrap_or(0).min(100),
        memory_used_bytes,
        memory_total_bytes,
        temperature_celsius,
        power_watts: power_milliwatts.map(|mw| f64::from(mw) / 1000.0),
    })
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
    fn readings(&self) -> Vec<GpuUsage> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = match nvml.device_count() {
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(error = %err, "nvml cannot count gpus");
                return Vec::new();
            }
        };
        (0..count)
            .filter_map(|i| {
                let device = nvml.device_by_index(i).ok()?;
                nvml_reading(
                    device.index().unwrap_or(i),
                    device.utilization_rates().ok().map(|u| u.gpu),
                    device.memory_info().ok().map(|m| (m.used, m.total)),
                    device
                        .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                        .ok(),
                    device.power_usage().ok(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
