//! `GET /{plural}`: a list, or with `watch=true` a watch stream; either as a `Table` when
//! the client asks for one.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use kohakuriver_api::auth::Verb;
use kohakuriver_api::selector::FieldRequirement;

use crate::admission::Served;
use crate::auth::Caller;
use crate::error::AppError;
use crate::params::Params;
use crate::state::AppState;
use crate::table::{self, Presentation};
use crate::watch;

/// Lists the objects of a kind that match the selectors, ordered by name, with the revision
/// they were read at; or streams a watch. A node may only ask for the tasks bound to it
/// (`fieldSelector=status.node=NAME`); a user on a `--private-tasks` server sees only their
/// own tasks, as if they had asked for `metadata.owner=NAME`.
pub async fn list<R: Served>(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
    Presentation(presentation): Presentation,
) -> Result<Response, AppError> {
    let mut selection = params.selection::<R>()?;
    let watch = params.flag("watch")?;
    let verb = if watch { Verb::Watch } else { Verb::List };
    let policy = &state.config().auth.policy;
    let (node, _) = selection.index_hints();
    caller.allow(verb, &R::collection(node.as_deref()), policy)?;
    if let Some(owner) = caller.list_owner(policy)
        && R::SELECTABLE_FIELDS.contains(&"metadata.owner")
    {
        selection.fields.requirements.push(FieldRequirement {
            path: "metadata.owner".to_string(),
            value: owner,
            negated: false,
        });
    }
    if watch {
        let options = watch::WatchOptions {
            from: params.number("resourceVersion")?,
            bookmarks: params.flag("allowWatchBookmarks")?,
            initial_events: params.optional_flag("sendInitialEvents")?,
            timeout: params
                .number("timeoutSeconds")?
                .map(std::time::Duration::from_secs),
            store_id: params.get("storeId").map(str::to_string),
        };
        // Counted before any work; the guard goes with the stream and frees the slot when
        // the stream ends.
        let guard = state.watches().open(caller.owner().as_deref())?;
        let response = watch::respond::<R>(state, options, selection, guard).await?;
        return Ok(match presentation {
            Some(options) => table::watch::<R>(response, options),
            None => response,
        });
    }
    let (node, phase) = selection.index_hints();
    let (revision, bodies) = state.store().list(R::KIND, node, phase).await?;
    if let Some(options) = presentation {
        let matched: Vec<&str> = bodies
            .iter()
            .map(String::as_str)
            .filter(|b| selection.matches::<R>(b))
            .collect();
        return table::list::<R>(&matched, revision, options);
    }
    // The stored JSON is spliced in as it is: no parse, no re-serialisation, unless a
    // selector needs to look inside.
    let mut out = String::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 128);
    out.push_str(&format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{{\"resourceVersion\":\"{revision}\",\"storeId\":\"{}\"}},\"items\":[",
        kohakuriver_api::API_VERSION,
        R::KIND,
        state.store().id()
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
