//! One span and one set of measurements per RPC, whatever answers it (the
//! guard's refusals included):
//!
//! * a span `rpc` with `rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code` and `request.id`; the guard adds `tenant.id`,
//!   `user.id` and the calling service (ids only: never tokens, passwords or
//!   emails). Handlers run inside it, so their log lines carry its fields;
//! * `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}` and
//!   `grpc_server_handling_seconds{grpc_service, grpc_method}` (a histogram),
//!   measured to the end of the response stream (its trailers);
//! * `tenant_requests_total{tenant, grpc_code}`, where `tenant` is one of the
//!   [`TOP_TENANTS`] busiest tenants of the last minute by id, and `other`
//!   for the rest (bounded cardinality, however many tenants call);
//! * `active_tenants`: the tenants that called in the last minute.
//!
//! Labels and span names come from the policy table: a path it does not know
//! (anyone may send any path, with or without a token) is `unknown`, so
//! callers cannot mint series. Codes are spelled as gRPC's own tooling spells
//! them (`OK`, `PermissionDenied`, `Canceled`). A call dropped before its end
//! (the client went away, or its deadline passed) is counted as `Canceled` or
//! `DeadlineExceeded`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bulkhead_context::TenantId;
use bulkhead_guard::{CallerSlot, Policy, RequestId};
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tracing::Instrument as _;

/// Tenants labelled by id in `tenant_requests_total`; the rest are `other`.
pub const TOP_TENANTS: usize = 20;

/// How long a window of tenant counts lasts.
const WINDOW: Duration = Duration::from_secs(60);

/// Most tenants counted in one window (beyond it, newcomers count as `other`).
const MAX_COUNTED: usize = 10_000;

/// The layer (outside the guard, inside the request id).
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    policy: Arc<Policy>,
    tenants: Arc<Mutex<TenantWindow>>,
}

impl ObserveLayer {
    /// Measures the calls of a server whose methods are `policy`'s.
    #[must_use]
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            tenants: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            policy: Arc::clone(&self.policy),
            tenants: Arc::clone(&self.tenants),
        }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    policy: Arc<Policy>,
    tenants: Arc<Mutex<TenantWindow>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Observe<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path();
        let (service, method) = if self.policy.rule(path).is_some() {
            split_path(path)
        } else {
            ("unknown".to_owned(), "unknown".to_owned())
        };
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(bulkhead_guard::grpc_timeout);
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "rpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service.as_str(),
            rpc.method = method.as_str(),
            rpc.grpc.status_code = tracing::field::Empty,
            request.id = request_id.as_str(),
            tenant.id = tracing::field::Empty,
            user.id = tracing::field::Empty,
            service.caller = tracing::field::Empty,
        );
        // The caller's trace continues here (before anything starts the span).
        bulkhead_telemetry::propagation::continue_from_headers(&span, request.headers());
        let slot = CallerSlot::default();
        request.extensions_mut().insert(slot.clone());
        // The guard runs in `call`: inside the span, so it can fill it in.
        let future = span.in_scope(|| self.inner.call(request));
        let call = Call {
            service,
            method,
            slot,
            started,
            deadline,
            done: false,
            span: span.clone(),
            tenants: Arc::clone(&self.tenants),
        };
        Box::pin(
            async move {
                let mut call = call;
                let response = match future.await {
                    Ok(response) => response,
                    Err(err) => {
                        call.finish(tonic::Code::Unavailable);
                        return Err(err);
                    }
                };
                // A trailers-only answer (a refusal, an error) has its status in
                // the headers; otherwise it comes with the body's trailers.
                let call = match grpc_code(response.headers()) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|body| Observed { body, call }))
            }
            .instrument(span),
        )
    }
}

/// `/pkg.Service/Method` as (service, method).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// The `grpc-status` of `headers`, if there is one.
fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// A code as gRPC's own tooling (and go-grpc-prometheus dashboards) spell it.
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        tonic::Code::Cancelled => "Canceled".to_owned(),
        other => format!("{other:?}"),
    }
}

/// What is measured when the call ends; a call dropped before that is
/// measured as it is dropped.
struct Call {
    service: String,
    method: String,
    slot: CallerSlot,
    started: Instant,
    /// The caller's deadline (`grpc-timeout`), if it sent one.
    deadline: Option<Duration>,
    done: bool,
    span: tracing::Span,
    tenants: Arc<Mutex<TenantWindow>>,
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            let expired = self
                .deadline
                .is_some_and(|deadline| self.started.elapsed() >= deadline);
            self.finish(if expired {
                tonic::Code::DeadlineExceeded
            } else {
                tonic::Code::Cancelled
            });
        }
    }
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code_name = code_name(code);
        self.span.record("rpc.grpc.status_code", i32::from(code));
        metrics::counter!("grpc_server_handled_total",
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone(),
            "grpc_code" => code_name.clone())
        .increment(1);
        metrics::histogram!("grpc_server_handling_seconds",
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone())
        .record(self.started.elapsed().as_secs_f64());
        if let Some(tenant) = self.slot.tenant() {
            let (label, active) = self
                .tenants
                .lock()
                .map(|mut w| w.count(tenant, Instant::now()))
                .unwrap_or_else(|_| ("other".to_owned(), 0));
            metrics::counter!("tenant_requests_total", "tenant" => label, "grpc_code" => code_name)
                .increment(1);
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            metrics::gauge!("active_tenants").set(active as f64);
        }
    }
}

/// A response body that measures the call when its trailers pass (or, if the
/// client goes away first, when it is dropped: the call's own `Drop`).
pub struct Observed<B> {
    body: B,
    call: Option<Call>,
}

impl<B> std::fmt::Debug for Observed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("pending", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code)
                    && let Some(mut call) = self.call.take()
                {
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut call) = self.call.take() {
                    call.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: nothing says how it went.
                if let Some(mut call) = self.call.take() {
                    call.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Requests per tenant in the current window, and the tenants labelled by id
/// (the busiest of the last window; while it fills, the first comers).
#[derive(Debug)]
struct TenantWindow {
    started: Instant,
    counts: HashMap<TenantId, u64>,
    labelled: HashSet<TenantId>,
    active_before: usize,
}

impl Default for TenantWindow {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counts: HashMap::new(),
            labelled: HashSet::new(),
            active_before: 0,
        }
    }
}

impl TenantWindow {
    /// Counts a request of `tenant`; its label, and the tenants active in the
    /// last full window (or this one, if busier).
    fn count(&mut self, tenant: TenantId, now: Instant) -> (String, usize) {
        if now.duration_since(self.started) >= WINDOW {
            let mut busiest: Vec<(TenantId, u64)> = self.counts.drain().collect();
            busiest.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            self.active_before = busiest.len();
            self.labelled = busiest
                .into_iter()
                .take(TOP_TENANTS)
                .map(|(t, _)| t)
                .collect();
            self.started = now;
        }
        if self.counts.len() < MAX_COUNTED || self.counts.contains_key(&tenant) {
            *self.counts.entry(tenant).or_default() += 1;
        }
        if self.labelled.len() < TOP_TENANTS {
            self.labelled.insert(tenant);
        }
        let label = if self.labelled.contains(&tenant) {
            tenant.to_string()
        } else {
            "other".to_owned()
        };
        (label, self.active_before.max(self.counts.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_stay_bounded_and_follow_the_busiest() {
        let mut window = TenantWindow::default();
        let start = window.started;
        let tenants: Vec<TenantId> = (0..50).map(|_| TenantId::new_v7()).collect();
        let mut labels = HashSet::new();
        for (i, t) in tenants.iter().enumerate() {
            // Tenant 49 is by far the busiest, but comes last.
            let calls = if i == 49 { 100 } else { 1 };
            for _ in 0..calls {
                labels.insert(window.count(*t, start).0);
            }
        }
        // The first 20 by id, the rest as `other`.
        assert_eq!(labels.len(), TOP_TENANTS + 1);
        assert!(labels.contains("other"));
        assert_eq!(window.count(tenants[49], start).0, "other");
        // The next window labels the busiest of the last one.
        let (label, active) = window.count(tenants[49], start + WINDOW);
        assert_eq!(label, tenants[49].to_string());
        assert_eq!(active, 50);
    }

    #[test]
    fn codes_read_as_grpc_writes_them() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::PermissionDenied), "PermissionDenied");
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/bulkhead.task.v1.TaskService/GetTask"),
            (
                "bulkhead.task.v1.TaskService".to_owned(),
                "GetTask".to_owned()
            )
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
    }
}
