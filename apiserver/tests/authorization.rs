//! Every route of the router × every kind of caller → the expected HTTP code.
//!
//! The table below is checked against `route_table()`, the list the router itself is built
//! from: a route added without a row here fails `every_route_is_in_the_table`. Each case
//! runs on a fresh in-memory server with the same fixture: nodes `node-a` and `node-b`
//! (registered by their own agents), task `t1` owned by `alice`, bound to `node-a`,
//! task group `g1` owned by `alice`, and event `e1` about `t1` reported by `node-a`.
//!
//! A metrics credential (role `metrics`, for a Prometheus scraper) is one more kind of
//! caller; it may read `GET /metrics` and what the server says about itself, nothing else,
//! and `a_metrics_credential_reads_the_metrics_and_nothing_else` walks every route for it.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use kohakuriver_api::auth::{Identity, Role};
use kohakuriver_apiserver::{AppState, AuthConfig, Config, generate_token, route_table, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const API: &str = "/apis/kohakuriver/v1";

/// The callers, in the order of the code columns of [`TABLE`].
const CALLERS: [&str; 10] = [
    "anonymous",
    "viewer",
    "user-own",
    "user-other",
    "operator",
    "admin",
    "node-own",
    "node-other",
    "controllers",
    "join",
];

/// `METHOD path | codes for each caller of CALLERS`. `{id}` is a spare stored token's id.
const TABLE: &str = "
GET    /healthz                       | 200 200 200 200 200 200 200 200 200 200
GET    /cacerts                       | 404 404 404 404 404 404 404 404 404 404
GET    /version                       | 200 200 200 200 200 200 200 200 200 200
GET    /metrics                       | 401 200 200 200 200 200 403 403 403 403
GET    /api                           | 401 200 200 200 200 200 200 200 200 403
GET    /apis                          | 401 200 200 200 200 200 200 200 200 403
GET    /apis/kohakuriver              | 401 200 200 200 200 200 200 200 200 403
GET    /apis/kohakuriver/v1           | 401 200 200 200 200 200 200 200 200 403
GET    /openapi/v3                    | 401 200 200 200 200 200 200 200 200 403
GET    /openapi/v3/apis/kohakuriver/v1 | 401 200 200 200 200 200 200 200 200 403
GET    /info                          | 401 200 200 200 200 200 200 200 200 200
GET    /schemas/task                  | 401 200 200 200 200 200 200 200 200 200
GET    /schemas/node                  | 401 200 200 200 200 200 200 200 200 200
GET    /schemas/taskgroup             | 401 200 200 200 200 200 200 200 200 200
GET    /schemas/event                 | 401 200 200 200 200 200 200 200 200 200
GET    /whoami                        | 401 200 200 200 200 200 200 200 200 200
GET    /tokens                        | 401 403 403 403 403 200 403 403 403 403
POST   /tokens                        | 401 403 403 403 403 201 403 403 403 403
DELETE /tokens/{id}                   | 401 403 403 403 403 200 403 403 403 403
POST   /join                          | 401 403 403 403 403 403 403 403 403 201
GET    /nodes/{name}/credentials      | 401 403 403 403 403 403 200 403 403 403
GET    /backup                        | 401 403 403 403 403 200 403 403 403 403
GET    /tasks/{name}/log              | 401 503 503 503 503 503 403 403 403 403
GET    /tasks                         | 401 200 200 200 200 200 200 403 200 403
POST   /tasks                         | 401 403 201 201 201 201 403 403 403 403
GET    /tasks/{name}                  | 401 200 200 200 200 200 200 403 200 403
PUT    /tasks/{name}                  | 401 403 200 403 200 200 403 403 403 403
PATCH  /tasks/{name}                  | 401 403 200 403 200 200 403 403 200 403
DELETE /tasks/{name}                  | 401 403 202 403 202 202 403 403 202 403
GET    /tasks/{name}/status           | 401 200 200 200 200 200 200 403 200 403
PUT    /tasks/{name}/status           | 401 403 403 403 403 403 200 403 403 403
PATCH  /tasks/{name}/status           | 401 403 403 403 403 403 200 403 403 403
POST   /tasks/{name}/apply            | 401 403 200 403 200 200 403 403 403 403
GET    /nodes                         | 401 200 200 200 200 200 403 403 200 403
POST   /nodes                         | 401 403 403 403 403 201 403 403 403 403
GET    /nodes/{name}                  | 401 200 200 200 200 200 200 403 200 403
PUT    /nodes/{name}                  | 401 403 403 403 200 200 200 403 403 403
PATCH  /nodes/{name}                  | 401 403 403 403 200 200 200 403 403 403
DELETE /nodes/{name}                  | 401 403 403 403 403 200 403 403 403 403
GET    /nodes/{name}/status           | 401 200 200 200 200 200 200 403 200 403
PUT    /nodes/{name}/status           | 401 403 403 403 403 200 200 403 200 403
PATCH  /nodes/{name}/status           | 401 403 403 403 403 200 200 403 200 403
POST   /nodes/{name}/apply            | 401 403 403 403 200 200 200 403 403 403
GET    /taskgroups                    | 401 200 200 200 200 200 403 403 200 403
POST   /taskgroups                    | 401 403 201 201 201 201 403 403 403 403
GET    /taskgroups/{name}             | 401 200 200 200 200 200 403 403 200 403
PUT    /taskgroups/{name}             | 401 403 200 403 200 200 403 403 403 403
PATCH  /taskgroups/{name}             | 401 403 200 403 200 200 403 403 403 403
DELETE /taskgroups/{name}             | 401 403 200 403 200 200 403 403 403 403
GET    /taskgroups/{name}/status      | 401 200 200 200 200 200 403 403 200 403
PUT    /taskgroups/{name}/status      | 401 403 403 403 403 200 403 403 200 403
PATCH  /taskgroups/{name}/status      | 401 403 403 403 403 200 403 403 200 403
POST   /taskgroups/{name}/apply       | 401 403 200 403 200 200 403 403 403 403
GET    /events                        | 401 200 200 200 200 200 403 403 200 403
POST   /events                        | 401 403 403 403 403 403 201 403 201 403
GET    /events/{name}                 | 401 200 200 200 200 200 200 403 200 403
PUT    /events/{name}                 | 401 403 403 403 403 403 200 403 200 403
PATCH  /events/{name}                 | 401 403 403 403 403 403 200 403 200 403
DELETE /events/{name}                 | 401 403 403 403 403 200 403 403 200 403
POST   /events/{name}/apply           | 401 403 403 403 403 403 200 403 200 403
";

struct Row {
    method: Method,
    path: String,
    codes: Vec<u16>,
}

fn rows() -> Vec<Row> {
    TABLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (route, codes) = line.split_once('|').expect("METHOD path | codes");
            let mut route = route.split_whitespace();
            let method: Method = route.next().unwrap().parse().unwrap();
            let path = route.next().unwrap().to_string();
            let codes: Vec<u16> = codes
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect();
            assert_eq!(codes.len(), CALLERS.len(), "{line}");
            Row {
                method,
                path,
                codes,
            }
        })
        .collect()
}

/// The router's own template for a table path (`/tasks/{name}` under the API prefix;
/// discovery and the open endpoints as written).
fn template(path: &str) -> String {
    if ["/healthz", "/cacerts", "/version", "/metrics", "/api"].contains(&path)
        || path.starts_with("/apis")
        || path.starts_with("/openapi")
    {
        path.to_string()
    } else {
        format!("{API}{path}")
    }
}

#[test]
fn every_route_is_in_the_table() {
    let served: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let tested: BTreeSet<(String, String)> = rows()
        .into_iter()
        .map(|r| (r.method.to_string(), template(&r.path)))
        .collect();
    let untested: Vec<_> = served.difference(&tested).collect();
    let unknown: Vec<_> = tested.difference(&served).collect();
    assert!(
        untested.is_empty(),
        "routes without an authorization case: {untested:?}"
    );
    assert!(
        unknown.is_empty(),
        "cases for routes that do not exist: {unknown:?}"
    );
}

/// The index in `Fixture::tokens` of the metrics credential (after the callers of
/// [`CALLERS`]).
const METRICS_CALLER: usize = CALLERS.len();

/// What a metrics credential gets from a table row: the open endpoints as anyone, the
/// metrics and the server's own endpoints (`Target::Server`), and 403 for everything else.
fn metrics_caller_expects(row: &Row) -> u16 {
    match (row.method.as_str(), row.path.as_str()) {
        (_, "/healthz" | "/version" | "/cacerts") => row.codes[0],
        ("GET", "/metrics" | "/info" | "/whoami") => 200,
        ("GET", p) if p.starts_with("/schemas/") => 200,
        _ => 403,
    }
}

/// One fresh server with the fixture, and a token for every caller.
struct Fixture {
    state: AppState,
    tokens: Vec<Option<String>>,
    spare_token_id: String,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_policy(kohakuriver_api::Policy::default()).await
    }

    async fn with_policy(policy: kohakuriver_api::Policy) -> Fixture {
        let identities = [
            ("vic", Role::Viewer),
            ("alice", Role::User),
            ("bob", Role::User),
            ("olga", Role::Operator),
            ("root", Role::Admin),
            ("node-a", Role::Node),
            ("node-b", Role::Node),
            ("controllers", Role::Controllers),
        ];
        let mut static_tokens = Vec::new();
        let mut tokens = vec![None];
        for (name, role) in identities {
            let token = generate_token();
            static_tokens.push((token.clone(), Identity::new(name, role)));
            tokens.push(Some(token));
        }
        // The metrics credential goes last, after the stored join token.
        let metrics_token = generate_token();
        static_tokens.push((
            metrics_token.clone(),
            Identity::new("prometheus", Role::Metrics),
        ));
        let config = Config {
            auth: AuthConfig {
                static_tokens,
                policy,
                ..AuthConfig::default()
            },
            // The tasks here name no image; a server default lets them be created.
            default_image: Some("busybox:latest".into()),
            ..Config::default()
        };
        let state = tokio::task::spawn_blocking(move || AppState::open(config))
            .await
            .unwrap()
            .unwrap();
        let mut fixture = Fixture {
            state,
            tokens,
            spare_token_id: String::new(),
        };
        let admin = 5;
        // A stored join token (static ones have no uses) and a spare token to revoke.
        let (code, join) = fixture
            .send(
                admin,
                Method::POST,
                "/tokens",
                json!({"name": "rack", "role": "join", "uses": 5}),
            )
            .await;
        assert_eq!(code, 201, "{join}");
        fixture
            .tokens
            .push(Some(join["token"].as_str().unwrap().to_string()));
        fixture.tokens.push(Some(metrics_token));
        assert_eq!(fixture.tokens.len(), METRICS_CALLER + 1);
        let (code, spare) = fixture
            .send(
                admin,
                Method::POST,
                "/tokens",
                json!({"name": "spare", "role": "viewer"}),
            )
            .await;
        assert_eq!(code, 201, "{spare}");
        fixture.spare_token_id = spare["info"]["id"].as_str().unwrap().to_string();
        // The nodes register themselves, as agents do.
        for (caller, name, address) in [
            (6, "node-a", "http://127.0.0.1:9"),
            (7, "node-b", "http://127.0.0.1:9"),
        ] {
            let node =
                json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": name}});
            let (code, body) = fixture.send(caller, Method::POST, "/nodes", node).await;
            assert_eq!(code, 201, "{body}");
            let status = json!({"status": {
                "capacity": {"cpu": 4, "memoryBytes": 8_000_000_000u64, "gpus": 0},
                "allocatable": {"cpu": 4, "memoryBytes": 8_000_000_000u64, "gpus": 0},
                "numa": [{"id": 0, "cpus": "0-3", "memoryBytes": 8_000_000_000u64}],
                "address": address,
            }});
            let (code, body) = fixture
                .send(
                    caller,
                    Method::PUT,
                    &format!("/nodes/{name}/status"),
                    status,
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
        // Alice's task, bound to node-a by the scheduler.
        let (code, body) = fixture.send(2, Method::POST, "/tasks", task("t1")).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["metadata"]["owner"], "alice", "{body}");
        let binding = json!({"status": {
            "phase": "Assigned",
            "node": "node-a",
            "allocation": {"cpus": "1"},
        }});
        let (code, body) = fixture
            .send(8, Method::PATCH, "/tasks/t1/status", binding)
            .await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = fixture
            .send(2, Method::POST, "/taskgroups", group("g1", &[]))
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["metadata"]["owner"], "alice", "{body}");
        // node-a's agent reports an event about alice's task.
        let (code, body) = fixture
            .send(6, Method::POST, "/events", event("e1", "node-a", 1))
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["metadata"]["owner"], "alice", "{body}");
        fixture
    }

    async fn send(&self, caller: usize, method: Method, path: &str, body: Value) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(template(path));
        if let Some(token) = &self.tokens[caller] {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        };
        let response = router(self.state.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, value)
    }
}

/// The names of a list's items.
fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect()
}

fn task(name: &str) -> Value {
    json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"command": ["echo", "hi"]}
    })
}

fn group(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "TaskGroup",
        "metadata": {"name": name, "labels": labels},
        "spec": {"indexes": "0-3", "template": {"spec": {"command": ["echo", "$(KOHAKURIVER_ARRAY_INDEX)"]}}}
    })
}

/// An event about alice's task `t1`, as node `host`'s agent reports it, seen `count` times.
fn event(name: &str, host: &str, count: u32) -> Value {
    json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Event",
        "metadata": {"name": name, "owner": "alice"},
        "involvedObject": {"kind": "Task", "name": "t1"},
        "reason": "Started",
        "message": "started container",
        "type": "Normal",
        "count": count,
        "source": {"component": "agent", "host": host},
    })
}

/// The concrete request for a table row.
fn request(row: &Row, spare_token_id: &str) -> (String, Value) {
    let labelled_task = json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Task",
        "metadata": {"name": "t1", "labels": {"team": "x"}},
        "spec": {"command": ["echo", "hi"]}
    });
    let labelled_node = json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"rack": "1"}},
    });
    let node_status = json!({"status": {
        "capacity": {"cpu": 4, "memoryBytes": 8_000_000_000u64, "gpus": 0},
        "allocatable": {"cpu": 4, "memoryBytes": 8_000_000_000u64, "gpus": 0},
        "numa": [{"id": 0, "cpus": "0-3", "memoryBytes": 8_000_000_000u64}],
        "address": "http://127.0.0.1:9",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    let m = row.method.as_str();
    let path = row
        .path
        .replace(
            "{name}",
            if row.path.starts_with("/taskgroups") {
                "g1"
            } else if row.path.starts_with("/events") {
                "e1"
            } else if row.path.starts_with("/tasks") {
                "t1"
            } else {
                "node-a"
            },
        )
        .replace("{id}", spare_token_id);
    let body = match (m, row.path.as_str()) {
        ("POST", "/tokens") => json!({"name": "carol", "role": "user"}),
        ("POST", "/join") => json!({"node": "node-c"}),
        ("GET", "/tasks") => {
            return (
                format!("{path}?fieldSelector=status.node%3Dnode-a"),
                Value::Null,
            );
        }
        ("POST", "/tasks") => task("t-new"),
        ("PUT", "/tasks/{name}") | ("POST", "/tasks/{name}/apply") => labelled_task,
        ("PATCH", "/tasks/{name}") => json!({"spec": {"state": "Killed"}}),
        ("PUT", "/tasks/{name}/status") => json!({"status": {
            "phase": "Running", "node": "node-a", "allocation": {"cpus": "1"}
        }}),
        ("PATCH", "/tasks/{name}/status") => json!({"status": {"phase": "Running"}}),
        ("POST", "/nodes") => {
            json!({"apiVersion": "kohakuriver/v1", "kind": "Node", "metadata": {"name": "node-c"}})
        }
        ("PUT", "/nodes/{name}") | ("POST", "/nodes/{name}/apply") => labelled_node,
        ("PATCH", "/nodes/{name}") => json!({"spec": {"unschedulable": true}}),
        ("PUT" | "PATCH", "/nodes/{name}/status") => node_status,
        ("POST", "/taskgroups") => group("g-new", &[]),
        ("PUT", "/taskgroups/{name}") | ("POST", "/taskgroups/{name}/apply") => {
            group("g1", &[("team", "x")])
        }
        ("PATCH", "/taskgroups/{name}") => json!({"spec": {"parallelism": 2}}),
        ("PUT" | "PATCH", "/taskgroups/{name}/status") => {
            json!({"status": {"total": 4, "counts": {"notCreated": 4}}})
        }
        ("POST", "/events") => event("e-new", "node-a", 1),
        ("PUT", "/events/{name}") | ("POST", "/events/{name}/apply") => event("e1", "node-a", 2),
        ("PATCH", "/events/{name}") => json!({"count": 2}),
        _ => Value::Null,
    };
    (path, body)
}

#[tokio::test]
async fn every_route_for_every_caller() {
    let mut failures = Vec::new();
    for row in rows() {
        for (i, want) in row.codes.iter().enumerate() {
            let fixture = Fixture::new().await;
            let (path, body) = request(&row, &fixture.spare_token_id);
            let (code, answer) = fixture.send(i, row.method.clone(), &path, body).await;
            if code != *want {
                failures.push(format!(
                    "{} {} as {}: got {code}, want {want}: {answer}",
                    row.method, row.path, CALLERS[i]
                ));
            }
            if code == 401 || code == 403 {
                assert_eq!(answer["kind"], "Status", "{answer}");
                let message = answer["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{answer}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_metrics_credential_reads_the_metrics_and_nothing_else() {
    let mut failures = Vec::new();
    for row in rows() {
        let want = metrics_caller_expects(&row);
        let fixture = Fixture::new().await;
        let (path, body) = request(&row, &fixture.spare_token_id);
        let (code, answer) = fixture
            .send(METRICS_CALLER, row.method.clone(), &path, body)
            .await;
        if code != want {
            failures.push(format!(
                "{} {} as metrics: got {code}, want {want}: {answer}",
                row.method, row.path
            ));
        }
        if code == 403 {
            assert_eq!(answer["kind"], "Status", "{answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("metrics \"prometheus\" may not"),
                "{answer}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_metrics_answer_in_the_prometheus_text_format() {
    let fixture = Fixture::new().await;
    let (code, body) = fixture.send(1, Method::GET, "/metrics", Value::Null).await;
    assert_eq!(code, 200, "{body}");
    let text = body.as_str().unwrap();
    // The fixture's task was created and bound by the controllers' credential.
    assert!(text.contains("kohakuriver_task_bindings_total 1"), "{text}");
    assert!(
        text.contains("kohakuriver_tasks{phase=\"Assigned\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kohakuriver_node_heartbeat_age_seconds{node=\"node-a\"}"),
        "{text}"
    );
    // Requests are labelled by their route's template, never by the raw path.
    assert!(
        text.contains(
            "kohakuriver_api_requests_total{route=\"/apis/kohakuriver/v1/tasks/{name}/status\",verb=\"PATCH\",code=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(!text.contains("/tasks/t1"), "{text}");
}

#[tokio::test]
async fn refusals_name_the_identity_and_the_permission() {
    let fixture = Fixture::new().await;
    let (code, body) = fixture
        .send(
            3,
            Method::PATCH,
            "/tasks/t1",
            json!({"spec": {"state": "Killed"}}),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"].as_str().unwrap(),
        "user \"bob\" may not kill task t1 owned by \"alice\": a user may change only their own tasks"
    );
    let (code, body) = fixture.send(0, Method::GET, "/tasks", Value::Null).await;
    assert_eq!(code, 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("no credential"),
        "{body}"
    );
}

#[tokio::test]
async fn owner_is_stamped_and_never_taken_from_the_body() {
    let fixture = Fixture::new().await;
    let mut forged = task("t2");
    forged["metadata"]["owner"] = json!("alice");
    let (code, body) = fixture.send(3, Method::POST, "/tasks", forged).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["metadata"]["owner"], "bob");
    // Alice cannot take it over by applying her own manifest under its name.
    let (code, body) = fixture
        .send(
            2,
            Method::POST,
            "/tasks/t2/apply",
            json!({
                "apiVersion": "kohakuriver/v1", "kind": "Task",
                "metadata": {"name": "t2", "owner": "alice"},
                "spec": {"command": ["sh", "-c", "id"]}
            }),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // A replace by the owner keeps the owner whatever the body says.
    let (code, body) = fixture
        .send(
            3,
            Method::PUT,
            "/tasks/t2",
            json!({
                "apiVersion": "kohakuriver/v1", "kind": "Task",
                "metadata": {"name": "t2", "owner": "alice"},
                "spec": {"command": ["echo", "changed"]}
            }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["owner"], "bob");
    // The owner is a field selector.
    let (code, list) = fixture
        .send(
            1,
            Method::GET,
            "/tasks?fieldSelector=metadata.owner%3Dbob",
            Value::Null,
        )
        .await;
    assert_eq!(code, 200);
    let names = names(&list);
    assert_eq!(names, ["t2"]);
}

#[tokio::test]
async fn a_node_reading_its_own_missing_node_gets_404() {
    let fixture = Fixture::new().await;
    let node_a = 6;
    let (code, body) = fixture
        .send(node_a, Method::DELETE, "/nodes/node-a", Value::Null)
        .await;
    assert_eq!(code, 403, "{body}");
    let admin = 5;
    assert_eq!(
        fixture
            .send(admin, Method::DELETE, "/nodes/node-a", Value::Null)
            .await
            .0,
        200
    );
    let (code, body) = fixture
        .send(node_a, Method::GET, "/nodes/node-a", Value::Null)
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = fixture
        .send(node_a, Method::GET, "/nodes/node-b", Value::Null)
        .await;
    assert_eq!(code, 403, "{body}");
}

#[tokio::test]
async fn forged_status_is_refused() {
    let fixture = Fixture::new().await;
    let (ctl, node_a) = (8, 6);
    // Unknown node, cores the node lacks, no memory limit for a task that has one.
    let (code, body) = fixture
        .send(
            2,
            Method::POST,
            "/tasks",
            json!({
                "apiVersion": "kohakuriver/v1", "kind": "Task", "metadata": {"name": "t3"},
                "spec": {"command": ["true"], "resources": {"cpu": 2, "memory": "1G"}}
            }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    for (status, want) in [
        (
            json!({"phase": "Assigned", "node": "nowhere", "allocation": {"cpus": "0-1", "memoryBytes": 1_000_000_000u64}}),
            "does not exist",
        ),
        (
            json!({"phase": "Assigned", "node": "node-a", "allocation": {"cpus": "3-4", "memoryBytes": 1_000_000_000u64}}),
            "core 4 does not exist",
        ),
        (
            json!({"phase": "Assigned", "node": "node-a", "allocation": {"cpus": "0-1", "memoryBytes": null}}),
            "memoryBytes",
        ),
    ] {
        let (code, body) = fixture
            .send(
                ctl,
                Method::PATCH,
                "/tasks/t3/status",
                json!({"status": status}),
            )
            .await;
        assert_eq!(code, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains(want), "{body}");
    }
    // Lost never runs again, even when its own node says so.
    let (code, body) = fixture
        .send(
            ctl,
            Method::PATCH,
            "/tasks/t1/status",
            json!({"status": {"phase": "Lost"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = fixture
        .send(
            node_a,
            Method::PATCH,
            "/tasks/t1/status",
            json!({"status": {"phase": "Running"}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    // Only the node itself sets the address the server calls.
    let (code, body) = fixture
        .send(
            ctl,
            Method::PATCH,
            "/nodes/node-a/status",
            json!({"status": {"address": "http://127.0.0.1:1/x?"}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = fixture
        .send(
            ctl,
            Method::PATCH,
            "/nodes/node-a/status",
            json!({"status": {"address": "http://10.1.1.1:8001"}}),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // Node status is bounded before anything else reads it.
    let (code, body) = fixture
        .send(
            node_a,
            Method::PATCH,
            "/nodes/node-a/status",
            json!({"status": {"capacity": {"cpu": 50_000_000}}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
}

#[tokio::test]
async fn private_tasks_hide_other_users_tasks() {
    let alice = generate_token();
    let bob = generate_token();
    let config = Config {
        auth: AuthConfig {
            static_tokens: vec![
                (alice.clone(), Identity::new("alice", Role::User)),
                (bob.clone(), Identity::new("bob", Role::User)),
            ],
            policy: kohakuriver_api::Policy {
                private_tasks: true,
                ..Default::default()
            },
            ..AuthConfig::default()
        },
        default_image: Some("busybox:latest".into()),
        ..Config::default()
    };
    let state = tokio::task::spawn_blocking(move || AppState::open(config))
        .await
        .unwrap()
        .unwrap();
    let fixture = Fixture {
        state,
        tokens: vec![None, Some(alice), Some(bob)],
        spare_token_id: String::new(),
    };
    assert_eq!(
        fixture
            .send(1, Method::POST, "/tasks", task("mine"))
            .await
            .0,
        201
    );
    assert_eq!(
        fixture
            .send(2, Method::POST, "/tasks", task("theirs"))
            .await
            .0,
        201
    );
    let (_, list) = fixture.send(1, Method::GET, "/tasks", Value::Null).await;
    let names = names(&list);
    assert_eq!(names, ["mine"]);
    assert_eq!(
        fixture
            .send(1, Method::GET, "/tasks/theirs", Value::Null)
            .await
            .0,
        403
    );
    assert_eq!(
        fixture
            .send(1, Method::GET, "/tasks/theirs/log", Value::Null)
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn revoked_tokens_are_refused_at_once_and_join_tokens_run_out() {
    let fixture = Fixture::new().await;
    let admin = 5;
    let (_, made) = fixture
        .send(
            admin,
            Method::POST,
            "/tokens",
            json!({"name": "carol", "role": "user"}),
        )
        .await;
    let carol = made["token"].as_str().unwrap().to_string();
    let mut f = fixture;
    f.tokens.push(Some(carol));
    let carol = f.tokens.len() - 1;
    assert_eq!(
        f.send(carol, Method::GET, "/whoami", Value::Null).await.0,
        200
    );
    let (code, body) = f
        .send(admin, Method::DELETE, "/tokens/carol", Value::Null)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = f.send(carol, Method::GET, "/whoami", Value::Null).await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // The list never shows a secret.
    let (_, list) = f.send(admin, Method::GET, "/tokens", Value::Null).await;
    assert!(!list.to_string().contains("hash"), "{list}");
    // A join token with one use joins one node.
    let (_, join) = f
        .send(
            admin,
            Method::POST,
            "/tokens",
            json!({"name": "one", "role": "join", "uses": 1}),
        )
        .await;
    f.tokens
        .push(Some(join["token"].as_str().unwrap().to_string()));
    let joiner = f.tokens.len() - 1;
    let (code, node) = f
        .send(joiner, Method::POST, "/join", json!({"node": "gpu-01"}))
        .await;
    assert_eq!(code, 201, "{node}");
    assert_eq!(node["info"]["role"], "node");
    assert_eq!(node["info"]["name"], "gpu-01");
    let (code, body) = f
        .send(joiner, Method::POST, "/join", json!({"node": "gpu-02"}))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("used up"),
        "{body}"
    );
}

/// Members of a group are created by the controllers, belong to the group's owner, and may
/// not be forged by a user: `metadata.ownerReferences` is the controllers' to set.
#[tokio::test]
async fn only_the_controllers_create_group_members() {
    let fixture = Fixture::new().await;
    let member = json!({
        "apiVersion": "kohakuriver/v1",
        "kind": "Task",
        "metadata": {
            "name": "g1-0",
            "owner": "alice",
            "ownerReferences": [{"apiVersion": "kohakuriver/v1", "kind": "TaskGroup", "name": "g1", "uid": "x"}],
        },
        "spec": {"command": ["echo", "0"]}
    });
    let (code, body) = fixture
        .send(2, Method::POST, "/tasks", member.clone())
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("metadata.ownerReferences is set by the group controller"),
        "{body}"
    );
    let (code, body) = fixture.send(8, Method::POST, "/tasks", member).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["metadata"]["owner"], "alice", "{body}");
    assert_eq!(body["metadata"]["ownerReferences"][0]["name"], "g1");
}

/// Once the controller started a group, its template and indexes are fixed: a change is 422
/// naming the field and what to do; parallelism may still change, and the same manifest
/// again is `unchanged`.
#[tokio::test]
async fn a_started_groups_template_is_fixed() {
    let fixture = Fixture::new().await;
    let (code, body) = fixture
        .send(
            8,
            Method::PATCH,
            "/taskgroups/g1/status",
            json!({"status": {"startedAt": "2026-01-01T00:00:00Z", "total": 4}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = fixture
        .send(2, Method::POST, "/taskgroups/g1/apply", group("g1", &[]))
        .await;
    assert_eq!(
        (code, body["result"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    let mut changed = group("g1", &[]);
    changed["spec"]["template"]["spec"]["command"] = json!(["echo", "other"]);
    changed["spec"]["indexes"] = json!("0-9");
    let (code, body) = fixture
        .send(2, Method::POST, "/taskgroups/g1/apply", changed)
        .await;
    assert_eq!(code, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("spec.template"), "{message}");
    assert!(message.contains("spec.indexes"), "{message}");
    assert!(
        message.contains("delete the group and apply it again"),
        "{message}"
    );
    let (code, body) = fixture
        .send(
            2,
            Method::PATCH,
            "/taskgroups/g1",
            json!({"spec": {"parallelism": 1}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["parallelism"], 1);
}

/// Events are machines' to write: a node reports only as itself, on create and when it
/// rewrites its own event; the owner the writer names is kept (it is the involved task's),
/// and on a `--private-tasks` server a user lists and reads only the events of their own
/// tasks.
#[tokio::test]
async fn events_are_reported_by_their_source_and_private_to_the_task_owner() {
    let fixture = Fixture::new().await;
    let (code, body) = fixture
        .send(6, Method::POST, "/events", event("e2", "node-b", 1))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("source.host: node-a"),
        "{body}"
    );
    let (code, body) = fixture
        .send(6, Method::PUT, "/events/e1", event("e1", "node-b", 2))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("source.host must be \"node-a\""),
        "{body}"
    );
    let (code, body) = fixture
        .send(8, Method::POST, "/events", event("e3", "node-b", 4))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["metadata"]["owner"], "alice", "{body}");
    assert_eq!(body["count"], 4, "{body}");

    let private = Fixture::with_policy(kohakuriver_api::Policy {
        private_tasks: true,
        ..Default::default()
    })
    .await;
    let mut bobs = event("e-bob", "node-a", 1);
    bobs["metadata"]["owner"] = json!("bob");
    let (code, body) = private.send(8, Method::POST, "/events", bobs).await;
    assert_eq!(code, 201, "{body}");
    let (code, list) = private.send(2, Method::GET, "/events", Value::Null).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["e1"]);
    let (code, list) = private.send(3, Method::GET, "/events", Value::Null).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["e-bob"]);
    let (code, body) = private
        .send(3, Method::GET, "/events/e1", Value::Null)
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, list) = private.send(1, Method::GET, "/events", Value::Null).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["e-bob", "e1"]);
}
