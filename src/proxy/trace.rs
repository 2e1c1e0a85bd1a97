//! The spans of the data plane (SPEC §8): one routing span per request and one client span per
//! upstream attempt with the OpenTelemetry GenAI attributes, lasting until the answer's last
//! byte. Never prompt or answer text unless `telemetry.capture_content` is on.

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::catalog::{Strategy, Target};
use crate::dialect::ResponseMeta;
use crate::telemetry::Sampling;
use crate::types::{Operation, ProviderKind, Usage};

/// `gen_ai.operation.name` of an operation.
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "chat",
        Operation::Completions => "text_completion",
        Operation::Embeddings => "embeddings",
    }
}

/// `gen_ai.provider.name` of a provider type.
fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Mock => "switchyard.mock",
        ProviderKind::Broker => "switchyard.broker",
    }
}

/// A routing span at `target` (its name, `route`, is its OpenTelemetry name).
macro_rules! routing_span {
    ($target:literal, $model:expr, $selection:expr) => {
        tracing::info_span!(
            target: $target,
            "route",
            "switchyard.requested_model" = $model,
            "switchyard.selection_call" = $selection,
            "switchyard.route" = Empty,
            "switchyard.strategy" = Empty,
            "switchyard.candidates" = Empty,
            "switchyard.filtered" = Empty,
            "switchyard.reason" = Empty,
            "switchyard.target" = Empty,
            "switchyard.outcome" = Empty,
            "switchyard.cache" = Empty,
        )
    };
}

/// The routing span of a request for `model` (a selection call's is marked); a light one (the
/// same fields, a callsite the trace layer never admits) when the request's spans are not
/// exported.
pub fn routing_span(model: &str, selection: bool, sampled: bool) -> tracing::Span {
    if sampled {
        routing_span!("switchyard::route", model, selection)
    } else {
        routing_span!("switchyard::route::untraced", model, selection)
    }
}

/// Records the plan on the routing span: route, strategy, the candidates in the order they will
/// be tried, and the ones filtered out (`target=why`).
pub fn record_plan(span: &tracing::Span, route: &str, strategy: Strategy, order: &[&str], filtered: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("switchyard.route", route);
    span.record("switchyard.strategy", strategy.reason());
    span.record("switchyard.candidates", order.join(",").as_str());
    if !filtered.is_empty() {
        span.record("switchyard.filtered", filtered);
    }
}

/// Records the target that answered and why.
pub fn record_answered(span: &tracing::Span, target: &str, reason: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("switchyard.target", target);
    span.record("switchyard.reason", reason);
    span.record("switchyard.outcome", "ok");
}

/// Records an answer from the response cache: the route, the target that made the original.
pub fn record_hit(span: &tracing::Span, route: &str, provider: &str, model: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("switchyard.route", route);
    record_answered(span, &format!("provider/{provider}/{model}"), "cache_hit");
}

/// Records what the response cache said of the request (`hit`, `miss`, `bypass`).
pub fn record_cache(span: &tracing::Span, status: &'static str) {
    if !span.is_disabled() {
        span.record("switchyard.cache", status);
    }
}

/// Records how a request without an answer ended.
pub fn record_unanswered(span: &tracing::Span, outcome: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("switchyard.outcome", outcome);
    if exported(span) {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// The client span of one upstream attempt, named `{operation} {model}`; a light one, with only
/// what the log lines show, when the request's spans are not exported.
pub fn attempt_span(op: Operation, target: &Target, attempt: usize, stream: bool, sampled: bool) -> tracing::Span {
    if !sampled {
        return tracing::info_span!(
            target: "switchyard::attempt::untraced",
            "attempt",
            "switchyard.provider" = %target.provider.id,
            "switchyard.route" = %target.route,
            "switchyard.attempt" = i64::try_from(attempt).unwrap_or(i64::MAX),
            "switchyard.stream" = stream,
        );
    }
    let operation = operation_name(op);
    tracing::info_span!(
        target: "switchyard::attempt",
        "attempt",
        otel.name = %format_args!("{operation} {}", target.model.name),
        otel.kind = "client",
        "gen_ai.operation.name" = operation,
        "gen_ai.provider.name" = provider_name(target.provider.kind),
        "gen_ai.request.model" = %target.model.name,
        "switchyard.provider" = %target.provider.id,
        "switchyard.route" = %target.route,
        "switchyard.attempt" = i64::try_from(attempt).unwrap_or(i64::MAX),
        "switchyard.stream" = stream,
    )
}

/// Whether `span` is one the collector receives (a sampled request's; not a light one).
fn exported(span: &tracing::Span) -> bool {
    span.metadata().is_some_and(|m| !m.target().ends_with(crate::telemetry::UNTRACED))
}

/// Records the request's input on its attempt's span (only with `capture_content`).
pub fn record_input(span: &tracing::Span, input: &str) {
    if !exported(span) {
        return;
    }
    span.set_attribute("gen_ai.input.messages", input.to_owned());
}

/// Records what an answer said on its attempt's span: response id and model, finish reasons,
/// usage, and (only with `capture_content`) the generated text. Attributes only the collector
/// reads are set on the OpenTelemetry span directly (not through `tracing`'s fields, which every
/// layer visits).
pub fn record_response(span: &tracing::Span, meta: &ResponseMeta, usage: Usage, text: Option<&str>) {
    if !exported(span) {
        return;
    }
    if let Some(id) = &meta.id {
        span.set_attribute("gen_ai.response.id", id.clone());
    }
    if let Some(m) = &meta.model {
        span.set_attribute("gen_ai.response.model", m.clone());
    }
    if !meta.finish_reasons.is_empty() {
        let reasons: Vec<opentelemetry::StringValue> =
            meta.finish_reasons.iter().map(|r| opentelemetry::StringValue::from(r.clone())).collect();
        span.set_attribute("gen_ai.response.finish_reasons", opentelemetry::Value::Array(reasons.into()));
    }
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    span.set_attribute("gen_ai.usage.input_tokens", n(usage.prompt_tokens));
    span.set_attribute("gen_ai.usage.output_tokens", n(usage.completion_tokens));
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", n(usage.cached_tokens));
    span.set_attribute("gen_ai.usage.cache_creation.input_tokens", n(usage.cache_write_tokens));
    if let Some(t) = text {
        span.set_attribute("gen_ai.output.messages", t.to_owned());
    }
}

/// Records the upstream's HTTP status on an attempt's span.
pub fn record_status(span: &tracing::Span, status: u16) {
    if !exported(span) {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
}

/// Marks a span failed with `error.type` (a low-cardinality kind, never upstream text).
pub fn record_error(span: &tracing::Span, kind: &'static str) {
    if !exported(span) {
        return;
    }
    span.set_attribute("error.type", kind);
    span.set_status(opentelemetry::trace::Status::error(""));
}

/// The W3C trace-context headers of an attempt, for its upstream: its span's context when the
/// request is sampled, else the request's unsampled context (flags `00`).
pub fn context_headers(span: &tracing::Span, sampling: &Sampling) -> Vec<(&'static str, String)> {
    match sampling {
        Sampling::Off => return Vec::new(),
        Sampling::Unsampled(u) => return u.headers(),
        Sampling::Sampled if span.is_disabled() => return Vec::new(),
        Sampling::Sampled => {}
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut headers = Headers(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    headers.0
}

struct Headers(Vec<(&'static str, String)>);

impl opentelemetry::propagation::Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none; send none.
        if value.is_empty() {
            return;
        }
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}
