//! `kohakuriver up`: the whole system for one machine in one process — API server,
//! controllers and this machine's agent — the embedded default for a single machine.
//!
//! The agent and controllers still talk to the server over HTTP, exactly as they would
//! across machines. Stopping it leaves task containers running; the next `up` adopts them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use kohakuriver_api::quantity::format_bytes;
use kohakuriver_api::{Identity, Node, Role};
use kohakuriver_client::{Client, ClientOptions};
use tokio_util::sync::CancellationToken;

use anyhow::Context;

use super::daemon::{AgentFlags, ControllerFlags, LimitFlags, StoreFlags, host_name};
use super::server::{Daemons, ServerSettings, cancel_on_signal, data_paths, start};
use crate::auth_flags::AuthFlags;
use crate::local_cli;
use crate::log_format::{LogFlags, init_tracing};
use crate::tls_flags::{CaFlag, ServerTlsFlags, self_signed_names};

/// Options of `kohakuriver up`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver up
  kohakuriver up --shared-dir /mnt/cluster-share --default-image ubuntu:22.04
  kohakuriver up --data-dir /var/lib/kohakuriver --listen 0.0.0.0:8000 --name gpu-01

On first start it makes an admin token in DATA_DIR/admin.token (mode 0600) and logs this
machine's CLI in with it, so `kohakuriver task submit …` works at once.")]
pub struct Args {
    /// Where the database, logs, state and admin token live (default: $KOHAKURIVER_DATA_DIR or ~/.kohakuriver).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port of the API server.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Image for tasks that name neither --image nor --container.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    #[command(flatten)]
    pub auth: AuthFlags,
    #[command(flatten)]
    pub store: StoreFlags,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub agent: AgentFlags,
    #[command(flatten)]
    pub controllers: ControllerFlags,
    #[command(flatten)]
    pub tls: ServerTlsFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Runs everything until a shutdown signal; `ca` is `--ca`.
pub async fn run(args: Args, ca: &CaFlag) -> anyhow::Result<ExitCode> {
    init_tracing(args.log.log_format);
    args.auth.check(args.listen).map_err(anyhow::Error::msg)?;
    let (data_dir, db) = data_paths(args.data_dir.clone(), None)?;
    let tls = args.tls.setup(args.listen, &data_dir.join("tls"), ca)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    // This machine's agent gets a node credential known only to this process.
    let node_name = args.agent.node_name();
    let node_token = kohakuriver_apiserver::generate_token();
    let auth_on = !args.auth.insecure_no_auth;
    let shared_prefix = match &args.agent.shared_dir {
        Some(dir) => vec![
            std::path::absolute(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
        ],
        None => Vec::new(),
    };
    let settings = ServerSettings {
        listen: args.listen,
        data_dir: data_dir.clone(),
        db,
        default_image: args.default_image.clone(),
        limits: args.limits.limits(),
        store: args.store.clone(),
        auth: args.auth.clone(),
        default_mount_prefixes: shared_prefix,
        static_tokens: vec![(node_token.clone(), Identity::new(&node_name, Role::Node))],
        controllers: Some(args.controllers.config()),
        tls: tls.clone(),
    };
    let daemons = start(settings, shutdown.clone()).await?;
    let cli = daemons.setup_cli().await;
    let url = daemons.url.clone();
    let mut agent_config =
        args.agent
            .config(&url, data_dir.join("agent"), args.default_image.clone());
    agent_config.name = node_name.clone();
    agent_config.token = auth_on.then_some(node_token.clone());
    // With --tls-self-signed this node's agent gets a certificate from the same CA, naming
    // where it listens, so the server's log proxy reaches it over https too.
    if let Some(dir) = tls.dir.as_ref().filter(|_| !tls.plain_too) {
        let names = self_signed_names(agent_config.listen.ip(), &host_name(), &args.tls.tls_san);
        let issued = kohakuriver_tls::issue(dir, "agent", &names)
            .context("cannot make the agent's certificate for --tls-self-signed")?;
        agent_config.tls = Some(kohakuriver_tls::ServerTls::from_pem_files(
            &issued.cert_path,
            &issued.key_path,
        )?);
    }
    agent_config.ca_pem = tls.ca_pem.clone();
    let agent = match kohakuriver_node_agent::start(agent_config, shutdown.clone()).await {
        Ok(agent) => agent,
        Err(e) => {
            shutdown.cancel();
            let _ = daemons.wait().await;
            return Err(anyhow::Error::new(e)
                .context(format!("cannot start the agent for node {node_name}")));
        }
    };

    let options = ClientOptions {
        token: auth_on.then_some(node_token),
        ca_pem: tls.ca_pem.clone(),
        ..Default::default()
    };
    let node = match Client::with_options(&url, options) {
        Ok(client) => client.api::<Node>().get(&node_name).await.ok(),
        Err(_) => None,
    };
    println!(
        "{}",
        banner(
            &daemons,
            &cli,
            &node_name,
            node.as_ref(),
            &agent.advertise_url
        )
    );
    std::io::Write::flush(&mut std::io::stdout()).ok();

    agent.wait().await;
    daemons.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// What `up` prints once it is ready: where things are and how to submit a first task.
fn banner(
    daemons: &Daemons,
    cli: &local_cli::Outcome,
    node_name: &str,
    node: Option<&Node>,
    agent_url: &str,
) -> String {
    let url = &daemons.url;
    let shape = node
        .map(|n| {
            let c = &n.status.capacity;
            format!(
                "{} cores, {} memory, {} GPUs, {} NUMA nodes",
                c.cpu,
                format_bytes(c.memory_bytes),
                c.gpus,
                n.status.numa.len().max(1)
            )
        })
        .unwrap_or_else(|| "registering".to_string());
    let server_flag = crate::config::server_flag_for(url);
    format!(
        "kohakuriver is up
  API server  {url}
  node        {node_name}: {shape}  (logs served at {agent_url})
{}

Submit a first task:
  kohakuriver{server_flag} task submit -t {node_name} -- echo \"Hello World\"
  kohakuriver{server_flag} task logs <task_id>
Stop with Ctrl-C; running tasks keep running and are adopted on the next start.",
        daemons.where_lines(cli)
    )
}
