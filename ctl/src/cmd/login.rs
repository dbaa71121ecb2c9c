//! `kohakuriver login`: checks a token against a server, then saves both in the CLI config
//! so later commands need neither `--server` nor `--token`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::{CliConfig, ServerArgs, config_path};

/// Options of `kohakuriver login`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver login --server http://head:8000 --token-file alice.token
  kohakuriver login --server https://head:8443 --token-file alice.token --ca head-ca.pem
  pass show kohakuriver | kohakuriver login --server http://head:8000 --token-file -

The config goes to $KOHAKURIVER_CONFIG, else ~/.kohakuriver/config (mode 0600). Its token
is sent only to the server it names.")]
pub struct Args {
    /// File holding the token (`-` reads stdin); without it, --token or $KOHAKURIVER_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Checks the credential with `whoami`, then writes the CLI config.
pub async fn run(server: &ServerArgs, args: Args) -> anyhow::Result<ExitCode> {
    let path = config_path();
    let mut connection = server.connection()?;
    let token = match &args.token_file {
        Some(file) => read_token(file)?,
        None => match connection.token.take() {
            Some((token, source)) if source != crate::config::TokenSource::Config => token,
            _ => bail!(
                "give the token to log in with: --token-file FILE (or --token TOKEN); an admin makes one with `kohakuriver token create --name NAME --role user`"
            ),
        },
    };
    connection.token = Some((token.clone(), crate::config::TokenSource::Flag));
    let me = connection
        .client()?
        .whoami()
        .await
        .with_context(|| format!("cannot log in to {}", connection.url))?;
    let ca = connection
        .ca
        .clone()
        .map(|ca| std::path::absolute(&ca).unwrap_or(ca));
    let config = CliConfig {
        server: connection.url.clone(),
        token: Some(token),
        ca,
    };
    config.save(&path)?;
    println!(
        "logged in to {} as {} {:?}; saved in {}",
        connection.url,
        me.role,
        me.name,
        path.display()
    );
    if !me.authenticated {
        eprintln!(
            "warning: the server at {} runs without authentication (--insecure-no-auth)",
            connection.url
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The token in `file` (`-` for stdin): its one line, trimmed.
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the token from stdin")?;
        text
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?
    };
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!(
            "the token file {} must hold one token (krv_…) and nothing else",
            file.display()
        );
    }
    Ok(token.to_string())
}
