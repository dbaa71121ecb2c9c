//! Real-Docker tests of log capture under the engine's log rotation: large and fast output is
//! captured byte-exact whatever the daemon's `log-opts`, across an agent restart, and output
//! the engine rotated away while the agent was down is reported, never hidden. They fail
//! with a clear message when Docker is not usable, unless `KOHAKURIVER_SKIP_DOCKER_TESTS=1`.

mod support;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_node_agent::container_config::LogLimits;
use support::{Cluster, Options, alloc, docker_inspect, wait_until};

fn sh(name: &str, script: &str) -> Task {
    Task::test(name).command(&["sh", "-c", script])
}

/// The rotation of this machine's `daemon.json` (10m × 3), which lost 83 % of a 200 MB log.
fn daemon_like_rotation() -> Options {
    Options {
        log_limits: Some(LogLimits {
            max_size: 10_000_000,
            max_file: 3,
        }),
        ..Default::default()
    }
}

/// A shell line that sets `l` to `text` repeated 64 times (1024 bytes for 16).
fn long_line(text: &str) -> String {
    format!("l={text}; l=$l$l; l=$l$l; l=$l$l; l=$l$l; l=$l$l; l=$l$l")
}

/// Checks that the file at `path` holds exactly `total` bytes, of which the `len` bytes
/// from offset `after` are `line` repeated (the last copy cut), comparing every byte
/// without holding the file in memory.
fn assert_repeats(path: &Path, total: u64, after: u64, line: &[u8], len: u64) {
    let mut file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    assert_eq!(size, total, "{} holds {size} bytes", path.display());
    std::io::copy(&mut (&mut file).take(after), &mut std::io::sink()).unwrap();
    let mut file = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = offset + i as u64;
            let want = line[(at % line.len() as u64) as usize];
            assert!(
                b == want,
                "{} differs at byte {}: {b:#04x} instead of {want:#04x}",
                path.display(),
                after + at
            );
        }
        offset += n as u64;
    }
}

fn repeated(text: &str, times: usize) -> Vec<u8> {
    let mut line = text.repeat(times).into_bytes();
    line.push(b'\n');
    line
}

fn logs_incomplete(t: &Task) -> Option<String> {
    t.status
        .conditions
        .iter()
        .find(|c| c.type_ == "LogsIncomplete")
        .map(|c| c.message.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_of_stdout_is_captured_byte_exact_under_rotation() {
    if !support::docker_ready() {
        return;
    }
    let started = Instant::now();
    let c = Cluster::start("gig", daemon_like_rotation()).await;
    let gig = support::unique_name("gig");
    let script = format!(
        "{}; yes $l | head -c 1000000000",
        long_line("0123456789abcdef")
    );
    let t = c.run(sh(&gig, &script), alloc("0", None)).await;
    let done = c
        .wait_phase(&gig, TaskPhase::Succeeded, Duration::from_secs(600))
        .await;
    assert_eq!(logs_incomplete(&done), None, "nothing was lost");
    wait_until(Duration::from_secs(60), "capture final", || {
        c.log_file(&t, "final").exists()
    })
    .await;
    assert_repeats(
        &c.log_file(&t, "stdout"),
        1_000_000_000,
        0,
        &repeated("0123456789abcdef", 64),
        1_000_000_000,
    );
    assert_eq!(
        std::fs::metadata(c.log_file(&t, "stderr")).unwrap().len(),
        0
    );
    eprintln!("1 GB captured and checked in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_and_stderr_at_full_speed_are_each_byte_exact_under_rotation() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("mix", daemon_like_rotation()).await;
    let mix = support::unique_name("mix");
    // Both streams written at once, as fast as the container can: 60 MB each, in 100-byte
    // lines, far beyond what 10m × 3 of json keeps.
    let script = "o=$(printf '%099d' 0 | tr 0 o); e=$(printf '%099d' 0 | tr 0 e); \
                  yes $o | head -c 60000000 & yes $e | head -c 60000000 >&2; wait";
    let t = c.run(sh(&mix, script), alloc("0", None)).await;
    let done = c
        .wait_phase(&mix, TaskPhase::Succeeded, Duration::from_secs(300))
        .await;
    assert_eq!(logs_incomplete(&done), None, "nothing was lost");
    wait_until(Duration::from_secs(60), "capture final", || {
        c.log_file(&t, "final").exists()
    })
    .await;
    let (out, err) = (c.log_file(&t, "stdout"), c.log_file(&t, "stderr"));
    assert_repeats(&out, 60_000_000, 0, &repeated("o", 99), 60_000_000);
    assert_repeats(&err, 60_000_000, 0, &repeated("e", 99), 60_000_000);
}

/// A script writing `first` bytes of a's, then waiting for `/go`, then `second` bytes of
/// b's, in 1024-byte lines.
fn two_parts(first: u64, second: u64) -> String {
    format!(
        "{}; a=$l; {}; b=$l; yes $a | head -c {first}; \
         while [ ! -e /go ]; do sleep 0.05; done; yes $b | head -c {second}",
        long_line("aaaaaaaaaaaaaaaa"),
        long_line("bbbbbbbbbbbbbbbb")
    )
}

/// Lets the task's container go on to its second part.
fn go(name: &str) {
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            &format!("kohakuriver-task-{name}"),
            "sh",
            "-c",
            ": > /go",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restart_during_a_large_output_still_yields_all_of_it() {
    if !support::docker_ready() {
        return;
    }
    // The agent's default limits (256 MiB × 4), on an engine whose daemon rotates at
    // 10m × 3.
    let mut c = Cluster::start("restartbig", Options::default()).await;
    let rbig = support::unique_name("rbig");
    let (first, second) = (50_000_000u64, 250_000_000u64);
    let t = c
        .run(sh(&rbig, &two_parts(first, second)), alloc("0", None))
        .await;
    let stdout = c.log_file(&t, "stdout");
    wait_until(Duration::from_secs(120), "the first part captured", || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.len() >= first)
    })
    .await;
    c.stop_agent().await;
    // The second part is written while no agent listens.
    go(&rbig);
    wait_until(Duration::from_secs(120), "more written while down", || {
        docker_inspect(&rbig).is_some_and(|v| v["State"]["Status"] == "exited")
    })
    .await;
    c.start_agent().await;
    let done = c
        .wait_phase(&rbig, TaskPhase::Succeeded, Duration::from_secs(300))
        .await;
    assert_eq!(logs_incomplete(&done), None, "nothing was lost");
    wait_until(Duration::from_secs(120), "capture final", || {
        c.log_file(&t, "final").exists()
    })
    .await;
    let (a, b) = (
        repeated("aaaaaaaaaaaaaaaa", 64),
        repeated("bbbbbbbbbbbbbbbb", 64),
    );
    assert_repeats(&stdout, first + second, 0, &a, first);
    assert_repeats(&stdout, first + second, first, &b, second);
}

#[tokio::test(flavor = "multi_thread")]
async fn output_rotated_away_while_the_agent_was_down_is_reported() {
    if !support::docker_ready() {
        return;
    }
    // Limits far too small for what the task writes while the agent is down.
    let mut c = Cluster::start(
        "lost",
        Options {
            log_limits: Some(LogLimits {
                max_size: 1_000_000,
                max_file: 2,
            }),
            ..Default::default()
        },
    )
    .await;
    let lost = support::unique_name("lost");
    let t = c
        .run(sh(&lost, &two_parts(10_000, 20_000_000)), alloc("0", None))
        .await;
    let stdout = c.log_file(&t, "stdout");
    wait_until(Duration::from_secs(60), "the first part captured", || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.len() >= 10_000)
    })
    .await;
    c.stop_agent().await;
    go(&lost);
    wait_until(Duration::from_secs(60), "written while down", || {
        docker_inspect(&lost).is_some_and(|v| v["State"]["Status"] == "exited")
    })
    .await;
    c.start_agent().await;
    let done = c
        .wait_phase(&lost, TaskPhase::Succeeded, Duration::from_secs(60))
        .await;
    let message = logs_incomplete(&done).expect("condition LogsIncomplete");
    assert!(message.contains("may be missing"), "{message}");
    assert!(message.contains("--log-max-size"), "{message}");
    assert!(
        std::fs::metadata(&stdout).unwrap().len() < 20_010_000,
        "the capture is indeed short"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_finished_task_removes_its_captured_logs() {
    if !support::docker_ready() {
        return;
    }
    let c = Cluster::start("dellogs", Options::default()).await;
    let dellogs = support::unique_name("dellogs");
    let t = c.run(sh(&dellogs, "echo hi"), alloc("0", None)).await;
    c.wait_phase(&dellogs, TaskPhase::Succeeded, Duration::from_secs(60))
        .await;
    let dir = c.log_file(&t, "stdout").parent().unwrap().to_path_buf();
    wait_until(Duration::from_secs(60), "capture final", || {
        dir.join("final").exists()
    })
    .await;
    assert_eq!(std::fs::read_to_string(dir.join("stdout")).unwrap(), "hi\n");
    c.tasks.delete(&dellogs).await.unwrap();
    wait_until(Duration::from_secs(60), "log directory removed", || {
        !dir.exists()
    })
    .await;
}
