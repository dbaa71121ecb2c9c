//! TLS for KohakuRiver: one job, rustls configuration, shared by the API server, the node
//! agent, the CLI and the log proxy.
//!
//! - [`ServerTls`]: a certificate and key (`--tls-cert`, `--tls-key`) as a rustls server
//!   config; [`serve`] serves an axum router over it (or over plain HTTP without one).
//! - [`self_signed`] and [`issue`]: a cluster CA kept in a directory (`--tls-self-signed`),
//!   with the server's and agents' certificates signed by it.
//! - [`client_config`]: the client side, trusting one cluster CA (`--ca`) or the system's
//!   roots; [`unverified_client_config`] only for a first contact whose answer is then
//!   checked against a pinned fingerprint.
//! - [`fingerprint`], [`split_credential`], [`check_pinned`]: credentials written
//!   `TOKEN@sha256:HEX` carry the CA's fingerprint, so a node's first contact is already
//!   verified, as k3s join tokens do.
//!
//! Architecture Invariant: every rustls config is built on the `ring` provider, named
//! explicitly ([`provider`]); no other provider is compiled in. Because reqwest is built
//! without a provider of its own, a process that builds a plain reqwest client must first
//! call [`install_crypto_provider`] (the KohakuRiver client and server do).

mod authority;
mod config;
mod error;
mod fingerprint;
mod serve;

use std::sync::Arc;

pub use authority::{Issued, SelfSigned, issue, self_signed};
pub use config::{ServerTls, client_config, unverified_client_config};
pub use error::Error;
pub use fingerprint::{check_pinned, fingerprint, split_credential};
pub use serve::serve;

/// Re-exported so users name the same rustls version as this crate.
pub use rustls;

/// The one cryptographic provider every config uses: `ring`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
