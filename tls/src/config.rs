//! rustls configurations: the server's (a certificate chain and key) and the clients' (one
//! cluster CA, or the system's roots), all on the `ring` provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::Error;
use crate::provider;

/// A server's TLS settings: its certificate chain and private key, ready for rustls.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    plain_too: bool,
}

impl ServerTls {
    /// Reads a PEM certificate chain (the server's certificate first) and its PEM private
    /// key, e.g. `--tls-cert server.pem --tls-key server.key`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, Error> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        ServerTls::from_pem(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// The same from PEM text; `cert_what`/`key_what` name the inputs in errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_what: &str,
        key_what: &str,
    ) -> Result<ServerTls, Error> {
        let chain = parse_certs(cert_pem, cert_what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Key {
            what: key_what.to_string(),
            reason: e.to_string(),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Rustls {
                what: "the TLS protocol versions".to_string(),
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| Error::Rustls {
                what: format!("cannot use {cert_what} with {key_what} (does the key belong to the certificate?)"),
                source,
            })?;
        // The API and the agents speak HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            plain_too: false,
        })
    }

    /// The same, also answering plain HTTP on the same port: a connection whose first
    /// byte opens a TLS handshake is TLS, any other is plain HTTP. For a server that was
    /// not asked for TLS, so clients that speak only https with a token (kubectl) reach it
    /// while plain `http://` keeps working.
    pub fn accepting_plain_http(mut self) -> ServerTls {
        self.plain_too = true;
        self
    }

    /// True when plain HTTP is answered too (see [`ServerTls::accepting_plain_http`]).
    pub fn plain_too(&self) -> bool {
        self.plain_too
    }

    /// The rustls config, for a `tokio_rustls::TlsAcceptor`.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

/// A client config that trusts `ca_pem` (every certificate in it) as its only roots, or,
/// without it, the system's roots (the platform store, `SSL_CERT_FILE`, `SSL_CERT_DIR`).
/// The system's roots are read on each call: call it once per client, not per request.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in parse_certs(pem, "the CA")? {
                roots.add(cert).map_err(|source| Error::Rustls {
                    what: "cannot trust the CA".to_string(),
                    source,
                })?;
            }
        }
        None => {
            // A platform store with a few unreadable entries still leaves the rest usable;
            // an empty store makes every https:// connection fail with "unknown issuer",
            // which --ca fixes.
            let native = rustls_native_certs::load_native_certs();
            for err in &native.errors {
                tracing::debug!(error = %err, "skipping part of the system's certificate store");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "loaded the system's root certificates");
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            what: "the TLS protocol versions".to_string(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config that accepts any server certificate. Only for fetching a CA whose
/// fingerprint is checked afterwards ([`crate::check_pinned`]): what arrives is trusted
/// because of its hash, not because of the connection. The handshake's signatures are
/// still checked against the presented certificate.
pub fn unverified_client_config() -> Result<ClientConfig, Error> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            what: "the TLS protocol versions".to_string(),
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate in `pem`; an error when there is none.
pub(crate) fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Certificate {
            what: what.to_string(),
            reason: "no certificate found".to_string(),
        });
    }
    Ok(certs)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Accepts any certificate; see [`unverified_client_config`].
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
