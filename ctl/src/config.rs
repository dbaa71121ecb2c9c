//! Where the API server is and which credential to show it.
//!
//! The server is `--server URL`, else `KOHAKURIVER_HOST`/`KOHAKURIVER_PORT`, else the
//! `server` of the CLI config, else `http://127.0.0.1:8000` (KohakuRiver's default).
//!
//! The token is `--token`, else `KOHAKURIVER_TOKEN`, else the `token` of the CLI config, but
//! the config's token only when the server resolved above *is* the config's server: a saved
//! credential is never sent to another server. The CA (for `https://`) follows the same
//! rule: `--ca`/`KOHAKURIVER_CA`, else the config's `ca` for the config's server.
//!
//! The CLI config is a small YAML file like a kubeconfig, `~/.kohakuriver/config` (or
//! `$KOHAKURIVER_CONFIG`), mode 0600: `{server: URL, token: TOKEN, ca: PATH}`. `kohakuriver
//! login` writes it, and so do `up` and `server` for their own admin on first start.
//! [`resolve`] is the pure decision; [`ServerArgs`] gathers its inputs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kohakuriver_client::{Client, ClientOptions};
use serde::{Deserialize, Serialize};

use crate::tls_flags::{CaFlag, warn_plaintext_token};

/// The host used when neither `--server` nor `KOHAKURIVER_HOST` is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The port used when neither `--server` nor `KOHAKURIVER_PORT` is given.
pub const DEFAULT_PORT: u16 = 8000;
/// The environment variable naming the CLI config file.
pub const CONFIG_ENV: &str = "KOHAKURIVER_CONFIG";
/// The environment variable holding a token.
pub const TOKEN_ENV: &str = "KOHAKURIVER_TOKEN";
/// The environment variable naming a CA certificate file.
pub const CA_ENV: &str = "KOHAKURIVER_CA";

/// The global options that locate the server and carry the credential. They have a help
/// heading of their own, so `server --help` and `up --help` do not list the server a
/// client calls next to the address a daemon listens on.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Client options (where the CLI finds the server)")]
pub struct ServerArgs {
    /// API server URL, e.g. http://10.0.0.1:8000 [default: http://$KOHAKURIVER_HOST:$KOHAKURIVER_PORT, else the CLI config's server, else http://127.0.0.1:8000]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Server host when --server is not given.
    #[arg(long, global = true, env = "KOHAKURIVER_HOST", hide = true)]
    pub host: Option<String>,
    /// Server port when --server is not given.
    #[arg(long, global = true, env = "KOHAKURIVER_PORT", hide = true)]
    pub port: Option<u16>,
    /// Token to authenticate with [default: $KOHAKURIVER_TOKEN, else the CLI config's token when it is for this server]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub ca: CaFlag,
}

impl ServerArgs {
    /// What the command line and the environment say, for [`resolve`].
    fn given(&self) -> Given {
        Given {
            server: self.server.clone(),
            host: self.host.clone(),
            port: self.port,
            token: self.token.clone(),
            token_env: std::env::var(TOKEN_ENV).ok(),
            // `--ca`, or KOHAKURIVER_CA through clap.
            ca: self.ca.ca.clone(),
        }
    }

    /// The server, token and CA to use, from the flags, the environment and the CLI config.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let config = CliConfig::load(&config_path())?;
        Ok(resolve(&self.given(), config.as_ref()))
    }

    /// The server's base URL. A CLI config that cannot be read is left out here; commands
    /// that talk to the server report it through [`ServerArgs::client`].
    pub fn url(&self) -> String {
        let config = CliConfig::load(&config_path()).ok().flatten();
        resolve(&self.given(), config.as_ref()).url
    }

    /// A client for the server, with the credential and CA that go with it.
    pub fn client(&self) -> anyhow::Result<Client> {
        self.connection()?.client()
    }
}

/// Inputs of [`resolve`]: flags and environment variables, already read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Given {
    /// `--server`.
    pub server: Option<String>,
    /// `KOHAKURIVER_HOST` (or the hidden `--host`).
    pub host: Option<String>,
    /// `KOHAKURIVER_PORT` (or the hidden `--port`).
    pub port: Option<u16>,
    /// `--token`.
    pub token: Option<String>,
    /// `KOHAKURIVER_TOKEN`.
    pub token_env: Option<String>,
    /// `--ca` or `KOHAKURIVER_CA`.
    pub ca: Option<PathBuf>,
}

/// Where a token came from, to say so when the server refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token`.
    Flag,
    /// `KOHAKURIVER_TOKEN`.
    Env,
    /// The CLI config file.
    Config,
}

/// The server to talk to and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The server's base URL.
    pub url: String,
    /// The bearer token, if any, and where it came from.
    pub token: Option<(String, TokenSource)>,
    /// The CA certificate file for `https://`, if any.
    pub ca: Option<PathBuf>,
}

impl Connection {
    /// A client for this connection (reads the CA file, if any).
    pub fn client(&self) -> anyhow::Result<Client> {
        let ca_pem = match &self.ca {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!(
                    "cannot read the CA certificate {} (--ca, {CA_ENV} or the CLI config's ca)",
                    path.display()
                )
            })?),
            None => None,
        };
        let options = ClientOptions {
            token: self.token.as_ref().map(|(t, _)| t.clone()),
            ca_pem,
            ..Default::default()
        };
        let client = Client::with_options(&self.url, options)
            .with_context(|| format!("cannot use server address {:?}", self.url))?;
        if client.plaintext_token_risk() {
            warn_plaintext_token(client.base_url());
        }
        Ok(client)
    }
}

/// Decides the server, token and CA (pure; see the module doc for the rules).
pub fn resolve(given: &Given, config: Option<&CliConfig>) -> Connection {
    let non_empty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let env_given = non_empty(&given.host).is_some() || given.port.is_some();
    let url = match (non_empty(&given.server), config) {
        (Some(url), _) => url,
        (None, _) if env_given => server_url(None, given.host.as_deref(), given.port),
        (None, Some(config)) if !config.server.trim().is_empty() => {
            config.server.trim().trim_end_matches('/').to_string()
        }
        (None, _) => server_url(None, None, None),
    };
    let for_this_server = config.filter(|c| same_server(&c.server, &url));
    let token = match (non_empty(&given.token), non_empty(&given.token_env)) {
        (Some(t), _) => Some((t, TokenSource::Flag)),
        (None, Some(t)) => Some((t, TokenSource::Env)),
        (None, None) => for_this_server
            .and_then(|c| non_empty(&c.token))
            .map(|t| (t, TokenSource::Config)),
    };
    let ca = given
        .ca
        .clone()
        .or_else(|| for_this_server.and_then(|c| c.ca.clone()));
    Connection { url, token, ca }
}

/// True when two server URLs name the same server: same scheme, host and port, whatever
/// the case of the host, a trailing slash or a missing `http://`.
pub fn same_server(a: &str, b: &str) -> bool {
    fn normal(url: &str) -> String {
        let url = url.trim().trim_end_matches('/');
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            rest.to_ascii_lowercase()
        )
    }
    normal(a) == normal(b)
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
        // KOHAKURIVER_HOST given as a URL: taken as it is, with its own port or none (the
        // scheme's default); KOHAKURIVER_PORT does not apply to it.
        return host.trim_end_matches('/').to_string();
    }
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal needs brackets in a URL.
        return format!("http://[{host}]:{port}");
    }
    format!("http://{host}:{port}")
}

/// `""` when a bare `kohakuriver` command on this machine reaches `url` (through the
/// environment or the CLI config), else ` --server URL`, for the commands a banner shows.
pub fn server_flag_for(url: &str) -> String {
    let config = CliConfig::load(&config_path()).ok().flatten();
    let given = Given {
        host: std::env::var("KOHAKURIVER_HOST").ok(),
        port: std::env::var("KOHAKURIVER_PORT")
            .ok()
            .and_then(|p| p.trim().parse().ok()),
        ..Given::default()
    };
    if same_server(&resolve(&given, config.as_ref()).url, url) {
        String::new()
    } else {
        format!(" --server {url}")
    }
}

/// The CLI config file: `$KOHAKURIVER_CONFIG`, else `~/.kohakuriver/config`, else
/// `./.kohakuriver-config` when there is no home directory.
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".kohakuriver").join("config"),
        None => PathBuf::from(".kohakuriver-config"),
    }
}

/// The CLI config: which server this machine's CLI talks to, with which token and CA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The server's base URL.
    pub server: String,
    /// The token for that server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The CA certificate file for that server, when it serves `https://` with its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl CliConfig {
    /// Reads the config at `path`; `None` when there is none. A config that others may read
    /// is used, with a warning saying how to close it.
    pub fn load(path: &Path) -> anyhow::Result<Option<CliConfig>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the CLI config {}", path.display()));
            }
        };
        warn_if_open(path);
        let config: CliConfig = serde_yaml::from_str(&text).with_context(|| {
            format!(
                "the CLI config {} is not valid (expected YAML {{server: URL, token: TOKEN, ca: PATH}}); fix it, or write a new one with `kohakuriver login`",
                path.display()
            )
        })?;
        Ok(Some(config))
    }

    /// Writes the config to `path` with mode 0600 (its directory is made, mode 0700, if
    /// missing), replacing any config there in one step.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_yaml::to_string(self).context("cannot write the CLI config as YAML")?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        kohakuriver_apiserver::write_secret_file(path, &text)
            .with_context(|| format!("cannot write the CLI config {}", path.display()))
    }
}

/// Makes `dir` (and its parents) if missing; a new directory is private (mode 0700).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))
}

#[cfg(unix)]
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: the CLI config {} holds a token and others may read it (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_open(_path: &Path) {}

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

    fn config(server: &str, token: &str) -> CliConfig {
        CliConfig {
            server: server.into(),
            token: Some(token.into()),
            ca: Some("/etc/kr/ca.pem".into()),
        }
    }

    /// `resolve` rendered as `URL token(SOURCE) ca` for one-line cases.
    fn check(given: Given, config: Option<&CliConfig>, want: &str) {
        let c = resolve(&given, config);
        let token = match &c.token {
            Some((t, source)) => format!("{t}({source:?})"),
            None => "-".into(),
        };
        let ca = c.ca.map(|p| p.display().to_string()).unwrap_or("-".into());
        assert_eq!(format!("{} {token} {ca}", c.url), want, "{given:?}");
    }

    #[test]
    fn server_precedence_flag_env_config_default() {
        let cfg = config("http://head:8000", "saved");
        let flag = Given {
            server: Some("http://other:1".into()),
            host: Some("envhost".into()),
            ..Given::default()
        };
        check(flag, Some(&cfg), "http://other:1 - -");
        let env = Given {
            host: Some("envhost".into()),
            ..Given::default()
        };
        check(env, Some(&cfg), "http://envhost:8000 - -");
        let port_only = Given {
            port: Some(9000),
            ..Given::default()
        };
        check(port_only, Some(&cfg), "http://127.0.0.1:9000 - -");
        check(
            Given::default(),
            Some(&cfg),
            "http://head:8000 saved(Config) /etc/kr/ca.pem",
        );
        check(Given::default(), None, "http://127.0.0.1:8000 - -");
    }

    #[test]
    fn token_precedence_flag_env_then_config_for_its_server_only() {
        let cfg = config("http://head:8000/", "saved");
        let both = Given {
            token: Some("flag".into()),
            token_env: Some("env".into()),
            ..Given::default()
        };
        check(
            both,
            Some(&cfg),
            "http://head:8000 flag(Flag) /etc/kr/ca.pem",
        );
        let env = Given {
            token_env: Some("env".into()),
            ..Given::default()
        };
        check(env, Some(&cfg), "http://head:8000 env(Env) /etc/kr/ca.pem");
        // The same server named another way still gets the saved token.
        let same = Given {
            server: Some("HTTP://Head:8000".into()),
            ..Given::default()
        };
        check(
            same,
            Some(&cfg),
            "HTTP://Head:8000 saved(Config) /etc/kr/ca.pem",
        );
        // Another server never gets the saved token or CA.
        let other = Given {
            server: Some("http://evil:8000".into()),
            ..Given::default()
        };
        check(other, Some(&cfg), "http://evil:8000 - -");
        let other_port = Given {
            port: Some(8001),
            host: Some("head".into()),
            ..Given::default()
        };
        check(other_port, Some(&cfg), "http://head:8001 - -");
        // An empty flag or variable counts as not given.
        let empty = Given {
            token: Some(" ".into()),
            token_env: Some(String::new()),
            ..Given::default()
        };
        check(
            empty,
            Some(&cfg),
            "http://head:8000 saved(Config) /etc/kr/ca.pem",
        );
    }

    #[test]
    fn ca_flag_wins_over_the_config() {
        let cfg = config("http://head:8000", "saved");
        let given = Given {
            ca: Some("/tmp/mine.pem".into()),
            ..Given::default()
        };
        check(
            given,
            Some(&cfg),
            "http://head:8000 saved(Config) /tmp/mine.pem",
        );
    }

    #[test]
    fn same_server_is_strict_about_host_and_port() {
        assert!(same_server("http://a:1/", "a:1"));
        assert!(same_server("http://A:1", "http://a:1"));
        assert!(!same_server("http://a:1", "https://a:1"));
        assert!(!same_server("http://a:1", "http://a:2"));
        assert!(!same_server("http://localhost:1", "http://127.0.0.1:1"));
    }

    #[test]
    fn config_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        assert_eq!(CliConfig::load(&path).unwrap(), None);
        let cfg = config("http://head:8000", "krv_x");
        cfg.save(&path).unwrap();
        assert_eq!(CliConfig::load(&path).unwrap(), Some(cfg));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(&path, "server: [").unwrap();
        let e = format!("{:#}", CliConfig::load(&path).unwrap_err());
        assert!(
            e.contains("is not valid") && e.contains("kohakuriver login"),
            "{e}"
        );
    }
}
