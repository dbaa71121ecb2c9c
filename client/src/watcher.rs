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

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kohakuriver_api::{Resource, WatchEvent};

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

enum Phase<R> {
    /// Next: list.
    List,
    /// Next: open a watch from this revision.
    Watch(u64),
    /// Reading a watch connection.
    Streaming {
        events: BoxStream<'static, Result<WatchEvent<R>, Error>>,
        revision: u64,
        /// Whether this connection delivered anything (an instantly closing server must not
        /// make us spin).
        progressed: bool,
    },
}

struct State<R: Resource> {
    api: Api<R>,
    params: ListParams,
    phase: Phase<R>,
    backoff: Backoff,
    /// Wait this long before the next step (set after an error).
    delay: Option<Duration>,
    /// The store the last list came from (its `metadata.storeId`), named by every watch.
    store_id: Option<String>,
}

pub(crate) fn watcher<R: Resource>(
    api: Api<R>,
    params: ListParams,
) -> BoxStream<'static, Result<Event<R>, Error>> {
    let state = State {
        api,
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
async fn step<R: Resource>(st: &mut State<R>) -> Result<Event<R>, Error> {
    loop {
        if let Some(delay) = st.delay.take() {
            tokio::time::sleep(delay).await;
        }
        match std::mem::replace(&mut st.phase, Phase::List) {
            Phase::List => match st.api.list(&st.params).await {
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
                .api
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
