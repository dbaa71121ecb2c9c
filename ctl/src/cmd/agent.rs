//! `kohakuriver agent`: the node agent for this machine, until Ctrl-C or SIGTERM. Running
//! containers are left running on exit and adopted on the next start.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::daemon::{AgentFlags, default_data_dir};
use super::server::cancel_on_signal;
use crate::log_format::{LogFlags, init_tracing};
use crate::tls_flags::AgentTlsFlags;

/// Options of `kohakuriver agent`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver agent --server http://10.0.0.1:8000 --shared-dir /mnt/cluster-share --token-file node.token
  kohakuriver agent --server http://10.0.0.1:8000 --token krv_…   (a join credential: exchanged once, kept in DATA_DIR/agent/node.token)

Make a credential on the server with: kohakuriver token create --role node --name NODE")]
pub struct Args {
    #[command(flatten)]
    pub agent: AgentFlags,
    /// Where logs and state live (default: $KOHAKURIVER_DATA_DIR or ~/.kohakuriver).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Image for tasks naming neither --image nor --container, when the server names none.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// The node's credential (a node or join token, optionally TOKEN@sha256:HEX) [default:
    /// $KOHAKURIVER_TOKEN, else the one saved by an earlier join].
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the credential from this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: AgentTlsFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// The credential: `--token`, else `--token-file`, else `$KOHAKURIVER_TOKEN`.
fn credential(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(token) = &args.token {
        return Ok(Some(token.clone()));
    }
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the credential file {}", file.display()))?;
        anyhow::ensure!(
            !text.trim().is_empty(),
            "the credential file {} is empty; write the token from kohakuriver token create into it",
            file.display()
        );
        return Ok(Some(text.trim().to_string()));
    }
    Ok(std::env::var("KOHAKURIVER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

/// Runs the agent until a shutdown signal; `ca_pem` is `--ca`.
pub async fn run(
    server_url: String,
    ca_pem: Option<Vec<u8>>,
    args: Args,
) -> anyhow::Result<ExitCode> {
    init_tracing(args.log.log_format);
    let token = credential(&args)?;
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir).join("agent");
    let mut config = args.agent.config(&server_url, data_dir, args.default_image);
    config.tls = args.tls.server_tls()?;
    config.ca_pem = ca_pem;
    if let Some(raw) = token {
        let credential = kohakuriver_node_agent::credential::split_credential(&raw);
        config.token = Some(credential.token);
        config.ca_fingerprint = credential.ca_fingerprint;
    }
    let name = config.name.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    kohakuriver_node_agent::run(config, shutdown)
        .await
        .with_context(|| format!("the agent for node {name} failed"))?;
    Ok(ExitCode::SUCCESS)
}
