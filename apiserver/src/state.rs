//! `AppState`: the cheap `Clone` handle every handler gets — the store, the configuration,
//! the shutdown token that ends watches, the HTTP client for the log proxy, the accepted
//! tokens and the key agent credentials come from.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::auth::{Authenticator, bootstrap, new_key};
use crate::error::Error;
use crate::limits::{RateLimiter, WatchCounter};
use crate::metrics::Metrics;
use crate::store::{HistoryBounds, Store};

/// Shared server state; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
    http: reqwest::Client,
    authenticator: Authenticator,
    /// The key agent credentials are derived from (`auth::agent_secret`).
    agent_key: Arc<Vec<u8>>,
    /// Request budgets per identity.
    rate: RateLimiter,
    /// Open watches, per identity and in total.
    watches: WatchCounter,
    /// The Prometheus metrics.
    metrics: Metrics,
}

impl AppState {
    /// Opens the store named by `config` (creating and migrating it if needed), loads the
    /// credentials and, on a first start with authentication on, makes the admin token.
    /// Blocking: call it from `spawn_blocking` inside a runtime.
    pub fn open(config: Config) -> Result<AppState, Error> {
        let store = Store::open(
            config.db_path.as_deref(),
            config.sync,
            HistoryBounds {
                events: config.watch_history,
                bytes: config.watch_history_bytes,
            },
        )?;
        let authenticator = bootstrap(&store, &config.auth)?;
        let agent_key = Arc::new(store.secret("agent-key", new_key)?);
        // Agents' certificates are expected to be signed by the cluster CA; without one, the
        // system's roots.
        let http = kohakuriver_tls::http_client_builder(config.ca_pem.as_deref())
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let limits = config.limits;
        let watches = WatchCounter::new(limits.watches_per_identity, limits.watches_total);
        Ok(AppState {
            rate: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
            metrics: Metrics::new(&store, &watches),
            watches,
            store,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            http,
            authenticator,
            agent_key,
        })
    }

    /// The same state, whose watches end when `token` is cancelled.
    pub fn with_shutdown(mut self, token: CancellationToken) -> AppState {
        self.shutdown = token;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Cancelled when the server shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The tokens this server accepts.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The secret the server presents to node `node`'s agent.
    pub fn agent_secret(&self, node: &str) -> String {
        crate::auth::agent_secret(&self.agent_key, node)
    }

    /// Each identity's request budget.
    pub fn rate(&self) -> &RateLimiter {
        &self.rate
    }

    /// Open watches, and their limits.
    pub fn watches(&self) -> &WatchCounter {
        &self.watches
    }

    /// The Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The HTTP client used to reach agents.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
