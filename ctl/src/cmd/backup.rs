//! `kohakuriver backup --to FILE`: a consistent copy of the server's store, made while it
//! serves writes, for `kohakuriver server --restore FILE`.
//!
//! The copy holds token hashes and the server's own keys, so the file is made 0600. It is
//! written under a temporary name (FILE.partial), synced, checked and only then renamed to
//! FILE, so a broken download never looks like a backup. Ctrl-C or SIGTERM removes the
//! partial file; one left by a killed run is replaced by the next.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use kohakuriver_client::Client;

/// Options of `kohakuriver backup`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver backup --to kohakuriver-$(date +%F).db
  kohakuriver server --restore kohakuriver-2026-01-31.db   # start a server from it

Needs an admin credential. The file holds every object, the watch history, the token
hashes and the server's keys: keep it as safe as the data dir.")]
pub struct Args {
    /// Where to write the backup (mode 0600); it must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

/// Downloads the backup into `--to`.
pub async fn run(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    if args.to.exists() {
        bail!(
            "{} already exists; give --to a new file name (a backup never overwrites a file)",
            args.to.display()
        );
    }
    let partial = partial_path(&args.to);
    if partial.exists() {
        std::fs::remove_file(&partial)
            .with_context(|| format!("cannot remove the stale {}", partial.display()))?;
        eprintln!(
            "removed {} left by an interrupted backup",
            partial.display()
        );
    }
    let written = tokio::select! {
        written = download(client, &partial) => written,
        signal = super::server::shutdown_signal() => Err(anyhow::anyhow!("backup interrupted by {signal}")),
    };
    let checked = written.and_then(|bytes| {
        let revision = kohakuriver_apiserver::check_backup(&partial)
            .context("the downloaded backup does not check out")?;
        std::fs::rename(&partial, &args.to).with_context(|| {
            format!("cannot move {} to {}", partial.display(), args.to.display())
        })?;
        Ok((bytes, revision))
    });
    let (bytes, revision) = match checked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    println!(
        "backup of {} written to {} ({bytes} bytes, revision {revision}, mode 0600)",
        client.base_url(),
        args.to.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Streams the backup into `path` (created new, 0600) and syncs it; answers its size.
async fn download(client: &Client, path: &Path) -> anyhow::Result<u64> {
    let mut file = private_file(path)?;
    let mut stream = client
        .backup()
        .await
        .with_context(|| format!("cannot back up {}", client.base_url()))?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the backup download broke off")?;
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
        bytes += chunk.len() as u64;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(bytes)
}

fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}
