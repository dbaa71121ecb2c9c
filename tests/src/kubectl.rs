//! The real `kubectl`, pointed at a test cluster through its own kubeconfig and its own
//! `HOME` (so its discovery and HTTP caches belong to the test, never to the user).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cluster::{AgentOptions, Cluster, ServerOptions};
use crate::run::{Run, Stream};

/// How long one kubectl command may take.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The kubectl binary: `$KUBECTL` if set, else `kubectl` on `PATH`. Panics with what to
/// install when there is none.
pub fn kubectl_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("KUBECTL") {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests drive the real kubectl and there is none on PATH: install it \
                 (`.ci/run` does: apt-get install kubernetes-client) or set KUBECTL=/path/to/kubectl"
            )
        })
}

/// kubectl as one identity on one cluster.
pub struct Kubectl {
    bin: PathBuf,
    home: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl with a kubeconfig holding `kubeconfig` (YAML text), in a fresh home under the
    /// cluster's temp dir.
    pub fn with_kubeconfig(cluster: &Cluster, kubeconfig: &str) -> Kubectl {
        static N: AtomicU32 = AtomicU32::new(0);
        let home = cluster.dir().join(format!(
            "kubectl-home-{}",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&home).expect("make kubectl home");
        let kubeconfig_path = home.join("kubeconfig");
        std::fs::write(&kubeconfig_path, kubeconfig).expect("write kubeconfig");
        Kubectl {
            bin: kubectl_binary(),
            home,
            kubeconfig: kubeconfig_path,
        }
    }

    /// kubectl as the cluster's admin, with a kubeconfig written by the test itself from
    /// the server URL, the CA and the admin token.
    pub fn admin(cluster: &Cluster) -> Kubectl {
        Kubectl::with_token(cluster, &cluster.admin_token())
    }

    /// kubectl with this bearer token. The cluster must serve https: kubectl (client-go)
    /// reads a kubeconfig user's credentials only for a TLS transport, so over `http://` it
    /// would send no token and every request would be a 401.
    pub fn with_token(cluster: &Cluster, token: &str) -> Kubectl {
        assert!(
            cluster.url().starts_with("https://"),
            "kubectl sends a token only over https; start the cluster with \
             ServerOptions {{ tls_self_signed: true, .. }} (see kubectl_cluster)"
        );
        Kubectl::with_kubeconfig(cluster, &kubeconfig_yaml(cluster, token))
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `HOME` of this kubectl (its caches are under `.kube/cache`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOME".to_string(), self.home.display().to_string()),
            (
                "KUBECONFIG".to_string(),
                self.kubeconfig.display().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Runs `kubectl args…` and waits for it.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// [`Kubectl::run`] with extra environment variables (e.g. `KUBE_EDITOR`).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Run::exec_with(&self.bin, &args, &self.env(env), TIMEOUT)
    }

    /// Spawns `kubectl args…` (e.g. `get tasks -w`) and records its output as it comes.
    pub fn stream(&self, args: &[&str]) -> Stream {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Stream::spawn_with(&self.bin, &args, &self.env(&[]))
    }
}

/// `kohakuriver up` for kubectl tests: with `--tls-self-signed`, since kubectl sends a
/// kubeconfig's token only over https.
pub fn kubectl_cluster(prefix: &str) -> Cluster {
    Cluster::up_with(
        prefix,
        ServerOptions {
            tls_self_signed: true,
            ..ServerOptions::default()
        },
        AgentOptions::default(),
    )
}

/// A kubeconfig for `cluster` with `token`, naming the cluster CA when there is one.
pub fn kubeconfig_yaml(cluster: &Cluster, token: &str) -> String {
    let ca = match cluster.ca() {
        Some(path) => format!("    certificate-authority: {}\n", path.display()),
        None => String::new(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
{ca}users:
- name: test
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: test
current-context: test
",
        server = cluster.url()
    )
}
