//! Where the API server is: `--server URL`, else `KOHAKURIVER_HOST`/`KOHAKURIVER_PORT`,
//! else `127.0.0.1:8000` (KohakuRiver's default).

use anyhow::Context;
use kohakuriver_client::{Client, ClientOptions};

use crate::tls_flags::{CaFlag, warn_plaintext_token};

/// The host used when neither `--server` nor `KOHAKURIVER_HOST` is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The port used when neither `--server` nor `KOHAKURIVER_PORT` is given.
pub const DEFAULT_PORT: u16 = 8000;

/// The global options that locate the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// API server URL, e.g. http://10.0.0.1:8000 [default: http://$KOHAKURIVER_HOST:$KOHAKURIVER_PORT, or http://127.0.0.1:8000]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Server host when --server is not given.
    #[arg(long, global = true, env = "KOHAKURIVER_HOST", hide = true)]
    pub host: Option<String>,
    /// Server port when --server is not given.
    #[arg(long, global = true, env = "KOHAKURIVER_PORT", hide = true)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub ca: CaFlag,
}

impl ServerArgs {
    /// The server's base URL.
    pub fn url(&self) -> String {
        server_url(self.server.as_deref(), self.host.as_deref(), self.port)
    }

    /// A client for the server.
    pub fn client(&self) -> anyhow::Result<Client> {
        let url = self.url();
        let options = ClientOptions {
            ca_pem: self.ca.read()?,
            ..ClientOptions::default()
        };
        let client = Client::with_options(&url, options)
            .with_context(|| format!("cannot use server address {url:?}"))?;
        if client.plaintext_token_risk() {
            warn_plaintext_token(client.base_url());
        }
        Ok(client)
    }
}

/// `--server` wins; else `http://HOST:PORT` from the environment with defaults.
pub fn server_url(flag: Option<&str>, host: Option<&str>, port: Option<u16>) -> String {
    if let Some(url) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        return url.to_string();
    }
    let host = host
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_HOST);
    let port = port.unwrap_or(DEFAULT_PORT);
    if host.contains("://") {
        // KOHAKURIVER_HOST given as a URL: take it as is unless it lacks a port.
        return host.trim_end_matches('/').to_string();
    }
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal needs brackets in a URL.
        return format!("http://[{host}]:{port}");
    }
    format!("http://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_precedence() {
        let check = |flag, host, port, want: &str| assert_eq!(server_url(flag, host, port), want);
        check(None, None, None, "http://127.0.0.1:8000");
        check(None, Some("10.0.0.5"), None, "http://10.0.0.5:8000");
        check(None, Some("head"), Some(9000), "http://head:9000");
        check(None, Some(""), Some(9000), "http://127.0.0.1:9000");
        check(None, Some("::1"), None, "http://[::1]:8000");
        check(None, Some("http://h:1/"), Some(2), "http://h:1");
        check(Some("http://x:1"), Some("head"), Some(9000), "http://x:1");
    }
}
