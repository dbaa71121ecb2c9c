//! `kohakuriver kubeconfig`: a kubeconfig for the server this CLI talks to, with the same
//! credential and CA, so `kubectl` works at once.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::ServerArgs;
use crate::kubeconfig::{KubeconfigInput, kubeconfig};

/// Options of `kohakuriver kubeconfig`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The kubeconfig names this CLI's server, its CA (embedded) and its token, so it
grants what this CLI's credential grants: keep it as private as the token.

Examples:
  kohakuriver kubeconfig > ~/.kube/kohakuriver.yaml
  KUBECONFIG=~/.kube/kohakuriver.yaml kubectl get tasks
  kohakuriver kubeconfig -o ~/.kube/config          # written with mode 0600
  kohakuriver --token \"$(cat alice.token)\" kubeconfig --name lab-alice -o alice.kubeconfig"
)]
pub struct Args {
    /// Write the kubeconfig to FILE (mode 0600, replacing it) instead of printing it.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Name of the cluster, user and context entries.
    #[arg(long, default_value = "kohakuriver")]
    pub name: String,
    /// Do not check the credential against the server first.
    #[arg(long)]
    pub no_verify: bool,
}

/// Prints or writes the kubeconfig.
/// A server reached by `http://` is written as `https://` on the same port with the CA it
/// serves at `/cacerts` (kubectl sends tokens only over https).
pub async fn run(server: &ServerArgs, args: Args) -> anyhow::Result<ExitCode> {
    let connection = server.connection()?;
    let client = connection.client()?;
    let mut url = connection.url.clone();
    let mut ca_pem = match &connection.ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    if !args.no_verify {
        client.whoami().await.with_context(|| {
            format!(
                "{} did not accept this CLI's credential, so a kubeconfig with it would not work either (--no-verify writes it anyway)",
                client.base_url()
            )
        })?;
    }
    // kubectl sends a token only over https. A server started without TLS flags answers
    // https on the same port with its own CA, which it serves at /cacerts.
    if let (Some(rest), Some(_)) = (url.strip_prefix("http://"), &connection.token) {
        let ca = client
            .cacerts()
            .await
            .with_context(|| format!("cannot ask {} for its CA", client.base_url()))?;
        let Some(ca) = ca else {
            anyhow::bail!(
                "kubectl sends a token only over https, and {url} serves no CA (GET /cacerts is 404): start the server with --tls-self-signed, or --tls-cert/--tls-key, and use its https:// URL"
            );
        };
        url = format!("https://{rest}");
        ca_pem = Some(ca);
    }
    let text = kubeconfig(&KubeconfigInput {
        name: &args.name,
        server: &url,
        ca_pem: ca_pem.as_deref(),
        token: connection.token.as_ref().map(|(t, _)| t.as_str()),
    });
    match &args.output {
        None => print!("{text}"),
        Some(path) => {
            kohakuriver_apiserver::write_secret_file(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} (mode 0600); try: KUBECONFIG={} kubectl get tasks",
                path.display(),
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
