//! `GET /{plural}`: a list, or with `watch=true` a watch stream; either as a `Table` when
//! the client asks for one.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use kohakuriver_api::ListMeta;
use kohakuriver_api::auth::Verb;
use kohakuriver_api::selector::FieldRequirement;
use kohakuriver_api::table::TableOptions;

use crate::admission::Served;
use crate::auth::Caller;
use crate::error::AppError;
use crate::pages::Continue;
use crate::params::Params;
use crate::state::AppState;
use crate::table::{self, Presentation};
use crate::watch;

/// Lists the objects of a kind that match the selectors, ordered by name, with the revision
/// they were read at, whole or a page at a time (`limit`, `continue`); or streams a watch. A node may only ask for the tasks bound to it
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
    let limit = params.number("limit")?.unwrap_or(0);
    let from = params
        .get("continue")
        .filter(|token| !token.is_empty())
        .map(Continue::decode)
        .transpose()
        .map_err(AppError::bad_request)?;
    if limit == 0 && from.is_none() {
        // The whole list: read in one snapshot, filtered outside it.
        let (revision, bodies) = state.store().list(R::KIND, node, phase).await?;
        let matched = bodies
            .iter()
            .map(String::as_str)
            .filter(|b| selection.matches::<R>(b));
        let meta = ListMeta {
            store_id: Some(state.store().id().to_string()),
            ..ListMeta::at(revision)
        };
        return answer::<R>(matched, meta, presentation);
    }
    // A page: the selection is applied while reading (to each object as of the list's
    // revision), so the page fills up to `limit` matches. Like Kubernetes, the remaining count
    // is given only without a selector.
    let count = selection.is_everything();
    let page = state
        .store()
        .list_page(
            R::KIND,
            node,
            phase,
            from,
            usize::try_from(limit).unwrap_or(usize::MAX),
            move |body| selection.matches::<R>(body),
            count,
        )
        .await?;
    let meta = ListMeta {
        resource_version: page.revision,
        continue_token: page.next.map(|next| next.encode()),
        remaining_item_count: page.remaining,
        store_id: Some(state.store().id().to_string()),
    };
    answer::<R>(page.bodies.iter().map(String::as_str), meta, presentation)
}

/// The list answer: a `Table`, or the stored JSON spliced in as it is (no parse, no
/// re-serialisation).
fn answer<'a, R: Served>(
    bodies: impl Iterator<Item = &'a str>,
    meta: ListMeta,
    presentation: Option<TableOptions>,
) -> Result<Response, AppError> {
    if let Some(options) = presentation {
        let bodies: Vec<&str> = bodies.collect();
        return table::list::<R>(&bodies, meta, options);
    }
    let meta = serde_json::to_string(&meta).map_err(|e| AppError::internal(e.to_string()))?;
    let mut out = format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{meta},\"items\":[",
        kohakuriver_api::API_VERSION,
        R::KIND
    );
    let mut first = true;
    for body in bodies {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(body);
    }
    out.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}
