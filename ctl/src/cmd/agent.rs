//! `kohakuriver agent`: the node agent for this machine, until Ctrl-C or SIGTERM. Running
//! containers are left running on exit and adopted on the next start.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::daemon::{AgentFlags, default_data_dir};
use super::server::{cancel_on_signal, init_tracing};
use crate::tls_flags::AgentTlsFlags;

/// Options of `kohakuriver agent`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:
  kohakuriver agent --server http://10.0.0.1:8000 --shared-dir /mnt/cluster-share")]
pub struct Args {
    #[command(flatten)]
    pub agent: AgentFlags,
    /// Where logs and state live (default: $KOHAKURIVER_DATA_DIR or ~/.kohakuriver).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Image for tasks naming neither --image nor --container, when the server names none.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    #[command(flatten)]
    pub tls: AgentTlsFlags,
}

/// Runs the agent until a shutdown signal; `ca_pem` is `--ca`.
pub async fn run(
    server_url: String,
    ca_pem: Option<Vec<u8>>,
    args: Args,
) -> anyhow::Result<ExitCode> {
    init_tracing();
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir).join("agent");
    let mut config = args.agent.config(&server_url, data_dir, args.default_image);
    config.tls = args.tls.server_tls()?;
    config.ca_pem = ca_pem;
    let name = config.name.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    kohakuriver_node_agent::run(config, shutdown)
        .await
        .with_context(|| format!("the agent for node {name} failed"))?;
    Ok(ExitCode::SUCCESS)
}
