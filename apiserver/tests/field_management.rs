//! Handler tests for what kubectl's writes need: server-side apply (create, update,
//! conflicts, force, dropped fields), `managedFields` of ordinary writes, and
//! `fieldValidation` with its `Warning` headers.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use common::{Api, TASKS};
use kohakuriver_apiserver::router;
use serde_json::{Value, json};
use tower::ServiceExt;

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

/// One request with a content type and a User-Agent; answers code, headers and body.
async fn send(
    api: &Api,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &Value,
) -> (StatusCode, HeaderMap, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", "kubectl/v1.32.0 (linux/amd64) kubernetes/abc")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    let code = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, headers, serde_json::from_slice(&bytes).unwrap())
}

fn manifest(spec: Value) -> Value {
    json!({"apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": {"name": "t"}, "spec": spec})
}

/// `manager/Operation` of every managedFields entry.
fn managers(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            )
        })
        .collect()
}

fn warnings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_is_idempotent() {
    let api = Api::new();
    let uri = format!("{TASKS}/t?fieldManager=kubectl&force=false&fieldValidation=Strict");
    let config = manifest(json!({"command": ["echo"], "priority": 2}));
    let (code, _, created) = send(&api, "PATCH", &uri, APPLY, &config).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(managers(&created), ["kubectl/Apply"]);
    let entry = &created["metadata"]["managedFields"][0];
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["apiVersion"], "kohakuriver/v1");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:spec": {"f:command": {}, "f:priority": {}}})
    );
    assert!(entry["time"].is_string());

    let (code, _, again) = send(&api, "PATCH", &uri, APPLY, &config).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(again, created, "a repeated apply changes nothing");

    let changed = manifest(json!({"command": ["echo"], "priority": 4}));
    let (code, _, updated) = send(&api, "PATCH", &uri, APPLY, &changed).await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["priority"], 4);
    assert_eq!(updated["metadata"]["generation"], 2);

    // Dropping a field the applier owned removes it.
    let dropped = manifest(json!({"command": ["echo"]}));
    let (_, _, updated) = send(&api, "PATCH", &uri, APPLY, &dropped).await;
    assert!(updated["spec"].get("priority").is_none(), "{updated}");
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let api = Api::new();
    let (code, _, _) = send(
        &api,
        "POST",
        &format!("{TASKS}?fieldManager=kubectl-client-side-apply"),
        "application/json",
        &manifest(json!({"command": ["echo"], "priority": 1})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _, edited) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        MERGE,
        &json!({"spec": {"priority": 3}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        managers(&edited),
        ["kubectl-client-side-apply/Update", "kubectl/Update"],
        "the merge patch's manager comes from the User-Agent"
    );

    let config = manifest(json!({"command": ["echo"], "priority": 5}));
    let uri = format!("{TASKS}/t?fieldManager=other&force=false");
    let (code, _, status) = send(&api, "PATCH", &uri, APPLY, &config).await;
    assert_eq!(code, StatusCode::CONFLICT, "{status}");
    assert_eq!(status["reason"], "Conflict");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using kohakuriver/v1 at "
        ),
        "{message}"
    );
    assert!(message.ends_with(": .spec.priority"), "{message}");
    let cause = &status["details"]["causes"][0];
    assert_eq!(cause["reason"], "FieldManagerConflict");
    assert_eq!(cause["field"], ".spec.priority");
    assert!(
        cause["message"]
            .as_str()
            .unwrap()
            .starts_with("conflict with \"kubectl\" using kohakuriver/v1")
    );

    let forced = format!("{TASKS}/t?fieldManager=other&force=true");
    let (code, _, taken) = send(&api, "PATCH", &forced, APPLY, &config).await;
    assert_eq!(code, StatusCode::OK, "{taken}");
    assert_eq!(taken["spec"]["priority"], 5);
    assert_eq!(
        managers(&taken),
        ["kubectl-client-side-apply/Update", "other/Apply"],
        "the forced field left its old owner, who then owned nothing"
    );
}

#[tokio::test]
async fn apply_keeps_admission_rules_and_refuses_a_wrong_kind() {
    let api = Api::new();
    let uri = format!("{TASKS}/t?fieldManager=kubectl");
    let mut wrong = manifest(json!({"command": ["echo"]}));
    wrong["kind"] = json!("Node");
    let (code, _, status) = send(&api, "PATCH", &uri, APPLY, &wrong).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    let (code, _, status) = send(
        &api,
        "PATCH",
        &uri,
        APPLY,
        &manifest(json!({"command": ["echo"], "resources": {"cpu": 1, "memory": "8X"}})),
    )
    .await;
    assert!(code.is_client_error(), "{status}");
    let (code, _, status) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        "application/strategic-merge-patch+json",
        &json!({"spec": {"priority": 1}}),
    )
    .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        status["message"].as_str().unwrap().contains("merge-patch"),
        "{status}"
    );
}

#[tokio::test]
async fn field_validation_strict_warn_and_ignore() {
    let api = Api::new();
    let mut body = manifest(json!({"command": ["echo"], "foo": 1, "resources": {"cpus": 2}}));
    let (code, _, status) = send(&api, "POST", TASKS, "application/json", &body).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("unknown field \"spec.foo\"")
            && message.contains("unknown field \"spec.resources.cpus\""),
        "{message}"
    );

    let (code, headers, created) = send(
        &api,
        "POST",
        &format!("{TASKS}?fieldValidation=Warn"),
        "application/json",
        &body,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(
        warnings(&headers),
        [
            r#"299 - "unknown field \"spec.foo\"""#,
            r#"299 - "unknown field \"spec.resources.cpus\"""#
        ]
    );
    assert!(created["spec"].get("foo").is_none());

    body["metadata"]["name"] = json!("u");
    let (code, headers, _) = send(
        &api,
        "POST",
        &format!("{TASKS}?fieldValidation=Ignore"),
        "application/json",
        &body,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    assert!(warnings(&headers).is_empty());

    // Merge patches and applies take the parameter too.
    let (code, headers, _) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/u?fieldValidation=Warn"),
        MERGE,
        &json!({"spec": {"bar": 1}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        warnings(&headers),
        [r#"299 - "unknown field \"spec.bar\"""#]
    );
    let (code, _, _) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/u?fieldManager=kubectl&fieldValidation=Strict"),
        APPLY,
        &manifest(json!({"command": ["echo"], "baz": 1})),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _, status) = send(
        &api,
        "POST",
        &format!("{TASKS}?fieldValidation=Loose"),
        "application/json",
        &body,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
}

#[tokio::test]
async fn a_no_op_merge_patch_keeps_the_revision() {
    let api = Api::new();
    let created = api.create_task("t").await;
    let (code, _, same) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        MERGE,
        &json!({"spec": {"command": ["echo", "hi"]}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(same, created);
}

#[tokio::test]
async fn json_patch_and_handing_managed_fields_over() {
    let api = Api::new();
    let created = api.create_task("t").await;
    let version = created["metadata"]["resourceVersion"].clone();
    let json_patch = "application/json-patch+json";
    let (code, _, patched) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        json_patch,
        &json!([{"op": "test", "path": "/metadata/resourceVersion", "value": version},
                {"op": "add", "path": "/spec/priority", "value": 7}]),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"]["priority"], 7);
    let (code, _, status) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        json_patch,
        &json!([{"op": "test", "path": "/spec/priority", "value": 1}]),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    // Managed fields sent in a write are taken as sent (kubectl hands client-side-applied
    // fields over to server-side apply this way).
    let entry = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "kohakuriver/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:priority": {}}}}]);
    let (code, _, handed) = send(
        &api,
        "PATCH",
        &format!("{TASKS}/t"),
        json_patch,
        &json!([{"op": "replace", "path": "/metadata/managedFields", "value": entry}]),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{handed}");
    assert_eq!(managers(&handed), ["kubectl/Apply"]);
    // Only the creator's fields were sent: defaults the server filled in belong to no one.
    let created = managers(&created);
    assert_eq!(created, ["unknown/Update"]);
}

#[tokio::test]
async fn duplicate_fields_are_refused_when_strict_and_reported_when_warned() {
    let api = Api::new();
    let body = r#"{"apiVersion":"kohakuriver/v1","kind":"Task","metadata":{"name":"d"},"spec":{"command":["x"],"priority":1,"priority":2}}"#;
    let send_raw = |uri: String| {
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        router(api.state.clone()).oneshot(request)
    };
    let response = send_raw(TASKS.to_string()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field \"spec.priority\""),
        "{status}"
    );
    let response = send_raw(format!("{TASKS}?fieldValidation=Warn"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        warnings(response.headers()),
        [r#"299 - "duplicate field \"spec.priority\"""#]
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let created: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(created["spec"]["priority"], 2, "the last one is kept");
}
