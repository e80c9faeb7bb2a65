//! A call's request message must arrive within a bound of the call being
//! admitted: [`crate::MESSAGE_WITHIN`], or [`crate::PUBLIC_MESSAGE_WITHIN`]
//! for the public methods anyone may call without a token. The layer sits
//! inside the guard: a call the guard admitted with an identity carries its
//! [`RequestContext`]; one without is public (the guard refused the rest). The guard admits a
//! call with an identity on its headers, and the call then holds a place
//! (its tenant's, or a service's) and one of the server's in-flight slots
//! until its handler ends; the handler starts only once the message is in.
//! Without a bound a caller could send headers alone and hold both until the
//! handler timeout.
//!
//! Every RPC of the suite, and health checks, take one message: a request
//! body that has not ended by then fails with `DEADLINE_EXCEEDED` "request
//! message not received in time", which the handler's decoding returns as its
//! status. Reflection streams both ways for as long as its client likes, and
//! holds no place: it is not bounded.
//!
//! A public call is admitted only once its message has come in full (the
//! guard hands it over as a [`PendingAdmission`],
//! `GuardLayer::admitting_public_calls_on_their_message`): the body takes its
//! places as it ends, or fails with the guard's refusal (`UNAVAILABLE` with
//! RetryInfo) when there are none. A caller sending a public method's headers
//! alone holds no place while the bound runs.
//!
//! The clock starts when the handler first reads the body (after any wait for
//! a place), and the timer is set only if the body is not complete by then (a
//! unary message usually comes with its headers): the common call pays one
//! `Instant::now()`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bulkhead_guard::{PendingAdmission, RequestContext};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Layer wrapping every request body in a [`MessageWithinBody`].
#[derive(Debug, Clone, Copy)]
pub struct MessageWithinLayer {
    within: Duration,
    public_within: Duration,
}

impl MessageWithinLayer {
    /// Request messages must arrive within `within` of their call's first
    /// read, or `public_within` for calls without an identity.
    #[must_use]
    pub const fn new(within: Duration, public_within: Duration) -> Self {
        Self {
            within,
            public_within,
        }
    }
}

impl<S> tower_layer::Layer<S> for MessageWithinLayer {
    type Service = MessageWithin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageWithin {
            inner,
            bounds: *self,
        }
    }
}

/// See the module's notes.
#[derive(Debug, Clone)]
pub struct MessageWithin<S> {
    inner: S,
    bounds: MessageWithinLayer,
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
        let within = if request.extensions().get::<RequestContext>().is_some() {
            Some(self.bounds.within)
        } else if bulkhead_guard::REFLECTION.contains(&request.uri().path()) {
            None
        } else {
            Some(self.bounds.public_within)
        };
        let pending = request.extensions().get::<PendingAdmission>().cloned();
        self.inner.call(request.map(|body| {
            let mut body = MessageWithinBody::new(body, within);
            body.pending = pending;
            body
        }))
    }
}

/// A request body that fails when it has not ended within its bound of its
/// first read.
#[derive(Debug)]
pub struct MessageWithinBody<B> {
    inner: B,
    /// None: not bounded (or no longer: the body ended or failed).
    within: Option<Duration>,
    /// When the body must have ended: `within` of its first read.
    due: Option<Instant>,
    /// Set when the body first had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The bound passed, or the call found no place: the body failed, and
    /// ends there.
    expired: bool,
    /// A public call's admission, taken as the body ends.
    pending: Option<PendingAdmission>,
}

impl<B> MessageWithinBody<B> {
    const fn new(inner: B, within: Option<Duration>) -> Self {
        Self {
            inner,
            within,
            due: None,
            timer: None,
            expired: false,
            pending: None,
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
        if this.expired {
            return Poll::Ready(None);
        }
        let due = this
            .within
            .map(|within| *this.due.get_or_insert_with(|| Instant::now() + within));
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let Some(due) = due else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(this.fail(not_in_time()));
            }
        };
        if this.is_last(&frame) {
            return Poll::Ready(this.ended(frame));
        }
        if due.is_some_and(|due| Instant::now() >= due) {
            // Frames always ready (never Pending) past the bound.
            return Poll::Ready(this.fail(not_in_time()));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // Not ended for its reader while a public call's admission waits:
        // the reader polls on, and the admission is taken.
        self.expired || (self.pending.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.expired {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B> MessageWithinBody<B>
where
    B: Body<Data = bytes::Bytes, Error = tonic::Status> + Unpin,
{
    /// Whether `frame` is the body's last: its end, an error, a trailers
    /// frame (its reader stops there), or the data frame that ended it.
    fn is_last(&self, frame: &Option<Result<Frame<bytes::Bytes>, tonic::Status>>) -> bool {
        match frame {
            None | Some(Err(_)) => true,
            Some(Ok(frame)) => frame.is_trailers() || self.inner.is_end_stream(),
        }
    }

    /// `frame`, the body's last, once a public call's admission is taken (no
    /// more timing after it); the refusal in its place when there is no room.
    fn ended(
        &mut self,
        frame: Option<Result<Frame<bytes::Bytes>, tonic::Status>>,
    ) -> Option<Result<Frame<bytes::Bytes>, tonic::Status>> {
        self.within = None;
        self.timer = None;
        let Some(pending) = self.pending.take() else {
            return frame;
        };
        match &frame {
            // The call fails: it takes no place. But tonic reads a request
            // body that ends CANCELLED (a client's RST_STREAM) as one that
            // ended cleanly and runs the handler: a public call cancelled
            // before its admission must fail otherwise.
            Some(Err(status)) if status.code() == tonic::Code::Cancelled => self.fail(
                tonic::Status::aborted("call cancelled before its admission"),
            ),
            Some(Err(_)) => frame,
            _ => match pending.admit() {
                Ok(()) => frame,
                Err(refused) => {
                    metrics::counter!("tenant_context_error_total", "kind" => refused.kind())
                        .increment(1);
                    self.fail(refused.into())
                }
            },
        }
    }

    /// Fails the body with `status`: it ends there.
    fn fail(
        &mut self,
        status: tonic::Status,
    ) -> Option<Result<Frame<bytes::Bytes>, tonic::Status>> {
        self.expired = true;
        self.within = None;
        self.timer = None;
        self.pending = None;
        Some(Err(status))
    }
}

fn not_in_time() -> tonic::Status {
    tonic::Status::deadline_exceeded("request message not received in time")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    const WITHIN: Duration = Duration::from_secs(10);

    /// A body of a message (its data frame comes on a signal), whose end
    /// comes on a second signal.
    struct Signals {
        message: tokio::sync::oneshot::Sender<()>,
        end: tokio::sync::oneshot::Sender<()>,
    }

    fn held_back() -> (Signals, MessageWithinBody<tonic::body::Body>) {
        let (message, message_sent) = tokio::sync::oneshot::channel::<()>();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let frames = futures_util::stream::unfold(
            (Some(message_sent), Some(ended)),
            |(message_sent, ended)| async move {
                if let Some(sent) = message_sent {
                    let _ = sent.await;
                    let frame = Frame::data(bytes::Bytes::from_static(b"message"));
                    return Some((Ok::<_, tonic::Status>(frame), (None, ended)));
                }
                let _ = ended?.await;
                None
            },
        );
        let frames = futures_util::StreamExt::fuse(frames);
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        (
            Signals { message, end },
            MessageWithinBody::new(body, Some(WITHIN)),
        )
    }

    async fn next(
        body: &mut MessageWithinBody<tonic::body::Body>,
    ) -> Option<Result<Frame<bytes::Bytes>, tonic::Status>> {
        tokio::time::timeout(WITHIN * 3, body.frame())
            .await
            .expect("the body answers within the bound")
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_held_back_past_the_bound_fails_deadline_exceeded() {
        let (_signals, mut body) = held_back();
        let started = Instant::now();
        let err = next(&mut body)
            .await
            .expect("a frame")
            .expect_err("timed out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(err.message(), "request message not received in time");
        assert_eq!(started.elapsed(), WITHIN);
        assert!(next(&mut body).await.is_none(), "then it ends");
    }

    /// The message came, its end never does (no END_STREAM): the same.
    #[tokio::test(start_paused = true)]
    async fn a_message_whose_end_never_comes_fails_at_the_bound() {
        let (signals, mut body) = held_back();
        let started = Instant::now();
        signals.message.send(()).expect("send");
        let frame = next(&mut body).await.expect("a frame").expect("in time");
        assert_eq!(frame.into_data().expect("data"), "message");
        let err = next(&mut body)
            .await
            .expect("a frame")
            .expect_err("timed out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(started.elapsed(), WITHIN);
        drop(signals.end);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_in_time_passes_unchanged_and_is_not_timed_after() {
        let (signals, mut body) = held_back();
        tokio::spawn(async move {
            tokio::time::sleep(WITHIN - Duration::from_secs(1)).await;
            let _ = signals.message.send(());
            let _ = signals.end.send(());
        });
        let frame = next(&mut body).await.expect("a frame").expect("in time");
        assert_eq!(frame.into_data().expect("data"), "message");
        assert!(next(&mut body).await.is_none(), "then its end");
        tokio::time::sleep(WITHIN * 2).await;
        assert!(next(&mut body).await.is_none(), "no failure after its end");
    }

    /// A body whose frames are always ready (it never waits) still ends at
    /// the bound.
    #[tokio::test(start_paused = true)]
    async fn frames_always_ready_fail_at_the_bound() {
        let frames = futures_util::stream::repeat_with(|| {
            Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"more")))
        });
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        let mut body = MessageWithinBody::new(body, Some(WITHIN));
        assert!(next(&mut body).await.expect("a frame").is_ok());
        tokio::time::advance(WITHIN).await;
        let err = next(&mut body)
            .await
            .expect("a frame")
            .expect_err("timed out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(next(&mut body).await.is_none(), "then it ends");
    }

    /// A public call takes its places as its body ends, not before; with
    /// none left, its body fails with the guard's refusal in place of its
    /// last frame.
    #[tokio::test(start_paused = true)]
    async fn a_public_call_is_admitted_as_its_message_ends() {
        use bulkhead_guard::{Fairness, FairnessConfig, PendingAdmission, Who};
        let fairness = Fairness::new(FairnessConfig {
            public_in_flight: 1,
            ..FairnessConfig::for_pool(16)
        });
        let (signals, mut body) = held_back();
        let pending = PendingAdmission::new(fairness.clone());
        body.pending = Some(pending.clone());
        assert!(!body.is_end_stream(), "its reader polls on");
        let reading = tokio::spawn(async move {
            let frame = next(&mut body).await.expect("a frame").expect("in time");
            (frame, next(&mut body).await)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!pending.admitted(), "headers alone hold no place");
        signals.message.send(()).expect("send");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!pending.admitted(), "nor does a message not ended");
        signals.end.send(()).expect("send");
        let (frame, end) = reading.await.expect("task");
        assert_eq!(frame.into_data().expect("data"), "message");
        assert!(end.is_none(), "then its end");
        assert!(pending.admitted(), "admitted as it ended");

        // The public share (one place) is held now: the next call is refused.
        let (signals, mut body) = held_back();
        body.pending = Some(PendingAdmission::new(fairness.clone()));
        signals.message.send(()).expect("send");
        signals.end.send(()).expect("send");
        let frame = next(&mut body)
            .await
            .expect("a frame")
            .expect("its message");
        assert_eq!(frame.into_data().expect("data"), "message");
        let refused = next(&mut body)
            .await
            .expect("a frame")
            .expect_err("no place");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(next(&mut body).await.is_none(), "then it ends");
        drop(pending);
        assert!(fairness.admit_now(Who::Public).is_ok(), "given back");
    }

    /// A public call whose client cancels it (RST_STREAM) after its message
    /// but before its end fails with a status tonic does not read as a
    /// clean end (CANCELLED is, for a request body: its handler would run
    /// with no place taken), and takes no place.
    #[tokio::test]
    async fn a_public_call_cancelled_before_its_admission_fails_without_a_place() {
        use bulkhead_guard::{Fairness, FairnessConfig, PendingAdmission};
        let frames = futures_util::stream::iter([
            Ok(Frame::data(bytes::Bytes::from_static(b"message"))),
            Err(tonic::Status::cancelled("reset by the client")),
        ]);
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        let mut body = MessageWithinBody::new(body, Some(WITHIN));
        let pending = PendingAdmission::new(Fairness::new(FairnessConfig::for_pool(16)));
        body.pending = Some(pending.clone());
        let frame = next(&mut body)
            .await
            .expect("a frame")
            .expect("its message");
        assert_eq!(frame.into_data().expect("data"), "message");
        let failed = next(&mut body)
            .await
            .expect("a frame")
            .expect_err("cancelled");
        assert_eq!(failed.code(), tonic::Code::Aborted, "{failed:?}");
        assert!(next(&mut body).await.is_none(), "then it ends");
        assert!(!pending.admitted(), "no place taken");
    }

    /// The clock starts at the first read (after any wait for a place).
    #[tokio::test(start_paused = true)]
    async fn the_bound_counts_from_the_first_read() {
        let (signals, mut body) = held_back();
        tokio::time::sleep(WITHIN * 2).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = signals.message.send(());
            let _ = signals.end.send(());
        });
        let frame = next(&mut body).await.expect("a frame").expect("in time");
        assert_eq!(frame.into_data().expect("data"), "message");
    }
}
