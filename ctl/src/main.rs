//! `kohakuriver`: the command-line interface and every daemon, in one binary.
//!
//! `main` parses the command line (the clap tree below), connects to the server when the
//! command needs one, and hands over to one module per command under `cmd/`. Errors travel
//! up as `anyhow` errors with context and are printed once, as one line on stderr.
//!
//! To add a command: write `cmd/NAME.rs` with an `Args` struct (`#[derive(clap::Args)]`)
//! and an `async fn run(…) -> anyhow::Result<ExitCode>`, add a variant to [`Command`], and
//! dispatch it in [`run`].

mod auth_flags;
mod cmd;
mod config;
mod kind;
mod kubeconfig;
mod line_diff;
mod local_cli;
mod log_format;
mod manifest_source;
mod output;
mod rows;
mod tls_flags;
mod wait;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ServerArgs;

/// KohakuRiver: run command tasks on a cluster, pinned to cores, NUMA nodes and GPUs.
#[derive(Parser, Debug)]
#[command(name = "kohakuriver", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server (SQLite store, watch streams, log proxy) and the controllers.
    Server(Box<cmd::server::Args>),
    /// Run the scheduler and lifecycle controllers against a server.
    Controllers(cmd::controllers::Args),
    /// Run the node agent for this machine.
    Agent(Box<cmd::agent::Args>),
    /// Run server, controllers and an agent for this machine in one process.
    Up(Box<cmd::up::Args>),
    /// Create or update objects from manifests.
    Apply(cmd::apply::Args),
    /// Show what `apply` would change (exit 0: no change, 1: changes, 2: error).
    Diff(cmd::diff::Args),
    /// List objects or show some of them.
    Get(cmd::get::Args),
    /// Show one object in detail.
    Describe(cmd::describe::Args),
    /// List what happened to tasks and nodes (scheduled, started, exited, lost…); -w follows.
    Events(cmd::events::Args),
    /// Delete objects.
    Delete(cmd::delete::Args),
    /// Submit and manage command tasks (submit, logs, kill, pause, resume, status, watch, list).
    #[command(subcommand)]
    Task(Box<cmd::task::TaskCommand>),
    /// Inspect and cordon nodes (list, status, cordon, uncordon).
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Wait until tasks meet a condition or are deleted.
    Wait(cmd::wait::WaitArgs),
    /// Check a token against a server and save both in the CLI config.
    Login(cmd::login::Args),
    /// Show who the server takes this CLI for, and what that role may do.
    Whoami(cmd::whoami::Args),
    /// Show what nodes and running tasks use now: CPU, memory, GPUs (like kubectl top).
    #[command(subcommand)]
    Top(cmd::top::TopCommand),
    /// Create, list and revoke tokens (admin).
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Print or write a kubeconfig for this server and credential, for kubectl.
    Kubeconfig(cmd::kubeconfig::Args),
    /// Copy the server's whole store to a file while it serves (admin).
    Backup(cmd::backup::Args),
}

impl Command {
    /// The exit code for a failed run: 2 for `diff` (whose 1 means "changes"), else 1.
    fn error_code(&self) -> u8 {
        match self {
            Command::Diff(_) => 2,
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let args: Vec<String> = std::env::args().collect();
            if let Some(hint) = parse_hint(&e, &args) {
                let _ = e.print();
                eprintln!("{hint}");
                return ExitCode::from(2);
            }
            e.exit();
        }
    };
    let error_code = cli.command.error_code();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error_code);
        }
    };
    let server = cli.server.clone();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe_error(&err, &server));
            ExitCode::from(error_code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => cmd::server::run(*args, &cli.server.ca).await,
        Command::Controllers(args) => cmd::controllers::run(cli.server.client()?, args).await,
        Command::Agent(args) => {
            cmd::agent::run(cli.server.url(), cli.server.ca.read()?, *args).await
        }
        Command::Up(args) => cmd::up::run(*args, &cli.server.ca).await,
        Command::Apply(args) => cmd::apply::run(&cli.server.client()?, args).await,
        Command::Diff(args) => cmd::diff::run(&cli.server.client()?, args).await,
        Command::Get(args) => cmd::get::run(&cli.server.client()?, args).await,
        Command::Describe(args) => cmd::describe::run(&cli.server.client()?, args).await,
        Command::Events(args) => cmd::events::run(&cli.server.client()?, args).await,
        Command::Delete(args) => cmd::delete::run(&cli.server.client()?, args).await,
        Command::Task(c) => exit(cmd::task::run(&cli.server.client()?, *c).await?),
        Command::Node(c) => exit(cmd::node::run(&cli.server.client()?, c).await?),
        Command::Wait(args) => exit(cmd::wait::run(&cli.server.client()?, args).await?),
        Command::Login(args) => cmd::login::run(&cli.server, args).await,
        Command::Whoami(args) => cmd::whoami::run(&cli.server.client()?, args).await,
        Command::Top(c) => cmd::top::run(&cli.server.client()?, c).await,
        Command::Token(c) => cmd::token::run(&cli.server.client()?, c).await,
        Command::Kubeconfig(args) => cmd::kubeconfig::run(&cli.server, args).await,
        Command::Backup(args) => cmd::backup::run(&cli.server.client()?, args).await,
    }
}

/// A hint for a command line clap refused, when the likely mistake is known: a command for
/// `task submit` given without the `--` that separates it from the options.
fn parse_hint(error: &clap::Error, args: &[String]) -> Option<String> {
    let submit = args.iter().any(|a| a == "submit") && !args.iter().any(|a| a == "--");
    (error.kind() == clap::error::ErrorKind::UnknownArgument && submit).then(|| {
        "hint: put the command after `--`, e.g. kohakuriver task submit -t NODE -- echo hi"
            .to_string()
    })
}

/// The process exit code for a command's numeric result (the command's own exit code for
/// `task submit -w`, which may be any value a program exits with).
fn exit(code: i32) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// One line for an error: an unreachable server is told plainly with what to do, a refused
/// credential (401) with how to log in; anything else (a 403 included, whose message names
/// the identity and what it may not do) shows its context chain.
fn describe_error(err: &anyhow::Error, server: &ServerArgs) -> String {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<kohakuriver_client::Error>() {
            if e.is_connect() {
                return format!(
                    "{e}; start one with `kohakuriver up` (this machine) or `kohakuriver server`, or set --server"
                );
            }
            if cmd::is_unauthenticated(e) {
                return format!("{err:#}\n{}", login_hint(&server.url()));
            }
        }
        // Its own message says what to do; the HTTP stack's chain below it says nothing more.
        if let Some(e @ kohakuriver_client::Error::Tls { .. }) =
            cause.downcast_ref::<kohakuriver_client::Error>()
        {
            return e.to_string();
        }
    }
    format!("{err:#}")
}

/// What to do about a 401.
fn login_hint(url: &str) -> String {
    format!(
        "hint: log in with `kohakuriver login --server {url} --token-file FILE`, or pass --token (an admin makes tokens with `kohakuriver token create`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `server --help` lists where a daemon listens apart from where a client calls.
    #[test]
    fn daemon_help_keeps_the_client_flags_apart() {
        let mut command = Cli::command();
        command.build();
        for daemon in ["server", "up"] {
            let help = command
                .find_subcommand_mut(daemon)
                .expect("subcommand")
                .render_help()
                .to_string();
            let heading = help
                .find("Client options")
                .unwrap_or_else(|| panic!("{daemon}: {help}"));
            let listen = help.find("--listen").expect("--listen");
            let server = help.find("--server <URL>").expect("--server");
            assert!(listen < heading && heading < server, "{daemon}: {help}");
        }
    }
}
