//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong loading, making or checking certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text that holds no certificate, or is malformed.
    #[error(
        "{what} holds no usable PEM certificate ({reason}); give a file with -----BEGIN CERTIFICATE----- blocks"
    )]
    Certificate {
        /// Which input (a path, or `the CA`).
        what: String,
        /// What the parser said.
        reason: String,
    },
    /// PEM text that holds no private key, or is malformed.
    #[error(
        "{what} holds no usable PEM private key ({reason}); give a PKCS#8, PKCS#1 or SEC1 key file"
    )]
    Key {
        /// Which input.
        what: String,
        /// What the parser said.
        reason: String,
    },
    /// rustls refused the certificates or key (a key that does not match the certificate…).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// A certificate could not be made.
    #[error("cannot make {what}: {source}")]
    Generate {
        /// Which certificate.
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A stored CA key that cannot sign (not made by `--tls-self-signed`).
    #[error(
        "{} is not usable to sign certificates ({reason}); remove the directory's ca.pem and ca.key to make a new CA, or give --tls-cert/--tls-key",
        path.display()
    )]
    CaKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A credential's fingerprint part is malformed.
    #[error(
        "the credential's CA fingerprint {given:?} is not usable: {reason}; write it as TOKEN@sha256:<64 hex digits>"
    )]
    BadFingerprint {
        /// The part after `@`.
        given: String,
        /// Why.
        reason: String,
    },
    /// The server's CA is not the one the credential pins.
    #[error(
        "the server's CA has fingerprint sha256:{actual}, but the credential pins sha256:{expected}: this is not the server the credential was made for, or someone is in between; check the server URL, or ask the server's admin for the credential again"
    )]
    FingerprintMismatch {
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint of what the server sent.
        actual: String,
    },
}
