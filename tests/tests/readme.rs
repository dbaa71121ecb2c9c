//! README.md's command blocks, run as a new user types them: every ```bash block is either
//! run verbatim here (in order, in a sandbox with its own HOME) or listed with the reason it
//! cannot run on a test machine. A block added to or changed in the README fails this test
//! until it is run or classified, so the README cannot drift from what works.
//!
//! What the sandbox adds around the verbatim lines, and nothing else:
//! - `HOME` is a temp dir (the CLI config, `~/.kohakuriver` and `~/.kube` are the test's);
//! - `$PWD/target/release/kohakuriver` is the binary under test, and `cargo` only says that
//!   it was built already (by `scripts/test.sh`);
//! - `ubuntu:22.04` names the local test image when the engine has no such image (no
//!   registry is reachable), and the tag is removed afterwards if the test made it;
//! - a `kohakuriver` command waits for a server started in the background by an earlier
//!   line to answer, as a person does before typing the next line;
//! - each failing command is recorded (bash `ERR` trap) instead of stopping the block, and
//!   the test compares them with the failures the README itself announces.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kohakuriver_tests::{IMAGE, binary, docker, docker_ready, kubectl_binary};

/// How the test treats each block, by the heading it sits under.
enum Plan {
    /// Run verbatim; these commands may fail, as the README says they do.
    Run {
        expected_failures: &'static [&'static str],
    },
    /// Not run here, and why.
    Skip(&'static str),
}

fn plan(heading: &str, first_line: &str) -> Plan {
    match (heading, first_line) {
        ("KohakuRiver in Rust", _) => {
            Plan::Skip("an illustration: names a node and script no test machine has")
        }
        ("Build", _) => {
            Plan::Skip("scripts/test.sh builds the binary (a release build takes minutes)")
        }
        ("Quick start: one machine", l) if l.starts_with("cargo build") => Plan::Run {
            // `-w` exits with the task's code: the README shows `echo $?` printing 3.
            expected_failures: &["sh -c 'exit 3'"],
        },
        ("Quick start: one machine", _) => Plan::Skip(
            "the no-registry recipe installs a package and starts a second `up` on the same port",
        ),
        ("Dependencies and batches", _) => Plan::Run {
            expected_failures: &[],
        },
        ("Arrays", _) => Plan::Skip(
            "needs an agent and Docker for the members; tests/tests/groups.rs runs these commands",
        ),
        ("Usage and idle GPUs", _) => Plan::Skip(
            "needs running tasks on an agent, a node named gpu-01 and its host (HEAD); tests/tests/top.rs runs top and reads /metrics with the agent secret",
        ),
        ("Several machines", _) => Plan::Skip("needs a second machine (HOST) and /var/lib"),
        ("Securing a cluster", _) => Plan::Skip("logs in on another machine (HOST, ca.pem)"),
        ("Run the server and apply a manifest", _) => Plan::Run {
            // The gitops folder is not applied yet: diff says so with exit 1.
            expected_failures: &["kohakuriver diff -f manifests/gitops/"],
        },
        ("Using kubectl", _) => Plan::Run {
            expected_failures: &[],
        },
        ("Backup and restore", _) => Plan::Skip(
            "restores into the default data dir of a running server; tests/tests/backup.rs runs both commands",
        ),
        ("Test", l) if l.starts_with("./scripts/soak.sh") => {
            Plan::Skip("the soak runs for the time it is given; CI runs it for 2 minutes")
        }
        ("Test", _) => Plan::Skip("this test is part of it"),
        ("Benchmarks", _) => Plan::Skip("benchmarks take minutes and are not part of the test run"),
        (other, line) => panic!(
            "README.md has a bash block under \"{other}\" (starting {line:?}) that this test does not know: run it or say why not in tests/tests/readme.rs"
        ),
    }
}

/// A ```bash block and the `## ` heading above it (the title for the first).
struct Block {
    heading: String,
    lines: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut heading = String::new();
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match &mut current {
            Some(lines) if line.trim_start().starts_with("```") => {
                out.push(Block {
                    heading: heading.clone(),
                    lines: std::mem::take(lines),
                });
                current = None;
            }
            Some(lines) => lines.push(line.to_string()),
            None if line.starts_with("```bash") => current = Some(Vec::new()),
            None => {
                if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("# ")) {
                    heading = h.trim().to_string();
                }
            }
        }
    }
    out
}

/// What the sandbox defines before the verbatim lines (see the module doc).
const PRELUDE: &str = r#"
cargo() { echo "(the test skips: cargo $*; scripts/test.sh built the binary)"; }
kohakuriver() {
  if [ "$1" != up ] && [ "$1" != server ]; then
    for _ in $(seq 1 300); do
      (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break
      sleep 0.1
    done
  fi
  # A daemon backgrounded by the README runs in a subshell: let it be the process, so
  # stopping the job stops it.
  if [ "$BASH_SUBSHELL" -gt 0 ]; then exec "$(type -P kohakuriver)" "$@"; fi
  command kohakuriver "$@"
}
trap 'echo "README-FAILED-LINE: $LINENO" >&2' ERR
"#;

/// What a block printed and which of its commands failed.
struct Outcome {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs the lines of `block` with bash in `dir`, with `home` as HOME and the binary under
/// test first on PATH, output to files (a daemon left in the background keeps a pipe open);
/// gives up after `limit`, stopping whatever the block started.
fn run_block(dir: &Path, home: &Path, block: &Block, limit: Duration) -> Outcome {
    let script = script(block);
    let out_path = home.join("block.out");
    let err_path = home.join("block.err");
    let path = format!(
        "{}:{}",
        dir.join("target/release").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("/bin/bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("HOME", home)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("KOHAKURIVER_") || key == "KUBECONFIG" {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("spawn bash");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_daemons(home);
    Outcome {
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        code,
    }
}

/// The README lines whose commands failed in a run, from the ERR trap's line numbers.
fn failures(run: &Outcome, block: &Block) -> Vec<String> {
    let offset = script(block).lines().count() - block.lines.len();
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("README-FAILED-LINE: "))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .map(|n| {
            n.checked_sub(offset + 1)
                .and_then(|i| block.lines.get(i))
                .cloned()
                .unwrap_or_else(|| format!("(line {n} of the sandbox script)"))
        })
        .collect()
}

/// The whole script of a block: the prelude, then its lines.
fn script(block: &Block) -> String {
    format!("{PRELUDE}\n{}\n", block.lines.join("\n"))
}

/// Stops every `kohakuriver` process a block started, known by `HOME` in its environment
/// (a background `up` the block did not stop, or one left when the block timed out).
fn stop_daemons(home: &Path) {
    let marker = format!("HOME={}", home.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|v| v == marker.as_bytes());
        if ours && String::from_utf8_lossy(&cmdline).contains("kohakuriver") {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// `ubuntu:22.04` for the README's `up`: the local test image under that name, unless the
/// engine has a real one. Returns true when the tag was made here (and must be removed).
fn alias_ubuntu() -> bool {
    let (exists, _, _) = docker(&["image", "inspect", "ubuntu:22.04"]);
    if exists {
        return false;
    }
    let (ok, _, err) = docker(&["tag", IMAGE, "ubuntu:22.04"]);
    assert!(ok, "cannot tag the test image as ubuntu:22.04: {err}");
    true
}

#[test]
fn every_bash_block_is_run_or_classified() {
    let all = blocks();
    assert!(all.len() >= 5, "README.md's bash blocks were not found");
    for block in all {
        let first = block.lines.first().map(String::as_str).unwrap_or_default();
        match plan(&block.heading, first) {
            Plan::Run { .. } => println!("run:  \"{}\" ({first})", block.heading),
            Plan::Skip(why) => {
                assert!(!why.is_empty());
                println!("skip: \"{}\" ({first}): {why}", block.heading);
            }
        }
    }
}

/// The quick start, its dependencies and batches, then kubectl against it, then (once it is stopped) the server and
/// manifest walk-through: all on port 8000 as the README says, so one after another.
#[test]
fn readme_blocks_run_verbatim() {
    if !docker_ready() {
        return;
    }
    let _ = kubectl_binary();
    let sandbox = tempfile::tempdir().expect("tempdir");
    let dir = sandbox.path().join("repo");
    let home = sandbox.path().join("home");
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(binary(), dir.join("target/release/kohakuriver")).unwrap();
    std::os::unix::fs::symlink(repo().join("manifests"), dir.join("manifests")).unwrap();
    // The binary under test is first on PATH in every block, as after the quick start's
    // `export PATH=$PWD/target/release:$PATH`.
    let busy = std::net::TcpListener::bind("127.0.0.1:8000").is_err();
    assert!(
        !busy,
        "port 8000 is in use: the README's commands use it; free it to run this test"
    );
    let made_tag = alias_ubuntu();

    let all = blocks();
    let find = |heading: &str| {
        all.iter()
            .find(|b| {
                b.heading == heading
                    && matches!(
                        plan(
                            &b.heading,
                            b.lines.first().map(String::as_str).unwrap_or_default()
                        ),
                        Plan::Run { .. }
                    )
            })
            .unwrap_or_else(|| panic!("README.md has no runnable block under {heading:?}"))
    };
    let expected = |b: &Block| match plan(
        &b.heading,
        b.lines.first().map(String::as_str).unwrap_or_default(),
    ) {
        Plan::Run { expected_failures } => expected_failures,
        Plan::Skip(_) => &[][..],
    };
    let check = |b: &Block, run: &Outcome| {
        let failed = failures(run, b);
        let want = expected(b);
        let unexpected: Vec<&String> = failed
            .iter()
            .filter(|f| !want.iter().any(|w| f.contains(w)))
            .collect();
        assert!(
            unexpected.is_empty() && run.code.is_some(),
            "README commands failed under \"{}\" (exit {:?}): {unexpected:?}\nstdout:\n{}\nstderr:\n{}",
            b.heading,
            run.code,
            run.stdout,
            run.stderr
        );
        for w in want {
            assert!(
                failed.iter().any(|f| f.contains(w)),
                "the README says `{w}` fails under \"{}\", but it did not\nstdout:\n{}\nstderr:\n{}",
                b.heading,
                run.stdout,
                run.stderr
            );
        }
    };

    // Quick start, dependencies and kubectl share one shell: the quick start's `up &` keeps
    // running.
    let quick = find("Quick start: one machine");
    let dependencies = find("Dependencies and batches");
    let kubectl = find("Using kubectl");
    let joined = Block {
        heading: quick.heading.clone(),
        lines: quick
            .lines
            .iter()
            .chain(dependencies.lines.iter())
            .chain(kubectl.lines.iter())
            .cloned()
            .chain(["kill %1; wait".to_string()])
            .collect(),
    };
    let run = run_block(&dir, &home, &joined, Duration::from_secs(300));
    let cleanup = || {
        if made_tag {
            let _ = docker(&["rmi", "ubuntu:22.04"]);
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        println!("--- quick start and kubectl:\n{}", run.stdout);
        check(&joined, &run);
        for want in [
            "Hello World\n",
            "out\n",
            "task/pipeline-eval created",
            "task.kohakuriver/hello created",
            "task.kohakuriver/hello unchanged",
            "Succeeded",
        ] {
            assert!(
                run.stdout.contains(want),
                "{want:?} missing:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
        assert!(
            run.stdout.lines().any(|l| l == "3"),
            "echo $? after -w: {}",
            run.stdout
        );

        // A fresh shell, home and database: the server walk-through.
        let server_home = sandbox.path().join("home-server");
        std::fs::create_dir_all(&server_home).unwrap();
        let server = find("Run the server and apply a manifest");
        let block = Block {
            heading: server.heading.clone(),
            lines: server
                .lines
                .iter()
                .cloned()
                .chain(["kill %1; wait".to_string()])
                .collect(),
        };
        let run = run_block(&dir, &server_home, &block, Duration::from_secs(120));
        println!("--- server walk-through:\n{}", run.stdout);
        check(&block, &run);
        for want in [
            "task/hello created",
            "task/hello unchanged",
            "task/sweep-lr-1 created",
            "task/hello deleted",
        ] {
            assert!(
                run.stdout.contains(want),
                "{want:?} missing:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }));
    cleanup();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
