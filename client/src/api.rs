//! `Api<R>`: the typed operations on one kind of object.

use std::marker::PhantomData;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kohakuriver_api::{ApplyResult, List, Resource, WatchEvent};
use reqwest::{Method, StatusCode, Url};

use crate::backoff::Backoff;
use crate::client::{Client, decode, read_json};
use crate::error::Error;
use crate::ndjson::LineSplitter;
use crate::params::{ApplyOptions, ListParams};

/// How often `update_with` tries before giving up on conflicts.
const UPDATE_ATTEMPTS: usize = 10;

/// The server sends a bookmark at least every 30 s; a watch silent for much longer than that
/// is a dead connection.
const WATCH_IDLE: Duration = Duration::from_secs(90);

/// The outcome of a delete.
#[derive(Clone, Debug, PartialEq)]
pub enum Deleted<R> {
    /// The object is gone; this was its last state.
    Gone(R),
    /// Finalizers remain: deletion is marked and the object goes once they are removed.
    Pending(R),
}

impl<R> Deleted<R> {
    /// The object in either case.
    pub fn into_object(self) -> R {
        match self {
            Deleted::Gone(r) | Deleted::Pending(r) => r,
        }
    }

    /// True when the object is already gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, Deleted::Gone(_))
    }
}

/// The typed API of one kind (`Task` or `Node`). Cheap to clone.
pub struct Api<R> {
    client: Client,
    kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Api<R> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            kind: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Api<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("server", &self.client.base_url())
            .field("kind", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R: Resource> Api<R> {
    pub(crate) fn new(client: Client) -> Api<R> {
        Api {
            client,
            kind: PhantomData,
        }
    }

    /// The client this API talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn collection(&self) -> Url {
        self.client.url(&[R::PLURAL])
    }

    fn item(&self, name: &str) -> Url {
        self.client.url(&[R::PLURAL, name])
    }

    fn sub(&self, name: &str, sub: &str) -> Url {
        self.client.url(&[R::PLURAL, name, sub])
    }

    /// Objects matching the selectors, ordered by name, with the revision they were read at.
    pub async fn list(&self, params: &ListParams) -> Result<List<R>, Error> {
        let req = self
            .client
            .request(Method::GET, self.collection())
            .query(&params.query());
        self.client.request_json(req).await
    }

    /// The list a page at a time (at most `page_size` items each, 0 for one page of
    /// everything), following `metadata.continue` until the last page. Every page is read at
    /// the first page's revision, so together they are one consistent list; a page whose
    /// revision the server no longer keeps ends the stream with a 410
    /// ([`Error::is_gone`]): list again from the start.
    pub fn list_pages(
        &self,
        params: &ListParams,
        page_size: u64,
    ) -> BoxStream<'static, Result<List<R>, Error>> {
        let api = self.clone();
        let first = ListParams {
            limit: Some(page_size),
            continue_token: None,
            ..params.clone()
        };
        stream::try_unfold(Some(first), move |next| {
            let api = api.clone();
            async move {
                let Some(params) = next else {
                    return Ok(None);
                };
                let page = api.list(&params).await?;
                let after = page
                    .metadata
                    .continue_token
                    .clone()
                    .map(|token| ListParams {
                        continue_token: Some(token),
                        ..params
                    });
                Ok(Some((page, after)))
            }
        })
        .boxed()
    }

    /// One object; 404 is an error ([`Error::is_not_found`]).
    pub async fn get(&self, name: &str) -> Result<R, Error> {
        let req = self.client.request(Method::GET, self.item(name));
        self.client.request_json(req).await
    }

    /// One object, or `None` when there is none by that name.
    pub async fn get_opt(&self, name: &str) -> Result<Option<R>, Error> {
        match self.get(name).await {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an object; 409 AlreadyExists when the name is taken.
    pub async fn create(&self, obj: &R) -> Result<R, Error> {
        let req = self
            .client
            .request(Method::POST, self.collection())
            .json(obj);
        self.client.request_json(req).await
    }

    /// Replaces spec, labels, annotations and finalizers. The body's
    /// `metadata.resourceVersion`, when set, must equal the stored one (else 409 Conflict).
    pub async fn replace(&self, obj: &R) -> Result<R, Error> {
        let req = self
            .client
            .request(Method::PUT, self.item(obj.name()))
            .json(obj);
        self.client.request_json(req).await
    }

    /// Replaces the status subresource, with the same `resourceVersion` rule.
    pub async fn replace_status(&self, obj: &R) -> Result<R, Error> {
        let req = self
            .client
            .request(Method::PUT, self.sub(obj.name(), "status"))
            .json(obj);
        self.client.request_json(req).await
    }

    /// Applies a JSON merge patch to spec, labels, annotations and finalizers.
    pub async fn patch(&self, name: &str, merge_patch: &serde_json::Value) -> Result<R, Error> {
        self.send_patch(self.item(name), merge_patch).await
    }

    /// Applies a JSON merge patch to the status subresource.
    pub async fn patch_status(
        &self,
        name: &str,
        merge_patch: &serde_json::Value,
    ) -> Result<R, Error> {
        self.send_patch(self.sub(name, "status"), merge_patch).await
    }

    async fn send_patch(&self, url: Url, merge_patch: &serde_json::Value) -> Result<R, Error> {
        let body = serde_json::to_vec(merge_patch).map_err(|e| Error::Decode(e.to_string()))?;
        let req = self
            .client
            .request(Method::PATCH, url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(body);
        self.client.request_json(req).await
    }

    /// Deletes an object. Without finalizers it is gone at once; with finalizers it is
    /// marked for deletion and goes once they are removed.
    pub async fn delete(&self, name: &str) -> Result<Deleted<R>, Error> {
        self.send_delete(self.client.request(Method::DELETE, self.item(name)))
            .await
    }

    async fn send_delete(&self, req: reqwest::RequestBuilder) -> Result<Deleted<R>, Error> {
        let resp = self.client.send(req).await?;
        let accepted = resp.status() == StatusCode::ACCEPTED;
        let obj: R = read_json(resp).await?;
        Ok(if accepted {
            Deleted::Pending(obj)
        } else {
            Deleted::Gone(obj)
        })
    }

    /// Deletes the object only if it is still the one with this uid (not a newer object of
    /// the same name); a different uid is a 409 Conflict and nothing is deleted.
    pub async fn delete_uid(&self, name: &str, uid: &str) -> Result<Deleted<R>, Error> {
        let body = serde_json::json!({"preconditions": {"uid": uid}});
        let req = self
            .client
            .request(Method::DELETE, self.item(name))
            .json(&body);
        self.send_delete(req).await
    }

    /// Creates the object or brings its spec, labels and annotations in line with `obj`.
    pub async fn apply(&self, obj: &R, opts: &ApplyOptions) -> Result<ApplyResult<R>, Error> {
        let mut req = self
            .client
            .request(Method::POST, self.sub(obj.name(), "apply"))
            .json(obj);
        if opts.dry_run {
            req = req.query(&[("dryRun", "All")]);
        }
        self.client.request_json(req).await
    }

    /// Reads the object, lets `f` change it and writes it back with the `resourceVersion`
    /// read; on 409 Conflict it reads again and retries (up to 10 tries, with a short
    /// jittered backoff). When `f` returns false nothing is written and the current object is
    /// returned.
    pub async fn update_with(&self, name: &str, f: impl FnMut(&mut R) -> bool) -> Result<R, Error> {
        self.update_loop(name, f, false).await
    }

    /// As [`Api::update_with`], for the status subresource.
    pub async fn update_status_with(
        &self,
        name: &str,
        f: impl FnMut(&mut R) -> bool,
    ) -> Result<R, Error> {
        self.update_loop(name, f, true).await
    }

    async fn update_loop(
        &self,
        name: &str,
        mut f: impl FnMut(&mut R) -> bool,
        status: bool,
    ) -> Result<R, Error> {
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get(name).await?;
            let mut changed = current.clone();
            if !f(&mut changed) {
                return Ok(current);
            }
            changed.metadata_mut().resource_version = current.metadata().resource_version;
            let written = if status {
                self.replace_status(&changed).await
            } else {
                self.replace(&changed).await
            };
            match written {
                Err(e) if e.is_conflict() && attempt < UPDATE_ATTEMPTS => {
                    tracing::debug!(kind = R::KIND, name, attempt, "conflict; reading again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                other => return other,
            }
        }
    }

    /// One raw watch connection: every event after `resource_version` (or, from 0, an
    /// `ADDED` for every current object first). The stream ends when the server closes the
    /// connection; an `ERROR` event carries a 410 when the history no longer reaches back to
    /// `resource_version`. `store_id` is the list's `metadata.storeId` that
    /// `resource_version` came from: a server now serving another store (restored, replaced)
    /// answers 410 Gone rather than resume by revision number into another history.
    pub async fn watch(
        &self,
        params: &ListParams,
        resource_version: u64,
        store_id: Option<&str>,
    ) -> Result<BoxStream<'static, Result<WatchEvent<R>, Error>>, Error> {
        let mut query = params.query();
        query.push(("watch", "true".to_string()));
        query.push(("resourceVersion", resource_version.to_string()));
        if let Some(id) = store_id {
            query.push(("storeId", id.to_string()));
        }
        // Bookmarks keep an idle stream alive within `WATCH_IDLE` and tell the watcher how
        // far it got; Kubernetes (and this server) send them only when asked.
        query.push(("allowWatchBookmarks", "true".to_string()));
        let req = self
            .client
            .stream_request(Method::GET, self.collection())
            .query(&query);
        let resp = self.client.send(req).await?;
        Ok(ndjson_events(resp.bytes_stream(), WATCH_IDLE))
    }

    /// A watch that never ends: list, then watch from the list's revision, resume from the
    /// last revision seen after a disconnect, list again on 410 Gone, and reconnect with
    /// jittered exponential backoff (800 ms to 30 s). See [`crate::watcher`].
    pub fn watcher(
        &self,
        params: ListParams,
    ) -> BoxStream<'static, Result<crate::watcher::Event<R>, Error>> {
        crate::watcher::watcher(self.clone(), params)
    }

    /// One object's state as it changes, as kube-runtime's `watch_object`: `Some(object)`
    /// for its first state and every change, `None` whenever it does not exist (at the
    /// start, or once deleted; it may come back). Built on [`Api::watcher`] with a
    /// `metadata.name` field selector, so it resumes and re-lists by itself; errors are
    /// passed on (the watcher retries after each), for callers to report or give up on.
    pub fn watch_object(&self, name: &str) -> BoxStream<'static, Result<Option<R>, Error>> {
        use crate::watcher::Event;
        let wanted = name.to_string();
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        self.watcher(params)
            .filter_map(move |event| {
                let state = match event {
                    Ok(Event::Restarted(items)) => {
                        Some(Ok(items.into_iter().find(|o| o.name() == wanted)))
                    }
                    Ok(Event::Applied(o)) => (o.name() == wanted).then_some(Ok(Some(o))),
                    Ok(Event::Deleted(o)) => (o.name() == wanted).then_some(Ok(None)),
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(state)
            })
            .boxed()
    }
}

/// Turns a chunked NDJSON body into watch events. A chunk gap longer than `idle` ends the
/// stream with [`Error::Idle`].
pub(crate) fn ndjson_events<R, S>(
    bytes: S,
    idle: Duration,
) -> BoxStream<'static, Result<WatchEvent<R>, Error>>
where
    R: Resource,
    S: futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
{
    struct State<S> {
        bytes: std::pin::Pin<Box<S>>,
        splitter: LineSplitter,
        ready: std::collections::VecDeque<Vec<u8>>,
        done: bool,
    }
    let state = State {
        bytes: Box::pin(bytes),
        splitter: LineSplitter::default(),
        ready: Default::default(),
        done: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((decode::<WatchEvent<R>>(&line), st));
            }
            if st.done {
                return None;
            }
            match tokio::time::timeout(idle, st.bytes.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(Error::Idle(idle)), st));
                }
                Ok(Some(Ok(chunk))) => match st.splitter.push(&chunk) {
                    Ok(lines) => st.ready.extend(lines),
                    Err(too_long) => {
                        st.done = true;
                        return Some((Err(Error::LineTooLong(too_long.0)), st));
                    }
                },
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(Error::Http(e)), st));
                }
                Ok(None) => {
                    st.done = true;
                    st.ready.extend(st.splitter.finish());
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Task;

    fn chunks(
        parts: &[&str],
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + use<> {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from(p.to_string())))
            .collect();
        stream::iter(parts)
    }

    #[tokio::test]
    async fn ndjson_events_across_chunks() {
        let task = serde_json::to_string(&WatchEvent::Added {
            object: Task::test("a"),
        })
        .unwrap();
        let (head, tail) = task.split_at(17);
        let body = [
            head,
            tail,
            "\n{\"type\":\"BOOKMARK\",\"object\":{\"apiVersion\":\"kohakuriver/v1\",\"kind\":\"Task\",\"metadata\":{\"resourceVersion\":\"7\"}}}",
            "\n",
        ];
        let events: Vec<_> = ndjson_events::<Task, _>(chunks(&body), WATCH_IDLE)
            .collect()
            .await;
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0], Ok(WatchEvent::Added { object }) if object.metadata.name == "a")
        );
        assert!(
            matches!(&events[1], Ok(WatchEvent::Bookmark { object }) if object.resource_version() == 7)
        );
    }

    #[tokio::test]
    async fn ndjson_bad_line_is_a_decode_error_and_last_line_needs_no_newline() {
        let body = [
            "{\"type\":\"NOPE\"}\n",
            "{\"type\":\"BOOKMARK\",\"object\":{\"apiVersion\":\"kohakuriver/v1\",\"kind\":\"Task\",\"metadata\":{\"resourceVersion\":\"1\"}}}",
        ];
        let events: Vec<_> = ndjson_events::<Task, _>(chunks(&body), WATCH_IDLE)
            .collect()
            .await;
        assert!(matches!(events[0], Err(Error::Decode(_))));
        assert!(matches!(events[1], Ok(WatchEvent::Bookmark { .. })));
    }

    #[tokio::test]
    async fn a_line_over_the_limit_ends_the_stream_with_a_clear_error() {
        let chunk = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
        let endless = stream::repeat_with(move || Ok(chunk.clone())).take(17);
        let events: Vec<_> = ndjson_events::<Task, _>(endless, WATCH_IDLE)
            .collect()
            .await;
        assert_eq!(events.len(), 1);
        let Err(err) = &events[0] else {
            panic!("an event from a line over the limit")
        };
        assert!(matches!(err, Error::LineTooLong(n) if *n == crate::MAX_LINE_BYTES));
        assert!(err.to_string().contains("16777216 bytes"), "{err}");
    }

    #[tokio::test]
    async fn silent_stream_ends_with_idle() {
        let silent = stream::pending::<Result<bytes::Bytes, reqwest::Error>>();
        let idle = Duration::from_millis(20);
        let events: Vec<_> = ndjson_events::<Task, _>(silent, idle).collect().await;
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], Err(Error::Idle(_))));
    }
}
