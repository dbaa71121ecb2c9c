//! Watch streams: newline-delimited `WatchEvent`s for one kind, filtered by selectors.
//!
//! A fresh watch (no `resourceVersion`, or 0, or `sendInitialEvents=true`) lists the
//! matching objects as `ADDED` and, with `allowWatchBookmarks=true`, a `BOOKMARK` at the
//! list's revision annotated `k8s.io/initial-events-end: "true"`, read atomically with
//! opening the live subscription. A
//! resumed watch replays the history after its revision from SQLite, then goes live. Each
//! stream is a task that moves events from the store's broadcast channel into the HTTP body
//! and tracks the last revision it has covered (its cursor): live events at or below the
//! cursor are skipped, so replay and live delivery neither miss nor repeat an event.
//!
//! A watcher that falls behind (its client reads slowly) never slows writers or other
//! watchers: the broadcast channel drops its oldest events for that watcher only, and the
//! watcher re-reads what it missed from the history (or ends with 410 Gone if compaction
//! got there first).
//!
//! A filtered watcher judges a live event by the labels and selectable fields the store
//! extracted from the written object once, for all watchers, rather than parsing the
//! event's JSON itself; events replayed from the history are parsed.
//!
//! Selectors work as in Kubernetes: an object that starts matching (say a task bound to the
//! watched node) arrives as `ADDED`, one that stops matching as `DELETED` with its new state;
//! the history keeps the previous state of every change a selector could see.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kohakuriver_api::{Bookmark, WatchEvent};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::admission::Served;
use crate::error::AppError;
use crate::limits::WatchGuard;
use crate::params::Selection;
use crate::state::AppState;
use crate::store::{Event, Store, Subscription};

/// Events read from the history per database round trip.
const HISTORY_PAGE: usize = 512;

/// Lines buffered between a watch task and its HTTP body.
const BODY_BUFFER: usize = 64;

/// How a watch was asked for: from where, and with which of Kubernetes' options.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// `resourceVersion`: resume after this revision; `None` (or 0) starts fresh.
    pub from: Option<u64>,
    /// `allowWatchBookmarks=true`: send `BOOKMARK` events (the one ending a fresh watch's
    /// initial events, and one every bookmark interval). Without it none are sent.
    pub bookmarks: bool,
    /// `sendInitialEvents`: `true` starts with an `ADDED` for every current object whatever
    /// `resourceVersion` says (the state is at least as new as any revision asked);
    /// `false` without a `resourceVersion` starts at the current revision with none.
    pub initial_events: Option<bool>,
    /// `timeoutSeconds`: the watch ends (cleanly) after this long.
    pub timeout: Option<std::time::Duration>,
    /// `storeId`: the store the client's `resourceVersion` came from (a list's
    /// `metadata.storeId`); another store answers 410 Gone.
    pub store_id: Option<String>,
}

fn bookmark_line<R: Served>(rv: u64, initial_events_end: bool) -> String {
    let event = WatchEvent::<R>::Bookmark {
        object: Bookmark::new(R::KIND, rv, initial_events_end),
    };
    let mut line = serde_json::to_string(&event).unwrap_or_default();
    line.push('\n');
    line
}

fn error_line<R: Served>(error: AppError) -> String {
    let event = WatchEvent::<R>::Error { object: *error.0 };
    let mut line = serde_json::to_string(&event).unwrap_or_default();
    line.push('\n');
    line
}

/// 410 Gone unless the watch's `storeId` names this store: its revisions came from another
/// (a restored backup, a replaced file, a run that may have lost commits), so resuming by
/// number could skip events.
fn check_store_id(asked: &str, ours: &str) -> Result<(), AppError> {
    if asked == ours {
        return Ok(());
    }
    Err(AppError::new(
        kohakuriver_api::StatusReason::Gone,
        format!(
            "storeId {asked:?} is not this server's store ({ours:?}): the store was restored or replaced since you listed; list again and watch from the list's resourceVersion"
        ),
    ))
}

/// Starts a watch of kind `R`. Errors found before streaming starts (410 Gone, a database
/// failure) are answered as plain HTTP errors.
pub async fn respond<R: Served>(
    state: AppState,
    options: WatchOptions,
    selection: Selection,
    guard: WatchGuard,
) -> Result<Response, AppError> {
    let store = state.store().clone();
    if let Some(asked) = &options.store_id {
        check_store_id(asked, store.id())?;
    }
    let (node, phase) = selection.index_hints();
    let from = match (options.initial_events, options.from) {
        (Some(true), _) => None,
        (_, Some(0)) => None,
        (_, from) => from,
    };
    let (subscription, cursor, first_chunk, replay_to) = match from {
        None => {
            let (sub, bodies) = store.snapshot(R::KIND, node, phase).await?;
            let mut chunk = String::new();
            if options.initial_events != Some(false) {
                for body in bodies.iter().filter(|b| selection.matches::<R>(b)) {
                    chunk.push_str("{\"type\":\"ADDED\",\"object\":");
                    chunk.push_str(body);
                    chunk.push_str("}\n");
                }
                if options.bookmarks {
                    chunk.push_str(&bookmark_line::<R>(sub.revision, true));
                }
            }
            let revision = sub.revision;
            (sub, revision, Some(chunk), None)
        }
        Some(after) => {
            let sub = store.subscribe_after(after).await?;
            let revision = sub.revision;
            (sub, after, None, Some(revision))
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let watcher = Watcher::<R> {
        store,
        selection,
        cursor,
        tx,
        shutdown: state.shutdown().clone(),
        _guard: guard,
        _kind: std::marker::PhantomData,
    };
    let bookmarks = options
        .bookmarks
        .then_some(state.config().bookmark_interval);
    let deadline = options.timeout.map(|t| Instant::now() + t);
    tokio::spawn(watcher.run(subscription, first_chunk, replay_to, bookmarks, deadline));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    // `application/json`, as Kubernetes answers a JSON watch: client-go refuses a media
    // type it has no decoder for. The framing is one JSON object per line.
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The next bookmark tick; never, for a watch that did not ask for bookmarks.
async fn next_bookmark(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One watch stream's task.
struct Watcher<R> {
    store: Store,
    selection: Selection,
    /// Every revision up to this one has been handled (sent or filtered out).
    cursor: u64,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
    /// This watch's place under the watch limits, freed when the watcher ends.
    _guard: WatchGuard,
    _kind: std::marker::PhantomData<fn() -> R>,
}

/// Why a watch stopped.
enum Stop {
    /// The client went away or the server is shutting down.
    Closed,
    /// The watch failed; the client is told with an `ERROR` event.
    Failed(AppError),
}

impl<R: Served> Watcher<R> {
    async fn run(
        mut self,
        mut subscription: Subscription,
        first_chunk: Option<String>,
        replay_to: Option<u64>,
        bookmark_interval: Option<std::time::Duration>,
        deadline: Option<Instant>,
    ) {
        let result = self
            .stream(
                &mut subscription,
                first_chunk,
                replay_to,
                bookmark_interval,
                deadline,
            )
            .await;
        if let Err(Stop::Failed(error)) = result {
            tracing::debug!(kind = R::KIND, error = %error, "watch ended with an error");
            let _ = self.send(error_line::<R>(error)).await;
        }
    }

    async fn stream(
        &mut self,
        subscription: &mut Subscription,
        first_chunk: Option<String>,
        replay_to: Option<u64>,
        bookmark_interval: Option<std::time::Duration>,
        deadline: Option<Instant>,
    ) -> Result<(), Stop> {
        if let Some(chunk) = first_chunk.filter(|c| !c.is_empty()) {
            self.send(chunk).await?;
        }
        if let Some(up_to) = replay_to {
            self.catch_up(Some(up_to)).await?;
        }
        let mut bookmarks = bookmark_interval.map(|period| {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Stop::Closed),
                () = self.tx.closed() => return Err(Stop::Closed),
                () = &mut timeout => return Err(Stop::Closed),
                () = next_bookmark(&mut bookmarks) => {
                    self.send(bookmark_line::<R>(self.cursor, false)).await?;
                }
                received = subscription.receiver.recv() => match received {
                    Ok(event) => self.deliver(&event).await?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(kind = R::KIND, missed, "watcher lagged; reading the history");
                        self.catch_up(None).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Closed),
                },
            }
        }
    }

    /// Sends one live event unless it was already covered or does not match.
    async fn deliver(&mut self, event: &Arc<Event>) -> Result<(), Stop> {
        if event.rv <= self.cursor {
            return Ok(());
        }
        self.cursor = event.rv;
        if event.kind == R::KIND
            && let Some(line) =
                event.line_for(|body, fields| self.selection.matches_state::<R>(body, fields))
        {
            self.send(line).await?;
        }
        Ok(())
    }

    /// Replays the history after the cursor, up to `up_to` (or the current revision).
    async fn catch_up(&mut self, up_to: Option<u64>) -> Result<(), Stop> {
        loop {
            let (events, reached) = self
                .store
                .history(R::KIND, self.cursor, up_to, HISTORY_PAGE)
                .await
                .map_err(Stop::Failed)?;
            let full = events.len() == HISTORY_PAGE;
            let mut chunk = String::new();
            for line in events.iter().filter_map(|e| {
                e.line_for(|body, fields| self.selection.matches_state::<R>(body, fields))
            }) {
                chunk.push_str(&line);
            }
            self.cursor = self.cursor.max(reached);
            if !chunk.is_empty() {
                self.send(chunk).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Hands a chunk to the HTTP body, giving up when the client is gone or the server
    /// shuts down.
    async fn send(&self, chunk: String) -> Result<(), Stop> {
        tokio::select! {
            sent = self.tx.send(Bytes::from(chunk)) => sent.map_err(|_| Stop::Closed),
            () = self.shutdown.cancelled() => Err(Stop::Closed),
        }
    }
}
