//! Whole-system fault scenarios: many nodes and many tasks,
//! an agent killed mid-task, the server killed mid-burst, a node lost for good, Docker
//! trouble, and a restart of everything. Real processes, real Docker, the test image.
//!
//! Scenario 6 (bad input) lives in `bad_input.rs`.
//!
//! Scenario 1 is heavy (200 tasks on 3 agents of a 2-core machine), so it runs alone: it
//! takes the write half of [`EXCLUSIVE`], the others share the read half. Every scenario
//! prints its wall time on stderr.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use kohakuriver_tests::{
    Access, AgentOptions, Cluster, Run, ServerOptions, docker, docker_ready, unique_name, wait_for,
    wait_until,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// What one active task holds on its node: (name, cores, GPUs).
type Held<'a> = (&'a str, BTreeSet<u32>, BTreeSet<u64>);

static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

/// Prints the scenario's wall time when dropped (also on failure).
struct Timer(&'static str, Instant);

impl Timer {
    fn start(name: &'static str) -> Timer {
        Timer(name, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "FAILED"
        } else {
            "ok"
        };
        eprintln!(
            "[faults] {}: {outcome}, wall time {:.1?}",
            self.0,
            self.1.elapsed()
        );
    }
}

/// A shell loop printing `1`..`n`, one line every `delay` seconds, then `exit code`.
fn counter(n: u32, delay: &str, code: i32) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); sleep {delay}; done; exit {code}")
}

/// `1\n2\n…n\n`.
fn numbers(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// Asserts `got` is exactly `1..=n`, one per line, naming missing and duplicated lines.
#[track_caller]
fn assert_numbers(what: &str, got: &str, n: u32) {
    if got == numbers(n) {
        return;
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for line in got.lines() {
        *count.entry(line).or_default() += 1;
    }
    let missing: Vec<u32> = (1..=n)
        .filter(|i| !count.contains_key(i.to_string().as_str()))
        .collect();
    let dup: Vec<&str> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(l, _)| *l)
        .collect();
    panic!(
        "{what}: expected the lines 1..={n} once each, in order; missing {missing:?}, \
         duplicated {dup:?}; got {} lines:\n{got}",
        got.lines().count()
    );
}

/// Parses a cpuset list (`0-1,3`); empty for "".
fn cpuset(text: &str) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                set.extend(a..=b);
            }
            None => {
                set.insert(part.parse().unwrap());
            }
        }
    }
    set
}

/// All tasks of the cluster (`GET /tasks`), `None` when the server does not answer.
fn list_tasks(access: &Access) -> Option<Vec<Value>> {
    let resp = access.get("/apis/kohakuriver/v1/tasks").ok()?;
    if resp.status != 200 {
        return None;
    }
    let list: Value = serde_json::from_slice(&resp.body).ok()?;
    list["items"].as_array().cloned()
}

/// The task's stdout log through the server (`GET /tasks/{name}/log`).
fn log_of(access: &Access, name: &str) -> String {
    let resp = access
        .get(&format!("/apis/kohakuriver/v1/tasks/{name}/log"))
        .unwrap_or_else(|e| panic!("log of {name}: {e}"));
    assert_eq!(resp.status, 200, "log of {name}: {}", resp.text());
    resp.text()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or("")
}

fn terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "Killed" | "Lost")
}

/// `kohakuriver --server URL args…` as admin without a `Cluster` borrow (for background
/// threads).
fn kr_at(access: &Access, args: &[&str], timeout: Duration) -> Run {
    access.kr(args, timeout)
}

// ------------------------------------------------------------------------------------------

/// Scenario 1 — many nodes, many tasks. 3 agents (2 cores and 2 fake GPUs each) and 200
/// short tasks submitted concurrently from 5 threads, mixing `-c 1`, `-c 2`, `-c 0`,
/// `-m 64M` and (10 of them) `--gpus 1`.
///
/// Expected: every CPU task Succeeded with exit code 0 and its complete log (its own name);
/// in every snapshot of the task list, no two non-terminal tasks bound to the same node
/// hold a common core or GPU; in every sample of the running containers, no two on the
/// same node have overlapping `HostConfig.CpusetCpus`, and each container's cpuset is its
/// task's allocation; tasks that did not fit were seen Pending with reason Unschedulable
/// and then ran. The GPU tasks cannot start here (no nvidia runtime): they only have to
/// end (Failed, StartFailed) and never share a GPU; they are kept out of "all succeed".
#[test]
fn s1_many_nodes_many_tasks() {
    if !docker_ready() {
        return;
    }
    let _lock = exclusive();
    let _t = Timer::start("scenario 1 (many nodes, many tasks)");
    let mut c = Cluster::start();
    let nodes: Vec<String> = (0..3)
        .map(|_| {
            c.add_agent_with(
                "many",
                AgentOptions {
                    fake_gpus: Some(2),
                    ..AgentOptions::default()
                },
            )
        })
        .collect();
    for n in &nodes {
        let node = c.node(n).unwrap();
        println!("node {n} capacity {}", node["status"]["capacity"]);
    }
    let url = c.access();

    // The 200 tasks: (name, submit args, is_gpu, memory).
    const N: usize = 200;
    let prefix = unique_name("many");
    let specs: Vec<(String, Vec<String>, bool, bool)> = (0..N)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let mut args: Vec<String> = vec!["task".into(), "submit".into()];
            args.extend(["--name".into(), name.clone()]);
            let gpu = i % 20 == 0;
            let cores = match i % 20 {
                0 => "1",
                1..=5 => "2",
                6..=10 => "0",
                _ => "1",
            };
            args.extend(["-c".into(), cores.into()]);
            if gpu {
                args.extend(["--gpus".into(), "1".into()]);
            }
            let mem = i % 3 == 0;
            if mem {
                args.extend(["-m".into(), "64M".into()]);
            }
            args.extend(
                ["--", "sh", "-c", "echo $KOHAKURIVER_TASK; sleep 0.2"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            (name, args, gpu, mem)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let unschedulable: Arc<Mutex<HashSet<String>>> = Arc::default();
    let snapshots = Arc::new(Mutex::new(0usize));
    let our_nodes: HashSet<String> = nodes.iter().cloned().collect();

    // Watcher of the API: every snapshot of the task list is checked.
    let api_watch = {
        let (stop, violations, unschedulable, snapshots, url) = (
            stop.clone(),
            violations.clone(),
            unschedulable.clone(),
            snapshots.clone(),
            url.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(items) = list_tasks(&url) else {
                    continue;
                };
                *snapshots.lock().unwrap() += 1;
                let mut held: HashMap<&str, Vec<Held>> = HashMap::new();
                for t in &items {
                    let name = s(t, &["metadata", "name"]);
                    let phase = s(t, &["status", "phase"]);
                    if phase == "Pending" && s(t, &["status", "reason"]) == "Unschedulable" {
                        unschedulable.lock().unwrap().insert(name.to_string());
                    }
                    let node = s(t, &["status", "node"]);
                    if node.is_empty() || terminal(phase) {
                        continue;
                    }
                    let alloc = &t["status"]["allocation"];
                    let cpus = cpuset(alloc["cpus"].as_str().unwrap_or(""));
                    let gpus: BTreeSet<u64> = alloc["gpus"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default();
                    held.entry(node).or_default().push((name, cpus, gpus));
                }
                let mut v = violations.lock().unwrap();
                for (node, tasks) in &held {
                    for (i, a) in tasks.iter().enumerate() {
                        if a.1.iter().any(|c| *c >= 2) {
                            v.push(format!("{} on {node} holds cores {:?} of 2", a.0, a.1));
                        }
                        for b in &tasks[i + 1..] {
                            if !a.1.is_disjoint(&b.1) || !a.2.is_disjoint(&b.2) {
                                v.push(format!(
                                    "API snapshot: {} (cpus {:?} gpus {:?}) and {} (cpus {:?} \
                                     gpus {:?}) both active on {node}",
                                    a.0, a.1, a.2, b.0, b.1, b.2
                                ));
                            }
                        }
                    }
                }
                drop(v);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Sampler of the real containers: running containers of one node never share a core.
    let seen_cpusets: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let docker_samples = Arc::new(Mutex::new(0usize));
    let docker_watch = {
        let (stop, violations, seen, samples, ours) = (
            stop.clone(),
            violations.clone(),
            seen_cpusets.clone(),
            docker_samples.clone(),
            our_nodes.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (ok, out, _) = docker(&[
                    "ps",
                    "-q",
                    "--no-trunc",
                    "--filter",
                    "label=kohakuriver.node",
                ]);
                let ids: Vec<&str> = out.split_whitespace().collect();
                if !ok || ids.is_empty() {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let mut args = vec![
                    "inspect",
                    "--format",
                    "{{.State.Running}}|{{index .Config.Labels \"kohakuriver.node\"}}|\
                     {{index .Config.Labels \"kohakuriver.task\"}}|{{.HostConfig.CpusetCpus}}",
                ];
                args.extend(ids);
                // Containers removed between `ps` and `inspect` make it fail partially;
                // the lines it printed are still good.
                let (_, out, _) = docker(&args);
                *samples.lock().unwrap() += 1;
                let mut running: HashMap<String, Vec<(String, BTreeSet<u32>)>> = HashMap::new();
                for line in out.lines() {
                    let f: Vec<&str> = line.split('|').collect();
                    if f.len() != 4 || f[0] != "true" || !ours.contains(f[1]) {
                        continue;
                    }
                    seen.lock()
                        .unwrap()
                        .insert(f[2].to_string(), f[3].to_string());
                    let set = cpuset(f[3]);
                    if !set.is_empty() {
                        running
                            .entry(f[1].to_string())
                            .or_default()
                            .push((f[2].to_string(), set));
                    }
                }
                let mut v = violations.lock().unwrap();
                for (node, cs) in &running {
                    for (i, a) in cs.iter().enumerate() {
                        for b in &cs[i + 1..] {
                            if !a.1.is_disjoint(&b.1) {
                                v.push(format!(
                                    "docker: containers of {} (cpuset {:?}) and {} (cpuset \
                                     {:?}) both running on {node}",
                                    a.0, a.1, b.0, b.1
                                ));
                            }
                        }
                    }
                }
                drop(v);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Submit concurrently from 5 threads.
    let submitted = Instant::now();
    let chunks: Vec<Vec<(String, Vec<String>)>> = (0..5)
        .map(|k| {
            specs
                .iter()
                .skip(k)
                .step_by(5)
                .map(|(n, a, _, _)| (n.clone(), a.clone()))
                .collect()
        })
        .collect();
    let submitters: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let url = url.clone();
            std::thread::spawn(move || {
                for (name, args) in chunk {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let run = kr_at(&url, &args, T);
                    run.ok();
                    assert_eq!(run.stdout, format!("{name}\n"), "submit prints the id");
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().expect("a submitter failed");
    }
    println!("200 tasks submitted in {:?}", submitted.elapsed());

    // Wait for all of them to end.
    let finished = wait_for(Duration::from_secs(200), "all 200 tasks to end", || {
        let items = list_tasks(&url)?;
        let done = items
            .iter()
            .filter(|t| terminal(s(t, &["status", "phase"])))
            .count();
        (items.len() == N && done == N).then_some(items)
    });
    println!("all ended {:?} after submission", submitted.elapsed());
    stop.store(true, Ordering::Relaxed);
    api_watch.join().unwrap();
    docker_watch.join().unwrap();

    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "{} overlapping allocations, first ones:\n{}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
    let by_name: HashMap<&str, &Value> = finished
        .iter()
        .map(|t| (s(t, &["metadata", "name"]), t))
        .collect();
    let mut bad = Vec::new();
    for (name, _, gpu, mem) in &specs {
        let t = by_name[name.as_str()];
        let phase = s(t, &["status", "phase"]);
        if *gpu {
            println!(
                "GPU task {name}: {phase} {} {:?}",
                s(t, &["status", "reason"]),
                t["status"]["allocation"]["gpus"]
            );
            continue;
        }
        if phase != "Succeeded" || t["status"]["exitCode"] != 0 {
            bad.push(format!("{name}: {:#}", t["status"]));
            continue;
        }
        if *mem && t["status"]["allocation"]["memoryBytes"] != 64_000_000 {
            bad.push(format!(
                "{name}: -m 64M but allocation {}",
                t["status"]["allocation"]
            ));
        }
        let log = log_of(&url, name);
        if log != format!("{name}\n") {
            bad.push(format!("{name}: log {log:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} CPU tasks did not succeed with their log:\n{}",
        bad.len(),
        bad.join("\n")
    );

    // The containers' real cpusets are the allocations.
    let seen = seen_cpusets.lock().unwrap().clone();
    let samples = *docker_samples.lock().unwrap();
    println!(
        "{} API snapshots, {samples} docker samples, {} containers seen running",
        *snapshots.lock().unwrap(),
        seen.len()
    );
    assert!(
        !seen.is_empty(),
        "the docker sampler saw no running container"
    );
    for (task, set) in &seen {
        let alloc = by_name[task.as_str()]["status"]["allocation"]["cpus"]
            .as_str()
            .unwrap_or("");
        assert_eq!(
            cpuset(set),
            cpuset(alloc),
            "task {task}: container cpuset {set:?} but allocation {alloc:?}"
        );
    }

    // Tasks that did not fit waited, then ran.
    let waited = unschedulable.lock().unwrap().clone();
    println!("{} tasks were seen Pending/Unschedulable", waited.len());
    assert!(
        !waited.is_empty(),
        "200 tasks on 6 cores: some must have waited as Unschedulable"
    );
    for name in &waited {
        let t = by_name[name.as_str()];
        let gpu = specs.iter().any(|(n, _, g, _)| n == name && *g);
        assert!(
            gpu || s(t, &["status", "phase"]) == "Succeeded",
            "{name} waited and then did not run: {:#}",
            t["status"]
        );
    }
}

// ------------------------------------------------------------------------------------------

/// Scenario 2 — agent killed (`kill -9`) mid-task and restarted. The task prints 1..40
/// (one line every 0.1 s) and exits 4; the agent is SIGKILLed once some lines are out and
/// restarted on the same data dir and port.
///
/// Expected: the task ends Failed with exit code 4 after one attempt in the same container,
/// and its log is exactly 1..40 — no gap, no duplicate.
#[test]
fn s2_agent_killed_mid_task_and_restarted() {
    if !docker_ready() {
        return;
    }
    let _lock = shared();
    let _t = Timer::start("scenario 2 (agent kill -9 mid-task)");
    let mut c = Cluster::start();
    let node = c.add_agent("agentkill");
    let id = c.submit(&["-t", &node, "--", "sh", "-c", &counter(40, "0.1", 4)]);
    let running = c.wait_phase(&id, &["Running"], T);
    let container = running["status"]["containerId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(T, "a few lines of output", || {
        c.kr(&["task", "logs", &id]).stdout.lines().count() >= 5
    });
    c.kill_agent(&node);
    c.restart_agent(&node);
    let done = c.wait_finished(&id, T);
    assert_eq!(done["status"]["phase"], "Failed", "{:#}", done["status"]);
    assert_eq!(done["status"]["exitCode"], 4, "{:#}", done["status"]);
    assert_eq!(done["status"]["containerId"], container.as_str());
    assert_eq!(done["status"]["attempts"], 1, "ran once");
    let logs = c.kr(&["task", "logs", &id]);
    logs.ok();
    assert_numbers("logs after an agent kill -9", &logs.stdout, 40);
}

// ------------------------------------------------------------------------------------------

/// Scenario 3 — the server SIGKILLed in the middle of a burst of submissions, then
/// restarted on the same database. Before the kill, a counting task (1..80, 0.1 s a line)
/// runs, with `task logs -f` and `wait --for=condition=Succeeded` on it.
///
/// Expected: every task whose submission was acknowledged (exit 0 and the id printed)
/// still exists after the restart and Succeeds with its log; so does any unacknowledged one
/// that was stored anyway; the counting task Succeeds with a complete log; and the
/// `task logs -f` and `wait` started before the kill carry on across the restart: `logs -f`
/// delivers exactly 1..80 and exits 0, `wait` exits 0 once the task Succeeded.
#[test]
fn s3_server_killed_mid_burst_and_restarted() {
    if !docker_ready() {
        return;
    }
    let _lock = shared();
    let _t = Timer::start("scenario 3 (server kill -9 mid-burst)");
    let mut c = Cluster::start();
    let node = c.add_agent("srvkill");
    let url = c.access();

    let long = c.submit(&["-t", &node, "--", "sh", "-c", &counter(80, "0.1", 0)]);
    c.wait_phase(&long, &["Running"], T);
    let mut follow = c.stream(&["task", "logs", &long, "-f"]);
    let mut waiter = c.stream(&[
        "wait",
        &format!("task/{long}"),
        "--for=condition=Succeeded",
        "--timeout",
        "120s",
    ]);
    wait_until(T, "the follower's first line", || {
        !follow.stdout_so_far().is_empty()
    });

    // The burst: (name, acknowledged).
    let results: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let prefix = unique_name("burst");
    let burst = {
        let (results, stop, url, node) = (results.clone(), stop.clone(), url.clone(), node.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{prefix}-{i}");
                let echo = format!("burst {i}");
                let run = kr_at(
                    &url,
                    &[
                        "task", "submit", "--name", &name, "-t", &node, "-c", "0", "--", "echo",
                        &echo,
                    ],
                    T,
                );
                let acked = run.code == 0 && run.stdout == format!("{name}\n");
                results.lock().unwrap().push((name, acked));
                i += 1;
            }
        })
    };
    let acked = |r: &Mutex<Vec<(String, bool)>>| r.lock().unwrap().iter().filter(|x| x.1).count();
    let failed = |r: &Mutex<Vec<(String, bool)>>| r.lock().unwrap().iter().filter(|x| !x.1).count();
    wait_until(T, "8 acknowledged submissions", || acked(&results) >= 8);
    c.kill_server();
    wait_until(T, "2 refused submissions", || failed(&results) >= 2);
    c.restart_server();
    let before = acked(&results);
    wait_until(T, "8 more acknowledged submissions", || {
        acked(&results) >= before + 8
    });
    stop.store(true, Ordering::Relaxed);
    burst.join().expect("the burst thread");
    let results = results.lock().unwrap().clone();
    println!(
        "burst: {} submissions, {} acknowledged",
        results.len(),
        results.iter().filter(|r| r.1).count()
    );

    // Every acknowledged task exists and finishes with its log; unacknowledged ones that
    // were stored anyway finish too.
    let mut bad_logs = Vec::new();
    for (i, (name, acked)) in results.iter().enumerate() {
        let Some(t) = c.get_json(&format!("tasks/{name}")) else {
            assert!(!acked, "acknowledged task {name} is gone after the restart");
            continue;
        };
        let t = if terminal(s(&t, &["status", "phase"])) {
            t
        } else {
            c.wait_finished(name, T)
        };
        assert_eq!(
            t["status"]["phase"], "Succeeded",
            "{name} (acknowledged: {acked}): {:#}",
            t["status"]
        );
        let want = format!("burst {i}\n");
        let log = log_of(&url, name);
        if log != want {
            // Diagnosis: does the log show up later?
            let since = Instant::now();
            let later = (0..50).find_map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                (log_of(&url, name) == want).then(|| since.elapsed())
            });
            bad_logs.push(format!(
                "{name} (acknowledged: {acked}): log {log:?} right after it was {}; \
                 complete {later:?} later",
                s(&t, &["status", "phase"])
            ));
        }
    }
    assert!(
        bad_logs.is_empty(),
        "{} of {} burst tasks Succeeded without their log:\n{}",
        bad_logs.len(),
        results.len(),
        bad_logs.join("\n")
    );

    // The long task, and the streams opened before the kill.
    let done = c.wait_phase(&long, &["Succeeded"], T);
    assert_eq!(done["status"]["exitCode"], 0);
    assert_numbers("`task logs` of the counting task", &log_of(&url, &long), 80);
    let follow_code = follow.wait_exit(Duration::from_secs(30));
    if follow_code.is_none() {
        follow.kill();
    }
    let (out, err) = follow.finish_readers();
    let waiter_code = waiter.wait_exit(Duration::from_secs(30));
    if waiter_code.is_none() {
        waiter.kill();
    }
    let (wout, werr) = waiter.finish_readers();
    let mut problems = Vec::new();
    let out = String::from_utf8_lossy(&out).into_owned();
    if follow_code != Some(0) || out != numbers(80) {
        problems.push(format!(
            "`task logs -f` started before the server kill: exit {follow_code:?}, {} of 80 \
             lines (last {:?}), stderr {:?}",
            out.lines().count(),
            out.lines().last(),
            String::from_utf8_lossy(&err).trim()
        ));
    }
    if waiter_code != Some(0) {
        problems.push(format!(
            "`wait --for=condition=Succeeded` started before the server kill: exit \
             {waiter_code:?}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&wout).trim(),
            String::from_utf8_lossy(&werr).trim()
        ));
    }
    assert!(
        problems.is_empty(),
        "streams did not survive the server restart:\n{}",
        problems.join("\n")
    );
}

// ------------------------------------------------------------------------------------------

/// Scenario 4 — a node lost for good (`--node-grace 6s`, above the agents' fence-after
/// plus kill grace). On node A run a long task and a
/// task with `retries: 1` that sleeps on its first attempt only; add node B; SIGKILL A's
/// agent and never restart it.
///
/// Expected: A is NotReady within grace + 12 s; the long task is Unknown, then Lost with
/// reason NodeLost once A has been away past `--lost-after 10s`;
/// the retryable one goes back to Pending and then Succeeds on B (attempt 2, its log says
/// so); untargeted tasks submitted afterwards all land on B and Succeed; a task targeting A
/// stays Pending with reason Unschedulable and is never bound.
#[test]
fn s4_node_lost_for_good() {
    if !docker_ready() {
        return;
    }
    let _lock = shared();
    let _t = Timer::start("scenario 4 (node lost for good)");
    let mut c = Cluster::start_with(ServerOptions {
        node_grace: Some("6s".into()),
        retry_backoff: Some("1s".into()),
        // A task with no retry left is Unknown while its node is away, Lost after this.
        extra_args: vec!["--lost-after".into(), "10s".into()],
        ..ServerOptions::default()
    });
    let a = c.add_agent("lost-a");
    let long = c.submit(&["-t", &a, "--", "sleep", "300"]);
    let retry = c.submit(&[
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        "if [ \"$KOHAKURIVER_ATTEMPT\" = 1 ]; then sleep 300; fi; \
         echo attempt $KOHAKURIVER_ATTEMPT on $KOHAKURIVER_NODE",
    ]);
    c.wait_phase(&long, &["Running"], T);
    let first = c.wait_phase(&retry, &["Running"], T);
    assert_eq!(first["status"]["node"], a.as_str(), "only A existed");
    let b = c.add_agent("lost-b");

    c.kill_agent(&a);
    let killed = Instant::now();
    wait_until(Duration::from_secs(15), "node A NotReady", || {
        !c.node_ready(&a)
    });
    let ready = c.node(&a).unwrap()["status"]["conditions"].clone();
    println!("A NotReady {:?} after the kill: {ready}", killed.elapsed());

    // The retryable task's phases are followed from here on: it is re-queued after the
    // grace, while the long one stays Unknown until --lost-after.
    let mut phases: Vec<String> = Vec::new();
    let mut long_phases: Vec<String> = Vec::new();
    let lost = wait_for(Duration::from_secs(30), "the long task to be Lost", || {
        let t = c.task(&retry);
        let phase = s(&t, &["status", "phase"]).to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        let l = c.task(&long);
        let phase = s(&l, &["status", "phase"]).to_string();
        if long_phases.last() != Some(&phase) {
            long_phases.push(phase.clone());
        }
        terminal(&phase).then_some(l)
    });
    println!("long task phases after the kill: {long_phases:?}");
    assert_eq!(lost["status"]["phase"], "Lost", "{:#}", lost["status"]);
    assert_eq!(lost["status"]["reason"], "NodeLost", "{:#}", lost["status"]);
    assert!(
        long_phases.iter().any(|p| p == "Unknown"),
        "Unknown before Lost: {long_phases:?}"
    );

    // The retryable task: back to Pending, then Succeeded on B.
    let done = wait_for(T, "the retryable task to end", || {
        let t = c.task(&retry);
        let phase = s(&t, &["status", "phase"]).to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        terminal(&phase).then_some(t)
    });
    println!("retryable task phases after the kill: {phases:?}");
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    assert_eq!(done["status"]["node"], b.as_str());
    assert_eq!(done["status"]["exitCode"], 0);
    assert!(
        phases.iter().any(|p| p == "Pending"),
        "it was re-queued: {phases:?}"
    );
    assert_eq!(
        c.kr(&["task", "logs", &retry]).ok().stdout,
        format!("attempt 2 on {b}\n")
    );

    // No capacity on A any more.
    let stuck = c.submit(&["-t", &a, "--", "echo", "never"]);
    let placed: Vec<(String, u32)> = (0..4)
        .map(|i| {
            (
                c.submit(&["-c", "1", "--", "sh", "-c", &counter(3, "0", 0)]),
                i,
            )
        })
        .collect();
    for (id, _) in &placed {
        let t = c.wait_finished(id, T);
        assert_eq!(t["status"]["phase"], "Succeeded", "{:#}", t["status"]);
        assert_eq!(t["status"]["node"], b.as_str(), "placed on the live node");
        assert_eq!(c.kr(&["task", "logs", id]).ok().stdout, numbers(3));
    }
    let t = c.wait_phase(&stuck, &["Pending", "Failed"], T);
    let t = if t["status"]["reason"] == "Unschedulable" {
        t
    } else {
        wait_for(T, "the task on A to be Unschedulable", || {
            let t = c.task(&stuck);
            (t["status"]["reason"] == "Unschedulable").then_some(t)
        })
    };
    assert_eq!(t["status"]["phase"], "Pending", "{:#}", t["status"]);
    assert!(
        t["status"]["node"].is_null(),
        "never bound to the lost node"
    );
    println!("task on the lost node: {}", t["status"]["message"]);
}

// ------------------------------------------------------------------------------------------

/// Scenario 5 — Docker trouble on one agent: an image that does not exist
/// (`--image nope:latest`, no registry reachable) and a container the engine refuses to
/// start (a file bind-mounted over the image's `/bin` directory).
///
/// Expected: the first fails with reason ImageNotFound or ImagePullFailed and a message
/// naming the image; the second fails with reason StartFailed and the engine's words about
/// the mount; neither has an exit code; meanwhile a normal task on the same agent Succeeds
/// with exit 0 and its complete log, and a later one still runs.
#[test]
fn s5_docker_trouble() {
    if !docker_ready() {
        return;
    }
    let _lock = shared();
    let _t = Timer::start("scenario 5 (docker trouble)");
    let mut c = Cluster::start();
    let node = c.add_agent("dockertrouble");
    let normal = c.submit(&["-t", &node, "--", "sh", "-c", &counter(30, "0.05", 0)]);
    let missing = c.submit(&["-t", &node, "--image", "nope:latest", "--", "true"]);
    let refused = c.submit(&[
        "-t",
        &node,
        "-c",
        "0",
        "--mount",
        "/etc/hostname:/bin",
        "--",
        "true",
    ]);

    let t = c.wait_finished(&missing, T);
    let st = &t["status"];
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert!(
        matches!(
            s(&t, &["status", "reason"]),
            "ImageNotFound" | "ImagePullFailed"
        ),
        "{st:#}"
    );
    assert!(
        s(&t, &["status", "message"]).contains("nope:latest"),
        "{st:#}"
    );
    assert!(st["exitCode"].is_null(), "it never ran: {st:#}");

    let t = c.wait_finished(&refused, T);
    let st = &t["status"];
    println!("refused container: {st}");
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["reason"], "StartFailed", "{st:#}");
    let message = s(&t, &["status", "message"]);
    assert!(
        message.contains("/etc/hostname") && message.contains("mount"),
        "the engine's reason: {message}"
    );
    assert!(st["exitCode"].is_null(), "it never ran: {st:#}");

    let t = c.wait_phase(&normal, &["Succeeded"], T);
    assert_eq!(t["status"]["exitCode"], 0);
    assert_numbers(
        "log of the normal task",
        &c.kr(&["task", "logs", &normal]).ok().stdout,
        30,
    );
    let after = c.kr(&[
        "task",
        "submit",
        "-t",
        &node,
        "-w",
        "--",
        "sh",
        "-c",
        "echo still; exit 6",
    ]);
    after.code(6);
    assert_eq!(
        c.kr(&["task", "logs", after.stdout.trim()]).ok().stdout,
        "still\n"
    );
    c.agent_proc(&node).expect("agent").assert_running();
}

// ------------------------------------------------------------------------------------------

/// Scenario 7 — restart of everything: `kohakuriver up` stopped (SIGTERM) while a task
/// counts 1..50 (0.1 s a line, then `exit 5`), and started again on the same data dir.
///
/// Expected: `up` exits by itself on SIGTERM; the task's container keeps running
/// meanwhile; after the restart it is adopted (same `status.containerId`, `attempts` 1,
/// exactly one container for the task); the task ends Failed with exit code 5 and its log
/// is exactly 1..50 — nothing lost, nothing run twice.
#[test]
fn s7_restart_of_everything() {
    if !docker_ready() {
        return;
    }
    let _lock = shared();
    let _t = Timer::start("scenario 7 (restart of everything)");
    let mut c = Cluster::up("adopt");
    let id = c.submit(&["--", "sh", "-c", &counter(50, "0.1", 5)]);
    let running = c.wait_phase(&id, &["Running"], T);
    let container = running["status"]["containerId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(T, "a few lines", || {
        c.kr(&["task", "logs", &id]).stdout.lines().count() >= 3
    });
    let stopped = c.stop_server(Duration::from_secs(20));
    assert!(stopped, "`up` did not exit within 20 s of SIGTERM");
    let (ok, state, _) = docker(&["inspect", "--format", "{{.State.Running}}", &container]);
    assert!(ok, "the task's container is gone after `up` stopped");
    println!("container running while `up` is down: {}", state.trim());
    c.restart_server();

    let label = format!("label=kohakuriver.task={id}");
    let (_, all, _) = docker(&["ps", "-a", "-q", "--no-trunc", "--filter", &label]);
    let ids: Vec<&str> = all.split_whitespace().collect();
    assert!(
        ids.len() <= 1 && ids.iter().all(|i| *i == container),
        "one container for the task, the adopted one {container}; got {ids:?}"
    );
    let done = c.wait_finished(&id, T);
    let st = &done["status"];
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["exitCode"], 5, "{st:#}");
    assert_eq!(
        st["containerId"],
        container.as_str(),
        "adopted, not recreated"
    );
    assert_eq!(st["attempts"], 1, "run once: {st:#}");
    assert_numbers(
        "log across an `up` restart",
        &c.kr(&["task", "logs", &id]).ok().stdout,
        50,
    );
}
