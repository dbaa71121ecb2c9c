//! The limits every HTTP server of ours holds to, whoever its clients are: how long a
//! client may take to send its request head and its body, and how many connections may be
//! open at once. Slow clients (one byte every few seconds) otherwise hold a connection, and
//! a task, for as long as they like.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long clients may take and how many may be connected; see [`crate::serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's head (request line and headers) must arrive within this long of the
    /// server starting to wait for it (hyper's `header_read_timeout`), else the connection
    /// is closed: on a new connection, and between requests on a keep-alive one, so it is
    /// also the idle keep-alive timeout. Flag `--header-timeout`.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this long of its head; else reading it
    /// fails (the handler answers an error) and the connection is closed. A deadline, not
    /// an idle timer, so a client sending one byte every few seconds is cut too. Flag
    /// `--body-timeout`.
    pub body_timeout: Duration,
    /// At most this many connections are open at once; one more is accepted and closed at
    /// once (see [`crate::serve`] for why). Flag `--max-connections`.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The API server's defaults: 10 s for headers, 30 s for a body, 1024 connections.
    pub const fn server() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }

    /// The agent's defaults: as the server's, with 256 connections (its only client is the
    /// server's log proxy, one connection per log being read).
    pub const fn agent() -> HttpLimits {
        HttpLimits {
            max_connections: 256,
            ..HttpLimits::server()
        }
    }
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits::server()
    }
}

/// A request body that fails once its deadline passes before it has ended.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must have ended `limit` from now.
    pub(crate) fn new(inner: B, limit: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// The error a body reports when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive within {}s; send it faster or raise the server's --body-timeout",
    .0.as_secs_f64()
)]
pub struct BodyTimeout(pub Duration);

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// One byte, then nothing ever again: a client that stalls mid-body.
    struct Stalled(bool);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_deadline_fails_naming_the_flag() {
        let mut body = DeadlineBody::new(Stalled(false), Duration::from_secs(2));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"a"));
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("within 2s"), "{err}");
        assert!(err.to_string().contains("--body-timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_within_its_deadline_is_read_whole() {
        let body = DeadlineBody::new(
            http_body_util::Full::new(Bytes::from_static(b"whole")),
            Duration::from_secs(2),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, Bytes::from_static(b"whole"));
    }
}
