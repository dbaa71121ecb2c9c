//! The HTTP routes: one set per kind (collection, object, status subresource, apply), the
//! log proxy, the credential endpoints, discovery, the OpenAPI documents, and the server's
//! own endpoints. Unknown paths and methods answer `Status` JSON like every other error.
//!
//! Every route is listed once, in [`routes`], with the methods it takes; [`router`] is built
//! from that list, and so is [`route_table`], which the authorization tests walk so a new
//! route cannot go untested. Every request passes `auth::authenticate` first.

mod backup;
mod collection;
mod credentials;
mod discovery;
mod metrics;
mod objects;
mod openapi;
mod server;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};
use kohakuriver_api::discovery::GROUP;
use kohakuriver_api::{API_PREFIX, Event, Node, Task, TaskGroup};
use tower_http::trace::TraceLayer;

use crate::admission::Served;
use crate::auth;
use crate::logs;
use crate::state::AppState;

/// One route: its path (axum syntax), the methods it takes, and its handlers.
struct Route {
    path: String,
    methods: &'static [Method],
    handler: MethodRouter<AppState>,
}

fn route(path: String, methods: &'static [Method], handler: MethodRouter<AppState>) -> Route {
    Route {
        path,
        methods,
        handler,
    }
}

/// Every route of the API.
fn routes() -> Vec<Route> {
    let api = |p: &str| format!("{API_PREFIX}/{p}");
    let mut all = vec![
        route("/healthz".into(), &[Method::GET], get(server::healthz)),
        route("/cacerts".into(), &[Method::GET], get(server::cacerts)),
        route("/version".into(), &[Method::GET], get(discovery::version)),
        route("/metrics".into(), &[Method::GET], get(metrics::metrics)),
        route("/api".into(), &[Method::GET], get(discovery::core)),
        route("/apis".into(), &[Method::GET], get(discovery::groups)),
        route(
            format!("/apis/{GROUP}"),
            &[Method::GET],
            get(discovery::group),
        ),
        route(API_PREFIX.into(), &[Method::GET], get(discovery::resources)),
        route("/openapi/v3".into(), &[Method::GET], get(openapi::index)),
        route(
            format!(
                "/openapi/v3/{}",
                kohakuriver_api::openapi::GROUP_VERSION_PATH
            ),
            &[Method::GET],
            get(openapi::group_version),
        ),
        route(api("info"), &[Method::GET], get(server::info)),
        route(
            api("schemas/task"),
            &[Method::GET],
            get(server::task_schema),
        ),
        route(
            api("schemas/node"),
            &[Method::GET],
            get(server::node_schema),
        ),
        route(
            api("schemas/taskgroup"),
            &[Method::GET],
            get(server::task_group_schema),
        ),
        route(
            api("schemas/event"),
            &[Method::GET],
            get(server::event_schema),
        ),
        route(api("whoami"), &[Method::GET], get(credentials::whoami)),
        route(
            api("tokens"),
            &[Method::GET, Method::POST],
            get(credentials::list).post(credentials::create),
        ),
        route(
            api("tokens/{id}"),
            &[Method::DELETE],
            delete(credentials::revoke),
        ),
        route(api("join"), &[Method::POST], post(credentials::join)),
        route(
            api("nodes/{name}/credentials"),
            &[Method::GET],
            get(credentials::node_credentials),
        ),
        route(api("tasks/{name}/log"), &[Method::GET], get(logs::proxy)),
        route(api("backup"), &[Method::GET], get(backup::backup)),
    ];
    all.extend(kind_routes::<Task>());
    all.extend(kind_routes::<TaskGroup>());
    all.extend(kind_routes::<Node>());
    all.extend(kind_routes::<Event>());
    all
}

/// The routes of one kind: `/{plural}`, `/{plural}/{name}`, `…/status` and `…/apply`.
fn kind_routes<R: Served>() -> Vec<Route> {
    let base = format!("{API_PREFIX}/{}", R::PLURAL);
    let has_status = R::SUBRESOURCES.contains(&kohakuriver_api::resource::STATUS_SUBRESOURCE);
    let mut routes = vec![
        route(
            base.clone(),
            &[Method::GET, Method::POST],
            get(collection::list::<R>).post(objects::create::<R>),
        ),
        route(
            format!("{base}/{{name}}"),
            &[Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
            get(objects::get::<R>)
                .put(objects::replace::<R>)
                .patch(objects::patch::<R>)
                .delete(objects::delete::<R>),
        ),
        route(
            format!("{base}/{{name}}/apply"),
            &[Method::POST],
            post(objects::apply::<R>),
        ),
    ];
    // Kinds without a status (events) have no status route.
    if has_status {
        routes.push(route(
            format!("{base}/{{name}}/status"),
            &[Method::GET, Method::PUT, Method::PATCH],
            get(objects::get::<R>)
                .put(objects::replace_status::<R>)
                .patch(objects::patch_status::<R>),
        ));
    }
    routes
}

/// Every (method, path) the API serves, paths in axum syntax (`/tasks/{name}`).
pub fn route_table() -> Vec<(Method, String)> {
    routes()
        .into_iter()
        .flat_map(|r| r.methods.iter().map(move |m| (m.clone(), r.path.clone())))
        .collect()
}

/// The whole API as an axum router over `state`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        router = router.route(&r.path, r.handler);
    }
    router
        .fallback(server::not_found)
        .method_not_allowed_fallback(server::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outside authentication, so refused requests are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
