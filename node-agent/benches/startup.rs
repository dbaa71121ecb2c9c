//! Startup benchmark: time from task creation (and binding) to a Running container and to
//! completion for `echo hi`, beside a plain `docker run --rm IMAGE echo hi` measured in the
//! same run; and the resident memory of the process running the agent, idle and with 20
//! running tasks.
//!
//! The agent runs in-process here, together with the in-memory API server, so the memory
//! figures are an upper bound for the agent alone. Run: `cargo bench -p kohakuriver-node-agent
//! --bench startup` (needs Docker; builds the test image when missing).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kohakuriver_api::{Task, TaskPhase};
use support::{Cluster, Options, alloc};

const RUNS: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label:<44} median {:>7.1} ms   p95 {:>7.1} ms   (n={})",
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms.len()
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    if !support::docker_ready() {
        return;
    }
    // Plain docker run, the baseline.
    let mut docker_run = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", support::IMAGE, "echo", "hi"])
            .output()
            .unwrap();
        assert!(out.status.success());
        docker_run.push(start.elapsed().as_secs_f64() * 1000.0);
    }

    let c = Cluster::start("bench", Options::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib();

    let mut to_running = Vec::new();
    let mut to_done = Vec::new();
    for i in 0..RUNS {
        let name = format!("echo-{i}");
        let start = Instant::now();
        c.run(Task::test(&name).command(&["echo", "hi"]), alloc("0", None))
            .await;
        let mut running_at = None;
        loop {
            let t = c.tasks.get(&name).await.unwrap();
            if running_at.is_none()
                && matches!(t.status.phase, TaskPhase::Running | TaskPhase::Succeeded)
            {
                running_at = Some(start.elapsed());
            }
            if t.status.phase == TaskPhase::Succeeded {
                break;
            }
            assert!(!t.status.phase.is_terminal(), "{:?}", t.status);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_done.push(start.elapsed().as_secs_f64() * 1000.0);
        to_running.push(running_at.unwrap().as_secs_f64() * 1000.0);
    }

    for i in 0..20 {
        c.run(
            Task::test(&format!("sleep-{i}")).command(&["sleep", "600"]),
            alloc("", None),
        )
        .await;
    }
    for i in 0..20 {
        c.wait_phase(
            &format!("sleep-{i}"),
            TaskPhase::Running,
            Duration::from_secs(120),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_rss = rss_kib();

    println!();
    summary("docker run --rm IMAGE echo hi", docker_run);
    summary("agent: created+bound -> Running (echo hi)", to_running);
    summary("agent: created+bound -> Succeeded (echo hi)", to_done);
    println!(
        "resident memory (in-process server + agent): idle {:.1} MiB, 20 running tasks {:.1} MiB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    // Cluster's Drop removes the containers.
}
