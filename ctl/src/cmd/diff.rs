//! `kohakuriver diff -f …`: what `apply` would change, as a diff of the YAML of each object
//! (live versus the server's dry-run answer), ignoring status and server-managed metadata.
//! Exit 0: no change; 1: changes; 2: an error (reported after trying every object).

use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_api::{Manifest, Node, Resource, Task, TaskGroup};
use kohakuriver_client::{Api, ApplyOptions, Client};

use crate::line_diff::unified;
use crate::manifest_source::{ManifestFiles, Sourced};
use crate::output::kind_name;

/// Metadata the server owns; a difference there is not a change the user made.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "owner",
];

/// Options of `kohakuriver diff`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver diff -f manifests/gitops/    # exit 0: no change, 1: changes, 2: error
  kohakuriver diff -f manifests/gitops/ --prune -l sweep=lr   # also what apply --prune deletes")]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestFiles,
    /// Also show the tasks matching -l that are not in the manifests, which `apply --prune`
    /// would delete.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector of the tasks --prune would delete, e.g. `app=train`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
}

/// Prints a diff per changed object.
pub async fn run(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let objects = args.manifests.read_all()?;
    let mut changed = false;
    let mut failed = false;
    for Sourced { origin, manifest } in &objects {
        let result = match manifest {
            Manifest::Task(task) => diff_one(&client.api::<Task>(), task).await,
            Manifest::Node(node) => diff_one(&client.api::<Node>(), node).await,
            Manifest::TaskGroup(group) => diff_one(&client.api::<TaskGroup>(), group).await,
        };
        match result {
            Ok(Some(text)) => {
                changed = true;
                print!("{text}");
            }
            Ok(None) => {}
            Err(e) if super::is_unreachable(&e) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("error: {} ({origin}): {e:#}", manifest_label(manifest));
            }
        }
    }
    if let (true, Some(selector)) = (args.prune, &args.selector) {
        let keep: std::collections::BTreeSet<String> = objects
            .iter()
            .filter_map(|o| match &o.manifest {
                Manifest::Task(t) => Some(t.metadata.name.clone()),
                Manifest::Node(_) | Manifest::TaskGroup(_) => None,
            })
            .collect();
        let tasks = client.api::<Task>();
        let listed = tasks
            .list(&kohakuriver_client::ListParams::default().labels(selector))
            .await
            .with_context(|| format!("cannot list tasks matching {selector:?}"))?;
        for task in super::apply::to_prune(&listed.items, &keep) {
            changed = true;
            print!("{}", pruned_diff(task)?);
        }
    }
    Ok(ExitCode::from(match (failed, changed) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    }))
}

/// The diff of one object, or `None` when applying it would change nothing.
async fn diff_one<R: Resource>(api: &Api<R>, obj: &R) -> anyhow::Result<Option<String>> {
    let live = api.get_opt(obj.name()).await?;
    let applied = api
        .apply(obj, &ApplyOptions { dry_run: true })
        .await?
        .object;
    let label = kind_name(obj);
    let old = match &live {
        Some(live) => comparable_yaml(live)?,
        None => String::new(),
    };
    let new = comparable_yaml(&applied)?;
    let old_label = if live.is_some() {
        format!("{label} (live)")
    } else {
        format!("{label} (not present)")
    };
    Ok(unified(
        &old,
        &new,
        &old_label,
        &format!("{label} (applied)"),
        3,
    ))
}

/// The diff of a task `apply --prune` would delete: all of it goes.
fn pruned_diff(task: &Task) -> anyhow::Result<String> {
    let label = kind_name(task);
    let old = comparable_yaml(task)?;
    Ok(unified(
        &old,
        "",
        &format!("{label} (live)"),
        &format!("{label} (pruned)"),
        3,
    )
    .unwrap_or_default())
}

/// The object as YAML without status and server-owned metadata.
fn comparable_yaml<R: Resource>(obj: &R) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(obj).context("cannot serialize the object")?;
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for key in SERVER_METADATA {
                meta.remove(*key);
            }
        }
    }
    Ok(serde_yaml::to_string(&value)?)
}

fn manifest_label(m: &Manifest) -> String {
    format!("{}/{}", m.kind().to_ascii_lowercase(), m.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_server_metadata_are_ignored() {
        let mut a = Task::test("a");
        let mut b = a.clone().bound("n1", "0", &[]);
        a.metadata.resource_version = Some(3);
        b.metadata.resource_version = Some(9);
        b.metadata.uid = Some("u".into());
        b.metadata.generation = Some(2);
        assert_eq!(comparable_yaml(&a).unwrap(), comparable_yaml(&b).unwrap());
        b.metadata.labels.insert("team".into(), "x".into());
        assert_ne!(comparable_yaml(&a).unwrap(), comparable_yaml(&b).unwrap());
        assert!(!comparable_yaml(&b).unwrap().contains("status"));
    }
}
