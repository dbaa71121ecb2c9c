//! The KohakuRiver API server: an axum router over a SQLite store, in the Kubernetes manner.
//!
//! It stores `Task` and `Node` objects, versions every write with one global revision,
//! streams changes to watchers, validates and admits writes, and proxies task logs to the
//! owning agent. It holds no business logic beyond admission: scheduling and lifecycles live
//! in the controllers, which talk to it over HTTP like everyone else.
//!
//! The whole public surface is [`serve`] (tests start it on `127.0.0.1:0`), [`router`] over an
//! [`AppState`] (for in-process handler tests), and [`Config`].
//!
//! Module map: `store` (SQLite, revisions, history, live broadcast), `schema` (migrations and
//! pragmas), `admission` (pure write rules), `body` (content types, size, merge patch),
//! `params` (query parameters and selectors), `pages` (paged lists as of one revision), `watch` (watch streams), `table` (answers as
//! a `meta.k8s.io` `Table` for kubectl), `handlers` (routes),
//! `logs` (log proxy), `error` (`AppError`, the `Status` answer), `limits` (request rate
//! and watch limits per identity), `metrics` (Prometheus metrics, `GET /metrics`).

mod admission;
mod auth;
mod body;
mod dependency_admission;
mod error;
mod handlers;
mod limits;
mod logs;
mod metrics;
mod pages;
mod params;
mod schema;
mod state;
mod store;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use auth::{generate_token, write_secret_file};
pub use error::{AppError, Error};
pub use handlers::{route_table, router};
pub use limits::{Limits, TokenBucket};
pub use schema::SyncMode;
pub use state::AppState;
pub use store::{check_backup, restore};

/// How long a shutdown waits for open connections (say, a client that stopped reading a
/// watch) before the server stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The SQLite file; `None` keeps everything in memory (tests).
    pub db_path: Option<PathBuf>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// How many events the watch history keeps (default 100 000); a watch resuming from
    /// before them gets 410 Gone.
    pub watch_history: u64,
    /// How many bytes of bodies (each event's object and its previous version) the watch
    /// history keeps (default 256 MiB); beyond it the oldest events are compacted away
    /// just as beyond `watch_history`.
    pub watch_history_bytes: u64,
    /// How often an idle watch gets a `BOOKMARK` (default 30 s).
    pub bookmark_interval: Duration,
    /// The image for tasks that name neither `image` nor `container`, told to clients.
    pub default_image: Option<String>,
    /// SQLite durability (default `Full`: an acknowledged write survives a power cut).
    pub sync: SyncMode,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// SHA-256 of the CA certificate (hex) when the server serves TLS, told with every new
    /// node or join credential so a node's first contact can check it.
    pub ca_fingerprint: Option<String>,
    /// Serve HTTPS with this certificate (`--tls-cert`/`--tls-key`, `--tls-self-signed`).
    pub tls: Option<kohakuriver_tls::ServerTls>,
    /// The cluster CA (PEM): served at `GET /cacerts` for first contacts, and trusted by the
    /// log proxy when it calls agents over `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// The controllers' node grace, told to agents in `ServerInfo` so they can check their
    /// fencing timing against it; `None` when this process runs no controllers.
    pub node_grace: Option<Duration>,
    /// Request rate, watch and HTTP limits (see `limits`).
    pub limits: Limits,
}

/// Who may use the server, and how the first credential comes to be.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// False only under `--insecure-no-auth`: every request is then an admin named
    /// `anonymous`, and no credential is needed.
    pub enabled: bool,
    /// Private tasks, who may run privileged tasks, and which host paths users may mount.
    pub policy: kohakuriver_api::Policy,
    /// Tokens known only to this process, never stored: the in-process controllers' and
    /// the `up` node's credentials (see [`generate_token`]).
    pub static_tokens: Vec<(String, kohakuriver_api::Identity)>,
    /// Where the first admin token is written (mode 0600) when the store has no admin token.
    pub admin_token_file: Option<PathBuf>,
    /// Also make an admin token when `admin_token_file` is missing though the store holds
    /// one: set for a start from a backup (`--restore`), whose admin tokens were written to
    /// another machine's files, so that this machine's CLI can act on the restored store.
    pub admin_token_if_missing: bool,
}

impl AuthConfig {
    /// No authentication: every request is an admin (tests, `--insecure-no-auth`).
    pub fn disabled() -> AuthConfig {
        AuthConfig {
            enabled: false,
            policy: kohakuriver_api::Policy::default(),
            static_tokens: Vec::new(),
            admin_token_file: None,
            admin_token_if_missing: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: true,
            ..AuthConfig::disabled()
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            db_path: None,
            max_body_bytes: 1024 * 1024,
            watch_history: 100_000,
            watch_history_bytes: 256 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(30),
            default_image: None,
            sync: SyncMode::default(),
            auth: AuthConfig::default(),
            ca_fingerprint: None,
            tls: None,
            ca_pem: None,
            node_grace: None,
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// The defaults with authentication off (every request is an admin) and a default
    /// image (`busybox:latest`, so tasks may name none). For in-process tests and
    /// benchmarks that exercise other things than permissions and images.
    pub fn insecure() -> Config {
        Config {
            auth: AuthConfig::disabled(),
            default_image: Some("busybox:latest".to_string()),
            ..Config::default()
        }
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then ends every watch and
/// stops after in-flight requests finish (waiting at most a short grace period).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls = config.tls.clone();
    let http_limits = config.limits.http;
    let state = tokio::task::spawn_blocking(move || AppState::open(config)).await??;
    let state = state.with_shutdown(shutdown.clone());
    let address = listener.local_addr()?;
    let scheme = match &tls {
        Some(tls) if tls.plain_too() => "http and https",
        Some(_) => "https",
        None => "http",
    };
    tracing::info!(%address, scheme, auth = state.config().auth.enabled, "api server listening");
    // Tracked, so the last flush of token uses at shutdown is waited for.
    let tracker = tokio_util::task::TaskTracker::new();
    tracker.spawn(save_token_uses(state.clone(), shutdown.clone()));
    // Requests carry the peer's `ConnectInfo<SocketAddr>`, with TLS or without.
    let server =
        kohakuriver_tls::serve(listener, router(state), tls, http_limits, shutdown.clone());
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result?,
        () = grace => tracing::warn!("connections still open after the shutdown grace period; stopping anyway"),
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("token uses not saved within the shutdown grace period; stopping anyway");
    }
    tracing::info!("api server stopped");
    Ok(())
}

/// How often the last-used times of tokens are written to the store. They live in memory
/// between writes, so checking a token never writes to the database.
const TOKEN_USE_FLUSH: Duration = Duration::from_secs(30);

/// Writes tokens' last-used times every [`TOKEN_USE_FLUSH`] and once more at shutdown.
async fn save_token_uses(state: AppState, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(TOKEN_USE_FLUSH) => false,
            () = shutdown.cancelled() => true,
        };
        let used = state.authenticator().unsaved_uses();
        if !used.is_empty() {
            let store = state.store().clone();
            let saving = used.clone();
            match tokio::task::spawn_blocking(move || store.touch_tokens(&saving)).await {
                Ok(Ok(())) => state.authenticator().saved_uses(&used),
                Ok(Err(e)) => tracing::warn!(error = %e.0.message, "cannot record token uses"),
                Err(e) => tracing::warn!(error = %e, "cannot record token uses"),
            }
        }
        if stopping {
            return;
        }
    }
}
