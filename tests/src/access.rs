//! How a test reaches a cluster: the server's URL, the environment the CLI runs in (the
//! cluster's own CLI config) and the admin token. A cheap `Clone`, so background threads
//! can run commands and read objects without borrowing the [`crate::Cluster`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binary::binary;
use crate::http::{HttpResponse, http_get_with};
use crate::run::{Run, Stream};

/// The server, the CLI's environment and the admin token of one cluster.
#[derive(Clone, Debug)]
pub struct Access {
    url: String,
    config: PathBuf,
    admin_token_file: PathBuf,
    /// The cluster CA file, when the server speaks https.
    ca: Option<PathBuf>,
}

impl Access {
    /// Access to the server at `url` whose CLI config is `config` and whose data dir (with
    /// `admin.token`) is `data_dir`.
    pub fn new(url: &str, config: &Path, data_dir: &Path) -> Access {
        Access {
            url: url.to_string(),
            config: config.to_path_buf(),
            admin_token_file: data_dir.join("admin.token"),
            ca: None,
        }
    }

    /// The same, for a server whose certificate the CA in `ca` signed.
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Access {
        self.ca = ca;
        self
    }

    /// The cluster CA file, when the server speaks https.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The API server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's CLI config file (`KOHAKURIVER_CONFIG` of its daemons and CLI runs).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The environment of every process of the cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "KOHAKURIVER_CONFIG".to_string(),
            self.config.display().to_string(),
        )]
    }

    /// The admin token the server wrote at its first start; panics when there is none.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.admin_token_file)
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|e| panic!("read {}: {e}", self.admin_token_file.display()))
    }

    /// `kohakuriver --server URL args…` in the cluster's environment (as its admin, through
    /// the CLI config the server wrote).
    pub fn kr(&self, args: &[&str], timeout: Duration) -> Run {
        Run::exec_with(binary(), &self.args(None, args), &self.env(), timeout)
    }

    /// `kohakuriver args…` with neither `--server` nor `--token`: the CLI as a user on the
    /// cluster's machine types it, finding both in the CLI config.
    pub fn kr_plain(&self, args: &[&str], timeout: Duration) -> Run {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Run::exec_with(binary(), &args, &self.env(), timeout)
    }

    /// `kohakuriver --server URL --token TOKEN args…`: the CLI as another identity.
    pub fn kr_as(&self, token: &str, args: &[&str], timeout: Duration) -> Run {
        Run::exec_with(
            binary(),
            &self.args(Some(token), args),
            &self.env(),
            timeout,
        )
    }

    /// Spawns `kohakuriver --server URL args…` and records its output as it comes.
    pub fn stream(&self, args: &[&str]) -> Stream {
        Stream::spawn_with(binary(), &self.args(None, args), &self.env())
    }

    fn args(&self, token: Option<&str>, args: &[&str]) -> Vec<String> {
        let mut full = vec!["--server".to_string(), self.url.clone()];
        if let Some(ca) = &self.ca {
            full.extend(["--ca".to_string(), ca.display().to_string()]);
        }
        if let Some(token) = token {
            full.extend(["--token".to_string(), token.to_string()]);
        }
        full.extend(args.iter().map(|s| s.to_string()));
        full
    }

    /// `GET {url}{path}` as admin.
    pub fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        let token = std::fs::read_to_string(&self.admin_token_file).ok();
        let ca_pem = match &self.ca {
            Some(ca) => Some(std::fs::read(ca)?),
            None => None,
        };
        http_get_with(
            &format!("{}{path}", self.url),
            ca_pem.as_deref(),
            token.as_deref().map(str::trim),
        )
    }
}
