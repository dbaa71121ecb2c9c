//! `kohakuriver server`: the API server on a SQLite file, with the controllers (scheduler,
//! node and task lifecycle) talking to it over HTTP, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_client::Client;
use tokio_util::sync::CancellationToken;

use super::daemon::ControllerFlags;

/// Options of `kohakuriver server`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver server --listen 0.0.0.0:8000 --db /var/lib/kohakuriver/kohakuriver.db
  kohakuriver server --db :memory: --default-image ubuntu:22.04 --node-grace 45s")]
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
    /// Run only the API server; run the controllers elsewhere with `kohakuriver controllers`.
    #[arg(long)]
    pub no_controllers: bool,
    #[command(flatten)]
    pub controllers: ControllerFlags,
}

/// Runs the server (and the controllers) until a shutdown signal.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_tracing();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let controllers = (!args.no_controllers).then(|| args.controllers.config());
    let daemons = start(
        args.listen,
        &args.db,
        args.default_image,
        args.watch_history,
        controllers,
        shutdown,
    )
    .await?;
    daemons.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// The API server and, optionally, the controllers, running in this process.
pub struct Daemons {
    /// The server's base URL as reachable from this machine.
    pub url: String,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    controllers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    shutdown: CancellationToken,
}

impl Daemons {
    /// Waits until both have stopped; if either fails, the other is stopped too.
    pub async fn wait(self) -> anyhow::Result<()> {
        let server = self.server.await.context("the API server panicked")?;
        if server.is_err() {
            self.shutdown.cancel();
        }
        let controllers = match self.controllers {
            Some(c) => c.await.context("the controllers panicked")?,
            None => Ok(()),
        };
        server.and(controllers)
    }
}

/// Binds the listen address, then starts the API server and (with a config) the
/// controllers, which reach the server over HTTP like any other client.
pub async fn start(
    listen: SocketAddr,
    db: &std::path::Path,
    default_image: Option<String>,
    watch_history: Option<u64>,
    controllers: Option<kohakuriver_controllers::ControllersConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<Daemons> {
    let mut config = kohakuriver_apiserver::Config {
        db_path: (db.as_os_str() != ":memory:").then(|| db.to_path_buf()),
        default_image,
        // The daemons' credentials are wired by the auth flags (issue 9); until then the
        // binary keeps serving without authentication.
        auth: kohakuriver_apiserver::AuthConfig::disabled(),
        ..Default::default()
    };
    if let Some(n) = watch_history {
        config.watch_history = n;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let url = local_url(local);
    let db_shown = db.display().to_string();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            kohakuriver_apiserver::serve(listener, config, shutdown.clone())
                .await
                .with_context(|| format!("the API server on {local} failed (database {db_shown})"))
                .inspect_err(|_| shutdown.cancel())
        }
    });
    let controllers = match controllers {
        Some(config) => {
            let client = Client::new(&url)?;
            let shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                kohakuriver_controllers::run(client, config, shutdown)
                    .await
                    .context("the controllers failed")
            }))
        }
        None => None,
    };
    Ok(Daemons {
        url,
        server,
        controllers,
        shutdown,
    })
}

/// `http://ADDR:PORT` for a listen address, with an unspecified IP (0.0.0.0, ::) replaced by
/// loopback so local clients can use it.
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
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
