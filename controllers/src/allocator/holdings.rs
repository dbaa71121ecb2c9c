//! [`Holdings`]: which tasks hold each core and GPU of a node, so tests and benchmarks can
//! check that no two allocations overlap. Test support only: compiled with the `testing`
//! feature, which only dev-dependencies turn on.

use std::collections::BTreeMap;

use kohakuriver_api::{Allocation, CpuSet};

/// Resources held on one node by a set of allocations, for checks: core id → holders and
/// GPU index → holders.
#[derive(Debug, Default)]
pub struct Holdings {
    /// Core id → names of the tasks holding it.
    pub cores: BTreeMap<u32, Vec<String>>,
    /// GPU index → names of the tasks holding it.
    pub gpus: BTreeMap<u32, Vec<String>>,
}

impl Holdings {
    /// Adds one task's allocation.
    pub fn add(&mut self, task: &str, allocation: &Allocation) {
        for core in CpuSet::parse(&allocation.cpus).unwrap_or_default().iter() {
            self.cores.entry(core).or_default().push(task.to_string());
        }
        for &gpu in &allocation.gpus {
            self.gpus.entry(gpu).or_default().push(task.to_string());
        }
    }

    /// Every core or GPU held by more than one task, as sentences.
    pub fn overlaps(&self) -> Vec<String> {
        let cores = self
            .cores
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(c, v)| format!("core {c} held by {v:?}"));
        let gpus = self
            .gpus
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(g, v)| format!("GPU {g} held by {v:?}"));
        cores.chain(gpus).collect()
    }
}
