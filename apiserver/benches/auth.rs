//! What authentication costs: task creates per second through real HTTP with auth on
//! (every request carries a user token that is checked and authorized) against auth off,
//! in the same run, alternating rounds so both see the same machine.
//!
//! Run: `cargo bench -p kohakuriver-apiserver --bench auth`
//! Knobs: `KR_BENCH_CREATES` per round (default 4,000), `KR_BENCH_CLIENTS` (default 16),
//! `KR_BENCH_ROUNDS` (default 3), `KR_BENCH_RATE_LIMIT` (the auth-on server's per-identity
//! rate, default 0 = off: set it far above the load, e.g. 1000000, to measure what the
//! limiter's bookkeeping costs), `KR_BENCH_SYNC` (`full` or `normal`: both servers keep
//! a database file in a temp dir with that `--sync` mode; unset, they keep it in memory,
//! where the sync mode does nothing).

mod support;

use std::time::{Duration, Instant};

use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_apiserver::{AuthConfig, Config, SyncMode, generate_token, serve};
use tokio_util::sync::CancellationToken;

fn main() {
    support::run(bench());
}

/// The store's file and sync mode from `KR_BENCH_SYNC`, or `None` for in memory.
fn file_store() -> Option<SyncMode> {
    match std::env::var("KR_BENCH_SYNC").ok()?.as_str() {
        "full" => Some(SyncMode::Full),
        "normal" => Some(SyncMode::Normal),
        other => panic!("KR_BENCH_SYNC={other}: give full or normal"),
    }
}

/// A server on 127.0.0.1:0 (in-memory store, or a file in `dir` per `KR_BENCH_SYNC`); its
/// URL, the token to use, and its stopper.
async fn start(auth: bool, dir: &std::path::Path) -> (String, Option<String>, CancellationToken) {
    let token = generate_token();
    let mut config = if auth {
        Config {
            auth: AuthConfig {
                static_tokens: vec![(token.clone(), Identity::new("bench", Role::User))],
                ..AuthConfig::default()
            },
            // This measures throughput: a rate limit below the load would measure itself.
            limits: kohakuriver_apiserver::Limits {
                rate_per_second: support::env("KR_BENCH_RATE_LIMIT", 0) as u32,
                rate_burst: support::env("KR_BENCH_RATE_LIMIT", 0) as u32,
                ..Default::default()
            },
            ..Config::default()
        }
    } else {
        Config::insecure()
    };
    if let Some(sync) = file_store() {
        config.sync = sync;
        config.db_path = Some(dir.join(format!("{}.db", generate_token())));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, config, stop.clone()));
    let http = kohakuriver_tls::http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, auth.then_some(token), stop)
}

/// Creates `creates` tasks from `clients` concurrent clients; answers creates/s and the
/// sorted latencies.
async fn round(auth: bool, creates: usize, clients: usize, tag: &str) -> (f64, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (url, token, stop) = start(auth, dir.path()).await;
    let (rate, latencies) = support::create_tasks(&url, token, creates, clients, tag).await;
    stop.cancel();
    (rate, latencies)
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn bench() {
    let creates = support::env("KR_BENCH_CREATES", 4000);
    let clients = support::env("KR_BENCH_CLIENTS", 16);
    let rounds = support::env("KR_BENCH_ROUNDS", 3);
    let store = match file_store() {
        Some(sync) => format!("database file, synchronous={}", sync.pragma()),
        None => "in-memory database".to_string(),
    };
    println!("creates/s through HTTP, {creates} creates per round, {clients} clients, {store}");
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let (rate_off, lat_off) = round(false, creates, clients, &format!("off{r}")).await;
        let (rate_on, lat_on) = round(true, creates, clients, &format!("on{r}")).await;
        println!(
            "round {r}: auth off {rate_off:>7.0}/s (p99 {:?})   auth on {rate_on:>7.0}/s (p99 {:?})   on/off {:.3}",
            p(&lat_off, 0.99),
            p(&lat_on, 0.99),
            rate_on / rate_off
        );
        off.push(rate_off);
        on.push(rate_on);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_on, m_off) = (median(&mut on), median(&mut off));
    println!(
        "median: auth off {m_off:.0}/s, auth on {m_on:.0}/s: authentication costs {:.1} %",
        (1.0 - m_on / m_off) * 100.0
    );
}
