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
mod soak_load;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kohakuriver_tests::{AgentOptions, Cluster, Kubectl, ServerOptions, docker_ready};
use soak_checks::{check_fds, check_rss, growth_percent, lost_tasks};
use soak_load::{
    Shared, controller, list_tasks, listers, lock, log_readers, proc_figures, sampler, submitter,
};

/// RSS may grow at most this much after the warm-up.
const RSS_LIMIT_PERCENT: f64 = 20.0;
/// The shortest warm-up before the RSS and descriptor baselines.
const WARM_UP_AT_LEAST: Duration = Duration::from_secs(60);
/// Time between restarts of the extra agent.
const AGENT_RESTART_EVERY: Duration = Duration::from_secs(20);

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
