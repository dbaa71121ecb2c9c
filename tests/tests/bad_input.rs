//! Issue 6, scenario 6 — the bad input catalogue.
//!
//! Every bad request gets the documented HTTP code, a `kind: Status` JSON body whose message
//! (and, for 422, `details.causes[].field`) names the problem, and leaves everything stored
//! before exactly as it was: same objects, same `resourceVersion`s, same store revision, no
//! new object. Each group starts the real `kohakuriver server` binary on its own port and
//! SQLite file, creates a few good tasks and a node, snapshots them, then runs its table of
//! cases through one [`Catalogue::check`] and reports every failing case at once.
//!
//! The last group runs the server with its controllers: a task naming a node that does not
//! exist, or GPU ids a node does not have, is accepted by the API (validation cannot know
//! the cluster) and then fails with reason `Unschedulable` and a message naming the node or
//! the GPU.
//!
//! Needs the binary: `cargo build -p kohakuriver` first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kohakuriver_tests::{binary, free_port};
use reqwest::Method;
use serde_json::{Value, json};

const API: &str = "/apis/kohakuriver/v1";
/// ARCHITECTURE.md: "Bodies over 1 MiB are 413".
const BODY_LIMIT: usize = 1024 * 1024;
const MIB: usize = 1024 * 1024;
/// What a message about an array where an object belongs must say (one of them).
const ARRAY: &str = "sequence|array|expected an object|expected struct|must be one object";

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

const JSON: Option<&str> = Some("application/json");
const YAML: Option<&str> = Some("application/yaml");
const MERGE: Option<&str> = Some("application/merge-patch+json");

// ---------------------------------------------------------------------------------------
// Expected answers.

/// The acceptable (HTTP code, `reason`) pairs of a case.
#[derive(Clone, Copy, Debug)]
struct Expect(&'static [(u16, &'static str)]);

const BAD: Expect = Expect(&[(400, "BadRequest")]);
const INVALID: Expect = Expect(&[(422, "Invalid")]);
/// A missing required part: unreadable (400) or invalid (422) are both fair answers.
const REJECT: Expect = Expect(&[(400, "BadRequest"), (422, "Invalid")]);
const NOT_FOUND: Expect = Expect(&[(404, "NotFound")]);
const NOT_ALLOWED: Expect = Expect(&[(405, "MethodNotAllowed")]);
const EXISTS: Expect = Expect(&[(409, "AlreadyExists")]);
const CONFLICT: Expect = Expect(&[(409, "Conflict")]);
const TOO_LARGE: Expect = Expect(&[(413, "RequestEntityTooLarge")]);
const MEDIA: Expect = Expect(&[(415, "UnsupportedMediaType")]);

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(|(c, r)| format!("{c} {r}")).collect();
        f.write_str(&all.join(" or "))
    }
}

/// One bad request and what must come back.
struct Case {
    what: String,
    method: Method,
    /// `tasks/x` is under the API prefix; `/x` is taken as it is.
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// Send the body with chunked transfer encoding (no `Content-Length`).
    chunked: bool,
    expect: Expect,
    /// Substrings the message must contain (`a|b`: one of them; `!a`: must not contain);
    /// for a 422 the first is also a cause's field.
    names: Vec<String>,
}

impl Case {
    fn new(what: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
        Case {
            what: what.into(),
            method,
            path: path.into(),
            content_type: None,
            body: Vec::new(),
            chunked: false,
            expect: BAD,
            names: Vec::new(),
        }
    }

    fn body(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = content_type;
        self.body = body.into();
        self
    }

    fn json(self, value: &Value) -> Case {
        self.body(JSON, value.to_string())
    }

    fn chunked(mut self) -> Case {
        self.chunked = true;
        self
    }

    fn expect(mut self, expect: Expect, names: &[&str]) -> Case {
        self.expect = expect;
        self.names = names.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// What is wrong with `reply` as the answer to a case expecting `expect` and `names`.
fn status_problems(reply: &Reply, expect: Expect, names: &[String]) -> Vec<String> {
    let Some(&(code, reason)) = expect.0.iter().find(|(c, _)| *c == reply.code) else {
        return vec![format!(
            "got HTTP {} {}, want {expect}",
            reply.code,
            reply.short()
        )];
    };
    let mut problems = Vec::new();
    if !reply.content_type.starts_with("application/json") {
        problems.push(format!(
            "content type {:?}, want application/json",
            reply.content_type
        ));
    }
    let Ok(status) = serde_json::from_slice::<Value>(&reply.body) else {
        problems.push(format!("body is not JSON: {}", reply.short()));
        return problems;
    };
    for (key, want) in [
        ("kind", json!("Status")),
        // `v1`: client-go decodes an error body as a Status only with that version.
        ("apiVersion", json!("v1")),
        ("status", json!("Failure")),
        ("code", json!(code)),
        ("reason", json!(reason)),
    ] {
        if status[key] != want {
            problems.push(format!("{key} is {}, want {want}", status[key]));
        }
    }
    let message = status["message"].as_str().unwrap_or_default();
    for name in names {
        if let Some(unwanted) = name.strip_prefix('!') {
            if message.contains(unwanted) {
                problems.push(format!("message {message:?} contains {unwanted:?}"));
            }
            continue;
        }
        // `a|b`: either will do.
        if !name.split('|').any(|n| message.contains(n)) {
            problems.push(format!("message {message:?} does not name {name:?}"));
        }
    }
    if code == 422
        && let Some(field) = names.first()
    {
        let causes = status["details"]["causes"].as_array().cloned();
        let fields: Vec<&str> = causes
            .iter()
            .flatten()
            .filter_map(|c| c["field"].as_str())
            .collect();
        if !fields.contains(&field.as_str()) {
            problems.push(format!(
                "details.causes[].field {fields:?} does not include {field:?}"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The server under test: the real binary as a child process.

/// The server's and the CLI's environment: the CLI config in the server's dir, which the
/// server fills with its admin token.
fn cli_env(dir: &Path) -> Vec<(String, String)> {
    vec![(
        "KOHAKURIVER_CONFIG".to_string(),
        dir.join("cli-config").display().to_string(),
    )]
}

/// An answer: HTTP code (0 when the request itself failed), content type and body.
struct Reply {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.code,
                self.short()
            )
        })
    }

    fn short(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let cut: String = text.chars().take(400).collect();
        if cut.len() < text.len() {
            format!("{cut}…")
        } else {
            cut
        }
    }
}

struct Server {
    url: String,
    /// Keeps connections alive: for setup and snapshots.
    http: reqwest::Client,
    /// One connection per request: for the bad requests, so a connection the server drops
    /// after one (a 413 that did not read the body) never carries the next request.
    fresh: reqwest::Client,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `kohakuriver server --listen 127.0.0.1:PORT --data-dir DIR --db DIR/kr.db
    /// [--no-controllers]`, once `/healthz` answers; every request and CLI run is then the
    /// admin, whose token the server wrote to `DIR/admin.token`.
    async fn start(controllers: bool) -> Server {
        let bin = binary();
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temp dir");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
            let mut cmd = kohakuriver_tests::cli_command(bin, &cli_env(dir.path()));
            cmd.arg("server")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.path())
                .arg("--db")
                .arg(dir.path().join("kr.db"))
                // The tasks here name no image; what is refused is something else.
                .arg("--default-image")
                .arg(kohakuriver_tests::IMAGE)
                // Requests come as fast as the test sends them, as admin, from raw HTTP
                // that does not wait out a 429 (apiserver/tests/limits.rs tests the limit).
                .arg("--rate-limit")
                .arg("0");
            if !controllers {
                cmd.arg("--no-controllers");
            }
            cmd.env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let child = cmd.spawn().expect("spawn kohakuriver server");
            let mut server = Server {
                url: format!("http://127.0.0.1:{port}"),
                http: kohakuriver_tls::http_client(),
                fresh: kohakuriver_tls::http_client_builder(None)
                    .unwrap()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("an HTTP client"),
                child,
                dir,
            };
            match server.wait_healthy().await {
                Ok(()) => {
                    server.authenticate();
                    server.wait_cli_config().await;
                    return server;
                }
                Err(e) => last = e,
            }
        }
        panic!("kohakuriver server did not start: {last}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = self.http.get(format!("{}/healthz", self.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("it exited with {exit}: {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("no /healthz within 20 s: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the admin token the server wrote on every request from now on.
    fn authenticate(&mut self) {
        self.http = self.admin_client().build().expect("an HTTP client");
        self.fresh = self
            .admin_client()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client");
    }

    /// Waits until the server has logged the CLI in (right after it first answers), so
    /// `cli_apply` runs as the admin.
    async fn wait_cli_config(&self) {
        let config = self.dir.path().join("cli-config");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !config.is_file() {
            assert!(
                Instant::now() < deadline,
                "the server wrote no CLI config: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An HTTP client builder that sends the admin token the server wrote.
    fn admin_client(&self) -> reqwest::ClientBuilder {
        let file = self.dir.path().join("admin.token");
        let token = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim())
                .parse()
                .expect("a header value"),
        );
        kohakuriver_tls::http_client_builder(None)
            .unwrap()
            .default_headers(headers)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn url_of(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.url)
        } else {
            format!("{}{API}/{path}", self.url)
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        chunked: bool,
    ) -> Reply {
        self.send_with(&self.http, method, path, content_type, body, chunked)
            .await
    }

    async fn send_with(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        chunked: bool,
    ) -> Reply {
        let mut req = client.request(method, self.url_of(path));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            req = req.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
        } else if !body.is_empty() {
            req = req.body(body);
        }
        match req.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                match resp.bytes().await {
                    Ok(body) => Reply {
                        code,
                        content_type,
                        body: body.to_vec(),
                    },
                    Err(e) => Reply {
                        code,
                        content_type,
                        body: format!("(reading the body failed: {e})").into_bytes(),
                    },
                }
            }
            Err(e) => Reply {
                code: 0,
                content_type: String::new(),
                body: format!("(request failed: {e:?})").into_bytes(),
            },
        }
    }

    async fn json(&self, method: Method, path: &str, body: &Value) -> Reply {
        self.send(method, path, JSON, body.to_string().into_bytes(), false)
            .await
    }

    /// A request that must succeed; answers its JSON.
    async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let what = format!("{method} {path}");
        let reply = match body {
            Some(body) => self.json(method, path, body).await,
            None => self.send(method, path, None, Vec::new(), false).await,
        };
        assert!(
            (200..300).contains(&reply.code),
            "{what}: HTTP {} {}",
            reply.code,
            reply.short()
        );
        reply.json()
    }

    /// `kohakuriver apply -f FILE` against this server: exit code, stdout, stderr.
    async fn cli_apply(&self, file: &Path) -> (Option<i32>, String, String) {
        let cmd = kohakuriver_tests::cli_command(binary(), &cli_env(self.dir.path()));
        let out = tokio::process::Command::from(cmd)
            .arg("apply")
            .arg("--server")
            .arg(&self.url)
            .arg("-f")
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run kohakuriver apply");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Known-good objects and the snapshot that must not change.

const NODE: &str = "node-1";
const GOOD_A: &str = "good-a";
const GOOD_B: &str = "good-b";
const BOUND: &str = "good-bound";

fn task(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": {"name": name}, "spec": spec})
}

fn node_status(now: &Value, gpus: u32) -> Value {
    let gpu_list: Vec<Value> = (0..gpus)
        .map(|i| json!({"index": i, "uuid": format!("GPU-fake-{i}"), "name": "Fake GPU", "memoryBytes": 1u64 << 34, "numa": 0}))
        .collect();
    let resources = json!({"cpu": 8, "memoryBytes": 16_000_000_000u64, "gpus": gpus});
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "numa": [{"id": 0, "cpus": "0-7", "memoryBytes": 16_000_000_000u64}],
        "gpus": gpu_list,
        "lastHeartbeat": now,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat",
                        "message": "agent is posting heartbeats", "lastTransitionTime": now}],
    }})
}

/// Creates a node with status, two plain tasks and one task bound to the node (through the
/// status subresource, as the scheduler does).
async fn create_fixture(srv: &Server) {
    let node = json!({"apiVersion": "kohakuriver/v1", "kind": "Node",
                      "metadata": {"name": NODE, "labels": {"zone": "a"}}});
    let node = srv.ok(POST, "nodes", Some(&node)).await;
    let now = node["metadata"]["creationTimestamp"].clone();
    srv.ok(
        PUT,
        &format!("nodes/{NODE}/status"),
        Some(&node_status(&now, 2)),
    )
    .await;
    srv.ok(
        POST,
        "tasks",
        Some(&task(GOOD_A, json!({"command": ["echo", "a"]}))),
    )
    .await;
    let b = task(
        GOOD_B,
        json!({"command": ["python", "/shared/train.py", "--batch-size", "32"],
               "image": "ubuntu:22.04", "env": {"WANDB_MODE": "offline"}, "workingDir": "/shared",
               "resources": {"cpu": 2, "memory": "1G", "gpus": 1},
               "placement": {"nodeSelector": {"zone": "a"}}, "mounts": ["/data:/data:ro"],
               "priority": 5, "retries": 2, "timeoutSeconds": 3600}),
    );
    let mut b = b;
    b["metadata"]["labels"] = json!({"team": "vision"});
    b["metadata"]["annotations"] = json!({"note": "known good"});
    srv.ok(POST, "tasks", Some(&b)).await;
    let bound = task(
        BOUND,
        json!({"command": ["sleep", "1000"], "resources": {"cpu": 2, "memory": "1G"},
               "placement": {"node": NODE, "gpuIds": [0]}, "mounts": ["/data:/data"]}),
    );
    srv.ok(POST, "tasks", Some(&bound)).await;
    let status = json!({"status": {"phase": "Assigned", "node": NODE,
        "allocation": {"cpus": "0-1", "numa": 0, "gpus": [0], "memoryBytes": 1_000_000_000u64}}});
    let bound = srv
        .ok(PUT, &format!("tasks/{BOUND}/status"), Some(&status))
        .await;
    assert_eq!(bound["status"]["node"], NODE, "{bound}");
}

/// Everything stored: each known object as GET answers it, and both lists (whose
/// `metadata.resourceVersion` is the store revision).
#[derive(Debug, PartialEq)]
struct Snapshot {
    objects: BTreeMap<String, Value>,
    tasks: Value,
    nodes: Value,
}

impl Snapshot {
    async fn take(srv: &Server) -> Snapshot {
        let mut objects = BTreeMap::new();
        for name in [GOOD_A, GOOD_B, BOUND] {
            objects.insert(
                format!("task/{name}"),
                srv.ok(GET, &format!("tasks/{name}"), None).await,
            );
        }
        objects.insert(
            format!("node/{NODE}"),
            srv.ok(GET, &format!("nodes/{NODE}"), None).await,
        );
        Snapshot {
            objects,
            tasks: srv.ok(GET, "tasks", None).await,
            nodes: srv.ok(GET, "nodes", None).await,
        }
    }

    fn revision(&self) -> u64 {
        self.tasks["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("list revision, a decimal string")
    }

    fn rv(&self, key: &str) -> u64 {
        self.objects[key]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("resourceVersion, a decimal string")
    }

    fn names(list: &Value) -> BTreeSet<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// What changed from `self` to `after`, in a few words.
    fn diff(&self, after: &Snapshot) -> String {
        let mut out = String::new();
        if self.revision() != after.revision() {
            let _ = write!(
                out,
                "store revision {} -> {}; ",
                self.revision(),
                after.revision()
            );
        }
        for (kind, before, now) in [
            ("task", &self.tasks, &after.tasks),
            ("node", &self.nodes, &after.nodes),
        ] {
            let (b, a) = (Self::names(before), Self::names(now));
            let new: Vec<_> = a.difference(&b).collect();
            let gone: Vec<_> = b.difference(&a).collect();
            if !new.is_empty() {
                let _ = write!(out, "new {kind}s {new:?}; ");
            }
            if !gone.is_empty() {
                let _ = write!(out, "{kind}s gone {gone:?}; ");
            }
        }
        for (key, before) in &self.objects {
            let now = &after.objects[key];
            if before != now {
                let _ = write!(
                    out,
                    "{key} changed (resourceVersion {} -> {}, generation {} -> {}); ",
                    before["metadata"]["resourceVersion"],
                    now["metadata"]["resourceVersion"],
                    before["metadata"]["generation"],
                    now["metadata"]["generation"]
                );
            }
        }
        if out.is_empty() {
            out.push_str("lists differ");
        }
        out
    }
}

/// Runs cases against one server, checking the snapshot after each, and collects failures.
struct Catalogue<'a> {
    srv: &'a Server,
    before: Snapshot,
    failures: Vec<String>,
    ran: usize,
}

impl<'a> Catalogue<'a> {
    async fn new(srv: &'a Server) -> Catalogue<'a> {
        create_fixture(srv).await;
        let before = Snapshot::take(srv).await;
        Catalogue {
            srv,
            before,
            failures: Vec::new(),
            ran: 0,
        }
    }

    /// Sends the case's request; the answer must be the expected `Status` and nothing
    /// stored may change.
    async fn check(&mut self, case: Case) {
        // A request that got no answer at all (the server dropped the connection while an
        // oversized body was still being sent) is tried again: the catalogue is about the
        // answers; `keep-alive client after a 413` checks the connection handling.
        let mut reply = None;
        for _ in 0..5 {
            let r = self
                .srv
                .send_with(
                    &self.srv.fresh,
                    case.method.clone(),
                    &case.path,
                    case.content_type,
                    case.body.clone(),
                    case.chunked,
                )
                .await;
            let answered = r.code != 0;
            reply = Some(r);
            if answered {
                break;
            }
        }
        let reply = reply.expect("one try");
        let problems = status_problems(&reply, case.expect, &case.names);
        let label = format!("{} [{} {}]", case.what, case.method, case.path);
        self.record(label, problems).await;
    }

    /// `kohakuriver apply -f` of a bad manifest: it must exit non-zero naming the file, the
    /// document (or object) number and every one of `names`, and change nothing.
    async fn check_cli(&mut self, what: &str, file: &Path, doc: usize, names: &[String]) {
        let (code, stdout, stderr) = self.srv.cli_apply(file).await;
        let mut problems = Vec::new();
        if code == Some(0) || code.is_none() {
            problems.push(format!("exit code {code:?}, want non-zero"));
        }
        let file_name = file.file_name().unwrap().to_string_lossy();
        let mut wanted: Vec<String> = vec![file_name.into_owned()];
        wanted.extend(names.iter().cloned());
        for name in &wanted {
            if !stderr.contains(name.as_str()) {
                problems.push(format!("stderr does not name {name:?}"));
            }
        }
        if !stderr.contains(&format!("document {doc}"))
            && !stderr.contains(&format!("object {doc}"))
        {
            problems.push(format!(
                "stderr names neither document {doc} nor object {doc}"
            ));
        }
        if !problems.is_empty() {
            problems.push(format!("stdout {stdout:?}, stderr {stderr:?}"));
        }
        self.record(format!("{what} [kohakuriver apply -f]"), problems)
            .await;
    }

    async fn record(&mut self, label: String, mut problems: Vec<String>) {
        self.ran += 1;
        let after = Snapshot::take(self.srv).await;
        if after != self.before {
            problems.push(format!("stored data changed: {}", self.before.diff(&after)));
            self.clean_up(&after).await;
        }
        if !problems.is_empty() {
            self.failures
                .push(format!("{label}:\n      {}", problems.join("\n      ")));
        }
    }

    /// After a case wrongly stored something: deletes new objects and takes the snapshot
    /// again, so the next cases are judged on their own.
    async fn clean_up(&mut self, after: &Snapshot) {
        for (plural, before, now) in [
            ("tasks", &self.before.tasks, &after.tasks),
            ("nodes", &self.before.nodes, &after.nodes),
        ] {
            for name in Snapshot::names(now).difference(&Snapshot::names(before)) {
                self.srv
                    .send(DELETE, &format!("{plural}/{name}"), None, Vec::new(), false)
                    .await;
            }
        }
        self.before = Snapshot::take(self.srv).await;
    }

    fn finish(self, group: &str, started: Instant) {
        eprintln!(
            "{group}: {} cases in {:.1?}, {} failed",
            self.ran,
            started.elapsed(),
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{group}: {} of {} cases failed:\n  {}",
            self.failures.len(),
            self.ran,
            self.failures.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Group 1: bodies that cannot be read, media types, sizes, parameters, paths and methods.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_media_types_sizes_paths_and_methods() {
    let started = Instant::now();
    let srv = Server::start(false).await;
    let mut cat = Catalogue::new(&srv).await;

    let valid = task("new-task", json!({"command": ["echo", "hi"]}));
    let valid_yaml = serde_yaml::to_string(&valid).unwrap();
    let mut huge = valid.clone();
    huge["metadata"]["annotations"] = json!({"blob": "x".repeat(3 * MIB)});
    let huge = huge.to_string();
    let mut over = valid.clone();
    over["metadata"]["annotations"] = json!({"blob": ""});
    let pad = BODY_LIMIT + 1 - over.to_string().len();
    over["metadata"]["annotations"]["blob"] = json!("x".repeat(pad));
    let over = over.to_string();
    assert_eq!(over.len(), BODY_LIMIT + 1);
    let latin1_yaml = b"apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: caf\xe9}\nspec: {command: [echo]}\n".to_vec();
    let latin1_json = b"{\"apiVersion\":\"kohakuriver/v1\",\"kind\":\"Task\",\"metadata\":{\"name\":\"caf\xe9\"},\"spec\":{\"command\":[\"echo\"]}}".to_vec();
    let limit = BODY_LIMIT.to_string();

    #[rustfmt::skip]
    let cases = vec![
        // Bodies that are not a readable object.
        Case::new("malformed YAML", POST, "tasks").body(YAML, "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: x\nspec: [\n").expect(BAD, &["malformed YAML"]),
        Case::new("YAML with a tab indent", POST, "tasks").body(YAML, "metadata:\n\tname: x\n").expect(BAD, &["malformed YAML"]),
        Case::new("YAML with a duplicate key", POST, "tasks").body(YAML, "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a, name: b}\nspec: {command: [echo]}\n").expect(BAD, &["duplicate", "name"]),
        Case::new("two YAML documents in one body", POST, "tasks").body(YAML, format!("{valid_yaml}---\n{valid_yaml}")).expect(BAD, &["more than one document"]),
        Case::new("YAML error names no position of a JSON text never sent", POST, "tasks").body(YAML, "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: x\nspec:\n  command: [echo]\n  resources:\n    cpu: -1\n").expect(BAD, &["spec.resources.cpu", "-1", "!line 1 column"]),
        Case::new("malformed JSON", POST, "tasks").body(JSON, r#"{"apiVersion": "kohakuriver/v1", "kind": "#).expect(BAD, &["malformed JSON"]),
        Case::new("malformed JSON, no content type", POST, "tasks").body(None, r#"{"metadata": {"name": "x""#).expect(BAD, &["malformed JSON"]),
        Case::new("JSON with trailing garbage", POST, "tasks").body(JSON, format!("{valid} x")).expect(BAD, &["malformed JSON", "trailing"]),
        Case::new("JSON with a duplicate key", POST, "tasks").body(JSON, r#"{"apiVersion":"kohakuriver/v1","kind":"Task","metadata":{"name":"dup-a","name":"dup-b"},"spec":{"command":["echo"]}}"#).expect(BAD, &["duplicate", "name"]),
        Case::new("JSON array instead of an object", POST, "tasks").body(JSON, format!("[{valid}]")).expect(BAD, &[ARRAY]),
        Case::new("YAML list instead of an object", POST, "tasks").body(YAML, format!("- {valid}\n")).expect(BAD, &[ARRAY]),
        Case::new("JSON array of strings", POST, "tasks").body(JSON, r#"["kohakuriver/v1", "Task"]"#).expect(BAD, &[ARRAY]),
        Case::new("JSON number instead of an object", POST, "tasks").body(JSON, "42").expect(BAD, &["42"]),
        Case::new("YAML null document", POST, "tasks").body(YAML, "~\n").expect(BAD, &["null"]),
        Case::new("empty JSON body", POST, "tasks").body(JSON, "").expect(BAD, &["empty"]),
        Case::new("empty YAML body", POST, "tasks").body(YAML, "").expect(BAD, &["empty"]),
        Case::new("whitespace body, no content type", POST, "tasks").body(None, " \n\t\n").expect(BAD, &["empty"]),
        Case::new("empty body on apply", POST, "tasks/new-task/apply").body(YAML, "").expect(BAD, &["empty"]),
        Case::new("empty body on PUT", PUT, format!("tasks/{GOOD_A}")).body(JSON, "").expect(BAD, &["empty"]),
        Case::new("empty body on PATCH", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, "").expect(BAD, &["empty"]),
        // Not UTF-8.
        Case::new("non-UTF-8 body as application/yaml", POST, "tasks").body(YAML, latin1_yaml.clone()).expect(BAD, &["UTF-8"]),
        Case::new("non-UTF-8 body as text/yaml", POST, "tasks").body(Some("text/yaml"), latin1_yaml.clone()).expect(BAD, &["UTF-8"]),
        Case::new("non-UTF-8 body as application/x-yaml on apply", POST, "tasks/new-task/apply").body(Some("application/x-yaml"), latin1_yaml.clone()).expect(BAD, &["UTF-8"]),
        Case::new("non-UTF-8 body, no content type", POST, "tasks").body(None, latin1_yaml.clone()).expect(BAD, &["UTF-8"]),
        Case::new("non-UTF-8 JSON body", POST, "tasks").body(JSON, latin1_json).expect(BAD, &["malformed JSON"]),
        // Media types.
        Case::new("text/plain", POST, "tasks").body(Some("text/plain"), valid_yaml.clone()).expect(MEDIA, &["text/plain"]),
        Case::new("application/xml", POST, "tasks").body(Some("application/xml"), "<task/>").expect(MEDIA, &["application/xml"]),
        Case::new("text/plain on PUT", PUT, format!("tasks/{GOOD_A}")).body(Some("text/plain"), valid_yaml.clone()).expect(MEDIA, &["text/plain"]),
        Case::new("application/xml on apply", POST, "tasks/new-task/apply").body(Some("application/xml"), "<task/>").expect(MEDIA, &["application/xml"]),
        Case::new("form data on PATCH", PATCH, format!("tasks/{GOOD_A}")).body(Some("application/x-www-form-urlencoded"), "spec=x").expect(MEDIA, &["application/x-www-form-urlencoded"]),
        Case::new("text/plain on node status", PUT, format!("nodes/{NODE}/status")).body(Some("text/plain"), "status: {}").expect(MEDIA, &["text/plain"]),
        // Sizes.
        Case::new("body one byte over 1 MiB", POST, "tasks").body(JSON, over.clone()).expect(TOO_LARGE, &[&limit]),
        Case::new("3 MiB body", POST, "tasks").body(JSON, huge.clone()).expect(TOO_LARGE, &[&limit]),
        Case::new("3 MiB body, chunked (no Content-Length)", POST, "tasks").body(JSON, huge.clone()).chunked().expect(TOO_LARGE, &[&limit]),
        Case::new("3 MiB YAML body on apply", POST, "tasks/new-task/apply").body(YAML, huge.clone()).expect(TOO_LARGE, &[&limit]),
        Case::new("3 MiB body on PUT", PUT, format!("tasks/{GOOD_A}")).body(JSON, huge.clone()).expect(TOO_LARGE, &[&limit]),
        Case::new("3 MiB chunked body on node status", PUT, format!("nodes/{NODE}/status")).body(JSON, huge.clone()).chunked().expect(TOO_LARGE, &[&limit]),
        // Query parameters.
        Case::new("dryRun=Bogus", POST, "tasks?dryRun=Bogus").json(&valid).expect(BAD, &["dryRun", "Bogus"]),
        Case::new("watch=maybe", GET, "tasks?watch=maybe").expect(BAD, &["watch", "maybe"]),
        Case::new("watch from resourceVersion=abc", GET, "tasks?watch=true&resourceVersion=abc").expect(BAD, &["resourceVersion", "abc"]),
        Case::new("unbalanced label selector", GET, "tasks?labelSelector=team%20in%20(a").expect(BAD, &["team in (a"]),
        Case::new("field selector on an unsupported field", GET, "tasks?fieldSelector=spec.image%3Dubuntu").expect(BAD, &["spec.image"]),
        // Missing objects.
        Case::new("GET a missing task", GET, "tasks/missing-task").expect(NOT_FOUND, &["missing-task"]),
        Case::new("DELETE a missing task", DELETE, "tasks/missing-task").expect(NOT_FOUND, &["missing-task"]),
        Case::new("PUT a missing task", PUT, "tasks/missing-task").json(&task("missing-task", json!({"command": ["echo"]}))).expect(NOT_FOUND, &["missing-task"]),
        Case::new("PATCH a missing task", PATCH, "tasks/missing-task").body(MERGE, r#"{"spec":{"priority":1}}"#).expect(NOT_FOUND, &["missing-task"]),
        Case::new("PUT status of a missing task", PUT, "tasks/missing-task/status").json(&json!({"status": {"phase": "Running"}})).expect(NOT_FOUND, &["missing-task"]),
        Case::new("GET status of a missing task", GET, "tasks/missing-task/status").expect(NOT_FOUND, &["missing-task"]),
        Case::new("logs of a missing task", GET, "tasks/missing-task/log").expect(NOT_FOUND, &["missing-task"]),
        Case::new("GET a missing node", GET, "nodes/missing-node").expect(NOT_FOUND, &["missing-node"]),
        Case::new("DELETE a missing node", DELETE, "nodes/missing-node").expect(NOT_FOUND, &["missing-node"]),
        // Unknown paths.
        Case::new("unknown resource", GET, "/apis/kohakuriver/v1/pods").expect(NOT_FOUND, &["/apis/kohakuriver/v1/pods"]),
        Case::new("unknown API version", POST, "/apis/kohakuriver/v2/tasks").json(&valid).expect(NOT_FOUND, &["/apis/kohakuriver/v2/tasks"]),
        Case::new("unknown top-level path", GET, "/nope").expect(NOT_FOUND, &["/nope"]),
        Case::new("unknown subresource", GET, format!("tasks/{GOOD_A}/bogus")).expect(NOT_FOUND, &["bogus"]),
        Case::new("too deep a path", DELETE, format!("tasks/{GOOD_A}/status/x")).expect(NOT_FOUND, &["status/x"]),
        // Known paths, wrong methods.
        Case::new("DELETE the task collection", DELETE, "/apis/kohakuriver/v1/tasks").expect(NOT_ALLOWED, &["DELETE"]),
        Case::new("PUT the task collection", PUT, "tasks").json(&valid).expect(NOT_ALLOWED, &["PUT"]),
        Case::new("POST to a task", POST, format!("tasks/{GOOD_A}")).json(&valid).expect(NOT_ALLOWED, &["POST"]),
        Case::new("DELETE a task's status", DELETE, format!("tasks/{BOUND}/status")).expect(NOT_ALLOWED, &["DELETE"]),
        Case::new("GET apply", GET, format!("tasks/{GOOD_A}/apply")).expect(NOT_ALLOWED, &["GET"]),
        Case::new("DELETE the node collection", DELETE, "nodes").expect(NOT_ALLOWED, &["DELETE"]),
        Case::new("POST /healthz", POST, "/healthz").expect(NOT_ALLOWED, &["POST"]),
    ];
    for case in cases {
        cat.check(case).await;
    }

    // The limit is the limit: a body just under it is read (dry run: nothing stored).
    // (The padding is a long argument: labels and annotations have a 256 KiB limit of
    // their own.)
    let mut under = valid.clone();
    under["spec"]["command"] = json!(["echo", ""]);
    let pad = BODY_LIMIT - 1024 - under.to_string().len();
    under["spec"]["command"][1] = json!("x".repeat(pad));
    let reply = srv.json(POST, "tasks?dryRun=All", &under).await;
    assert_eq!(reply.code, 201, "a body under the limit: {}", reply.short());
    cat.record("dry run just under the limit".into(), Vec::new())
        .await;

    // A client that keeps connections alive (as every HTTP library does) must be able to go
    // on after a 413: the server either reads the body or says `Connection: close`.
    let keep_alive = srv.admin_client().build().expect("an HTTP client");
    let mut problems = Vec::new();
    for (what, body, chunked) in [
        ("one byte over", &over, false),
        ("3 MiB", &huge, false),
        ("3 MiB chunked", &huge, true),
    ]
    .repeat(10)
    {
        let big = srv
            .send_with(
                &keep_alive,
                POST,
                "tasks",
                JSON,
                body.clone().into_bytes(),
                chunked,
            )
            .await;
        problems.extend(status_problems(
            &big,
            TOO_LARGE,
            std::slice::from_ref(&limit),
        ));
        let next = srv
            .send_with(&keep_alive, GET, "/healthz", None, Vec::new(), false)
            .await;
        if next.code != 200 {
            problems.push(format!(
                "after a 413 for a body {what}, the next request on the same client failed: HTTP {} {}",
                next.code,
                next.short()
            ));
        }
    }
    cat.record(
        "keep-alive client after a 413 [POST tasks, GET /healthz]".into(),
        problems,
    )
    .await;

    cat.finish(
        "unreadable bodies, media types, sizes, paths, methods",
        started,
    );
}

// ---------------------------------------------------------------------------------------
// Group 2: manifests that parse as YAML/JSON but are not a valid Task, over every way in:
// POST as JSON, POST as YAML, apply as YAML, POST as JSON with dryRun=All, and the CLI.

/// A valid task; each row of [`manifest_cases`] merge-patches one thing into it.
fn base_manifest() -> Value {
    json!({"apiVersion": "kohakuriver/v1", "kind": "Task",
           "metadata": {"name": "bad-case", "labels": {"suite": "bad-input"}},
           "spec": {"command": ["echo", "hi"]}})
}

/// (what, JSON merge patch onto [`base_manifest`], expected answer, what the message names;
/// for a 422 the first name is a cause's field).
#[rustfmt::skip]
fn manifest_cases() -> Vec<(&'static str, Value, Expect, Vec<&'static str>)> {
    let long_name: &'static str = "a".repeat(64).leak();
    vec![
        // Unknown fields at every level.
        ("unknown field at the top",          json!({"bogus": 1}),                                                 BAD,     vec!["bogus", "unknown field"]),
        ("unknown field in metadata",          json!({"metadata": {"nmae": "x"}}),                                  BAD,     vec!["metadata.nmae"]),
        ("unknown field in spec",              json!({"spec": {"cmd": ["x"]}}),                                     BAD,     vec!["spec.cmd"]),
        ("unknown field in spec.resources",    json!({"spec": {"resources": {"cpus": 2}}}),                         BAD,     vec!["spec.resources.cpus"]),
        ("unknown field in spec.placement",    json!({"spec": {"placement": {"host": "node-1"}}}),                  BAD,     vec!["spec.placement.host"]),
        ("unknown field in status",            json!({"status": {"phaze": "Running"}}),                             BAD,     vec!["status.phaze"]),
        // Wrong types.
        ("command as a string",                json!({"spec": {"command": "echo hi"}}),                             BAD,     vec!["spec.command", "echo hi"]),
        ("cpu as a word",                      json!({"spec": {"resources": {"cpu": "four"}}}),                     BAD,     vec!["spec.resources.cpu", "four"]),
        ("memory as a list",                   json!({"spec": {"resources": {"memory": ["8G"]}}}),                  BAD,     vec!["spec.resources.memory"]),
        ("gpuIds as strings",                  json!({"spec": {"placement": {"node": "node-1", "gpuIds": ["0", "1"]}}}), BAD, vec!["spec.placement.gpuIds", "\"0\""]),
        ("priority as a fraction",             json!({"spec": {"priority": 1.5}}),                                  BAD,     vec!["spec.priority", "1.5"]),
        ("privileged as a word",               json!({"spec": {"privileged": "yes"}}),                              BAD,     vec!["spec.privileged", "yes"]),
        ("state that does not exist",          json!({"spec": {"state": "Exploded"}}),                              BAD,     vec!["spec.state", "Exploded"]),
        ("labels as a list",                   json!({"metadata": {"labels": ["a"]}}),                              BAD,     vec!["metadata.labels"]),
        ("metadata as a string",               json!({"metadata": "bad-case"}),                                     BAD,     vec!["metadata", "bad-case"]),
        ("spec missing",                       json!({"spec": null}),                                               BAD,     vec!["spec"]),
        ("command missing",                    json!({"spec": {"command": null, "image": "ubuntu:22.04"}}),         BAD,     vec!["command"]),
        // Names.
        ("name 64 characters long",            json!({"metadata": {"name": long_name}}),                            INVALID, vec!["metadata.name", "64 characters"]),
        ("name with uppercase letters",        json!({"metadata": {"name": "Train-Job"}}),                          INVALID, vec!["metadata.name", "Train-Job"]),
        ("name with an underscore",            json!({"metadata": {"name": "train_job"}}),                          INVALID, vec!["metadata.name", "train_job"]),
        ("empty name",                         json!({"metadata": {"name": ""}}),                                   INVALID, vec!["metadata.name"]),
        ("name with a leading dash",           json!({"metadata": {"name": "-train"}}),                             INVALID, vec!["metadata.name", "-train"]),
        ("name with a dot",                    json!({"metadata": {"name": "train.v1"}}),                           INVALID, vec!["metadata.name", "train.v1"]),
        ("label value with a space",           json!({"metadata": {"labels": {"team": "a b"}}}),                    INVALID, vec!["metadata.labels.team", "a b"]),
        // Negative or absurd resources.
        ("negative cpu",                       json!({"spec": {"resources": {"cpu": -1}}}),                         BAD,     vec!["spec.resources.cpu", "-1"]),
        ("absurd cpu",                         json!({"spec": {"resources": {"cpu": 100000}}}),                     INVALID, vec!["spec.resources.cpu", "100000"]),
        ("absurd gpus",                        json!({"spec": {"resources": {"gpus": 1000}}}),                      INVALID, vec!["spec.resources.gpus", "1000"]),
        ("negative gpus",                      json!({"spec": {"resources": {"gpus": -2}}}),                        BAD,     vec!["spec.resources.gpus", "-2"]),
        ("memory with an unknown unit",        json!({"spec": {"resources": {"memory": "8X"}}}),                    BAD,     vec!["spec.resources.memory", "8X"]),
        ("memory below Docker's minimum",      json!({"spec": {"resources": {"memory": "1K"}}}),                    INVALID, vec!["spec.resources.memory", "1K"]),
        ("memory too large to count",          json!({"spec": {"resources": {"memory": "99999999999T"}}}),          BAD,     vec!["spec.resources.memory", "99999999999T"]),
        ("negative memory",                    json!({"spec": {"resources": {"memory": "-1G"}}}),                   BAD,     vec!["spec.resources.memory", "-1G"]),
        // Invalid targets and placements.
        ("gpuIds without a node",              json!({"spec": {"placement": {"gpuIds": [0]}}}),                     INVALID, vec!["spec.placement.gpuIds", "node"]),
        ("duplicated gpuIds",                  json!({"spec": {"placement": {"node": "node-1", "gpuIds": [0, 0]}}}), INVALID, vec!["spec.placement.gpuIds", "GPU id 0"]),
        ("gpus disagreeing with gpuIds",       json!({"spec": {"resources": {"gpus": 2}, "placement": {"node": "node-1", "gpuIds": [0]}}}), INVALID, vec!["spec.resources.gpus", "2"]),
        ("numa as a string",                   json!({"spec": {"placement": {"numa": "zero"}}}),                    BAD,     vec!["spec.placement.numa", "zero"]),
        ("negative numa",                      json!({"spec": {"placement": {"numa": -1}}}),                        BAD,     vec!["spec.placement.numa", "-1"]),
        ("invalid node name",                  json!({"spec": {"placement": {"node": "No_De"}}}),                   INVALID, vec!["spec.placement.node", "No_De"]),
        ("invalid nodeSelector key",           json!({"spec": {"placement": {"nodeSelector": {"bad key": "x"}}}}),  INVALID, vec!["spec.placement.nodeSelector.bad key"]),
        // Image, mounts, env and the rest of the spec.
        ("image and container both",           json!({"spec": {"image": "ubuntu:22.04", "container": "torch"}}),    INVALID, vec!["spec.image", "container"]),
        ("image with a space",                 json!({"spec": {"image": "bad image"}}),                             INVALID, vec!["spec.image", "bad image"]),
        ("relative host mount path",           json!({"spec": {"mounts": ["data:/data"]}}),                         INVALID, vec!["spec.mounts[0]", "\"data\""]),
        ("relative container mount path",      json!({"spec": {"mounts": ["/data:/data", "/m:models"]}}),           INVALID, vec!["spec.mounts[1]", "\"models\""]),
        ("bad mount mode",                     json!({"spec": {"mounts": ["/data:/data:rx"]}}),                     INVALID, vec!["spec.mounts[0]", "rx"]),
        ("env name starting with a digit",     json!({"spec": {"env": {"1BAD": "x"}}}),                             INVALID, vec!["spec.env.1BAD"]),
        ("env name with a dash",               json!({"spec": {"env": {"MY-VAR": "x"}}}),                           INVALID, vec!["spec.env.MY-VAR"]),
        ("relative working dir",               json!({"spec": {"workingDir": "work"}}),                             INVALID, vec!["spec.workingDir", "work"]),
        ("empty command",                      json!({"spec": {"command": []}}),                                    INVALID, vec!["spec.command", "empty"]),
        ("empty program name",                 json!({"spec": {"command": [""]}}),                                  INVALID, vec!["spec.command[0]"]),
        ("timeoutSeconds 0",                   json!({"spec": {"timeoutSeconds": 0}}),                              INVALID, vec!["spec.timeoutSeconds"]),
        ("negative timeoutSeconds",            json!({"spec": {"timeoutSeconds": -5}}),                             BAD,     vec!["spec.timeoutSeconds", "-5"]),
        ("retries 1000",                       json!({"spec": {"retries": 1000}}),                                  INVALID, vec!["spec.retries", "1000"]),
        // apiVersion and kind.
        ("wrong apiVersion",                   json!({"apiVersion": "kohakuriver/v2"}),                             INVALID, vec!["apiVersion", "kohakuriver/v2"]),
        ("wrong kind",                         json!({"kind": "Pod"}),                                              INVALID, vec!["kind", "Pod"]),
        ("apiVersion as a number",             json!({"apiVersion": 1}),                                            REJECT,  vec!["apiVersion", "1"]),
        ("missing apiVersion",                 json!({"apiVersion": null}),                                         REJECT,  vec!["apiVersion"]),
        ("missing kind",                       json!({"kind": null}),                                               REJECT,  vec!["kind"]),
    ]
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_over_json_yaml_apply_and_cli() {
    let started = Instant::now();
    let srv = Server::start(false).await;
    let mut cat = Catalogue::new(&srv).await;
    let files = tempfile::tempdir().expect("a temp dir");

    for (i, (what, patch, expect, names)) in manifest_cases().into_iter().enumerate() {
        let mut manifest = base_manifest();
        merge(&mut manifest, &patch);
        let yaml = serde_yaml::to_string(&manifest).expect("YAML");
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let via = |how: &str, method: Method, path: String| {
            Case::new(format!("{what} ({how})"), method, path).expect(expect, &names)
        };
        cat.check(via("POST JSON", POST, "tasks".into()).json(&manifest))
            .await;
        cat.check(via("POST YAML", POST, "tasks".into()).body(YAML, yaml.clone()))
            .await;
        cat.check(via("POST JSON, dry run", POST, "tasks?dryRun=All".into()).json(&manifest))
            .await;
        // An empty body name takes the URL's, so the empty-name row has no apply form.
        if !name.is_empty() {
            let path = format!("tasks/{name}/apply");
            cat.check(via("apply YAML", POST, path).body(Some("application/x-yaml"), yaml.clone()))
                .await;
        }
        let file = files.path().join(format!("case-{i:02}.yaml"));
        std::fs::write(&file, &yaml).expect("write manifest");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        cat.check_cli(what, &file, 1, &names).await;
    }

    // The CLI: broken files name the file and the document; a broken later document keeps
    // the good earlier one from being applied at all.
    let good = serde_yaml::to_string(&task("cli-good", json!({"command": ["echo"]}))).unwrap();
    #[rustfmt::skip]
    let cli_cases: Vec<(&str, String, usize, Vec<String>)> = vec![
        ("malformed YAML file",                "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: x\n".into(), 1, vec!["malformed YAML".into()]),
        ("a list instead of an object",        "- a\n- b\n".into(),                                               1, vec!["expected an object".into()]),
        ("good document, then an unknown field", format!("{good}---\n{}", serde_yaml::to_string(&merge_into(json!({"spec": {"cpus": 2}}))).unwrap()), 2, vec!["spec.cpus".into()]),
        ("good document, then malformed YAML", format!("{good}---\nmetadata: [\n"),                                2, vec!["malformed YAML".into()]),
        ("JSON file with a wrong type",        merge_into(json!({"spec": {"resources": {"cpu": "four"}}})).to_string(), 1, vec!["spec.resources.cpu".into(), "four".into()]),
    ];
    for (i, (what, text, doc, names)) in cli_cases.into_iter().enumerate() {
        let file = files.path().join(format!("cli-{i:02}.yaml"));
        std::fs::write(&file, text).expect("write manifest");
        cat.check_cli(what, &file, doc, &names).await;
    }

    cat.finish("invalid manifests", started);
}

fn merge_into(patch: Value) -> Value {
    let mut manifest = base_manifest();
    merge(&mut manifest, &patch);
    manifest
}

// ---------------------------------------------------------------------------------------
// Group 3: writes to existing objects: names that disagree, stale versions, existing names,
// fields frozen once a task is bound, invalid replaces and patches, status and nodes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_frozen_fields_and_invalid_updates() {
    let started = Instant::now();
    let srv = Server::start(false).await;
    let mut cat = Catalogue::new(&srv).await;
    let snap = &cat.before;
    let obj = |key: &str| snap.objects[key].clone();
    let (a, bound, node) = (
        obj(&format!("task/{GOOD_A}")),
        obj(&format!("task/{BOUND}")),
        obj(&format!("node/{NODE}")),
    );
    let rv_a = snap.rv(&format!("task/{GOOD_A}"));
    let rv_node = snap.rv(&format!("node/{NODE}"));
    let stale = rv_a - 1;
    let future = snap.revision() + 1000;
    let with = |base: &Value, patch: Value| {
        let mut v = base.clone();
        merge(&mut v, &patch);
        v
    };
    let changed_a = |rv: u64| {
        with(
            &a,
            json!({"metadata": {"resourceVersion": rv}, "spec": {"command": ["echo", "changed"]}}),
        )
    };
    let other = task("other-name", json!({"command": ["echo"]}));

    #[rustfmt::skip]
    let cases = vec![
        // The body names another object than the URL.
        Case::new("PUT with another name in the body", PUT, format!("tasks/{GOOD_A}")).json(&other).expect(BAD, &["other-name", GOOD_A]),
        Case::new("apply with another name in the body", POST, format!("tasks/{GOOD_A}/apply")).json(&other).expect(BAD, &["other-name", GOOD_A]),
        Case::new("PATCH renaming the task", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, r#"{"metadata":{"name":"other-name"}}"#).expect(BAD, &["other-name", GOOD_A]),
        Case::new("PUT status with another name", PUT, format!("tasks/{GOOD_A}/status")).json(&with(&other, json!({"status": {"phase": "Running"}}))).expect(BAD, &["other-name", GOOD_A]),
        Case::new("PUT node with another name", PUT, format!("nodes/{NODE}")).json(&with(&node, json!({"metadata": {"name": "node-2"}}))).expect(BAD, &["node-2", NODE]),
        // Stale or unknown resourceVersion.
        Case::new("PUT with a stale resourceVersion", PUT, format!("tasks/{GOOD_A}")).json(&changed_a(stale)).expect(CONFLICT, &[GOOD_A, &stale.to_string(), &rv_a.to_string()]),
        Case::new("PUT with a future resourceVersion", PUT, format!("tasks/{GOOD_A}")).json(&changed_a(future)).expect(CONFLICT, &[GOOD_A, &future.to_string()]),
        Case::new("PUT YAML with a stale resourceVersion", PUT, format!("tasks/{GOOD_A}")).body(YAML, serde_yaml::to_string(&changed_a(stale)).unwrap()).expect(CONFLICT, &[GOOD_A, &stale.to_string()]),
        Case::new("PATCH with a stale resourceVersion", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, json!({"metadata": {"resourceVersion": stale}, "spec": {"priority": 9}}).to_string()).expect(CONFLICT, &[GOOD_A, &stale.to_string()]),
        Case::new("apply with a stale resourceVersion", POST, format!("tasks/{GOOD_A}/apply")).json(&changed_a(stale)).expect(CONFLICT, &[GOOD_A, &stale.to_string()]),
        Case::new("PUT status with a stale resourceVersion", PUT, format!("tasks/{GOOD_A}/status")).json(&json!({"metadata": {"resourceVersion": stale}, "status": {"phase": "Running"}})).expect(CONFLICT, &[GOOD_A, &stale.to_string()]),
        Case::new("PATCH status with a stale resourceVersion", PATCH, format!("tasks/{GOOD_A}/status")).body(MERGE, json!({"metadata": {"resourceVersion": stale}, "status": {"phase": "Failed"}}).to_string()).expect(CONFLICT, &[GOOD_A, &stale.to_string()]),
        Case::new("PUT node with a stale resourceVersion", PUT, format!("nodes/{NODE}")).json(&with(&node, json!({"metadata": {"resourceVersion": rv_node - 1}, "spec": {"unschedulable": true}}))).expect(CONFLICT, &[NODE, &(rv_node - 1).to_string()]),
        Case::new("resourceVersion as a string", PUT, format!("tasks/{GOOD_A}")).json(&with(&a, json!({"metadata": {"resourceVersion": "latest"}}))).expect(BAD, &["metadata.resourceVersion", "latest"]),
        // Creating what exists.
        Case::new("create an existing task (JSON)", POST, "tasks").json(&task(GOOD_A, json!({"command": ["echo", "again"]}))).expect(EXISTS, &[GOOD_A, "already exists"]),
        Case::new("create an existing task (YAML)", POST, "tasks").body(YAML, serde_yaml::to_string(&task(GOOD_B, json!({"command": ["true"]}))).unwrap()).expect(EXISTS, &[GOOD_B, "already exists"]),
        Case::new("create an existing bound task", POST, "tasks").json(&task(BOUND, json!({"command": ["true"]}))).expect(EXISTS, &[BOUND]),
        Case::new("create an existing node", POST, "nodes").json(&json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": NODE}})).expect(EXISTS, &[NODE, "already exists"]),
        // Fields frozen once the task is bound (status.node set).
        Case::new("apply changing command of a bound task", POST, format!("tasks/{BOUND}/apply")).json(&with(&bound, json!({"spec": {"command": ["sleep", "1"]}}))).expect(INVALID, &["spec.command", "cannot change"]),
        Case::new("apply changing resources of a bound task", POST, format!("tasks/{BOUND}/apply")).body(YAML, serde_yaml::to_string(&with(&bound, json!({"spec": {"resources": {"cpu": 4}}}))).unwrap()).expect(INVALID, &["spec.resources"]),
        Case::new("apply changing command, mounts and priority", POST, format!("tasks/{BOUND}/apply")).json(&with(&bound, json!({"spec": {"command": ["x"], "mounts": ["/a:/a"], "priority": 7}}))).expect(INVALID, &["spec.command", "spec.mounts"]),
        Case::new("PUT changing placement of a bound task", PUT, format!("tasks/{BOUND}")).json(&with(&bound, json!({"spec": {"placement": {"gpuIds": [1]}}}))).expect(INVALID, &["spec.placement"]),
        Case::new("PUT changing env of a bound task", PUT, format!("tasks/{BOUND}")).json(&with(&bound, json!({"spec": {"env": {"A": "1"}}}))).expect(INVALID, &["spec.env"]),
        Case::new("PATCH changing image of a bound task", PATCH, format!("tasks/{BOUND}")).body(MERGE, r#"{"spec":{"image":"alpine:3"}}"#).expect(INVALID, &["spec.image"]),
        Case::new("PATCH making a bound task privileged", PATCH, format!("tasks/{BOUND}")).body(MERGE, r#"{"spec":{"privileged":true}}"#).expect(INVALID, &["spec.privileged"]),
        Case::new("PATCH changing workingDir of a bound task", PATCH, format!("tasks/{BOUND}")).body(YAML, "spec: {workingDir: /tmp}\n").expect(INVALID, &["spec.workingDir"]),
        // Invalid replaces and patches of an existing task.
        Case::new("PUT with absurd cpu", PUT, format!("tasks/{GOOD_A}")).json(&with(&a, json!({"spec": {"resources": {"cpu": 100000}}}))).expect(INVALID, &["spec.resources.cpu", "100000"]),
        Case::new("PUT with an unknown field", PUT, format!("tasks/{GOOD_A}")).json(&with(&a, json!({"spec": {"nodeName": "x"}}))).expect(BAD, &["spec.nodeName"]),
        Case::new("PUT with a wrong kind", PUT, format!("tasks/{GOOD_A}")).json(&with(&a, json!({"kind": "Node"}))).expect(INVALID, &["kind", "Node"]),
        Case::new("PATCH memory with an unknown unit", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, r#"{"spec":{"resources":{"memory":"8X"}}}"#).expect(BAD, &["spec.resources.memory", "8X"]),
        Case::new("PATCH an unknown field", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, r#"{"spec":{"bogus":1}}"#).expect(BAD, &["spec.bogus"]),
        Case::new("PATCH an invalid label", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, r#"{"metadata":{"labels":{"team":"a b"}}}"#).expect(INVALID, &["metadata.labels.team", "a b"]),
        Case::new("PATCH removing the command", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, r#"{"spec":{"command":null}}"#).expect(BAD, &["command"]),
        Case::new("PATCH with retries 1000", PATCH, format!("tasks/{GOOD_B}")).body(MERGE, r#"{"spec":{"retries":1000}}"#).expect(INVALID, &["spec.retries", "1000"]),
        Case::new("PATCH with an array body", PATCH, format!("tasks/{GOOD_A}")).body(MERGE, "[1, 2]").expect(BAD, &[ARRAY]),
        Case::new("PATCH with dryRun=Bogus", PATCH, format!("tasks/{GOOD_A}?dryRun=Bogus")).body(MERGE, r#"{"spec":{"priority":1}}"#).expect(BAD, &["dryRun", "Bogus"]),
        // The status subresource.
        Case::new("status with an unknown phase", PUT, format!("tasks/{GOOD_A}/status")).json(&json!({"status": {"phase": "Exploded"}})).expect(BAD, &["status.phase", "Exploded"]),
        Case::new("status with an unknown field", PUT, format!("tasks/{GOOD_A}/status")).json(&json!({"status": {"exitcode": 1}})).expect(BAD, &["status.exitcode"]),
        Case::new("status patch with negative attempts", PATCH, format!("tasks/{GOOD_A}/status")).body(MERGE, r#"{"status":{"attempts":-1}}"#).expect(BAD, &["status.attempts", "-1"]),
        Case::new("status with allocation gpus as a string", PUT, format!("tasks/{BOUND}/status")).json(&json!({"status": {"node": NODE, "allocation": {"cpus": "0", "gpus": "0"}}})).expect(BAD, &["status.allocation.gpus"]),
        // Nodes.
        Case::new("node with an uppercase name", POST, "nodes").json(&json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "Node_1"}})).expect(INVALID, &["metadata.name", "Node_1"]),
        Case::new("node with an unknown spec field", POST, "nodes").json(&json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "node-2"}, "spec": {"cordon": true}})).expect(BAD, &["spec.cordon"]),
        Case::new("node with kind Task", POST, "nodes").json(&json!({"apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": {"name": "node-2"}})).expect(INVALID, &["kind", "Task"]),
        Case::new("node apply with a wrong apiVersion", POST, "nodes/node-2/apply").body(YAML, "apiVersion: v1\nkind: Node\nmetadata: {name: node-2}\n").expect(INVALID, &["apiVersion", "v1"]),
        Case::new("node status with cpu as a word", PUT, format!("nodes/{NODE}/status")).json(&json!({"status": {"capacity": {"cpu": "lots"}}})).expect(BAD, &["status.capacity.cpu", "lots"]),
        Case::new("node status with an unknown field", PATCH, format!("nodes/{NODE}/status")).body(MERGE, r#"{"status":{"gpus":[{"index":0,"vram":1}]}}"#).expect(BAD, &["vram"]),
        Case::new("node PATCH unschedulable as a word", PATCH, format!("nodes/{NODE}")).body(MERGE, r#"{"spec":{"unschedulable":"yes"}}"#).expect(BAD, &["spec.unschedulable", "yes"]),
    ];
    for case in cases {
        cat.check(case).await;
    }
    cat.finish("conflicts, frozen fields, invalid updates", started);
}

// ---------------------------------------------------------------------------------------
// Group 4: concurrent conflicting writes. Whatever the interleaving, every answer is one of
// the documented ones and the stored object is exactly one writer's, never a mix.

const WRITERS: usize = 8;

/// The spec writer `i` sends: every field says `i`, so a mix would show.
fn writer_spec(i: usize) -> Value {
    json!({"command": ["echo", format!("writer-{i}")], "resources": {"cpu": i + 1},
           "env": {"WRITER": i.to_string()}, "priority": i + 1})
}

/// Which writer's spec `spec` is, if it is wholly one writer's.
fn writer_of(spec: &Value) -> Option<usize> {
    (0..WRITERS).find(|&i| {
        let want = writer_spec(i);
        spec["command"] == want["command"]
            && spec["resources"]["cpu"] == want["resources"]["cpu"]
            && spec["env"] == want["env"]
            && spec["priority"] == want["priority"]
    })
}

async fn race(srv: &Server, method: Method, path: &str, bodies: Vec<Value>) -> Vec<Reply> {
    futures::future::join_all(bodies.iter().map(|b| srv.json(method.clone(), path, b))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conflicting_writes_leave_one_whole_winner() {
    let started = Instant::now();
    let srv = Server::start(false).await;
    create_fixture(&srv).await;
    let before = Snapshot::take(&srv).await;

    // Applies of different specs to one new name.
    let bodies = (0..WRITERS)
        .map(|i| task("race-apply", writer_spec(i)))
        .collect();
    let replies = race(&srv, POST, "tasks/race-apply/apply", bodies).await;
    let mut written = Vec::new();
    for r in &replies {
        match r.code {
            200 | 201 => {
                let v = r.json();
                let want = if r.code == 201 {
                    "created"
                } else {
                    "configured"
                };
                assert_eq!(v["result"], want, "HTTP {} {}", r.code, r.short());
                written.push(v["object"].clone());
            }
            409 | 422 => assert!(
                status_problems(
                    r,
                    Expect(&[(409, "Conflict"), (409, "AlreadyExists"), (422, "Invalid")]),
                    &[]
                )
                .is_empty(),
                "{}",
                r.short()
            ),
            _ => panic!("concurrent apply: HTTP {} {}", r.code, r.short()),
        }
    }
    assert_eq!(
        replies.iter().filter(|r| r.code == 201).count(),
        1,
        "exactly one apply creates"
    );
    written.sort_by_key(|o| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
    });
    for (k, o) in written.iter().enumerate() {
        assert!(
            writer_of(&o["spec"]).is_some(),
            "a mixed spec was stored: {}",
            o["spec"]
        );
        assert_eq!(
            o["metadata"]["generation"],
            json!(k + 1),
            "generation counts the spec changes: {o}"
        );
    }
    let last = written.last().expect("some apply succeeded");
    let stored = srv.ok(GET, "tasks/race-apply", None).await;
    assert_eq!(
        &stored, last,
        "the stored object is the last acknowledged write"
    );
    assert!(
        writer_of(&stored["spec"]).is_some(),
        "mixed spec {}",
        stored["spec"]
    );
    assert_eq!(stored["metadata"]["generation"], json!(written.len()));

    // Creates of one new name: one wins, the rest are told it exists.
    let bodies = (0..WRITERS)
        .map(|i| task("race-create", writer_spec(i)))
        .collect();
    let replies = race(&srv, POST, "tasks", bodies).await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.code == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins");
    for r in replies.iter().filter(|r| r.code != 201) {
        let problems = status_problems(r, EXISTS, &["race-create".to_string()]);
        assert!(problems.is_empty(), "losing create: {problems:?}");
    }
    let stored = srv.ok(GET, "tasks/race-create", None).await;
    assert_eq!(
        stored,
        winners[0].json(),
        "the stored object is the winner's"
    );
    assert_eq!(stored["metadata"]["generation"], 1);

    // Replaces carrying the same resourceVersion: one wins, the rest conflict.
    let current = srv.ok(GET, "tasks/race-create", None).await;
    let rv = current["metadata"]["resourceVersion"].clone();
    let bodies = (0..WRITERS)
        .map(|i| {
            let mut t = current.clone();
            t["spec"] = writer_spec((i + 1) % WRITERS);
            t["metadata"]["resourceVersion"] = rv.clone();
            t
        })
        .collect();
    let replies = race(&srv, PUT, "tasks/race-create", bodies).await;
    // One replace sends the spec the task already has: a write that changes nothing stores
    // nothing and keeps the resourceVersion (as in Kubernetes), so when it is judged first
    // it succeeds too, and the change judged after it still finds resourceVersion {rv}.
    // Exactly one replace changes the task; every other one conflicts.
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.code == 200).collect();
    let (unchanged, changed): (Vec<&Reply>, Vec<&Reply>) = winners
        .iter()
        .partition(|r| r.json()["spec"] == current["spec"]);
    assert_eq!(
        changed.len(),
        1,
        "exactly one replace with resourceVersion {rv} changes the task"
    );
    assert!(
        unchanged.len() <= 1,
        "only the one replace that changes nothing may also succeed: {}",
        unchanged.len()
    );
    for r in &unchanged {
        assert_eq!(
            r.json()["metadata"]["resourceVersion"],
            rv,
            "a no-op keeps the version"
        );
    }
    for r in replies.iter().filter(|r| r.code != 200) {
        let sent = rv
            .as_str()
            .expect("resourceVersion is a string")
            .to_string();
        let problems = status_problems(r, CONFLICT, &["race-create".to_string(), sent]);
        assert!(problems.is_empty(), "losing replace: {problems:?}");
    }
    let stored = srv.ok(GET, "tasks/race-create", None).await;
    assert_eq!(
        stored,
        changed[0].json(),
        "the stored object is the winner's"
    );
    assert_eq!(stored["metadata"]["generation"], json!(2));

    // The known-good objects were not touched by any of it.
    let after = Snapshot::take(&srv).await;
    assert_eq!(before.objects, after.objects, "{}", before.diff(&after));
    let new: BTreeSet<String> = Snapshot::names(&after.tasks)
        .difference(&Snapshot::names(&before.tasks))
        .cloned()
        .collect();
    assert_eq!(
        new,
        BTreeSet::from(["race-apply".to_string(), "race-create".to_string()])
    );
    eprintln!("concurrent writes: {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Group 5: targets the API cannot judge. With the controllers running, a task naming GPUs or
// a NUMA node its node does not have fails at once with reason Unschedulable and a message
// naming the node or GPU; a task naming a node that has not registered waits for it
// (Pending, reason NodeNotFound), since manifests may arrive before machines do.

async fn wait_for_task(
    srv: &Server,
    name: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<(Value, Duration), Value> {
    let start = Instant::now();
    loop {
        let task = srv.ok(GET, &format!("tasks/{name}"), None).await;
        if done(&task) {
            return Ok((task, start.elapsed()));
        }
        if start.elapsed() > deadline {
            return Err(task);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_targets_fail_unschedulable_naming_node_or_gpu() {
    let started = Instant::now();
    let srv = Server::start(true).await;
    let node =
        json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "gpu-node"}});
    let node = srv.ok(POST, "nodes", Some(&node)).await;
    let now = node["metadata"]["creationTimestamp"].clone();
    srv.ok(PUT, "nodes/gpu-node/status", Some(&node_status(&now, 2)))
        .await;

    // A task that fits shows the scheduler is running and sees the node.
    let fits = task(
        "fits",
        json!({"command": ["true"], "placement": {"node": "gpu-node", "gpuIds": [1]}}),
    );
    srv.ok(POST, "tasks", Some(&fits)).await;

    // (name, placement and resources, what the message must name)
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("gpu-five",      json!({"placement": {"node": "gpu-node", "gpuIds": [5]}}),            vec!["gpu-node", "GPU 5"]),
        ("gpus-one-and-seven", json!({"placement": {"node": "gpu-node", "gpuIds": [1, 7]}}),    vec!["gpu-node", "GPU 7"]),
        ("three-gpus",    json!({"resources": {"gpus": 3}}),                                    vec!["gpu-node", "3 GPUs"]),
        ("numa-three",    json!({"placement": {"node": "gpu-node", "numa": 3}}),                vec!["gpu-node", "NUMA node 3"]),
    ];
    for (name, spec, _) in &cases {
        let mut spec = spec.clone();
        spec["command"] = json!(["true"]);
        let reply = srv.json(POST, "tasks", &task(name, spec)).await;
        assert_eq!(reply.code, 201, "the API accepts {name}: {}", reply.short());
    }

    let bound = wait_for_task(&srv, "fits", Duration::from_secs(15), |t| {
        t["status"]["node"] == "gpu-node"
    })
    .await;
    let (fits, _) =
        bound.unwrap_or_else(|t| panic!("the fitting task was never bound: {}", t["status"]));
    assert_eq!(fits["status"]["allocation"]["gpus"], json!([1]));

    let ghost = task(
        "ghost-target",
        json!({"command": ["true"], "placement": {"node": "ghost-node"}}),
    );
    srv.ok(POST, "tasks", Some(&ghost)).await;
    let waiting = wait_for_task(&srv, "ghost-target", Duration::from_secs(15), |t| {
        t["status"]["reason"] == "NodeNotFound"
    })
    .await
    .unwrap_or_else(|t| panic!("ghost-target never said NodeNotFound: {}", t["status"]));
    assert_eq!(
        waiting.0["status"]["phase"], "Pending",
        "{}",
        waiting.0["status"]
    );
    let message = waiting.0["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"ghost-node\" is not registered"),
        "{message}"
    );

    let mut failures = Vec::new();
    for (name, _, names) in &cases {
        let outcome = wait_for_task(&srv, name, Duration::from_secs(15), |t| {
            t["status"]["phase"] == "Failed" || t["status"]["reason"] == "Unschedulable"
        })
        .await;
        let (t, took) = match outcome {
            Ok(done) => done,
            Err(t) => {
                failures.push(format!(
                    "{name}: no outcome within 15 s: status {}",
                    t["status"]
                ));
                continue;
            }
        };
        let status = &t["status"];
        let message = status["message"].as_str().unwrap_or_default();
        let mut problems = Vec::new();
        if status["phase"] != "Failed" {
            problems.push(format!(
                "phase {}, want Failed (the issue: it fails at once)",
                status["phase"]
            ));
        }
        if status["reason"] != "Unschedulable" {
            problems.push(format!("reason {}, want Unschedulable", status["reason"]));
        }
        for n in names {
            if !message.contains(n) {
                problems.push(format!("message {message:?} does not name {n:?}"));
            }
        }
        if status["node"] != Value::Null {
            problems.push(format!("bound to {}", status["node"]));
        }
        eprintln!(
            "{name}: {} {} after {took:.1?}: {message}",
            status["phase"], status["reason"]
        );
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    eprintln!("unschedulable targets: {:.1?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "impossible targets:\n  {}",
        failures.join("\n  ")
    );
}
