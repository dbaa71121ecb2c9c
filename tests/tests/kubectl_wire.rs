//! The real kubectl against `kohakuriver up`: discovery (legacy and aggregated, as kubectl
//! 1.32 asks), `/version`, the wire format it decodes (string `resourceVersion`, `Status`
//! errors), cluster scope (`-n`, `-A`, namespaced paths), and that kubectl's discovery
//! cache never serves an older server's answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kohakuriver_tests::{Kubectl, docker_ready, kubectl_cluster, wait_until};
use sha2::{Digest, Sha256};

#[test]
fn discovery_version_and_scope() {
    if !docker_ready() {
        return;
    }
    let c = kubectl_cluster("kw");
    let k = Kubectl::admin(&c);

    let resources = k.run(&["api-resources", "-o", "wide"]);
    resources.ok();
    let line = |name: &str| {
        resources
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in api-resources: {}", resources.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("tasks"),
        [
            "tasks",
            "tk",
            "kohakuriver/v1",
            "false",
            "Task",
            "create,delete,get,list,patch,update,watch",
            "all,kohakuriver"
        ]
    );
    assert_eq!(
        line("nodes")[..5],
        ["nodes", "no", "kohakuriver/v1", "false", "Node"]
    );

    k.run(&["api-versions"]).ok().stdout_has("kohakuriver/v1");
    let version = k.run(&["version"]);
    version
        .ok()
        .stdout_has(&format!("Server Version: v{}", env!("CARGO_PKG_VERSION")));

    // Names kubectl resolves through discovery: plural, singular, short names, categories.
    let node = c.up_node().to_string();
    for args in [
        &["get", "nodes"][..],
        &["get", "no"],
        &["get", "node", node.as_str()],
        &["get", "kohakuriver"],
    ] {
        k.run(args).ok().stdout_has(&node);
    }
    let id = c.submit(&["-t", &node, "--", "echo", "hi"]);
    for args in [
        &["get", "tk"][..],
        &["get", "tasks", "-n", "foo"],
        &["get", "tasks", "-A"],
        &["get", "all"],
    ] {
        k.run(args).ok().stdout_has(&id);
    }

    // The wire format: a string resourceVersion, kind and apiVersion on objects and lists.
    let yaml = k.run(&["get", "task", &id, "-o", "yaml"]);
    yaml.ok();
    let object: serde_json::Value = serde_yaml::from_str(&yaml.stdout).unwrap();
    assert!(
        object["metadata"]["resourceVersion"].is_string(),
        "{}",
        yaml.stdout
    );
    assert_eq!(object["kind"], "Task");
    assert_eq!(object["apiVersion"], "kohakuriver/v1");
    let rv = k.run(&[
        "get",
        "tk",
        &id,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    rv.ok();
    assert!(rv.stdout.parse::<u64>().is_ok(), "{}", rv.stdout);

    // Errors reach kubectl as Status objects it prints.
    k.run(&["get", "task", "nope"])
        .fails()
        .stderr_has("Error from server (NotFound): task \"nope\" not found");
    k.run(&["get", "--raw", "/apis/kohakuriver/v1/namespaces/foo/tasks"])
        .fails()
        .stderr_has("NotFound")
        .stderr_has("cluster-scoped")
        .stderr_has("-n/--namespace");

    let manifest = c.dir().join("dup.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: dup\nspec:\n  command: [\"true\"]\n  state: Paused\n",
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    // (--validate=false: client-side validation needs the OpenAPI document, served elsewhere.)
    k.run(&["create", "--validate=false", "-f", manifest]).ok();
    k.run(&["create", "--validate=false", "-f", manifest])
        .fails()
        .stderr_has("Error from server (AlreadyExists)")
        .stderr_has("task \"dup\" already exists");
    let bad = c.dir().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: Bad_Name\nspec:\n  command: [\"true\"]\n",
    )
    .unwrap();
    k.run(&["create", "--validate=false", "-f", bad.to_str().unwrap()])
        .fails()
        .stderr_has("The Task \"Bad_Name\" is invalid: metadata.name");
    let viewer = Kubectl::with_token(&c, &c.create_token("vic", "viewer"));
    viewer.run(&["get", "tasks"]).ok().stdout_has(&id);
    viewer
        .run(&["delete", "task", &id])
        .fails()
        .stderr_has("Error from server (Forbidden): viewer \"vic\" may not delete task");
    // A token revoked after kubectl cached discovery: the 401 Status reaches kubectl,
    // which prints its message. (A 401 on discovery itself prints client-go's own
    // sentence, as with any Kubernetes server: discovery reads raw bodies.)
    viewer.run(&["get", "nodes"]).ok();
    c.kr(&["token", "revoke", "vic"]).ok();
    viewer
        .run(&["get", "tasks"])
        .fails()
        .stderr_has("You must be logged in to the server (token ")
        .stderr_has("is unknown or revoked");
    let stranger = Kubectl::with_token(&c, "krv_aaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    stranger
        .run(&["get", "tasks"])
        .fails()
        .stderr_has("You must be logged in to the server");

    // A delete as kubectl sends it (DeleteOptions body), dry run first.
    k.run(&["delete", "task", &id, "--dry-run=server"]).ok();
    k.run(&["get", "task", &id]).ok();
    k.run(&["delete", "task", &id, "--wait=false"])
        .ok()
        .stdout_has("deleted");
}

/// kubectl keeps an HTTP cache (`~/.kube/cache/http`) under its discovery cache. After an
/// upgrade it holds the old server's answers; they must never be served as they are. The
/// server marks discovery `Cache-Control: no-cache` with an `ETag`, so kubectl revalidates:
/// an answer whose ETag is still current is reused (304), one from another server version
/// is replaced.
#[test]
fn discovery_cache_revalidates_and_never_serves_an_old_answer() {
    if !docker_ready() {
        return;
    }
    let c = kubectl_cluster("kwc");
    let k = Kubectl::admin(&c);
    let short_name = |k: &Kubectl| {
        let run = k.run(&["api-resources", "--api-group=kohakuriver"]);
        run.ok();
        run.stdout
            .lines()
            .find(|l| l.starts_with("tasks "))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no tasks line: {}", run.stdout))
            .to_string()
    };
    assert_eq!(short_name(&k), "tk");
    let http_cache = k.home().join(".kube/cache/http");
    let cached = discovery_entry(&http_cache);

    // The cached answer still carries the server's current ETag: kubectl asks with
    // If-None-Match, gets 304 and uses what it holds (here doctored to `zz`, which proves
    // the cache is really in use and revalidated rather than bypassed).
    rewrite_entry(&cached, |text| {
        text.replace("\"shortNames\":[\"tk\"]", "\"shortNames\":[\"zz\"]")
    });
    assert_eq!(short_name(&k), "zz");

    // An answer from another server version has another ETag: the server answers in full
    // and kubectl shows what the server serves now.
    rewrite_entry(&cached, |text| {
        let tag_start = text.find("Etag: \"").expect("cached ETag") + "Etag: \"".len();
        let tag_end = tag_start + text[tag_start..].find('"').unwrap();
        let old_tag = "0".repeat(tag_end - tag_start);
        format!("{}{old_tag}{}", &text[..tag_start], &text[tag_end..])
    });
    assert_eq!(short_name(&k), "tk");
}

/// The HTTP cache file holding the aggregated `/apis` answer.
fn discovery_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("kubectl made no HTTP cache at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries
        .iter()
        .find(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
            text.contains("APIGroupDiscoveryList") && text.contains("\"shortNames\":[\"tk\"]")
        })
        .unwrap_or_else(|| panic!("no cached /apis answer among {entries:?}"))
        .clone()
}

/// Rewrites a kubectl HTTP cache entry (a SHA-256 of the rest, then the dumped response)
/// with `edit` applied to the response, keeping its length so `Content-Length` holds.
fn rewrite_entry(path: &Path, edit: impl Fn(&str) -> String) {
    let bytes = std::fs::read(path).unwrap();
    let response = String::from_utf8(bytes[32..].to_vec()).expect("a text response");
    let edited = edit(&response);
    assert_ne!(edited, response, "the edit changed nothing");
    assert_eq!(edited.len(), response.len(), "the edit keeps the length");
    let mut out = Sha256::digest(edited.as_bytes()).to_vec();
    out.extend_from_slice(edited.as_bytes());
    std::fs::write(path, out).unwrap();
}

/// `kubectl get -w` decodes our watch stream: `application/json`, one event per line, the
/// objects with string resourceVersions.
#[test]
fn kubectl_watch_reads_our_events() {
    if !docker_ready() {
        return;
    }
    let c = kubectl_cluster("kww");
    let k = Kubectl::admin(&c);
    let mut watch = k.stream(&["get", "tasks", "-w", "--output-watch-events", "-o", "json"]);
    let node = c.up_node().to_string();
    let id = c.submit(&["-t", &node, "--", "echo", "watched"]);
    // Each event kubectl prints is one line of JSON: {"type":…,"object":…}.
    let events = |watch: &kohakuriver_tests::Stream| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&watch.stdout_so_far())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &serde_json::Value| e["object"]["metadata"]["name"] == id.as_str())
            .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "kubectl prints the task's ADDED and MODIFIED events",
        || {
            let seen = events(&watch);
            seen.iter().any(|e| e["type"] == "ADDED")
                && seen.iter().any(|e| e["type"] == "MODIFIED")
        },
    );
    for event in events(&watch) {
        assert!(
            event["object"]["metadata"]["resourceVersion"].is_string(),
            "{event}"
        );
    }
    assert_eq!(
        watch.wait_exit(Duration::ZERO),
        None,
        "the watch is still open"
    );
    watch.child.kill().unwrap();
    let (_, stderr) = watch.finish_readers();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
}
