//! API request metrics: a counter by route template, verb and code, and a latency histogram
//! by route template and verb, kept by the [`track`] middleware around every route.
//!
//! Labels are bounded: the route is the template the router matched
//! (`/apis/kohakuriver/v1/tasks/{name}`, never a raw path; `unmatched` for a path no route
//! serves), the verb one of a fixed list ([`verb`]), the code a number. A request's latency
//! is the time to its answer's head: a watch or a followed log is counted once its stream
//! begins, not when it ends.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::state::AppState;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The route label: the template the router matched, shared with the router's own
/// `MatchedPath` (a reference count, no copy per request), or [`UNMATCHED`].
#[derive(Clone, Debug)]
enum Route {
    Matched(MatchedPath),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(path) => path.as_str(),
            Route::Unmatched => UNMATCHED,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// One request's count labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountLabels {
    route: Route,
    verb: &'static str,
    code: u16,
}

/// One request's latency labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: Route,
    verb: &'static str,
}

/// The request families; a cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    counts: Family<CountLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        RequestMetrics {
            counts: Family::default(),
            // 0.5 ms to about 16 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        }
    }
}

impl RequestMetrics {
    /// Registers both families (names without the `kohakuriver_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "api_requests",
            "API requests by route template, verb and HTTP code",
            self.counts.clone(),
        );
        registry.register_with_unit(
            "api_request_latency",
            "Time from a request's arrival to its answer's head, by route template and verb",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    fn observe(&self, route: Route, verb: &'static str, code: u16, seconds: f64) {
        self.counts
            .get_or_create(&CountLabels {
                route: route.clone(),
                verb,
                code,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { route, verb })
            .observe(seconds);
    }
}

/// The verb label: the HTTP method, `WATCH` for a GET that asks `watch=true` (or `1`), and
/// `OTHER` for any method the API does not serve, so a client cannot mint label values.
pub fn verb(method: &Method, query: Option<&str>) -> &'static str {
    match *method {
        Method::GET if is_watch(query) => "WATCH",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// True when a query string asks for a watch, as the collection handlers read it.
fn is_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

/// The middleware: times the request and counts it under its route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let metrics = state.metrics().requests();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => Route::Matched(path.clone()),
        None => Route::Unmatched,
    };
    let verb = verb(request.method(), request.uri().query());
    let response = next.run(request).await;
    metrics.observe(
        route,
        verb,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let cases: &[(Method, Option<&str>, &str)] = &[
            (Method::GET, None, "GET"),
            (Method::GET, Some("limit=5"), "GET"),
            (Method::GET, Some("watch=true"), "WATCH"),
            (Method::GET, Some("resourceVersion=4&watch=1"), "WATCH"),
            (Method::GET, Some("watch=false"), "GET"),
            (Method::GET, Some("nowatch=true"), "GET"),
            (Method::POST, Some("watch=true"), "POST"),
            (Method::PATCH, None, "PATCH"),
            (Method::DELETE, None, "DELETE"),
            (Method::from_bytes(b"BREW").unwrap(), None, "OTHER"),
            (Method::TRACE, None, "OTHER"),
        ];
        for (method, query, want) in cases {
            assert_eq!(verb(method, *query), *want, "{method} ?{query:?}");
        }
    }
}
