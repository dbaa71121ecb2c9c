//! Daemon child processes (server, agent, `up`) with their output in log files.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, never handed out twice by this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A running daemon: `kohakuriver <args>`, stderr appended to `log`, stdout to `log.out`.
pub struct Proc {
    /// What this process is (for messages), e.g. `server` or `agent node-a`.
    pub label: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub stdout_log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Spawns `bin args`; logs are appended so a restart keeps the earlier output.
    pub fn spawn(label: &str, bin: &Path, args: &[String], log: &Path) -> Proc {
        Proc::spawn_with(label, bin, args, log, &[])
    }

    /// [`Proc::spawn`] with these environment variables set (see [`crate::run::cli_command`]).
    pub fn spawn_with(
        label: &str,
        bin: &Path,
        args: &[String],
        log: &Path,
        env: &[(String, String)],
    ) -> Proc {
        let stdout_log = log.with_extension("out");
        let append = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        let child = crate::run::cli_command(bin, env)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("KOHAKURIVER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(append(&stdout_log))
            .stderr(append(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        Proc {
            label: label.to_string(),
            args: args.to_vec(),
            log: log.to_path_buf(),
            stdout_log,
            child: Some(child),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// None while running; the exit description once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait: {e}")),
        }
    }

    /// Panics with the log tail when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.label,
                tail(&self.log, 80)
            );
        }
    }

    /// SIGKILL, then reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop), waiting up to `timeout` for the exit, then SIGKILL.
    /// Returns whether it stopped by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.child.is_none() || self.terminate_status(timeout).is_some()
    }

    /// SIGTERM, waiting up to `timeout` for the exit, then SIGKILL. Returns the exit status
    /// when it stopped by itself (None when it had to be killed, or was not running).
    pub fn terminate_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    /// Waits up to `timeout` until stdout contains `needle` and returns all of stdout;
    /// panics with what was printed so far. A daemon answers before it has printed
    /// everything, so tests of its banner wait for the banner's last line.
    #[track_caller]
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {needle:?} within {timeout:?}; stdout so far:\n{out}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the stderr log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
