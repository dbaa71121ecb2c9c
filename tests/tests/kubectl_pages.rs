//! Long lists read a page at a time: kubectl asks with `limit` (500 by default,
//! `--chunk-size`) and follows `metadata.continue`; `kohakuriver get` and `task list` do
//! the same. Every task shows exactly once. No agent is needed: the tasks stay Pending.

use std::collections::BTreeSet;
use std::time::Duration;

use kohakuriver_tests::{Cluster, Kubectl, ServerOptions};

const TASKS: usize = 1_200;

/// A server (TLS, since kubectl sends its token only over https) holding `TASKS` pending
/// tasks named `page-0000`…
fn cluster_with_many_tasks() -> Cluster {
    let c = Cluster::start_with(ServerOptions {
        tls_self_signed: true,
        // The tasks are created as fast as the server takes them.
        extra_args: vec!["--rate-limit".into(), "0".into()],
        ..Default::default()
    });
    let manifest: String = (0..TASKS)
        .map(|i| {
            format!(
                "---\napiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: page-{i:04}\nspec:\n  command: [\"true\"]\n"
            )
        })
        .collect();
    let path = c.dir().join("many.yaml");
    std::fs::write(&path, manifest).unwrap();
    c.kr_timeout(
        &["apply", "-f", &path.display().to_string()],
        Duration::from_secs(300),
    )
    .ok();
    c
}

/// The task names in `out`, one per line (as `-o name` or the first column of a table),
/// checking that none shows twice.
fn names(out: &str, skip_header: bool) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in out.lines().skip(usize::from(skip_header)) {
        let word = line.split_whitespace().next().unwrap_or_default();
        let name = word.rsplit('/').next().unwrap_or_default().to_string();
        assert!(seen.insert(name.clone()), "{name} shows twice");
    }
    seen
}

#[test]
fn long_lists_are_read_in_pages_and_show_every_task_once() {
    let c = cluster_with_many_tasks();
    let want: BTreeSet<String> = (0..TASKS).map(|i| format!("page-{i:04}")).collect();
    let k = Kubectl::admin(&c);

    // -v=6 logs each request: the server answered pages of 50, which kubectl followed.
    let run = k.run(&["get", "tasks", "--chunk-size=50", "-o", "name", "-v=6"]);
    assert_eq!(
        names(&run.ok().stdout, false),
        want,
        "kubectl --chunk-size=50 -o name"
    );
    let requests: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("GET https://") && l.contains("/tasks?"))
        .collect();
    let continued = requests.iter().filter(|l| l.contains("continue=")).count();
    assert!(
        requests.iter().all(|l| l.contains("limit=50")),
        "{requests:#?}"
    );
    assert_eq!(
        (requests.len(), continued),
        (TASKS / 50, TASKS / 50 - 1),
        "{requests:#?}"
    );

    // The default chunk size (500): a table whose header comes once.
    let out = k.run(&["get", "tasks"]).ok().stdout.clone();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("NAME")).count(),
        1,
        "{out}"
    );
    assert_eq!(names(&out, true), want, "kubectl get tasks");

    let out = c
        .kr(&["get", "tasks", "--chunk-size", "70", "-o", "name"])
        .ok()
        .stdout
        .clone();
    assert_eq!(names(&out, false), want, "kohakuriver get --chunk-size 70");

    let out = c.kr(&["task", "list"]).ok().stdout.clone();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("NAME")).count(),
        1,
        "{out}"
    );
    assert_eq!(names(&out, true), want, "kohakuriver task list");

    let run = c.kr(&["get", "tasks", "--chunk-size", "400", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), TASKS);
    assert!(
        list["metadata"].get("continue").is_none(),
        "one list document"
    );
}
