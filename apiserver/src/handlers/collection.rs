//! `GET /{plural}`: a list, or with `watch=true` a watch stream.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::admission::Served;
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;
use crate::watch;

/// Lists the objects of a kind that match the selectors, ordered by name, with the revision
/// they were read at; or streams a watch.
pub async fn list<R: Served>(
    State(state): State<AppState>,
    params: Params,
) -> Result<Response, AppError> {
    let selection = params.selection::<R>()?;
    if params.flag("watch")? {
        let from = params.number("resourceVersion")?;
        return watch::respond::<R>(state, from, selection).await;
    }
    let (node, phase) = selection.index_hints();
    let (revision, bodies) = state.store().list(R::KIND, node, phase).await?;
    // The stored JSON is spliced in as it is: no parse, no re-serialisation, unless a
    // selector needs to look inside.
    let mut out = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 128);
    out.push_str(&format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{{\"resourceVersion\":{revision}}},\"items\":[",
        kohakuriver_api::API_VERSION,
        R::KIND
    ));
    let mut first = true;
    for body in bodies.iter().filter(|b| selection.matches::<R>(b)) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(body);
    }
    out.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}
