//! A watch that never ends, in the manner of kube-runtime's `watcher`.
//!
//! It lists, then watches from the list's revision, and keeps the last revision it has seen
//! (bookmarks count) so that after a disconnect it resumes exactly where it was. When the
//! server no longer keeps history that far back (410 Gone) it lists again and reports the
//! whole state as [`Event::Restarted`]. Each watch names the store its list came from
//! (`storeId`), so a server restored from a backup or otherwise serving another store
//! answers 410 too, and the watcher lists again instead of resuming by a revision number
//! that means something else there. Errors are yielded (so callers can log them) and
//! followed by a jittered exponential backoff; the stream itself only ends when dropped.
//!
//! The state machine reads through `Source`, a list and a watch from a revision, so that
//! a scripted fake can drive every path of it (410, bookmarks, dropped and instantly closing
//! connections, a changed store) on a paused clock. [`Api`] is the one real source (HTTP).

use std::future::Future;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kohakuriver_api::{List, Resource, WatchEvent};

use crate::api::Api;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::params::ListParams;

/// What a watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<R> {
    /// The full current state, after the first list and after every re-list. Objects not in
    /// it are gone.
    Restarted(Vec<R>),
    /// An object was created or changed.
    Applied(R),
    /// An object was deleted; this is its last state.
    Deleted(R),
}

/// One watch connection's events, as [`Api::watch`] yields them.
pub(crate) type Events<R> = BoxStream<'static, Result<WatchEvent<R>, Error>>;

/// Where a watcher reads: a consistent list, and a watch from a revision of the store named
/// by `store_id`. The real source is [`Api`]; the trait exists so tests can script the
/// server's answers and count the calls.
pub(crate) trait Source<R: Resource>: Send + 'static {
    /// Every matching object, with the revision (and store) it was read at.
    fn list(&self, params: &ListParams) -> impl Future<Output = Result<List<R>, Error>> + Send;

    /// One watch connection from `resource_version`, or an error (410 Gone among them).
    fn watch(
        &self,
        params: &ListParams,
        resource_version: u64,
        store_id: Option<&str>,
    ) -> impl Future<Output = Result<Events<R>, Error>> + Send;
}

impl<R: Resource> Source<R> for Api<R> {
    fn list(&self, params: &ListParams) -> impl Future<Output = Result<List<R>, Error>> + Send {
        Api::list(self, params)
    }

    fn watch(
        &self,
        params: &ListParams,
        resource_version: u64,
        store_id: Option<&str>,
    ) -> impl Future<Output = Result<Events<R>, Error>> + Send {
        Api::watch(self, params, resource_version, store_id)
    }
}

enum Phase<R> {
    /// Next: list.
    List,
    /// Next: open a watch from this revision.
    Watch(u64),
    /// Reading a watch connection.
    Streaming {
        events: Events<R>,
        revision: u64,
        /// Whether this connection delivered anything (an instantly closing server must not
        /// make us spin).
        progressed: bool,
    },
}

struct State<R: Resource, S> {
    source: S,
    params: ListParams,
    phase: Phase<R>,
    backoff: Backoff,
    /// Wait this long before the next step (set after an error).
    delay: Option<Duration>,
    /// The store the last list came from (its `metadata.storeId`), named by every watch.
    store_id: Option<String>,
}

/// The never-ending watch of `params` read from `source`; see the module doc.
pub(crate) fn watcher<R: Resource, S: Source<R>>(
    source: S,
    params: ListParams,
) -> BoxStream<'static, Result<Event<R>, Error>> {
    let state = State {
        source,
        params,
        phase: Phase::List,
        backoff: Backoff::watch(),
        delay: None,
        store_id: None,
    };
    stream::unfold(state, |mut st| async move {
        let item = step(&mut st).await;
        Some((item, st))
    })
    .boxed()
}

/// Advances the state machine until it has something to report.
async fn step<R: Resource, S: Source<R>>(st: &mut State<R, S>) -> Result<Event<R>, Error> {
    loop {
        if let Some(delay) = st.delay.take() {
            tokio::time::sleep(delay).await;
        }
        match std::mem::replace(&mut st.phase, Phase::List) {
            Phase::List => match st.source.list(&st.params).await {
                Ok(list) => {
                    st.phase = Phase::Watch(list.metadata.resource_version);
                    st.store_id = list.metadata.store_id;
                    return Ok(Event::Restarted(list.items));
                }
                Err(e) => {
                    st.delay = Some(st.backoff.next_delay());
                    return Err(e);
                }
            },
            Phase::Watch(revision) => match st
                .source
                .watch(&st.params, revision, st.store_id.as_deref())
                .await
            {
                Ok(events) => {
                    st.phase = Phase::Streaming {
                        events,
                        revision,
                        progressed: false,
                    };
                }
                Err(e) if e.is_gone() => {
                    tracing::debug!(
                        kind = R::KIND,
                        revision,
                        "watch history gone; listing again"
                    );
                }
                Err(e) => {
                    st.phase = Phase::Watch(revision);
                    st.delay = Some(st.backoff.next_delay());
                    return Err(e);
                }
            },
            Phase::Streaming {
                mut events,
                mut revision,
                progressed,
            } => {
                let next = events.next().await;
                let observed = |obj: &R, revision: u64| obj.resource_version().max(revision);
                let (event, revision) = match next {
                    Some(Ok(WatchEvent::Added { object } | WatchEvent::Modified { object })) => {
                        revision = observed(&object, revision);
                        (Event::Applied(object), revision)
                    }
                    Some(Ok(WatchEvent::Deleted { object })) => {
                        revision = observed(&object, revision);
                        (Event::Deleted(object), revision)
                    }
                    Some(Ok(WatchEvent::Bookmark { object })) => {
                        st.backoff.reset();
                        st.phase = Phase::Streaming {
                            events,
                            revision: object.resource_version().max(revision),
                            progressed: true,
                        };
                        continue;
                    }
                    Some(Ok(WatchEvent::Error { object })) => {
                        let err = Error::Api(Box::new(object));
                        if err.is_gone() {
                            tracing::debug!(
                                kind = R::KIND,
                                revision,
                                "watch history gone; listing again"
                            );
                            continue; // phase is List
                        }
                        st.phase = Phase::Watch(revision);
                        st.delay = Some(st.backoff.next_delay());
                        return Err(err);
                    }
                    Some(Err(e)) => {
                        st.phase = Phase::Watch(revision);
                        st.delay = Some(st.backoff.next_delay());
                        return Err(e);
                    }
                    None => {
                        st.phase = Phase::Watch(revision);
                        if !progressed {
                            st.delay = Some(st.backoff.next_delay());
                        }
                        continue;
                    }
                };
                st.backoff.reset();
                st.phase = Phase::Streaming {
                    events,
                    revision,
                    progressed: true,
                };
                return Ok(event);
            }
        }
    }
}

#[cfg(test)]
#[path = "watcher_tests.rs"]
mod tests;
