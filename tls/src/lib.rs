//! TLS for KohakuRiver: one job, rustls configuration, shared by the API server, the node
//! agent, the CLI and the log proxy.
//!
//! - [`ServerTls`]: a certificate and key (`--tls-cert`, `--tls-key`) as a rustls server
//!   config; [`serve`] serves an axum router over it (or over plain HTTP without one),
//!   holding every connection to the [`HttpLimits`] (header and body timeouts, a
//!   connection cap).
//! - [`self_signed`] and [`issue`]: a cluster CA kept in a directory (`--tls-self-signed`),
//!   with the server's and agents' certificates signed by it.
//! - [`client_config`]: the client side, trusting one cluster CA (`--ca`) or the system's
//!   roots; [`unverified_client_config`] only for a first contact whose answer is then
//!   checked against a pinned fingerprint.
//! - [`fingerprint`], [`split_credential`], [`check_pinned`]: credentials written
//!   `TOKEN@sha256:HEX` carry the CA's fingerprint, so a node's first contact is already
//!   verified, as k3s join tokens do.
//!
//! - [`http_client_builder`] / [`http_client`]: the only way to make a reqwest client.
//!
//! Architecture Invariant: every rustls config is built on the `ring` provider, named
//! explicitly ([`provider`]); no other provider is compiled in. reqwest is built without a
//! provider of its own (`rustls-no-provider`: no aws-lc-rs), so its own constructors panic
//! in a process where none is installed; `clippy.toml` therefore disallows them, and every
//! reqwest client comes from [`http_client_builder`], which installs or names ring.

mod authority;
mod config;
mod error;
mod fingerprint;
mod limits;
mod serve;

use std::sync::Arc;

pub use authority::{Issued, SelfSigned, issue, self_signed};
pub use config::{ServerTls, client_config, unverified_client_config};
pub use error::Error;
pub use fingerprint::{check_pinned, fingerprint, split_credential};
pub use limits::{BodyTimeout, HttpLimits};
pub use serve::serve;

/// Re-exported so users name the same rustls version as this crate.
pub use rustls;

/// The one cryptographic provider every config uses: `ring`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A reqwest client builder whose TLS is rustls on ring: trusting only `ca_pem` when given,
/// else the platform's verifier and roots. Use it instead of `reqwest::Client::builder()`,
/// which panics on its first build in a process where no provider is installed.
///
/// Idle pooled connections are dropped after [`CLIENT_POOL_IDLE`], before our servers
/// close them ([`HttpLimits::header_timeout`] also bounds how long a keep-alive connection
/// may wait for its next request), so a request is rarely sent on a connection the server
/// is closing.
pub fn http_client_builder(ca_pem: Option<&[u8]>) -> Result<reqwest::ClientBuilder, Error> {
    #[allow(clippy::disallowed_methods)] // This is the one place that may.
    let builder = reqwest::Client::builder().pool_idle_timeout(CLIENT_POOL_IDLE);
    match ca_pem {
        Some(pem) => Ok(builder.tls_backend_preconfigured(client_config(Some(pem))?)),
        None => {
            install_crypto_provider();
            Ok(builder)
        }
    }
}

/// How long a client keeps an idle connection for reuse: below the servers' default
/// header timeout (10 s), which closes idle keep-alive connections too.
pub const CLIENT_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// A default reqwest client (see [`http_client_builder`]); the replacement for
/// `reqwest::Client::new()`, and like it, panics if the TLS backend cannot start.
pub fn http_client() -> reqwest::Client {
    http_client_builder(None)
        .and_then(|b| {
            b.build().map_err(|e| Error::Rustls {
                what: format!("cannot start an HTTP client: {e}"),
                source: rustls::Error::General(e.to_string()),
            })
        })
        .expect("an HTTP client")
}

/// Makes `ring` the process-wide default provider unless one is installed already.
/// Idempotent and cheap; needed before building a reqwest client without a preconfigured
/// TLS config, since reqwest is compiled without a provider of its own and panics otherwise.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: either is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
