//! Capturing a container's stdout and stderr into files that outlive it.
//!
//! Each task has a directory `<data-dir>/logs/<task>-<uid>/` with `stdout`, `stderr`, a small
//! `capture.json`, once nothing more can come a `final` marker, and an `incomplete` note when
//! output may be missing. The directory goes when the task is deleted.
//!
//! Two sources, one writer. The agent attaches to the container's streams before starting it
//! ([`Captures::attach`]): every byte arrives once, in order, at the pace the container
//! writes (it cannot outrun its reader), and the engine's log rotation plays no part. When
//! the agent was not attached for part of the run (it restarted, or the attach broke), the
//! capture falls back to Docker's json-file log: it replays the log from the start and skips
//! as many bytes of each stream as the files already hold for this container, then appends,
//! so nothing is duplicated. That log is only complete while the engine kept all of it, so
//! the agent sets each container's log limits itself ([`crate::container_config::LogLimits`])
//! and [`judge_replay`] decides, from the replay's size and those limits, whether the files
//! provably hold everything; when they do not, the capture says so in `incomplete`, and the
//! task's status carries condition `LogsIncomplete`. `capture.json` records how long each
//! file was before this container's output began, so a retried task (a new container)
//! appends after the earlier attempt's output.
//!
//! Node disks are bounded three ways: a task's captured stdout+stderr stop growing at the
//! agent's `--max-log-bytes-per-task` (the files end with a marker line, a `truncated` note
//! tells the status why, and the container's output is still drained so it never blocks);
//! `--log-retention` expires the files of long-finished tasks ([`crate::log_retention`]);
//! and a write that fails (a full disk) ends the capture with a failure the reconciler turns
//! into the task's `LogCaptureFailed`, so one task's output never takes the agent down.
//!
//! Architecture Invariant: a task's container is removed only after its capture is final
//! (or its capture failed, in which case the task failed with `LogCaptureFailed`).
//! Architecture Invariant: a capture that cannot prove it holds everything is marked
//! incomplete; "complete" is never claimed without proof.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::container_config::LogLimits;
use crate::runtime::{ContainerRuntime, LogChunk, LogStream, RuntimeError};

/// Why capturing failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A log file could not be written.
    #[error("cannot write log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Where the captured logs live: `<root>/<task>-<uid>/{stdout,stderr}`.
#[derive(Clone, Debug)]
pub struct LogStore {
    root: PathBuf,
    /// Bytes of task output this store's captures wrote, shared by its clones (the agent's
    /// `log_captured_bytes` metric).
    captured: prometheus_client::metrics::counter::Counter,
}

/// Bookkeeping of one task's capture, kept beside its files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct CaptureRecord {
    /// The container whose output is being appended.
    container_id: String,
    /// Length of `stdout` before this container's output began.
    stdout_base: u64,
    /// Length of `stderr` before this container's output began.
    stderr_base: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LogStore {
    /// A store rooted at `root` (usually `<data-dir>/logs`).
    pub fn new(root: impl Into<PathBuf>) -> LogStore {
        LogStore {
            root: root.into(),
            captured: Default::default(),
        }
    }

    /// The count of output bytes its captures wrote (clones of this store share it).
    pub fn captured_bytes(&self) -> prometheus_client::metrics::counter::Counter {
        self.captured.clone()
    }

    /// The directory of one task's logs.
    pub fn dir(&self, task: &str, uid: &str) -> PathBuf {
        self.root.join(format!("{task}-{uid}"))
    }

    /// The file of one stream.
    pub fn path(&self, task: &str, uid: &str, stream: LogStream) -> PathBuf {
        self.dir(task, uid).join(stream.as_str())
    }

    /// True once nothing more will be appended (the container exited and its log was
    /// drained, or the task never got a container).
    pub fn is_final(&self, task: &str, uid: &str) -> bool {
        self.dir(task, uid).join("final").exists()
    }

    /// The final marker's content: the container whose capture finished.
    fn final_container(&self, task: &str, uid: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(task, uid).join("final")).ok()
    }

    /// Creates empty files for a task (so readers find them before output arrives).
    pub fn prepare(&self, task: &str, uid: &str) -> Result<(), CaptureError> {
        let dir = self.dir(task, uid);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let path = dir.join(stream.as_str());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Marks a task's logs final although no container produced them (e.g. its image could
    /// not be found), so followers stop waiting.
    pub fn mark_final(&self, task: &str, uid: &str) -> Result<(), CaptureError> {
        self.prepare(task, uid)?;
        let path = self.dir(task, uid).join("final");
        if !path.exists() {
            std::fs::write(&path, "").map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Why the task's captured output may lack bytes, when it may (see [`judge_replay`]).
    pub fn incomplete(&self, task: &str, uid: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(task, uid).join("incomplete")).ok()
    }

    /// Why the task's captured output stops early, when the per-task cap cut it.
    pub fn truncated(&self, task: &str, uid: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(task, uid).join("truncated")).ok()
    }

    /// Why the task's captured output is gone although the task is kept, when
    /// `--log-retention` expired it (see [`crate::log_retention`]).
    pub fn expired(&self, task: &str, uid: &str) -> Option<String> {
        read_expired(&self.dir(task, uid))
    }

    /// The root every task's directory is in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the log directories of task `task` except the one of uid `keep`: the task
    /// they belonged to is deleted, and node disks are bounded.
    pub fn remove_except(&self, task: &str, keep: Option<&str>) -> Result<(), CaptureError> {
        let keep = keep.map(|uid| self.dir(task, uid));
        let prefix = format!("{task}-");
        for dir in self.find(task) {
            // Task `a` must not take task `a-b`'s logs: the rest of the name is a whole uid.
            let uid_shaped = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(is_uid_shaped);
            if uid_shaped && Some(&dir) != keep.as_ref() {
                std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            }
        }
        Ok(())
    }

    /// The log directories of every task named `task` (any uid), newest first.
    pub fn find(&self, task: &str) -> Vec<PathBuf> {
        let prefix = format!("{task}-");
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|uid| !uid.is_empty() && !uid.contains(['/', '.']))
                })
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort();
        dirs.into_iter().map(|(_, p)| p).rev().collect()
    }

    /// Reads or starts the capture record for `container_id`: when the record is for
    /// another container (a new attempt), the new output starts after what the files hold.
    fn begin(
        &self,
        task: &str,
        uid: &str,
        container_id: &str,
    ) -> Result<CaptureRecord, CaptureError> {
        self.prepare(task, uid)?;
        let dir = self.dir(task, uid);
        let record_path = dir.join("capture.json");
        let existing: Option<CaptureRecord> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(record) = existing
            && record.container_id == container_id
        {
            return Ok(record);
        }
        let len = |s: LogStream| {
            std::fs::metadata(dir.join(s.as_str()))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let record = CaptureRecord {
            container_id: container_id.to_string(),
            stdout_base: len(LogStream::Stdout),
            stderr_base: len(LogStream::Stderr),
        };
        // Written atomically before any byte of the new container is appended.
        let tmp = dir.join("capture.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&record).unwrap_or_default())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &record_path).map_err(io_err(&record_path))?;
        let final_path = dir.join("final");
        if final_path.exists() {
            std::fs::remove_file(&final_path).map_err(io_err(&final_path))?;
        }
        Ok(record)
    }
}

/// The note an expired capture directory keeps instead of its files.
pub(crate) fn read_expired(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(EXPIRED)).ok()
}

/// The file an expired capture directory keeps instead of its output.
pub(crate) const EXPIRED: &str = "expired";

/// How much of a chunk the per-task cap lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The whole chunk.
    All,
    /// Only its first `n` bytes; the capture is cut after them.
    CutAfter(usize),
}

/// How many of `incoming` bytes may still be written when the task's files hold `captured`
/// bytes and the cap is `cap` bytes (0: no cap). Output that ends exactly at the cap is not
/// cut; the first byte beyond it is.
pub fn admit(captured: u64, cap: u64, incoming: usize) -> Admit {
    if cap == 0 || captured.saturating_add(incoming as u64) <= cap {
        return Admit::All;
    }
    Admit::CutAfter(cap.saturating_sub(captured).min(incoming as u64) as usize)
}

/// The line that ends a capture cut by the per-task cap of `cap` bytes.
pub fn cut_marker(cap: u64) -> String {
    format!(
        "[kohakuriver: log cut at {} ({cap} bytes) by the agent's --max-log-bytes-per-task]\n",
        kohakuriver_api::quantity::format_bytes(cap)
    )
}

/// The status message of a capture cut by the per-task cap of `cap` bytes.
pub fn cut_message(cap: u64) -> String {
    format!(
        "the task's output reached this node's limit of {} ({cap} bytes) per task; later output was drained and dropped, and the log ends with a marker line; raise the agent's --max-log-bytes-per-task (0: no limit)",
        kohakuriver_api::quantity::format_bytes(cap)
    )
}

/// The message a task fails with when its output could not be written.
pub fn capture_failure_message(err: &CaptureError) -> String {
    match err {
        CaptureError::Io { path, source } if source.kind() == std::io::ErrorKind::StorageFull => {
            format!(
                "no space left on device: cannot write the task's log {}; free space on the node's data disk (the agent's --data-dir), or lower --max-log-bytes-per-task or --log-retention",
                path.display()
            )
        }
        other => format!("cannot capture the task's output: {other}"),
    }
}

/// Returns the part of `data` left after skipping `*skip` more bytes, and lowers `*skip` by
/// what was skipped. This is what makes a replayed log append exactly the missing bytes.
pub fn skip_prefix<'a>(skip: &mut u64, data: &'a [u8]) -> &'a [u8] {
    let n = (*skip).min(data.len() as u64) as usize;
    *skip -= n as u64;
    &data[n..]
}

/// The byte offset where the last `lines` lines of the file begin (a final line without a
/// newline counts as a line). Reads backwards in blocks, so a huge file costs only its tail.
pub fn tail_offset(file: &mut std::fs::File, lines: u64) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    const BLOCK: u64 = 64 * 1024;
    let mut pos = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut first = true;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let size = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..size])?;
        for i in (0..size).rev() {
            if buf[i] == b'\n' {
                // The file's own final newline ends the last line; it does not start one.
                if first && start + i as u64 == len - 1 {
                    continue;
                }
                newlines += 1;
                if newlines == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        first = false;
        pos = start;
    }
    Ok(0)
}

/// True for a server-made uid (a UUID: 8-4-4-4-12 hex digits).
pub(crate) fn is_uid_shaped(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An upper bound of the bytes one json-file log entry holding `bytes` takes on the engine's
/// disk: `{"log":"…","stream":"stdout","time":"…"}` plus a newline, where Go's encoder turns
/// a byte into at most six (`\u00XX`, `\ufffd`).
pub fn json_entry_upper(bytes: &[u8]) -> u64 {
    // `{"log":"` 8, `","stream":"` 12, `stdout` 6, `","time":"` 10, a time of at most 35,
    // `"}` 2, newline 1: 74; rounded up.
    const ENVELOPE: u64 = 80;
    let escaped: u64 = bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            b'<' | b'>' | b'&' => 6,
            0x20..=0x7f => 1,
            _ => 6,
        })
        .sum();
    ENVELOPE + escaped
}

/// Whether a capture provably holds all of a container's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// Every byte the container wrote is in the files.
    Complete,
    /// Output may be missing: the engine may have rotated it away while the agent was not
    /// attached. `lost_at_least` is a lower bound of the bytes missing (0: unknown).
    Incomplete {
        /// Bytes certainly missing (0 when the amount cannot be told).
        lost_at_least: u64,
        /// Why, for the task's status.
        why: String,
    },
}

impl Completeness {
    /// The status message of an incomplete capture.
    pub fn message(&self) -> Option<String> {
        match self {
            Completeness::Complete => None,
            Completeness::Incomplete { lost_at_least, why } => Some(if *lost_at_least > 0 {
                format!("at least {lost_at_least} bytes of output are missing: {why}")
            } else {
                format!("an unknown number of bytes of output may be missing: {why}")
            }),
        }
    }
}

/// Decides whether a capture that had to replay the engine's log (the agent was not attached
/// for part of the run) holds everything, from the final clean replay of the exited
/// container: `kept_json_upper` bounds the json bytes the engine still holds (the sum of
/// [`json_entry_upper`] over its entries), `unmatched` counts bytes the files held beyond
/// what the replay delivered, `limits` are the container's log limits (None when unknown).
///
/// The engine rotates a file once it reaches `max_size`, so once it has dropped a file it
/// holds at least `(max_file - 1) × max_size`; a smaller log has lost nothing.
pub fn judge_replay(
    kept_json_upper: u64,
    unmatched: u64,
    limits: Option<LogLimits>,
) -> Completeness {
    let Some(limits) = limits else {
        return Completeness::Incomplete {
            lost_at_least: 0,
            why: "the container has no log limits set by the agent, so whether the engine rotated output away while the agent was not attached cannot be told".into(),
        };
    };
    if unmatched > 0 {
        return Completeness::Incomplete {
            lost_at_least: 0,
            why: format!(
                "the engine's log holds {unmatched} bytes less than were already captured: it rotated output away while the agent was not attached; raise --log-max-size or --log-max-file"
            ),
        };
    }
    match limits.proven_retention() {
        Some(retention) if kept_json_upper < retention => Completeness::Complete,
        Some(retention) => Completeness::Incomplete {
            lost_at_least: 0,
            why: format!(
                "the engine's log may have reached its limit ({} × {} bytes; up to {kept_json_upper} bytes kept, {retention} provably whole) while the agent was not attached, so older output may have been rotated away; raise --log-max-size or --log-max-file",
                limits.max_file, limits.max_size
            ),
        },
        None => Completeness::Incomplete {
            lost_at_least: 0,
            why: "the container keeps a single log file, which the engine truncates in place, so a replay cannot prove it holds everything; use --log-max-file 2 or more".into(),
        },
    }
}

/// Running captures, so each container is followed once and others can wait for the end.
#[derive(Clone)]
pub struct Captures {
    runtime: Arc<dyn ContainerRuntime>,
    store: LogStore,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The per-task cap of captured bytes (0: none).
    max_bytes: u64,
    // A std Mutex: held only for map lookups, never across an await.
    inner: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    /// Containers whose capture failed (a log write failed), with the message the task
    /// fails with. In memory: on a full disk nothing can be written to say so.
    failed: Arc<Mutex<HashMap<String, String>>>,
}

/// Where a capture task starts.
enum Source {
    /// An attach made before the container started.
    Attached(BoxStream<'static, Result<LogChunk, RuntimeError>>),
    /// The engine's json-file log.
    Replay,
}

impl Captures {
    /// Captures into `store` from `runtime`, until `shutdown`, each task's output capped at
    /// `max_bytes` (0: no cap); the capture tasks are spawned on `tracker`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        store: LogStore,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        max_bytes: u64,
    ) -> Captures {
        Captures {
            runtime,
            store,
            shutdown,
            tracker,
            max_bytes,
            inner: Arc::default(),
            failed: Arc::default(),
        }
    }

    /// Why the capture of container `container_id` failed, if it did.
    pub fn failure(&self, container_id: &str) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container_id)
            .cloned()
    }

    /// Forgets the failure of a container that is gone.
    pub fn forget_failure(&self, container_id: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container_id);
    }

    /// Attaches to the streams of created container `container_id` (task `task`, uid
    /// `uid`) and captures them; call it before starting the container, so no byte is
    /// missed. Does nothing when a capture of this container runs already. `on_final` is
    /// called once the capture is final.
    pub async fn attach(
        &self,
        task: &str,
        uid: &str,
        container_id: &str,
        on_final: impl FnOnce() + Send + 'static,
    ) -> Result<(), CaptureError> {
        if self.running(container_id).is_some() {
            return Ok(());
        }
        self.store.begin(task, uid, container_id)?;
        let stream = self.runtime.attach(container_id).await?;
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(container_id) {
            return Ok(());
        }
        let (tx, rx) = watch::channel(false);
        map.insert(container_id.to_string(), rx);
        drop(map);
        self.spawn(
            task,
            uid,
            container_id,
            Source::Attached(stream),
            tx,
            on_final,
        );
        Ok(())
    }

    fn running(&self, container_id: &str) -> Option<watch::Receiver<bool>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container_id)
            .cloned()
    }

    /// Makes sure the output of container `container_id` (task `task`, uid `uid`) is being
    /// captured, starting a follower of the engine's log if none runs and the capture is
    /// not final yet. Returns a receiver that turns true once the capture is final (or has
    /// failed: see [`Captures::failure`]). `on_final` is called once then.
    pub fn ensure(
        &self,
        task: &str,
        uid: &str,
        container_id: &str,
        on_final: impl FnOnce() + Send + 'static,
    ) -> watch::Receiver<bool> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(container_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        if self.store.final_container(task, uid).as_deref() == Some(container_id)
            || self.failure(container_id).is_some()
        {
            let _ = tx.send(true);
            return rx;
        }
        map.insert(container_id.to_string(), rx.clone());
        drop(map);
        self.spawn(task, uid, container_id, Source::Replay, tx, on_final);
        rx
    }

    fn spawn(
        &self,
        task: &str,
        uid: &str,
        container_id: &str,
        source: Source,
        tx: watch::Sender<bool>,
        on_final: impl FnOnce() + Send + 'static,
    ) {
        let (task, uid, id) = (task.to_string(), uid.to_string(), container_id.to_string());
        let captures = self.clone();
        self.tracker.spawn(async move {
            let result = capture(&captures, &task, &uid, &id, source).await;
            captures
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            match result {
                Ok(true) => {
                    let _ = tx.send(true);
                    on_final();
                }
                Ok(false) => {}
                Err(err) => {
                    // The task fails with this message (the reconciler stops its container),
                    // and the agent and every other task go on.
                    tracing::warn!(task = %task, container = %id, error = %err, "log capture failed");
                    captures
                        .failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), capture_failure_message(&err));
                    let _ = tx.send(true);
                    on_final();
                }
            }
        });
    }
}

/// Captures container `container_id` until it has exited and all its output is in the
/// files, appending to the task's files. Returns true when the capture is final, false
/// when cancelled.
///
/// An attached stream that ends cleanly is the whole output. Anything else falls back to
/// the engine's log. Docker's follow stream is not a complete record: the engine (seen with
/// 20.10 and the json-file driver) ends it as soon as the container's logger closes, without
/// sending what the reader had not reached yet. The follow stream is therefore only for
/// liveness. Once the container has exited, whole non-follow replays are made until one ends
/// cleanly and brings nothing new: only then do the files hold everything Docker holds, and
/// [`judge_replay`] decides whether that is everything. A replay that breaks never counts.
async fn capture(
    captures: &Captures,
    task: &str,
    uid: &str,
    container_id: &str,
    source: Source,
) -> Result<bool, CaptureError> {
    let (runtime, store, shutdown) = (
        captures.runtime.as_ref(),
        &captures.store,
        &captures.shutdown,
    );
    let max_bytes = captures.max_bytes;
    let record = store.begin(task, uid, container_id)?;
    let target = Target {
        store,
        task,
        uid,
        record: &record,
        max_bytes,
    };
    let completeness = match source {
        Source::Attached(stream) => {
            match copy(&target, stream, shutdown).await? {
                None => return Ok(false),
                Some(pass) if pass.interrupted.is_none() => {
                    // The output is closed: the process has exited or is about to; wait for
                    // it so the exit is seen as soon as the capture is final.
                    wait_not_alive(runtime, container_id, shutdown).await?;
                    Some(Completeness::Complete)
                }
                Some(pass) => {
                    tracing::warn!(
                        task,
                        container = container_id,
                        error = ?pass.interrupted,
                        "attached stream broke; replaying the engine's log"
                    );
                    None
                }
            }
        }
        Source::Replay => None,
    };
    let completeness = match completeness {
        Some(c) => c,
        None => match replay_until_complete(runtime, &target, container_id, shutdown).await? {
            Some(c) => c,
            None => return Ok(false),
        },
    };
    let dir = store.dir(task, uid);
    if let Some(message) = completeness.message() {
        tracing::warn!(
            task,
            container = container_id,
            message,
            "captured output is incomplete"
        );
        let path = dir.join("incomplete");
        std::fs::write(&path, message).map_err(io_err(&path))?;
    }
    let final_path = dir.join("final");
    std::fs::write(&final_path, container_id).map_err(io_err(&final_path))?;
    Ok(true)
}

/// Waits until the container is no longer running (or is gone).
async fn wait_not_alive(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    loop {
        match runtime.inspect(container_id).await? {
            Some(state) if state.status.is_alive() => {}
            _ => return Ok(()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The engine-log half of [`capture`]: follows the log while the container runs, then
/// replays it until a clean replay adds nothing, and judges the result. None when cancelled.
async fn replay_until_complete(
    runtime: &dyn ContainerRuntime,
    target: &Target<'_>,
    container_id: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Completeness>, CaptureError> {
    let task = target.task;
    let mut follow = true;
    let mut failures = 0u32;
    loop {
        let stream = runtime.logs(container_id, follow);
        let Some(pass) = copy(target, stream, shutdown).await? else {
            return Ok(None);
        };
        if let Some(err) = &pass.interrupted {
            tracing::debug!(task, follow, error = %err, "log stream interrupted");
        }
        let state = runtime.inspect(container_id).await?;
        let pause = match state {
            Some(state)
                if state.status.is_alive()
                    || state.status == crate::runtime::ContainerStatus::Created =>
            {
                // Still running (the stream broke, or the engine ended it early): follow
                // again; the replay skips what the files already hold.
                follow = true;
                Duration::from_millis(200)
            }
            Some(state) => {
                if !follow && pass.complete() {
                    // A clean replay of the exited container's whole log that had nothing
                    // to add: the files hold everything Docker holds.
                    return Ok(Some(judge_replay(
                        pass.json_upper,
                        pass.unmatched,
                        LogLimits::from_labels(&state.labels),
                    )));
                }
                // Exited: replay without follow (again), until a replay adds nothing.
                let interrupted = pass.interrupted.is_some();
                follow = false;
                if interrupted {
                    failures += 1;
                    Duration::from_millis(200 * u64::from(failures.min(25)))
                } else {
                    failures = 0;
                    Duration::ZERO
                }
            }
            None => {
                // The container is gone: nothing more can ever be read, and nothing proves
                // the files hold everything.
                tracing::debug!(
                    task,
                    container = container_id,
                    "container gone while capturing"
                );
                return Ok(Some(Completeness::Incomplete {
                    lost_at_least: 0,
                    why: "the container was removed before its output could be read in full".into(),
                }));
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// What one pass over a stream of a container's output did.
struct Pass {
    /// Bytes appended to the files.
    appended: u64,
    /// Bytes the files held that the stream did not reach (0 when it covered them).
    unmatched: u64,
    /// Upper bound of the json bytes of the stream's entries (see [`json_entry_upper`]).
    json_upper: u64,
    /// Why the stream ended early, if it broke.
    interrupted: Option<RuntimeError>,
}

impl Pass {
    /// True when the replay ran to its clean end and brought nothing new.
    fn complete(&self) -> bool {
        self.interrupted.is_none() && self.appended == 0
    }
}

/// Where one capture writes: a task's files, and the cap on them.
struct Target<'a> {
    store: &'a LogStore,
    task: &'a str,
    uid: &'a str,
    record: &'a CaptureRecord,
    max_bytes: u64,
}

/// Copies a stream of the container's output from its start into the files, skipping the
/// bytes each file already holds for this container and appending the rest. `None` when
/// cancelled. Writes are buffered and flushed whenever the stream has nothing ready, so
/// readers see output as soon as the container pauses, and a fast writer costs few syscalls.
///
/// Once the task's files reach the cap (see [`admit`]) the capture is cut: a marker line
/// ends the file the cut happened in, a `truncated` note is written, and the rest of the
/// stream is read and dropped, so the container never blocks on a full pipe.
async fn copy(
    target: &Target<'_>,
    mut stream: BoxStream<'static, Result<LogChunk, RuntimeError>>,
    shutdown: &CancellationToken,
) -> Result<Option<Pass>, CaptureError> {
    let Target {
        store,
        task,
        uid,
        record,
        max_bytes,
    } = *target;
    const BUFFER: usize = 1 << 20;
    let out_path = store.path(task, uid, LogStream::Stdout);
    let err_path = store.path(task, uid, LogStream::Stderr);
    let skip_of = |path: &Path, base: u64| {
        std::fs::metadata(path)
            .map(|m| m.len().saturating_sub(base))
            .unwrap_or(0)
    };
    let mut skip_out = skip_of(&out_path, record.stdout_base);
    let mut skip_err = skip_of(&err_path, record.stderr_base);
    let open = |path: PathBuf| async move {
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map(|f| tokio::io::BufWriter::with_capacity(BUFFER, f))
            .map_err(io_err(&path))
    };
    let mut out = open(out_path.clone()).await?;
    let mut err = open(err_path.clone()).await?;
    let len_of = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut captured = len_of(&out_path) + len_of(&err_path);
    let mut cut = store.truncated(task, uid).is_some();
    // The last byte written to each file, so the marker starts on a line of its own.
    let mut ends_line = [true, true];
    let mut appended = 0u64;
    let mut json_upper = 0u64;
    let mut interrupted = None;
    loop {
        let item = match stream.next().now_or_never() {
            Some(item) => item,
            None => {
                out.flush().await.map_err(io_err(&out_path))?;
                err.flush().await.map_err(io_err(&err_path))?;
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    item = stream.next() => item,
                }
            }
        };
        let chunk = match item {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                interrupted = Some(e);
                break;
            }
        };
        json_upper += json_entry_upper(&chunk.bytes);
        let (file, skip, path, ends) = match chunk.stream {
            LogStream::Stdout => (&mut out, &mut skip_out, &out_path, &mut ends_line[0]),
            LogStream::Stderr => (&mut err, &mut skip_err, &err_path, &mut ends_line[1]),
        };
        let rest = skip_prefix(skip, &chunk.bytes);
        if rest.is_empty() || cut {
            continue;
        }
        let admitted = match admit(captured, max_bytes, rest.len()) {
            Admit::All => rest,
            Admit::CutAfter(n) => &rest[..n],
        };
        if !admitted.is_empty() {
            file.write_all(admitted).await.map_err(io_err(path))?;
            store.captured.inc_by(admitted.len() as u64);
            appended += admitted.len() as u64;
            captured += admitted.len() as u64;
            *ends = admitted.ends_with(b"\n");
        }
        if admitted.len() < rest.len() {
            cut = true;
            let marker = cut_marker(max_bytes);
            let marker = if *ends { marker } else { format!("\n{marker}") };
            file.write_all(marker.as_bytes())
                .await
                .map_err(io_err(path))?;
            appended += marker.len() as u64;
            let note = store.dir(task, uid).join("truncated");
            std::fs::write(&note, cut_message(max_bytes)).map_err(io_err(&note))?;
            tracing::warn!(
                task,
                cap = max_bytes,
                "the task's output reached --max-log-bytes-per-task; dropping the rest"
            );
        }
    }
    for (file, path) in [(&mut out, &out_path), (&mut err, &err_path)] {
        file.flush().await.map_err(io_err(path))?;
        file.get_ref().sync_all().await.map_err(io_err(path))?;
    }
    Ok(Some(Pass {
        appended,
        // A cut capture holds a marker the container never wrote, and drops the rest:
        // comparing it with the engine's log proves nothing either way.
        unmatched: if cut { 0 } else { skip_out + skip_err },
        json_upper,
        interrupted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn skip_prefix_spans_chunks() {
        let mut skip = 5;
        assert_eq!(skip_prefix(&mut skip, b"abc"), b"");
        assert_eq!(skip, 2);
        assert_eq!(skip_prefix(&mut skip, b"defgh"), b"fgh");
        assert_eq!(skip, 0);
        assert_eq!(skip_prefix(&mut skip, b"ij"), b"ij");
    }

    #[test]
    fn replay_after_partial_write_is_byte_exact() {
        // The container wrote these chunks; the agent had written 7 bytes before dying.
        let chunks: [&[u8]; 3] = [b"hello\n", b"wor", b"ld\n"];
        let mut file = b"hello\nw".to_vec();
        let mut skip = file.len() as u64;
        for c in chunks {
            file.extend_from_slice(skip_prefix(&mut skip, c));
        }
        assert_eq!(file, b"hello\nworld\n");
    }

    fn file_with(content: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn tail_offsets() {
        let mut f = file_with(b"a\nb\nc\n");
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 4);
        assert_eq!(tail_offset(&mut f, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut f, 3).unwrap(), 0);
        assert_eq!(tail_offset(&mut f, 10).unwrap(), 0);
        assert_eq!(tail_offset(&mut f, 0).unwrap(), 6);
        let mut f = file_with(b"a\nb\nunfinished");
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 4);
        let mut f = file_with(b"");
        assert_eq!(tail_offset(&mut f, 3).unwrap(), 0);
    }

    #[test]
    fn tail_offset_across_blocks() {
        let mut content = Vec::new();
        for i in 0..20000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let mut f = file_with(&content);
        let off = tail_offset(&mut f, 3).unwrap() as usize;
        assert_eq!(&content[off..], b"line 19997\nline 19998\nline 19999\n");
    }

    #[test]
    fn new_container_appends_after_earlier_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        store.prepare("t", "u").unwrap();
        std::fs::write(store.path("t", "u", LogStream::Stdout), b"first\n").unwrap();
        let r = store.begin("t", "u", "c2").unwrap();
        assert_eq!(r.stdout_base, 6);
        assert_eq!(r.stderr_base, 0);
        // Re-attaching to the same container keeps the base.
        std::fs::write(store.path("t", "u", LogStream::Stdout), b"first\nsecond\n").unwrap();
        assert_eq!(store.begin("t", "u", "c2").unwrap().stdout_base, 6);
        assert!(!store.is_final("t", "u"));
        store.mark_final("t", "u").unwrap();
        assert!(store.is_final("t", "u"));
        assert_eq!(store.find("t"), vec![store.dir("t", "u")]);
        assert!(store.find("other").is_empty());
    }

    #[test]
    fn json_entry_bounds() {
        // bytes -> upper bound of its json-file entry
        let cases: [(&[u8], u64); 6] = [
            (b"", 80),
            (b"hello\n", 80 + 5 + 2),
            (b"a\"b\\c", 80 + 1 + 2 + 1 + 2 + 1),
            (b"<&>", 80 + 18),
            (b"\x01\x7f", 80 + 6 + 1),
            ("é".as_bytes(), 80 + 12),
        ];
        for (bytes, want) in cases {
            assert_eq!(json_entry_upper(bytes), want, "{bytes:?}");
        }
        // A real entry is smaller than the bound.
        let real =
            br#"{"log":"hello\n","stream":"stdout","time":"2026-12-02T06:00:00.123456789Z"}"#;
        assert!((real.len() as u64 + 1) <= json_entry_upper(b"hello\n"));
    }

    #[test]
    fn replays_are_judged() {
        let limits = |max_size, max_file| Some(LogLimits { max_size, max_file });
        // (kept json upper bound, unmatched, limits) -> complete?
        let cases = [
            (0, 0, limits(100, 2), true),
            (99, 0, limits(100, 2), true),
            (100, 0, limits(100, 2), false),
            (199, 0, limits(100, 3), true),
            (200, 0, limits(100, 3), false),
            (10, 5, limits(100, 3), false),
            (10, 0, limits(100, 1), false),
            (10, 0, None, false),
        ];
        for (kept, unmatched, limits, complete) in cases {
            let verdict = judge_replay(kept, unmatched, limits);
            assert_eq!(
                verdict == Completeness::Complete,
                complete,
                "{kept} {unmatched} {limits:?}: {verdict:?}"
            );
            assert_eq!(verdict.message().is_some(), !complete);
        }
        let message = judge_replay(100, 0, limits(100, 2)).message().unwrap();
        assert!(message.contains("may be missing"), "{message}");
        assert!(message.contains("--log-max-size"), "{message}");
        let certain = Completeness::Incomplete {
            lost_at_least: 7,
            why: "x".into(),
        };
        assert_eq!(
            certain.message().unwrap(),
            "at least 7 bytes of output are missing: x"
        );
    }

    #[test]
    fn the_cap_admits_up_to_its_size() {
        // (captured, cap, incoming) -> admitted
        let cases = [
            (0, 0, 100, Admit::All),
            (5, 10, 5, Admit::All),
            (5, 10, 6, Admit::CutAfter(5)),
            (10, 10, 1, Admit::CutAfter(0)),
            (12, 10, 3, Admit::CutAfter(0)),
            (u64::MAX, 10, 1, Admit::CutAfter(0)),
        ];
        for (captured, cap, incoming, want) in cases {
            assert_eq!(
                admit(captured, cap, incoming),
                want,
                "{captured} {cap} {incoming}"
            );
        }
        assert_eq!(
            cut_marker(1 << 30),
            "[kohakuriver: log cut at 1.1G (1073741824 bytes) by the agent's --max-log-bytes-per-task]\n"
        );
        assert!(cut_message(10).contains("--max-log-bytes-per-task"));
    }

    fn chunks(items: &[(LogStream, &str)]) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        let items: Vec<_> = items
            .iter()
            .map(|(stream, text)| {
                Ok(LogChunk {
                    stream: *stream,
                    bytes: bytes::Bytes::from(text.to_string()),
                })
            })
            .collect();
        futures::stream::iter(items).boxed()
    }

    async fn copy_into(
        store: &LogStore,
        max_bytes: u64,
        items: &[(LogStream, &str)],
    ) -> Result<Option<Pass>, CaptureError> {
        let record = store.begin("t", "u", "c").unwrap();
        let target = Target {
            store,
            task: "t",
            uid: "u",
            record: &record,
            max_bytes,
        };
        copy(&target, chunks(items), &CancellationToken::new()).await
    }

    #[tokio::test]
    async fn a_capture_is_cut_at_the_cap_with_a_marker_and_drained() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        let items = [
            (LogStream::Stdout, "hello\n"),
            (LogStream::Stderr, "err\n"),
            (LogStream::Stdout, "world\n"),
            (LogStream::Stdout, "more\n"),
        ];
        let pass = copy_into(&store, 12, &items).await.unwrap().unwrap();
        assert!(pass.interrupted.is_none());
        let read = |s| std::fs::read_to_string(store.path("t", "u", s)).unwrap();
        assert_eq!(
            read(LogStream::Stdout),
            format!("hello\nwo\n{}", cut_marker(12))
        );
        assert_eq!(read(LogStream::Stderr), "err\n");
        assert_eq!(store.truncated("t", "u").unwrap(), cut_message(12));
        // A replay of the same output after a restart adds nothing to a cut capture.
        let again = copy_into(&store, 12, &items).await.unwrap().unwrap();
        assert!(again.complete());
        assert_eq!(again.unmatched, 0);
        // Without a cap, nothing is cut.
        let other = tempfile::tempdir().unwrap();
        let store = LogStore::new(other.path());
        copy_into(&store, 0, &items).await.unwrap().unwrap();
        assert!(store.truncated("t", "u").is_none());
        assert_eq!(
            std::fs::read_to_string(store.path("t", "u", LogStream::Stdout)).unwrap(),
            "hello\nworld\nmore\n"
        );
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_capture_with_a_clear_message() {
        // /dev/full answers every write with ENOSPC: the capture's own writer meets a full
        // disk without filling one.
        if !Path::new("/dev/full").exists() {
            panic!("this test needs /dev/full to stand for a full disk");
        }
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        store.prepare("t", "u").unwrap();
        let stdout = store.path("t", "u", LogStream::Stdout);
        std::fs::remove_file(&stdout).unwrap();
        std::os::unix::fs::symlink("/dev/full", &stdout).unwrap();
        let err = copy_into(&store, 0, &[(LogStream::Stdout, "hello\n")])
            .await
            .err()
            .expect("the write fails");
        let message = capture_failure_message(&err);
        assert!(message.starts_with("no space left on device"), "{message}");
        assert!(message.contains("--data-dir"), "{message}");
    }

    #[test]
    fn deleted_tasks_lose_only_their_own_log_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        let (old, new) = (
            "11111111-2222-3333-4444-555555555555",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        );
        store.prepare("a", old).unwrap();
        store.prepare("a", new).unwrap();
        // Task `a-b`'s directory also starts with `a-`.
        store.prepare("a-b", old).unwrap();
        store.remove_except("a", Some(new)).unwrap();
        assert!(!store.dir("a", old).exists());
        assert!(store.dir("a", new).exists());
        assert!(store.dir("a-b", old).exists());
        store.remove_except("a", None).unwrap();
        assert!(!store.dir("a", new).exists());
        assert!(store.dir("a-b", old).exists());
        assert!(is_uid_shaped(old));
        assert!(!is_uid_shaped(&format!("b-{old}")));
        assert!(!is_uid_shaped("u"));
    }
}
