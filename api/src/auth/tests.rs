//! Case tables for `authorize`, `check_spec`, `check_task_status` and the token format.

use super::*;
use crate::Node;

fn id(role: Role, name: &str) -> Identity {
    Identity::new(name, role)
}

fn owned(name: &str, owner: &str) -> Task {
    let mut t = Task::test(name);
    t.metadata.owner = Some(owner.to_string());
    t
}

fn on_node(mut t: Task, node: &str) -> Task {
    t.status.node = Some(node.to_string());
    t
}

/// One line per case: who, verb, target, policy → allowed?
#[test]
fn authorize_table() {
    let alice_task = owned("t1", "alice");
    let bound_a = on_node(owned("t2", "alice"), "node-a");
    let open = Policy::default();
    let private = Policy {
        private_tasks: true,
        ..Policy::default()
    };
    let viewer = id(Role::Viewer, "vic");
    let alice = id(Role::User, "alice");
    let bob = id(Role::User, "bob");
    let op = id(Role::Operator, "olga");
    let admin = id(Role::Admin, "root");
    let node_a = id(Role::Node, "node-a");
    let node_b = id(Role::Node, "node-b");
    let ctl = id(Role::Controllers, "controllers");
    let join = id(Role::Join, "rack-1");
    let scraper = id(Role::Metrics, "prometheus");
    use Verb::*;
    let t = Target::Task(&alice_task);
    let tb = Target::Task(&bound_a);
    let cases: Vec<(&Identity, Verb, Target<'_>, &Policy, bool)> = vec![
        // Everyone reads the server's own endpoints.
        (&viewer, Get, Target::Server, &open, true),
        (&join, Get, Target::Server, &open, true),
        (&join, Join, Target::Server, &open, true),
        (&alice, Join, Target::Server, &open, false),
        // Everyone who uses the API reads discovery; a join credential does not.
        (&viewer, Get, Target::Discovery, &open, true),
        (&node_a, Get, Target::Discovery, &open, true),
        (&ctl, Get, Target::Discovery, &open, true),
        (&admin, Get, Target::Discovery, &open, true),
        (&join, Get, Target::Discovery, &open, false),
        (&admin, Update, Target::Discovery, &open, false),
        // People and metrics credentials read the metrics; machines and joins do not.
        (&viewer, Get, Target::Metrics, &open, true),
        (&alice, Get, Target::Metrics, &private, true),
        (&admin, Get, Target::Metrics, &open, true),
        (&scraper, Get, Target::Metrics, &open, true),
        (&admin, Update, Target::Metrics, &open, false),
        (&node_a, Get, Target::Metrics, &open, false),
        (&ctl, Get, Target::Metrics, &open, false),
        (&join, Get, Target::Metrics, &open, false),
        // A metrics credential reads the metrics and what the server says about itself
        // (whoami), nothing of the cluster.
        (&scraper, Get, Target::Server, &open, true),
        (&scraper, Get, Target::Discovery, &open, false),
        (&scraper, List, Target::Tasks { node: None }, &open, false),
        (&scraper, Get, t, &open, false),
        (&scraper, Logs, t, &open, false),
        (&scraper, List, Target::Nodes, &open, false),
        (&scraper, Get, Target::TaskGroups, &open, false),
        (&scraper, ManageTokens, Target::Tokens, &open, false),
        (&scraper, Backup, Target::Store, &open, false),
        // Viewers read.
        (&viewer, List, Target::Tasks { node: None }, &open, true),
        (&viewer, Get, t, &open, true),
        (&viewer, Logs, t, &open, true),
        (&viewer, Kill, t, &open, false),
        (&viewer, Create, t, &open, false),
        (&viewer, Update, Target::Node("node-a"), &open, false),
        // Users create and manage their own.
        (&alice, Create, t, &open, true),
        (&alice, Kill, t, &open, true),
        (&alice, Delete, t, &open, true),
        (&alice, Update, t, &open, true),
        (&bob, Kill, t, &open, false),
        (&bob, Delete, t, &open, false),
        (&bob, Get, t, &open, true),
        (&bob, Get, t, &private, false),
        (&bob, Logs, t, &private, false),
        (&alice, Logs, t, &private, true),
        (&alice, UpdateStatus, t, &open, false),
        (&alice, Update, Target::Node("node-a"), &open, false),
        (&alice, ManageTokens, Target::Tokens, &open, false),
        // Operators manage any task and cordon nodes.
        (&op, Kill, t, &open, true),
        (&op, Delete, t, &private, true),
        (&op, Get, t, &private, true),
        (&op, Update, Target::Node("node-a"), &open, true),
        (&op, Delete, Target::Node("node-a"), &open, false),
        (&op, UpdateStatus, t, &open, false),
        (&op, ManageTokens, Target::Tokens, &open, false),
        (&op, Backup, Target::Store, &open, false),
        // Admins also manage tokens and nodes.
        (&admin, ManageTokens, Target::Tokens, &open, true),
        (&admin, Backup, Target::Store, &open, true),
        (&admin, ManageTokens, Target::Store, &open, false),
        (&admin, Delete, Target::Node("node-a"), &open, true),
        (
            &admin,
            NodeCredentials,
            Target::Node("node-a"),
            &open,
            false,
        ),
        // A node: its own Node, its own tasks.
        (&node_a, Create, Target::Node("node-a"), &open, true),
        (&node_a, UpdateStatus, Target::Node("node-a"), &open, true),
        (
            &node_a,
            NodeCredentials,
            Target::Node("node-a"),
            &open,
            true,
        ),
        (&node_a, Delete, Target::Node("node-a"), &open, false),
        (&node_b, UpdateStatus, Target::Node("node-a"), &open, false),
        (
            &node_b,
            NodeCredentials,
            Target::Node("node-a"),
            &open,
            false,
        ),
        (&node_a, Get, Target::Node("node-b"), &open, false),
        (
            &node_a,
            Watch,
            Target::Tasks {
                node: Some("node-a"),
            },
            &open,
            true,
        ),
        (
            &node_a,
            Watch,
            Target::Tasks {
                node: Some("node-b"),
            },
            &open,
            false,
        ),
        (&node_a, List, Target::Tasks { node: None }, &open, false),
        (&node_a, Get, tb, &open, true),
        (&node_a, UpdateStatus, tb, &open, true),
        (&node_a, RemoveFinalizer, tb, &open, true),
        (&node_a, Update, tb, &open, false),
        (&node_a, Delete, tb, &open, false),
        (&node_b, Get, tb, &open, false),
        (&node_b, UpdateStatus, tb, &open, false),
        (&node_a, Create, t, &open, false),
        (&node_a, ManageTokens, Target::Tokens, &open, false),
        (&node_a, Backup, Target::Store, &open, false),
        // The controllers read everything and write lifecycle status.
        (&ctl, Watch, Target::Tasks { node: None }, &open, true),
        (&ctl, UpdateStatus, t, &open, true),
        (&ctl, Kill, t, &open, true),
        (&ctl, Delete, t, &open, true),
        (&ctl, RemoveFinalizer, t, &open, true),
        (&ctl, UpdateStatus, Target::Node("node-a"), &open, true),
        (&ctl, Create, t, &open, false),
        (&ctl, Update, t, &open, false),
        (&ctl, ManageTokens, Target::Tokens, &open, false),
        (&ctl, Backup, Target::Store, &open, false),
        // A join credential does nothing else.
        (&join, Get, t, &open, false),
        (&join, Create, Target::Node("rack-1"), &open, false),
    ];
    for (who, verb, target, policy, want) in cases {
        let got = authorize(who, verb, &target, policy);
        assert_eq!(
            got.is_ok(),
            want,
            "{who} {verb:?} {target:?} private={}: {got:?}",
            policy.private_tasks
        );
    }
}

#[test]
fn denials_name_who_what_and_owner() {
    let t = owned("123", "alice");
    let e = authorize(
        &id(Role::User, "bob"),
        Verb::Kill,
        &Target::Task(&t),
        &Policy::default(),
    )
    .unwrap_err();
    assert!(
        e.0.starts_with("user \"bob\" may not kill task 123 owned by \"alice\""),
        "{e}"
    );
}

#[test]
fn list_scope_limits_users_under_private_tasks() {
    let private = Policy {
        private_tasks: true,
        ..Policy::default()
    };
    let alice = id(Role::User, "alice");
    assert_eq!(list_scope(&alice, &private), Some("alice"));
    assert_eq!(list_scope(&alice, &Policy::default()), None);
    assert_eq!(list_scope(&id(Role::Operator, "o"), &private), None);
}

#[test]
fn task_change_names_the_verb() {
    let t = Task::test("t");
    let with = |f: &dyn Fn(&mut Task)| {
        let mut n = t.clone();
        f(&mut n);
        task_change(&t, &n)
    };
    assert_eq!(with(&|n| n.spec.state = DesiredState::Killed), Verb::Kill);
    assert_eq!(with(&|n| n.spec.state = DesiredState::Paused), Verb::Pause);
    assert_eq!(
        with(&|n| {
            n.spec.state = DesiredState::Killed;
            n.spec.priority = 3;
        }),
        Verb::Update
    );
    assert_eq!(with(&|n| n.spec.priority = 3), Verb::Update);
    assert_eq!(with(&|_| {}), Verb::Update);
    let mut fin = t.clone();
    fin.metadata.finalizers = vec!["kohakuriver.io/container".into()];
    let mut cleared = fin.clone();
    cleared.metadata.finalizers.clear();
    assert_eq!(task_change(&fin, &cleared), Verb::RemoveFinalizer);
    assert_eq!(task_change(&cleared, &fin), Verb::Update);
    let mut resumed = t.clone();
    resumed.spec.state = DesiredState::Paused;
    assert_eq!(task_change(&resumed, &t), Verb::Resume);
}

#[test]
fn paths() {
    let cases = [
        ("/data/x", "/data", true),
        ("/data", "/data", true),
        ("/database", "/data", false),
        ("/data/../etc", "/data", false),
        ("/data/./a//b", "/data/", true),
        ("/", "/data", false),
        ("/anything", "/", true),
    ];
    for (path, prefix, want) in cases {
        assert_eq!(path_within(path, prefix), want, "{path} in {prefix}");
    }
    assert_eq!(normalize_path("/a/../../b/./c/"), "/b/c");
    assert_eq!(mount_host_path("/a:/b:ro"), "/a");
}

#[test]
fn spec_policy_table() {
    let policy = Policy {
        user_mount_prefixes: vec!["/mnt/share".into()],
        ..Policy::default()
    };
    let spec = |privileged: bool, mounts: &[&str]| TaskSpec {
        privileged,
        mounts: mounts.iter().map(|m| m.to_string()).collect(),
        ..TaskSpec::default()
    };
    let user = id(Role::User, "bob");
    let op = id(Role::Operator, "olga");
    let cases: Vec<(&Identity, TaskSpec, Option<&str>)> = vec![
        (&user, spec(false, &[]), None),
        (
            &user,
            spec(true, &[]),
            Some("spec.privileged needs role operator"),
        ),
        (&op, spec(true, &[]), None),
        (&user, spec(false, &["/mnt/share/data:/data"]), None),
        (
            &user,
            spec(false, &["/:/host"]),
            Some("host path \"/\" (spec.mounts[0])"),
        ),
        (
            &user,
            spec(false, &["/mnt/share/../../etc:/etc2"]),
            Some("host path \"/mnt/share/../../etc\""),
        ),
        (&op, spec(false, &["/:/host"]), None),
    ];
    for (who, s, want) in cases {
        let got = check_spec(who, &s, None, &policy);
        match (want, got) {
            (None, Ok(())) => {}
            (Some(w), Err(Denial(m))) => assert!(m.contains(w), "{m} lacks {w}"),
            (w, g) => panic!("{who} {s:?}: want {w:?}, got {g:?}"),
        }
    }
    // Privileged needs admin when the policy says so.
    let strict = Policy {
        privileged_for: Role::Admin,
        ..policy.clone()
    };
    assert!(check_spec(&op, &spec(true, &[]), None, &strict).is_err());
    // An unchanged dangerous field is not judged again on update.
    let old = spec(true, &["/:/host"]);
    let mut new = old.clone();
    new.priority = 5;
    assert!(check_spec(&user, &new, Some(&old), &policy).is_ok());
    new.mounts.push("/etc:/etc2".into());
    assert!(check_spec(&user, &new, Some(&old), &policy).is_err());
}

#[test]
fn transitions() {
    use TaskPhase::*;
    let legal = [
        (Pending, Assigned),
        (Pending, Failed),
        (Pending, Killed),
        (Assigned, Running),
        (Assigned, Failed),
        (Assigned, Pending),
        (Running, Paused),
        (Paused, Running),
        (Running, Succeeded),
        (Running, Lost),
        (Running, Pending),
        (Failed, Pending),
        (Lost, Lost),
        (Running, Unknown),
        (Paused, Unknown),
        (Assigned, Unknown),
        (Unknown, Running),
        (Unknown, Paused),
        (Unknown, Succeeded),
        (Unknown, Failed),
        (Unknown, Killed),
        (Unknown, Lost),
    ];
    let illegal = [
        (Lost, Running),
        (Succeeded, Running),
        (Killed, Pending),
        (Failed, Running),
        (Pending, Running),
        (Running, Assigned),
        (Succeeded, Pending),
        (Unknown, Pending),
        (Unknown, Assigned),
        (Pending, Unknown),
        (Lost, Unknown),
    ];
    for (a, b) in legal {
        assert!(legal_transition(a, b), "{a} -> {b}");
    }
    for (a, b) in illegal {
        assert!(!legal_transition(a, b), "{a} -> {b}");
    }
}

fn node() -> Node {
    Node::test("n1").cores(8).gpus(2).memory("16G")
}

fn bind(t: &Task, cpus: &str, gpus: &[u32], memory: Option<u64>) -> Task {
    let mut b = t.clone();
    b.status.phase = TaskPhase::Assigned;
    b.status.node = Some("n1".into());
    b.status.allocation = Some(Allocation {
        cpus: cpus.into(),
        numa: None,
        gpus: gpus.to_vec(),
        memory_bytes: memory,
    });
    b
}

fn refusal(r: Result<(), StatusRefusal>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(StatusRefusal::Forbidden(m)) => format!("403 {m}"),
        Err(StatusRefusal::Stale(m)) => format!("409 {m}"),
        Err(StatusRefusal::Invalid { field, message }) => format!("422 {field}: {message}"),
    }
}

#[test]
fn status_write_table() {
    let ctl = id(Role::Controllers, "controllers");
    let n1 = id(Role::Node, "n1");
    let n2 = id(Role::Node, "n2");
    let admin = id(Role::Admin, "root");
    let user = id(Role::User, "alice");
    let pending = Task::test("t").cpu(2).gpus(1).memory("1G");
    let good = bind(&pending, "2-3", &[1], Some(1_000_000_000));
    let running = {
        let mut r = good.clone();
        r.status.phase = TaskPhase::Running;
        r
    };
    let unknown = {
        let mut u = running.clone();
        u.status.phase = TaskPhase::Unknown;
        u
    };
    let lost = {
        let mut l = good.clone();
        l.status.phase = TaskPhase::Lost;
        l
    };
    let with_phase = |t: &Task, p: TaskPhase| {
        let mut n = t.clone();
        n.status.phase = p;
        n
    };
    let node = node();
    let cases: Vec<(&str, &Identity, &Task, Task, &str)> = vec![
        ("the scheduler binds", &ctl, &pending, good.clone(), "ok"),
        ("an admin may bind", &admin, &pending, good.clone(), "ok"),
        ("a node may not bind", &n1, &pending, good.clone(), "403"),
        (
            "a user may not write status",
            &user,
            &pending,
            good.clone(),
            "403",
        ),
        (
            "too few cores",
            &ctl,
            &pending,
            bind(&pending, "2", &[1], Some(1_000_000_000)),
            "422 status.allocation.cpus: 1 cores allocated",
        ),
        (
            "a core the node lacks",
            &ctl,
            &pending,
            bind(&pending, "7-8", &[1], Some(1_000_000_000)),
            "422 status.allocation.cpus: core 8 does not exist",
        ),
        (
            "a GPU the node lacks",
            &ctl,
            &pending,
            bind(&pending, "2-3", &[5], Some(1_000_000_000)),
            "422 status.allocation.gpus: GPU 5",
        ),
        (
            "no memory limit",
            &ctl,
            &pending,
            bind(&pending, "2-3", &[1], None),
            "422 status.allocation.memoryBytes",
        ),
        (
            "the node reports Running",
            &n1,
            &good,
            with_phase(&good, TaskPhase::Running),
            "ok",
        ),
        (
            "another node's report is stale (409, naming the current node)",
            &n2,
            &good,
            with_phase(&good, TaskPhase::Running),
            "409 task t is bound to node \"n1\" (binding 0) now, not to node \"n2\"",
        ),
        (
            "a node's report on a task re-queued off it is stale",
            &n1,
            &pending,
            with_phase(&pending, TaskPhase::Failed),
            "409 task t is not bound to any node",
        ),
        (
            "the controllers may not report Running",
            &ctl,
            &good,
            with_phase(&good, TaskPhase::Running),
            "403",
        ),
        (
            "the node reports Failed",
            &n1,
            &running,
            with_phase(&running, TaskPhase::Failed),
            "ok",
        ),
        (
            "the controllers mark Lost",
            &ctl,
            &running,
            with_phase(&running, TaskPhase::Lost),
            "ok",
        ),
        (
            "the controllers mark a silent node's task Unknown",
            &ctl,
            &running,
            with_phase(&running, TaskPhase::Unknown),
            "ok",
        ),
        (
            "a node may not mark its task Unknown",
            &n1,
            &running,
            with_phase(&running, TaskPhase::Unknown),
            "403",
        ),
        (
            "the node, back, reports its Unknown task Running",
            &n1,
            &unknown,
            with_phase(&running, TaskPhase::Running),
            "ok",
        ),
        (
            "the node, back, reports its Unknown task's exit",
            &n1,
            &unknown,
            with_phase(&running, TaskPhase::Failed),
            "ok",
        ),
        (
            "Lost never runs again",
            &n1,
            &lost,
            with_phase(&lost, TaskPhase::Running),
            "422 status.phase: a task cannot go from Lost to Running",
        ),
        (
            "the node may not move its task",
            &n1,
            &running,
            {
                let mut m = running.clone();
                m.status.node = Some("n2".into());
                m
            },
            "403",
        ),
    ];
    for (what, who, current, new, want) in cases {
        let target_node = new.status.node.as_ref().map(|_| &node);
        let got = refusal(check_task_status(who, current, &new, target_node));
        assert!(got.starts_with(want), "{what}: got {got:?}, want {want:?}");
    }
    // A binding to a node that does not exist.
    let got = refusal(check_task_status(&ctl, &pending, &good, None));
    assert!(got.contains("node \"n1\" does not exist"), "{got}");
}

#[test]
fn node_status_bounds() {
    let mut n = node();
    assert!(validate_node_status(&n.status).is_empty());
    n.status.capacity.cpu = 50_000_000;
    n.status.allocatable.cpu = 50_000_000;
    let fields: Vec<String> = validate_node_status(&n.status)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["status.capacity.cpu", "status.allocatable.cpu"]);
    let mut n = node();
    n.status.numa[0].cpus = (0..300)
        .map(|i| (i * 2).to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        validate_node_status(&n.status)[0].field,
        "status.numa[0].cpus"
    );
    let mut n = node();
    n.status.numa[0].cpus = "0-5000".into();
    assert!(validate_node_status(&n.status)[0].message.contains("limit"));
    // Usage: GPU readings and task entries are bounded, and a task entry names a uid.
    let usage_errors = |usage: crate::NodeUsage| {
        let mut n = node();
        n.status.usage = Some(usage);
        validate_node_status(&n.status)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
    };
    let task = |uid: &str| crate::TaskUsage {
        uid: uid.into(),
        ..Default::default()
    };
    for (what, usage, want) in [
        (
            "fine",
            crate::NodeUsage {
                gpus: vec![Default::default(); 8],
                tasks: vec![task("u1"), task("u2")],
                ..Default::default()
            },
            "",
        ),
        (
            "too many gpus",
            crate::NodeUsage {
                gpus: vec![Default::default(); MAX_NODE_GPUS + 1],
                ..Default::default()
            },
            "status.usage.gpus: 65 GPUs is more than 64",
        ),
        (
            "too many tasks",
            crate::NodeUsage {
                tasks: vec![task("u"); crate::usage::MAX_USAGE_TASKS + 1],
                ..Default::default()
            },
            "status.usage.tasks: 4097 tasks is more than the 4096 one node may report",
        ),
        (
            "empty uid",
            crate::NodeUsage {
                tasks: vec![task("u1"), task("")],
                ..Default::default()
            },
            "status.usage.tasks[1].uid: \"\" must be a task uid of 1 to 64 characters",
        ),
        (
            "long uid",
            crate::NodeUsage {
                tasks: vec![task(&"x".repeat(65))],
                ..Default::default()
            },
            "status.usage.tasks[0].uid",
        ),
    ] {
        let got = usage_errors(usage).join("; ");
        if want.is_empty() {
            assert_eq!(got, "", "{what}");
        } else {
            assert!(got.starts_with(want), "{what}: got {got:?}, want {want:?}");
        }
    }
    for (address, ok) in [
        ("http://10.0.0.5:8001", true),
        ("https://gpu-01:8001/", true),
        ("http://127.0.0.1:9/secret?", false),
        ("ftp://x:1", false),
        ("http://user@x:1", false),
    ] {
        assert_eq!(check_agent_address(address).is_ok(), ok, "{address}");
    }
}

#[test]
fn token_format() {
    let good = "krv_ab12cd34_0123456789abcdefghijABCDEFGHIJKL";
    let t = parse_token(good).unwrap();
    assert_eq!(t.id, "ab12cd34");
    assert_eq!(t.secret.len(), TOKEN_SECRET_LEN);
    for bad in [
        "",
        "krv_",
        "abc_ab12cd34_0123456789abcdefghijABCDEFGHIJ",
        "krv_AB12CD34_0123456789abcdefghijABCDEFGHIJ",
        "krv_ab12cd34_0123456789abcdefghijABCDEFGHI",
        "krv_ab12cd34_0123456789abcdefghijABCDEFGHI!",
    ] {
        assert_eq!(parse_token(bad), None, "{bad}");
    }
    assert_eq!(Role::parse("operator"), Ok(Role::Operator));
    assert!(Role::parse("root").unwrap_err().contains("viewer, user"));
    assert!(Role::Admin.at_least(Role::Operator));
    assert!(!Role::Node.at_least(Role::Viewer));
}
