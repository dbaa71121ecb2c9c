//! Capturing a container's stdout and stderr into files that outlive it.
//!
//! Each task has a directory `<data-dir>/logs/<task>-<uid>/` with `stdout`, `stderr`, a small
//! `capture.json` and, once nothing more can come, a `final` marker. Capture follows Docker's
//! log stream (the json-file driver keeps the whole log while the container exists). On every
//! (re)attach it replays the log from the start and skips as many bytes of each stream as
//! the files already hold for this container, then appends: an agent restart neither loses
//! nor duplicates a byte. `capture.json` records how long each file was before this
//! container's output began, so a retried task (a new container) appends after the earlier
//! attempt's output.
//!
//! Architecture Invariant: a task's container is removed only after its capture is final.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::runtime::{ContainerRuntime, LogStream, RuntimeError};

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
        LogStore { root: root.into() }
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

/// Running captures, so each container is followed once and others can wait for the end.
#[derive(Clone)]
pub struct Captures {
    runtime: Arc<dyn ContainerRuntime>,
    store: LogStore,
    shutdown: CancellationToken,
    // A std Mutex: held only for map lookups, never across an await.
    inner: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

impl Captures {
    /// Captures into `store` from `runtime`, until `shutdown`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        store: LogStore,
        shutdown: CancellationToken,
    ) -> Captures {
        Captures {
            runtime,
            store,
            shutdown,
            inner: Arc::default(),
        }
    }

    /// Makes sure the output of container `container_id` (task `task`, uid `uid`) is being
    /// captured, starting a follower if none runs and the capture is not final yet. Returns
    /// a receiver that turns true once the capture is final. `on_final` is called once then.
    pub fn ensure(
        &self,
        task: &str,
        uid: &str,
        container_id: &str,
        on_final: impl FnOnce() + Send + 'static,
    ) -> watch::Receiver<bool> {
        let store = &self.store;
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(container_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        if store.final_container(task, uid).as_deref() == Some(container_id) {
            let _ = tx.send(true);
            return rx;
        }
        map.insert(container_id.to_string(), rx.clone());
        drop(map);
        let (store, task, uid, id) = (
            store.clone(),
            task.to_string(),
            uid.to_string(),
            container_id.to_string(),
        );
        let captures = self.clone();
        tokio::spawn(async move {
            let result = capture(
                captures.runtime.as_ref(),
                &store,
                &task,
                &uid,
                &id,
                &captures.shutdown,
            )
            .await;
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
                    tracing::warn!(task = %task, container = %id, error = %err, "log capture failed")
                }
            }
        });
        rx
    }
}

/// Follows container `container_id` until it has exited and its log is drained, appending
/// to the task's files. Returns true when the capture is final, false when cancelled.
///
/// Docker's follow stream is not a complete record: the engine (seen with 20.10 and the
/// json-file driver) ends it as soon as the container's logger closes, without sending
/// what the reader had not reached yet, so a fast writer's stream ends cleanly hundreds of
/// kilobytes short. The follow stream is therefore only for liveness. Once the container
/// has exited, whole non-follow replays are made until one ends cleanly and brings nothing
/// new: only then do the files hold everything Docker holds, and only then is the capture
/// final. A replay that breaks (an error mid-stream) never counts.
pub async fn capture(
    runtime: &dyn ContainerRuntime,
    store: &LogStore,
    task: &str,
    uid: &str,
    container_id: &str,
    shutdown: &CancellationToken,
) -> Result<bool, CaptureError> {
    let record = store.begin(task, uid, container_id)?;
    let mut follow = true;
    let mut failures = 0u32;
    loop {
        let pass = match replay(
            runtime,
            store,
            task,
            uid,
            container_id,
            &record,
            follow,
            shutdown,
        )
        .await?
        {
            Some(pass) => pass,
            None => return Ok(false),
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
            Some(_) => {
                if !follow && pass.complete() {
                    // A clean replay of the exited container's whole log that had nothing
                    // to add: the files hold everything Docker holds.
                    if pass.unmatched > 0 {
                        tracing::warn!(
                            task,
                            container = container_id,
                            bytes = pass.unmatched,
                            "the engine holds less output than was captured"
                        );
                    }
                    break;
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
                // The container is gone: nothing more can ever be read.
                tracing::debug!(
                    task,
                    container = container_id,
                    "container gone while capturing"
                );
                break;
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    let final_path = store.dir(task, uid).join("final");
    std::fs::write(&final_path, container_id).map_err(io_err(&final_path))?;
    Ok(true)
}

/// What one replay of a container's log did.
struct Pass {
    /// Bytes appended to the files.
    appended: u64,
    /// Bytes the files held that the replay did not reach (0 when it covered them).
    unmatched: u64,
    /// Why the stream ended early, if it broke.
    interrupted: Option<RuntimeError>,
}

impl Pass {
    /// True when the replay ran to its clean end and brought nothing new.
    fn complete(&self) -> bool {
        self.interrupted.is_none() && self.appended == 0
    }
}

/// Replays the container's log from its start (following it when `follow`), skipping the
/// bytes each file already holds for this container and appending the rest. `None` when
/// cancelled.
#[allow(clippy::too_many_arguments)]
async fn replay(
    runtime: &dyn ContainerRuntime,
    store: &LogStore,
    task: &str,
    uid: &str,
    container_id: &str,
    record: &CaptureRecord,
    follow: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Pass>, CaptureError> {
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
            .map_err(io_err(&path))
    };
    let mut out = open(out_path.clone()).await?;
    let mut err = open(err_path.clone()).await?;
    let mut stream = runtime.logs(container_id, follow);
    let mut appended = 0u64;
    let mut interrupted = None;
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            item = stream.next() => item,
        };
        let chunk = match item {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                interrupted = Some(e);
                break;
            }
        };
        let (file, skip, path) = match chunk.stream {
            LogStream::Stdout => (&mut out, &mut skip_out, &out_path),
            LogStream::Stderr => (&mut err, &mut skip_err, &err_path),
        };
        let rest = skip_prefix(skip, &chunk.bytes);
        if !rest.is_empty() {
            file.write_all(rest).await.map_err(io_err(path))?;
            file.flush().await.map_err(io_err(path))?;
            appended += rest.len() as u64;
        }
    }
    out.sync_all().await.map_err(io_err(&out_path))?;
    err.sync_all().await.map_err(io_err(&err_path))?;
    Ok(Some(Pass {
        appended,
        unmatched: skip_out + skip_err,
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
}
