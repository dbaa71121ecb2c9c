//! The real `kubectl`, pointed at a test cluster through its own kubeconfig and its own
//! `HOME` (so its discovery and HTTP caches belong to the test, never to the user).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cluster::Cluster;
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

    /// kubectl as the cluster's admin, with the kubeconfig `kohakuriver kubeconfig` prints.
    #[track_caller]
    pub fn admin(cluster: &Cluster) -> Kubectl {
        let run = cluster.kr(&["kubeconfig"]);
        run.ok();
        Kubectl::with_kubeconfig(cluster, &run.stdout)
    }

    /// kubectl with this bearer token, with the kubeconfig `kohakuriver --token TOKEN
    /// kubeconfig --no-verify` prints, so a token the server refuses can be tried too (an `https://` URL and the CA even for a plain-http cluster:
    /// kubectl sends a token only over TLS).
    #[track_caller]
    pub fn with_token(cluster: &Cluster, token: &str) -> Kubectl {
        let run = cluster.kr_as(token, &["kubeconfig", "--no-verify"]);
        run.ok();
        Kubectl::with_kubeconfig(cluster, &run.stdout)
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

/// `kohakuriver up` for kubectl tests, as a user starts it: plain http for the CLI, and
/// https on the same port for kubectl (which sends a kubeconfig's token only over TLS).
pub fn kubectl_cluster(prefix: &str) -> Cluster {
    Cluster::up(prefix)
}
