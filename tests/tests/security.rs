//! Security of the whole system with the real binary (issue 9): the quick start needs no
//! token flags, people manage only their own tasks, users' privileged tasks and host mounts
//! are refused unless allowed, node credentials reach only their own node, the agent's
//! endpoint is closed, revoked tokens stop at once, and private tasks stay private.
//!
//! Tests that run containers need Docker (see `docker_ready`); the others need only the
//! binary (`cargo build -p kohakuriver`).

use std::time::Duration;

use kohakuriver_api::Node;
use kohakuriver_client::{Client, ClientOptions};
use kohakuriver_tests::{
    AgentOptions, Cluster, ServerOptions, binary, docker_ready, free_port, http_get, http_get_auth,
};

const T: Duration = Duration::from_secs(60);

/// A client as `token`, for requests the CLI cannot make (a node's status write).
fn client_as(c: &Cluster, token: &str) -> Client {
    let options = ClientOptions {
        token: Some(token.to_string()),
        ca_pem: None,
        ..Default::default()
    };
    Client::with_options(c.url(), options).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The README's quick start: `kohakuriver up …&`, then `kohakuriver task submit …` with no
/// token flag and no --server: `up` logged this machine's CLI in as admin.
#[test]
fn quick_start_needs_no_token_flags() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::up("quick");
    let node = c.up_node().to_string();
    let banner = c
        .server_proc()
        .wait_stdout("Stop with Ctrl-C", Duration::from_secs(30));
    assert!(banner.contains("admin.token"), "{banner}");
    assert!(
        banner.contains(&c.config_path().display().to_string()) && banner.contains("admin"),
        "the banner says the CLI config was written: {banner}"
    );
    let run = c.kr_plain(&[
        "task",
        "submit",
        "-t",
        &node,
        "-w",
        "--",
        "echo",
        "Hello World",
    ]);
    run.code(0);
    let id = run.stdout.trim();
    assert_eq!(
        c.kr_plain(&["task", "logs", id]).ok().stdout,
        "Hello World\n"
    );
    let me = c.kr_plain(&["whoami"]);
    me.ok().stdout_has("role:    admin");
    c.kr_plain(&["task", "status", id])
        .ok()
        .stdout_has("Owner:          admin");

    // A restart keeps the config, which still works.
    let before = std::fs::read_to_string(c.config_path()).unwrap();
    c.restart_server();
    assert_eq!(std::fs::read_to_string(c.config_path()).unwrap(), before);
    c.kr_plain(&["task", "list"]).ok().stdout_has(id);
}

/// `up` listening on every address runs with authentication on, so anonymous callers are
/// refused while the machine's CLI works.
#[test]
fn up_on_a_non_loopback_address_runs_with_auth() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::up_with(
        "wide",
        ServerOptions {
            listen_ip: "0.0.0.0".into(),
            ..ServerOptions::default()
        },
        AgentOptions::default(),
    );
    let anonymous = http_get(&format!("{}/apis/kohakuriver/v1/tasks", c.url())).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let node = c.up_node().to_string();
    c.kr_plain(&["task", "submit", "-t", &node, "-w", "--", "true"])
        .code(0);
}

/// `--insecure-no-auth` is refused on an address other machines reach, saying why.
#[test]
fn insecure_no_auth_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "server",
        "--insecure-no-auth",
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [(
        "KOHAKURIVER_CONFIG".to_string(),
        dir.path().join("config").display().to_string(),
    )];
    let run = kohakuriver_tests::Run::exec_with(binary(), &args, &env, T);
    run.code(1)
        .stderr_has("--insecure-no-auth")
        .stderr_has("loopback");
}

#[test]
fn alice_cannot_kill_bobs_task_but_can_kill_her_own() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::up("owners");
    let node = c.up_node().to_string();
    let alice = c.create_token("alice", "user");
    let bob = c.create_token("bob", "user");
    let submit = |token: &str| {
        let run = c.kr_as(
            token,
            &["task", "submit", "-t", &node, "--", "sleep", "300"],
        );
        run.ok();
        run.stdout.trim().to_string()
    };
    let bobs = submit(&bob);
    c.wait_phase(&bobs, &["Running"], T);

    let run = c.kr_as(&alice, &["task", "kill", &bobs]);
    run.code(1);
    run.stderr_has(&format!(
        "user \"alice\" may not kill task {bobs} owned by \"bob\""
    ));
    assert!(!run.stderr.contains("hint: log in"), "{}", run.stderr);
    assert_eq!(c.task(&bobs)["spec"]["state"], "Running");
    assert_eq!(c.task(&bobs)["status"]["phase"], "Running");

    let hers = submit(&alice);
    c.wait_phase(&hers, &["Running"], T);
    c.kr_as(&alice, &["task", "kill", &hers]).ok();
    c.wait_phase(&hers, &["Killed"], T);
    // Bob kills his own; an operator could too.
    c.kr_as(&bob, &["task", "kill", &bobs]).ok();
    c.wait_phase(&bobs, &["Killed"], T);
}

#[test]
fn users_privileged_tasks_and_host_mounts_are_refused_naming_the_field() {
    let c = Cluster::start();
    let alice = c.create_token("alice", "user");
    let run = c.kr_as(&alice, &["task", "submit", "--privileged", "--", "true"]);
    run.code(1)
        .stderr_has("spec.privileged")
        .stderr_has("user \"alice\"");
    let run = c.kr_as(
        &alice,
        &["task", "submit", "--mount", "/:/host", "--", "true"],
    );
    run.code(1)
        .stderr_has("spec.mounts[0]")
        .stderr_has("\"/\"")
        .stderr_has("user \"alice\"");
    assert!(
        run.stderr.contains("403") || run.stderr.contains("may not"),
        "{}",
        run.stderr
    );
    // Nothing was stored.
    assert_eq!(c.kr(&["get", "tasks", "-o", "name"]).stdout, "");
    // An operator may do both (the default --privileged-for is operator).
    let ops = c.create_token("olga", "operator");
    c.kr_as(
        &ops,
        &[
            "task",
            "submit",
            "--privileged",
            "--mount",
            "/:/host",
            "--",
            "true",
        ],
    )
    .ok();
}

#[test]
fn allowed_prefixes_work_for_users_and_admins_mount_anything() {
    if !docker_ready() {
        return;
    }
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("mine.txt"), "shared").unwrap();
    let c = Cluster::up_with(
        "prefix",
        ServerOptions {
            extra_args: vec![
                "--user-mount-prefixes".into(),
                allowed.path().display().to_string(),
            ],
            ..ServerOptions::default()
        },
        AgentOptions::default(),
    );
    let node = c.up_node().to_string();
    let alice = c.create_token("alice", "user");
    let mount = format!("{}:/data:ro", allowed.path().display());
    let run = c.kr_as(
        &alice,
        &[
            "task",
            "submit",
            "-t",
            &node,
            "--mount",
            &mount,
            "-w",
            "--",
            "cat",
            "/data/mine.txt",
        ],
    );
    run.code(0);
    assert_eq!(
        c.kr_as(&alice, &["task", "logs", run.stdout.trim()])
            .ok()
            .stdout,
        "shared"
    );
    // A path beside the prefix is not under it.
    let beside = format!("{}-other:/data", allowed.path().display());
    c.kr_as(
        &alice,
        &["task", "submit", "--mount", &beside, "--", "true"],
    )
    .code(1)
    .stderr_has("spec.mounts[0]");

    // The seed's `--mount /data:/data` as the admin, with a temp dir for /data.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("sample.bin"), "x").unwrap();
    let mount = format!("{}:/data", data.path().display());
    let run = c.kr(&[
        "task", "submit", "-t", &node, "--mount", &mount, "-w", "--", "ls", "/data",
    ]);
    run.code(0);
    assert_eq!(
        c.kr(&["task", "logs", run.stdout.trim()]).ok().stdout,
        "sample.bin\n"
    );
}

#[test]
fn a_node_credential_reaches_only_its_own_node() {
    let c = Cluster::start();
    let token_a = c.create_token("node-a", "node");
    let token_b = c.create_token("node-b", "node");
    let rt = runtime();
    // Each node registers itself.
    for (name, token) in [("node-a", &token_a), ("node-b", &token_b)] {
        let nodes = client_as(&c, token).api::<Node>();
        let node = Node::test(name).cores(4);
        rt.block_on(nodes.create(&node)).unwrap();
        rt.block_on(nodes.replace_status(&node)).unwrap();
    }
    // Node A may not write node B, through the status subresource or the spec.
    let nodes_a = client_as(&c, &token_a).api::<Node>();
    let e = rt.block_on(nodes_a.get("node-b")).unwrap_err();
    assert_eq!(e.status().map(|s| s.code), Some(403), "{e}");
    let admin = client_as(&c, &c.admin_token()).api::<Node>();
    let mut b = rt.block_on(admin.get("node-b")).unwrap();
    b.status.capacity.cpu = 512;
    let e = rt.block_on(nodes_a.replace_status(&b)).unwrap_err();
    let status = e.status().expect("a Status answer");
    assert_eq!(status.code, 403, "{e}");
    assert!(
        status.message.contains("\"node-a\"") && status.message.contains("node-b"),
        "{e}"
    );
    let run = c.kr_as(&token_a, &["node", "cordon", "node-b"]);
    run.code(1).stderr_has("node \"node-a\"");
    assert_ne!(
        c.node("node-b").unwrap()["spec"]["unschedulable"].as_bool(),
        Some(true)
    );
    // Nor create a task.
    c.kr_as(&token_a, &["task", "submit", "--", "true"])
        .code(1)
        .stderr_has("node \"node-a\" may not create");
    // Its own node it may write.
    let mut a = rt.block_on(nodes_a.get("node-a")).unwrap();
    a.status.capacity.cpu = 8;
    a.status.allocatable.cpu = 8;
    rt.block_on(nodes_a.replace_status(&a)).unwrap();
}

#[test]
fn the_agent_endpoint_needs_the_servers_credential() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::start();
    let node = c.add_agent("closed");
    let id = c.submit(&["-t", &node, "--", "echo", "through the proxy"]);
    c.wait_phase(&id, &["Succeeded"], T);
    let uid = c.task(&id)["metadata"]["uid"].as_str().unwrap().to_string();
    let port = c.agent_port(&node);
    let url = format!("http://127.0.0.1:{port}/v1/tasks/{id}/log?uid={uid}&stream=stdout");
    let direct = http_get(&url).unwrap();
    assert_eq!(direct.status, 401, "{}", direct.text());
    // Any token of the server is not the agent's secret.
    let admin = http_get_auth(&url, Some(&c.admin_token())).unwrap();
    assert_eq!(admin.status, 401, "{}", admin.text());
    // The server's proxy has it.
    assert_eq!(
        c.kr(&["task", "logs", &id]).ok().stdout,
        "through the proxy\n"
    );
}

#[test]
fn a_revoked_token_is_refused_on_its_next_request() {
    let c = Cluster::start();
    let carol = c.create_token("carol", "user");
    c.kr_as(&carol, &["whoami"])
        .ok()
        .stdout_has("name:    carol");
    c.kr(&["token", "list"]).ok().stdout_has("carol");
    c.kr(&["token", "revoke", "carol"])
        .ok()
        .stdout_has("revoked");
    let run = c.kr_as(&carol, &["whoami"]);
    run.code(1)
        .stderr_has("revoked")
        .stderr_has("kohakuriver login --server");
    assert!(!c.kr(&["token", "list"]).stdout.contains("carol"));
}

#[test]
fn mine_lists_only_yours_and_private_tasks_hide_others() {
    for private in [false, true] {
        let c = Cluster::start_with(ServerOptions {
            extra_args: if private {
                vec!["--private-tasks".into()]
            } else {
                Vec::new()
            },
            ..ServerOptions::default()
        });
        let alice = c.create_token("alice", "user");
        let bob = c.create_token("bob", "user");
        let hers = c
            .kr_as(
                &alice,
                &["task", "submit", "--name", "from-alice", "--", "true"],
            )
            .ok()
            .stdout
            .clone();
        assert_eq!(hers, "from-alice\n");
        c.kr_as(
            &bob,
            &["task", "submit", "--name", "from-bob", "--", "true"],
        )
        .ok();
        let mine = c.kr_as(&alice, &["task", "list", "--mine", "-o", "name"]);
        assert_eq!(mine.ok().stdout, "task/from-alice\n", "private {private}");
        let all = c.kr_as(&alice, &["get", "tasks", "-o", "name"]);
        let bobs = c.kr_as(&alice, &["get", "task", "from-bob"]);
        if private {
            assert_eq!(all.ok().stdout, "task/from-alice\n");
            bobs.code(1).stderr_has("private");
        } else {
            assert_eq!(all.ok().stdout, "task/from-alice\ntask/from-bob\n");
            bobs.ok();
        }
        // Operators and admins see everything either way.
        assert_eq!(
            c.kr(&["get", "tasks", "-o", "name"]).ok().stdout,
            "task/from-alice\ntask/from-bob\n"
        );
    }
}
