//! Task arrays (`TaskGroup`, #15) with the real binary, a real server, a real agent and real
//! Docker: the parallelism limit seen through a watch, every member printing its own index,
//! `-w` exiting with the failing member's code, deleting a group, killing one, and the
//! example manifest applied as it stands.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kohakuriver_api::{Task, TaskPhase};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Client, ClientOptions, ListParams};
use kohakuriver_tests::{Cluster, docker, docker_ready, unique_name, wait_until};

const T: Duration = Duration::from_secs(120);

/// A cluster with one agent; `None` when Docker tests are skipped.
fn cluster(prefix: &str) -> Option<Cluster> {
    if !docker_ready() {
        return None;
    }
    let mut c = Cluster::start();
    c.add_agent(prefix);
    Some(c)
}

fn admin(c: &Cluster) -> Client {
    let options = ClientOptions {
        token: Some(c.admin_token()),
        ..Default::default()
    };
    Client::with_options(c.url(), options).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The members of group `g` as stored now.
fn members(c: &Cluster, g: &str) -> Vec<serde_json::Value> {
    let list = c
        .get_json(&format!("tasks?labelSelector=kohakuriver.io%2Fgroup%3D{g}"))
        .expect("the task list");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The task containers of group `g` on this machine, running or not.
fn containers(g: &str) -> Vec<String> {
    let (ok, out, err) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=kohakuriver-task-{g}-"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(ok, "docker ps: {err}");
    out.lines().map(str::to_string).collect()
}

/// An array of 20 with parallelism 3: a watch started before the submit never sees more
/// than 3 members Running after any single event, every member prints its own index (from
/// `$(KOHAKURIVER_ARRAY_INDEX)` and from the environment), and the group's views agree.
#[test]
fn an_array_never_runs_more_than_its_parallelism() {
    let Some(c) = cluster("array") else {
        return;
    };
    let g = unique_name("arr");
    let rt = runtime();
    let client = admin(&c);
    let selector = format!("kohakuriver.io/group={g}");
    let watch = rt.spawn(async move {
        let mut events = client
            .api::<Task>()
            .watcher(ListParams::default().labels(&selector));
        let mut phases: HashMap<String, TaskPhase> = HashMap::new();
        let mut most_running = 0;
        let deadline = tokio::time::Instant::now() + T;
        while phases.len() < 20 || phases.values().any(|p| *p != TaskPhase::Succeeded) {
            let event = tokio::time::timeout_at(deadline, events.next())
                .await
                .expect("every member succeeds in time")
                .expect("the watch goes on");
            match event.expect("a watch event") {
                Event::Restarted(all) => {
                    phases = all
                        .into_iter()
                        .map(|t| (t.metadata.name, t.status.phase))
                        .collect();
                }
                Event::Applied(t) => {
                    phases.insert(t.metadata.name, t.status.phase);
                }
                Event::Deleted(t) => {
                    phases.remove(&t.metadata.name);
                }
            }
            let running = phases
                .values()
                .filter(|p| **p == TaskPhase::Running)
                .count();
            assert!(
                running <= 3,
                "{running} members running at once: {phases:?}"
            );
            most_running = most_running.max(running);
        }
        most_running
    });
    let script = "echo index $(KOHAKURIVER_ARRAY_INDEX) env $KOHAKURIVER_ARRAY_INDEX; sleep 1";
    let run = c.kr(&[
        "task", "submit", "--name", &g, "--array", "0-19%3", "-c", "0", "-w", "--", "sh", "-c",
        script,
    ]);
    run.code(0);
    assert_eq!(
        run.stdout,
        format!("{g}\n"),
        "the group's name alone on stdout"
    );
    let most_running = rt.block_on(watch).expect("the watcher");
    assert!(most_running >= 2, "the members ran one at a time");

    for i in [0, 7, 19] {
        let logs = c.kr(&["task", "logs", &g, "--index", &i.to_string()]);
        assert_eq!(logs.ok().stdout, format!("index {i} env {i}\n"));
    }
    let all = members(&c, &g);
    assert_eq!(all.len(), 20);
    for m in &all {
        let name = m["metadata"]["name"].as_str().unwrap();
        let index = name.strip_prefix(&format!("{g}-")).unwrap();
        assert_eq!(m["spec"]["env"]["KOHAKURIVER_ARRAY_INDEX"], index);
        assert_eq!(m["metadata"]["ownerReferences"][0]["name"], g.as_str());
    }
    let status = c.kr(&["task", "status", &g]);
    status.ok().stdout_has("20 (20 succeeded)");
    let listed = c.kr(&["task", "list", "--group", &g]);
    assert_eq!(listed.ok().stdout.lines().count(), 21, "{}", listed.stdout);
    c.kr(&["wait", &format!("group/{g}"), "--for=condition=Complete"])
        .ok();
    c.kr(&["get", "tg", &g, "-o", "yaml"])
        .ok()
        .stdout_has("kind: TaskGroup");
    c.kr(&["get", "taskgroups"]).ok().stdout_has(&g);
    c.kr(&["describe", "tg", &g]).ok().stdout_has("Complete");
}

/// `-w` on an array with one failing member exits with that member's exit code and names
/// it on stderr.
#[test]
fn wait_on_an_array_exits_with_the_failing_members_code() {
    let Some(c) = cluster("arrfail") else {
        return;
    };
    let g = unique_name("fail");
    let script = "if [ $(KOHAKURIVER_ARRAY_INDEX) = 2 ]; then exit 7; fi; echo fine";
    let run = c.kr(&[
        "task", "submit", "--name", &g, "--array", "0-3", "-c", "0", "-w", "--", "sh", "-c", script,
    ]);
    run.code(7);
    assert_eq!(run.stdout, format!("{g}\n"));
    assert!(run.stderr.contains(&format!("{g}-2")), "{}", run.stderr);
    let group = c.get_json(&format!("taskgroups/{g}")).unwrap();
    assert_eq!(group["status"]["counts"]["succeeded"], 3);
    assert_eq!(group["status"]["failedMembers"][0]["exitCode"], 7);
    c.kr(&["task", "status", &g])
        .ok()
        .stdout_has(&format!("{g}-2"));
}

/// Deleting a group deletes its members, and their containers are stopped and removed.
#[test]
fn deleting_a_group_leaves_no_member_and_no_container() {
    let Some(c) = cluster("arrdel") else {
        return;
    };
    let g = unique_name("del");
    let script = "trap 'exit 0' TERM; sleep 300 & wait";
    let name = c.submit(&[
        "--name", &g, "--array", "0-2", "-c", "0", "--", "sh", "-c", script,
    ]);
    assert_eq!(name, g);
    wait_until(T, "every member running", || {
        let all = members(&c, &g);
        all.len() == 3 && all.iter().all(|m| m["status"]["phase"] == "Running")
    });
    assert_eq!(containers(&g).len(), 3);
    c.kr(&["delete", "tg", &g]).ok();
    wait_until(T, "no member left", || members(&c, &g).is_empty());
    wait_until(T, "no container left", || containers(&g).is_empty());
}

/// `task kill GROUP` kills the unfinished members and creates no more.
#[test]
fn killing_a_group_stops_it() {
    let Some(c) = cluster("arrkill") else {
        return;
    };
    let g = unique_name("kill");
    let script = "trap 'exit 0' TERM; sleep 300 & wait";
    c.submit(&[
        "--name", &g, "--array", "0-5%2", "-c", "0", "--", "sh", "-c", script,
    ]);
    wait_until(T, "two members running", || {
        members(&c, &g)
            .iter()
            .filter(|m| m["status"]["phase"] == "Running")
            .count()
            == 2
    });
    c.kr(&["task", "kill", &g])
        .ok()
        .stdout_has(&format!("taskgroup/{g} kill requested"));
    wait_until(T, "the group failed, killed", || {
        let group = c.get_json(&format!("taskgroups/{g}")).unwrap();
        group["status"]["finishedAt"].is_string()
    });
    let all = members(&c, &g);
    assert_eq!(all.len(), 2, "no member created after the kill");
    assert!(all.iter().all(|m| m["status"]["phase"] == "Killed"));
    let group = c.get_json(&format!("taskgroups/{g}")).unwrap();
    assert_eq!(group["status"]["counts"]["notCreated"], 4);
}

/// `manifests/sweep-array.yaml` applies as it stands, twice (`unchanged`), and its members
/// pick their learning rates by index.
#[test]
fn the_sweep_manifest_runs() {
    let Some(c) = cluster("sweep") else {
        return;
    };
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/sweep-array.yaml");
    c.kr(&["apply", "-f", file])
        .ok()
        .stdout_has("taskgroup/sweep-lr created");
    c.kr(&["apply", "-f", file])
        .ok()
        .stdout_has("taskgroup/sweep-lr unchanged");
    c.kr_timeout(
        &[
            "wait",
            "group/sweep-lr",
            "--for=condition=Complete",
            "--timeout",
            "2m",
        ],
        T,
    )
    .ok();
    c.kr(&["task", "logs", "sweep-lr", "--index", "3"])
        .ok()
        .stdout_has("member 3 of sweep-lr: learning rate 0.003");
}

/// `--after GROUP` waits for every member of the group: after a group that succeeded the
/// task runs, and it starts only once the group has finished; after a group with a failed
/// member it ends `DependencyFailed`, naming the group.
#[test]
fn a_task_after_a_group_waits_for_every_member() {
    let Some(c) = cluster("arrdep") else {
        return;
    };
    let good = unique_name("good");
    c.submit(&[
        "--name", &good, "--array", "0-2%1", "-c", "0", "--", "sh", "-c", "sleep 1",
    ]);
    let after_good = c.submit(&["--after", &good, "-c", "0", "--", "echo", "after"]);
    c.kr(&[
        "wait",
        &format!("task/{after_good}"),
        "--for=condition=Succeeded",
        "--timeout",
        "2m",
    ])
    .ok();
    let group = c.get_json(&format!("taskgroups/{good}")).unwrap();
    let finished = group["status"]["finishedAt"].as_str().unwrap().to_string();
    let task = c.task(&after_good);
    let started = task["status"]["startedAt"].as_str().unwrap();
    assert!(
        started >= finished.as_str(),
        "started {started} before the group finished {finished}"
    );
    assert_eq!(
        task["spec"]["dependsOn"][0]["kind"], "TaskGroup",
        "--after names the group: {}",
        task["spec"]
    );

    let bad = unique_name("bad");
    c.submit(&[
        "--name", &bad, "--array", "0-1", "-c", "0", "--", "sh", "-c", "exit 3",
    ]);
    let after_bad = c.submit(&["--after", &bad, "-c", "0", "--", "echo", "never"]);
    wait_until(T, "the dependent to fail", || {
        c.phase(&after_bad) == "Failed"
    });
    let status = &c.task(&after_bad)["status"];
    assert_eq!(status["reason"], "DependencyFailed", "{status}");
    assert!(
        status["message"].as_str().unwrap().contains(&bad),
        "{status}"
    );
}
