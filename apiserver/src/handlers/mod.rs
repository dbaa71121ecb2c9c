//! The HTTP routes: one set per kind (collection, object, status subresource, apply), the
//! log proxy, and the server's own endpoints. Unknown paths and methods answer `Status`
//! JSON like every other error.

mod collection;
mod objects;
mod server;

use axum::Router;
use axum::routing::{get, post};
use kohakuriver_api::{API_PREFIX, Node, Task};
use tower_http::trace::TraceLayer;

use crate::admission::Served;
use crate::logs;
use crate::state::AppState;

/// The whole API as an axum router over `state`.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(server::healthz))
        .route("/cacerts", get(server::cacerts))
        .route(&format!("{API_PREFIX}/info"), get(server::info))
        .route(
            &format!("{API_PREFIX}/schemas/task"),
            get(server::task_schema),
        )
        .route(
            &format!("{API_PREFIX}/schemas/node"),
            get(server::node_schema),
        )
        .route(
            &format!("{API_PREFIX}/tasks/{{name}}/log"),
            get(logs::proxy),
        );
    let routes = kind_routes::<Node>(kind_routes::<Task>(routes));
    routes
        .fallback(server::not_found)
        .method_not_allowed_fallback(server::method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The routes of one kind: `/{plural}`, `/{plural}/{name}`, `…/status` and `…/apply`.
fn kind_routes<R: Served>(router: Router<AppState>) -> Router<AppState> {
    let base = format!("{API_PREFIX}/{}", R::PLURAL);
    router
        .route(&base, get(collection::list::<R>).post(objects::create::<R>))
        .route(
            &format!("{base}/{{name}}"),
            get(objects::get::<R>)
                .put(objects::replace::<R>)
                .patch(objects::patch::<R>)
                .delete(objects::delete::<R>),
        )
        .route(
            &format!("{base}/{{name}}/status"),
            get(objects::get::<R>)
                .put(objects::replace_status::<R>)
                .patch(objects::patch_status::<R>),
        )
        .route(&format!("{base}/{{name}}/apply"), post(objects::apply::<R>))
}
