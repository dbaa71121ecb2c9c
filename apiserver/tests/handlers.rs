//! Handler tests through `router(state).oneshot(request)`: every error code, dry runs,
//! apply, and the separation of spec and status.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{Api, NODES, TASKS, task_json};
use kohakuriver_apiserver::Config;
use serde_json::{Value, json};

fn reason(body: &Value) -> &str {
    assert_eq!(body["kind"], "Status", "{body}");
    body["reason"].as_str().unwrap()
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap()
}

fn causes(body: &Value) -> Vec<String> {
    body["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn create_then_get_and_list() {
    let api = Api::new();
    let created = api.create_task("a").await;
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["resourceVersion"], "1");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["status"]["submittedAt"].is_string());
    api.create_task("b").await;
    let (code, got) = api.get(&format!("{TASKS}/a")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got, created);
    let (code, list) = api.get(TASKS).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["kind"], "TaskList");
    assert_eq!(list["metadata"]["resourceVersion"], "2");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn yaml_bodies_are_accepted_and_sniffed() {
    let api = Api::new();
    let yaml = "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: y}\nspec:\n  command: [echo]\n  resources: {cpu: 2, memory: 8G}\n";
    let (code, body) = api
        .call("POST", TASKS, Some("application/yaml"), yaml)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["resources"]["cpu"], 2);
    let sniffed = yaml.replace("name: y", "name: z");
    let (code, _) = api.call("POST", TASKS, None, sniffed).await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = api
        .call("POST", TASKS, None, task_json("j").to_string())
        .await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_request_for_malformed_bodies() {
    let api = Api::new();
    let (code, body) = api
        .call("POST", TASKS, Some("application/json"), "{\"metadata\":")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "BadRequest");
    assert!(message(&body).starts_with("malformed JSON"), "{body}");

    let (code, body) = api
        .call("POST", TASKS, Some("application/yaml"), "metadata: [")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message(&body).starts_with("malformed YAML"), "{body}");

    let (code, body) = api
        .call("POST", TASKS, Some("text/yaml"), &b"kind: \xff\xfe"[..])
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("not valid UTF-8"), "{body}");

    let mut unknown = task_json("a");
    unknown["spec"]["resources"] = json!({"cpus": 2});
    let (code, body) = api.json("POST", TASKS, &unknown).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        message(&body)
            .contains("unknown field \"spec.resources.cpus\" (known there: cpu, gpus, memory)"),
        "{body}"
    );

    let mut wrong_type = task_json("a");
    wrong_type["spec"]["command"] = json!("echo hi");
    let (code, body) = api.json("POST", TASKS, &wrong_type).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("spec.command"), "{body}");

    let (code, body) = api.get(&format!("{TASKS}?labelSelector=a%20in%20x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("parentheses"), "{body}");
}

#[tokio::test]
async fn not_found_and_method_not_allowed_are_status_json() {
    let api = Api::new();
    let (code, body) = api.get(&format!("{TASKS}/missing")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(reason(&body), "NotFound");
    assert!(message(&body).contains("\"missing\""), "{body}");
    let (code, body) = api.get("/apis/kohakuriver/v1/pods").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(reason(&body), "NotFound");
    let (code, body) = api.call("DELETE", TASKS, None, Body::empty()).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reason(&body), "MethodNotAllowed");
    let (code, body) = api
        .call(
            "PUT",
            &format!("{TASKS}/missing"),
            Some("application/json"),
            task_json("missing").to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn conflicts_on_duplicate_create_and_stale_version() {
    let api = Api::new();
    let created = api.create_task("a").await;
    let (code, body) = api.json("POST", TASKS, &task_json("a")).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(reason(&body), "AlreadyExists");

    let mut first = created.clone();
    first["spec"]["priority"] = json!(5);
    let (code, updated) = api.json("PUT", &format!("{TASKS}/a"), &first).await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["metadata"]["resourceVersion"], "2");
    // `created` still carries resourceVersion 1.
    let (code, body) = api.json("PUT", &format!("{TASKS}/a"), &created).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(reason(&body), "Conflict");
    let (code, body) = api
        .json("PUT", &format!("{TASKS}/a/status"), &created)
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, body) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"metadata": {"resourceVersion": 1}, "spec": {"priority": 1}}),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn gone_when_watching_from_compacted_history() {
    let api = Api::with(Config {
        watch_history: 2,
        ..Config::insecure()
    });
    for i in 0..6 {
        api.create_task(&format!("t{i}")).await;
    }
    let (code, body) = api
        .get(&format!("{TASKS}?watch=true&resourceVersion=1"))
        .await;
    assert_eq!(code, StatusCode::GONE);
    assert_eq!(reason(&body), "Gone");
    let (code, body) = api
        .get(&format!("{TASKS}?watch=true&resourceVersion=99"))
        .await;
    assert_eq!(code, StatusCode::GONE, "a version from the future: {body}");
}

#[tokio::test]
async fn too_large_and_unsupported_media_type() {
    let api = Api::with(Config {
        max_body_bytes: 300,
        ..Config::insecure()
    });
    let mut big = task_json("a");
    big["spec"]["command"] = json!(["echo", "x".repeat(400)]);
    let (code, body) = api.json("POST", TASKS, &big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reason(&body), "RequestEntityTooLarge");
    // Without a Content-Length (a streamed body) the limit still holds.
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 100]))),
    );
    let (code, body) = api
        .call(
            "POST",
            TASKS,
            Some("application/json"),
            Body::from_stream(chunks),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (code, body) = api
        .call(
            "POST",
            TASKS,
            Some("text/plain"),
            task_json("a").to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reason(&body), "UnsupportedMediaType");
}

#[tokio::test]
async fn invalid_objects_name_each_field() {
    let api = Api::new();
    let mut bad = task_json("Bad_Name");
    bad["spec"]["command"] = json!([]);
    bad["spec"]["mounts"] = json!(["data:/data"]);
    let (code, body) = api.json("POST", TASKS, &bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reason(&body), "Invalid");
    assert_eq!(
        causes(&body),
        ["metadata.name", "spec.command", "spec.mounts[0]"]
    );
    let (code, body) = api
        .json("POST", NODES, &json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "Bad Host"}}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(causes(&body), ["metadata.name"]);
}

#[tokio::test]
async fn name_in_url_must_match_body() {
    let api = Api::new();
    api.create_task("a").await;
    let (code, body) = api
        .json("PUT", &format!("{TASKS}/a"), &task_json("b"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        message(&body).contains("\"a\"") && message(&body).contains("\"b\""),
        "{body}"
    );
    let (code, _) = api
        .json("POST", &format!("{TASKS}/a/apply"), &task_json("b"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let api = Api::new();
    let (code, body) = api
        .json("POST", &format!("{TASKS}?dryRun=All"), &task_json("d"))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body["metadata"]["name"], "d");
    let (code, _) = api.get(&format!("{TASKS}/d")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, body) = api
        .json(
            "POST",
            &format!("{TASKS}/d/apply?dryRun=All"),
            &task_json("d"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body["result"], "created");
    let (_, list) = api.get(TASKS).await;
    assert_eq!(list["items"], json!([]));
    assert_eq!(list["metadata"]["resourceVersion"], "0");

    let created = api.create_task("d").await;
    let mut changed = created.clone();
    changed["spec"]["priority"] = json!(3);
    let (code, body) = api
        .json("PUT", &format!("{TASKS}/d?dryRun=All"), &changed)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["spec"]["priority"], 3);
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{TASKS}/d?dryRun=All"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, got) = api.get(&format!("{TASKS}/d")).await;
    assert_eq!(got, created);
}

#[tokio::test]
async fn apply_is_idempotent_and_generation_follows_spec() {
    let api = Api::new();
    let url = format!("{TASKS}/a/apply");
    let (code, first) = api.json("POST", &url, &task_json("a")).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(first["result"], "created");
    let (code, second) = api.json("POST", &url, &task_json("a")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(second["result"], "unchanged");
    assert_eq!(second["object"], first["object"]);

    let mut labelled = task_json("a");
    labelled["metadata"]["labels"] = json!({"team": "vision"});
    let (_, third) = api.json("POST", &url, &labelled).await;
    assert_eq!(third["result"], "configured");
    assert_eq!(third["object"]["metadata"]["generation"], 1);

    let mut respec = labelled.clone();
    respec["spec"]["priority"] = json!(7);
    let (_, fourth) = api.json("POST", &url, &respec).await;
    assert_eq!(fourth["result"], "configured");
    assert_eq!(fourth["object"]["metadata"]["generation"], 2);
    assert_eq!(fourth["object"]["metadata"]["resourceVersion"], "3");

    // A status write changes neither the generation nor what apply compares.
    let (code, status) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a/status"),
            &json!({"status": {"phase": "Assigned", "reason": "Waiting"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{status}");
    assert_eq!(status["metadata"]["generation"], 2);
    let (_, fifth) = api.json("POST", &url, &respec).await;
    assert_eq!(fifth["result"], "unchanged");
    assert_eq!(fifth["object"]["status"]["reason"], "Waiting");
}

#[tokio::test]
async fn bound_task_refuses_immutable_changes() {
    let api = Api::new();
    api.create_task("a").await;
    let (code, bound) = api
        .json(
            "PUT",
            &format!("{TASKS}/a/status"),
            &json!({"status": {"phase": "Assigned", "node": "n1"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{bound}");
    assert_eq!(
        bound["metadata"]["finalizers"],
        json!([kohakuriver_api::CONTAINER_FINALIZER])
    );

    let mut changed = task_json("a");
    changed["spec"]["command"] = json!(["false"]);
    changed["spec"]["image"] = json!("ubuntu:22.04");
    changed["spec"]["retries"] = json!(2);
    let (code, body) = api
        .json("POST", &format!("{TASKS}/a/apply"), &changed)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(causes(&body), ["spec.command", "spec.image"]);

    let mut allowed = task_json("a");
    allowed["spec"]["state"] = json!("Killed");
    allowed["spec"]["retries"] = json!(2);
    let (code, body) = api
        .json("POST", &format!("{TASKS}/a/apply"), &allowed)
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "configured");
    // Apply keeps the finalizer the server added.
    assert_eq!(
        body["object"]["metadata"]["finalizers"],
        json!([kohakuriver_api::CONTAINER_FINALIZER])
    );

    let (code, body) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"spec": {"resources": {"cpu": 4}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(causes(&body), ["spec.resources"]);
}

#[tokio::test]
async fn spec_and_status_never_overwrite_each_other() {
    let api = Api::new();
    let created = api.create_task("a").await;

    // The main endpoint ignores status.
    let mut body = created.clone();
    body["spec"]["priority"] = json!(4);
    body["status"] = json!({"phase": "Succeeded", "exitCode": 0});
    let (code, after_put) = api.json("PUT", &format!("{TASKS}/a"), &body).await;
    assert_eq!(code, StatusCode::OK, "{after_put}");
    assert_eq!(after_put["spec"]["priority"], 4);
    assert_eq!(after_put["status"], created["status"]);
    assert_eq!(after_put["metadata"]["generation"], 2);
    let (_, after_patch) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"status": {"phase": "Failed"}}),
        )
        .await;
    assert_eq!(after_patch["status"]["phase"], "Pending");

    // The status endpoint ignores spec and metadata.
    let mut body = after_patch.clone();
    body["spec"]["priority"] = json!(99);
    body["metadata"]["labels"] = json!({"x": "y"});
    body["status"]["phase"] = json!("Running");
    let (code, after_status) = api.json("PUT", &format!("{TASKS}/a/status"), &body).await;
    assert_eq!(code, StatusCode::OK, "{after_status}");
    assert_eq!(after_status["status"]["phase"], "Running");
    assert_eq!(after_status["spec"]["priority"], 4);
    assert!(after_status["metadata"].get("labels").is_none());
    assert_eq!(after_status["metadata"]["generation"], 2);
    // submittedAt is the server's and survives a status write that leaves it out.
    assert_eq!(
        after_status["status"]["submittedAt"],
        created["status"]["submittedAt"]
    );
    let (_, patched) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a/status"),
            &json!({"spec": {"priority": 1}, "status": {"exitCode": 3}}),
        )
        .await;
    assert_eq!(patched["spec"]["priority"], 4);
    assert_eq!(patched["status"]["exitCode"], 3);
    assert_eq!(patched["status"]["phase"], "Running");
}

#[tokio::test]
async fn delete_honours_finalizers() {
    let api = Api::new();
    let mut held = task_json("a");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.json("POST", TASKS, &held).await;
    let (code, marked) = api
        .call("DELETE", &format!("{TASKS}/a"), None, Body::empty())
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, again) = api
        .call("DELETE", &format!("{TASKS}/a"), None, Body::empty())
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(again, marked);
    let (code, last) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{last}");
    let (code, _) = api.get(&format!("{TASKS}/a")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    api.create_task("b").await;
    let (code, gone) = api
        .call("DELETE", &format!("{TASKS}/b"), None, Body::empty())
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(gone["metadata"]["name"], "b");
    let (code, _) = api
        .call("DELETE", &format!("{TASKS}/b"), None, Body::empty())
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nodes_have_the_same_verbs() {
    let api = Api::new();
    let node = json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "gpu-01.lab"}, "status": {"address": "http://x"}});
    let (code, created) = api.json("POST", NODES, &node).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert!(
        created["status"].get("address").is_none(),
        "status is ignored on create"
    );
    let (code, updated) = api
        .json(
            "PATCH",
            &format!("{NODES}/gpu-01.lab/status"),
            &json!({"status": {"address": "http://x"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"]["address"], "http://x");
    let (_, list) = api
        .get(&format!("{NODES}?fieldSelector=spec.unschedulable%3Dfalse"))
        .await;
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn server_endpoints() {
    let api = Api::with(Config {
        default_image: Some("ubuntu:22.04".into()),
        ..Config::insecure()
    });
    let (code, body) = api.get("/healthz").await;
    assert_eq!((code, body), (StatusCode::OK, json!("ok")));
    let (_, info) = api.get("/apis/kohakuriver/v1/info").await;
    assert_eq!(info["defaultImage"], "ubuntu:22.04");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let (code, schema) = api.get("/apis/kohakuriver/v1/schemas/task").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(schema["title"], "Task");
    let (_, schema) = api.get("/apis/kohakuriver/v1/schemas/node").await;
    assert_eq!(schema["title"], "Node");
}

#[tokio::test]
async fn log_of_a_pending_task_says_why_there_is_none() {
    let api = Api::new();
    api.create_task("a").await;
    let (code, body) = api.get(&format!("{TASKS}/a/log")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "task a has no logs yet: it is Pending");
}

#[tokio::test]
async fn a_delete_with_a_uid_precondition_spares_a_newer_object_of_the_same_name() {
    let api = Api::new();
    let old = api.create_task("t").await;
    let old_uid = old["metadata"]["uid"].as_str().unwrap().to_string();
    let (code, _) = api
        .json("DELETE", &format!("{TASKS}/t"), &serde_json::json!({}))
        .await;
    assert_eq!(code, StatusCode::OK);
    let new = api.create_task("t").await;
    let stale = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": old_uid}});
    let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &stale).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was deleted"),
        "{body}"
    );
    let (code, _) = api.get(&format!("{TASKS}/t")).await;
    assert_eq!(code, StatusCode::OK);
    let current = serde_json::json!({"preconditions": {"uid": new["metadata"]["uid"]}});
    let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &current).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .call("DELETE", &format!("{TASKS}/x"), None, "{not json")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn node_status_is_bounded_before_the_store_is_read() {
    let api = Api::new();
    // The node does not even exist: the bound is checked before the store's lock is taken,
    // so the answer is the 422, not a 404 from reading the store.
    for method in ["PUT", "PATCH"] {
        let (code, body) = api
            .json(
                method,
                &format!("{NODES}/ghost/status"),
                &serde_json::json!({"status": {"capacity": {"cpu": 50_000_000}}}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{method}: {body}");
        assert_eq!(
            body["details"]["causes"][0]["field"], "status.capacity.cpu",
            "{body}"
        );
    }
}

#[tokio::test]
async fn delete_options_as_kubectl_sends_them() {
    let api = Api::new();
    let created = api.create_task("t").await;
    // `kubectl delete --dry-run=server` asks in the body, not in the query.
    let dry = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background", "dryRun": ["All"]});
    let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &dry).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = api.get(&format!("{TASKS}/t")).await;
    assert_eq!(code, StatusCode::OK, "a dry-run delete removed the task");
    for (options, named) in [
        (json!({"dryRun": ["Some"]}), "\"Some\""),
        (json!({"propagationPolicy": "Later"}), "\"Later\""),
        (
            json!({"preconditions": {"resourceVersion": "latest"}}),
            "\"latest\"",
        ),
    ] {
        let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &options).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{options}: {body}");
        assert!(message(&body).contains(named), "{body}");
    }
    let stale = json!({"preconditions": {"resourceVersion": "999"}});
    let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &stale).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let current = json!({
        "kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
        "propagationPolicy": "Foreground",
        "preconditions": {"uid": created["metadata"]["uid"], "resourceVersion": created["metadata"]["resourceVersion"]},
    });
    let (code, body) = api.json("DELETE", &format!("{TASKS}/t"), &current).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = api.get(&format!("{TASKS}/t")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn resource_version_is_a_string_and_a_bad_one_is_named() {
    let api = Api::new();
    let created = api.create_task("a").await;
    assert!(
        created["metadata"]["resourceVersion"].is_string(),
        "{created}"
    );
    let (_, list) = api.get(TASKS).await;
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
    assert!(
        list["items"][0]["metadata"]["resourceVersion"].is_string(),
        "{list}"
    );
    // An old client's number still works as a precondition.
    let (code, body) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"metadata": {"resourceVersion": 1}, "spec": {"priority": 2}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .json(
            "PATCH",
            &format!("{TASKS}/a"),
            &json!({"metadata": {"resourceVersion": "x1"}, "spec": {"priority": 3}}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        message(&body).contains("\"x1\" is not a resourceVersion"),
        "{body}"
    );
    // Errors are Status objects client-go decodes: apiVersion v1.
    let (code, body) = api.get(&format!("{TASKS}/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        (&body["apiVersion"], &body["kind"], &body["status"]),
        (&json!("v1"), &json!("Status"), &json!("Failure"))
    );
}

/// A task naming no image, on a server with no default image, is refused at create once
/// nodes are registered and none reports a default image, through every way of creating
/// it (POST, our apply, server-side apply); an image, or a node with a default, lets it in.
#[tokio::test]
async fn a_task_with_no_image_anywhere_is_refused_on_every_create_path() {
    let api = Api::with(Config {
        default_image: None,
        ..Config::insecure()
    });
    // No node yet: the task waits for one.
    let (code, body) = api.json("POST", TASKS, &task_json("early")).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let node = json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (code, body) = api.json("POST", NODES, &node).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    let refused = |(code, body): (StatusCode, Value)| {
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["details"]["causes"][0]["field"], "spec.image",
            "{body}"
        );
    };
    refused(api.json("POST", TASKS, &task_json("t1")).await);
    refused(
        api.json("POST", &format!("{TASKS}/t1/apply"), &task_json("t1"))
            .await,
    );
    refused(
        api.call(
            "PATCH",
            &format!("{TASKS}/t1?fieldManager=kubectl"),
            Some("application/apply-patch+yaml"),
            task_json("t1").to_string(),
        )
        .await,
    );

    let mut with_image = task_json("t2");
    with_image["spec"]["image"] = json!("busybox:latest");
    let (code, body) = api.json("POST", TASKS, &with_image).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    let status = json!({"status": {"defaultImage": "busybox:latest"}});
    let (code, body) = api
        .call(
            "PATCH",
            &format!("{NODES}/n1/status"),
            Some("application/merge-patch+json"),
            status.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api.json("POST", TASKS, &task_json("t3")).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}
