//! The real `kohakuriver` binary against an in-process API server.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kohakuriver_api::{Identity, Role};
use kohakuriver_apiserver::testing::{ThreadServer, spawn_server_in_thread};

/// An API server on 127.0.0.1:0 in its own runtime thread, with authentication on and
/// static tokens for an admin (the CLI's default here) and the users alice and bob; stops
/// when dropped.
struct Server {
    url: String,
    admin: String,
    alice: String,
    bob: String,
    /// Holds the CLI config of this server's CLI runs (none unless a test writes one).
    home: tempfile::TempDir,
    /// The server's thread; it stops when this is dropped.
    _server: ThreadServer,
}

/// Fixed user tokens, the same on every test server, so a test can tell whether a token
/// was sent to a server at all.
const ALICE: &str = "krv_alice000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "krv_bob00000_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

impl Server {
    fn start() -> Server {
        let admin = kohakuriver_apiserver::generate_token();
        let mut config = kohakuriver_apiserver::Config {
            // The tasks here name no image.
            default_image: Some("busybox:latest".into()),
            ..Default::default()
        };
        config.auth.static_tokens = vec![
            (admin.clone(), Identity::new("admin", Role::Admin)),
            (ALICE.to_string(), Identity::new("alice", Role::User)),
            (BOB.to_string(), Identity::new("bob", Role::User)),
        ];
        let server = spawn_server_in_thread(config);
        Server {
            url: server.url.clone(),
            admin,
            alice: ALICE.to_string(),
            bob: BOB.to_string(),
            home: tempfile::tempdir().unwrap(),
            _server: server,
        }
    }

    /// The binary, pointed at this server, as its admin.
    fn cmd(&self) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--server")
            .arg(&self.url)
            .env("KOHAKURIVER_TOKEN", &self.admin);
        cmd
    }

    /// The binary with no server and no token given, and this server's CLI config path.
    fn bare(&self) -> Command {
        let mut cmd = bin();
        cmd.env("KOHAKURIVER_CONFIG", self.config_path());
        cmd
    }

    /// The CLI config of this server's CLI runs.
    fn config_path(&self) -> PathBuf {
        self.home.path().join("kohakuriver").join("config")
    }

    /// A client for this server, as admin.
    fn client(&self) -> kohakuriver_client::Client {
        let options = kohakuriver_client::ClientOptions {
            token: Some(self.admin.clone()),
            ca_pem: None,
            ..Default::default()
        };
        kohakuriver_client::Client::with_options(&self.url, options).unwrap()
    }

    /// Runs the binary with `args`; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        output(self.cmd().args(args))
    }
}

/// The binary in an environment cleaned of the runner's KohakuRiver settings, with a CLI
/// config path that does not exist (never the user's own).
fn bin() -> Command {
    let mut cmd = Command::cargo_bin("kohakuriver").unwrap();
    for var in [
        "KOHAKURIVER_HOST",
        "KOHAKURIVER_PORT",
        "KOHAKURIVER_TOKEN",
        "KOHAKURIVER_CA",
    ] {
        cmd.env_remove(var);
    }
    cmd.env(
        "KOHAKURIVER_CONFIG",
        std::env::temp_dir().join("kohakuriver-cli-tests-no-config/config"),
    );
    cmd
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn task_yaml(name: &str, cpu: u32, labels: &str) -> String {
    format!(
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  command: [echo, hi]\n  resources: {{cpu: {cpu}}}\n"
    )
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn apply_creates_then_is_unchanged_then_configured() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &task_yaml("a", 1, ""));
    assert_eq!(
        server.run(&["apply", "-f", s(&f)]),
        (0, "task/a created\n".into(), "".into())
    );
    assert_eq!(server.run(&["apply", "-f", s(&f)]).1, "task/a unchanged\n");
    write(dir.path(), "a.yaml", &task_yaml("a", 2, ""));
    assert_eq!(server.run(&["apply", "-f", s(&f)]).1, "task/a configured\n");
}

#[test]
fn apply_reads_directories_multi_document_files_and_stdin() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let two = format!("{}---\n{}", task_yaml("b", 1, ""), task_yaml("c", 1, ""));
    write(dir.path(), "2.yaml", &two);
    write(dir.path(), "1.yml", &task_yaml("a", 1, ""));
    write(dir.path(), "README.md", "not a manifest");
    let (code, out, _) = server.run(&["apply", "-f", s(dir.path())]);
    assert_eq!(code, 0);
    assert_eq!(out, "task/a created\ntask/b created\ntask/c created\n");
    let (code, out, _) = output(
        server
            .cmd()
            .args(["apply", "-f", "-"])
            .write_stdin(task_yaml("d", 1, "")),
    );
    assert_eq!((code, out.as_str()), (0, "task/d created\n"));
}

#[test]
fn dry_run_stores_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &task_yaml("a", 1, ""));
    let (code, out, _) = server.run(&["apply", "--dry-run", "-f", s(&f)]);
    assert_eq!((code, out.as_str()), (0, "task/a created (dry run)\n"));
    let (code, _, err) = server.run(&["get", "task", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn diff_exit_codes() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &task_yaml("a", 1, ""));
    // Not there yet: a change.
    let (code, out, _) = server.run(&["diff", "-f", s(&f)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("+++ task/a (applied)") && out.contains("+  name: a"),
        "{out}"
    );
    server.run(&["apply", "-f", s(&f)]);
    assert_eq!(
        server.run(&["diff", "-f", s(&f)]),
        (0, "".into(), "".into())
    );
    write(dir.path(), "a.yaml", &task_yaml("a", 3, ""));
    let (code, out, _) = server.run(&["diff", "-f", s(&f)]);
    assert_eq!(code, 1);
    assert!(out.contains("-    cpu: 1\n+    cpu: 3\n"), "{out}");
    // The server rejects it: an error, exit 2.
    write(
        dir.path(),
        "a.yaml",
        &task_yaml("a", 3, "").replace("[echo, hi]", "[]"),
    );
    let (code, _, err) = server.run(&["diff", "-f", s(&f)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("task/a"), "{err}");
}

#[test]
fn get_prints_tables_yaml_json_and_names() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "t.yaml",
        &format!(
            "{}---\n{}",
            task_yaml("a", 2, "team: x"),
            task_yaml("b", 1, "")
        ),
    );
    server.run(&["apply", "-f", s(&f)]);

    let (code, out, _) = server.run(&["get", "tasks"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME   PHASE     NODE   CPUS   GPUS   AGE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("a      Pending   -      2      0"),
        "{out}"
    );
    assert_eq!(lines.len(), 3);

    let (_, out, _) = server.run(&["get", "tasks", "-o", "wide"]);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .ends_with("IMAGE       ALLOCATION   IDLEGPU   EXIT   REASON   COMMAND"),
        "{out}"
    );

    let (_, out, _) = server.run(&["get", "tasks", "-o", "name", "-l", "team=x"]);
    assert_eq!(out, "task/a\n");
    let (_, out, _) = server.run(&[
        "get",
        "tasks",
        "-o",
        "name",
        "--field-selector",
        "metadata.name=b",
    ]);
    assert_eq!(out, "task/b\n");

    let (_, out, _) = server.run(&["get", "task", "a", "-o", "yaml"]);
    let task: kohakuriver_api::Task = serde_yaml::from_str(&out).unwrap();
    assert_eq!(task.spec.resources.cpu, 2);
    let (_, out, _) = server.run(&["get", "task/a", "-o", "json"]);
    let task: kohakuriver_api::Task = serde_json::from_str(&out).unwrap();
    assert_eq!(task.metadata.labels["team"], "x");
    let (_, out, _) = server.run(&["get", "tasks", "-o", "json"]);
    let list: kohakuriver_api::List<kohakuriver_api::Task> = serde_json::from_str(&out).unwrap();
    assert_eq!((list.kind.as_str(), list.items.len()), ("TaskList", 2));
    let (_, out, _) = server.run(&["get", "nodes", "-o", "yaml"]);
    assert!(
        out.contains("kind: NodeList") && out.contains("items: []"),
        "{out}"
    );

    let (code, out, err) = server.run(&["get", "nodes"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "no nodes found\n")
    );

    let (code, out, _) = server.run(&["describe", "task", "a"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Name:           a\n") && out.contains("  Phase:        Pending\n"),
        "{out}"
    );
}

#[test]
fn prune_deletes_selected_tasks_missing_from_the_manifests() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let both = format!(
        "{}---\n{}",
        task_yaml("a", 1, "app: demo"),
        task_yaml("b", 1, "app: demo")
    );
    let f = write(dir.path(), "t.yaml", &both);
    server.run(&["apply", "-f", s(&f)]);
    let other = write(dir.path(), "o.yaml", &task_yaml("other", 1, "app: else"));
    server.run(&["apply", "-f", s(&other)]);

    write(dir.path(), "t.yaml", &task_yaml("a", 1, "app: demo"));
    // diff shows no change without --prune, and the task --prune would delete with it.
    let (code, out, _) = server.run(&["diff", "-f", s(&f)]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = server.run(&["diff", "-f", s(&f), "--prune", "-l", "app=demo"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--- task/b (live)\n+++ task/b (pruned)\n") && out.contains("-  name: b"),
        "{out}"
    );
    assert!(
        !out.contains("task/other") && !out.contains("task/a"),
        "{out}"
    );
    let (code, out, _) = server.run(&[
        "apply",
        "-f",
        s(&f),
        "--prune",
        "-l",
        "app=demo",
        "--dry-run",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "task/a unchanged (dry run)\ntask/b pruned (dry run)\n")
    );
    let (code, out, _) = server.run(&["apply", "-f", s(&f), "--prune", "-l", "app=demo"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "task/a unchanged\ntask/b pruned\n")
    );
    let (_, out, _) = server.run(&["get", "tasks", "-o", "name"]);
    assert_eq!(out, "task/a\ntask/other\n");

    let (code, _, err) = server.run(&["apply", "-f", s(&f), "--prune"]);
    assert_eq!(code, 2, "clap usage error: {err}");
    assert!(err.contains("--selector"), "{err}");
}

#[test]
fn delete_reports_each_object() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", task_yaml("a", 1, ""), task_yaml("b", 1, "")),
    );
    server.run(&["apply", "-f", s(&f)]);
    let (code, out, err) = server.run(&["delete", "task", "a", "missing", "b", "--wait"]);
    assert_eq!(code, 1);
    assert_eq!(out, "task/a deleted\ntask/b deleted\n");
    assert!(
        err.contains("task/missing") && err.contains("not found"),
        "{err}"
    );
    let (_, out, _) = server.run(&["get", "tasks", "-o", "name"]);
    assert_eq!(out, "");
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, out, err) = output(bin().args(["get", "tasks", "--server", &url]));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: cannot reach the KohakuRiver server at {url} (connection refused); start one with `kohakuriver up` (this machine) or `kohakuriver server`, or set --server\n"
        )
    );
    // The environment names the server when --server is not given.
    let (code, _, err) = output(
        bin()
            .env("KOHAKURIVER_HOST", "127.0.0.1")
            .env("KOHAKURIVER_PORT", port.to_string())
            .args(["get", "nodes"]),
    );
    assert_eq!(code, 1);
    assert!(err.contains(&url), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &task_yaml("a", 1, ""));
    let (code, _, err) = output(bin().args(["diff", "-f", s(&f), "--server", &url]));
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn malformed_manifest_names_file_document_and_field_and_applies_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\n{}",
        task_yaml("a", 1, ""),
        task_yaml("b", 1, "").replace("resources: {cpu: 1}", "resources: {cpus: 1}")
    );
    let f = write(dir.path(), "bad.yaml", &text);
    let (code, out, err) = server.run(&["apply", "-f", s(&f)]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    let want = format!(
        "error: {}: document 2: spec.resources.cpus: unknown field `cpus`",
        f.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(server.run(&["get", "tasks", "-o", "name"]).1, "");
}

#[test]
fn force_replaces_a_scheduled_task_once_its_container_is_gone() {
    use kohakuriver_api::Task;
    let server = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tasks = server.client().api::<Task>();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &task_yaml("a", 1, ""));
    server.run(&["apply", "-f", s(&f)]);
    // Bind it to a node, as the scheduler would; the server then adds the container finalizer.
    let nodes = server.client().api::<kohakuriver_api::Node>();
    let node = kohakuriver_api::Node::test("n1").cores(4);
    rt.block_on(nodes.create(&node)).unwrap();
    rt.block_on(nodes.replace_status(&node)).unwrap();
    let binding = serde_json::json!({"status": {
        "phase": "Assigned", "node": "n1", "allocation": {"cpus": "0"}
    }});
    rt.block_on(tasks.patch_status("a", &binding)).unwrap();
    let old_uid = rt.block_on(tasks.get("a")).unwrap().metadata.uid;

    write(dir.path(), "a.yaml", &task_yaml("a", 4, ""));
    let (code, _, err) = server.run(&["apply", "-f", s(&f)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("spec.resources") && err.contains("--force"),
        "{err}"
    );

    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kohakuriver"))
        .args(["--server", &server.url, "apply", "--force", "-f", s(&f)])
        .env("KOHAKURIVER_TOKEN", &server.admin)
        .env("KOHAKURIVER_CONFIG", server.config_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Play the agent: once deletion is asked, the container is "gone"; drop the finalizer.
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let task = tasks.get_opt("a").await.unwrap();
            if task.as_ref().is_some_and(|t| t.metadata.is_deleting()) {
                tasks
                    .update_with("a", |t| {
                        t.metadata.finalizers.clear();
                        true
                    })
                    .await
                    .unwrap();
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "apply --force never deleted the task"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "task/a replaced\n");
    assert!(stderr.contains("task/a deleting"), "{stderr}");
    let fresh = rt.block_on(tasks.get("a")).unwrap();
    assert_eq!(fresh.spec.resources.cpu, 4);
    assert_ne!(fresh.metadata.uid, old_uid);
}

#[test]
fn login_saves_a_private_config_whose_token_goes_only_to_its_server() {
    let a = Server::start();
    let b = Server::start();
    let token_file = write(a.home.path(), "alice.token", &format!("{}\n", a.alice));
    let (code, out, err) =
        output(
            a.bare()
                .args(["login", "--server", &a.url, "--token-file", s(&token_file)]),
        );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("logged in to {} as user \"alice\"", a.url)),
        "{out}"
    );
    let config = std::fs::read_to_string(a.config_path()).unwrap();
    assert!(
        config.contains(&a.url) && config.contains(ALICE),
        "{config}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.config_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // No flags: the config's server and token.
    let (code, out, err) = output(a.bare().arg("whoami"));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("name:    alice\nrole:    user\n"), "{out}");
    assert!(out.contains("submit tasks"), "{out}");

    // Another server never gets the saved token, though it would accept it there.
    let (code, _, err) = output(a.bare().args(["whoami", "--server", &b.url]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") || err.contains("token"), "{err}");
    assert!(
        err.contains(&format!("kohakuriver login --server {}", b.url)),
        "{err}"
    );
    // Given explicitly, it is sent.
    let (code, out, _) = output(
        a.bare()
            .args(["whoami", "--server", &b.url, "--token", ALICE]),
    );
    assert_eq!(code, 0);
    assert!(out.contains("alice"), "{out}");

    // A token the server does not know is refused at login, and nothing is saved.
    let bad = write(
        a.home.path(),
        "bad.token",
        "krv_nobody00_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    );
    let (code, _, err) =
        output(
            b.bare()
                .args(["login", "--server", &b.url, "--token-file", s(&bad)]),
        );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot log in to {}", b.url)),
        "{err}"
    );
    assert!(!b.config_path().exists());
}

#[test]
fn refusals_print_the_servers_message_and_a_401_says_how_to_log_in() {
    let server = Server::start();
    // No token at all.
    let (code, out, err) = output(
        server
            .bare()
            .args(["--server", &server.url, "get", "tasks"]),
    );
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.contains(&format!(
            "hint: log in with `kohakuriver login --server {} --token-file FILE`, or pass --token",
            server.url
        )),
        "{err}"
    );
    // A 403 is the server's sentence naming the identity and what it may not do.
    let (code, _, err) = output(server.bare().args([
        "--server",
        &server.url,
        "--token",
        &server.bob,
        "token",
        "list",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("\"bob\"") && err.contains("token"), "{err}");
    assert!(!err.contains("hint: log in"), "{err}");
}

#[test]
fn tokens_are_created_listed_without_secrets_and_revoked() {
    let server = Server::start();
    let (code, out, err) = server.run(&[
        "token", "create", "--name", "carol", "--role", "viewer", "--ttl", "30d",
    ]);
    assert_eq!(code, 0, "{err}");
    let carol = out.trim().to_string();
    assert_eq!(out, format!("{carol}\n"));
    assert!(carol.starts_with("krv_"), "{out}");
    let (code, out, _) = server.run(&["--token", &carol, "whoami"]);
    assert_eq!(code, 0);
    assert!(out.contains("name:    carol\nrole:    viewer\n"), "{out}");

    let (code, out, err) = server.run(&["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ID ") && out.contains("LAST USED") && out.contains("USES LEFT"),
        "{out}"
    );
    assert!(out.contains("carol") && out.contains("viewer"), "{out}");
    let secret = &carol[carol.rfind('_').unwrap() + 1..];
    assert!(!out.contains(secret), "token list shows a secret: {out}");

    let (code, out, err) = server.run(&["token", "revoke", "carol"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (code, _, err) = server.run(&["--token", &carol, "get", "tasks"]);
    assert_eq!(code, 1);
    assert!(err.contains("hint: log in"), "{err}");

    // --uses belongs to join tokens only.
    let (code, _, err) = server.run(&[
        "token", "create", "--name", "x", "--role", "user", "--uses", "2",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--uses"), "{err}");
}

#[test]
fn owners_show_in_wide_tables_and_task_list_mine() {
    let server = Server::start();
    for (token, name) in [(&server.alice, "from-alice"), (&server.bob, "from-bob")] {
        let (code, _, err) = server.run(&[
            "--token", token, "task", "submit", "--name", name, "--", "echo", "hi",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let (_, out, _) = server.run(&["get", "tasks", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("OWNER"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("from-alice") && l.contains(" alice ")),
        "{out}"
    );
    let (_, out, _) = server.run(&["describe", "task", "from-bob"]);
    assert!(out.contains("Owner:          bob\n"), "{out}");
    let (code, out, err) = server.run(&[
        "--token",
        &server.alice,
        "task",
        "list",
        "--mine",
        "-o",
        "name",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "task/from-alice\n");
}
