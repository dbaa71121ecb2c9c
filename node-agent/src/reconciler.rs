//! The async shell around [`crate::plan`]: watch the tasks bound to this node, and for each
//! one observe its container, plan, act and report, until there is nothing left to do.
//!
//! Each task name has its own worker, so a slow step (a 10 s kill grace, a large image load)
//! of one task never delays another, while the steps of one task never run concurrently.
//! Workers are woken by watch events, by the end of their container's log capture (which is
//! how an exit is noticed at once) and by a periodic requeue, the safety net for anything
//! missed. On start, the first full list also adopts this node's existing containers and
//! removes those whose task is gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kohakuriver_api::meta::set_condition;
use kohakuriver_api::outcome::{self, Exit, Outcome as Ending};
use kohakuriver_api::{CONTAINER_FINALIZER, ConditionStatus, Task, TaskPhase, labels};
use kohakuriver_client::{Api, ListParams, watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::container_config::{
    AgentSettings, ConfigError, ENVIRONMENTS_DIR, container_config, container_name,
};
use crate::image::ImageEnsurer;
use crate::log_capture::{Captures, LogStore};
use crate::mount_policy::{MountPolicy, check_mount, with_real_path};
use crate::plan::{Step, plan};
use crate::runtime::{ContainerRuntime, ContainerState, ContainerStatus, RuntimeError};
use crate::task_events::{self, TaskEvents};

/// How often the agent lists its tasks afresh instead of trusting the watch alone.
const RELIST_INTERVAL: Duration = Duration::from_secs(60);

/// Why one reconcile round failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The engine failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The server failed.
    #[error("api server: {0}")]
    Api(#[from] kohakuriver_client::Error),
    /// The attempt this round works for is no longer the task's current one (re-queued,
    /// bound elsewhere or again): its reports are dropped.
    #[error("stale attempt: {0}")]
    Stale(String),
}

impl ReconcileError {
    /// True for an engine failure that waiting may cure (unreachable, timing out).
    fn is_transient_engine(&self) -> bool {
        matches!(
            self,
            ReconcileError::Runtime(RuntimeError::Unreachable(_) | RuntimeError::Engine(_))
        )
    }
}

/// Everything a worker needs; a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Reconciler {
    pub tasks: Api<Task>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub images: ImageEnsurer,
    pub logs: LogStore,
    pub captures: Captures,
    pub settings: Arc<AgentSettings>,
    pub mounts: Arc<MountPolicy>,
    pub kill_grace: Duration,
    pub engine_patience: Duration,
    pub requeue: Duration,
    pub shutdown: CancellationToken,
    /// Where events about the tasks are reported.
    pub events: TaskEvents,
    /// Every task this reconciler spawns (workers, captures, orphan removal), so shutdown
    /// can wait for the steps under way.
    tracker: TaskTracker,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// True once the first full list arrived: before that the cache is not the truth.
    synced: bool,
    cache: HashMap<String, Task>,
    workers: HashMap<String, mpsc::Sender<()>>,
    /// The uid of each task that left the cache (deleted, or moved off this node), so its
    /// container is removed only when it is that task's.
    departed: HashMap<String, String>,
    /// Tasks whose container this agent stopped because it was cut off from the server:
    /// name → (uid, binding, seconds without contact), so the exit is reported as such.
    fenced: HashMap<String, (String, u32, u64)>,
}

/// When a report moves a task out of `Unknown` (its node was unreachable and is back),
/// records the gap's end: condition NodeUnreachable False, reason `NodeReachable`. The
/// condition's earlier True state (set by the controllers) tells when the gap began.
fn reachable_again(
    t: &mut Task,
    before: &kohakuriver_api::TaskStatus,
    node: &str,
    now: kohakuriver_api::Timestamp,
) {
    if before.phase != TaskPhase::Unknown || t.status.phase == TaskPhase::Unknown {
        return;
    }
    if t.status.reason.as_deref() == Some("NodeUnreachable") {
        t.status.reason = None;
        t.status.message = None;
    }
    let message = format!(
        "node {node} reported again; the task was {} meanwhile",
        t.status.phase
    );
    set_condition(
        &mut t.status.conditions,
        kohakuriver_api::NODE_UNREACHABLE_CONDITION,
        ConditionStatus::False,
        Some("NodeReachable"),
        Some(&message),
        t.metadata.generation,
        now,
    );
}

/// What a round ended with.
enum Outcome {
    /// Nothing left to do until something changes.
    Done,
    /// Waiting for something (a log capture to finish): look again soon.
    Soon,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tasks: Api<Task>,
        runtime: Arc<dyn ContainerRuntime>,
        images: ImageEnsurer,
        logs: LogStore,
        settings: AgentSettings,
        mounts: MountPolicy,
        kill_grace: Duration,
        engine_patience: Duration,
        requeue: Duration,
        max_log_bytes: u64,
        shutdown: CancellationToken,
    ) -> Reconciler {
        let tracker = TaskTracker::new();
        let captures = Captures::new(
            runtime.clone(),
            logs.clone(),
            shutdown.clone(),
            tracker.clone(),
            max_log_bytes,
        );
        Reconciler {
            tasks,
            runtime,
            images,
            logs,
            captures,
            settings: Arc::new(settings),
            mounts: Arc::new(mounts),
            kill_grace,
            engine_patience,
            requeue,
            shutdown,
            events: TaskEvents::default(),
            tracker,
            shared: Arc::default(),
        }
    }

    /// Reports events about the tasks through `recorder`.
    pub fn with_events(mut self, recorder: kohakuriver_client::Recorder) -> Reconciler {
        self.events = TaskEvents(Some(recorder));
        self
    }

    /// The tracker of every task this reconciler spawned.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// True once the tasks bound to this node were listed at least once.
    pub fn synced(&self) -> bool {
        self.shared().synced
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks this agent currently runs or is about to run (for the heartbeat).
    pub fn active_tasks(&self) -> u32 {
        self.shared()
            .cache
            .values()
            .filter(|t| {
                matches!(
                    t.status.phase,
                    TaskPhase::Running | TaskPhase::Paused | TaskPhase::Unknown
                )
            })
            .count() as u32
    }

    /// The tasks bound to this node, as the agent last saw them.
    pub fn cached_tasks(&self) -> Vec<Task> {
        self.shared().cache.values().cloned().collect()
    }

    /// Stops (SIGTERM, then SIGKILL after the kill grace) the container of task `name`'s
    /// current attempt, because the agent has not reached the server for `since` and the
    /// server may re-queue the task elsewhere (see [`crate::fence`]). Only a running
    /// container labelled as that attempt's is stopped; it is kept, so that once contact
    /// returns the reconciler reports what happened (or, if the task was re-queued, has its
    /// stale report refused and removes it).
    pub async fn fence(&self, name: &str, since: Duration) {
        let Some(task) = self.shared().cache.get(name).cloned() else {
            return;
        };
        let uid = task.metadata.uid.clone().unwrap_or_default();
        let cname = container_name(name);
        let container = match self.runtime.inspect(&cname).await {
            Ok(Some(c)) if c.is_attempt(&uid, task.status.binding) && c.status.is_alive() => c,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(task = %name, error = %err, "cannot inspect a container to fence");
                return;
            }
        };
        tracing::warn!(
            task = %name,
            container = %container.id,
            secs = since.as_secs(),
            "no contact with the server; stopping the container of a task that has a retry left, so it never runs in two places"
        );
        self.shared().fenced.insert(
            name.to_string(),
            (uid, task.status.binding, since.as_secs()),
        );
        if let Err(err) = self.runtime.stop(&container.id, self.kill_grace).await {
            tracing::warn!(task = %name, error = %err, "cannot stop a fenced container");
        }
    }

    /// Seconds without contact after which this agent stopped `task`'s current attempt, if
    /// it did.
    fn fenced_after(&self, task: &Task) -> Option<u64> {
        let shared = self.shared();
        let (uid, binding, secs) = shared.fenced.get(&task.metadata.name)?;
        (task.metadata.uid.as_deref() == Some(uid.as_str()) && *binding == task.status.binding)
            .then_some(*secs)
    }

    /// Watches the tasks bound to this node until shutdown.
    pub async fn run(self) {
        let selector = format!("status.node={}", self.settings.node_name);
        let params = ListParams::default().fields(&selector);
        let mut events = self.tasks.watcher(params.clone());
        // A task that leaves this node (re-queued elsewhere) arrives as DELETED on the
        // filtered watch. A fresh list now and then is the safety net for anything missed,
        // so such a task's container here is ended even then.
        let mut relist = tokio::time::interval(RELIST_INTERVAL);
        relist.tick().await;
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = relist.tick() => {
                    events = self.tasks.watcher(params.clone());
                    continue;
                }
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Err(err)) => tracing::warn!(error = %err, "task watch failed; retrying"),
                Some(Ok(watcher::Event::Restarted(tasks))) => {
                    let names: HashSet<String> =
                        tasks.iter().map(|t| t.metadata.name.clone()).collect();
                    let gone: Vec<String> = {
                        let mut shared = self.shared();
                        let gone: Vec<String> = shared
                            .cache
                            .keys()
                            .filter(|n| !names.contains(*n))
                            .cloned()
                            .collect();
                        for name in &gone {
                            if let Some(uid) = shared.cache[name].metadata.uid.clone() {
                                shared.departed.insert(name.clone(), uid);
                            }
                        }
                        shared.cache = tasks
                            .into_iter()
                            .map(|t| (t.metadata.name.clone(), t))
                            .collect();
                        shared.synced = true;
                        gone
                    };
                    for name in gone.iter().chain(names.iter()) {
                        self.trigger(name);
                    }
                    let this = self.clone();
                    self.tracker
                        .spawn(async move { this.remove_orphans().await });
                }
                Some(Ok(watcher::Event::Applied(task))) => {
                    let name = task.metadata.name.clone();
                    self.shared().cache.insert(name.clone(), task);
                    self.trigger(&name);
                }
                Some(Ok(watcher::Event::Deleted(task))) => {
                    let name = task.metadata.name.clone();
                    let mut shared = self.shared();
                    shared.cache.remove(&name);
                    if let Some(uid) = task.metadata.uid.clone() {
                        shared.departed.insert(name.clone(), uid);
                    }
                    drop(shared);
                    self.trigger(&name);
                }
            }
        }
    }

    /// Wakes the worker of task `name`, starting one if none runs.
    pub fn trigger(&self, name: &str) {
        let mut shared = self.shared();
        if let Some(tx) = shared.workers.get(name) {
            // A full channel means a wake-up is already pending; that is enough.
            let _ = tx.try_send(());
            return;
        }
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(());
        shared.workers.insert(name.to_string(), tx);
        drop(shared);
        let this = self.clone();
        let name = name.to_string();
        let span = tracing::info_span!("task", task = %name, node = %self.settings.node_name);
        self.tracker
            .spawn(async move { this.worker(name, rx).await }.instrument(span));
    }

    async fn worker(self, name: String, mut wake: mpsc::Receiver<()>) {
        let mut failures = 0u32;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            // No new step once shutting down; the step under way (if any) has finished.
            if self.shutdown.is_cancelled() {
                return;
            }
            let task = {
                let mut shared = self.shared();
                let task = shared.cache.get(&name).cloned();
                if task.is_none() {
                    // Decided under the lock, so a trigger racing with this exit starts a
                    // new worker instead of waking this one.
                    shared.workers.remove(&name);
                    shared.fenced.remove(&name);
                }
                task
            };
            let Some(task) = task else {
                let uid = self.shared().departed.remove(&name);
                if let Err(err) = self.remove_container_of_deleted(&name, uid).await {
                    tracing::warn!(error = %err, "cannot remove container of deleted task");
                }
                return;
            };
            let unstarted = task.status.phase == TaskPhase::Assigned;
            let delay = match self.reconcile(task.clone()).await {
                Ok(Outcome::Done) => {
                    failures = 0;
                    failing_since = None;
                    self.requeue
                }
                Ok(Outcome::Soon) => {
                    failing_since = None;
                    Duration::from_millis(500)
                }
                Err(err) => {
                    failures += 1;
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if unstarted
                        && err.is_transient_engine()
                        && since.elapsed() >= self.engine_patience
                    {
                        // Nothing waits forever: a task the engine could not start for this
                        // long fails with a reason, and its cores go back to the pool.
                        let message = format!(
                            "the docker engine kept failing for {}s: {err}; check the engine on node {}",
                            since.elapsed().as_secs(),
                            self.settings.node_name
                        );
                        let mut task = task;
                        match self
                            .report_failure(&mut task, "EngineUnavailable", &message)
                            .await
                        {
                            Ok(()) => failing_since = None,
                            Err(e) => tracing::warn!(error = %e, "cannot report the failure"),
                        }
                    } else {
                        tracing::warn!(error = %err, failures, "reconcile failed; retrying");
                    }
                    // Capped backoff: 0.4 s doubling to 12.8 s.
                    Duration::from_millis(200 * 2u64.pow(failures.min(6)))
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = wake.recv() => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One level-triggered pass (see [`Reconciler::pass`]); a report the server refuses as
    /// stale is dropped, and this attempt's container (only that) is cleaned up.
    async fn reconcile(&self, task: Task) -> Result<Outcome, ReconcileError> {
        match self.pass(task.clone()).await {
            Err(ReconcileError::Stale(why)) => {
                tracing::warn!(why, "report refused as stale; dropping it");
                self.remove_stale_container(&task).await?;
                Ok(Outcome::Done)
            }
            other => other,
        }
    }

    /// Stops and removes the container of `task`'s attempt, when there is one labelled as
    /// that attempt's (uid and binding); any other container is left alone.
    async fn remove_stale_container(&self, task: &Task) -> Result<(), RuntimeError> {
        let uid = task.metadata.uid.clone().unwrap_or_default();
        let cname = container_name(&task.metadata.name);
        if let Some(c) = self.runtime.inspect(&cname).await?
            && c.is_attempt(&uid, task.status.binding)
        {
            tracing::info!(container = %c.id, "removing the container of a stale attempt");
            if c.status.is_alive() {
                self.runtime.stop(&c.id, self.kill_grace).await?;
            }
            self.runtime.remove(&c.id).await?;
        }
        Ok(())
    }

    /// Observe, plan, act, until the plan is empty.
    async fn pass(&self, mut task: Task) -> Result<Outcome, ReconcileError> {
        let name = task.metadata.name.clone();
        let cname = container_name(&name);
        for _ in 0..12 {
            let actual = self.runtime.inspect(&cname).await?;
            if let Some(c) = &actual {
                self.follow_logs(&task, c);
                if self.capture_failed(&mut task, c).await? {
                    continue;
                }
            }
            let steps = plan(&task, actual.as_ref());
            if steps.is_empty() {
                return Ok(Outcome::Done);
            }
            tracing::debug!(?steps, "plan");
            for step in steps {
                match self.execute(&mut task, actual.as_ref(), &step).await? {
                    StepResult::Continue => {}
                    StepResult::Replan => break,
                    StepResult::Wait => return Ok(Outcome::Soon),
                    StepResult::Gone => return Ok(Outcome::Done),
                }
            }
        }
        Ok(Outcome::Soon)
    }

    /// When the capture of this attempt's container failed (its log could not be written,
    /// e.g. a full disk), stops the container and fails the task with `LogCaptureFailed`:
    /// output that cannot be kept must not be produced unseen, and the agent and every
    /// other task go on. True when it did (plan again).
    async fn capture_failed(
        &self,
        task: &mut Task,
        c: &ContainerState,
    ) -> Result<bool, ReconcileError> {
        let uid = task.metadata.uid.clone().unwrap_or_default();
        if task.status.phase.is_terminal() || !c.is_attempt(&uid, task.status.binding) {
            return Ok(false);
        }
        let Some(message) = self.captures.failure(&c.id) else {
            return Ok(false);
        };
        if c.status.is_alive() {
            tracing::warn!(container = %c.id, "stopping a container whose output cannot be captured");
            match self
                .runtime
                .stop(&c.id, kill_grace(task, self.kill_grace))
                .await
            {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let c = c.clone();
        *task = self
            .update_status(task, |t, now| {
                apply_container_facts(t, &c);
                let ending = Ending::failed("LogCaptureFailed", message.clone());
                outcome::finish(t, &ending, now, now);
            })
            .await?;
        tracing::warn!(message, "task failed: its output cannot be captured");
        Ok(true)
    }

    /// Makes sure a started container of this task has its output captured.
    fn follow_logs(
        &self,
        task: &Task,
        c: &ContainerState,
    ) -> Option<tokio::sync::watch::Receiver<bool>> {
        if c.status == ContainerStatus::Created || c.uid() != task.metadata.uid.as_deref() {
            return None;
        }
        let uid = c.uid()?;
        let this = self.clone();
        let name = task.metadata.name.clone();
        Some(
            self.captures
                .ensure(&task.metadata.name, uid, &c.id, move || this.trigger(&name)),
        )
    }

    /// Waits (a few seconds at most) until the capture of this container's output is
    /// final; true when it is, or when there is nothing of this task's to capture.
    async fn capture_is_final(&self, task: &Task, c: &ContainerState, uid: &str) -> bool {
        if c.status == ContainerStatus::Created || c.uid() != Some(uid) {
            return true;
        }
        let Some(mut done) = self.follow_logs(task, c) else {
            return true;
        };
        let wait =
            tokio::time::timeout(Duration::from_secs(5), done.wait_for(|final_| *final_)).await;
        matches!(wait, Ok(Ok(_)))
    }

    async fn execute(
        &self,
        task: &mut Task,
        actual: Option<&ContainerState>,
        step: &Step,
    ) -> Result<StepResult, ReconcileError> {
        let name = task.metadata.name.clone();
        let cname = container_name(&name);
        let uid = task.metadata.uid.clone().unwrap_or_default();
        match step {
            Step::Create => {
                let allocation = task.status.allocation.clone().unwrap_or_default();
                let settings = self.settings_now().await;
                let mut spec = match container_config(task, &allocation, &settings) {
                    Ok(spec) => spec,
                    Err(err) => {
                        let reason = match err {
                            ConfigError::NoImage => "ImageNotFound",
                            ConfigError::NoUid => "Invalid",
                        };
                        self.report_failure(task, reason, &err.to_string()).await?;
                        return Ok(StepResult::Gone);
                    }
                };
                match self.checked_mounts(&task.spec.mounts).await {
                    Ok(real) => {
                        for bind in spec.binds.iter_mut() {
                            if let Some(r) = real.iter().find(|(m, _)| m == bind) {
                                *bind = r.1.clone();
                            }
                        }
                    }
                    Err(message) => {
                        self.report_failure(task, "MountNotAllowed", &message)
                            .await?;
                        return Ok(StepResult::Gone);
                    }
                }
                // A kill or delete during a long pull abandons it: the cache follows the
                // watch, so it shows the change while the pull is still under way.
                let image = spec.image.image();
                let fetching = |how| self.events.say(task, task_events::fetching(&image, how));
                let pulled = tokio::select! {
                    r = self.images.ensure_reporting(&spec.image, fetching) => Some(r),
                    () = self.until_unwanted(task) => None,
                };
                if let Some(Ok(how)) = &pulled {
                    self.events.say(task, task_events::provided(&image, *how));
                }
                if let Some(Err(err)) = pulled {
                    return match err {
                        RuntimeError::ImageNotFound { .. } => {
                            self.report_failure(task, "ImageNotFound", &err.to_string())
                                .await?;
                            Ok(StepResult::Gone)
                        }
                        RuntimeError::ImagePullFailed { .. } => {
                            self.report_failure(task, "ImagePullFailed", &err.to_string())
                                .await?;
                            Ok(StepResult::Gone)
                        }
                        RuntimeError::ImageRejected { .. } => {
                            self.report_failure(task, "ImageRejected", &err.to_string())
                                .await?;
                            Ok(StepResult::Gone)
                        }
                        other => Err(other.into()),
                    };
                }
                // Logs of an earlier task of this name (deleted while the agent was away)
                // go now, so node disks stay bounded.
                if let Err(err) = self.logs.remove_except(&name, Some(&uid)) {
                    tracing::warn!(error = %err, "cannot remove the logs of an earlier task");
                }
                // The plan came from a snapshot taken before the pull: read the task again
                // before the container exists.
                match self.reread(task).await? {
                    Reread::Proceed if pulled.is_some() => {}
                    Reread::Proceed | Reread::Replan => return Ok(StepResult::Replan),
                    Reread::Gone => return Ok(StepResult::Gone),
                }
                if let Err(err) = self.logs.prepare(&name, &uid) {
                    tracing::warn!(error = %err, "cannot prepare log files");
                }
                match self.runtime.create(&spec).await {
                    Ok(id) => {
                        tracing::info!(container = %id, "container created");
                        self.events.say(task, task_events::created(&cname));
                    }
                    // Someone (an earlier round, before a restart) created it: look again
                    // and let the plan decide whether to adopt it.
                    Err(RuntimeError::AlreadyExists(_)) => return Ok(StepResult::Replan),
                    Err(err @ RuntimeError::ImageNotFound { .. }) => {
                        self.report_failure(task, "ImageNotFound", &err.to_string())
                            .await?;
                        return Ok(StepResult::Gone);
                    }
                    // A configuration the engine refuses fails the same way every time.
                    Err(RuntimeError::Refused(message)) => {
                        self.report_failure(task, "StartFailed", &message).await?;
                        return Ok(StepResult::Gone);
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Step::Start => {
                let Some(c) = actual else {
                    return Ok(StepResult::Replan);
                };
                match self.reread(task).await? {
                    Reread::Proceed => {}
                    Reread::Replan => return Ok(StepResult::Replan),
                    Reread::Gone => return Ok(StepResult::Gone),
                }
                // Attached before the start, so the capture sees every byte as it is
                // written, whatever the engine's log keeps. Should the attach fail, the
                // capture replays the engine's log instead and says if it cannot be whole.
                if c.uid() == Some(uid.as_str()) {
                    let this = self.clone();
                    let name = name.clone();
                    if let Err(err) = self
                        .captures
                        .attach(&name.clone(), &uid, &c.id, move || this.trigger(&name))
                        .await
                    {
                        tracing::warn!(error = %err, "cannot attach to the container's output");
                    }
                }
                if let Err(err) = self.runtime.start(&c.id).await {
                    if let RuntimeError::Refused(message) = &err {
                        let message = format!("container could not start: {message}");
                        self.report_failure(task, "StartFailed", &message).await?;
                        return Ok(StepResult::Replan);
                    }
                    // A command that cannot be executed leaves an exited container with the
                    // engine's error: the next plan reports it as a failure.
                    match self.runtime.inspect(&cname).await? {
                        Some(c) if c.status == ContainerStatus::Exited => {
                            return Ok(StepResult::Replan);
                        }
                        // Still only created: the engine refuses this configuration (a
                        // missing GPU runtime, a bad mount or cpuset). Retrying would fail
                        // the same way, so the task fails now with the engine's words.
                        Some(c) if c.status == ContainerStatus::Created => {
                            let message = format!("container could not start: {err}");
                            self.report_failure(task, "StartFailed", &message).await?;
                            return Ok(StepResult::Replan);
                        }
                        _ => return Err(err.into()),
                    }
                }
                self.events.say(task, task_events::started(&cname));
                return Ok(StepResult::Replan);
            }
            // By the id inspected, never by name: the name may be another container's by now.
            Step::Pause => {
                if let Some(c) = actual {
                    self.runtime.pause(&c.id).await?;
                }
                return Ok(StepResult::Replan);
            }
            Step::Unpause => {
                if let Some(c) = actual {
                    self.runtime.unpause(&c.id).await?;
                }
                return Ok(StepResult::Replan);
            }
            Step::Stop => {
                let Some(c) = actual else {
                    return Ok(StepResult::Replan);
                };
                let grace = kill_grace(task, self.kill_grace);
                tracing::info!(?grace, "stopping container");
                self.events.say(task, task_events::killing(&cname, grace));
                match self.runtime.stop(&c.id, grace).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Step::ReportRunning | Step::ReportPaused => {
                let Some(c) = actual else {
                    return Ok(StepResult::Replan);
                };
                let phase = if *step == Step::ReportRunning {
                    TaskPhase::Running
                } else {
                    TaskPhase::Paused
                };
                let c = c.clone();
                *task = self
                    .update_status(task, |t, now| {
                        apply_container_facts(t, &c);
                        t.status.phase = phase;
                        t.status.reason = None;
                        t.status.message = None;
                        set_condition(
                            &mut t.status.conditions,
                            "Running",
                            ConditionStatus::True,
                            Some(if phase == TaskPhase::Running {
                                "Started"
                            } else {
                                "Paused"
                            }),
                            None,
                            t.metadata.generation,
                            now,
                        );
                    })
                    .await?;
                tracing::info!(phase = %phase, "reported");
            }
            Step::ReportExited {
                exit_code,
                oom_killed,
            } => {
                // A finished task's output is complete: whoever sees the terminal phase
                // (`task submit -w`, then `task logs`) reads all of it.
                if let Some(c) = actual
                    && !self.capture_is_final(task, c, &uid).await
                {
                    return Ok(StepResult::Wait);
                }
                let c = actual.cloned();
                let (exit_code, oom) = (*exit_code, *oom_killed);
                let incomplete = self.logs.incomplete(&name, &uid);
                let truncated = self.logs.truncated(&name, &uid);
                let exit = Exit {
                    code: exit_code,
                    oom_killed: oom,
                    fenced: self
                        .fenced_after(task)
                        .map(|secs| (secs, self.settings.node_name.clone())),
                    engine_error: c.as_ref().and_then(|c| c.error.clone()),
                };
                let ending = outcome::exited(&exit);
                *task = self
                    .update_status(task, |t, now| {
                        if let Some(c) = &c {
                            apply_container_facts(t, c);
                        }
                        mark_logs_incomplete(t, incomplete.as_deref(), now);
                        mark_logs_truncated(t, truncated.as_deref(), now);
                        t.status.exit_code = Some(exit_code);
                        let finished_at = c.as_ref().and_then(|c| c.finished_at).unwrap_or(now);
                        outcome::stop_running(t, "Exited", now);
                        outcome::finish(t, &ending, finished_at, now);
                    })
                    .await?;
                tracing::info!(phase = %task.status.phase, exit_code, "reported exit");
                self.events.say(task, task_events::exited(exit_code, oom));
            }
            Step::ReportKilled => {
                if let Some(c) = actual
                    && c.status == ContainerStatus::Exited
                    && !self.capture_is_final(task, c, &uid).await
                {
                    return Ok(StepResult::Wait);
                }
                let c = actual.cloned();
                let incomplete = self.logs.incomplete(&name, &uid);
                let truncated = self.logs.truncated(&name, &uid);
                *task = self
                    .update_status(task, |t, now| {
                        if let Some(c) = &c {
                            apply_container_facts(t, c);
                            t.status.exit_code = c.exit_code;
                        }
                        mark_logs_incomplete(t, incomplete.as_deref(), now);
                        mark_logs_truncated(t, truncated.as_deref(), now);
                        let finished_at = c.as_ref().and_then(|c| c.finished_at).unwrap_or(now);
                        outcome::finish(t, &Ending::Killed, finished_at, now);
                        outcome::stop_running(t, "Killed", now);
                    })
                    .await?;
                if actual.is_none() || actual.is_some_and(|c| c.status == ContainerStatus::Created)
                {
                    let _ = self.logs.mark_final(&name, &uid);
                }
                tracing::info!("reported killed");
            }
            Step::ReportContainerLost => {
                self.report_failure(
                    task,
                    "ContainerLost",
                    "the task's container disappeared while the task was running; it is not restarted",
                )
                .await?;
            }
            Step::RemoveContainer => {
                let Some(c) = actual else {
                    return Ok(StepResult::Continue);
                };
                // Logs first: a container is removed only once its output is safe.
                if !self.capture_is_final(task, c, &uid).await {
                    return Ok(StepResult::Wait);
                }
                self.runtime.remove(&c.id).await?;
                self.captures.forget_failure(&c.id);
                tracing::info!(container = %c.id, "container removed");
            }
            Step::RemoveFinalizer => {
                let result = self
                    .tasks
                    .update_with(&name, |t| {
                        if t.metadata.uid.as_deref() != Some(uid.as_str()) {
                            return false;
                        }
                        let before = t.metadata.finalizers.len();
                        t.metadata.finalizers.retain(|f| f != CONTAINER_FINALIZER);
                        t.metadata.finalizers.len() != before
                    })
                    .await;
                match result {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!("finalizer removed");
                return Ok(StepResult::Gone);
            }
        }
        Ok(StepResult::Continue)
    }

    /// Reads `task` afresh before an irreversible step (create, start). Proceed when it is
    /// still this attempt and still wanted running; Replan (with `task` updated) when it is
    /// this attempt but killed, deleting or ended meanwhile, so the plan reports that
    /// instead; Gone when it is deleted or is another attempt now.
    async fn reread(&self, task: &mut Task) -> Result<Reread, ReconcileError> {
        let fresh = match self.tasks.get(&task.metadata.name).await {
            Ok(fresh) => fresh,
            Err(e) if e.is_not_found() => return Ok(Reread::Gone),
            Err(e) => return Err(e.into()),
        };
        if !self.same_attempt(task, &fresh) {
            tracing::info!("the task is another attempt now; not going on");
            return Ok(Reread::Gone);
        }
        let wanted = wanted_running(&fresh);
        *task = fresh;
        if wanted {
            Ok(Reread::Proceed)
        } else {
            tracing::info!("the task was killed or deleted meanwhile; not going on");
            Ok(Reread::Replan)
        }
    }

    fn same_attempt(&self, task: &Task, other: &Task) -> bool {
        other.metadata.uid == task.metadata.uid
            && other.status.node.as_deref() == Some(self.settings.node_name.as_str())
            && other.status.binding == task.status.binding
    }

    /// Returns once the watched copy of `task` is no longer wanted running as this attempt
    /// (killed, deleted, ended, or another attempt); pending forever otherwise.
    async fn until_unwanted(&self, task: &Task) {
        loop {
            let still = match self.shared().cache.get(&task.metadata.name) {
                Some(t) => self.same_attempt(task, t) && wanted_running(t),
                None => false,
            };
            if !still {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The settings for a container made now: whether the environments directory exists
    /// is looked at each time, since it may be made after the agent started.
    async fn settings_now(&self) -> AgentSettings {
        let mut settings = (*self.settings).clone();
        if let Some(shared) = settings.shared_dir.clone() {
            let dir = shared.join(ENVIRONMENTS_DIR);
            settings.protect_environments = tokio::task::spawn_blocking(move || dir.is_dir())
                .await
                .unwrap_or(false);
        }
        settings
    }

    /// Checks every host mount against the mount policy with its real path resolved on this
    /// machine; each mount paired with the same mount naming its real path, or the first
    /// refusal.
    async fn checked_mounts(&self, mounts: &[String]) -> Result<Vec<(String, String)>, String> {
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        let mounts = mounts.to_vec();
        let policy = self.mounts.clone();
        tokio::task::spawn_blocking(move || {
            let mut checked = Vec::new();
            for mount in mounts {
                let host = kohakuriver_api::auth::mount_host_path(&mount);
                let real = std::fs::canonicalize(host).ok();
                check_mount(&mount, real.as_deref(), &policy)?;
                let rewritten = real.map_or_else(|| mount.clone(), |r| with_real_path(&mount, &r));
                checked.push((mount, rewritten));
            }
            Ok(checked)
        })
        .await
        .unwrap_or_else(|e| Err(format!("cannot check the host mounts: {e}")))
    }

    /// Reports a terminal failure before (or without) a container, and closes the logs.
    async fn report_failure(
        &self,
        task: &mut Task,
        reason: &str,
        message: &str,
    ) -> Result<(), ReconcileError> {
        tracing::warn!(reason, message, "task failed");
        *task = self
            .update_status(task, |t, now| {
                outcome::finish(t, &Ending::failed(reason, message), now, now);
            })
            .await?;
        self.events.say(task, task_events::failed(reason, message));
        if let Some(uid) = &task.metadata.uid {
            let _ = self.logs.mark_final(&task.metadata.name, uid);
        }
        Ok(())
    }

    /// Writes the status through the status subresource, re-reading on conflict. Nothing is
    /// written to a task that is another one now (uid) or that already ended: a terminal
    /// phase is never left. Every write names its attempt (uid, this node, the binding) and
    /// the server refuses it with 409 when that is not the current one; when the task read
    /// (first, or again after a conflict) is at another attempt, nothing is written and the
    /// error is [`ReconcileError::Stale`].
    async fn update_status(
        &self,
        task: &Task,
        mut f: impl FnMut(&mut Task, kohakuriver_api::Timestamp),
    ) -> Result<Task, ReconcileError> {
        let uid = task.metadata.uid.clone();
        let me = Some(self.settings.node_name.clone());
        let binding = task.status.binding;
        let mut stale = None;
        let written = self
            .tasks
            .update_status_with(&task.metadata.name, |t| {
                stale = None;
                if t.metadata.uid != uid || t.status.node != me || t.status.binding != binding {
                    stale = Some(format!(
                        "task {} is {} now; this report was for binding {binding} on this node",
                        t.metadata.name,
                        kohakuriver_api::precondition::describe(&t.status)
                    ));
                    return false;
                }
                if t.status.phase.is_terminal() {
                    return false;
                }
                let before = t.status.clone();
                let now = chrono::Utc::now();
                f(t, now);
                reachable_again(t, &before, &self.settings.node_name, now);
                t.status != before
            })
            .await;
        let updated = match written {
            Err(e) if e.is_not_found() => {
                return Err(ReconcileError::Stale(format!(
                    "task {} is gone",
                    task.metadata.name
                )));
            }
            // Still refused after reading again: the server knows of a newer attempt.
            Err(e) if e.is_conflict() => return Err(ReconcileError::Stale(e.to_string())),
            other => other?,
        };
        if let Some(why) = stale {
            return Err(ReconcileError::Stale(why));
        }
        let mut shared = self.shared();
        if let Some(cached) = shared.cache.get_mut(&updated.metadata.name)
            && cached.metadata.uid == updated.metadata.uid
            && cached.metadata.resource_version <= updated.metadata.resource_version
        {
            *cached = updated.clone();
        }
        Ok(updated)
    }

    /// The task `name` (uid `uid`) is gone from the server, or from this node: its
    /// container goes (see [`Self::remove_container_of_gone_task`]), and then its captured
    /// logs, so node disks stay bounded.
    async fn remove_container_of_deleted(
        &self,
        name: &str,
        uid: Option<String>,
    ) -> Result<(), ReconcileError> {
        self.remove_container_of_gone_task(name, uid).await?;
        let (logs, name_owned) = (self.logs.clone(), name.to_string());
        let removed = tokio::task::spawn_blocking(move || logs.remove_except(&name_owned, None))
            .await
            .map_err(|e| RuntimeError::Engine(format!("log removal panicked: {e}")))?;
        if let Err(err) = removed {
            tracing::warn!(error = %err, "cannot remove the logs of a deleted task");
        }
        Ok(())
    }

    /// The task `name` (uid `uid`) is gone from the server, or from this node: its
    /// container (if any) goes too, but only a container labelled as that task's.
    async fn remove_container_of_gone_task(
        &self,
        name: &str,
        uid: Option<String>,
    ) -> Result<(), RuntimeError> {
        let cname = container_name(name);
        if let Some(c) = self.runtime.inspect(&cname).await?
            && c.labels.get(labels::NODE) == Some(&self.settings.node_name)
            && uid.is_some()
            && c.uid() == uid.as_deref()
        {
            tracing::info!(container = %c.id, "removing container of deleted task");
            if c.status.is_alive() {
                self.runtime.stop(&c.id, self.kill_grace).await?;
            }
            self.runtime.remove(&c.id).await?;
        }
        Ok(())
    }

    /// Removes this node's containers whose task no longer exists (or is another task now).
    async fn remove_orphans(&self) {
        let node = self.settings.node_name.clone();
        let containers = match self.runtime.list(&[(labels::NODE, node.as_str())]).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list containers");
                return;
            }
        };
        for c in containers {
            let task = c.labels.get(labels::TASK).cloned().unwrap_or_default();
            let known = self.shared().cache.contains_key(&task);
            if !known {
                tracing::info!(container = %c.id, task = %task, "removing orphan container");
                let result = async {
                    if c.status.is_alive() {
                        self.runtime.stop(&c.id, self.kill_grace).await?;
                    }
                    self.runtime.remove(&c.id).await
                }
                .await;
                if let Err(err) = result {
                    tracing::warn!(container = %c.id, error = %err, "cannot remove orphan");
                }
            }
        }
    }
}

/// What a fresh read of the task says about going on with an irreversible step.
enum Reread {
    /// Still this attempt and wanted running: go on.
    Proceed,
    /// This attempt, but no longer wanted running: plan again from the fresh task.
    Replan,
    /// Deleted, or another attempt now: stop here.
    Gone,
}

/// True while a task is wanted running: not deleting, not killed, not ended.
/// How long a kill waits between SIGTERM and SIGKILL: the task's `spec.killGraceSeconds`,
/// else the agent's `--kill-grace` (pure).
fn kill_grace(task: &Task, default: Duration) -> Duration {
    task.spec
        .kill_grace_seconds
        .map(Duration::from_secs)
        .unwrap_or(default)
}

fn wanted_running(task: &Task) -> bool {
    !task.metadata.is_deleting()
        && task.spec.state != kohakuriver_api::DesiredState::Killed
        && !task.status.phase.is_terminal()
}

/// What to do after one step.
enum StepResult {
    /// Run the plan's next step.
    Continue,
    /// Observe and plan again.
    Replan,
    /// Look again later.
    Wait,
    /// Nothing more to do for this task now.
    Gone,
}

/// Records in the status that the captured output may lack bytes (`message` says why and
/// how many), so "captured in full" is never implied when it is not.
fn mark_logs_incomplete(t: &mut Task, message: Option<&str>, now: kohakuriver_api::Timestamp) {
    if let Some(message) = message {
        set_condition(
            &mut t.status.conditions,
            "LogsIncomplete",
            ConditionStatus::True,
            Some("OutputLost"),
            Some(message),
            t.metadata.generation,
            now,
        );
    }
}

/// Records in the status that the captured output was cut by the agent's per-task cap
/// (`message` says at what size and which flag raises it).
fn mark_logs_truncated(t: &mut Task, message: Option<&str>, now: kohakuriver_api::Timestamp) {
    if let Some(message) = message {
        set_condition(
            &mut t.status.conditions,
            "LogsTruncated",
            ConditionStatus::True,
            Some("LogLimit"),
            Some(message),
            t.metadata.generation,
            now,
        );
    }
}

/// Copies what the container says about the attempt into the status.
fn apply_container_facts(t: &mut Task, c: &ContainerState) {
    t.status.container_id = Some(c.id.clone());
    if c.started_at.is_some() {
        t.status.started_at = c.started_at;
    }
    t.status.attempts = c.attempt().unwrap_or(t.status.attempts.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_waits_the_tasks_grace_else_the_agents() {
        let mut t = Task::new("t", vec!["sleep".into(), "60".into()]);
        assert_eq!(
            kill_grace(&t, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        t.spec.kill_grace_seconds = Some(0);
        assert_eq!(kill_grace(&t, Duration::from_secs(10)), Duration::ZERO);
        t.spec.kill_grace_seconds = Some(30);
        assert_eq!(
            kill_grace(&t, Duration::from_secs(10)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_report_out_of_unknown_records_the_end_of_the_gap() {
        let now = chrono::DateTime::from_timestamp(500, 0).unwrap();
        let mut t = Task::new("t", vec!["true".into()]);
        t.status.phase = TaskPhase::Unknown;
        t.status.reason = Some("NodeUnreachable".into());
        set_condition(
            &mut t.status.conditions,
            kohakuriver_api::NODE_UNREACHABLE_CONDITION,
            ConditionStatus::True,
            Some("NodeUnreachable"),
            None,
            None,
            chrono::DateTime::from_timestamp(100, 0).unwrap(),
        );
        let before = t.status.clone();
        t.status.phase = TaskPhase::Failed;
        t.status.exit_code = Some(3);
        reachable_again(&mut t, &before, "n1", now);
        let c = kohakuriver_api::meta::find_condition(
            &t.status.conditions,
            kohakuriver_api::NODE_UNREACHABLE_CONDITION,
        )
        .unwrap();
        assert_eq!(c.status, ConditionStatus::False);
        assert_eq!(c.reason.as_deref(), Some("NodeReachable"));
        assert_eq!(t.status.reason, None);

        // A report that does not leave Unknown records nothing.
        let mut running = Task::new("r", vec!["true".into()]);
        running.status.phase = TaskPhase::Running;
        let before = running.status.clone();
        running.status.phase = TaskPhase::Succeeded;
        reachable_again(&mut running, &before, "n1", now);
        assert!(running.status.conditions.is_empty());
    }
}
