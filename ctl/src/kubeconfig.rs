//! A kubeconfig for this server, so kubectl (and the tools built on it) reach it as this
//! CLI does: the server URL, the cluster CA embedded as `certificate-authority-data`, and
//! the bearer token. [`kubeconfig`] is the pure rendering; `kohakuriver kubeconfig` and the
//! daemons' first start write it.

use base64::Engine;
use serde::Serialize;

/// What goes into a kubeconfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeconfigInput<'a> {
    /// The name of the cluster, user and context entries (`kohakuriver` by default).
    pub name: &'a str,
    /// The server's base URL.
    pub server: &'a str,
    /// The cluster CA as PEM, for an `https://` server with its own CA.
    pub ca_pem: Option<&'a [u8]>,
    /// The bearer token; `None` for a server without authentication.
    pub token: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<'a, Cluster<'a>>; 1],
    users: [Named<'a, User<'a>>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    entry: T,
}

#[derive(Serialize)]
struct Cluster<'a> {
    cluster: ClusterEntry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct User<'a> {
    user: UserEntry<'a>,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextEntry<'a>,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// The kubeconfig YAML for `input` (pure).
pub fn kubeconfig(input: &KubeconfigInput<'_>) -> String {
    let name = input.name;
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name,
            entry: Cluster {
                cluster: ClusterEntry {
                    server: input.server,
                    certificate_authority_data: input
                        .ca_pem
                        .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
                },
            },
        }],
        users: [Named {
            name,
            entry: User {
                user: UserEntry { token: input.token },
            },
        }],
        contexts: [Named {
            name,
            entry: Context {
                context: ContextEntry {
                    cluster: name,
                    user: name,
                },
            },
        }],
        current_context: name,
    };
    serde_yaml::to_string(&config).expect("a kubeconfig always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_with_a_token() {
        let yaml = kubeconfig(&KubeconfigInput {
            name: "kohakuriver",
            server: "http://10.0.0.1:8000",
            ca_pem: None,
            token: Some("krv_abcdefgh_secret"),
        });
        assert_eq!(
            yaml,
            "apiVersion: v1
kind: Config
clusters:
- name: kohakuriver
  cluster:
    server: http://10.0.0.1:8000
users:
- name: kohakuriver
  user:
    token: krv_abcdefgh_secret
contexts:
- name: kohakuriver
  context:
    cluster: kohakuriver
    user: kohakuriver
current-context: kohakuriver
"
        );
    }

    #[test]
    fn the_ca_is_embedded_and_no_token_means_no_user_credential() {
        let yaml = kubeconfig(&KubeconfigInput {
            name: "lab",
            server: "https://head:8000",
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n"),
            token: None,
        });
        assert!(
            yaml.contains("certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  user: {}\n"), "{yaml}");
        assert!(yaml.contains("current-context: lab\n"), "{yaml}");
    }
}
