//! A call's request message must arrive within [`crate::MESSAGE_WITHIN`] of
//! its headers. The guard admits a call on its headers, and the call then
//! holds a place of its tenant's share and one of the server's in-flight
//! slots until its handler ends; the handler starts only once the message
//! is in (every RPC here takes one message). Without this bound a caller
//! could send headers alone and hold both until the handler timeout.
//!
//! A request body that has not ended by then fails with `DEADLINE_EXCEEDED`
//! "request message not received in time", which the handler's decoding
//! returns as its status. The timer is set only if the body is not already
//! complete when first read (a unary message usually comes with its
//! headers): the common call pays one `Instant::now()`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Layer wrapping every request body in a [`MessageWithinBody`].
#[derive(Debug, Clone, Copy)]
pub struct MessageWithinLayer {
    within: Duration,
}

impl MessageWithinLayer {
    /// Request messages must arrive within `within` of their headers.
    #[must_use]
    pub const fn new(within: Duration) -> Self {
        Self { within }
    }
}

impl<S> tower_layer::Layer<S> for MessageWithinLayer {
    type Service = MessageWithin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageWithin {
            inner,
            within: self.within,
        }
    }
}

/// See the module's notes.
#[derive(Debug, Clone)]
pub struct MessageWithin<S> {
    inner: S,
    within: Duration,
}

impl<S, B> tower_service::Service<http::Request<B>> for MessageWithin<S>
where
    S: tower_service::Service<http::Request<MessageWithinBody<B>>>,
    B: Body<Data = bytes::Bytes, Error = tonic::Status> + Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let by = Instant::now() + self.within;
        self.inner
            .call(request.map(|body| MessageWithinBody::new(body, by)))
    }
}

/// A request body that fails once `by` has passed before its end.
#[derive(Debug)]
pub struct MessageWithinBody<B> {
    inner: B,
    by: Instant,
    /// Set when the body first had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The body ended (or failed): no more timing.
    done: bool,
}

impl<B> MessageWithinBody<B> {
    const fn new(inner: B, by: Instant) -> Self {
        Self {
            inner,
            by,
            timer: None,
            done: false,
        }
    }
}

impl<B> Body for MessageWithinBody<B>
where
    B: Body<Data = bytes::Bytes, Error = tonic::Status> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.done {
            return polled;
        }
        match polled {
            Poll::Pending => {
                let by = this.by;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(by)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
                    "request message not received in time",
                ))))
            }
            Poll::Ready(frame) => {
                if frame.as_ref().is_none_or(Result::is_err) || this.inner.is_end_stream() {
                    this.done = true;
                    this.timer = None;
                }
                Poll::Ready(frame)
            }
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

    /// A body whose only frame comes on a signal.
    fn held_back() -> (
        tokio::sync::oneshot::Sender<()>,
        MessageWithinBody<tonic::body::Body>,
    ) {
        let (send, sent) = tokio::sync::oneshot::channel::<()>();
        let frames = futures_util::stream::once(async move {
            let _ = sent.await;
            Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"message")))
        });
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        (
            send,
            MessageWithinBody::new(body, Instant::now() + Duration::from_secs(10)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_held_back_past_the_bound_fails_deadline_exceeded() {
        use http_body_util::BodyExt as _;
        let (_send, mut body) = held_back();
        let started = Instant::now();
        let err = body.frame().await.expect("a frame").expect_err("timed out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_in_time_passes_unchanged() {
        use http_body_util::BodyExt as _;
        let (send, mut body) = held_back();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            let _ = send.send(());
        });
        let frame = body.frame().await.expect("a frame").expect("in time");
        assert_eq!(frame.into_data().expect("data"), "message");
        assert!(body.frame().await.is_none(), "then its end");
    }
}
