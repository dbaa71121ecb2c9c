//! Case tests of `top`'s rows, figures, join and order.

use super::*;
use kohakuriver_api::NodeUsage;

fn gpu(index: u32, util: u32, used: u64, total: u64) -> GpuUsage {
    GpuUsage {
        index,
        utilization_percent: util,
        memory_used_bytes: used,
        memory_total_bytes: total,
        ..Default::default()
    }
}

#[test]
fn node_rows() {
    let mut n = Node::test("gpu-01").cores(8).gpus(2);
    n.status.capacity.cpu = 8;
    n.status.capacity.memory_bytes = 64_000_000_000;
    assert_eq!(
        node_row(&n),
        [
            "gpu-01", UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN
        ],
        "no heartbeat with usage yet"
    );
    n.status.usage = Some(NodeUsage {
        cpu_percent: 25.0,
        memory_used_bytes: 16_000_000_000,
        gpus: vec![
            gpu(0, 90, 30_000_000_000, 80_000_000_000),
            gpu(1, 10, 10_000_000_000, 80_000_000_000),
        ],
        ..Default::default()
    });
    assert_eq!(
        node_row(&n),
        ["gpu-01", "2000m", "25%", "16G", "25%", "50%", "40G/160G"]
    );
    n.status.usage.as_mut().unwrap().gpus.clear();
    assert_eq!(node_row(&n)[5..], ["-", "-"], "no GPUs: no GPU figures");
}

#[test]
fn task_rows() {
    let t = Task::test("train")
        .cpu(4)
        .memory("8G")
        .bound("gpu-01", "0-3", &[0, 1]);
    assert_eq!(
        task_row(&t, None),
        [
            "train", "gpu-01", UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN
        ]
    );
    let usage = TaskUsage {
        uid: "u".into(),
        cpu_millicores: 3000,
        memory_bytes: 2_000_000_000,
        gpu_percent: Some(87.4),
        gpu_memory_used_bytes: Some(12_000_000_000),
    };
    assert_eq!(
        task_row(&t, Some(&usage)),
        ["train", "gpu-01", "3000m", "75%", "2G", "25%", "87%", "12G"]
    );
    let cpu_only = Task::test("sweep").cpu(2).bound("n1", "0-1", &[]);
    let usage = TaskUsage {
        uid: "v".into(),
        cpu_millicores: 300,
        memory_bytes: 1_500_000,
        ..Default::default()
    };
    assert_eq!(
        task_row(&cpu_only, Some(&usage)),
        ["sweep", "n1", "300m", "15%", "1.5M", "-", "-", "-"],
        "no memory limit and no GPUs: dashes"
    );
}

#[test]
fn figures() {
    assert_eq!(millicores(0), "0m");
    assert_eq!(percent(1.0, 0.0), "-");
    assert_eq!(percent(1.0, 3.0), "33%");
    assert_eq!(gpu_cells(&[]), ("-".to_string(), "-".to_string()));
    assert_eq!(
        gpu_cells(&[gpu(0, 3, 1_000_000_000, 16_000_000_000)]),
        ("3%".to_string(), "1G/16G".to_string())
    );
}

#[test]
fn usage_joins_by_uid_across_nodes() {
    let node = |name: &str, uids: &[&str]| {
        let mut n = Node::test(name);
        n.status.usage = Some(NodeUsage {
            tasks: uids
                .iter()
                .map(|u| TaskUsage {
                    uid: u.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        n
    };
    let nodes = vec![
        node("a", &["u1", "u2"]),
        node("b", &["u3"]),
        Node::test("c"),
    ];
    let by_uid = usage_by_uid(&nodes);
    let mut uids: Vec<&str> = by_uid.keys().copied().collect();
    uids.sort();
    assert_eq!(uids, ["u1", "u2", "u3"]);
}

#[test]
fn sorting_puts_the_largest_first_and_unknown_last() {
    let a = Task::test("a");
    let b = Task::test("b");
    let c = Task::test("c");
    let high = TaskUsage {
        cpu_millicores: 900,
        memory_bytes: 1,
        ..Default::default()
    };
    let low = TaskUsage {
        cpu_millicores: 100,
        memory_bytes: 5,
        ..Default::default()
    };
    let names = |rows: &[(&Task, Option<&TaskUsage>)]| {
        rows.iter()
            .map(|(t, _)| t.metadata.name.as_str())
            .collect::<String>()
    };
    let mut rows = vec![(&a, None), (&b, Some(&low)), (&c, Some(&high))];
    sort_tasks(&mut rows, Some(SortBy::Cpu));
    assert_eq!(names(&rows), "cba");
    sort_tasks(&mut rows, Some(SortBy::Memory));
    assert_eq!(names(&rows), "bca");
    // By name, tasks without a sample last.
    sort_tasks(&mut rows, None);
    assert_eq!(names(&rows), "bca");
}
