//! `kohakuriver server`: the API server on a SQLite file, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Options of `kohakuriver server`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing; `:memory:` keeps everything in memory (lost on exit).
    #[arg(long, default_value = "kohakuriver.db", value_name = "PATH")]
    pub db: PathBuf,
    /// Image for tasks that name neither `image` nor `container`.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// How many events the watch history keeps; watchers further behind must list again.
    #[arg(long, value_name = "N")]
    pub watch_history: Option<u64>,
}

/// Runs the server until a shutdown signal.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_tracing();
    let mut config = kohakuriver_apiserver::Config {
        db_path: (args.db.as_os_str() != ":memory:").then(|| args.db.clone()),
        default_image: args.default_image,
        ..Default::default()
    };
    if let Some(n) = args.watch_history {
        config.watch_history = n;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    kohakuriver_apiserver::serve(listener, config, shutdown)
        .await
        .with_context(|| {
            format!(
                "the API server on {} failed (database {})",
                args.listen,
                args.db.display()
            )
        })?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}
