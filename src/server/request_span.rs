//! The server span of every request (SPEC §8): named `{method} {route}`, continued from the
//! client's W3C `traceparent`, carrying the request id, the node and (once authenticated) the
//! user id; it lives until the response's last byte, so a stream's span covers the stream. Log
//! lines of the request carry its fields, the trace id among them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::HttpMessage as _;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use bytes::Bytes;
use opentelemetry::trace::{TraceContextExt as _, TraceId};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::telemetry::{REQUEST_TARGET, Sampling, UnsampledTrace};
use crate::types::RequestId;

struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(actix_web::http::header::HeaderName::as_str).collect()
    }
}

/// Opens the span of `req`: without trace export, a light one that only gives its log lines the
/// request id (and the user id once known). With export, sampling is decided here, once: the
/// client's `traceparent` decides for its trace, else the configured ratio. A sampled request
/// gets the full server span; an unsampled one a light span with its trace id. The decision
/// ([`Sampling`]) goes into the request's extensions.
pub fn start(req: &ServiceRequest, id: RequestId, node: &str) -> tracing::Span {
    if !crate::telemetry::otlp::exporting() {
        return tracing::info_span!(
            target: "switchyard::request::untraced",
            "request",
            "switchyard.request_id" = %id,
            "switchyard.user_id" = Empty,
        );
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&opentelemetry::Context::new(), &Headers(req.headers()))
    });
    let client = parent.span().span_context().clone();
    let sampled = if client.is_valid() {
        client.is_sampled()
    } else {
        let trace_id = RandomIdGenerator::default().new_trace_id();
        if !crate::telemetry::otlp::sample_root(trace_id) {
            return unsampled(req, id, trace_id, None);
        }
        true
    };
    if !sampled {
        let state = client.trace_state().header();
        let state = (!state.is_empty()).then(|| Arc::from(state));
        return unsampled(req, id, client.trace_id(), state);
    }
    let method = req.method().as_str();
    let route = req.match_pattern();
    let route = route.as_deref().unwrap_or("unmatched");
    let span = tracing::info_span!(
        target: REQUEST_TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        "http.request.method" = method,
        "http.route" = route,
        "switchyard.request_id" = %id,
        "switchyard.node" = node,
        "switchyard.user_id" = Empty,
        trace_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    req.extensions_mut().insert(Sampling::Sampled);
    if client.is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// The light span of a request that is not sampled, and its trace context for the upstreams.
fn unsampled(req: &ServiceRequest, id: RequestId, trace_id: TraceId, tracestate: Option<Arc<str>>) -> tracing::Span {
    let span_id = RandomIdGenerator::default().new_span_id();
    req.extensions_mut().insert(Sampling::Unsampled(UnsampledTrace { trace_id, span_id, tracestate }));
    tracing::info_span!(
        target: "switchyard::request::untraced",
        "request",
        "switchyard.request_id" = %id,
        "switchyard.user_id" = Empty,
        trace_id = %trace_id,
    )
}

/// Records the response status on the span (5xx marks it failed).
pub fn status(span: &tracing::Span, status: StatusCode) {
    if !crate::telemetry::otlp::exporting() || span.metadata().is_none_or(|m| m.target() != REQUEST_TARGET) {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// A response body that holds the request's span until its last byte (or until it is dropped:
/// the client left). The span is not entered at each poll (log lines of a stream are written in
/// its attempt's span, a child of this one): it is entered once when the body is dropped after
/// its last byte, which is its end.
pub struct SpanBody<B> {
    inner: B,
    span: tracing::Span,
}

impl<B> SpanBody<B> {
    /// `inner`, holding `span`.
    pub fn new(inner: B, span: tracing::Span) -> Self {
        Self { inner, span }
    }
}

impl<B> Drop for SpanBody<B> {
    fn drop(&mut self) {
        self.span.in_scope(|| {});
    }
}

impl<B: MessageBody + Unpin> MessageBody for SpanBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
