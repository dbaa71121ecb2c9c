//! `GET /openapi/v3` and `GET /openapi/v3/apis/kohakuriver/v1`: the OpenAPI v3 document
//! kubectl reads for `explain` and to see that PATCH takes `fieldValidation` (so `apply`
//! and `create` leave validation to the server). The document is
//! `kohakuriver_api::openapi::document`, built once.
//!
//! Caching works as in kube-apiserver (kube-openapi's handler3): the index names the
//! document by a URL carrying `?hash=` of its bytes, and the document asked with that hash
//! is `Cache-Control: public, immutable`, so kubectl's HTTP cache keeps it for good; a new
//! server version makes a new hash, so a client never reads a stale one. A stale hash is
//! redirected (301) to the current URL; no hash is `no-cache`.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kohakuriver_api::auth::{Target, Verb};
use kohakuriver_api::openapi::{self, GROUP_VERSION_PATH};
use sha2::{Digest, Sha512};

use crate::auth::Caller;
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;

/// The document's bytes and their hash, made once per process.
struct Document {
    bytes: Vec<u8>,
    hash: String,
}

fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let bytes = serde_json::to_vec(&openapi::document()).expect("the document serializes");
        let hash = Sha512::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Document { bytes, hash }
    })
}

/// The URL of the current document, as the index names it.
fn current_url() -> String {
    format!("/openapi/v3/{GROUP_VERSION_PATH}?hash={}", document().hash)
}

/// `GET /openapi/v3`: the index of group-version documents.
pub async fn index(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.allow(Verb::Get, &Target::Discovery, &state.config().auth.policy)?;
    let body = serde_json::json!({
        "paths": { GROUP_VERSION_PATH: { "serverRelativeURL": current_url() } }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body.to_string(),
    )
        .into_response())
}

/// `GET /openapi/v3/apis/kohakuriver/v1[?hash=H]`: the document.
pub async fn group_version(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, AppError> {
    caller.allow(Verb::Get, &Target::Discovery, &state.config().auth.policy)?;
    let doc = document();
    let etag = format!("\"{}\"", doc.hash);
    let cache = match params.get("hash") {
        None | Some("") => "no-cache, private",
        Some(hash) if hash == doc.hash => "public, immutable",
        Some(_) => {
            return Ok((
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, current_url())],
            )
                .into_response());
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
            (header::ETAG, etag),
            (header::VARY, "Accept".to_string()),
        ],
        doc.bytes.clone(),
    )
        .into_response())
}
