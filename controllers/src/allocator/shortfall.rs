//! Why a task does not fit a node ([`Shortfall`], [`Unfit`]): the allocator's answer, with
//! the numbers to explain it, and the wording users read in a waiting task's message.

/// Why a task does not fit a node, with the numbers to explain it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// The node is not Ready.
    NotReady,
    /// The node is cordoned.
    Cordoned,
    /// The node's labels do not match the task's node selector.
    SelectorMismatch,
    /// The task names another node.
    OtherNode,
    /// The node is held for a task ahead in the queue (see `queue`).
    Reserved,
    /// The named NUMA node does not exist.
    NoSuchNuma {
        /// The NUMA node asked.
        numa: u32,
        /// How many NUMA nodes there are.
        has: usize,
    },
    /// A named GPU does not exist.
    NoSuchGpu {
        /// The GPU index asked.
        id: u32,
        /// How many GPUs there are.
        has: usize,
    },
    /// More GPUs than the node (or the NUMA node) has at all.
    GpusNever {
        /// GPUs asked.
        need: u32,
        /// GPUs there are.
        has: u32,
        /// The NUMA node they must be on.
        numa: Option<u32>,
    },
    /// More cores than the node (or the NUMA node) has at all.
    CoresNever {
        /// Cores asked.
        need: u32,
        /// Cores there are.
        has: u32,
        /// The NUMA node they must be on.
        numa: Option<u32>,
    },
    /// More memory than the node has at all.
    MemoryNever {
        /// Bytes asked.
        need: u64,
        /// Bytes allocatable.
        has: u64,
    },
    /// Not enough free GPUs now.
    GpusBusy {
        /// GPUs asked.
        need: u32,
        /// GPUs free.
        free: u32,
        /// The NUMA node they must be on.
        numa: Option<u32>,
    },
    /// Not enough free cores now.
    CoresBusy {
        /// Cores asked.
        need: u32,
        /// Cores free.
        free: u32,
        /// The NUMA node they must be on.
        numa: Option<u32>,
    },
    /// Not enough free memory now.
    MemoryBusy {
        /// Bytes asked.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// A named GPU is held by another task.
    GpuInUse {
        /// The GPU index.
        id: u32,
    },
    /// A named GPU is unhealthy.
    GpuUnhealthy {
        /// The GPU index.
        id: u32,
    },
}

impl Shortfall {
    /// True when the task can never fit this node as it is built (whatever finishes).
    pub fn is_never(&self) -> bool {
        matches!(
            self,
            Shortfall::NoSuchNuma { .. }
                | Shortfall::NoSuchGpu { .. }
                | Shortfall::GpusNever { .. }
                | Shortfall::CoresNever { .. }
                | Shortfall::MemoryNever { .. }
        )
    }

    /// True when the task would fit once running tasks free capacity.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Shortfall::GpusBusy { .. }
                | Shortfall::CoresBusy { .. }
                | Shortfall::MemoryBusy { .. }
                | Shortfall::GpuInUse { .. }
        )
    }

    /// How far from fitting, in rough units (a GPU weighs 64 cores, a GB one core); used to
    /// pick the node to reserve for a blocked task.
    pub fn distance(&self) -> u64 {
        match self {
            Shortfall::GpusBusy { need, free, .. } => u64::from(need - free) * 64,
            Shortfall::CoresBusy { need, free, .. } => u64::from(need - free),
            Shortfall::MemoryBusy { need, free } => (need - free).div_ceil(1_000_000_000),
            Shortfall::GpuInUse { .. } => 64,
            _ => u64::MAX,
        }
    }
}

fn on_numa(numa: &Option<u32>) -> String {
    numa.map(|n| format!(" on NUMA {n}")).unwrap_or_default()
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gb = |b: &u64| format!("{:.1}G", *b as f64 / 1e9);
        match self {
            Shortfall::NotReady => f.write_str("not ready"),
            Shortfall::Cordoned => f.write_str("cordoned"),
            Shortfall::SelectorMismatch => f.write_str("labels do not match the node selector"),
            Shortfall::OtherNode => f.write_str("not the requested node"),
            Shortfall::Reserved => f.write_str("reserved for a task ahead in the queue"),
            Shortfall::NoSuchNuma { numa, has } => {
                write!(f, "NUMA node {numa} does not exist ({has} NUMA nodes)")
            }
            Shortfall::NoSuchGpu { id, has } => {
                write!(f, "GPU {id} does not exist ({has} GPUs)")
            }
            Shortfall::GpusNever { need, has, numa } => write!(
                f,
                "needs {}{}, has {has}",
                plural(*need, "GPU"),
                on_numa(numa)
            ),
            Shortfall::CoresNever { need, has, numa } => write!(
                f,
                "needs {}{}, has {has}",
                plural(*need, "core"),
                on_numa(numa)
            ),
            Shortfall::MemoryNever { need, has } => {
                write!(f, "needs {} memory, has {}", gb(need), gb(has))
            }
            Shortfall::GpusBusy { need, free, numa } => write!(
                f,
                "needs {}{}, {free} free",
                plural(*need, "GPU"),
                on_numa(numa)
            ),
            Shortfall::CoresBusy { need, free, numa } => write!(
                f,
                "needs {}{}, {free} free",
                plural(*need, "core"),
                on_numa(numa)
            ),
            Shortfall::MemoryBusy { need, free } => {
                write!(f, "needs {} memory, {} free", gb(need), gb(free))
            }
            Shortfall::GpuInUse { id } => write!(f, "GPU {id} is in use"),
            Shortfall::GpuUnhealthy { id } => write!(f, "GPU {id} is unhealthy"),
        }
    }
}

/// A task does not fit a node: which node, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{node}: {shortfall}")]
pub struct Unfit {
    /// The node's name.
    pub node: String,
    /// Why.
    pub shortfall: Shortfall,
}

impl Unfit {
    /// True when the task can never fit this node.
    pub fn is_never(&self) -> bool {
        self.shortfall.is_never()
    }
}
