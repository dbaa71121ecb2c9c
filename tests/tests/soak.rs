//! The soak: `kohakuriver up` plus one more agent under mixed load for a given time, then
//! the verdicts of `soak_checks`. Run by `scripts/soak.sh DURATION` (which sets
//! `KR_SOAK_DURATION` and `KR_SOAK_STATE` and cleans up after a Ctrl-C); `#[ignore]`d so the
//! test suite never runs it by accident.
//!
//! Why a test target and not a bash script: the harness already starts `up` and agents on
//! free ports with their own data dirs and node tokens, restarts agents, runs the CLI and
//! kubectl with timeouts and removes the containers of its nodes; the double-booking check
//! reads tasks with the API's own types and `holds_allocation`.
//!
//! Load, each in its own thread until the time is up: task submits (short and long, one or
//! two cores, some with a GPU of the nodes' fake GPUs, on either node or left to the
//! scheduler); kills, pauses and resumes of long tasks; `task logs -f` readers; lists and
//! watches (`task list`, `get tasks`, `node list`, `task status`, `get tasks -w`, and kubectl
//! when installed). The main thread restarts the extra agent every 20 s, by SIGTERM and by
//! SIGKILL in turn. A sampler lists every task once a second (one snapshot, one revision)
//! and checks it for double-booked cores and GPUs, and reads VmRSS and the descriptor count
//! of the `up` process and of the agent.

mod soak_checks;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kohakuriver_api::Task;
use kohakuriver_tests::{
    Access, AgentOptions, Cluster, Kubectl, ServerOptions, Stream, docker_ready,
};
use soak_checks::{Holding, check_fds, check_rss, double_bookings, growth_percent, lost_tasks};

/// RSS may grow at most this much after the warm-up.
const RSS_LIMIT_PERCENT: f64 = 20.0;
/// The shortest warm-up before the RSS and descriptor baselines.
const WARM_UP_AT_LEAST: Duration = Duration::from_secs(60);
/// Time between restarts of the extra agent.
const AGENT_RESTART_EVERY: Duration = Duration::from_secs(20);
/// Submits pause while this many tasks are not yet finished, so the queue stays bounded.
const MAX_BACKLOG: usize = 16;

/// State the load threads share with the main thread.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Ids a `task submit` printed (exit 0): acknowledged tasks.
    acknowledged: Mutex<Vec<String>>,
    /// Acknowledged long tasks, the targets of kills, pauses and log readers.
    long: Mutex<Vec<String>>,
    /// Tasks not yet finished in the last sample.
    backlog: AtomicUsize,
    /// Pid of the extra agent, 0 while it is down.
    agent_pid: AtomicU32,
    counts: Mutex<BTreeMap<String, u64>>,
    /// The first refusal of each kind of command (the CLI's last stderr line), to print.
    first_refusals: Mutex<BTreeMap<String, String>>,
    double_booked: Mutex<Vec<String>>,
}

impl Shared {
    fn count(&self, what: &str) {
        *lock(&self.counts).entry(what.to_string()).or_default() += 1;
    }
    /// Counts `what` when the run exited 0, else `what refused` and keeps the first reason.
    fn outcome(&self, what: &str, run: &kohakuriver_tests::Run) -> bool {
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
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Sleeps `d` unless the soak stops first.
    fn nap(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small xorshift generator: the load needs variety, not quality.
struct Dice(u64);
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
fn proc_figures(pid: u32) -> Option<(u64, usize)> {
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
fn list_tasks(access: &Access) -> Option<Vec<Task>> {
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

fn submitter(access: Access, nodes: Vec<String>, shared: Arc<Shared>) {
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

fn controller(access: Access, shared: Arc<Shared>) {
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

fn log_readers(access: Access, shared: Arc<Shared>) {
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

fn listers(access: Access, kubectl: Option<Kubectl>, shared: Arc<Shared>) {
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
struct Figures {
    warm: Option<(u64, usize)>,
    max_rss: u64,
}

fn sampler(
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

/// Whether kubectl is there to drive (`$KUBECTL`, or `kubectl` on `PATH`); the soak runs
/// without it.
fn kubectl_installed() -> bool {
    std::env::var_os("KUBECTL").is_some()
        || std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join("kubectl").is_file())
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawn a load thread")
}

/// Writes what a Ctrl-C cleanup needs (nodes, temp dir) to `KR_SOAK_STATE`, if set.
fn record_state(cluster: &Cluster) {
    let Some(path) = std::env::var_os("KR_SOAK_STATE") else {
        return;
    };
    let mut file = std::fs::File::create(&path).expect("KR_SOAK_STATE file");
    for node in cluster.node_names() {
        writeln!(file, "node {node}").expect("write KR_SOAK_STATE");
    }
    writeln!(file, "dir {}", cluster.dir().display()).expect("write KR_SOAK_STATE");
}

#[test]
#[ignore = "the soak runs for minutes; scripts/soak.sh DURATION runs it"]
fn soak() {
    let text = std::env::var("KR_SOAK_DURATION").unwrap_or_else(|_| "2m".into());
    let duration = soak_checks::parse_duration(&text).unwrap_or_else(|e| panic!("{e}"));
    // The warm-up lets every kind of load run at least once before the baseline (two agent
    // restarts, by SIGTERM and SIGKILL, and a whole 30 s watch cycle), so buffers and caches
    // each path allocates once are not counted as growth.
    let warm_up = (duration / 4).max(WARM_UP_AT_LEAST);
    if !docker_ready() {
        return;
    }
    let gpus = AgentOptions {
        fake_gpus: Some(2),
        ..AgentOptions::default()
    };
    let server = ServerOptions {
        node_grace: Some("10s".into()),
        ..ServerOptions::default()
    };
    let mut cluster = Cluster::up_with("soak", server, gpus.clone());
    let agent = cluster.add_agent_with("soak", gpus);
    record_state(&cluster);
    let up_node = cluster.up_node().to_string();
    let up_pid = cluster.server_proc().pid().expect("up runs");
    let shared = Arc::new(Shared::default());
    let agent_pid = cluster
        .agent_proc(&agent)
        .and_then(|p| p.pid())
        .expect("agent runs");
    shared.agent_pid.store(agent_pid, Ordering::Relaxed);
    let kubectl = kubectl_installed().then(|| Kubectl::admin(&cluster));
    println!(
        "soak: {text} on nodes {up_node} (up, pid {up_pid}) and {agent}, warm-up {warm_up:?}, kubectl {}",
        if kubectl.is_some() { "yes" } else { "no" }
    );

    let access = cluster.access();
    let nodes = vec![up_node.clone(), agent.clone()];
    let start = Instant::now();
    let load = vec![
        spawn("submit", {
            let (a, s) = (access.clone(), shared.clone());
            move || submitter(a, nodes, s)
        }),
        spawn("control", {
            let (a, s) = (access.clone(), shared.clone());
            move || controller(a, s)
        }),
        spawn("logs", {
            let (a, s) = (access.clone(), shared.clone());
            move || log_readers(a, s)
        }),
        spawn("list", {
            let (a, s) = (access.clone(), shared.clone());
            move || listers(a, kubectl, s)
        }),
    ];
    let sampling = spawn("sample", {
        let (a, s) = (access.clone(), shared.clone());
        move || sampler(a, up_pid, warm_up, s)
    });

    let mut restarts = 0u32;
    while start.elapsed() + AGENT_RESTART_EVERY < duration {
        std::thread::sleep(AGENT_RESTART_EVERY);
        shared.agent_pid.store(0, Ordering::Relaxed);
        if restarts.is_multiple_of(2) {
            shared.count("agent SIGTERM");
            assert!(
                cluster.stop_agent(&agent, Duration::from_secs(20)),
                "agent {agent} did not exit within 20 s of SIGTERM"
            );
        } else {
            shared.count("agent SIGKILL");
            cluster.kill_agent(&agent);
        }
        cluster.restart_agent(&agent);
        restarts += 1;
        let pid = cluster
            .agent_proc(&agent)
            .and_then(|p| p.pid())
            .expect("agent runs");
        shared.agent_pid.store(pid, Ordering::Relaxed);
    }
    if let Some(rest) = duration.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for thread in load {
        let name = thread.thread().name().unwrap_or("load").to_string();
        if thread.join().is_err() {
            failures.push(format!("the {name} load thread panicked (see above)"));
        }
    }
    let (up_figures, agent_figures, snapshots, most_holding) =
        sampling.join().expect("the sampler panicked");

    // Drain: kill whatever is still live and wait until every task is finished.
    let acknowledged = lock(&shared.acknowledged).clone();
    let live: Vec<String> = list_tasks(&access)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.status.phase.is_terminal())
        .map(|t| t.metadata.name)
        .collect();
    for chunk in live.chunks(20) {
        let mut args = vec!["task", "kill", "--no-wait"];
        args.extend(chunk.iter().map(String::as_str));
        access.kr(&args, Duration::from_secs(60));
    }
    let drain_deadline = Instant::now() + Duration::from_secs(90);
    let phases: BTreeMap<String, String> = loop {
        let tasks = list_tasks(&access).unwrap_or_default();
        let done = tasks.iter().all(|t| t.status.phase.is_terminal());
        if done || Instant::now() > drain_deadline {
            break tasks
                .into_iter()
                .map(|t| (t.metadata.name, t.status.phase.as_str().to_string()))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &acknowledged {
        if let Some(p) = phases.get(id) {
            *by_phase.entry(p.as_str()).or_default() += 1;
        }
    }
    // Each reason a task failed for, how often, and its first message.
    let mut failed_reasons: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for t in list_tasks(&access).unwrap_or_default() {
        if t.status.phase.as_str() == "Failed" {
            let reason = t.status.reason.unwrap_or_else(|| "(none)".into());
            let entry = failed_reasons
                .entry(reason)
                .or_insert_with(|| (0, t.status.message.unwrap_or_default()));
            entry.0 += 1;
        }
    }
    let lost = lost_tasks(&acknowledged, &phases);
    if !lost.is_empty() {
        failures.push(format!(
            "{} acknowledged task(s) lost: {lost:?}",
            lost.len()
        ));
    }
    let stuck: Vec<(&String, &String)> = phases
        .iter()
        .filter(|(_, p)| !matches!(p.as_str(), "Succeeded" | "Failed" | "Killed" | "Lost"))
        .collect();
    if !stuck.is_empty() {
        failures.push(format!(
            "tasks not finished 90 s after being killed: {stuck:?}"
        ));
    }
    let double_booked = lock(&shared.double_booked).clone();
    if !double_booked.is_empty() {
        failures.push(format!(
            "{} double booking(s) seen, first: {}",
            double_booked.len(),
            double_booked[0]
        ));
    }

    // Memory and descriptors, with the load over and every task finished.
    let agent_pid = cluster
        .agent_proc(&agent)
        .and_then(|p| p.pid())
        .expect("agent runs");
    let mut figures = Vec::new();
    for (label, pid, warm, max_rss) in [
        ("server (up)", up_pid, up_figures.warm, up_figures.max_rss),
        (
            "agent",
            agent_pid,
            agent_figures.warm,
            agent_figures.max_rss,
        ),
    ] {
        let Some((warm_rss, warm_fds)) = warm else {
            failures.push(format!("{label}: no sample after the warm-up"));
            continue;
        };
        // Connections of the load just stopped may take a moment to close.
        let settle = Instant::now() + Duration::from_secs(30);
        let (end_rss, end_fds) = loop {
            let now = proc_figures(pid).unwrap_or((0, 0));
            if check_fds(label, warm_fds, now.1).is_ok() || Instant::now() > settle {
                break now;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        figures.push(format!(
            "{label}: RSS {warm_rss} KiB at warm-up, {end_rss} KiB at the end ({:+.1} %), max {max_rss} KiB; fds {warm_fds} -> {end_fds}",
            growth_percent(warm_rss, end_rss)
        ));
        if label.starts_with("server") {
            failures.extend(check_rss(label, warm_rss, end_rss, RSS_LIMIT_PERCENT).err());
        }
        failures.extend(check_fds(label, warm_fds, end_fds).err());
    }

    println!(
        "soak: ran {:?} (+ drain), {snapshots} snapshots checked, at most {most_holding} tasks holding resources at once",
        start.elapsed()
    );
    println!(
        "soak: acknowledged {} tasks, final phases {by_phase:?}",
        acknowledged.len()
    );
    for (reason, (n, message)) in &failed_reasons {
        println!("soak: Failed {n}x with reason {reason}, e.g. {message:?}");
    }
    for (what, n) in lock(&shared.counts).iter() {
        println!("soak:   {what}: {n}");
    }
    for (what, first) in lock(&shared.first_refusals).iter() {
        println!("soak:   first {what}: {first}");
    }
    for line in &figures {
        println!("soak: {line}");
    }
    if failures.is_empty() {
        println!("soak: PASSED");
    } else {
        panic!("soak FAILED:\n  {}", failures.join("\n  "));
    }
}
