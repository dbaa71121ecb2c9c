//! kubectl through a kubeconfig: the one `up` writes, the one `kohakuriver kubeconfig`
//! prints for any credential (with the CA embedded over https), and refusals that reach
//! kubectl as `Status` objects it prints.

use std::time::Duration;

use kohakuriver_tests::{Cluster, Kubectl, ServerOptions, docker_ready};

const T: Duration = Duration::from_secs(60);

/// `up` writes `<data>/kubeconfig` (mode 0600) for its admin and says so; kubectl with it
/// lists nodes and tasks.
#[test]
fn up_writes_a_kubeconfig_kubectl_uses() {
    if !docker_ready() {
        return;
    }
    let mut c = Cluster::up("kauth");
    let node = c.up_node().to_string();
    let banner = c
        .server_proc()
        .wait_stdout("Stop with Ctrl-C", Duration::from_secs(30));
    let line = banner
        .lines()
        .find(|l| l.trim_start().starts_with("kubeconfig"))
        .unwrap_or_else(|| panic!("the banner names the kubeconfig: {banner}"));
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("a path after `kubeconfig`: {line}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{path} is private");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(&c.admin_token()), "{text}");
    let kubectl = Kubectl::with_kubeconfig(&c, &text);
    let run = kubectl.run(&["get", "nodes", "-o", "name"]);
    run.ok();
    assert!(run.stdout.contains(&node), "{}", run.stdout);
    let id = c.submit(&["-t", &node, "--", "echo", "hi"]);
    c.wait_finished(&id, T);
    let run = kubectl.run(&["get", "tasks", "-o", "name"]);
    run.ok();
    assert!(run.stdout.contains(&id), "{}", run.stdout);
}

/// `kohakuriver kubeconfig` for a viewer: kubectl reads, and a refused write prints our
/// 403 message naming who may not do what; a revoked token is kubectl's "Unauthorized".
#[test]
fn kubeconfig_for_another_credential_and_refusals() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::up("kauth2");
    let node = c.up_node().to_string();
    let id = c.submit(&["-t", &node, "--", "echo", "hi"]);
    c.wait_finished(&id, T);
    let viewer = c.create_token("vera", "viewer");
    let run = c.kr_as(&viewer, &["kubeconfig", "--name", "lab-vera"]);
    run.ok();
    assert!(
        run.stdout.contains("current-context: lab-vera"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&viewer), "{}", run.stdout);
    let kubectl = Kubectl::with_kubeconfig(&c, &run.stdout);
    kubectl.run(&["get", "task", &id, "-o", "name"]).ok();
    let run = kubectl.run(&["delete", "task", &id]);
    run.fails();
    assert!(
        run.stderr.contains("Forbidden") && run.stderr.contains("vera"),
        "kubectl prints the server's refusal: {}",
        run.stderr
    );
    // kubeconfig checks the credential first, so a bad one gives no kubeconfig …
    let bogus = "krv_aaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    c.kr_as(bogus, &["kubeconfig"])
        .fails()
        .stderr_has("credential");
    // … and a revoked one is a 401 kubectl reports as such.
    c.kr(&["token", "revoke", "vera"]).ok();
    let run = kubectl.run(&["get", "tasks"]);
    run.fails();
    assert!(
        run.stderr.contains("Unauthorized") || run.stderr.contains("logged in"),
        "{}",
        run.stderr
    );
}

/// Over https with the cluster's own CA, the kubeconfig embeds the CA: kubectl verifies the
/// server with nothing else.
#[test]
fn kubeconfig_embeds_the_cluster_ca() {
    if !docker_ready() {
        return;
    }
    let c = Cluster::up_with(
        "kauthtls",
        ServerOptions {
            tls_self_signed: true,
            ..Default::default()
        },
        Default::default(),
    );
    assert!(c.url().starts_with("https://"), "{}", c.url());
    let run = c.kr(&["kubeconfig"]);
    run.ok();
    assert!(
        run.stdout.contains("certificate-authority-data:"),
        "{}",
        run.stdout
    );
    let kubectl = Kubectl::with_kubeconfig(&c, &run.stdout);
    let run = kubectl.run(&["get", "nodes", "-o", "name"]);
    run.ok();
    assert!(run.stdout.contains(c.up_node()), "{}", run.stdout);
}
