//! The agent's two secrets: the credential it shows the API server, and the agent secret
//! the server shows it back when it calls the agent's endpoint.
//!
//! The credential comes from `--token` (or `KOHAKURIVER_TOKEN`), else from
//! `<data_dir>/node.token`. [`judge`] decides from the server's `whoami` answer what a given
//! token is good for: a node credential for this node is used as it is and never saved (under
//! `up` it lives only as long as the process); a join credential is exchanged once for a node
//! credential, which is saved to `node.token` (mode 0600) and reused at every later start;
//! anything else is refused with the command that makes the right one. A credential may be
//! written `TOKEN@sha256:HEX`: the suffix is the fingerprint of the cluster CA, split off here
//! and passed on (the TLS layer verifies the server's CA against it).
//!
//! The agent secret comes from `GET /nodes/{name}/credentials` at start and is refreshed
//! every minute from the heartbeat loop (see [`SecretRefresher`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use kohakuriver_api::auth::{Role, WhoAmI};
use kohakuriver_client::{Client, ClientOptions};

use crate::endpoint::AgentSecret;

/// Where a node credential obtained by joining is kept, under the agent's data dir.
pub const NODE_TOKEN_FILE: &str = "node.token";

/// Why the agent has no usable credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The credential belongs to a person or the controllers, not to a node.
    #[error(
        "the credential given is {role} {name:?}, not a node credential: an agent needs one made with kohakuriver token create --role node --name {node} (or a join credential, --role join)"
    )]
    WrongRole {
        /// The credential's role.
        role: Role,
        /// The credential's name.
        name: String,
        /// This node.
        node: String,
    },
    /// A node credential of another node.
    #[error(
        "the credential given is the node credential of node {name:?}, not of this node {node:?}: make one with kohakuriver token create --role node --name {node}"
    )]
    WrongNode {
        /// The node the credential is bound to.
        name: String,
        /// This node.
        node: String,
    },
    /// The server does not accept the credential (unknown, expired or revoked).
    #[error(
        "the server refused {what}: it is unknown, expired or revoked; make a new one with kohakuriver token create --role node --name {node} and start the agent with --token"
    )]
    Refused {
        /// Which credential: the one given, or the saved file.
        what: String,
        /// This node.
        node: String,
    },
    /// The server needs a credential and the agent has none.
    #[error(
        "the server requires a credential: start the agent with --token (kohakuriver token create --role node --name {node})"
    )]
    Required {
        /// This node.
        node: String,
    },
    /// The server runs with authentication but would not give this node's agent secret.
    #[error(
        "cannot fetch the agent secret of node {node} from the server ({source}); the endpoint cannot be closed without it"
    )]
    Secret {
        /// This node.
        node: String,
        /// The server's answer.
        #[source]
        source: kohakuriver_client::Error,
    },
    /// The server could not be asked.
    #[error("cannot check the credential with the server: {0}")]
    Server(#[from] kohakuriver_client::Error),
    /// The node credential could not be saved or read.
    #[error("{what} {}: {source}; check that the agent's data dir is writable by it", path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// A credential split into the token and the CA fingerprint it may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The bearer token, `krv_…`.
    pub token: String,
    /// Lowercase hex SHA-256 of the cluster CA, from a `TOKEN@sha256:HEX` credential.
    pub ca_fingerprint: Option<String>,
}

/// Splits `TOKEN@sha256:HEX` into the token and the fingerprint (lowercased); a credential
/// without the suffix has none. Surrounding white space (a file's newline) is dropped.
pub fn split_credential(raw: &str) -> Credential {
    let raw = raw.trim();
    match raw.split_once("@sha256:") {
        Some((token, hex)) => Credential {
            token: token.trim().to_string(),
            ca_fingerprint: Some(hex.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()),
        },
        None => Credential {
            token: raw.to_string(),
            ca_fingerprint: None,
        },
    }
}

/// What a given credential is good for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Use it as it is.
    Use,
    /// Exchange it for a node credential (`POST /join`).
    Join,
}

/// Decides from the server's `whoami` answer for a credential what the agent of `node` does
/// with it. A server without authentication accepts anything, so the credential is used.
pub fn judge(whoami: &WhoAmI, node: &str) -> Result<Verdict, CredentialError> {
    if !whoami.authenticated {
        return Ok(Verdict::Use);
    }
    match whoami.role {
        Role::Node if whoami.name == node => Ok(Verdict::Use),
        Role::Node => Err(CredentialError::WrongNode {
            name: whoami.name.clone(),
            node: node.to_string(),
        }),
        Role::Join => Ok(Verdict::Join),
        role => Err(CredentialError::WrongRole {
            role,
            name: whoami.name.clone(),
            node: node.to_string(),
        }),
    }
}

/// True when the server answered 401: no credential, or one it does not know.
pub fn is_unauthorized(err: &kohakuriver_client::Error) -> bool {
    err.status().is_some_and(|s| s.code == 401)
        || matches!(err, kohakuriver_client::Error::Unexpected { code: 401, .. })
}

fn client(
    server_url: &str,
    ca_pem: Option<&[u8]>,
    token: Option<&str>,
) -> Result<Client, CredentialError> {
    let options = ClientOptions {
        token: token.map(str::to_string),
        ca_pem: ca_pem.map(<[u8]>::to_vec),
        ..Default::default()
    };
    Ok(Client::with_options(server_url, options)?)
}

/// Asks `whoami` with `token`; None when the server has no such route (an older server).
async fn whoami(
    server_url: &str,
    ca_pem: Option<&[u8]>,
    token: Option<&str>,
) -> Result<Option<WhoAmI>, kohakuriver_client::Error> {
    let client = Client::with_options(
        server_url,
        ClientOptions {
            token: token.map(str::to_string),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            ..Default::default()
        },
    )?;
    match client.whoami().await {
        Ok(w) => Ok(Some(w)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds the credential the agent of `node` uses with the server at `server_url`: the one
/// given (as [`judge`] allows), the node credential saved under `data_dir`, or none when the
/// server needs none. The answer keeps the CA fingerprint of the given credential, else of
/// the saved one. `ca_pem` is the CA the server is verified with (see `server_ca`).
pub async fn resolve(
    server_url: &str,
    ca_pem: Option<&[u8]>,
    node: &str,
    data_dir: &Path,
    given: Option<&Credential>,
) -> Result<Option<Credential>, CredentialError> {
    let saved_path = data_dir.join(NODE_TOKEN_FILE);
    let saved = read_saved(&saved_path)?;
    let Some(given) = given else {
        if let Some(saved) = saved {
            return match whoami(server_url, ca_pem, Some(&saved.token)).await {
                Ok(_) => Ok(Some(saved)),
                Err(e) if is_unauthorized(&e) => Err(CredentialError::Refused {
                    what: format!("the node credential saved in {}", saved_path.display()),
                    node: node.to_string(),
                }),
                Err(e) => Err(e.into()),
            };
        }
        return match whoami(server_url, ca_pem, None).await {
            Ok(_) => Ok(None),
            Err(e) if is_unauthorized(&e) => Err(CredentialError::Required {
                node: node.to_string(),
            }),
            Err(e) => Err(e.into()),
        };
    };
    let verdict = match whoami(server_url, ca_pem, Some(&given.token)).await {
        Ok(Some(w)) => judge(&w, node)?,
        // No whoami on this server: nothing to learn; the credential is used as given.
        Ok(None) => Verdict::Use,
        // A join credential is often single-use: once exchanged, the node credential it
        // gave is what counts.
        Err(e) if is_unauthorized(&e) => {
            return match accepted(server_url, ca_pem, node, saved, &saved_path).await? {
                Some(saved) => Ok(Some(saved)),
                None => Err(CredentialError::Refused {
                    what: "the credential given (--token)".to_string(),
                    node: node.to_string(),
                }),
            };
        }
        Err(e) => return Err(e.into()),
    };
    if verdict == Verdict::Use {
        return Ok(Some(given.clone()));
    }
    if let Some(saved) = accepted(server_url, ca_pem, node, saved, &saved_path).await? {
        return Ok(Some(Credential {
            ca_fingerprint: given.ca_fingerprint.clone().or(saved.ca_fingerprint),
            ..saved
        }));
    }
    let created = client(server_url, ca_pem, Some(&given.token))?
        .join(node)
        .await?;
    let credential = Credential {
        token: created.token,
        ca_fingerprint: given.ca_fingerprint.clone().or(created.ca_fingerprint),
    };
    save(&saved_path, &credential)?;
    tracing::info!(file = %saved_path.display(), "joined: node credential saved");
    Ok(Some(credential))
}

/// The saved node credential when the server takes it as this node's.
async fn accepted(
    server_url: &str,
    ca_pem: Option<&[u8]>,
    node: &str,
    saved: Option<Credential>,
    path: &Path,
) -> Result<Option<Credential>, CredentialError> {
    let Some(saved) = saved else {
        return Ok(None);
    };
    match whoami(server_url, ca_pem, Some(&saved.token)).await {
        Ok(Some(w)) if judge(&w, node).ok() == Some(Verdict::Use) => {
            tracing::info!(file = %path.display(), "using the node credential saved by an earlier join");
            Ok(Some(saved))
        }
        Ok(_) => Ok(None),
        Err(e) if is_unauthorized(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The saved node credential, if the file exists and is not empty.
pub(crate) fn read_saved(path: &Path) -> Result<Option<Credential>, CredentialError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(split_credential(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialError::File {
            what: "cannot read the node credential",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the credential (`TOKEN[@sha256:HEX]`) readable by its owner only.
fn save(path: &Path, credential: &Credential) -> Result<(), CredentialError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |source| CredentialError::File {
        what: "cannot save the node credential",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut text = credential.token.clone();
    if let Some(hex) = &credential.ca_fingerprint {
        text.push_str(&format!("@sha256:{hex}"));
    }
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // `mode` applies only to a new file: an old one may have been readable by others.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    Ok(())
}

/// The agent secret at start. When the server runs with authentication the endpoint must
/// be closed, so a failure other than "no such route" (an older server) stops the start;
/// without authentication a secret is used when the server gives one.
pub async fn fetch_secret(
    client: &Client,
    node: &str,
    server_auth: bool,
) -> Result<Option<String>, CredentialError> {
    match client.node_credentials(node).await {
        Ok(c) => Ok(Some(c.agent_secret).filter(|s| !s.is_empty())),
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                node,
                "the server gives no agent secret (it predates agent credentials): the log endpoint is open to anyone who can reach it"
            );
            Ok(None)
        }
        Err(e) if server_auth => Err(CredentialError::Secret {
            node: node.to_string(),
            source: e,
        }),
        Err(e) => {
            tracing::warn!(node, error = %e, "no agent secret from a server without authentication: the log endpoint is open");
            Ok(None)
        }
    }
}

/// Keeps the agent secret current: asked again every minute by the heartbeat loop. A failed
/// refresh keeps the secret known so far.
#[derive(Clone, Debug)]
pub struct SecretRefresher {
    /// The agent's client (with its credential).
    pub client: Client,
    /// This node.
    pub node: String,
    /// The secret the endpoint checks.
    pub secret: AgentSecret,
}

impl SecretRefresher {
    /// Asks the server once and stores the answer.
    pub async fn refresh(&self) {
        match self.client.node_credentials(&self.node).await {
            Ok(c) => self.secret.set(c.agent_secret),
            // An older server: nothing to refresh.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the agent secret; keeping the one known")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, role: Role) -> WhoAmI {
        WhoAmI {
            name: name.into(),
            role,
            may: vec![],
            authenticated: true,
        }
    }

    #[test]
    fn split_keeps_token_and_fingerprint() {
        let c = split_credential("krv_abc_def@sha256:ABCdef01\n");
        assert_eq!(c.token, "krv_abc_def");
        assert_eq!(c.ca_fingerprint.as_deref(), Some("abcdef01"));
        let c = split_credential("  krv_abc_def \n");
        assert_eq!(c.token, "krv_abc_def");
        assert_eq!(c.ca_fingerprint, None);
        assert_eq!(split_credential("krv_x@sha256:").ca_fingerprint, None);
    }

    #[test]
    fn verdicts() {
        let j = |w: WhoAmI| judge(&w, "n1").map_err(|e| e.to_string());
        assert_eq!(j(who("n1", Role::Node)), Ok(Verdict::Use));
        assert_eq!(j(who("boot", Role::Join)), Ok(Verdict::Join));
        let other = j(who("n2", Role::Node)).unwrap_err();
        assert!(other.contains("\"n2\""), "{other}");
        assert!(
            other.contains("kohakuriver token create --role node --name n1"),
            "{other}"
        );
        for role in [Role::Admin, Role::User, Role::Controllers, Role::Viewer] {
            let err = j(who("alice", role)).unwrap_err();
            assert!(err.contains(role.as_str()), "{err}");
            assert!(err.contains("\"alice\""), "{err}");
            assert!(
                err.contains("kohakuriver token create --role node --name n1"),
                "{err}"
            );
        }
        let mut anonymous = who("anonymous", Role::Admin);
        anonymous.authenticated = false;
        assert_eq!(j(anonymous), Ok(Verdict::Use));
    }

    #[test]
    fn saved_credential_is_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(NODE_TOKEN_FILE);
        assert_eq!(read_saved(&path).unwrap(), None);
        let c = Credential {
            token: "krv_a_b".into(),
            ca_fingerprint: Some("00ff".into()),
        };
        save(&path, &c).unwrap();
        assert_eq!(read_saved(&path).unwrap(), Some(c));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = Credential {
            token: "krv_c_d".into(),
            ca_fingerprint: None,
        };
        save(&path, &plain).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "krv_c_d\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unauthorized_is_recognised_in_both_shapes() {
        use kohakuriver_api::{Status, StatusReason};
        let api =
            kohakuriver_client::Error::Api(Box::new(Status::new(StatusReason::Unauthorized, "no")));
        assert!(is_unauthorized(&api));
        let plain = kohakuriver_client::Error::Unexpected {
            code: 401,
            text: "no".into(),
        };
        assert!(is_unauthorized(&plain));
        let forbidden =
            kohakuriver_client::Error::Api(Box::new(Status::new(StatusReason::Forbidden, "no")));
        assert!(!is_unauthorized(&forbidden));
    }
}
