//! The write path under load: task creates from 16 clients through real HTTP on a durable
//! database file, alone and while 4 clients list 10,000 tasks in a loop.
//!
//! Each run starts a fresh server (auth off, `--sync full` unless `KR_BENCH_SYNC=normal`)
//! on a database file, stores the tasks the listers read, then measures creates alone and
//! creates beside the listers, in that order, on the same server. It prints creates/s and
//! the create latency's p50, p99 and max for each, and the listers' lists/s.
//!
//! Run: `cargo bench -p kohakuriver-apiserver --bench writes`
//! Knobs: `KR_BENCH_CREATES` per measurement (default 8,000), `KR_BENCH_CLIENTS` writers
//! (default 16), `KR_BENCH_LISTERS` (default 4), `KR_BENCH_LISTED` tasks stored before the
//! measurements (default 10,000), `KR_BENCH_ROUNDS` (default 3), `KR_BENCH_SYNC` (`full`,
//! the default, or `normal`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kohakuriver_apiserver::{Config, SyncMode, serve};
use tokio_util::sync::CancellationToken;

fn main() {
    support::run(bench());
}

fn sync_mode() -> SyncMode {
    match std::env::var("KR_BENCH_SYNC").as_deref() {
        Err(_) | Ok("full") => SyncMode::Full,
        Ok("normal") => SyncMode::Normal,
        Ok(other) => panic!("KR_BENCH_SYNC={other}: give full or normal"),
    }
}

/// A server on 127.0.0.1:0 keeping its database in `dir`, on a runtime of its own (as a
/// server runs in its own process), so the clients' work never holds its worker threads;
/// its URL and its stopper.
async fn start(dir: &std::path::Path) -> (String, CancellationToken) {
    let config = Config {
        sync: sync_mode(),
        db_path: Some(dir.join("bench.db")),
        ..Config::insecure()
    };
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", std_listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("server runtime")
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let _ = serve(listener, config, stopper).await;
            });
    });
    let http = kohakuriver_tls::http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, stop)
}

/// Creates `creates` tasks named `tag-N` from `clients` concurrent clients; answers
/// creates/s and the sorted latencies.
async fn create(url: &str, creates: usize, clients: usize, tag: &str) -> (f64, Vec<Duration>) {
    support::create_tasks(url, None, creates, clients, tag).await
}

/// Lists every task from each of `listers` clients in a loop until `stop`; answers how
/// many lists completed, and checks each holds at least `at_least` items.
fn list_until(
    url: &str,
    listers: usize,
    at_least: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..listers)
        .map(|_| {
            let url = url.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = kohakuriver_tls::http_client();
                let mut lists = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = http
                        .get(format!("{url}/apis/kohakuriver/v1/tasks"))
                        .send()
                        .await
                        .expect("list")
                        .bytes()
                        .await
                        .expect("a list");
                    // Counted without building the items: the client's parse is not what
                    // this measures.
                    let list: Items = serde_json::from_slice(&body).expect("a list");
                    let items = list.items.len();
                    assert!(items >= at_least, "a list held {items} tasks");
                    lists += 1;
                }
                lists
            })
        })
        .collect()
}

/// A list's items, each skipped over.
#[derive(serde::Deserialize)]
struct Items {
    items: Vec<serde::de::IgnoredAny>,
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, rate: f64, lat: &[Duration]) -> String {
    format!(
        "{what}: {rate:>7.0} creates/s  p50 {}  p99 {}  max {}",
        ms(p(lat, 0.5)),
        ms(p(lat, 0.99)),
        ms(lat[lat.len() - 1])
    )
}

async fn bench() {
    let creates = support::env("KR_BENCH_CREATES", 8000);
    let clients = support::env("KR_BENCH_CLIENTS", 16);
    let listers = support::env("KR_BENCH_LISTERS", 4);
    let listed = support::env("KR_BENCH_LISTED", 10_000);
    let rounds = support::env("KR_BENCH_ROUNDS", 3);
    println!(
        "task creates through HTTP, {clients} clients, {creates} creates per measurement, database file with synchronous={}; listers: {listers} clients listing all tasks ({listed}+ stored)",
        sync_mode().pragma()
    );
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (url, stop) = start(dir.path()).await;
        create(&url, listed, clients, "listed").await;
        let (rate_alone, lat_alone) = create(&url, creates, clients, &format!("alone{r}")).await;
        let listing = Arc::new(AtomicBool::new(false));
        let lists = Arc::new(AtomicUsize::new(0));
        let handles = list_until(&url, listers, listed, listing.clone());
        let started = Instant::now();
        let (rate_beside, lat_beside) = create(&url, creates, clients, &format!("beside{r}")).await;
        listing.store(true, Ordering::Relaxed);
        for h in handles {
            lists.fetch_add(h.await.unwrap(), Ordering::Relaxed);
        }
        let lists_per_s = lists.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        println!(
            "round {r}: {}",
            line("writes alone     ", rate_alone, &lat_alone)
        );
        println!(
            "round {r}: {}  ({lists_per_s:.1} lists/s)  throughput {:.0} % of alone",
            line("writes + listers ", rate_beside, &lat_beside),
            rate_beside / rate_alone * 100.0
        );
        alone.push(rate_alone);
        beside.push(rate_beside);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut alone), median(&mut beside));
    println!(
        "median: writes alone {a:.0}/s, with listers {b:.0}/s ({:.0} %)",
        b / a * 100.0
    );
}
