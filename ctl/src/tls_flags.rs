//! The TLS flags: `--ca` (global: the CLI, the agent and the server), the server's
//! `--tls-cert`/`--tls-key`/`--tls-self-signed`/`--tls-san` (`server`, `up`), and the
//! agent's `--tls-cert`/`--tls-key`; and what they turn into.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use kohakuriver_tls::ServerTls;

/// `--ca FILE`: the cluster CA that `https://` servers are verified with.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CaFlag {
    /// PEM file of the cluster CA that signed the server's certificate (a server started
    /// with --tls-self-signed keeps it as tls/ca.pem in its data dir) [default: the system's roots]
    #[arg(long, global = true, env = "KOHAKURIVER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl CaFlag {
    /// The CA's PEM, when `--ca` is given.
    pub fn read(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.ca else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA file {} (--ca)", path.display()))?;
        kohakuriver_tls::fingerprint(&pem)
            .with_context(|| format!("--ca {} is not a CA certificate", path.display()))?;
        Ok(Some(pem))
    }
}

/// TLS for the API server (`server`, `up`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerTlsFlags {
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS only, with a cluster CA and certificates made on first start in
    /// DATA_DIR/tls and kept (names: localhost, 127.0.0.1, the host name, the listen IP, and
    /// --tls-san). Without any TLS flag the server answers plain HTTP, and HTTPS on the same
    /// port with the same CA (for kubectl, which sends tokens only over https).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// A further DNS name or IP for the server's own certificate (repeatable), e.g. the
    /// address other machines reach it by when it listens on 0.0.0.0.
    #[arg(long = "tls-san", value_name = "NAME", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_san: Vec<String>,
}

/// What the server flags came to.
#[derive(Clone, Debug, Default)]
pub struct ServerTlsSetup {
    /// The server's certificate, when serving HTTPS.
    pub tls: Option<ServerTls>,
    /// The cluster CA (made, or from `--ca`): served at `/cacerts`, trusted by the log proxy
    /// and by the in-process controllers and agent.
    pub ca_pem: Option<Vec<u8>>,
    /// The file `ca_pem` was read from, for this machine's CLI config.
    pub ca_file: Option<PathBuf>,
    /// Where `--tls-self-signed` keeps its files.
    pub dir: Option<PathBuf>,
    /// True when the server was given no TLS flag: it answers plain HTTP, and https on the
    /// same port with its own CA in `dir`, for clients that send tokens only over https
    /// (kubectl). The URL it prints stays `http://`, node credentials carry no CA pin and
    /// `up`'s agent stays plain.
    pub plain_too: bool,
}

impl ServerTlsSetup {
    /// True when the server answers https only (its URL is `https://`).
    pub fn https_only(&self) -> bool {
        self.tls.is_some() && !self.plain_too
    }

    /// The `ca_fingerprint` the server tells with node and join credentials.
    pub fn fingerprint(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .ca_pem
            .as_deref()
            .map(kohakuriver_tls::fingerprint)
            .transpose()?)
    }
}

impl ServerTlsFlags {
    /// Loads or makes the certificates; `--tls-self-signed` keeps them in `dir`. `ca` is
    /// `--ca`: the cluster CA when the certificate is the operator's own.
    pub fn setup(
        &self,
        listen: SocketAddr,
        dir: &Path,
        ca: &CaFlag,
    ) -> anyhow::Result<ServerTlsSetup> {
        let no_flags = self.tls_cert.is_none() && self.tls_key.is_none();
        if self.tls_self_signed || no_flags {
            let dir = dir.to_path_buf();
            let names =
                self_signed_names(listen.ip(), &crate::cmd::daemon::host_name(), &self.tls_san);
            let made = kohakuriver_tls::self_signed(&dir, &names).with_context(|| {
                if self.tls_self_signed {
                    "cannot set up --tls-self-signed".to_string()
                } else {
                    format!(
                        "cannot make the server's own CA in {} (it answers https too, for kubectl)",
                        dir.display()
                    )
                }
            })?;
            let tls = ServerTls::from_pem_files(&made.cert_path, &made.key_path)?;
            if !self.tls_self_signed {
                return Ok(ServerTlsSetup {
                    tls: Some(tls.accepting_plain_http()),
                    ca_pem: Some(made.ca_pem),
                    ca_file: Some(dir.join("ca.pem")),
                    dir: Some(dir),
                    plain_too: true,
                });
            }
            let fingerprint = kohakuriver_tls::fingerprint(&made.ca_pem)?;
            tracing::info!(
                ca = %dir.join("ca.pem").display(),
                fingerprint = %format!("sha256:{fingerprint}"),
                "serving https with the cluster CA; clients take --ca with that file, and credentials may pin it as TOKEN@sha256:<fingerprint>"
            );
            return Ok(ServerTlsSetup {
                tls: Some(tls),
                ca_pem: Some(made.ca_pem),
                ca_file: Some(dir.join("ca.pem")),
                dir: Some(dir),
                plain_too: false,
            });
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
            _ => None,
        };
        Ok(ServerTlsSetup {
            tls,
            ca_pem: ca.read()?,
            ca_file: ca.ca.clone(),
            dir: None,
            plain_too: false,
        })
    }
}

/// TLS for the agent's endpoint.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentTlsFlags {
    /// Serve the agent's endpoint over HTTPS with this PEM certificate chain (with
    /// --tls-key); it should be signed by the cluster CA, which the server's log proxy trusts.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl AgentTlsFlags {
    /// The endpoint's certificate, when given.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls::from_pem_files(cert, key)?)),
            _ => Ok(None),
        }
    }
}

/// The names a `--tls-self-signed` certificate carries: `localhost`, `127.0.0.1`, the host
/// name, the listen IP unless it is unspecified (0.0.0.0, ::), then `extra`.
pub fn self_signed_names(listen: IpAddr, host_name: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.push(host_name.to_string());
    if !listen.is_unspecified() {
        names.push(listen.to_string());
    }
    names.extend(extra.iter().cloned());
    let mut unique: Vec<String> = Vec::new();
    for name in names {
        if !name.is_empty() && !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// Prints, once per process, that a token is about to cross the network in the clear.
pub fn warn_plaintext_token(url: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "warning: sending a token to {url} over plain http; anyone on the network can read it. Serve the API over https (kohakuriver server --tls-self-signed) and use an https:// URL with --ca"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_cover_local_use_and_the_listen_ip() {
        let check = |listen: &str, extra: &[&str], want: &[&str]| {
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                self_signed_names(listen.parse().unwrap(), "gpu-01", &extra),
                want,
                "{listen}"
            );
        };
        check("0.0.0.0", &[], &["localhost", "127.0.0.1", "gpu-01"]);
        check("::", &[], &["localhost", "127.0.0.1", "gpu-01"]);
        check("127.0.0.1", &[], &["localhost", "127.0.0.1", "gpu-01"]);
        check(
            "10.0.0.5",
            &["head.example", "10.0.0.5"],
            &[
                "localhost",
                "127.0.0.1",
                "gpu-01",
                "10.0.0.5",
                "head.example",
            ],
        );
    }
}
