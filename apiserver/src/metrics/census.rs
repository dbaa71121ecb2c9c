//! [`Census`]: what the metrics know about tasks and nodes, kept from the committed writes
//! alone, so a scrape never reads the store's objects.
//!
//! The writer hands every committed change to [`Census::record`] in revision order (see
//! `recorder`), with the server's clock at the commit. From that it keeps the tasks per
//! phase, since when each Pending task waits, when each Assigned task was bound, and when
//! each node's heartbeat last changed. `record` answers what the change means for the
//! latency histograms: a binding (and how long the task waited in the queue) or a start
//! (and how long after its binding): the first write that leaves Assigned with the
//! container started. Pure: no clock, no IO, no locks; the caller passes the time.
//!
//! A task's wait is measured from the commit that made it Pending: its creation, or the
//! re-queue of a retry or of a lost node. Tasks found Pending when the server starts wait
//! since their creation or their last attempt's end (`pending_since`); tasks found
//! Assigned then have no known binding time, and their start is not observed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kohakuriver_api::{TaskPhase, Timestamp};

/// A task's state as far as the census cares: its phase (as written on the wire), node, and
/// whether its status says the container started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskState<'a> {
    /// `status.phase`, e.g. `Pending`.
    pub phase: &'a str,
    /// `status.node`, when bound.
    pub node: Option<&'a str>,
    /// The container of the current attempt started (`status.startedAt` is set; always so
    /// for Running and Paused). Read only where it matters: a state that leaves Assigned.
    pub started: bool,
}

/// One committed change.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// A task was created (`before` None), changed, or removed (`after` None).
    Task {
        /// The task's name.
        name: &'a str,
        /// Its state before the write.
        before: Option<TaskState<'a>>,
        /// Its state after the write.
        after: Option<TaskState<'a>>,
    },
    /// A node was written (`heartbeat`: its `status.lastHeartbeat`) or removed.
    Node {
        /// The node's name.
        name: &'a str,
        /// Its `status.lastHeartbeat` after the write.
        heartbeat: Option<Timestamp>,
        /// True when the node was deleted: its series go.
        removed: bool,
    },
}

/// What a change means for the latency histograms and the binding counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The write bound the task to a node.
    pub bound: bool,
    /// With `bound`: how long the task had waited Pending, when known.
    pub queued: Option<Duration>,
    /// The write is the first report since the task's binding that its container started
    /// (Running, or an exit reported straight from Assigned by an agent that found the
    /// container already done): how long after the binding.
    pub started: Option<Duration>,
}

/// Tasks per phase, the queue, bound tasks not yet running, and node heartbeats.
#[derive(Debug, Default)]
pub struct Census {
    /// Tasks per phase, by the phase's name.
    phases: BTreeMap<String, u64>,
    /// Every Pending task and since when it waits.
    pending: HashMap<String, Timestamp>,
    /// Every Assigned task whose binding this server committed, and when.
    bound: HashMap<String, Timestamp>,
    /// Every node: its last heartbeat value and when this server saw it change.
    heartbeats: HashMap<String, (Option<Timestamp>, Timestamp)>,
}

/// The time from `since` to `at`, zero when the clock went back.
fn elapsed(since: Timestamp, at: Timestamp) -> Duration {
    (at - since).to_std().unwrap_or(Duration::ZERO)
}

const PENDING: &str = "Pending";
const ASSIGNED: &str = "Assigned";

impl Census {
    /// Records a committed change made at `at`; answers what it means for the histograms.
    pub fn record(&mut self, change: Change<'_>, at: Timestamp) -> Observed {
        match change {
            Change::Task {
                name,
                before,
                after,
            } => self.record_task(name, before, after, at),
            Change::Node {
                name,
                heartbeat,
                removed,
            } => {
                if removed {
                    self.heartbeats.remove(name);
                } else {
                    match self.heartbeats.get_mut(name) {
                        Some(seen) if seen.0 == heartbeat => {}
                        Some(seen) => *seen = (heartbeat, at),
                        None => {
                            self.heartbeats.insert(name.to_string(), (heartbeat, at));
                        }
                    }
                }
                Observed::default()
            }
        }
    }

    fn record_task(
        &mut self,
        name: &str,
        before: Option<TaskState<'_>>,
        after: Option<TaskState<'_>>,
        at: Timestamp,
    ) -> Observed {
        if let Some(b) = before {
            self.count(b.phase, -1);
        }
        if let Some(a) = after {
            self.count(a.phase, 1);
        }
        let mut observed = Observed::default();
        let node_before = before.and_then(|b| b.node);
        let node_after = after.and_then(|a| a.node);
        // A binding, by the server's own rule (`precondition::stamp_binding`): a node that
        // is new or another one.
        if node_after.is_some() && node_after != node_before {
            observed.bound = true;
            observed.queued = self.pending.remove(name).map(|since| elapsed(since, at));
            self.bound.insert(name.to_string(), at);
        }
        let phase_before = before.map(|b| b.phase);
        let phase_after = after.map(|a| a.phase);
        if phase_before == Some(ASSIGNED)
            && let Some(a) = after
            && a.phase != ASSIGNED
            && a.started
            && let Some(bound_at) = self.bound.remove(name)
        {
            observed.started = Some(elapsed(bound_at, at));
        }
        if phase_after != Some(ASSIGNED) {
            self.bound.remove(name);
        }
        match phase_after {
            Some(PENDING) if phase_before != Some(PENDING) => {
                self.pending.insert(name.to_string(), at);
            }
            Some(PENDING) => {}
            _ => {
                self.pending.remove(name);
            }
        }
        observed
    }

    fn count(&mut self, phase: &str, by: i64) {
        match self.phases.get_mut(phase) {
            Some(n) => *n = n.saturating_add_signed(by),
            None if by > 0 => {
                self.phases.insert(phase.to_string(), by as u64);
            }
            None => {}
        }
    }

    /// Adds `n` tasks in `phase` found in the store at start (Pending ones through
    /// [`Census::seed_pending`] instead).
    pub fn seed_phase(&mut self, phase: &str, n: u64) {
        if n > 0 {
            *self.phases.entry(phase.to_string()).or_default() += n;
        }
    }

    /// Adds a Pending task found in the store at start, waiting since `since` (see
    /// [`pending_since`]).
    pub fn seed_pending(&mut self, name: &str, since: Timestamp) {
        self.count(PENDING, 1);
        self.pending.insert(name.to_string(), since);
    }

    /// Adds a node found in the store at start, its heartbeat last seen at `seen`.
    pub fn seed_node(&mut self, name: &str, heartbeat: Option<Timestamp>, seen: Timestamp) {
        self.heartbeats.insert(name.to_string(), (heartbeat, seen));
    }

    /// Tasks per phase: every phase of [`TaskPhase::ALL`] (zero when none), then any other
    /// phase name met.
    pub fn phases(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = TaskPhase::ALL
            .iter()
            .map(|p| {
                let name = p.to_string();
                let n = self.phases.get(&name).copied().unwrap_or(0);
                (name, n)
            })
            .collect();
        for (name, n) in &self.phases {
            if !all.iter().any(|(known, _)| known == name) {
                all.push((name.clone(), *n));
            }
        }
        all
    }

    /// How many tasks wait Pending, and how long the one waiting longest has waited at `now`.
    pub fn queue(&self, now: Timestamp) -> (u64, Duration) {
        let oldest = self
            .pending
            .values()
            .min()
            .map_or(Duration::ZERO, |since| elapsed(*since, now));
        (self.pending.len() as u64, oldest)
    }

    /// Every node and the time since its heartbeat last changed, at `now`, by name.
    pub fn heartbeat_ages(&self, now: Timestamp) -> Vec<(String, Duration)> {
        let mut ages: Vec<(String, Duration)> = self
            .heartbeats
            .iter()
            .map(|(name, (_, seen))| (name.clone(), elapsed(*seen, now)))
            .collect();
        ages.sort();
        ages
    }
}

/// Since when a task found Pending at start has waited: the end of its last attempt when
/// it had one (a retry or a re-queue), else its creation.
pub fn pending_since(
    created: Option<Timestamp>,
    last_finished: Option<Timestamp>,
) -> Option<Timestamp> {
    match (created, last_finished) {
        (Some(c), Some(f)) => Some(c.max(f)),
        (c, f) => c.or(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    /// A state; Running and Paused have started, as their writers say.
    fn st(phase: &'static str, node: Option<&'static str>) -> Option<TaskState<'static>> {
        let started = matches!(phase, "Running" | "Paused");
        Some(TaskState {
            phase,
            node,
            started,
        })
    }

    /// A state whose container started (an exit reported with `startedAt`).
    fn ran(phase: &'static str, node: Option<&'static str>) -> Option<TaskState<'static>> {
        Some(TaskState {
            phase,
            node,
            started: true,
        })
    }

    /// One change of a case: the task's name, its state before and after, and the second
    /// of the commit.
    type Step = (
        &'static str,
        Option<TaskState<'static>>,
        Option<TaskState<'static>>,
        i64,
    );

    /// Plays `changes` and renders every observation and the final counts, one line each.
    fn play(changes: &[Step]) -> String {
        let mut census = Census::default();
        let mut out = Vec::new();
        for (name, before, after, at) in changes {
            let o = census.record(
                Change::Task {
                    name,
                    before: *before,
                    after: *after,
                },
                t(*at),
            );
            if o != Observed::default() {
                out.push(format!(
                    "{name}@{at}: bound={} queued={:?} started={:?}",
                    o.bound,
                    o.queued.map(|d| d.as_secs()),
                    o.started.map(|d| d.as_secs())
                ));
            }
        }
        let counts: Vec<String> = census
            .phases()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| format!("{p}={n}"))
            .collect();
        let (queued, oldest) = census.queue(t(100));
        out.push(format!(
            "counts {} | queue {queued} oldest {}s | bound {}",
            counts.join(" "),
            oldest.as_secs(),
            census.bound.len()
        ));
        out.join("\n")
    }

    #[test]
    fn a_task_through_its_life() {
        let got = play(&[
            ("a", None, st("Pending", None), 0),
            ("a", st("Pending", None), st("Pending", None), 1), // a reason written
            ("a", st("Pending", None), st("Assigned", Some("n1")), 4),
            (
                "a",
                st("Assigned", Some("n1")),
                st("Running", Some("n1")),
                7,
            ),
            (
                "a",
                st("Running", Some("n1")),
                st("Succeeded", Some("n1")),
                9,
            ),
        ]);
        assert_eq!(
            got,
            "a@4: bound=true queued=Some(4) started=None\n\
             a@7: bound=false queued=None started=Some(3)\n\
             counts Succeeded=1 | queue 0 oldest 0s | bound 0"
        );
    }

    #[test]
    fn cases() {
        let cases: Vec<(&str, Vec<Step>, &str)> = vec![
            (
                "the queue's oldest is the earliest still Pending",
                vec![
                    ("a", None, st("Pending", None), 10),
                    ("b", None, st("Pending", None), 20),
                    ("c", None, st("Pending", None), 30),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 40),
                ],
                "a@40: bound=true queued=Some(30) started=None\n\
                 counts Pending=2 Assigned=1 | queue 2 oldest 80s | bound 1",
            ),
            (
                "a retry waits from its re-queue, not its creation",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 1),
                    ("a", st("Assigned", Some("n")), st("Running", Some("n")), 2),
                    ("a", st("Running", Some("n")), st("Failed", Some("n")), 3),
                    ("a", st("Failed", Some("n")), st("Pending", None), 50),
                    ("a", st("Pending", None), st("Assigned", Some("m")), 60),
                ],
                "a@1: bound=true queued=Some(1) started=None\n\
                 a@2: bound=false queued=None started=Some(1)\n\
                 a@60: bound=true queued=Some(10) started=None\n\
                 counts Assigned=1 | queue 0 oldest 0s | bound 1",
            ),
            (
                "a resume (Paused to Running) is no start",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 1),
                    ("a", st("Assigned", Some("n")), st("Running", Some("n")), 2),
                    ("a", st("Running", Some("n")), st("Paused", Some("n")), 3),
                    ("a", st("Paused", Some("n")), st("Running", Some("n")), 4),
                ],
                "a@1: bound=true queued=Some(1) started=None\n\
                 a@2: bound=false queued=None started=Some(1)\n\
                 counts Running=1 | queue 0 oldest 0s | bound 0",
            ),
            (
                "an exit reported straight from Assigned is the start, when the container ran",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 1),
                    (
                        "a",
                        st("Assigned", Some("n")),
                        ran("Succeeded", Some("n")),
                        4,
                    ),
                ],
                "a@1: bound=true queued=Some(1) started=None\n\
                 a@4: bound=false queued=None started=Some(3)\n\
                 counts Succeeded=1 | queue 0 oldest 0s | bound 0",
            ),
            (
                "a container that never started (StartFailed) is no start",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 1),
                    ("a", st("Assigned", Some("n")), st("Failed", Some("n")), 4),
                ],
                "a@1: bound=true queued=Some(1) started=None\n\
                 counts Failed=1 | queue 0 oldest 0s | bound 0",
            ),
            (
                "a bound task killed before it ran, then deleted, leaves nothing behind",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 1),
                    ("a", st("Assigned", Some("n")), st("Killed", Some("n")), 2),
                    ("a", st("Killed", Some("n")), None, 3),
                ],
                "a@1: bound=true queued=Some(1) started=None\n\
                 counts  | queue 0 oldest 0s | bound 0",
            ),
            (
                "a Pending task deleted leaves the queue",
                vec![
                    ("a", None, st("Pending", None), 0),
                    ("a", st("Pending", None), None, 5),
                ],
                "counts  | queue 0 oldest 0s | bound 0",
            ),
            (
                "an Assigned task found at start (no known binding) starts unobserved",
                vec![("a", st("Assigned", Some("n")), st("Running", Some("n")), 5)],
                "counts Running=1 | queue 0 oldest 0s | bound 0",
            ),
            (
                "a rebind to another node counts as a binding",
                vec![("a", st("Unknown", Some("n")), st("Assigned", Some("m")), 5)],
                "a@5: bound=true queued=None started=None\n\
                 counts Assigned=1 | queue 0 oldest 0s | bound 1",
            ),
            (
                "a clock that went back gives zero, not a negative wait",
                vec![
                    ("a", None, st("Pending", None), 10),
                    ("a", st("Pending", None), st("Assigned", Some("n")), 5),
                ],
                "a@5: bound=true queued=Some(0) started=None\n\
                 counts Assigned=1 | queue 0 oldest 0s | bound 1",
            ),
        ];
        for (what, changes, want) in cases {
            // A before-state never counted (a task found at start) takes nothing away.
            assert_eq!(play(&changes), want, "{what}");
        }
    }

    #[test]
    fn heartbeats_age_from_their_last_change_and_go_with_their_node() {
        let mut census = Census::default();
        let node = |name, heartbeat: Option<i64>, removed| Change::Node {
            name,
            heartbeat: heartbeat.map(t),
            removed,
        };
        census.record(node("a", Some(0), false), t(1));
        census.record(node("b", None, false), t(2));
        assert_eq!(
            census.heartbeat_ages(t(10)),
            vec![
                ("a".into(), Duration::from_secs(9)),
                ("b".into(), Duration::from_secs(8))
            ]
        );
        // The same heartbeat written again (a cordon, a readiness change) is no heartbeat.
        census.record(node("a", Some(0), false), t(5));
        assert_eq!(census.heartbeat_ages(t(10))[0].1, Duration::from_secs(9));
        census.record(node("a", Some(6), false), t(6));
        assert_eq!(census.heartbeat_ages(t(10))[0].1, Duration::from_secs(4));
        census.record(node("b", None, true), t(7));
        assert_eq!(
            census.heartbeat_ages(t(10)),
            vec![("a".into(), Duration::from_secs(4))]
        );
    }

    #[test]
    fn seeded_tasks_count_and_queue() {
        let mut census = Census::default();
        census.seed_pending("a", pending_since(Some(t(0)), None).unwrap());
        census.seed_pending("b", pending_since(Some(t(0)), Some(t(30))).unwrap());
        census.seed_phase("Succeeded", 1);
        census.seed_phase("Failed", 0);
        let (queued, oldest) = census.queue(t(40));
        assert_eq!((queued, oldest.as_secs()), (2, 40));
        let o = census.record(
            Change::Task {
                name: "b",
                before: st("Pending", None),
                after: st("Assigned", Some("n")),
            },
            t(45),
        );
        assert_eq!(o.queued, Some(Duration::from_secs(15)));
        let phases = census.phases();
        assert_eq!(phases.len(), TaskPhase::ALL.len());
        assert!(phases.contains(&("Pending".into(), 1)));
        assert!(phases.contains(&("Assigned".into(), 1)));
        assert!(phases.contains(&("Succeeded".into(), 1)));
        assert!(phases.contains(&("Lost".into(), 0)));
        assert!(phases.contains(&("Failed".into(), 0)));
    }

    #[test]
    fn pending_since_takes_the_later_of_creation_and_last_end() {
        assert_eq!(pending_since(Some(t(0)), Some(t(5))), Some(t(5)));
        assert_eq!(pending_since(Some(t(5)), Some(t(0))), Some(t(5)));
        assert_eq!(pending_since(Some(t(3)), None), Some(t(3)));
        assert_eq!(pending_since(None, Some(t(3))), Some(t(3)));
        assert_eq!(pending_since(None, None), None);
    }
}
