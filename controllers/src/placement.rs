//! Filter and score over the whole cluster: which node a task goes to, or why none.
//!
//! Pure, like the allocator. [`Cluster`] holds every node's [`NodeState`] (in name order, so
//! two schedulers looking at the same objects decide the same way) plus what the filter
//! needs: readiness, cordon and labels. [`Cluster::place`] filters (Ready, not cordoned,
//! `placement.node`, `nodeSelector`, nodes closed by a reservation), asks every remaining
//! node how tightly the task fits, and picks the tightest (best fit: fewest free GPUs left,
//! then a single NUMA node over spanning, then fewest free cores left; ties by name).

use std::collections::{BTreeMap, HashMap};

use kohakuriver_api::{Allocation, LabelSelector, Node, Task};

use crate::allocator::{NodeState, Request, Score, Shortfall};

/// How many per-node reasons a wait or failure message names before summarising.
const MESSAGE_NODES: usize = 3;

/// One node as the scheduler sees it.
#[derive(Clone, Debug)]
struct Member {
    state: NodeState,
    ready: bool,
    /// False until the agent first reported (a node created but not yet described).
    reported: bool,
    cordoned: bool,
    labels: BTreeMap<String, String>,
}

/// Every node with the resources held on it.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    members: Vec<Member>,
    index: HashMap<String, usize>,
}

/// What to do with a queued task.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Bind it to this node with this allocation.
    Bind {
        /// The node's name.
        node: String,
        /// The exact resources.
        allocation: Allocation,
    },
    /// It fits nowhere now; keep it queued.
    Wait {
        /// Per-node shortfalls, for `status.message`.
        message: String,
        /// The node it is closest to fitting on, when only capacity in use blocks it.
        closest: Option<usize>,
    },
    /// It names a node that is not registered (yet): keep it queued until that node
    /// joins, as Kubernetes keeps such a pod Pending (manifests may arrive before machines).
    NoSuchNode {
        /// Why, for `status.message`.
        message: String,
    },
    /// It can never fit as the cluster is built.
    Fail {
        /// Why, for `status.message`.
        message: String,
    },
}

impl Cluster {
    /// The cluster from its nodes and the tasks holding allocations (tasks bound to unknown
    /// nodes, or holding nothing, are skipped).
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Cluster {
        let mut nodes: Vec<&Node> = nodes.into_iter().collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let members: Vec<Member> = nodes
            .iter()
            .map(|n| Member {
                state: NodeState::new(n),
                ready: n.is_ready(),
                reported: n.status.last_heartbeat.is_some() || !n.status.conditions.is_empty(),
                cordoned: n.spec.unschedulable,
                labels: n.metadata.labels.clone(),
            })
            .collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.metadata.name.clone(), i))
            .collect();
        let mut cluster = Cluster { members, index };
        for task in tasks {
            if let (true, Some(node), Some(allocation)) = (
                task.holds_allocation(),
                &task.status.node,
                &task.status.allocation,
            ) {
                cluster.reserve(node, allocation);
            }
        }
        cluster
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there is no node.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The position of a node by name.
    pub fn position(&self, node: &str) -> Option<usize> {
        self.index.get(node).copied()
    }

    /// Marks an allocation on `node` as used (unknown nodes are ignored).
    pub fn reserve(&mut self, node: &str, allocation: &Allocation) {
        if let Some(&i) = self.index.get(node) {
            self.members[i].state.reserve(allocation);
        }
    }

    /// Marks an allocation on `node` as free again.
    pub fn release(&mut self, node: &str, allocation: &Allocation) {
        if let Some(&i) = self.index.get(node) {
            self.members[i].state.release(allocation);
        }
    }

    /// Why `task` cannot go on node `i`, or how tightly it fits.
    fn fit(
        &self,
        i: usize,
        task: &Task,
        selector: &LabelSelector,
        req: &Request,
        closed: &[bool],
    ) -> Result<Score, Shortfall> {
        let m = &self.members[i];
        if let Some(want) = &task.spec.placement.node
            && want != m.state.name()
        {
            return Err(Shortfall::OtherNode);
        }
        if !selector.matches(&m.labels) {
            return Err(Shortfall::SelectorMismatch);
        }
        if !m.reported {
            return Err(Shortfall::NotReady);
        }
        // Never-fit is checked before readiness so an impossible request fails at once even
        // when its node is down.
        let fit = m.state.check(req);
        if matches!(&fit, Err(s) if s.is_never()) {
            return fit;
        }
        if !m.ready {
            return Err(Shortfall::NotReady);
        }
        if m.cordoned {
            return Err(Shortfall::Cordoned);
        }
        if closed.get(i).copied().unwrap_or(false) && fit.is_ok() {
            return Err(Shortfall::Reserved);
        }
        fit
    }

    /// Decides where `task` goes and, when it is bound, marks its allocation used.
    /// Nodes with `closed[i]` set are reserved for a task ahead in the queue.
    pub fn place(&mut self, task: &Task, closed: &[bool]) -> Decision {
        let req = Request::of(task);
        let selector = LabelSelector::from_map(&task.spec.placement.node_selector);
        let range: Vec<usize> = match &task.spec.placement.node {
            Some(name) => match self.index.get(name) {
                Some(&i) => vec![i],
                None => {
                    return Decision::NoSuchNode {
                        message: format!(
                            "node {name:?} is not registered; the task waits for it (is the name right? kohakuriver node list)"
                        ),
                    };
                }
            },
            None => (0..self.members.len()).collect(),
        };
        let best = range
            .iter()
            .filter_map(|&i| {
                self.fit(i, task, &selector, &req, closed)
                    .ok()
                    .map(|s| (s, i))
            })
            .min();
        if let Some((_, i)) = best {
            let state = &mut self.members[i].state;
            return match state.allocate(&req) {
                Ok(allocation) => Decision::Bind {
                    node: state.name().to_string(),
                    allocation,
                },
                Err(unfit) => Decision::Wait {
                    message: unfit.to_string(),
                    closest: None,
                },
            };
        }
        // No fit: explain, per node, closest first.
        let mut reasons: Vec<(u64, usize, Shortfall)> = range
            .iter()
            .filter_map(|&i| {
                self.fit(i, task, &selector, &req, closed)
                    .err()
                    .map(|s| (s.distance(), i, s))
            })
            .collect();
        let considered: Vec<&(u64, usize, Shortfall)> = reasons
            .iter()
            .filter(|(_, _, s)| !matches!(s, Shortfall::OtherNode | Shortfall::SelectorMismatch))
            .collect();
        if considered.is_empty() {
            let message = if self.members.is_empty() {
                "no nodes registered yet".to_string()
            } else {
                format!(
                    "no node matches the node selector ({} nodes)",
                    self.members.len()
                )
            };
            return Decision::Wait {
                message,
                closest: None,
            };
        }
        let all_never = considered.iter().all(|(_, _, s)| s.is_never());
        let closest = considered
            .iter()
            .filter(|(_, _, s)| s.is_capacity())
            .min_by_key(|(d, i, _)| (*d, *i))
            .map(|(_, i, _)| *i);
        let total = considered.len();
        reasons
            .retain(|(_, _, s)| !matches!(s, Shortfall::OtherNode | Shortfall::SelectorMismatch));
        reasons.sort_by_key(|(d, i, _)| (*d, *i));
        let mut parts: Vec<String> = reasons
            .iter()
            .take(MESSAGE_NODES)
            .map(|(_, i, s)| format!("{}: {s}", self.members[*i].state.name()))
            .collect();
        if total > MESSAGE_NODES {
            parts.push(format!("and {} more nodes", total - MESSAGE_NODES));
        }
        let list = parts.join("; ");
        if all_never {
            Decision::Fail {
                message: format!("can never fit: {list}"),
            }
        } else {
            Decision::Wait {
                message: format!("no node fits now: {list}"),
                closest,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kohakuriver_api::{Node, Task};

    use super::*;

    /// Places `task` on a cluster of `nodes` holding `bound`, rendered as `node cpus gpus`,
    /// `wait: …` or `fail: …`.
    fn place(nodes: &[Node], bound: &[Task], task: &Task) -> String {
        let mut cluster = Cluster::new(nodes, bound);
        match cluster.place(task, &[]) {
            Decision::Bind { node, allocation } => {
                format!("{node} {} {:?}", allocation.cpus, allocation.gpus)
            }
            Decision::Wait { message, .. } => format!("wait: {message}"),
            Decision::Fail { message } => format!("fail: {message}"),
            Decision::NoSuchNode { message } => format!("absent: {message}"),
        }
    }

    #[test]
    fn filter_and_score_cases() {
        let a = || Node::test("a").numa(2).cores(8).gpus(4);
        let b = || Node::test("b").numa(2).cores(8);
        let t = Task::test;
        let full_a = t("x").cpu(8).bound("a", "0-7", &[]);
        let cases: Vec<(Vec<Node>, Vec<Task>, Task, &str)> = vec![
            // Best fit: CPU-only tasks prefer the node without free GPUs.
            (vec![a(), b()], vec![], t("t").cpu(2), "b 0-1 []"),
            (vec![a(), b()], vec![], t("t").gpus(1), "a 0 [0]"),
            // Cordoned, not ready, selector, exact node.
            (vec![a(), b().cordoned()], vec![], t("t").cpu(2), "a 0-1 []"),
            (
                vec![a(), b().not_ready()],
                vec![],
                t("t").cpu(2),
                "a 0-1 []",
            ),
            (
                vec![a(), b().label("zone", "x")],
                vec![],
                t("t").selector("zone", "x"),
                "b 0 []",
            ),
            (vec![a(), b()], vec![], t("t").on("a"), "a 0 []"),
            (
                vec![a(), b()],
                vec![],
                t("t").on("c"),
                "absent: node \"c\" is not registered; the task waits for it (is the name right? kohakuriver node list)",
            ),
            (
                vec![a()],
                vec![],
                t("t").selector("zone", "y"),
                "wait: no node matches the node selector (1 nodes)",
            ),
            (vec![], vec![], t("t"), "wait: no nodes registered yet"),
            (
                vec![a().cordoned()],
                vec![],
                t("t"),
                "wait: no node fits now: a: cordoned",
            ),
            (
                vec![a().not_ready()],
                vec![],
                t("t"),
                "wait: no node fits now: a: not ready",
            ),
            // Queueing: the message names each node's shortfall, closest first.
            (
                vec![a(), b()],
                vec![full_a.clone()],
                t("t").gpus(1),
                "wait: no node fits now: a: needs 1 core, 0 free; b: needs 1 GPU, has 0",
            ),
            (vec![a(), b()], vec![full_a], t("t").cpu(2), "b 0-1 []"),
            // Impossible everywhere: fail at once, even on a node that is down.
            (
                vec![a(), b()],
                vec![],
                t("t").gpus(5),
                "fail: can never fit: a: needs 5 GPUs, has 4; b: needs 5 GPUs, has 0",
            ),
            (
                vec![a().not_ready()],
                vec![],
                t("t").on("a").gpu_ids(&[7]),
                "fail: can never fit: a: GPU 7 does not exist (4 GPUs)",
            ),
        ];
        for (nodes, bound, task, want) in cases {
            assert_eq!(place(&nodes, &bound, &task), want, "{task:?}");
        }
    }

    #[test]
    fn closed_nodes_take_no_new_task() {
        let nodes = [Node::test("a"), Node::test("b")];
        let mut cluster = Cluster::new(&nodes, &[]);
        let d = cluster.place(&Task::test("t").cpu(1), &[true, false]);
        assert!(matches!(d, Decision::Bind { node, .. } if node == "b"));
        let d = cluster.place(&Task::test("t").cpu(1), &[true, true]);
        assert!(matches!(d, Decision::Wait { message, .. } if message.contains("a: reserved")));
    }
}
