//! A whole cluster of real processes: `kohakuriver server` plus agents, or `kohakuriver up`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::access::Access;
use crate::binary::binary;
use crate::docker::{IMAGE, remove_node_containers};
use crate::http::{HttpResponse, http_get, http_get_with};
use crate::process::{Proc, free_port};
use crate::run::{Run, Stream};
use crate::wait::{unique_name, wait_until};

/// How long a daemon may take to answer after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of one CLI command.
const KR_TIMEOUT: Duration = Duration::from_secs(90);

/// Options of the server (or of the server half of `up`).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--default-image` (default: the test image).
    pub default_image: Option<String>,
    /// `--node-grace`, e.g. `"5s"`.
    pub node_grace: Option<String>,
    /// `--retry-backoff`, e.g. `"1s"`.
    pub retry_backoff: Option<String>,
    /// `--tls-self-signed`: the server speaks https with a CA made in its data dir, and the
    /// harness (health checks, reads, `kr`) trusts that CA.
    pub tls_self_signed: bool,
    /// Any further arguments.
    pub extra_args: Vec<String>,
    /// The IP of `--listen` (default `127.0.0.1`; `0.0.0.0` listens on every address, and
    /// the tests still reach it on 127.0.0.1).
    pub listen_ip: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            default_image: Some(IMAGE.to_string()),
            node_grace: None,
            retry_backoff: None,
            tls_self_signed: false,
            extra_args: Vec::new(),
            listen_ip: "127.0.0.1".to_string(),
        }
    }
}

impl ServerOptions {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(image) = &self.default_image {
            args.extend(["--default-image".to_string(), image.clone()]);
        }
        if let Some(grace) = &self.node_grace {
            args.extend(["--node-grace".to_string(), grace.clone()]);
        }
        if let Some(backoff) = &self.retry_backoff {
            args.extend(["--retry-backoff".to_string(), backoff.clone()]);
        }
        if self.tls_self_signed {
            args.push("--tls-self-signed".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Options of one agent (or of the agent half of `up`).
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `--fake-gpus N`.
    pub fake_gpus: Option<u32>,
    /// `--shared-dir DIR`.
    pub shared_dir: Option<PathBuf>,
    /// `--heartbeat-interval` (default `1s`).
    pub heartbeat_interval: String,
    /// `--kill-grace` (default `2s`).
    pub kill_grace: String,
    /// `--fence-after` (default `3s`): with the `2s` kill grace, servers here need a node
    /// grace above 5 s (the agent checks the timing inequality at start).
    pub fence_after: String,
    /// The server URL the agent is given (default: the cluster's), e.g. a [`crate::Proxy`]'s.
    pub server_url: Option<String>,
    /// Any further arguments.
    pub extra_args: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            fake_gpus: None,
            shared_dir: None,
            heartbeat_interval: "1s".into(),
            kill_grace: "2s".into(),
            fence_after: "3s".into(),
            server_url: None,
            extra_args: Vec::new(),
        }
    }
}

impl AgentOptions {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--heartbeat-interval".to_string(),
            self.heartbeat_interval.clone(),
            "--kill-grace".to_string(),
            self.kill_grace.clone(),
            "--fence-after".to_string(),
            self.fence_after.clone(),
        ];
        if let Some(n) = self.fake_gpus {
            args.extend(["--fake-gpus".to_string(), n.to_string()]);
        }
        if let Some(dir) = &self.shared_dir {
            args.extend(["--shared-dir".to_string(), dir.display().to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

struct Agent {
    name: String,
    data_dir: PathBuf,
    port: u16,
    args: Vec<String>,
    proc: Option<Proc>,
}

/// A cluster of real `kohakuriver` processes in a temp dir: a server with its SQLite file and
/// any number of agents, each with its own node name, data dir, endpoint port and node
/// token; or one `kohakuriver up` process. Its daemons and CLI runs share a CLI config in
/// the temp dir. Dropping it kills every process and removes the containers of its nodes;
/// if the test is failing, the daemons' logs are printed first.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    access: Access,
    server_args: Vec<String>,
    server: Option<Proc>,
    /// The node of `up` mode (its agent runs in the server process).
    up_node: Option<String>,
    agents: Vec<Agent>,
    /// Time from spawning the server (or `up`) to its first `/healthz` answer, last start.
    pub startup: Duration,
}

impl Cluster {
    /// `kohakuriver server` with the default options (test image as default image).
    pub fn start() -> Cluster {
        Cluster::start_with(ServerOptions::default())
    }

    /// `kohakuriver server --listen 127.0.0.1:<free> --db <tmp>/kr.db …`, waiting for
    /// `/healthz`.
    pub fn start_with(options: ServerOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kr-test-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let data_dir = dir.path().join("server");
        let mut server_args = vec![
            "server".to_string(),
            "--listen".to_string(),
            format!("{}:{port}", options.listen_ip),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--db".to_string(),
            dir.path().join("kr.db").display().to_string(),
        ];
        server_args.extend(options.args());
        let (url, ca) = base_url(port, options.tls_self_signed, &data_dir);
        let mut cluster = Cluster {
            access: Access::new(&url, &dir.path().join("cli-config"), &data_dir).with_ca(ca),
            dir,
            port,
            url,
            server_args,
            server: None,
            up_node: None,
            agents: Vec::new(),
            startup: Duration::ZERO,
        };
        cluster.restart_server();
        cluster
    }

    /// `kohakuriver up` (server, controllers and an agent in one process) with a unique node
    /// name made from `prefix`; waits for `/healthz` and the node to be Ready.
    pub fn up(prefix: &str) -> Cluster {
        Cluster::up_with(prefix, ServerOptions::default(), AgentOptions::default())
    }

    /// [`Cluster::up`] with options.
    pub fn up_with(prefix: &str, server: ServerOptions, agent: AgentOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kr-test-up-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let agent_port = free_port();
        let node = unique_name(prefix);
        let data_dir = dir.path().join("up");
        let mut server_args = vec![
            "up".to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--listen".to_string(),
            format!("{}:{port}", server.listen_ip),
            "--agent-listen".to_string(),
            format!("127.0.0.1:{agent_port}"),
            "--name".to_string(),
            node.clone(),
        ];
        server_args.extend(server.args());
        server_args.extend(agent.args());
        let (url, ca) = base_url(port, server.tls_self_signed, &data_dir);
        let mut cluster = Cluster {
            access: Access::new(&url, &dir.path().join("cli-config"), &data_dir).with_ca(ca),
            dir,
            port,
            url,
            server_args,
            server: None,
            up_node: Some(node.clone()),
            agents: Vec::new(),
            startup: Duration::ZERO,
        };
        cluster.restart_server();
        cluster.wait_node_ready(&node, START_TIMEOUT);
        cluster
    }

    /// The API server URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA file, when the server speaks https.
    pub fn ca(&self) -> Option<&Path> {
        self.access.ca()
    }

    /// `GET url` without a token, over https trusting the cluster CA when there is one.
    pub fn http_get(&self, url: &str) -> std::io::Result<HttpResponse> {
        match self.ca() {
            Some(ca) => http_get_with(url, Some(&std::fs::read(ca)?), None),
            None => http_get(url),
        }
    }

    /// The server, the CLI's environment and the admin token, as a cheap handle.
    pub fn access(&self) -> Access {
        self.access.clone()
    }

    /// The admin token the server wrote into its data dir at its first start.
    pub fn admin_token(&self) -> String {
        self.access.admin_token()
    }

    /// The cluster's CLI config file (`KOHAKURIVER_CONFIG` of its daemons and CLI runs).
    pub fn config_path(&self) -> &Path {
        self.access.config_path()
    }

    /// The server's process id, while it runs (for figures read from `/proc`).
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(Proc::pid)
    }

    /// The API server port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temp dir (database, logs, agents' data dirs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node of `up` mode.
    pub fn up_node(&self) -> &str {
        self.up_node.as_deref().expect("not an `up` cluster")
    }

    /// The server (or `up`) process.
    pub fn server_proc(&mut self) -> &mut Proc {
        self.server.as_mut().expect("the server is not running")
    }

    /// SIGKILLs the server (or `up`) process.
    pub fn kill_server(&mut self) {
        if let Some(mut p) = self.server.take() {
            p.kill();
        }
    }

    /// SIGTERMs the server (or `up`) process and waits up to `timeout` for it to exit;
    /// returns whether it exited by itself.
    pub fn stop_server(&mut self, timeout: Duration) -> bool {
        match self.server.take() {
            Some(mut p) => p.terminate(timeout),
            None => true,
        }
    }

    /// (Re)starts the server (or `up`) on the same port and database and waits for
    /// `/healthz`; in `up` mode, also for its node to be Ready again.
    pub fn restart_server(&mut self) {
        self.kill_server();
        let log = self.dir.path().join(if self.up_node.is_some() {
            "up.log"
        } else {
            "server.log"
        });
        let start = Instant::now();
        let mut proc = Proc::spawn_with(
            "server",
            binary(),
            &self.server_args,
            &log,
            &self.access.env(),
        );
        let url = format!("{}/healthz", self.url);
        wait_until(START_TIMEOUT, "the server's /healthz", || {
            proc.assert_running();
            matches!(self.http_get(&url), Ok(r) if r.status == 200)
        });
        // The server logs this machine's CLI in right after it first answers; commands
        // run before that would go without a token.
        if !self.server_args.iter().any(|a| a == "--insecure-no-auth") {
            let config = self.access.config_path().to_path_buf();
            wait_until(START_TIMEOUT, "the server's CLI config", || {
                proc.assert_running();
                config.is_file()
            });
        }
        self.startup = start.elapsed();
        self.server = Some(proc);
        if let Some(node) = self.up_node.clone() {
            self.wait_node_ready(&node, START_TIMEOUT);
        }
    }

    /// [`Cluster::restart_server`] with `extra` arguments for this one start (say,
    /// `--restore FILE --force`).
    pub fn restart_server_with(&mut self, extra: &[&str]) {
        let plain = self.server_args.clone();
        self.server_args.extend(extra.iter().map(|a| a.to_string()));
        self.restart_server();
        self.server_args = plain;
    }

    /// Starts an agent with a unique node name made from `prefix` and default options, and a
    /// node token made through the CLI (`token create --role node`); returns the node name
    /// once the node is Ready.
    pub fn add_agent(&mut self, prefix: &str) -> String {
        self.add_agent_with(prefix, AgentOptions::default())
    }

    /// [`Cluster::add_agent`] with options.
    pub fn add_agent_with(&mut self, prefix: &str, options: AgentOptions) -> String {
        self.add_agent_as(unique_name(prefix), options)
    }

    /// Starts an agent for node `name` exactly (default options); returns the name once
    /// the node is Ready.
    pub fn add_agent_named(&mut self, name: &str) -> String {
        self.add_agent_as(name.to_string(), AgentOptions::default())
    }

    fn add_agent_as(&mut self, name: String, options: AgentOptions) -> String {
        let data_dir = self.dir.path().join(format!("agent-{name}"));
        let port = free_port();
        let token = self.create_token(&name, "node");
        let mut args = vec![
            "agent".to_string(),
            "--server".to_string(),
            options
                .server_url
                .clone()
                .unwrap_or_else(|| self.url.clone()),
            "--token".to_string(),
            token,
            "--name".to_string(),
            name.clone(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--agent-listen".to_string(),
            format!("127.0.0.1:{port}"),
        ];
        // No --ca even for an https server: the node token carries the CA's fingerprint
        // (`TOKEN@sha256:HEX`), so the agent's first contact fetches and checks the CA.
        args.extend(options.args());
        self.agents.push(Agent {
            name: name.clone(),
            data_dir,
            port,
            args,
            proc: None,
        });
        self.restart_agent(&name);
        name
    }

    fn agent_slot(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent named {name}"))
    }

    /// The agent's data dir (logs and state).
    pub fn agent_data_dir(&mut self, name: &str) -> PathBuf {
        self.agent_slot(name).data_dir.clone()
    }

    /// The agent's log endpoint port.
    pub fn agent_port(&mut self, name: &str) -> u16 {
        self.agent_slot(name).port
    }

    /// The agent's process, if running.
    pub fn agent_proc(&mut self, name: &str) -> Option<&mut Proc> {
        self.agent_slot(name).proc.as_mut()
    }

    /// SIGKILLs the agent (its containers keep running).
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut p) = self.agent_slot(name).proc.take() {
            p.kill();
        }
    }

    /// SIGTERMs the agent; returns whether it exited within `timeout`.
    pub fn stop_agent(&mut self, name: &str, timeout: Duration) -> bool {
        match self.agent_slot(name).proc.take() {
            Some(mut p) => p.terminate(timeout),
            None => true,
        }
    }

    /// SIGTERMs the agent; its exit status when it exited within `timeout`.
    pub fn stop_agent_status(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.agent_slot(name)
            .proc
            .take()
            .and_then(|mut p| p.terminate_status(timeout))
    }

    /// (Re)starts the agent on the same name, data dir and port, and waits until its
    /// endpoint answers and the node is Ready.
    pub fn restart_agent(&mut self, name: &str) {
        self.kill_agent(name);
        let log = self.dir.path().join(format!("agent-{name}.log"));
        let env = self.access.env();
        let slot = self.agent_slot(name);
        let health = format!("http://127.0.0.1:{}/healthz", slot.port);
        let mut proc = Proc::spawn_with(&format!("agent {name}"), binary(), &slot.args, &log, &env);
        wait_until(START_TIMEOUT, &format!("agent {name}'s /healthz"), || {
            proc.assert_running();
            matches!(http_get(&health), Ok(r) if r.status == 200)
        });
        self.agent_slot(name).proc = Some(proc);
        self.wait_node_ready(name, START_TIMEOUT);
    }

    /// Runs `kohakuriver --server URL args…` as the cluster's admin (90 s timeout).
    pub fn kr(&self, args: &[&str]) -> Run {
        self.kr_timeout(args, KR_TIMEOUT)
    }

    /// [`Cluster::kr`] with a timeout.
    pub fn kr_timeout(&self, args: &[&str], timeout: Duration) -> Run {
        self.access.kr(args, timeout)
    }

    /// Runs `kohakuriver args…` with neither `--server` nor `--token`, as a person on the
    /// cluster's machine types it (the CLI config the server wrote supplies both).
    pub fn kr_plain(&self, args: &[&str]) -> Run {
        self.access.kr_plain(args, KR_TIMEOUT)
    }

    /// Runs `kohakuriver --server URL --token TOKEN args…`: the CLI as another identity.
    pub fn kr_as(&self, token: &str, args: &[&str]) -> Run {
        self.access.kr_as(token, args, KR_TIMEOUT)
    }

    /// `token create --name NAME --role ROLE` as admin; returns the token.
    #[track_caller]
    pub fn create_token(&self, name: &str, role: &str) -> String {
        let run = self.kr(&["token", "create", "--name", name, "--role", role]);
        run.ok();
        let token = run.stdout.trim().to_string();
        assert!(
            token.starts_with("krv_") && !token.contains(char::is_whitespace),
            "token create must print the token alone, got {:?}",
            run.stdout
        );
        token
    }

    /// Spawns `kohakuriver --server URL args…` and records its output as it comes.
    pub fn stream(&self, args: &[&str]) -> Stream {
        self.access.stream(args)
    }

    /// `task submit ARGS`: asserts success and that stdout is exactly the id and a newline;
    /// returns the id.
    #[track_caller]
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["task", "submit"];
        full.extend_from_slice(args);
        let run = self.kr(&full);
        run.ok();
        let id = run.stdout.trim_end_matches('\n');
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace) && run.stdout == format!("{id}\n"),
            "task submit must print the id alone on stdout, got {:?}",
            run.stdout
        );
        id.to_string()
    }

    /// `GET /apis/kohakuriver/v1/{path}` as JSON, as admin; `None` on 404.
    pub fn get_json(&self, path: &str) -> Option<Value> {
        let path = format!("/apis/kohakuriver/v1/{path}");
        let url = format!("{}{path}", self.url);
        let resp = self
            .access
            .get(&path)
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        match resp.status {
            200 => Some(resp.json()),
            404 => None,
            s => panic!("GET {url}: {s} {}", resp.text()),
        }
    }

    /// The task object; panics if it does not exist.
    pub fn task(&self, id: &str) -> Value {
        self.get_json(&format!("tasks/{id}"))
            .unwrap_or_else(|| panic!("task {id} does not exist"))
    }

    /// The task's `status.phase`.
    pub fn phase(&self, id: &str) -> String {
        self.task(id)["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the task is in one of `phases`; returns the task.
    pub fn wait_phase(&self, id: &str, phases: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.task(id);
            if phases.contains(&t["status"]["phase"].as_str().unwrap_or("")) {
                return t;
            }
            if Instant::now() >= deadline {
                panic!(
                    "task {id} not in {phases:?} within {timeout:?}; last status: {:#}",
                    t["status"]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the task has finished (Succeeded, Failed, Killed or Lost).
    pub fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        self.wait_phase(id, &["Succeeded", "Failed", "Killed", "Lost"], timeout)
    }

    /// The node object, if it exists.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.get_json(&format!("nodes/{name}"))
    }

    /// Whether the node's `Ready` condition is `True`.
    pub fn node_ready(&self, name: &str) -> bool {
        self.node(name).is_some_and(|n| {
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    }

    /// Waits until the node is Ready.
    pub fn wait_node_ready(&self, name: &str, timeout: Duration) {
        wait_until(timeout, &format!("node {name} Ready"), || {
            self.node_ready(name)
        });
    }

    /// Every daemon's log tail, for diagnosis.
    pub fn dump_logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("log" | "out")
            ) {
                out.push_str(&format!(
                    "===== {} (last {lines} lines)\n{}\n",
                    path.display(),
                    crate::process::tail(&path, lines)
                ));
            }
        }
        out
    }

    /// Every node name of this cluster.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        names.extend(self.up_node.clone());
        names
    }
}

/// The server's base URL on loopback and, with `--tls-self-signed`, the CA file it makes in
/// its data dir.
fn base_url(port: u16, tls: bool, data_dir: &Path) -> (String, Option<PathBuf>) {
    if tls {
        (
            format!("https://127.0.0.1:{port}"),
            Some(data_dir.join("tls").join("ca.pem")),
        )
    } else {
        (format!("http://127.0.0.1:{port}"), None)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- kohakuriver cluster at {} (server {}) ----\n{}",
                self.dir.path().display(),
                self.url,
                self.dump_logs(60)
            );
        }
        for agent in &mut self.agents {
            if let Some(mut p) = agent.proc.take() {
                p.kill();
            }
        }
        self.kill_server();
        // A container create sent just before an agent was killed may still complete, so
        // clean up twice.
        for pass in 0..2 {
            if pass > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            for node in self.node_names() {
                remove_node_containers(&node);
            }
        }
        if std::env::var_os("KOHAKURIVER_KEEP_TEST_DIR").is_some() {
            let path =
                std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("kept {}", path.display());
        }
    }
}
