//! Memory per stored task, for the bound in #12: at most 1 KB per task across the server
//! and the controllers. Starts `kohakuriver server --no-controllers` and a separate
//! `kohakuriver controllers` (so each process's RSS is its own), creates N tasks (no node
//! exists, so each stays Pending and the scheduler writes its `Unschedulable` status once),
//! waits until the store has seen both writes of every task, and prints each process's
//! VmRSS before and after, per task, and the server's again after one whole-list read.
//!
//! Run: `cargo bench -p kohakuriver-tests --bench memory` (KR_BENCH_TASKS=N to change N;
//! needs the binary: `cargo build -p kohakuriver`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kohakuriver_api::Task;
use kohakuriver_client::{Client, ClientOptions, ListParams};
use kohakuriver_tests::{Cluster, Proc, ServerOptions, binary};

/// Requests in flight while creating.
const CLIENTS: usize = 32;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn per_task(before: u64, after: u64, n: usize) -> String {
    format!(
        "{:.0} bytes/task",
        after.saturating_sub(before) as f64 * 1024.0 / n as f64
    )
}

fn main() {
    let n: usize = std::env::var("KR_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let options = ServerOptions {
        extra_args: vec!["--no-controllers".into(), "--sync".into(), "normal".into()],
        ..ServerOptions::default()
    };
    let c = Cluster::start_with(options);
    let token = c.create_token("bench-controllers", "controllers");
    let admin = c.admin_token();
    let args: Vec<String> = ["--server", c.url(), "--token", &token, "controllers"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut controllers = Proc::spawn(
        "controllers",
        binary(),
        &args,
        &c.dir().join("controllers.log"),
    );
    let server_pid = c.server_pid().expect("the server runs");
    let controllers_pid = controllers.pid().expect("the controllers run");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Client::with_options(
        c.url(),
        ClientOptions {
            token: Some(admin),
            ..Default::default()
        },
    )
    .unwrap();
    // Both processes settle (the controllers list an empty store) before the baseline.
    std::thread::sleep(Duration::from_secs(2));
    controllers.assert_running();
    let (server_before, controllers_before) = (rss_kib(server_pid), rss_kib(controllers_pid));

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let workers = (0..CLIENTS).map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let api = client.api::<Task>();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let task = Task::new(format!("m{i}"), vec!["true".to_string()]);
                    api.create(&task).await.expect("create");
                }
            })
        });
        futures::future::join_all(workers).await;
    });
    let created = started.elapsed();
    // Every task is written twice: its create and the scheduler's Unschedulable status.
    let deadline = Instant::now() + Duration::from_secs(900);
    let revision = |client: &Client| -> u64 {
        let params = ListParams {
            limit: Some(1),
            ..Default::default()
        };
        rt.block_on(client.api::<Task>().list(&params))
            .map_or(0, |l| l.metadata.resource_version)
    };
    while revision(&client) < 2 * n as u64 {
        assert!(
            Instant::now() < deadline,
            "the controllers did not write every task's status within 15 minutes"
        );
        controllers.assert_running();
        std::thread::sleep(Duration::from_millis(500));
    }
    let seen = started.elapsed();
    let (server_after, controllers_after) = (rss_kib(server_pid), rss_kib(controllers_pid));
    let listed = rt
        .block_on(client.api::<Task>().list(&ListParams::default()))
        .expect("a whole list")
        .items
        .len();
    let server_listed = rss_kib(server_pid);
    println!(
        "memory at {n} tasks (created in {created:.1?}, all scheduled-as-unschedulable after {seen:.1?}):"
    );
    println!(
        "  server      {} -> {}  ({})",
        mib(server_before),
        mib(server_after),
        per_task(server_before, server_after, n)
    );
    println!(
        "  controllers {} -> {}  ({})",
        mib(controllers_before),
        mib(controllers_after),
        per_task(controllers_before, controllers_after, n)
    );
    println!(
        "  together    {}",
        per_task(
            server_before + controllers_before,
            server_after + controllers_after,
            n
        )
    );
    println!(
        "  server after one whole list of {listed}: {} ({})",
        mib(server_listed),
        per_task(server_before, server_listed, n)
    );
}
