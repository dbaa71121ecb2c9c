//! `kohakuriver server`: the API server on a SQLite file, with the controllers (scheduler,
//! node and task lifecycle) talking to it over HTTP, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kohakuriver_api::{Identity, Role};
use kohakuriver_client::{Client, ClientOptions};
use tokio_util::sync::CancellationToken;

use super::daemon::{ControllerFlags, LimitFlags, StoreFlags, default_data_dir};
use crate::auth_flags::{AuthFlags, admin_token_file};
use crate::local_cli;
use crate::log_format::{LogFlags, init_tracing};
use crate::tls_flags::{CaFlag, ServerTlsFlags, ServerTlsSetup};

/// How long `server` and `up` wait for their own API server to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `kohakuriver server`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver server
  kohakuriver server --listen 0.0.0.0:8000 --data-dir /var/lib/kohakuriver
  kohakuriver server --listen 0.0.0.0:8000 --private-tasks --user-mount-prefixes /data,/scratch
  kohakuriver server --db :memory: --default-image ubuntu:22.04 --node-grace 45s

On first start the server makes an admin token in DATA_DIR/admin.token (mode 0600) and
logs this machine's CLI in with it. Give others their own:
  kohakuriver token create --name alice --role user
  kohakuriver token create --name gpu-01 --role node   # then: kohakuriver agent --token …")]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Where the database and the admin token live (default: $KOHAKURIVER_DATA_DIR or ~/.kohakuriver).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// SQLite database file, created if missing; `:memory:` keeps everything in memory (lost on exit) [default: DATA_DIR/kohakuriver.db].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Image for tasks that name neither `image` nor `container`.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// Run only the API server; run the controllers elsewhere with `kohakuriver controllers`.
    #[arg(long)]
    pub no_controllers: bool,
    #[command(flatten)]
    pub auth: AuthFlags,
    #[command(flatten)]
    pub store: StoreFlags,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub controllers: ControllerFlags,
    #[command(flatten)]
    pub tls: ServerTlsFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Runs the server (and the controllers) until a shutdown signal; `ca` is `--ca`.
pub async fn run(args: Args, ca: &CaFlag) -> anyhow::Result<ExitCode> {
    init_tracing(args.log.log_format);
    args.auth.check(args.listen).map_err(anyhow::Error::msg)?;
    let (data_dir, db) = data_paths(args.data_dir.clone(), args.db.clone())?;
    let tls = args.tls.setup(args.listen, &data_dir.join("tls"), ca)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let settings = ServerSettings {
        listen: args.listen,
        data_dir,
        db,
        default_image: args.default_image,
        limits: args.limits.limits(),
        store: args.store.clone(),
        auth: args.auth,
        default_mount_prefixes: Vec::new(),
        static_tokens: Vec::new(),
        controllers: (!args.no_controllers).then(|| args.controllers.config()),
        tls,
    };
    let daemons = start(settings, shutdown).await?;
    let cli = daemons.setup_cli().await;
    println!("{}", daemons.banner(&cli));
    std::io::Write::flush(&mut std::io::stdout()).ok();
    daemons.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// The data dir (`--data-dir`, else the default) and the database path (`--db`, else
/// `<data-dir>/kohakuriver.db`), with the data dir and the database's directory made.
pub fn data_paths(
    data_dir: Option<PathBuf>,
    db: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    crate::config::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let db = db.unwrap_or_else(|| data_dir.join("kohakuriver.db"));
    if db.as_os_str() != ":memory:"
        && let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "cannot create the database's directory {}",
                parent.display()
            )
        })?;
    }
    Ok((data_dir, db))
}

/// What [`start`] runs.
pub struct ServerSettings {
    /// Address and port of the API server.
    pub listen: SocketAddr,
    /// Where the admin token is written.
    pub data_dir: PathBuf,
    /// The SQLite file, or `:memory:`.
    pub db: PathBuf,
    /// Image for tasks naming neither image nor container.
    pub default_image: Option<String>,
    /// Request, watch and connection limits.
    pub limits: kohakuriver_apiserver::Limits,
    /// The sync mode, a backup to start from, and the watch history's bounds.
    pub store: StoreFlags,
    /// Authentication and admission flags.
    pub auth: AuthFlags,
    /// Host path prefixes users may mount when `--user-mount-prefixes` is not given.
    pub default_mount_prefixes: Vec<String>,
    /// Tokens known only to this process, besides the controllers' (`up`'s node).
    pub static_tokens: Vec<(String, Identity)>,
    /// The controllers' config, when they run in this process.
    pub controllers: Option<kohakuriver_controllers::ControllersConfig>,
    /// HTTPS, and the cluster CA.
    pub tls: ServerTlsSetup,
}

/// The API server and, optionally, the controllers, running in this process.
pub struct Daemons {
    /// The server's base URL as reachable from this machine.
    pub url: String,
    /// Whether requests need a token.
    pub auth: bool,
    /// Whether it listens on every address (0.0.0.0 or ::), so other machines reach it.
    pub listens_everywhere: bool,
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// The database file (or `:memory:`).
    pub db: PathBuf,
    /// Where the first admin token was written.
    pub admin_token_file: PathBuf,
    /// HTTPS, and the cluster CA.
    pub tls: ServerTlsSetup,
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

    /// Makes sure this machine's CLI reaches this server as someone (see [`local_cli`]).
    pub async fn setup_cli(&self) -> local_cli::Outcome {
        let https_url = match self.url.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => self.url.clone(),
        };
        local_cli::ensure(
            &self.url,
            self.tls.ca_file.as_deref().filter(|_| !self.tls.plain_too),
            self.auth,
            &self.admin_token_file,
            local_cli::KubeAccess {
                url: &https_url,
                ca: self.tls.ca_file.as_deref(),
                data_dir: &self.data_dir,
            },
        )
        .await
    }

    /// Where the data and the admin token live, one line each (shared by the banners).
    pub fn where_lines(&self, cli: &local_cli::Outcome) -> String {
        let admin = if !self.auth {
            "none: --insecure-no-auth (every request is admin)".to_string()
        } else if self.admin_token_file.is_file() {
            format!("{}  (mode 0600)", self.admin_token_file.display())
        } else {
            format!(
                "{} is gone; an admin makes tokens with `kohakuriver token create`",
                self.admin_token_file.display()
            )
        };
        let ca = match (&self.tls.ca_file, &self.tls.ca_pem) {
            (Some(file), Some(_)) if self.tls.plain_too => format!(
                "\n  https       the same port, with the server's own CA {}",
                file.display()
            ),
            (Some(file), Some(pem)) => format!(
                "\n  cluster CA  {}  (sha256:{}; other machines' CLIs take --ca with a copy)",
                file.display(),
                kohakuriver_tls::fingerprint(pem).unwrap_or_default()
            ),
            _ => String::new(),
        };
        format!(
            "  data        {}  (database {})\n  admin token {admin}\n  CLI config  {}\n  kubeconfig  {}{ca}",
            self.data_dir.display(),
            self.db.display(),
            cli.describe(),
            cli.describe_kubeconfig()
        )
    }

    /// What `server` prints once it answers.
    fn banner(&self, cli: &local_cli::Outcome) -> String {
        let server_flag = crate::config::server_flag_for(&self.url);
        // Other machines cannot use a loopback URL; a server on every address is reached
        // by this machine's own name.
        let remote_url = match self
            .url
            .split_once("://127.0.0.1:")
            .or(self.url.split_once("://[::1]:"))
        {
            Some((scheme, port)) if self.listens_everywhere => {
                format!("{scheme}://{}:{port}", super::daemon::host_name())
            }
            _ => self.url.clone(),
        };
        format!(
            "kohakuriver server is up
  API server  {}
{}

Add a node (on that machine):
  kohakuriver{server_flag} token create --name NODE --role node > node.token
  kohakuriver agent --server {} --name NODE --token \"$(cat node.token)\"
Give someone access:
  kohakuriver{server_flag} token create --name alice --role user",
            self.url,
            self.where_lines(cli),
            remote_url,
        )
    }
}

/// Binds the listen address, then starts the API server and (with a config) the
/// controllers, which reach the server over HTTP like any other client, with a token known
/// only to this process. Returns once the server answers.
pub async fn start(
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Daemons> {
    let auth_on = !settings.auth.insecure_no_auth;
    // The controllers' credential, known only to this process; it also asks the server
    // whether it answers, so that check is not logged as a refused request.
    let controllers_token = kohakuriver_apiserver::generate_token();
    let mut static_tokens = settings.static_tokens.clone();
    if auth_on {
        static_tokens.push((
            controllers_token.clone(),
            Identity::new("controllers", Role::Controllers),
        ));
    }
    let admin_token_file = admin_token_file(&settings.data_dir);
    settings.store.restore_into(&settings.db)?;
    let mut auth = settings.auth.auth_config(
        &settings.default_mount_prefixes,
        static_tokens,
        admin_token_file.clone(),
    );
    // The restored store's admin tokens live in another machine's files; make one here
    // when this data dir has none, so the local CLI can act on what was restored.
    auth.admin_token_if_missing = settings.store.restore.is_some();
    let mut config = kohakuriver_apiserver::Config {
        db_path: (settings.db.as_os_str() != ":memory:").then(|| settings.db.clone()),
        sync: settings.store.sync_mode(),
        default_image: settings.default_image.clone(),
        auth,
        tls: settings.tls.tls.clone(),
        ca_pem: settings.tls.ca_pem.clone(),
        // A server that also answers plain http is reached by http:// URLs: node
        // credentials carry no pin for agents to check.
        ca_fingerprint: if settings.tls.plain_too {
            None
        } else {
            settings.tls.fingerprint()?
        },
        node_grace: settings.controllers.as_ref().map(|c| c.node_grace),
        limits: settings.limits,
        ..Default::default()
    };
    if let Some(n) = settings.store.watch_history {
        config.watch_history = n;
    }
    if let Some(n) = settings.store.watch_history_bytes {
        config.watch_history_bytes = n;
    }
    let listen = settings.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is a server already running? choose another with --listen ADDR:PORT)")
        })?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let url = local_url(local, settings.tls.https_only());
    let db_shown = settings.db.display().to_string();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            kohakuriver_apiserver::serve(listener, config, shutdown.clone())
                .await
                .with_context(|| format!("the API server on {local} failed (database {db_shown})"))
                .inspect_err(|_| shutdown.cancel())
        }
    });
    let daemons = Daemons {
        url: url.clone(),
        auth: auth_on,
        listens_everywhere: local.ip().is_unspecified(),
        data_dir: settings.data_dir,
        db: settings.db,
        admin_token_file,
        tls: settings.tls.clone(),
        server,
        controllers: None,
        shutdown: shutdown.clone(),
    };
    let options = ClientOptions {
        token: auth_on.then_some(controllers_token),
        ca_pem: settings.tls.ca_pem.clone(),
        ..Default::default()
    };
    let client = Client::with_options(&url, options)?;
    let daemons = wait_answering(daemons, &client).await?;
    let controllers = match settings.controllers {
        Some(config) => {
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
        controllers,
        ..daemons
    })
}

/// Waits until the server answers `GET /info` (the admin token file is written before its
/// first answer); fails with the server's own error if it stops first.
async fn wait_answering(daemons: Daemons, client: &Client) -> anyhow::Result<Daemons> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        if daemons.server.is_finished() {
            daemons.wait().await?;
            bail!("the API server stopped before it answered");
        }
        // Any answer will do, a refusal included: the server is up.
        match client.info().await {
            Ok(_)
            | Err(
                kohakuriver_client::Error::Api(_) | kohakuriver_client::Error::Unexpected { .. },
            ) => {
                return Ok(daemons);
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            daemons.shutdown.cancel();
            bail!(
                "the API server at {} did not answer within {}s",
                daemons.url,
                ANSWER_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `http://ADDR:PORT` (`https://` when serving TLS) for a listen address, with an
/// unspecified IP (0.0.0.0, ::) replaced by loopback so local clients can use it.
pub fn local_url(addr: SocketAddr, https: bool) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    shutdown_signal().await;
    tracing::info!("shutting down");
    token.cancel();
}

/// Waits for Ctrl-C or SIGTERM and names the one that came.
pub async fn shutdown_signal() -> &'static str {
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
        () = ctrl_c => "ctrl-c",
        () = term => "SIGTERM",
    }
}
