//! The Docker side of the harness: is the engine usable, the test image, cleanup.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The image every test task runs: static busybox imported with `docker import`.
pub const IMAGE: &str = "kohakuriver-test:latest";

/// Commands linked to busybox in the test image.
const COMMANDS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "head", "tail", "yes", "seq", "ls", "true", "false", "env",
    "printf", "kill", "grep", "wc", "dd", "id", "date", "mkdir", "touch", "rm",
];

/// Runs `docker ARGS`, returning (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    match Command::new("docker").args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), format!("cannot run docker: {e}")),
    }
}

/// True when the Docker tests can run: the engine answers and the test image exists (it is
/// built once per process if missing). When Docker is unusable: with
/// `KOHAKURIVER_SKIP_DOCKER_TESTS=1` prints why and returns false (the test should return),
/// otherwise panics with a clear message.
pub fn docker_ready() -> bool {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let (ok, _, err) = docker(&["version", "--format", "{{.Server.Version}}"]);
        if !ok {
            return Err(format!("the docker engine is unreachable: {}", err.trim()));
        }
        ensure_image()
    });
    match state {
        Ok(()) => true,
        Err(why) if std::env::var("KOHAKURIVER_SKIP_DOCKER_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipping: KOHAKURIVER_SKIP_DOCKER_TESTS=1 and {why}");
            false
        }
        Err(why) => panic!(
            "this test needs a usable Docker engine: {why}\n\
             start Docker, or set KOHAKURIVER_SKIP_DOCKER_TESTS=1 to skip the Docker tests"
        ),
    }
}

/// Builds [`IMAGE`] from the machine's static busybox when it is missing. Serialised within
/// the process; concurrent builds from other test binaries are harmless (same content).
pub fn ensure_image() -> Result<(), String> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if docker(&["image", "inspect", IMAGE]).0 {
        return Ok(());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or("no static busybox at /bin/busybox: apt-get install -y busybox-static")?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    for dir in ["bin", "proc", "sys", "dev", "etc", "tmp", "shared"] {
        std::fs::create_dir_all(root.path().join(dir)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(busybox, root.path().join("bin/busybox")).map_err(|e| e.to_string())?;
    for cmd in COMMANDS {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(cmd))
            .map_err(|e| e.to_string())?;
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let tar_out = tar.stdout.take().expect("piped");
    let import = Command::new("docker")
        .args(["import", "-c", "ENV PATH=/bin", "-", IMAGE])
        .stdin(Stdio::from(tar_out))
        .output()
        .map_err(|e| format!("cannot run docker import: {e}"))?;
    let _ = tar.wait();
    if !import.status.success() {
        return Err(format!(
            "cannot build the test image {IMAGE}: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        ));
    }
    eprintln!("built test image {IMAGE} from {}", busybox.display());
    Ok(())
}

/// Whether this Docker engine can run `--privileged` containers at all (it cannot inside
/// some sandboxes: "unable to apply caps: operation not permitted"). Probed once.
pub fn privileged_containers_work() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        docker(&[
            "run",
            "--rm",
            "--privileged",
            "--network",
            "none",
            IMAGE,
            "true",
        ])
        .0
    })
}

/// Removes (`docker rm -f`) every container labelled `kohakuriver.node=<node>`.
pub fn remove_node_containers(node: &str) {
    let label = format!("label=kohakuriver.node={node}");
    let (ok, out, _) = docker(&["ps", "-aq", "--filter", &label]);
    if !ok {
        return;
    }
    let ids: Vec<&str> = out.split_whitespace().collect();
    if ids.is_empty() {
        return;
    }
    let mut args = vec!["rm", "-f"];
    args.extend(ids);
    let _ = docker(&args);
}
