//! API discovery and `/version`, the answers kubectl reads before anything else. The
//! contents come from `kohakuriver_api::discovery`; this only picks the shape the `Accept`
//! header asks for and makes the answer cacheable without ever being stale.
//!
//! Freshness: every answer carries an `ETag` (a hash of its body, so it changes exactly
//! when the content does), `Cache-Control: no-cache` (an HTTP cache, such as kubectl's
//! `~/.kube/cache/http`, may keep it but must revalidate it with `If-None-Match` before
//! each use) and `Vary: Accept` (the legacy and aggregated shapes of `/apis` are kept
//! apart). A request whose `If-None-Match` names the current ETag gets 304 and no body.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kohakuriver_api::auth::{Target, Verb};
use kohakuriver_api::discovery::{self, DiscoveryFormat};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;

/// The `ETag` of a body: a quoted prefix of its SHA-256.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// True when `If-None-Match` names `tag` (weak or strong) or is `*`.
fn matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// The answer for a discovery document: 200 with the body, or 304 when the client holds it.
fn answer(headers: &HeaderMap, content_type: &str, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("discovery documents serialize");
    let tag = etag(&body);
    let common = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, "no-cache, private".to_string()),
        (header::VARY, "Accept".to_string()),
    ];
    if matches(headers, &tag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response()
}

fn allow(caller: &Caller, state: &AppState) -> Result<(), AppError> {
    caller.allow(Verb::Get, &Target::Discovery, &state.config().auth.policy)
}

fn format_of(headers: &HeaderMap) -> DiscoveryFormat {
    discovery::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

/// The answer in the format the client asked for: `legacy`, or the aggregated
/// `APIGroupDiscoveryList` (`core`: the core group's, which is empty here).
fn negotiated(headers: &HeaderMap, legacy: &impl Serialize, core: bool) -> Response {
    match format_of(headers) {
        DiscoveryFormat::Legacy => answer(headers, DiscoveryFormat::Legacy.content_type(), legacy),
        format => answer(
            headers,
            format.content_type(),
            &discovery::group_discovery_list(format, core),
        ),
    }
}

/// `GET /api`: `APIVersions` with no versions (no core group), or an empty aggregated list.
pub async fn core(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    allow(&caller, &state)?;
    Ok(negotiated(&headers, &discovery::api_versions(), true))
}

/// `GET /apis`: `APIGroupList`, or the aggregated `APIGroupDiscoveryList` with every kind.
pub async fn groups(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    allow(&caller, &state)?;
    Ok(negotiated(&headers, &discovery::api_group_list(), false))
}

/// `GET /apis/kohakuriver`: `APIGroup`.
pub async fn group(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    allow(&caller, &state)?;
    Ok(answer(
        &headers,
        "application/json",
        &discovery::api_group(),
    ))
}

/// `GET /apis/kohakuriver/v1`: `APIResourceList`.
pub async fn resources(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    allow(&caller, &state)?;
    Ok(answer(
        &headers,
        "application/json",
        &discovery::api_resource_list(),
    ))
}

/// `GET /version`: this server's version.
pub async fn version(headers: HeaderMap) -> Result<Response, AppError> {
    let info = discovery::version_info(
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    Ok(answer(&headers, "application/json", &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_follows_the_body() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
        assert!(etag(b"a").starts_with('"') && etag(b"a").ends_with('"'));
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let check = |value: &str, want: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, value.parse().unwrap());
            assert_eq!(matches(&headers, "\"abc\""), want, "{value}");
        };
        check("\"abc\"", true);
        check("\"x\", W/\"abc\"", true);
        check("*", true);
        check("\"abd\"", false);
        assert!(!matches(&HeaderMap::new(), "\"abc\""));
    }
}
