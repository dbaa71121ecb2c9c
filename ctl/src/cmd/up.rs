//! `kohakuriver up`: the whole system for one machine in one process — API server,
//! controllers and this machine's agent — the embedded default for a single machine.
//!
//! The agent and controllers still talk to the server over HTTP, exactly as they would
//! across machines. Stopping it leaves task containers running; the next `up` adopts them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_api::Node;
use kohakuriver_api::quantity::format_bytes;
use kohakuriver_client::{Client, ClientOptions};
use tokio_util::sync::CancellationToken;

use super::daemon::{AgentFlags, ControllerFlags, default_data_dir, host_name};
use super::server::{cancel_on_signal, init_tracing, start};
use crate::tls_flags::{ServerTlsFlags, self_signed_names};

/// Options of `kohakuriver up`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver up
  kohakuriver up --shared-dir /mnt/cluster-share --default-image ubuntu:22.04
  kohakuriver up --data-dir /var/lib/kohakuriver --listen 0.0.0.0:8000 --name gpu-01")]
pub struct Args {
    /// Where the database, logs and state live (default: $KOHAKURIVER_DATA_DIR or ~/.kohakuriver).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port of the API server.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Image for tasks that name neither --image nor --container.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    #[command(flatten)]
    pub agent: AgentFlags,
    #[command(flatten)]
    pub controllers: ControllerFlags,
    #[command(flatten)]
    pub tls: ServerTlsFlags,
}

/// Runs everything until a shutdown signal; `ca_pem` is `--ca`.
pub async fn run(args: Args, ca_pem: Option<Vec<u8>>) -> anyhow::Result<ExitCode> {
    init_tracing();
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let db = data_dir.join("kohakuriver.db");
    let tls = args.tls.setup(args.listen, &data_dir.join("tls"), ca_pem)?;
    // With --tls-self-signed this node's agent gets a certificate from the same CA, so the
    // server's log proxy reaches it over https too.
    let agent_tls = match &tls.dir {
        Some(dir) => {
            let names = self_signed_names(
                args.agent.agent_listen.ip(),
                &host_name(),
                &args.tls.tls_san,
            );
            let issued = kohakuriver_tls::issue(dir, "agent", &names)
                .context("cannot make the agent's certificate for --tls-self-signed")?;
            Some(kohakuriver_tls::ServerTls::from_pem_files(
                &issued.cert_path,
                &issued.key_path,
            )?)
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let daemons = start(
        args.listen,
        &db,
        args.default_image.clone(),
        None,
        Some(args.controllers.config()),
        tls.clone(),
        shutdown.clone(),
    )
    .await?;
    let url = daemons.url.clone();
    let mut agent_config =
        args.agent
            .config(&url, data_dir.join("agent"), args.default_image.clone());
    agent_config.tls = agent_tls;
    agent_config.ca_pem = tls.ca_pem.clone();
    let node_name = agent_config.name.clone();
    let agent = match kohakuriver_node_agent::start(agent_config, shutdown.clone()).await {
        Ok(agent) => agent,
        Err(e) => {
            shutdown.cancel();
            let _ = daemons.wait().await;
            return Err(anyhow::Error::new(e)
                .context(format!("cannot start the agent for node {node_name}")));
        }
    };

    let client = Client::with_options(
        &url,
        ClientOptions {
            ca_pem: tls.ca_pem.clone(),
            ..ClientOptions::default()
        },
    )?;
    let node = client.api::<Node>().get(&node_name).await.ok();
    let ca_file = tls.dir.as_ref().map(|dir| dir.join("ca.pem"));
    println!(
        "{}",
        banner(
            &url,
            ca_file.as_deref(),
            &db,
            &node_name,
            node.as_ref(),
            &agent.advertise_url
        )
    );

    agent.wait().await;
    daemons.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// What `up` prints once it is ready: where things are and how to submit a first task.
fn banner(
    url: &str,
    ca_file: Option<&std::path::Path>,
    db: &std::path::Path,
    node_name: &str,
    node: Option<&Node>,
    agent_url: &str,
) -> String {
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
    let mut server_flag = if url == "http://127.0.0.1:8000" {
        String::new()
    } else {
        format!(" --server {url}")
    };
    if let Some(ca) = ca_file {
        server_flag.push_str(&format!(" --ca {}", ca.display()));
    }
    format!(
        "kohakuriver is up
  API server  {url}  (database {})
  node        {node_name}: {shape}  (logs served at {agent_url})

Submit a first task:
  kohakuriver{server_flag} task submit -t {node_name} -- echo \"Hello World\"
  kohakuriver{server_flag} task logs <task_id>
Stop with Ctrl-C; running tasks keep running and are adopted on the next start.",
        db.display()
    )
}
