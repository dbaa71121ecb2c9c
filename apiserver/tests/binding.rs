//! No double-booking: a status write that binds a task onto cores, GPUs or memory another
//! task on the node holds is refused with 409, atomically with the write.

mod common;

use axum::http::StatusCode;
use common::{Api, NODES, TASKS};
use serde_json::{Value, json};

fn binding(node: &str, cpus: &str, gpus: &[u32], memory: Option<u64>) -> Value {
    let mut allocation = json!({"cpus": cpus, "gpus": gpus});
    if let Some(m) = memory {
        allocation["memoryBytes"] = json!(m);
    }
    json!({"status": {"phase": "Assigned", "node": node, "allocation": allocation}})
}

async fn bind(api: &Api, task: &str, body: &Value) -> (StatusCode, Value) {
    api.json("PUT", &format!("{TASKS}/{task}/status"), body)
        .await
}

async fn bound_ok(api: &Api, task: &str, body: &Value) -> Value {
    let (code, got) = bind(api, task, body).await;
    assert_eq!(code, StatusCode::OK, "{task}: {got}");
    got
}

fn refused(code: StatusCode, body: &Value, want: &str) {
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["reason"], "Conflict", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(want), "{message:?} should name {want:?}");
}

async fn node_with_memory(api: &Api, name: &str, bytes: u64) {
    let node = json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": name}});
    let (code, body) = api.json("POST", NODES, &node).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let status = json!({"status": {"allocatable": {"cpu": 8, "memoryBytes": bytes, "gpus": 4}}});
    let (code, body) = api
        .json("PUT", &format!("{NODES}/{name}/status"), &status)
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn overlapping_bindings_are_refused() {
    let api = Api::new();
    for name in ["a", "b", "c", "d"] {
        api.create_task(name).await;
    }
    bound_ok(&api, "a", &binding("n1", "0-3", &[0], None)).await;
    // Overlapping cores: refused, naming the node, the cores and the holder.
    let (code, body) = bind(&api, "b", &binding("n1", "2-5", &[], None)).await;
    refused(code, &body, "node n1: cores 2-3 are held by task a");
    assert_eq!(body["details"]["name"], "b");
    let (_, b) = api.get(&format!("{TASKS}/b")).await;
    assert_eq!(b["status"]["phase"], "Pending", "nothing was written: {b}");
    // A GPU through a status merge patch: refused too.
    let patch = json!({"status": {"phase": "Assigned", "node": "n1", "allocation": {"cpus": "6", "gpus": [1, 0]}}});
    let (code, body) = api
        .json("PATCH", &format!("{TASKS}/b/status"), &patch)
        .await;
    refused(code, &body, "node n1: GPU 0 is held by task a");
    // A dry run answers as the write would.
    let (code, body) = api
        .json(
            "PUT",
            &format!("{TASKS}/b/status?dryRun=All"),
            &binding("n1", "3", &[], None),
        )
        .await;
    refused(code, &body, "node n1: core 3 is held by task a");
    // Disjoint cores and GPUs, on the same node or another: fine.
    bound_ok(&api, "b", &binding("n1", "4-5", &[1], None)).await;
    bound_ok(&api, "c", &binding("n2", "0-3", &[0], None)).await;
    // Rewriting a binding as it is (the agent reporting progress) is not refused by its
    // own allocation, whatever the rest of the status says.
    let mut running = binding("n1", "0-3", &[0], None);
    running["status"]["phase"] = json!("Running");
    let a = bound_ok(&api, "a", &running).await;
    assert_eq!(a["status"]["phase"], "Running");
    bound_ok(&api, "a", &running).await;
    // A terminal holder does not block: once a finished, its cores are free.
    let (code, body) = bind(&api, "d", &binding("n1", "0-1", &[], None)).await;
    refused(code, &body, "node n1: cores 0-1 are held by task a");
    let mut done = running.clone();
    done["status"]["phase"] = json!("Succeeded");
    bound_ok(&api, "a", &done).await;
    bound_ok(&api, "d", &binding("n1", "0-1", &[0], None)).await;
    // Moving b within the node onto d's core is refused; onto free ones it is fine.
    let (code, body) = bind(&api, "b", &binding("n1", "1", &[], None)).await;
    refused(code, &body, "node n1: core 1 is held by task d");
    bound_ok(&api, "b", &binding("n1", "6-7", &[], None)).await;
}

#[tokio::test]
async fn memory_is_checked_against_the_nodes_allocatable() {
    let api = Api::new();
    node_with_memory(&api, "n1", 10_000).await;
    for name in ["a", "b", "c", "d"] {
        api.create_task(name).await;
    }
    bound_ok(&api, "a", &binding("n1", "0", &[], Some(6_000))).await;
    let (code, body) = bind(&api, "b", &binding("n1", "1", &[], Some(4_001))).await;
    refused(
        code,
        &body,
        "node n1: needs 4001 bytes of memory but only 4000 of 10000 allocatable bytes are free",
    );
    bound_ok(&api, "b", &binding("n1", "1", &[], Some(4_000))).await;
    // No limit uses no memory; a node that does not exist is not judged on memory.
    bound_ok(&api, "c", &binding("n1", "2", &[], None)).await;
    bound_ok(&api, "d", &binding("ghost", "0", &[], Some(1 << 40))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bindings_onto_the_same_core_let_exactly_one_in() {
    let api = Api::new();
    let names: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    for name in &names {
        api.create_task(name).await;
    }
    let body = binding("n1", "3", &[], None);
    let answers = futures::future::join_all(names.iter().map(|n| bind(&api, n, &body))).await;
    let ok = answers.iter().filter(|(c, _)| *c == StatusCode::OK).count();
    assert_eq!(ok, 1, "{answers:?}");
    for (code, body) in answers.iter().filter(|(c, _)| *c != StatusCode::OK) {
        refused(*code, body, "node n1: core 3 is held by task t");
    }
}

#[tokio::test]
async fn an_unreadable_cpuset_is_invalid() {
    let api = Api::new();
    api.create_task("a").await;
    let (code, body) = bind(&api, "a", &binding("n1", "3-1", &[], None)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "status.allocation.cpus"
    );
}

#[tokio::test]
async fn a_late_write_from_an_old_attempt_is_refused_with_409() {
    let api = Api::new();
    node_with_memory(&api, "n1", 1 << 40).await;
    node_with_memory(&api, "n2", 1 << 40).await;
    let uid = api.create_task("s").await["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let first = bound_ok(&api, "s", &binding("n1", "0", &[], None)).await;
    assert_eq!(first["status"]["binding"], 1, "{first}");
    let report = |phase: &str, node: &str, binding: u32, uid: &str| {
        json!({"metadata": {"uid": uid},
               "status": {"phase": phase, "node": node, "binding": binding,
                          "allocation": {"cpus": "0"}}})
    };
    let (code, body) = bind(&api, "s", &report("Running", "n1", 1, &uid)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // Re-queued (retries) and bound again to the same node: attempt 2.
    let (code, body) = bind(&api, "s", &json!({"status": {"phase": "Pending"}})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let second = bound_ok(&api, "s", &binding("n1", "0", &[], None)).await;
    assert_eq!(second["status"]["binding"], 2, "{second}");

    // The first attempt's late exit report would finish the second attempt.
    let (code, body) = bind(&api, "s", &report("Succeeded", "n1", 1, &uid)).await;
    refused(code, &body, "bound to node \"n1\" (binding 2) now");
    // A report from a node the task is not bound to.
    let (code, body) = bind(&api, "s", &report("Running", "n2", 2, &uid)).await;
    refused(code, &body, "not on node \"n2\"");
    // A report for an earlier task of the same name.
    let (code, body) = bind(&api, "s", &report("Running", "n1", 2, "old-uid")).await;
    refused(code, &body, "is another task now");
    let (_, stored) = api.get(&format!("{TASKS}/s")).await;
    assert_eq!(stored["status"]["phase"], "Assigned", "{stored}");
    // The current attempt's report lands.
    let (code, body) = bind(&api, "s", &report("Running", "n1", 2, &uid)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["binding"], 2, "{body}");
}
