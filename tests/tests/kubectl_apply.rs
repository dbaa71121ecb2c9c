//! kubectl's writes against `kohakuriver up`, with the real kubectl: client-side apply
//! (created, unchanged, configured), diff, server-side apply with field managers and
//! conflicts, field validation, edit, label, annotate, patch, wait, delete and prune.
//!
//! The server speaks https (`--tls-self-signed`): kubectl sends a bearer token only over
//! TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kohakuriver_tests::{Cluster, Kubectl, Run, docker_ready, kubectl_cluster};
use serde_json::Value;

/// A cluster with TLS (so kubectl sends its token) and kubectl as its admin; `None` when
/// Docker tests are skipped.
fn cluster(prefix: &str) -> Option<(Cluster, Kubectl)> {
    if !docker_ready() {
        return None;
    }
    let c = kubectl_cluster(prefix);
    let k = Kubectl::admin(&c);
    Some((c, k))
}

fn repo_manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name)
}

/// Writes `text` to `name` in the cluster's temp dir; answers the path as a string.
fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A task that waits for a node that never joins, so every field of it may still change.
fn waiting_task(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata:\n  name: {name}\n  labels: {{team: a}}\nspec:\n  command: [echo, hi]\n  placement: {{node: never-joins}}\n{extra_spec}"
    )
}

fn get_json(k: &Kubectl, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["get", "task", name, "-o", "json"];
    args.extend(extra);
    let run = k.run(&args);
    run.ok();
    serde_json::from_str(&run.stdout).unwrap()
}

fn has(run: &Run, text: &str) -> bool {
    run.stdout.contains(text) || run.stderr.contains(text)
}

#[test]
fn client_side_apply_diff_edit_label_annotate_patch_and_validation() {
    let Some((c, k)) = cluster("ka-csa") else {
        return;
    };
    let hello = repo_manifest("hello.yaml").display().to_string();
    k.run(&["apply", "-f", &hello])
        .ok()
        .stdout_has("task.kohakuriver/hello created");
    k.run(&["apply", "-f", &hello])
        .ok()
        .stdout_has("task.kohakuriver/hello unchanged");
    let live = get_json(&k, "hello", &[]);
    assert!(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{live}"
    );

    // diff: nothing for the applied file, the change (exit 1) for an edited one.
    let same = k.run(&["diff", "-f", &hello]);
    assert_eq!(same.code, 0, "{}", same.describe());
    assert!(same.stdout.is_empty(), "{}", same.stdout);
    let edited = std::fs::read_to_string(&hello).unwrap().replace(
        "command: [echo, \"Hello World\"]",
        "command: [echo, \"Hello World\"]\n  priority: 2",
    );
    let edited = write(&c, "hello-priority.yaml", &edited);
    let diff = k.run(&["diff", "-f", &edited]);
    assert_eq!(diff.code, 1, "{}", diff.describe());
    assert!(diff.stdout.contains("+  priority: 2"), "{}", diff.stdout);
    // Priority may change on a task already bound (or finished).
    k.run(&["apply", "-f", &edited])
        .ok()
        .stdout_has("task.kohakuriver/hello configured");
    assert_eq!(get_json(&k, "hello", &[])["spec"]["priority"], 2);

    // Admission still holds once the task is bound, and kubectl prints our reason.
    c.wait_finished("hello", Duration::from_secs(90));
    let changed_command = std::fs::read_to_string(&edited)
        .unwrap()
        .replace("Hello World", "Bye");
    let changed_command = write(&c, "hello-command.yaml", &changed_command);
    let refused = k.run(&["apply", "-f", &changed_command]);
    refused.fails();
    assert!(has(&refused, "spec.command"), "{}", refused.describe());

    // label, annotate, patch (merge and JSON) on a task that may still change.
    let w = write(&c, "w.yaml", &waiting_task("w", ""));
    k.run(&["apply", "-f", &w]).ok();
    k.run(&["label", "task", "w", "a=b"])
        .ok()
        .stdout_has("labeled");
    k.run(&["annotate", "task", "w", "x=y"])
        .ok()
        .stdout_has("annotated");
    k.run(&[
        "patch",
        "task",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"priority":3}}"#,
    ])
    .ok()
    .stdout_has("patched");
    let w_live = get_json(&k, "w", &[]);
    assert_eq!(w_live["metadata"]["labels"]["a"], "b");
    assert_eq!(w_live["metadata"]["annotations"]["x"], "y");
    assert_eq!(w_live["spec"]["priority"], 3);
    k.run(&[
        "patch",
        "task",
        "w",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/priority","value":4}]"#,
    ])
    .ok();
    assert_eq!(get_json(&k, "w", &[])["spec"]["priority"], 4);
    // Without --show-managed-fields kubectl hides them; with it, each writer is there.
    assert!(w_live["metadata"].get("managedFields").is_none());
    let managers: Vec<String> =
        get_json(&k, "w", &["--show-managed-fields"])["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect();
    for m in [
        "kubectl-client-side-apply",
        "kubectl-label",
        "kubectl-annotate",
        "kubectl-patch",
    ] {
        assert!(managers.iter().any(|x| x == m), "{m} not in {managers:?}");
    }

    // edit: the editor's change is saved as a merge patch.
    let editor = [("KUBE_EDITOR", "sed -i s/priority:\\ 4/priority:\\ 5/")];
    k.run_env(&["edit", "task", "w"], &editor)
        .ok()
        .stdout_has("edited");
    assert_eq!(get_json(&k, "w", &[])["spec"]["priority"], 5);
    // An edit that breaks a rule is cancelled with our reason in the saved copy.
    let editor = [("KUBE_EDITOR", "sed -i s/Hello\\ World/Bye/")];
    let cancelled = k.run_env(&["edit", "task", "hello"], &editor);
    cancelled.fails().stderr_has("edit cancelled");
    let copy = cancelled
        .stderr
        .lines()
        .find_map(|l| l.split('"').nth(1).filter(|p| p.ends_with(".yaml")))
        .unwrap_or_else(|| panic!("no saved copy named: {}", cancelled.describe()));
    let saved = std::fs::read_to_string(copy).unwrap();
    assert!(saved.contains("spec.command"), "{saved}");

    // Field validation: Strict by default, Warn, and Ignore (--validate=false).
    let bad = write(
        &c,
        "bad.yaml",
        &waiting_task("bad", "  foo: 1\n  resources: {cpus: 2}\n"),
    );
    let strict = k.run(&["apply", "-f", &bad]);
    strict.fails();
    assert!(
        has(&strict, "unknown field \"spec.foo\""),
        "{}",
        strict.describe()
    );
    k.run(&["get", "task", "bad"]).fails();
    let warned = k.run(&["apply", "-f", &bad, "--validate=warn"]);
    warned
        .ok()
        .stderr_has("Warning: unknown field \"spec.foo\"");
    warned.stderr_has("Warning: unknown field \"spec.resources.cpus\"");
    k.run(&["delete", "task", "bad"]).ok();
    let ignored = k.run(&["apply", "-f", &bad, "--validate=false"]);
    ignored.ok();
    assert!(
        !ignored.stderr.contains("Warning"),
        "{}",
        ignored.describe()
    );
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts_as_kubernetes() {
    let Some((c, k)) = cluster("ka-ssa") else {
        return;
    };
    let config = write(&c, "ssa.yaml", &waiting_task("ssa", "  priority: 1\n"));
    k.run(&["apply", "--server-side", "-f", &config])
        .ok()
        .stdout_has("task.kohakuriver/ssa serverside-applied");
    k.run(&["apply", "--server-side", "-f", &config]).ok();
    let entries =
        get_json(&k, "ssa", &["--show-managed-fields"])["metadata"]["managedFields"].clone();
    let apply = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        .unwrap_or_else(|| panic!("no kubectl Apply entry: {entries:#}"));
    assert_eq!(apply["fieldsType"], "FieldsV1");
    assert!(
        apply["fieldsV1"]["f:spec"]["f:priority"].is_object(),
        "{apply:#}"
    );

    // Another manager changes the field: the next apply conflicts, with kubectl's advice.
    k.run(&[
        "patch",
        "task",
        "ssa",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"priority":3}}"#,
    ])
    .ok();
    let conflict = k.run(&["apply", "--server-side", "-f", &config]);
    conflict.fails();
    conflict.stderr_has("Apply failed with 1 conflict: conflict with \"kubectl-patch\"");
    conflict.stderr_has(".spec.priority");
    conflict.stderr_has("--force-conflicts");
    assert_eq!(get_json(&k, "ssa", &[])["spec"]["priority"], 3);
    k.run(&["apply", "--server-side", "--force-conflicts", "-f", &config])
        .ok();
    assert_eq!(get_json(&k, "ssa", &[])["spec"]["priority"], 1);

    // A field the applier drops from its config goes.
    let fewer = write(
        &c,
        "ssa-fewer.yaml",
        &waiting_task("ssa", "").replace("  labels: {team: a}\n", ""),
    );
    k.run(&["apply", "--server-side", "-f", &fewer]).ok();
    let live = get_json(&k, "ssa", &[]);
    assert!(live["spec"].get("priority").is_none(), "{live:#}");
    assert!(live["metadata"].get("labels").is_none(), "{live:#}");

    // diff with server-side dry run: nothing for the applied file, the change otherwise.
    let same = k.run(&["diff", "--server-side", "-f", &fewer]);
    assert_eq!(same.code, 0, "{}", same.describe());
    let diff = k.run(&["diff", "--server-side", "-f", &config]);
    assert_eq!(diff.code, 1, "{}", diff.describe());
    assert!(diff.stdout.contains("+  priority: 1"), "{}", diff.stdout);
}

#[test]
fn wait_delete_and_prune() {
    let Some((c, k)) = cluster("ka-wait") else {
        return;
    };
    let hello = repo_manifest("hello.yaml").display().to_string();
    k.run(&["apply", "-f", &hello]).ok();
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "task/hello",
        "--timeout=90s",
    ])
    .ok()
    .stdout_has("condition met");
    k.run(&[
        "wait",
        "--for=condition=Succeeded",
        "task/hello",
        "--timeout=60s",
    ])
    .ok()
    .stdout_has("condition met");
    // The finished task holds the container finalizer until its agent removed the
    // container; kubectl delete waits for it to be gone.
    k.run(&["delete", "task", "hello"])
        .ok()
        .stdout_has("task.kohakuriver \"hello\" deleted");
    k.run(&["get", "task", "hello"])
        .fails()
        .stderr_has("not found");

    // wait --for=delete on a running task deleted without waiting.
    let sleeper = write(
        &c,
        "sleeper.yaml",
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: sleeper}\nspec:\n  command: [sleep, \"300\"]\n",
    );
    k.run(&["apply", "-f", &sleeper]).ok();
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "task/sleeper",
        "--timeout=90s",
    ])
    .ok();
    k.run(&["delete", "task", "sleeper", "--wait=false"]).ok();
    k.run(&["wait", "--for=delete", "task/sleeper", "--timeout=90s"])
        .ok();
    k.run(&["get", "task", "sleeper"]).fails();

    // Prune: kubectl lists by label and deletes what left the folder. Tasks are
    // cluster-scoped custom objects, so kubectl needs them in --prune-allowlist.
    let folder = c.dir().join("gitops");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(repo_manifest("gitops")).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path())
            .unwrap()
            // No GPUs and no such image here: keep them waiting for a node instead.
            .replace("spec:\n", "spec:\n  placement: {node: never-joins}\n");
        std::fs::write(folder.join(entry.file_name()), text).unwrap();
    }
    let folder_arg = folder.display().to_string();
    let prune = [
        "apply",
        "-f",
        folder_arg.as_str(),
        "--prune",
        "-l",
        "sweep=lr",
        "--prune-allowlist=kohakuriver/v1/Task",
    ];
    k.run(&prune)
        .ok()
        .stdout_has("task.kohakuriver/sweep-lr-3 created");
    std::fs::remove_file(folder.join("sweep-lr-3.yaml")).unwrap();
    let pruned = k.run(&prune);
    pruned.ok().stdout_has("task.kohakuriver/sweep-lr-3 pruned");
    pruned.stdout_has("task.kohakuriver/sweep-lr-1 unchanged");
    k.run(&["get", "task", "sweep-lr-3"]).fails();
    k.run(&["get", "task", "sweep-lr-1"]).ok();
}
