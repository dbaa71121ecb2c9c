//! The soak's load: one function per kind of load, each run in its own thread until
//! `Shared::stop`, and the sampler that lists every task once a second (one snapshot, one
//! revision) to look for double-booked cores and GPUs and reads the daemons' VmRSS and
//! descriptor counts from `/proc`. Refusals are counted, not fatal: a pause of a task that
//! is not running yet is refused by design.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kohakuriver_api::Task;
use kohakuriver_tests::{Access, Kubectl, Run, Stream};

use crate::soak_checks::{Holding, double_bookings};

/// Submits pause while this many tasks are not yet finished, so the queue stays bounded.
const MAX_BACKLOG: usize = 16;

/// State the load threads share with the main thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    /// Ids a `task submit` printed (exit 0): acknowledged tasks.
    pub(crate) acknowledged: Mutex<Vec<String>>,
    /// Acknowledged long tasks, the targets of kills, pauses and log readers.
    pub(crate) long: Mutex<Vec<String>>,
    /// Tasks not yet finished in the last sample.
    pub(crate) backlog: AtomicUsize,
    /// Pid of the extra agent, 0 while it is down.
    pub(crate) agent_pid: AtomicU32,
    pub(crate) counts: Mutex<BTreeMap<String, u64>>,
    /// The first refusal of each kind of command (the CLI's last stderr line), to print.
    pub(crate) first_refusals: Mutex<BTreeMap<String, String>>,
    pub(crate) double_booked: Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn count(&self, what: &str) {
        *lock(&self.counts).entry(what.to_string()).or_default() += 1;
    }
    /// Counts `what` when the run exited 0, else `what refused` and keeps the first reason.
    pub(crate) fn outcome(&self, what: &str, run: &Run) -> bool {
        if run.code == 0 {
            self.count(what);
            return true;
        }
        let refused = format!("{what} refused");
        self.count(&refused);
        lock(&self.first_refusals)
            .entry(refused)
            .or_insert_with(|| run.last_stderr_line().to_string());
        false
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Sleeps `d` unless the soak stops first.
    pub(crate) fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small xorshift generator: the load needs variety, not quality.
pub(crate) struct Dice(u64);
impl Dice {
    fn new(salt: u64) -> Dice {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Dice(nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    fn pick<'a>(&mut self, items: &'a [String]) -> Option<&'a String> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// One figure of a process from `/proc`: (VmRSS in KiB, open descriptors).
pub(crate) fn proc_figures(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Every task, in one list (one revision).
pub(crate) fn list_tasks(access: &Access) -> Option<Vec<Task>> {
    let resp = access.get("/apis/kohakuriver/v1/tasks").ok()?;
    if resp.status != 200 {
        return None;
    }
    let list: serde_json::Value = resp.json();
    let items = list["items"].as_array()?;
    items
        .iter()
        .map(|t| serde_json::from_value(t.clone()).ok())
        .collect()
}

pub(crate) fn submitter(access: Access, nodes: Vec<String>, shared: Arc<Shared>) {
    let mut dice = Dice::new(1);
    while !shared.stopped() {
        if shared.backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
            shared.nap(Duration::from_millis(500));
            continue;
        }
        let long = dice.below(3) == 0;
        let mut args: Vec<String> = vec!["task".into(), "submit".into()];
        let cores = if dice.below(4) == 0 { "2" } else { "1" };
        args.extend(["-c".into(), cores.into()]);
        if dice.below(4) == 0 {
            args.extend(["--gpus".into(), "1".into()]);
        }
        if let Some(node) = dice.pick(&nodes).filter(|_| dice.below(2) == 0) {
            args.extend(["-t".into(), node.clone()]);
        }
        args.push("--".into());
        let script = if long {
            "i=0; while [ $i -lt 25 ]; do echo tick $i; i=$((i+1)); sleep 1; done"
        } else {
            "echo soak; sleep 1"
        };
        args.extend(["sh".into(), "-c".into(), script.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = access.kr(&args, Duration::from_secs(60));
        let id = run.stdout.trim().to_string();
        if run.code == 0 && !id.is_empty() && !id.contains(char::is_whitespace) {
            shared.count(if long { "submit long" } else { "submit short" });
            lock(&shared.acknowledged).push(id.clone());
            if long {
                lock(&shared.long).push(id);
            }
        } else {
            shared.outcome("submit", &run);
        }
        shared.nap(Duration::from_millis(300));
    }
}

pub(crate) fn controller(access: Access, shared: Arc<Shared>) {
    let mut dice = Dice::new(2);
    let mut paused: Vec<String> = Vec::new();
    while !shared.stopped() {
        shared.nap(Duration::from_millis(1500));
        if !paused.is_empty() && dice.below(2) == 0 {
            let id = paused.remove(0);
            let run = access.kr(
                &["task", "resume", &id, "--timeout", "20s"],
                Duration::from_secs(60),
            );
            shared.outcome("resume", &run);
            continue;
        }
        let recent: Vec<String> = {
            let long = lock(&shared.long);
            long[long.len().saturating_sub(8)..].to_vec()
        };
        let Some(id) = dice.pick(&recent).cloned() else {
            continue;
        };
        if dice.below(3) == 0 {
            let run = access.kr(
                &["task", "kill", &id, "--timeout", "20s"],
                Duration::from_secs(60),
            );
            shared.outcome("kill", &run);
        } else {
            let run = access.kr(
                &["task", "pause", &id, "--timeout", "20s"],
                Duration::from_secs(60),
            );
            if shared.outcome("pause", &run) {
                paused.push(id);
            }
        }
    }
    for id in paused {
        access.kr(
            &["task", "resume", &id, "--timeout", "20s"],
            Duration::from_secs(60),
        );
    }
}

pub(crate) fn log_readers(access: Access, shared: Arc<Shared>) {
    let mut dice = Dice::new(3);
    let mut readers: Vec<(Instant, Stream)> = Vec::new();
    while !shared.stopped() {
        shared.nap(Duration::from_secs(2));
        readers.retain_mut(|(started, stream)| match stream.wait_exit(Duration::ZERO) {
            Some(code) => {
                shared.count(if code == 0 {
                    "logs -f ended"
                } else {
                    "logs -f failed"
                });
                false
            }
            None if started.elapsed() > Duration::from_secs(120) => {
                shared.count("logs -f cut after 120 s");
                stream.kill();
                false
            }
            None => true,
        });
        if readers.len() < 3 {
            let recent: Vec<String> = {
                let long = lock(&shared.long);
                long[long.len().saturating_sub(6)..].to_vec()
            };
            if let Some(id) = dice.pick(&recent) {
                shared.count("logs -f started");
                readers.push((Instant::now(), access.stream(&["task", "logs", "-f", id])));
            }
        }
    }
    for (_, mut stream) in readers {
        stream.kill();
    }
}

pub(crate) fn listers(access: Access, kubectl: Option<Kubectl>, shared: Arc<Shared>) {
    let mut dice = Dice::new(4);
    let mut watches: Vec<(Instant, Stream)> = Vec::new();
    while !shared.stopped() {
        shared.nap(Duration::from_secs(1));
        watches.retain_mut(|(started, stream)| {
            let live = started.elapsed() < Duration::from_secs(30);
            if !live {
                stream.kill();
            }
            live
        });
        if watches.is_empty() {
            watches.push((Instant::now(), access.stream(&["get", "tasks", "-w"])));
            if let Some(k) = &kubectl {
                watches.push((Instant::now(), k.stream(&["get", "tasks", "-w"])));
            }
            shared.count("watch started");
        }
        let id = dice.pick(&lock(&shared.acknowledged)).cloned();
        let (what, run) = match (dice.below(5), &kubectl, id) {
            (0, _, _) => (
                "task list",
                access.kr(&["task", "list"], Duration::from_secs(60)),
            ),
            (1, _, _) => (
                "node list",
                access.kr(&["node", "list"], Duration::from_secs(60)),
            ),
            (2, _, Some(id)) => (
                "task status",
                access.kr(&["task", "status", &id], Duration::from_secs(60)),
            ),
            (3, Some(k), _) => ("kubectl get", k.run(&["get", "tasks", "-o", "wide"])),
            _ => (
                "get tasks",
                access.kr(
                    &["get", "tasks", "--chunk-size", "5"],
                    Duration::from_secs(60),
                ),
            ),
        };
        shared.outcome(what, &run);
    }
}

/// Samples of one process: warm-up baseline and the largest RSS seen.
#[derive(Default, Debug)]
pub(crate) struct Figures {
    pub(crate) warm: Option<(u64, usize)>,
    pub(crate) max_rss: u64,
}

pub(crate) fn sampler(
    access: Access,
    up_pid: u32,
    warm_up: Duration,
    shared: Arc<Shared>,
) -> (Figures, Figures, u64, usize) {
    let start = Instant::now();
    let (mut up, mut agent) = (Figures::default(), Figures::default());
    let (mut snapshots, mut most_holding) = (0u64, 0usize);
    while !shared.stopped() {
        if let Some(tasks) = list_tasks(&access) {
            snapshots += 1;
            let holdings: Vec<Holding> = tasks.iter().filter_map(Holding::of).collect();
            most_holding = most_holding.max(holdings.len());
            lock(&shared.double_booked).extend(double_bookings(&holdings));
            let open = tasks
                .iter()
                .filter(|t| !t.status.phase.is_terminal())
                .count();
            shared.backlog.store(open, Ordering::Relaxed);
        }
        let warm = start.elapsed() >= warm_up;
        if let Some((rss, fds)) = proc_figures(up_pid) {
            up.max_rss = up.max_rss.max(rss);
            if warm && up.warm.is_none() {
                up.warm = Some((rss, fds));
            }
        }
        let pid = shared.agent_pid.load(Ordering::Relaxed);
        if let Some((rss, fds)) = (pid != 0).then(|| proc_figures(pid)).flatten() {
            agent.max_rss = agent.max_rss.max(rss);
            if warm && agent.warm.is_none() {
                agent.warm = Some((rss, fds));
            }
        }
        shared.nap(Duration::from_secs(1));
    }
    (up, agent, snapshots, most_holding)
}
