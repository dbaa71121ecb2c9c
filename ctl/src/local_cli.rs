//! After `server` or `up` answers: make sure the CLI on this machine works with no extra
//! step. If the CLI config already names this server with a token the server accepts, it is
//! left alone; else, when the admin token file is readable, the config is written with the
//! server's URL and the admin token. [`decide`] is the pure rule; [`ensure`] does the IO.

use std::path::{Path, PathBuf};

use kohakuriver_client::{Client, ClientOptions};

use crate::config::{CliConfig, config_path, same_server};

/// What the existing CLI config says about this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// No config file.
    None,
    /// It names another server.
    Other(String),
    /// It names this server; `accepted` is whether its token passed `whoami`, with the
    /// identity it names.
    This { accepted: Option<String> },
}

/// What to do with the CLI config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It already works for this server (as this identity).
    Keep(String),
    /// Write it with the admin token; `replacing` is the other server it named, if any.
    Write { replacing: Option<String> },
    /// Leave it; the reason is told in the banner.
    Leave(String),
}

/// Decides what to do with the CLI config (pure).
pub fn decide(auth: bool, existing: &Existing, admin_token: bool, admin_file: &Path) -> Decision {
    if !auth {
        return Decision::Leave(
            "the server runs without authentication; no token is needed".into(),
        );
    }
    if let Existing::This {
        accepted: Some(who),
    } = existing
    {
        return Decision::Keep(who.clone());
    }
    if !admin_token {
        return Decision::Leave(format!(
            "{} is not readable (an admin token was made on an earlier start); log in with `kohakuriver login --token-file FILE`",
            admin_file.display()
        ));
    }
    Decision::Write {
        replacing: match existing {
            Existing::Other(server) => Some(server.clone()),
            _ => None,
        },
    }
}

/// What [`ensure`] did, as one line for the banner.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The CLI config file.
    pub path: PathBuf,
    /// What happened.
    pub decision: Decision,
    /// The kubeconfig written for the admin (or why none was).
    pub kubeconfig: Result<PathBuf, String>,
}

impl Outcome {
    /// `CLI  …` line for the banner.
    pub fn describe(&self) -> String {
        let path = self.path.display();
        match &self.decision {
            Decision::Keep(who) => format!("{path} already logs this CLI in as {who}"),
            Decision::Write { replacing: None } => {
                format!("{path} written: this CLI is admin on this server")
            }
            Decision::Write {
                replacing: Some(other),
            } => format!(
                "{path} written: this CLI is admin on this server (it named {other} before)"
            ),
            Decision::Leave(why) => format!("{path} left as it is: {why}"),
        }
    }

    /// `kubeconfig …` line for the banner.
    pub fn describe_kubeconfig(&self) -> String {
        match &self.kubeconfig {
            Ok(path) => format!(
                "{}  (admin; KUBECONFIG={} kubectl get tasks)",
                path.display(),
                path.display()
            ),
            Err(why) => why.clone(),
        }
    }
}

/// Looks at the CLI config, asks the server about its token, and writes the config when
/// [`decide`] says so (with `ca`, the cluster CA file of an https server). Failures are told
/// in the outcome, never fatal: the server runs anyway.
pub async fn ensure(
    url: &str,
    ca: Option<&Path>,
    auth: bool,
    admin_file: &Path,
    kube: KubeAccess<'_>,
) -> Outcome {
    let kubeconfig = write_kubeconfig(kube, auth, admin_file);
    let path = config_path();
    let decision = match CliConfig::load(&path) {
        Err(e) => Decision::Leave(format!("{e:#}")),
        Ok(config) => {
            let existing = match &config {
                None => Existing::None,
                Some(c) if !same_server(&c.server, url) => Existing::Other(c.server.clone()),
                Some(c) => Existing::This {
                    accepted: match &c.token {
                        Some(token) if auth => whoami(url, ca, token).await,
                        _ => None,
                    },
                },
            };
            let admin_token = read_admin_token(admin_file);
            let decision = decide(auth, &existing, admin_token.is_some(), admin_file);
            match (&decision, admin_token) {
                (Decision::Write { .. }, Some(token)) => {
                    let config = CliConfig {
                        server: url.to_string(),
                        token: Some(token),
                        ca: ca.map(Path::to_path_buf),
                    };
                    match config.save(&path) {
                        Ok(()) => decision,
                        Err(e) => Decision::Leave(format!("{e:#}")),
                    }
                }
                _ => decision,
            }
        }
    };
    Outcome {
        path,
        decision,
        kubeconfig,
    }
}

/// Where kubectl reaches the server: its https URL (kubectl sends tokens only over https)
/// and CA, and the data dir the kubeconfig goes in.
#[derive(Clone, Copy, Debug)]
pub struct KubeAccess<'a> {
    /// The server's `https://` URL (the same port when it also answers plain http).
    pub url: &'a str,
    /// The CA that signed the server's certificate, if not a public one.
    pub ca: Option<&'a Path>,
    /// The server's data dir.
    pub data_dir: &'a Path,
}

/// Writes `<data_dir>/kubeconfig` (0600) for kubectl: this server, its CA and the admin
/// token (no token without authentication). Without a readable admin token there is none.
fn write_kubeconfig(
    kube: KubeAccess<'_>,
    auth: bool,
    admin_file: &Path,
) -> Result<PathBuf, String> {
    let KubeAccess { url, ca, data_dir } = kube;
    let token = match (auth, read_admin_token(admin_file)) {
        (false, _) => None,
        (true, Some(token)) => Some(token),
        (true, None) => {
            return Err(format!(
                "none: {} is not readable; `kohakuriver kubeconfig` prints one for any credential",
                admin_file.display()
            ));
        }
    };
    let ca_pem = match ca {
        Some(file) => {
            Some(std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?)
        }
        None => None,
    };
    let text = crate::kubeconfig::kubeconfig(&crate::kubeconfig::KubeconfigInput {
        name: "kohakuriver",
        server: url,
        ca_pem: ca_pem.as_deref(),
        token: token.as_deref(),
    });
    let path = data_dir.join("kubeconfig");
    kohakuriver_apiserver::write_secret_file(&path, &text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The identity the server gives `token`, as `role "name"`, or `None` if it refuses it.
async fn whoami(url: &str, ca: Option<&Path>, token: &str) -> Option<String> {
    let options = ClientOptions {
        token: Some(token.to_string()),
        ca_pem: ca.and_then(|path| std::fs::read(path).ok()),
        ..Default::default()
    };
    let me = Client::with_options(url, options)
        .ok()?
        .whoami()
        .await
        .ok()?;
    Some(format!("{} {:?}", me.role, me.name))
}

/// The admin token in `file`, if it is readable and holds one.
fn read_admin_token(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(auth: bool, existing: Existing, admin_token: bool, want: &str) {
        let d = decide(auth, &existing, admin_token, Path::new("/d/admin.token"));
        let got = match d {
            Decision::Keep(who) => format!("keep {who}"),
            Decision::Write { replacing: None } => "write".into(),
            Decision::Write { replacing: Some(s) } => format!("write replacing {s}"),
            Decision::Leave(why) => format!("leave: {why}"),
        };
        assert!(got.starts_with(want), "{existing:?} {admin_token}: {got}");
    }

    #[test]
    fn decisions() {
        let this_ok = Existing::This {
            accepted: Some("user \"alice\"".into()),
        };
        let this_bad = Existing::This { accepted: None };
        let other = Existing::Other("http://head:8000".into());
        check(true, Existing::None, true, "write");
        check(true, this_ok.clone(), true, "keep user \"alice\"");
        check(true, this_ok, false, "keep");
        check(true, this_bad.clone(), true, "write");
        check(
            true,
            other.clone(),
            true,
            "write replacing http://head:8000",
        );
        check(
            true,
            this_bad,
            false,
            "leave: /d/admin.token is not readable",
        );
        check(true, other, false, "leave: /d/admin.token");
        check(
            false,
            Existing::None,
            true,
            "leave: the server runs without",
        );
    }
}
