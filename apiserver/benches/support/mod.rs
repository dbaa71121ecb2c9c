//! What every API server benchmark needs: sizes from the environment and a runtime.

/// A size from the environment variable `name`, else `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `bench` on a multi-threaded runtime, as the server runs.
pub fn run(bench: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench);
}

/// Creates `creates` tasks named `tag-N` at the server at `url` from `clients` concurrent
/// clients (with `token`, when given); answers creates/s and the sorted latencies. Not
/// every benchmark that shares this module creates tasks.
#[allow(dead_code)]
pub async fn create_tasks(
    url: &str,
    token: Option<String>,
    creates: usize,
    clients: usize,
    tag: &str,
) -> (f64, Vec<std::time::Duration>) {
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let (url, token, tag) = (url.to_string(), token.clone(), tag.to_string());
        workers.push(tokio::spawn(async move {
            let http = kohakuriver_tls::http_client();
            let mut latencies = Vec::new();
            for i in (c..creates).step_by(clients) {
                let body = serde_json::json!({
                    "apiVersion": "kohakuriver/v1", "kind": "Task",
                    "metadata": {"name": format!("{tag}-{i}")},
                    "spec": {"command": ["true"]}
                });
                let mut request = http
                    .post(format!("{url}/apis/kohakuriver/v1/tasks"))
                    .json(&body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let t = std::time::Instant::now();
                let answer = request.send().await.expect("create");
                assert_eq!(
                    answer.status().as_u16(),
                    201,
                    "{}",
                    answer.text().await.unwrap_or_default()
                );
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let rate = creates as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}
