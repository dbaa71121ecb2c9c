//! The allocator: which exact cores, NUMA node, GPUs and memory a task gets on one node.
//!
//! Everything here is pure: no IO, no clock, not async. [`NodeState`] is a node's topology
//! with what is in use marked; [`NodeState::check`] answers "could this task fit here now,
//! and how well" from counters alone (it runs for every pending task against every node, so
//! it allocates nothing), and [`NodeState::allocate`] picks the exact ids on the chosen node.
//! [`allocate`] is the one-call form over a `Node` and the tasks bound to it.
//!
//! Placement policy on one node (compact, to limit fragmentation):
//! - With `placement.numa`, every core comes from that NUMA node, and counted GPUs come from
//!   GPUs attached to it (or of unknown affinity). Exact `gpuIds` are taken as named.
//! - Otherwise the task goes on the single NUMA node that fits it most tightly (fewest free
//!   GPUs left, then fewest free cores left); when GPUs are asked, that NUMA node must also
//!   hold enough free GPUs, so cores sit beside their GPUs. Only when no single NUMA node
//!   fits does the task span NUMA nodes, taking from the fullest-free ones first and, with
//!   GPUs, cores from the GPUs' NUMA nodes first.
//! - Within a NUMA node, the lowest free core ids and GPU indices are taken, so free space
//!   stays in one run at the top.
//! - `cpu: 0` pins nothing and counts nothing (the cpuset string is empty).
//! - Unhealthy GPUs are never handed out. Memory is accounted per node against
//!   `allocatable.memoryBytes` (when the node reports it) for tasks that set a limit.
//! - The cores of the NUMA topology are the allocatable cores; a node that reports no NUMA
//!   topology is taken as one NUMA node 0 holding cores `0..capacity.cpu`.

#[cfg(any(test, feature = "testing"))]
mod holdings;
mod shortfall;

use kohakuriver_api::{Allocation, CpuSet, Node, Task};

#[cfg(any(test, feature = "testing"))]
pub use holdings::Holdings;
pub use shortfall::{Shortfall, Unfit};

/// What a task asks of a node, read once from its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Whole cores; 0 pins nothing.
    pub cpu: u32,
    /// GPUs to pick (when `gpu_ids` is none).
    pub gpus: u32,
    /// Exactly these GPU indices.
    pub gpu_ids: Option<Vec<u32>>,
    /// Every core from this NUMA node.
    pub numa: Option<u32>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
}

impl Request {
    /// The request a task makes.
    pub fn of(task: &Task) -> Request {
        Request {
            cpu: task.spec.resources.cpu,
            gpus: task.gpu_count(),
            gpu_ids: task.spec.placement.gpu_ids.clone(),
            numa: task.spec.placement.numa,
            memory: task.spec.resources.memory.as_ref().map(|m| m.bytes()),
        }
    }
}

/// How well a task fits a node: lower is tighter (better for packing).
pub type Score = (u32, u32, u64);

#[derive(Clone, Debug)]
struct Numa {
    id: u32,
    /// Core ids, ascending.
    cores: Vec<u32>,
    used: Vec<bool>,
    free_cores: u32,
    /// Healthy, free GPUs attached to this NUMA node.
    free_gpus: u32,
    /// GPUs attached to this NUMA node, healthy or not.
    total_gpus: u32,
}

#[derive(Clone, Debug)]
struct GpuSlot {
    index: u32,
    /// Position in `NodeState::numa`, when the affinity is known.
    numa: Option<usize>,
    healthy: bool,
    used: bool,
}

/// A node's topology with the resources held by bound tasks marked as used.
#[derive(Clone, Debug)]
pub struct NodeState {
    name: String,
    numa: Vec<Numa>,
    gpus: Vec<GpuSlot>,
    /// Core id → (NUMA position, core position).
    core_slot: Vec<Option<(u32, u32)>>,
    /// Healthy, free GPUs whose NUMA affinity is unknown (usable with any NUMA node).
    free_gpus_anywhere: u32,
    memory_total: u64,
    memory_used: u64,
}

impl NodeState {
    /// The node's topology with nothing in use.
    pub fn new(node: &Node) -> NodeState {
        let status = &node.status;
        let mut numa: Vec<Numa> = if status.numa.is_empty() {
            vec![Numa {
                id: 0,
                cores: (0..if status.allocatable.cpu > 0 {
                    status.allocatable.cpu
                } else {
                    status.capacity.cpu
                })
                    .collect(),
                used: Vec::new(),
                free_cores: 0,
                free_gpus: 0,
                total_gpus: 0,
            }]
        } else {
            status
                .numa
                .iter()
                .map(|n| Numa {
                    id: n.id,
                    cores: CpuSet::parse(&n.cpus)
                        .map(|s| s.iter().collect())
                        .unwrap_or_default(),
                    used: Vec::new(),
                    free_cores: 0,
                    free_gpus: 0,
                    total_gpus: 0,
                })
                .collect()
        };
        let mut core_slot = Vec::new();
        for (ni, n) in numa.iter_mut().enumerate() {
            n.used = vec![false; n.cores.len()];
            n.free_cores = n.cores.len() as u32;
            for (ci, &core) in n.cores.iter().enumerate() {
                let core = core as usize;
                if core_slot.len() <= core {
                    core_slot.resize(core + 1, None);
                }
                core_slot[core] = Some((ni as u32, ci as u32));
            }
        }
        let mut free_gpus_anywhere = 0;
        let mut gpus: Vec<GpuSlot> = status
            .gpus
            .iter()
            .map(|g| GpuSlot {
                index: g.index,
                numa: g.numa.and_then(|id| numa.iter().position(|n| n.id == id)),
                healthy: g.healthy,
                used: false,
            })
            .collect();
        gpus.sort_by_key(|g| g.index);
        for g in &gpus {
            match g.numa {
                Some(ni) => {
                    numa[ni].total_gpus += 1;
                    if g.healthy {
                        numa[ni].free_gpus += 1;
                    }
                }
                None if g.healthy => free_gpus_anywhere += 1,
                None => {}
            }
        }
        NodeState {
            name: node.metadata.name.clone(),
            numa,
            gpus,
            core_slot,
            free_gpus_anywhere,
            memory_total: status.allocatable.memory_bytes,
            memory_used: 0,
        }
    }

    /// The node's topology with every allocation in `tasks` marked used (tasks that hold no
    /// allocation are skipped).
    pub fn with_tasks(node: &Node, tasks: &[&Task]) -> NodeState {
        let mut state = NodeState::new(node);
        for task in tasks.iter().filter(|t| t.holds_allocation()) {
            if let Some(allocation) = &task.status.allocation {
                state.reserve(allocation);
            }
        }
        state
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free cores on the whole node.
    pub fn free_cores(&self) -> u32 {
        self.numa.iter().map(|n| n.free_cores).sum()
    }

    /// Healthy free GPUs on the whole node.
    pub fn free_gpus(&self) -> u32 {
        self.numa.iter().map(|n| n.free_gpus).sum::<u32>() + self.free_gpus_anywhere
    }

    fn mark(&mut self, allocation: &Allocation, used: bool) {
        if let Ok(cpus) = CpuSet::parse(&allocation.cpus) {
            for core in cpus.iter() {
                if let Some(Some((ni, ci))) = self.core_slot.get(core as usize).copied() {
                    let n = &mut self.numa[ni as usize];
                    if n.used[ci as usize] != used {
                        n.used[ci as usize] = used;
                        if used {
                            n.free_cores -= 1;
                        } else {
                            n.free_cores += 1;
                        }
                    }
                }
            }
        }
        for id in &allocation.gpus {
            if let Ok(pos) = self.gpus.binary_search_by_key(id, |g| g.index) {
                let g = &mut self.gpus[pos];
                if g.used == used {
                    continue;
                }
                g.used = used;
                if g.healthy {
                    let counter = match g.numa {
                        Some(ni) => &mut self.numa[ni].free_gpus,
                        None => &mut self.free_gpus_anywhere,
                    };
                    if used {
                        *counter -= 1;
                    } else {
                        *counter += 1;
                    }
                }
            }
        }
        if let Some(bytes) = allocation.memory_bytes {
            if used {
                self.memory_used = self.memory_used.saturating_add(bytes);
            } else {
                self.memory_used = self.memory_used.saturating_sub(bytes);
            }
        }
    }

    /// Marks an allocation's cores, GPUs and memory as used.
    pub fn reserve(&mut self, allocation: &Allocation) {
        self.mark(allocation, true);
    }

    /// Marks an allocation's cores, GPUs and memory as free again.
    pub fn release(&mut self, allocation: &Allocation) {
        self.mark(allocation, false);
    }

    fn numa_pos(&self, id: u32) -> Option<usize> {
        self.numa.iter().position(|n| n.id == id)
    }

    /// Whether the request could fit now, from counters alone, and how tightly (lower is
    /// tighter). Checks "can never fit" before "does not fit now".
    pub fn check(&self, req: &Request) -> Result<Score, Shortfall> {
        // Can it ever fit?
        let total_cores: u32 = self.numa.iter().map(|n| n.cores.len() as u32).sum();
        let numa_pos = match req.numa {
            Some(id) => Some(self.numa_pos(id).ok_or(Shortfall::NoSuchNuma {
                numa: id,
                has: self.numa.len(),
            })?),
            None => None,
        };
        if let Some(ids) = &req.gpu_ids {
            for &id in ids {
                if self.gpus.binary_search_by_key(&id, |g| g.index).is_err() {
                    return Err(Shortfall::NoSuchGpu {
                        id,
                        has: self.gpus.len(),
                    });
                }
            }
        } else if let Some(ni) = numa_pos {
            let anywhere = self.gpus.iter().filter(|g| g.numa.is_none()).count() as u32;
            let has = self.numa[ni].total_gpus + anywhere;
            if req.gpus > has {
                return Err(Shortfall::GpusNever {
                    need: req.gpus,
                    has,
                    numa: req.numa,
                });
            }
        } else if req.gpus as usize > self.gpus.len() {
            return Err(Shortfall::GpusNever {
                need: req.gpus,
                has: self.gpus.len() as u32,
                numa: None,
            });
        }
        let cores_there = numa_pos.map_or(total_cores, |ni| self.numa[ni].cores.len() as u32);
        if req.cpu > cores_there {
            return Err(Shortfall::CoresNever {
                need: req.cpu,
                has: cores_there,
                numa: req.numa,
            });
        }
        if let Some(need) = req.memory
            && self.memory_total > 0
            && need > self.memory_total
        {
            return Err(Shortfall::MemoryNever {
                need,
                has: self.memory_total,
            });
        }

        // Does it fit now?
        if let Some(need) = req.memory
            && self.memory_total > 0
        {
            let free = self.memory_total.saturating_sub(self.memory_used);
            if need > free {
                return Err(Shortfall::MemoryBusy { need, free });
            }
        }
        let free_gpus_total = self.free_gpus();
        if let Some(ids) = &req.gpu_ids {
            for &id in ids {
                let pos = self.gpus.binary_search_by_key(&id, |g| g.index).ok();
                let g = pos.map(|p| &self.gpus[p]);
                match g {
                    Some(g) if !g.healthy => return Err(Shortfall::GpuUnhealthy { id }),
                    Some(g) if g.used => return Err(Shortfall::GpuInUse { id }),
                    _ => {}
                }
            }
        }
        let left_gpus = free_gpus_total - if req.gpu_ids.is_some() { req.gpus } else { 0 };
        match numa_pos {
            Some(ni) => {
                let n = &self.numa[ni];
                if req.gpu_ids.is_none() {
                    let free = n.free_gpus + self.free_gpus_anywhere;
                    if req.gpus > free {
                        return Err(Shortfall::GpusBusy {
                            need: req.gpus,
                            free,
                            numa: req.numa,
                        });
                    }
                }
                if req.cpu > n.free_cores {
                    return Err(Shortfall::CoresBusy {
                        need: req.cpu,
                        free: n.free_cores,
                        numa: req.numa,
                    });
                }
                let gpus_after = free_gpus_total - req.gpus;
                Ok((gpus_after, n.free_cores - req.cpu, 0))
            }
            None => {
                let counted = if req.gpu_ids.is_some() { 0 } else { req.gpus };
                if counted > free_gpus_total {
                    return Err(Shortfall::GpusBusy {
                        need: counted,
                        free: free_gpus_total,
                        numa: None,
                    });
                }
                let free_cores = self.free_cores();
                if req.cpu > free_cores {
                    return Err(Shortfall::CoresBusy {
                        need: req.cpu,
                        free: free_cores,
                        numa: None,
                    });
                }
                // Tightest single NUMA node that holds the cores (and counted GPUs).
                let single = self
                    .numa
                    .iter()
                    .filter(|n| {
                        n.free_cores >= req.cpu && n.free_gpus + self.free_gpus_anywhere >= counted
                    })
                    .map(|n| n.free_cores - req.cpu)
                    .min();
                let spans = u32::from(single.is_none());
                Ok((
                    left_gpus - counted,
                    spans,
                    u64::from(single.unwrap_or(free_cores - req.cpu)),
                ))
            }
        }
    }

    /// Picks the exact cores, NUMA node and GPUs for the request and marks them used.
    pub fn allocate(&mut self, req: &Request) -> Result<Allocation, Unfit> {
        self.check(req).map_err(|shortfall| Unfit {
            node: self.name.clone(),
            shortfall,
        })?;
        let gpus = self.pick_gpus(req);
        let gpu_numa: Vec<usize> = {
            let mut v: Vec<usize> = gpus
                .iter()
                .filter_map(|id| {
                    let pos = self.gpus.binary_search_by_key(id, |g| g.index).ok()?;
                    self.gpus[pos].numa
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (cores, numa) = self.pick_cores(req, &gpu_numa);
        let allocation = Allocation {
            cpus: cores.iter().copied().collect::<CpuSet>().to_string(),
            numa,
            gpus,
            memory_bytes: req.memory,
        };
        self.reserve(&allocation);
        Ok(allocation)
    }

    /// Free healthy GPUs on NUMA position `ni` (or of unknown affinity), lowest index first.
    fn free_gpus_on(&self, ni: Option<usize>) -> impl Iterator<Item = u32> + '_ {
        self.gpus
            .iter()
            .filter(move |g| g.healthy && !g.used && g.numa == ni)
            .map(|g| g.index)
    }

    fn pick_gpus(&self, req: &Request) -> Vec<u32> {
        if let Some(ids) = &req.gpu_ids {
            let mut ids = ids.clone();
            ids.sort_unstable();
            return ids;
        }
        if req.gpus == 0 {
            return Vec::new();
        }
        let need = req.gpus as usize;
        let mut picked: Vec<u32> = Vec::with_capacity(need);
        let home = match req.numa {
            Some(id) => self.numa_pos(id),
            None => self.tightest_numa(req.cpu, req.gpus),
        };
        let mut order: Vec<Option<usize>> = Vec::new();
        if let Some(ni) = home {
            order.push(Some(ni));
        }
        order.push(None);
        if req.numa.is_none() {
            // Spanning: fill from the NUMA nodes with the most free GPUs first.
            let mut rest: Vec<usize> = (0..self.numa.len()).filter(|&i| Some(i) != home).collect();
            rest.sort_by_key(|&i| (std::cmp::Reverse(self.numa[i].free_gpus), i));
            order.extend(rest.into_iter().map(Some));
        }
        for ni in order {
            picked.extend(self.free_gpus_on(ni).take(need - picked.len()));
            if picked.len() == need {
                break;
            }
        }
        picked.sort_unstable();
        picked
    }

    /// The NUMA position that holds `cpu` free cores and `gpus` free GPUs most tightly.
    fn tightest_numa(&self, cpu: u32, gpus: u32) -> Option<usize> {
        self.numa
            .iter()
            .enumerate()
            .filter(|(_, n)| n.free_cores >= cpu && n.free_gpus + self.free_gpus_anywhere >= gpus)
            .min_by_key(|(i, n)| {
                (
                    (n.free_gpus + self.free_gpus_anywhere) - gpus,
                    n.free_cores - cpu,
                    *i,
                )
            })
            .map(|(i, _)| i)
    }

    fn pick_cores(&self, req: &Request, gpu_numa: &[usize]) -> (Vec<u32>, Option<u32>) {
        let home: Option<usize> = match req.numa {
            Some(id) => self.numa_pos(id),
            None if req.cpu == 0 => match gpu_numa {
                [one] => Some(*one),
                _ => None,
            },
            None => {
                // The GPUs' NUMA node when it alone holds the cores; else the tightest fit.
                match gpu_numa {
                    [one] if self.numa[*one].free_cores >= req.cpu => Some(*one),
                    [] => self.tightest_numa(req.cpu, 0),
                    _ => None,
                }
            }
        };
        if req.cpu == 0 {
            return (Vec::new(), home.map(|ni| self.numa[ni].id));
        }
        let need = req.cpu as usize;
        let take_from = |ni: usize, out: &mut Vec<u32>| {
            let n = &self.numa[ni];
            for (ci, &core) in n.cores.iter().enumerate() {
                if out.len() == need {
                    break;
                }
                if !n.used[ci] {
                    out.push(core);
                }
            }
        };
        let mut cores = Vec::with_capacity(need);
        if let Some(ni) = home {
            take_from(ni, &mut cores);
            if cores.len() == need {
                return (cores, Some(self.numa[ni].id));
            }
            cores.clear();
        }
        // Spanning: the GPUs' NUMA nodes first, then those with the most free cores.
        let mut order: Vec<usize> = gpu_numa.to_vec();
        let mut rest: Vec<usize> = (0..self.numa.len())
            .filter(|i| !gpu_numa.contains(i))
            .collect();
        rest.sort_by_key(|&i| (std::cmp::Reverse(self.numa[i].free_cores), i));
        order.extend(rest);
        for ni in order {
            take_from(ni, &mut cores);
        }
        cores.sort_unstable();
        let numa = {
            let first = cores
                .first()
                .and_then(|&c| self.core_slot[c as usize].map(|(ni, _)| ni));
            first
                .filter(|&ni| {
                    cores
                        .iter()
                        .all(|&c| self.core_slot[c as usize].map(|(n, _)| n) == Some(ni))
                })
                .map(|ni| self.numa[ni as usize].id)
        };
        (cores, numa)
    }
}

/// Picks the exact resources for `task` on `node`, given the tasks bound to the node (those
/// holding allocations are counted; others are ignored). Readiness, cordon and selectors are
/// the scheduler's filter, not this function's.
pub fn allocate(node: &Node, tasks_on_node: &[&Task], task: &Task) -> Result<Allocation, Unfit> {
    NodeState::with_tasks(node, tasks_on_node).allocate(&Request::of(task))
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
