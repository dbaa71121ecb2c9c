//! `kohakuriver delete task|node NAME…`: delete objects, optionally waiting until they are
//! gone (a bound task goes once its agent has stopped and removed the container).

use std::process::ExitCode;
use std::time::Duration;

use kohakuriver_api::{Event, Node, Resource, Task, TaskGroup};
use kohakuriver_client::{Api, Client, Deleted};

use crate::kind::{Kind, kind_and_names};
use crate::wait::{parse_duration, until_deleted};

/// Options of `kohakuriver delete`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver delete task train-resnet
  kohakuriver delete task a b c --wait --timeout 2m")]
pub struct Args {
    /// `task` or `node` (or `task/NAME`).
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// The objects to delete.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Wait until each object is really gone.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits for each object (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Deletes each object; exit 1 when any failed.
pub async fn run(client: &Client, mut args: Args) -> anyhow::Result<ExitCode> {
    let kind = kind_and_names(&args.kind, &mut args.names).map_err(anyhow::Error::msg)?;
    if args.names.is_empty() {
        anyhow::bail!("delete needs at least one NAME");
    }
    match kind {
        Kind::Task => delete_all(&client.api::<Task>(), &args).await,
        Kind::Node => delete_all(&client.api::<Node>(), &args).await,
        Kind::TaskGroup => delete_all(&client.api::<TaskGroup>(), &args).await,
        Kind::Event => delete_all(&client.api::<Event>(), &args).await,
    }
}

async fn delete_all<R: Resource>(api: &Api<R>, args: &Args) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for name in &args.names {
        match delete_one(api, name, args).await {
            Ok(()) => {}
            Err(e) if super::is_unreachable(&e) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("error: {}/{name}: {e:#}", R::SINGULAR);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn delete_one<R: Resource>(api: &Api<R>, name: &str, args: &Args) -> anyhow::Result<()> {
    let label = format!("{}/{name}", R::SINGULAR);
    match api.delete(name).await? {
        Deleted::Gone(_) => println!("{label} deleted"),
        Deleted::Pending(obj) => {
            println!("{label} deleting ({})", pending_reason(obj.metadata()));
            if args.wait {
                until_deleted(api, name, args.timeout).await?;
                println!("{label} deleted");
            }
        }
    }
    Ok(())
}

/// What a deletion waits for, in words.
fn pending_reason(meta: &kohakuriver_api::ObjectMeta) -> String {
    if meta
        .finalizers
        .iter()
        .any(|f| f == kohakuriver_api::CONTAINER_FINALIZER)
    {
        "waiting for its container to stop".to_string()
    } else {
        format!("waiting for finalizers: {}", meta.finalizers.join(", "))
    }
}
