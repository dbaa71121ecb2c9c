//! `AppState`: the cheap `Clone` handle every handler gets — the store, the configuration,
//! the shutdown token that ends watches, and the HTTP client for the log proxy.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::error::Error;
use crate::store::Store;

/// Shared server state; cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl AppState {
    /// Opens the store named by `config` (creating and migrating it if needed).
    pub fn open(config: Config) -> Result<AppState, Error> {
        let store = Store::open(config.db_path.as_deref(), config.sync, config.watch_history)?;
        // Agents' certificates are expected to be signed by the cluster CA; without one, the
        // system's roots.
        let tls = kohakuriver_tls::client_config(config.ca_pem.as_deref())
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        Ok(AppState {
            store,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            http,
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

    /// The HTTP client used to reach agents.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
