//! Table-driven tests of the allocator: one line per case, builder fixtures.

use kohakuriver_api::{Node, Task};

use super::*;

/// Allocates `task` on `node` with `bound` holding resources, and renders the outcome as
/// `cpus=0-3 numa=0 gpus=0,1`, `never: …` or `busy: …`.
fn run(node: &Node, bound: &[Task], task: &Task) -> String {
    let refs: Vec<&Task> = bound.iter().collect();
    match allocate(node, &refs, task) {
        Ok(a) => {
            let gpus: Vec<String> = a.gpus.iter().map(u32::to_string).collect();
            let numa = a.numa.map_or("-".to_string(), |n| n.to_string());
            format!("cpus={} numa={numa} gpus={}", a.cpus, gpus.join(","))
        }
        Err(e) if e.is_never() => format!("never: {e}"),
        Err(e) => format!("busy: {e}"),
    }
}

fn check(node: &Node, bound: &[Task], task: &Task, want: &str) {
    assert_eq!(run(node, bound, task), want, "task {task:?}");
}

fn two_socket() -> Node {
    Node::test("a").numa(2).cores(8).gpus(4)
}

fn busy(name: &str, cpus: &str, gpus: &[u32]) -> Task {
    Task::test(name).bound("a", cpus, gpus)
}

#[test]
fn placement_cases() {
    let n = two_socket(); // NUMA 0: cores 0-3, GPUs 0,1; NUMA 1: cores 4-7, GPUs 2,3
    let t = Task::test;
    // Plain core requests pack from the lowest ids on one NUMA node.
    check(&n, &[], &t("t").cpu(2), "cpus=0-1 numa=0 gpus=");
    check(&n, &[], &t("t").cpu(4), "cpus=0-3 numa=0 gpus=");
    // Spanning only when no single NUMA node holds the cores.
    check(&n, &[], &t("t").cpu(6), "cpus=0-5 numa=- gpus=");
    // Tightest NUMA node wins: NUMA 0 has 1 free core, NUMA 1 has 4.
    check(
        &n,
        &[busy("x", "0-2", &[])],
        &t("t").cpu(1),
        "cpus=3 numa=0 gpus=",
    );
    check(
        &n,
        &[busy("x", "0-2", &[])],
        &t("t").cpu(2),
        "cpus=4-5 numa=1 gpus=",
    );
    // GPU affinity: cores come from the GPUs' NUMA node.
    check(&n, &[], &t("t").cpu(2).gpus(1), "cpus=0-1 numa=0 gpus=0");
    check(
        &n,
        &[busy("x", "", &[0, 1])],
        &t("t").cpu(2).gpus(1),
        "cpus=4-5 numa=1 gpus=2",
    );
    check(
        &n,
        &[busy("x", "", &[0])],
        &t("t").cpu(1).gpus(1),
        "cpus=0 numa=0 gpus=1",
    );
    // GPUs free on NUMA 0 but its cores are taken: both move to NUMA 1.
    check(
        &n,
        &[busy("x", "0-3", &[])],
        &t("t").cpu(1).gpus(2),
        "cpus=4 numa=1 gpus=2,3",
    );
    // Two GPUs that no single NUMA node has free: span.
    check(
        &n,
        &[busy("x", "", &[0, 2])],
        &t("t").cpu(1).gpus(2),
        "cpus=0 numa=0 gpus=1,3",
    );
    check(
        &n,
        &[],
        &t("t").cpu(2).gpus(4),
        "cpus=0-1 numa=0 gpus=0,1,2,3",
    );
    // Explicit NUMA: every core from it.
    check(&n, &[], &t("t").cpu(2).numa(1), "cpus=4-5 numa=1 gpus=");
    check(
        &n,
        &[],
        &t("t").cpu(1).gpus(1).numa(1),
        "cpus=4 numa=1 gpus=2",
    );
    // cpu 0: unpinned and uncounted.
    check(
        &n,
        &[busy("x", "0-7", &[])],
        &t("t").cpu(0),
        "cpus= numa=- gpus=",
    );
    check(
        &n,
        &[busy("x", "0-7", &[])],
        &t("t").cpu(0).gpus(1),
        "cpus= numa=0 gpus=0",
    );
    check(&n, &[], &t("t").cpu(0).numa(1), "cpus= numa=1 gpus=");
    // Exact GPU ids.
    check(
        &n,
        &[],
        &t("t").on("a").gpu_ids(&[3]),
        "cpus=4 numa=1 gpus=3",
    );
    check(
        &n,
        &[],
        &t("t").on("a").gpu_ids(&[1, 2]),
        "cpus=0 numa=0 gpus=1,2",
    );
    check(
        &n,
        &[busy("x", "", &[3])],
        &t("t").on("a").gpu_ids(&[3]),
        "busy: a: GPU 3 is in use",
    );
    // Does not fit now.
    check(
        &n,
        &[busy("x", "0-6", &[])],
        &t("t").cpu(2),
        "busy: a: needs 2 cores, 1 free",
    );
    check(
        &n,
        &[busy("x", "", &[2])],
        &t("t").cpu(1).gpus(2).numa(1),
        "busy: a: needs 2 GPUs on NUMA 1, 1 free",
    );
    check(
        &n,
        &[busy("x", "4-7", &[])],
        &t("t").cpu(1).numa(1),
        "busy: a: needs 1 core on NUMA 1, 0 free",
    );
    check(
        &n,
        &[busy("x", "", &[0, 1, 2])],
        &t("t").gpus(2),
        "busy: a: needs 2 GPUs, 1 free",
    );
    // Can never fit.
    check(&n, &[], &t("t").gpus(5), "never: a: needs 5 GPUs, has 4");
    check(&n, &[], &t("t").cpu(9), "never: a: needs 9 cores, has 8");
    check(
        &n,
        &[],
        &t("t").cpu(5).numa(0),
        "never: a: needs 5 cores on NUMA 0, has 4",
    );
    check(
        &n,
        &[],
        &t("t").gpus(3).numa(0),
        "never: a: needs 3 GPUs on NUMA 0, has 2",
    );
    check(
        &n,
        &[],
        &t("t").numa(2),
        "never: a: NUMA node 2 does not exist (2 NUMA nodes)",
    );
    check(
        &n,
        &[],
        &t("t").on("a").gpu_ids(&[4]),
        "never: a: GPU 4 does not exist (4 GPUs)",
    );
    // Tasks that hold nothing (terminal, or unbound) are not counted.
    let done = busy("x", "0-7", &[0, 1, 2, 3]).phase(kohakuriver_api::TaskPhase::Succeeded);
    check(
        &n,
        &[done],
        &t("t").cpu(8).gpus(4),
        "cpus=0-7 numa=- gpus=0,1,2,3",
    );
}

#[test]
fn memory_is_accounted_per_node() {
    let n = Node::test("a").memory("16G");
    let held = Task::test("x").memory("10G").bound("a", "0", &[]);
    check(
        &n,
        &[],
        &Task::test("t").memory("16G"),
        "cpus=0 numa=0 gpus=",
    );
    check(
        &n,
        std::slice::from_ref(&held),
        &Task::test("t").memory("8G"),
        "busy: a: needs 8.0G memory, 6.0G free",
    );
    check(
        &n,
        &[held],
        &Task::test("t").memory("6G"),
        "cpus=1 numa=0 gpus=",
    );
    check(
        &n,
        &[],
        &Task::test("t").memory("17G"),
        "never: a: needs 17.0G memory, has 16.0G",
    );
}

#[test]
fn unhealthy_gpus_are_never_allocated() {
    let mut n = two_socket();
    n.status.gpus[0].healthy = false;
    check(&n, &[], &Task::test("t").gpus(1), "cpus=0 numa=0 gpus=1");
    check(&n, &[], &Task::test("t").gpus(2), "cpus=4 numa=1 gpus=2,3");
    check(
        &n,
        &[],
        &Task::test("t").gpus(4),
        "busy: a: needs 4 GPUs, 3 free",
    );
    check(
        &n,
        &[],
        &Task::test("t").on("a").gpu_ids(&[0]),
        "busy: a: GPU 0 is unhealthy",
    );
}

#[test]
fn fragmentation_is_limited_by_packing() {
    // Eight one-core tasks in a row fill NUMA 0 before touching NUMA 1, so a four-core
    // task on one NUMA node still fits after four of them.
    let n = two_socket();
    let mut state = NodeState::new(&n);
    let one = Request::of(&Task::test("t").cpu(1));
    let cpus: Vec<String> = (0..4).map(|_| state.allocate(&one).unwrap().cpus).collect();
    assert_eq!(cpus, ["0", "1", "2", "3"]);
    let four = state
        .allocate(&Request::of(&Task::test("t").cpu(4)))
        .unwrap();
    assert_eq!((four.cpus.as_str(), four.numa), ("4-7", Some(1)));
}

#[test]
fn a_node_without_topology_is_one_numa_node() {
    let mut n = Node::test("a");
    n.status.numa.clear();
    n.status.capacity.cpu = 4;
    n.status.allocatable.cpu = 4;
    check(&n, &[], &Task::test("t").cpu(4), "cpus=0-3 numa=0 gpus=");
    check(
        &n,
        &[],
        &Task::test("t").cpu(5),
        "never: a: needs 5 cores, has 4",
    );
}

#[test]
fn release_frees_exactly_what_was_reserved() {
    let n = two_socket();
    let mut state = NodeState::new(&n);
    let a = state
        .allocate(&Request::of(&Task::test("t").cpu(3).gpus(2)))
        .unwrap();
    assert_eq!((state.free_cores(), state.free_gpus()), (5, 2));
    state.release(&a);
    assert_eq!((state.free_cores(), state.free_gpus()), (8, 4));
}

mod properties {
    use std::collections::BTreeMap;

    use kohakuriver_api::{CpuSet, Node, Task, TaskPhase};
    use proptest::prelude::*;

    use crate::allocator::Holdings;
    use crate::placement::{Cluster, Decision};

    #[derive(Clone, Debug)]
    enum Op {
        /// Submit a task: cores, GPUs, NUMA node, memory in GB.
        Submit(u32, u32, Option<u32>, Option<u64>),
        /// Finish the n-th (modulo) running task.
        Finish(usize),
    }

    fn node_strategy() -> impl Strategy<Value = (u32, u32, u32, u64, Option<u32>)> {
        // NUMA nodes, cores, GPUs, memory GB, an unhealthy GPU.
        (
            1u32..=2,
            1u32..=16,
            0u32..=8,
            1u64..=64,
            prop::option::of(0u32..8),
        )
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..=6, 0u32..=4, prop::option::of(0u32..=2), prop::option::of(1u64..=16))
                .prop_map(|(c, g, n, m)| Op::Submit(c, g, n, m)),
            1 => any::<usize>().prop_map(Op::Finish),
        ]
    }

    fn build(i: usize, (numa, cores, gpus, mem, sick): (u32, u32, u32, u64, Option<u32>)) -> Node {
        let mut n = Node::test(&format!("n{i}"))
            .cores(cores.max(numa))
            .gpus(gpus)
            .memory(&format!("{mem}G"))
            .numa(numa);
        if let Some(g) = sick.and_then(|s| n.status.gpus.get_mut(s as usize)) {
            g.healthy = false;
        }
        n
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn allocations_never_overlap_or_exceed_capacity(
            shapes in prop::collection::vec(node_strategy(), 1..4),
            ops in prop::collection::vec(op_strategy(), 1..80),
        ) {
            let nodes: Vec<Node> = shapes.into_iter().enumerate().map(|(i, s)| build(i, s)).collect();
            let mut held: Vec<Task> = Vec::new();
            for (k, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Submit(cpu, gpus, numa, mem) => {
                        let mut t = Task::test(&format!("t{k}")).cpu(cpu).gpus(gpus);
                        t.spec.placement.numa = numa;
                        if let Some(gb) = mem {
                            t = t.memory(&format!("{gb}G"));
                        }
                        // A fresh cluster from the objects each time, as the scheduler
                        // rebuilds it: only what the tasks record is trusted.
                        let mut cluster = Cluster::new(&nodes, &held);
                        if let Decision::Bind { node, allocation } = cluster.place(&t, &[]) {
                            t.status.node = Some(node);
                            t.status.allocation = Some(allocation);
                            t.status.phase = TaskPhase::Assigned;
                            held.push(t);
                        }
                    }
                    Op::Finish(n) if !held.is_empty() => {
                        let i = n % held.len();
                        held.remove(i);
                    }
                    Op::Finish(_) => {}
                }
                check_invariants(&nodes, &held)?;
            }
        }
    }

    fn check_invariants(nodes: &[Node], held: &[Task]) -> Result<(), TestCaseError> {
        let mut per_node: BTreeMap<&str, (Holdings, u64)> = BTreeMap::new();
        for t in held {
            let node = t.status.node.as_deref().unwrap_or_default();
            let a = t
                .status
                .allocation
                .as_ref()
                .expect("bound task has an allocation");
            let entry = per_node.entry(node).or_default();
            entry.0.add(&t.metadata.name, a);
            entry.1 += a.memory_bytes.unwrap_or(0);
            let cpus = CpuSet::parse(&a.cpus).expect("valid cpuset");
            prop_assert_eq!(cpus.len() as u32, t.spec.resources.cpu);
            prop_assert_eq!(a.gpus.len() as u32, t.spec.resources.gpus);
            let n = nodes
                .iter()
                .find(|n| n.metadata.name == node)
                .expect("known node");
            if let Some(want) = t.spec.placement.numa {
                let numa = n
                    .status
                    .numa
                    .iter()
                    .find(|x| x.id == want)
                    .expect("numa exists");
                let there = CpuSet::parse(&numa.cpus).unwrap();
                prop_assert!(
                    cpus.difference(&there).is_empty(),
                    "cores off NUMA {}",
                    want
                );
            }
            for g in &a.gpus {
                let gpu = n
                    .status
                    .gpus
                    .iter()
                    .find(|x| x.index == *g)
                    .expect("gpu exists");
                prop_assert!(gpu.healthy, "unhealthy GPU {} allocated", g);
            }
        }
        for (node, (holdings, memory)) in &per_node {
            prop_assert!(
                holdings.overlaps().is_empty(),
                "{}: {:?}",
                node,
                holdings.overlaps()
            );
            let n = nodes.iter().find(|n| n.metadata.name == *node).unwrap();
            prop_assert!(holdings.cores.len() as u32 <= n.status.capacity.cpu);
            prop_assert!(holdings.gpus.len() as u32 <= n.status.capacity.gpus);
            prop_assert!(*memory <= n.status.allocatable.memory_bytes);
        }
        Ok(())
    }
}
