//! `/openapi/v3`: the index names the document by its hash; the document asked by that
//! hash may be cached for good, anything else must be revalidated or is redirected.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Api;
use kohakuriver_apiserver::router;
use serde_json::Value;
use tower::ServiceExt;

async fn get(api: &Api, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn index_names_the_document_by_hash_and_caching_follows_it() {
    let api = Api::new();
    let (code, headers, index) = get(&api, "/openapi/v3").await;
    assert_eq!(code, StatusCode::OK);
    assert!(header(&headers, "cache-control").contains("no-cache"));
    let url = index["paths"]["apis/kohakuriver/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let hash = url
        .strip_prefix("/openapi/v3/apis/kohakuriver/v1?hash=")
        .unwrap_or_else(|| panic!("{url}"));
    assert!(
        hash.len() >= 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );

    let (code, headers, doc) = get(&api, &url).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(header(&headers, "cache-control"), "public, immutable");
    assert_eq!(header(&headers, "etag"), format!("\"{hash}\""));
    assert_eq!(doc["openapi"], "3.0.0");
    assert!(doc["components"]["schemas"]["Task"].is_object());
    assert!(doc["paths"]["/apis/kohakuriver/v1/tasks/{name}"]["patch"].is_object());

    let (code, headers, same) = get(&api, "/openapi/v3/apis/kohakuriver/v1").await;
    assert_eq!(code, StatusCode::OK);
    assert!(header(&headers, "cache-control").contains("no-cache"));
    assert_eq!(same, doc);

    let (code, headers, _) = get(&api, "/openapi/v3/apis/kohakuriver/v1?hash=0BSOLETE").await;
    assert_eq!(code, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&headers, "location"), url);
}
