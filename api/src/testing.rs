//! Builders for tests: `Task::test("t").cpu(2).gpus(1)`, `Node::test("a").numa(2).cores(8).gpus(4)`.
//!
//! Compiled for this crate's tests and, through the `testing` feature that only
//! dev-dependencies turn on, for every other crate's tests, never into the shipped binary.

use crate::cpuset::CpuSet;
use crate::meta::{ConditionStatus, set_condition};
use crate::node::{Gpu, Node, NodeResources, NumaNode};
use crate::quantity::Memory;
use crate::task::{Allocation, DesiredState, Task, TaskPhase};

impl Task {
    /// A valid task running `true`, one core, no memory limit.
    pub fn test(name: &str) -> Task {
        Task::new(name, vec!["true".to_string()])
    }

    /// Asks for `n` cores.
    pub fn cpu(mut self, n: u32) -> Task {
        self.spec.resources.cpu = n;
        self
    }

    /// Asks for `n` GPUs.
    pub fn gpus(mut self, n: u32) -> Task {
        self.spec.resources.gpus = n;
        self
    }

    /// Asks for a memory limit such as `8G`.
    pub fn memory(mut self, size: &str) -> Task {
        self.spec.resources.memory = Some(Memory::parse(size).expect("valid test memory size"));
        self
    }

    /// Must run on this node.
    pub fn on(mut self, node: &str) -> Task {
        self.spec.placement.node = Some(node.to_string());
        self
    }

    /// Must take its cores from this NUMA node.
    pub fn numa(mut self, numa: u32) -> Task {
        self.spec.placement.numa = Some(numa);
        self
    }

    /// Must use exactly these GPUs.
    pub fn gpu_ids(mut self, ids: &[u32]) -> Task {
        self.spec.placement.gpu_ids = Some(ids.to_vec());
        self
    }

    /// Only on nodes labelled `key=value`.
    pub fn selector(mut self, key: &str, value: &str) -> Task {
        self.spec
            .placement
            .node_selector
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Has this priority.
    pub fn priority(mut self, p: i32) -> Task {
        self.spec.priority = p;
        self
    }

    /// Runs this command.
    pub fn command(mut self, argv: &[&str]) -> Task {
        self.spec.command = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Wants this state.
    pub fn state(mut self, state: DesiredState) -> Task {
        self.spec.state = state;
        self
    }

    /// Runs only after task `name` ends as `condition` asks.
    pub fn after(mut self, name: &str, condition: crate::DependencyCondition) -> Task {
        self.spec
            .depends_on
            .push(crate::Dependency::task(name, condition));
        self
    }

    /// Is in this phase.
    pub fn phase(mut self, phase: TaskPhase) -> Task {
        self.status.phase = phase;
        self
    }

    /// Is bound to `node` holding these cores and GPUs (phase Running).
    pub fn bound(mut self, node: &str, cpus: &str, gpus: &[u32]) -> Task {
        self.status.node = Some(node.to_string());
        self.status.allocation = Some(Allocation {
            cpus: cpus.to_string(),
            numa: None,
            gpus: gpus.to_vec(),
            memory_bytes: self.spec.resources.memory.as_ref().map(Memory::bytes),
        });
        self.status.phase = TaskPhase::Running;
        self
    }
}

impl Node {
    /// A Ready node with one NUMA node, 8 cores, 64G of memory and no GPUs.
    pub fn test(name: &str) -> Node {
        let mut node = Node::new(name);
        set_condition(
            &mut node.status.conditions,
            "Ready",
            ConditionStatus::True,
            Some("AgentReady"),
            None,
            None,
            chrono::DateTime::UNIX_EPOCH,
        );
        node.rebuild(1, 8, 0, 64_000_000_000)
    }

    /// Splits the cores, memory and GPUs evenly over `n` NUMA nodes.
    pub fn numa(self, n: u32) -> Node {
        let (cores, gpus, memory) = self.shape();
        self.rebuild(n.max(1), cores, gpus, memory)
    }

    /// Has `n` cores in all.
    pub fn cores(self, n: u32) -> Node {
        let (_, gpus, memory) = self.shape();
        let numa = self.status.numa.len() as u32;
        self.rebuild(numa, n, gpus, memory)
    }

    /// Has `n` GPUs in all.
    pub fn gpus(self, n: u32) -> Node {
        let (cores, _, memory) = self.shape();
        let numa = self.status.numa.len() as u32;
        self.rebuild(numa, cores, n, memory)
    }

    /// Has this much memory in all.
    pub fn memory(self, size: &str) -> Node {
        let (cores, gpus, _) = self.shape();
        let numa = self.status.numa.len() as u32;
        let bytes = Memory::parse(size).expect("valid test memory size").bytes();
        self.rebuild(numa, cores, gpus, bytes)
    }

    /// Carries this label.
    pub fn label(mut self, key: &str, value: &str) -> Node {
        self.metadata
            .labels
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Is cordoned.
    pub fn cordoned(mut self) -> Node {
        self.spec.unschedulable = true;
        self
    }

    /// Is not Ready.
    pub fn not_ready(mut self) -> Node {
        set_condition(
            &mut self.status.conditions,
            "Ready",
            ConditionStatus::False,
            Some("NodeLost"),
            None,
            None,
            chrono::DateTime::UNIX_EPOCH,
        );
        self
    }

    fn shape(&self) -> (u32, u32, u64) {
        (
            self.status.capacity.cpu,
            self.status.capacity.gpus,
            self.status.capacity.memory_bytes,
        )
    }

    fn rebuild(mut self, numa: u32, cores: u32, gpus: u32, memory: u64) -> Node {
        let per_numa_cores = cores / numa;
        let per_numa_gpus = gpus.div_ceil(numa).max(1);
        self.status.numa = (0..numa)
            .map(|id| {
                let first = id * per_numa_cores;
                let last = if id + 1 == numa {
                    cores
                } else {
                    first + per_numa_cores
                };
                NumaNode {
                    id,
                    cpus: (first..last).collect::<CpuSet>().to_string(),
                    memory_bytes: memory / numa as u64,
                }
            })
            .collect();
        self.status.gpus = (0..gpus)
            .map(|index| Gpu {
                index,
                uuid: format!("GPU-test-{index}"),
                name: "Test GPU".to_string(),
                memory_bytes: 80_000_000_000,
                numa: Some((index / per_numa_gpus).min(numa - 1)),
                healthy: true,
            })
            .collect();
        let resources = NodeResources {
            cpu: cores,
            memory_bytes: memory,
            gpus,
        };
        self.status.capacity = resources.clone();
        self.status.allocatable = resources;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_builder_spreads_over_numa() {
        let n = Node::test("a").numa(2).cores(8).gpus(4);
        assert_eq!(n.status.numa.len(), 2);
        assert_eq!(n.status.numa[0].cpus, "0-3");
        assert_eq!(n.status.numa[1].cpus, "4-7");
        let gpu_numa: Vec<Option<u32>> = n.status.gpus.iter().map(|g| g.numa).collect();
        assert_eq!(gpu_numa, [Some(0), Some(0), Some(1), Some(1)]);
        assert!(n.is_ready());
        assert!(!n.not_ready().is_ready());
    }

    #[test]
    fn task_builder_is_valid() {
        let t = Task::test("t").cpu(2).gpus(1).memory("1G");
        assert!(crate::validation::validate_task(&t).is_empty());
    }
}
