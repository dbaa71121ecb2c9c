//! `kohakuriver controllers`: the scheduler and the lifecycle controllers on their own,
//! against a server elsewhere (`kohakuriver server` runs them too unless told not to).

use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_client::Client;
use tokio_util::sync::CancellationToken;

use super::daemon::ControllerFlags;
use super::server::cancel_on_signal;
use crate::log_format::{LogFlags, init_tracing};

/// Options of `kohakuriver controllers`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:
  kohakuriver server --no-controllers &
  kohakuriver controllers --server http://127.0.0.1:8000")]
pub struct Args {
    #[command(flatten)]
    pub controllers: ControllerFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Runs the controllers until a shutdown signal.
pub async fn run(client: Client, args: Args) -> anyhow::Result<ExitCode> {
    init_tracing(args.log.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    kohakuriver_controllers::run(client, args.controllers.config(), shutdown)
        .await
        .context("the controllers failed")?;
    Ok(ExitCode::SUCCESS)
}
