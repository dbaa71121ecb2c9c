//! Keeping captured output on the node's disk only as long as it is wanted.
//!
//! A task's capture directory (`<data-dir>/logs/<task>-<uid>`) goes when the agent sees the
//! task deleted (the reconciler removes it at once); this periodic sweep catches what that
//! misses (a task deleted while the agent was down) and, with `agent --log-retention`,
//! expires the output of tasks that finished longer ago than that although the task object
//! is kept. An expired directory keeps only its `final` marker and an `expired` note, so a
//! read of that log answers 410 saying why, instead of a puzzling 404.
//!
//! [`sweep`] decides, from each directory's task as the agent last saw it and `now`; the
//! async `run` lists, decides and acts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kohakuriver_api::{Task, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::log_capture::{EXPIRED, LogStore, read_expired};

/// One task's capture directory, with what the agent knows of its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureDir {
    /// The directory.
    pub path: PathBuf,
    /// The task's name.
    pub task: String,
    /// What became of the task this directory belongs to (same name and uid).
    pub owner: Owner,
    /// True once nothing more will be written (the `final` marker).
    pub is_final: bool,
    /// True when it was expired already.
    pub expired: bool,
}

/// The task a capture directory belongs to, as the agent last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// No task of this name and uid is bound to this node any more (deleted, or moved).
    Gone,
    /// The task has not finished.
    Unfinished,
    /// The task finished at this time.
    FinishedAt(Timestamp),
}

/// What to do with one directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Remove it entirely: its task is gone.
    Remove(PathBuf),
    /// Drop its output and keep this note in its place: its task finished long enough ago.
    Expire(PathBuf, String),
}

/// Decides which capture directories go (pure): those whose task is gone, and with a
/// `retention`, the output of tasks that finished at least that long before `now` (once
/// their capture is final). Without a retention, output stays until its task is deleted.
pub fn sweep(dirs: &[CaptureDir], now: Timestamp, retention: Option<Duration>) -> Vec<Sweep> {
    let mut out = Vec::new();
    for dir in dirs {
        match dir.owner {
            Owner::Gone => out.push(Sweep::Remove(dir.path.clone())),
            Owner::Unfinished => {}
            Owner::FinishedAt(finished) => {
                let Some(retention) = retention else { continue };
                let age = (now - finished).to_std().unwrap_or_default();
                if dir.is_final && !dir.expired && age >= retention {
                    out.push(Sweep::Expire(
                        dir.path.clone(),
                        expired_message(&dir.task, finished, retention),
                    ));
                }
            }
        }
    }
    out
}

/// The note (and the 410's message) of an expired capture.
pub fn expired_message(task: &str, finished: Timestamp, retention: Duration) -> String {
    format!(
        "the captured output of task {task} was removed by this node's agent: the task finished at {} and the agent keeps output {}s after a task finishes (--log-retention); the task object is kept. Raise --log-retention on the agent to keep output longer",
        finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        retention.as_secs()
    )
}

/// How often the sweep runs: a quarter of the retention, between 1 s and 1 min.
pub fn interval(retention: Option<Duration>) -> Duration {
    retention
        .map(|r| r / 4)
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Splits a directory name `<task>-<uid>` (uid a server-made UUID).
fn split_dir_name(name: &str) -> Option<(&str, &str)> {
    const UID: usize = 36;
    if name.len() <= UID + 1 || !name.is_char_boundary(name.len() - UID - 1) {
        return None;
    }
    let (task, rest) = name.split_at(name.len() - UID - 1);
    let uid = rest.strip_prefix('-')?;
    crate::log_capture::is_uid_shaped(uid).then_some((task, uid))
}

/// A capture directory as found on disk, before its task is looked up.
struct Found {
    path: PathBuf,
    task: String,
    uid: String,
    is_final: bool,
    expired: bool,
}

/// Lists the capture directories under `root`.
fn list(root: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some((task, uid)) = name.to_str().and_then(split_dir_name) else {
            continue;
        };
        let path = entry.path();
        found.push(Found {
            is_final: path.join("final").exists(),
            expired: read_expired(&path).is_some(),
            task: task.to_string(),
            uid: uid.to_string(),
            path,
        });
    }
    found
}

/// What became of task `task` with uid `uid`, by the tasks bound to this node.
fn owner(task: &str, uid: &str, tasks: &[Task]) -> Owner {
    match tasks
        .iter()
        .find(|t| t.metadata.name == task && t.metadata.uid.as_deref() == Some(uid))
    {
        None => Owner::Gone,
        Some(t) => match (t.status.phase.is_terminal(), t.status.finished_at) {
            (true, Some(at)) => Owner::FinishedAt(at),
            _ => Owner::Unfinished,
        },
    }
}

/// Carries out one decision.
fn apply(step: &Sweep) -> std::io::Result<()> {
    match step {
        Sweep::Remove(dir) => std::fs::remove_dir_all(dir),
        Sweep::Expire(dir, note) => {
            // The note first, so a reader never finds neither the output nor why.
            let tmp = dir.join("expired.tmp");
            std::fs::write(&tmp, note)?;
            std::fs::rename(&tmp, dir.join(EXPIRED))?;
            for file in [
                "stdout",
                "stderr",
                "capture.json",
                "incomplete",
                "truncated",
            ] {
                match std::fs::remove_file(dir.join(file)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// Sweeps the capture directories every [`interval`] until shutdown. `tasks` gives the
/// tasks bound to this node as last seen, or None until the agent has listed them once
/// (before that, every directory would look orphaned).
pub(crate) async fn run(
    logs: LogStore,
    tasks: impl Fn() -> Option<Vec<Task>> + Send + 'static,
    retention: Option<Duration>,
    shutdown: CancellationToken,
) {
    // The first sweep comes as soon as the tasks are listed, so output of tasks deleted
    // while the agent was down goes at start.
    let mut swept = false;
    loop {
        let pause = if swept {
            interval(retention)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let root = logs.root().to_path_buf();
        // The directories are listed before the tasks are read: a directory is made only
        // for a task already seen, so one listed here with no task is really orphaned.
        let listed = tokio::task::spawn_blocking(move || list(&root))
            .await
            .unwrap_or_default();
        let Some(tasks) = tasks() else { continue };
        swept = true;
        let dirs: Vec<CaptureDir> = listed
            .into_iter()
            .map(|f| CaptureDir {
                owner: owner(&f.task, &f.uid, &tasks),
                path: f.path,
                task: f.task,
                is_final: f.is_final,
                expired: f.expired,
            })
            .collect();
        let steps = sweep(&dirs, chrono::Utc::now(), retention);
        if steps.is_empty() {
            continue;
        }
        let done = tokio::task::spawn_blocking(move || {
            for step in &steps {
                if let Err(err) = apply(step) {
                    tracing::warn!(?step, error = %err, "cannot remove captured output");
                } else {
                    tracing::info!(?step, "removed captured output");
                }
            }
        });
        let _ = done.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn dir(name: &str, owner: Owner, is_final: bool, expired: bool) -> CaptureDir {
        CaptureDir {
            path: PathBuf::from(name),
            task: name.to_string(),
            owner,
            is_final,
            expired,
        }
    }

    /// Renders the decision for one directory: "keep", "remove" or "expire".
    fn check(d: CaptureDir, now: i64, retention: Option<u64>) -> &'static str {
        match sweep(&[d], at(now), retention.map(Duration::from_secs)).as_slice() {
            [] => "keep",
            [Sweep::Remove(_)] => "remove",
            [Sweep::Expire(_, _)] => "expire",
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sweeps_decide_per_directory() {
        let done = |t| Owner::FinishedAt(at(t));
        // (directory, now, retention) -> decision
        assert_eq!(check(dir("a", Owner::Gone, true, false), 0, None), "remove");
        assert_eq!(
            check(dir("a", Owner::Gone, false, false), 0, Some(5)),
            "remove"
        );
        assert_eq!(
            check(dir("a", Owner::Unfinished, true, false), 99, Some(5)),
            "keep"
        );
        assert_eq!(
            check(dir("a", done(100), true, false), 10_000, None),
            "keep"
        );
        assert_eq!(
            check(dir("a", done(100), true, false), 104, Some(5)),
            "keep"
        );
        assert_eq!(
            check(dir("a", done(100), true, false), 105, Some(5)),
            "expire"
        );
        assert_eq!(
            check(dir("a", done(100), false, false), 500, Some(5)),
            "keep"
        );
        assert_eq!(check(dir("a", done(100), true, true), 500, Some(5)), "keep");
        // A finish time in the future (clock skew) is not old.
        assert_eq!(
            check(dir("a", done(900), true, false), 100, Some(5)),
            "keep"
        );
    }

    #[test]
    fn expired_notes_say_why_and_which_flag() {
        let d = dir("job", Owner::FinishedAt(at(0)), true, false);
        let steps = sweep(&[d], at(7200), Some(Duration::from_secs(3600)));
        let [Sweep::Expire(_, note)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert!(note.contains("task job"), "{note}");
        assert!(note.contains("3600s"), "{note}");
        assert!(note.contains("--log-retention"), "{note}");
    }

    #[test]
    fn directory_names_split_into_task_and_uid() {
        let uid = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        assert_eq!(split_dir_name(&format!("a-b-{uid}")), Some(("a-b", uid)));
        assert_eq!(split_dir_name(uid), None);
        assert_eq!(split_dir_name("a-u1"), None);
        assert_eq!(split_dir_name(&format!("a-{uid}.tmp")), None);
    }

    #[test]
    fn intervals_follow_the_retention() {
        assert_eq!(interval(None), Duration::from_secs(60));
        assert_eq!(
            interval(Some(Duration::from_secs(2))),
            Duration::from_secs(1)
        );
        assert_eq!(
            interval(Some(Duration::from_secs(40))),
            Duration::from_secs(10)
        );
        assert_eq!(
            interval(Some(Duration::from_secs(86400))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn expiring_keeps_only_the_note_and_the_final_marker() {
        let root = tempfile::tempdir().unwrap();
        let store = LogStore::new(root.path());
        store.prepare("t", "u").unwrap();
        store.mark_final("t", "u").unwrap();
        let dir = store.dir("t", "u");
        apply(&Sweep::Expire(dir.clone(), "why".into())).unwrap();
        assert_eq!(store.expired("t", "u").as_deref(), Some("why"));
        assert!(
            !store
                .path("t", "u", crate::runtime::LogStream::Stdout)
                .exists()
        );
        assert!(store.is_final("t", "u"));
        apply(&Sweep::Remove(dir.clone())).unwrap();
        assert!(!dir.exists());
    }
}
