//! Running the CLI: one-shot commands with a timeout ([`Run`]) and streaming commands whose
//! output is recorded as it arrives ([`Stream`]).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A finished CLI command.
#[derive(Debug, Clone)]
pub struct Run {
    /// The program's file name (`kohakuriver`, `kubectl`).
    pub program: String,
    /// The arguments after `kohakuriver --server URL`.
    pub args: Vec<String>,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Runs `bin args` and waits up to `timeout`; panics if it takes longer.
    pub fn exec(bin: &Path, args: &[String], timeout: Duration) -> Run {
        Run::exec_with(bin, args, &[], timeout)
    }

    /// [`Run::exec`] with these environment variables set (see [`Stream::spawn_with`]).
    pub fn exec_with(
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Run {
        let start = Instant::now();
        let mut stream = Stream::spawn_with(bin, args, env);
        let deadline = start + timeout;
        let code = loop {
            match stream.child.try_wait() {
                Ok(Some(status)) => break status.code().unwrap_or(-1),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = stream.child.kill();
                    let _ = stream.child.wait();
                    let (out, err) = stream.finish_readers();
                    panic!(
                        "`{} {}` did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                        program_name(bin),
                        args.join(" "),
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&err)
                    );
                }
                Err(e) => panic!("cannot wait for kohakuriver: {e}"),
            }
        };
        let (out, err) = stream.finish_readers();
        Run {
            program: program_name(bin),
            args: args.to_vec(),
            code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stdout_bytes: out,
            stderr: String::from_utf8_lossy(&err).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// The command, its exit code, time and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{} {}` exited {} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.program,
            self.args.join(" "),
            self.code,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, 0, "expected success: {}", self.describe());
        self
    }

    /// Asserts a non-zero exit code.
    #[track_caller]
    pub fn fails(&self) -> &Run {
        assert_ne!(self.code, 0, "expected a failure: {}", self.describe());
        self
    }

    /// Asserts this exact exit code.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code: {}", self.describe());
        self
    }

    /// Asserts stdout contains `s`.
    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Run {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}: {}",
            self.describe()
        );
        self
    }

    /// Asserts stderr contains `s` (case-insensitive).
    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Run {
        assert!(
            self.stderr.to_lowercase().contains(&s.to_lowercase()),
            "stderr lacks {s:?}: {}",
            self.describe()
        );
        self
    }

    /// The last non-empty line of stderr.
    pub fn last_stderr_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// `bin` with `env` set and the runner's own KohakuRiver settings removed: no inherited
/// server, token, CA or data dir, and a CLI config that is never the user's
/// `~/.kohakuriver/config` (a path in the temp dir unless `env` names one).
pub fn cli_command(bin: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    for var in [
        "KOHAKURIVER_HOST",
        "KOHAKURIVER_PORT",
        "KOHAKURIVER_TOKEN",
        "KOHAKURIVER_CA",
        "KOHAKURIVER_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env(
        "KOHAKURIVER_CONFIG",
        std::env::temp_dir()
            .join("kohakuriver-tests-no-config")
            .join("config"),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn program_name(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.display().to_string())
}

/// Stdout reads of a [`Stream`]: (arrival, bytes).
pub type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A running CLI command whose stdout chunks are recorded with their arrival time.
pub struct Stream {
    pub args: Vec<String>,
    pub child: Child,
    /// (arrival, bytes) of every stdout read.
    pub chunks: Chunks,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Stream {
    /// Spawns `bin args` with piped stdout/stderr and reader threads.
    pub fn spawn(bin: &Path, args: &[String]) -> Stream {
        Stream::spawn_with(bin, args, &[])
    }

    /// [`Stream::spawn`] with these environment variables set, in an environment cleaned
    /// of the test runner's KohakuRiver settings (see [`cli_command`]).
    pub fn spawn_with(bin: &Path, args: &[String], env: &[(String, String)]) -> Stream {
        let mut child = cli_command(bin, env)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let chunks: Chunks = Arc::default();
        let stderr: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let c = chunks.clone();
        let r1 = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                c.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), buf[..n].to_vec()));
            }
        });
        let e = stderr.clone();
        let r2 = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all);
            *e.lock().unwrap_or_else(|e| e.into_inner()) = all;
        });
        Stream {
            args: args.to_vec(),
            child,
            chunks,
            stderr,
            readers: vec![r1, r2],
        }
    }

    /// Stdout received so far.
    pub fn stdout_so_far(&self) -> Vec<u8> {
        self.chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// Waits up to `timeout` for the exit; `None` if still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Joins the reader threads (the process must have exited) and returns all of stdout
    /// and stderr.
    pub fn finish_readers(&mut self) -> (Vec<u8>, Vec<u8>) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let err = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.stdout_so_far(), err)
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
