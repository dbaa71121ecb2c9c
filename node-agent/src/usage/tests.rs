//! Case tests of the usage decisions, and the sampler driven by the fake runtime and fake
//! GPUs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kohakuriver_api::meta::set_condition;
use kohakuriver_api::usage::GPU_IDLE_CONDITION;
use kohakuriver_api::{ConditionStatus, Task, TaskPhase};

use super::*;
use crate::container_config::{ContainerSpec, ImageSource, LogLimits};
use crate::fake_runtime::FakeRuntime;
use crate::gpu::FakeGpus;
use crate::runtime::{ContainerRuntime, ContainerUsage};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy() -> IdlePolicy {
    IdlePolicy {
        window: secs(600),
        percent: 5.0,
        max_gap: secs(30),
    }
}

/// Samples every `step` seconds from `from` to `to` (inclusive) at `percent`.
fn every(step: u64, from: u64, to: u64, percent: f64) -> Vec<(Duration, f64)> {
    (from..=to)
        .step_by(step as usize)
        .map(|t| (secs(t), percent))
        .collect()
}

#[test]
fn idle_gpu_cases() {
    let join = |parts: &[Vec<(Duration, f64)>]| -> VecDeque<(Duration, f64)> {
        parts.iter().flatten().copied().collect()
    };
    /// What, the samples, now (seconds), idle.
    type Case<'a> = (&'a str, VecDeque<(Duration, f64)>, u64, bool);
    let cases: &[Case] = &[
        ("no samples", join(&[]), 700, false),
        (
            "idle for the whole window",
            join(&[every(10, 0, 700, 1.0)]),
            700,
            true,
        ),
        (
            "idle, watched from exactly the window's start",
            join(&[every(10, 100, 700, 0.0)]),
            700,
            true,
        ),
        (
            "idle, but watched for 9 minutes only",
            join(&[every(10, 160, 700, 0.0)]),
            700,
            false,
        ),
        (
            "first sample just within max_gap of the start",
            join(&[every(10, 120, 700, 0.0)]),
            700,
            true,
        ),
        (
            "one busy sample inside the window",
            join(&[
                every(10, 0, 400, 1.0),
                vec![(secs(410), 50.0)],
                every(10, 420, 700, 1.0),
            ]),
            700,
            false,
        ),
        (
            "busy only before the window",
            join(&[vec![(secs(50), 90.0)], every(10, 60, 700, 1.0)]),
            700,
            true,
        ),
        (
            "exactly at the threshold is not idle",
            join(&[every(10, 0, 700, 5.0)]),
            700,
            false,
        ),
        (
            "just under the threshold is idle",
            join(&[every(10, 0, 700, 4.9)]),
            700,
            true,
        ),
        (
            "a gap wider than max_gap in the window",
            join(&[every(10, 0, 300, 0.0), every(10, 340, 700, 0.0)]),
            700,
            false,
        ),
        (
            "last sample too old",
            join(&[every(10, 0, 650, 0.0)]),
            700,
            false,
        ),
        (
            "younger than the window",
            join(&[every(10, 0, 500, 0.0)]),
            500,
            false,
        ),
    ];
    for (what, samples, now, want) in cases {
        assert_eq!(idle_gpu(samples, secs(*now), &policy()), *want, "{what}");
    }
}

fn with_idle(status: Option<ConditionStatus>) -> Task {
    let mut t = Task::test("t").bound("n1", "0", &[0]);
    if let Some(status) = status {
        set_condition(
            &mut t.status.conditions,
            GPU_IDLE_CONDITION,
            status,
            Some("x"),
            None,
            None,
            chrono::Utc::now(),
        );
    }
    t
}

#[test]
fn idle_condition_changes() {
    use ConditionStatus::{False, True};
    let cases = [
        (None, true, Some(True)),
        (None, false, None),
        (Some(True), true, None),
        (Some(True), false, Some(False)),
        (Some(False), true, Some(True)),
        (Some(False), false, None),
    ];
    for (now, idle, want) in cases {
        assert_eq!(
            idle_condition_change(&with_idle(now), idle),
            want,
            "condition {now:?}, idle {idle}"
        );
    }
}

#[test]
fn cpu_millicores_cases() {
    let cases = [
        ("first sample", None, (5_000_000_000, secs(10)), 0),
        (
            "one core for 10 s",
            Some((0, secs(0))),
            (10_000_000_000, secs(10)),
            1000,
        ),
        (
            "a quarter core",
            Some((1_000_000_000, secs(10))),
            (3_500_000_000, secs(20)),
            250,
        ),
        (
            "three and a half cores",
            Some((0, secs(0))),
            (7_000_000_000, secs(2)),
            3500,
        ),
        ("idle", Some((42, secs(0))), (42, secs(10)), 0),
        (
            "counter went back (restarted)",
            Some((9_000, secs(0))),
            (10, secs(10)),
            0,
        ),
        ("no time passed", Some((0, secs(5))), (1_000, secs(5)), 0),
    ];
    for (what, previous, now, want) in cases {
        assert_eq!(cpu_millicores(previous, now), want, "{what}");
    }
}

#[test]
fn memory_without_cache_cases() {
    let stats = |pairs: &[(&str, u64)]| -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    let cases = [
        ("no stats", 1000, None, 1000),
        (
            "cgroup v1",
            1000,
            Some(stats(&[("total_inactive_file", 300), ("cache", 900)])),
            700,
        ),
        (
            "cgroup v2",
            1000,
            Some(stats(&[("inactive_file", 400)])),
            600,
        ),
        (
            "v1 wins when both",
            1000,
            Some(stats(&[
                ("total_inactive_file", 100),
                ("inactive_file", 400),
            ])),
            900,
        ),
        (
            "never below zero",
            100,
            Some(stats(&[("inactive_file", 400)])),
            0,
        ),
    ];
    for (what, usage, stats, want) in cases {
        assert_eq!(memory_without_cache(usage, stats.as_ref()), want, "{what}");
    }
}

#[test]
fn task_gpu_usage_cases() {
    let readings: Vec<GpuUsage> = [(0, 10, 100), (1, 31, 200), (2, 100, 400)]
        .into_iter()
        .map(|(index, util, used)| GpuUsage {
            index,
            utilization_percent: util,
            memory_used_bytes: used,
            memory_total_bytes: 1000,
            ..Default::default()
        })
        .collect();
    /// What, the task's GPU indices, its (mean utilisation, memory in use).
    type Case<'a> = (&'a str, &'a [u32], Option<(f64, u64)>);
    let cases: &[Case] = &[
        ("no GPUs", &[], None),
        ("one", &[2], Some((100.0, 400))),
        ("mean of two, memory summed", &[0, 1], Some((20.5, 300))),
        (
            "a GPU with no reading is left out",
            &[1, 7],
            Some((31.0, 200)),
        ),
        ("none readable", &[7], None),
    ];
    for (what, indices, want) in cases {
        assert_eq!(task_gpu_usage(indices, &readings), *want, "{what}");
    }
    assert_eq!(task_gpu_usage(&[0], &[]), None, "no readings at all");
}

/// A running task `name` with container `kohakuriver-task-<name>` made in the fake, holding
/// GPUs `gpus`.
async fn running(runtime: &FakeRuntime, name: &str, gpus: &[u32]) -> Task {
    runtime.add_image("img");
    let spec = ContainerSpec {
        name: format!("kohakuriver-task-{name}"),
        image: ImageSource::Registry("img".into()),
        cmd: vec!["true".into()],
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        working_dir: "/".into(),
        binds: vec![],
        cpuset_cpus: None,
        cpuset_mems: None,
        memory_bytes: None,
        gpus: gpus.to_vec(),
        privileged: false,
        log_limits: LogLimits::default(),
    };
    let id = runtime.create(&spec).await.unwrap();
    runtime.start(&id).await.unwrap();
    let mut t = Task::test(name).bound("n1", "0", gpus);
    t.metadata.uid = Some(format!("uid-{name}"));
    t.status.container_id = Some(id);
    t
}

#[tokio::test]
async fn the_sampler_measures_running_containers_and_their_gpus() {
    let runtime = FakeRuntime::new();
    let gpus = FakeGpus::new(2);
    let board = UsageBoard::default();
    let mut sampler = UsageSampler::new(
        Arc::new(runtime.clone()),
        Arc::new(gpus.clone()),
        board.clone(),
        policy(),
    );
    let train = running(&runtime, "train", &[0, 1]).await;
    let cpu = running(&runtime, "cpu", &[]).await;
    let mut done = running(&runtime, "done", &[]).await;
    done.status.phase = TaskPhase::Succeeded;
    let mut pending = Task::test("pending");
    pending.status.phase = TaskPhase::Pending;
    let mut gone = running(&runtime, "gone", &[]).await;
    gone.status.container_id = Some("no-such-container".into());
    let tasks = vec![train, cpu, done, pending, gone];

    gpus.set(0, 80, 5 << 30);
    gpus.set(1, 40, 3 << 30);
    let set = |name: &str, cpu_s: u64, memory: u64| {
        runtime.set_usage(
            &format!("kohakuriver-task-{name}"),
            ContainerUsage {
                cpu_nanoseconds: cpu_s * 1_000_000_000,
                memory_bytes: memory,
            },
        )
    };
    set("train", 100, 2 << 30);
    set("cpu", 5, 1 << 20);
    assert!(sampler.sample_at(&tasks, secs(0)).await.is_empty());
    let first = board.get();
    assert_eq!(first.gpus.len(), 2);
    assert_eq!(first.running_containers, 3, "train, cpu and gone are alive");
    // The first sample has no rate yet; memory is there at once.
    let row = |s: &UsageSnapshot| {
        s.tasks
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}m {}B {:?} {:?}",
                    t.name,
                    t.usage.uid,
                    t.usage.cpu_millicores,
                    t.usage.memory_bytes,
                    t.usage.gpu_percent,
                    t.usage.gpu_memory_used_bytes
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row(&first),
        [
            "cpu uid-cpu 0m 1048576B None None",
            "train uid-train 0m 2147483648B Some(60.0) Some(8589934592)",
        ]
    );

    set("train", 120, 2 << 30); // 20 s of CPU in 10 s: two cores
    set("cpu", 6, 2 << 20); // a tenth of a core
    sampler.sample_at(&tasks, secs(10)).await;
    assert_eq!(
        row(&board.get()),
        [
            "cpu uid-cpu 100m 2097152B None None",
            "train uid-train 2000m 2147483648B Some(60.0) Some(8589934592)",
        ]
    );

    // A task no longer running is forgotten: no row, no stale counter.
    set("cpu", 7, 2 << 20);
    sampler.sample_at(&tasks[1..2], secs(20)).await;
    assert_eq!(row(&board.get()), ["cpu uid-cpu 100m 2097152B None None"]);
    assert_eq!(board.get().running_containers, 1);
    assert_eq!(sampler.cpu.len(), 1);
    assert!(sampler.gpu_samples.is_empty());
}

#[tokio::test]
async fn idle_gpus_are_flagged_after_the_window_and_cleared_when_used() {
    let runtime = FakeRuntime::new();
    let gpus = FakeGpus::new(1);
    let mut sampler = UsageSampler::new(
        Arc::new(runtime.clone()),
        Arc::new(gpus.clone()),
        UsageBoard::default(),
        policy(),
    );
    let mut task = running(&runtime, "idle", &[0]).await;
    gpus.set(0, 2, 1 << 30);
    let mut flagged_at = None;
    for t in (0..=700).step_by(10) {
        let changes = sampler
            .sample_at(std::slice::from_ref(&task), secs(t))
            .await;
        if let Some(change) = changes.first() {
            assert_eq!(change.status, ConditionStatus::True);
            assert_eq!(change.task.metadata.name, "idle");
            flagged_at.get_or_insert(t);
            // The write lands: the next samples see the condition and ask for nothing.
            task = with_condition(task, ConditionStatus::True);
        }
    }
    assert_eq!(
        flagged_at,
        Some(600),
        "flagged once 10 minutes were watched"
    );
    // Held at the window: the sampler keeps only what the window needs.
    assert!(sampler.gpu_samples["uid-idle"].len() <= 62);

    gpus.set(0, 70, 1 << 30);
    let changes = sampler
        .sample_at(std::slice::from_ref(&task), secs(710))
        .await;
    assert_eq!(
        changes.iter().map(|c| c.status).collect::<Vec<_>>(),
        [ConditionStatus::False]
    );
}

#[tokio::test]
async fn a_task_without_gpus_is_never_flagged() {
    let runtime = FakeRuntime::new();
    let mut sampler = UsageSampler::new(
        Arc::new(runtime.clone()),
        Arc::new(FakeGpus::new(2)),
        UsageBoard::default(),
        policy(),
    );
    let task = running(&runtime, "cpu-only", &[]).await;
    for t in (0..=1200).step_by(10) {
        assert!(
            sampler
                .sample_at(std::slice::from_ref(&task), secs(t))
                .await
                .is_empty()
        );
    }
}

fn with_condition(mut task: Task, status: ConditionStatus) -> Task {
    set_condition(
        &mut task.status.conditions,
        GPU_IDLE_CONDITION,
        status,
        Some("GPUIdle"),
        None,
        None,
        chrono::Utc::now(),
    );
    task
}
