//! Discovery through the router: the legacy and aggregated shapes kubectl decodes, content
//! negotiation, `ETag`/`If-None-Match`, `/version`, and the 404 for namespaced paths.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::Api;
use kohakuriver_apiserver::router;
use serde_json::Value;
use tower::ServiceExt;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// What kubectl 1.32 sends.
const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

async fn get(api: &Api, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router(api.state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, headers, value)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers[header::CONTENT_TYPE].to_str().unwrap()
}

#[tokio::test]
async fn legacy_discovery_shapes() {
    let api = Api::new();
    let (code, headers, body) = get(&api, "/api", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(content_type(&headers), "application/json");
    assert_eq!(body["kind"], "APIVersions");
    assert_eq!(body["versions"], serde_json::json!([]));

    let (_, _, body) = get(&api, "/apis", &[("accept", "application/json")]).await;
    assert_eq!(body["kind"], "APIGroupList");
    assert_eq!(body["groups"][0]["name"], "kohakuriver");
    assert_eq!(
        body["groups"][0]["preferredVersion"]["groupVersion"],
        "kohakuriver/v1"
    );

    let (_, _, body) = get(&api, "/apis/kohakuriver", &[]).await;
    assert_eq!(body["kind"], "APIGroup");
    assert_eq!(body["versions"][0]["version"], "v1");

    let (_, _, body) = get(&api, "/apis/kohakuriver/v1", &[]).await;
    assert_eq!(body["kind"], "APIResourceList");
    let tasks = &body["resources"][0];
    assert_eq!(tasks["name"], "tasks");
    assert_eq!(tasks["namespaced"], false);
    assert_eq!(tasks["kind"], "Task");
    assert_eq!(tasks["shortNames"][0], "tk");
}

#[tokio::test]
async fn aggregated_discovery_when_asked() {
    let api = Api::new();
    let (code, headers, body) = get(&api, "/apis", &[("accept", KUBECTL_ACCEPT)]).await;
    assert_eq!(code, 200);
    assert_eq!(content_type(&headers), AGGREGATED_V2);
    assert_eq!(body["kind"], "APIGroupDiscoveryList");
    assert_eq!(body["apiVersion"], "apidiscovery.k8s.io/v2");
    let version = &body["items"][0]["versions"][0];
    let resources: Vec<&str> = version["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["tasks", "taskgroups", "nodes", "events"]);
    assert_eq!(version["resources"][0]["scope"], "Cluster");

    let (_, headers, body) = get(&api, "/api", &[("accept", KUBECTL_ACCEPT)]).await;
    assert_eq!(content_type(&headers), AGGREGATED_V2);
    assert_eq!(body["items"], serde_json::json!([]));

    let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
    let (_, headers, body) = get(&api, "/apis", &[("accept", beta)]).await;
    assert_eq!(content_type(&headers), beta);
    assert_eq!(body["apiVersion"], "apidiscovery.k8s.io/v2beta1");
}

#[tokio::test]
async fn etag_revalidation_answers_304_and_differs_per_shape() {
    let api = Api::new();
    let (_, legacy, _) = get(&api, "/apis", &[]).await;
    let (_, aggregated, _) = get(&api, "/apis", &[("accept", KUBECTL_ACCEPT)]).await;
    let tag = legacy[header::ETAG].to_str().unwrap().to_string();
    assert_ne!(tag, aggregated[header::ETAG].to_str().unwrap());
    assert_eq!(legacy[header::CACHE_CONTROL], "no-cache, private");
    assert_eq!(legacy[header::VARY], "Accept");

    let (code, headers, body) = get(&api, "/apis", &[("if-none-match", &tag)]).await;
    assert_eq!(code, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::ETAG].to_str().unwrap(), tag);
    assert!(body.is_null());
    // An old ETag (another server version's answer) gets the whole current answer.
    let (code, _, body) = get(&api, "/apis", &[("if-none-match", "\"0123\"")]).await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "APIGroupList");
    // The aggregated answer's ETag does not validate the legacy one.
    let other = aggregated[header::ETAG].to_str().unwrap();
    let (code, _, _) = get(&api, "/apis", &[("if-none-match", other)]).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn version_is_this_server() {
    let api = Api::new();
    let (code, headers, body) = get(&api, "/version", &[]).await;
    assert_eq!(code, 200);
    assert!(headers.contains_key(header::ETAG));
    assert_eq!(
        body["gitVersion"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(body["compiler"], "rustc");
    assert!(body["platform"].as_str().unwrap().contains('/'), "{body}");
}

#[tokio::test]
async fn namespaced_and_core_paths_are_404_with_the_reason() {
    let api = Api::new();
    for path in [
        "/apis/kohakuriver/v1/namespaces/foo/tasks",
        "/apis/kohakuriver/v1/namespaces/default/tasks/t1",
    ] {
        let (code, _, body) = get(&api, path, &[]).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["reason"], "NotFound");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("cluster-scoped"), "{message}");
        assert!(message.contains("--namespace"), "{message}");
    }
    let (code, _, body) = get(&api, "/api/v1/namespaces/default/pods", &[]).await;
    assert_eq!(code, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no core (v1) group"),
        "{body}"
    );
}
