//! Logs, traces and metrics. Logs are structured `tracing` events that never carry tokens, keys
//! or prompt text; each line of a request carries its request id and trace id (from the request's
//! span). Traces are the same spans exported over OTLP/gRPC ([`otlp`]), filtered independently of
//! the log level. Metrics are a Prometheus registry rendered by `/metrics`, labelled only by names
//! the configuration bounds (users' own providers and routes are aggregated as `user`).

pub mod otlp;

pub use otlp::UNTRACED;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogSettings, TelemetrySettings};

/// The target of every request's server span (never an event target): with trace export on, it
/// is on for the log lines whatever the level, so they carry the request id and trace id.
pub const REQUEST_TARGET: &str = "switchyard::request";

/// Whether a request's spans go to the collector, decided once, at its server span.
#[derive(Clone, Debug, Default)]
pub enum Sampling {
    /// No trace export: light spans, and no trace context sent upstream.
    #[default]
    Off,
    /// Sampled: full spans, exported; the upstreams get the attempts' contexts.
    Sampled,
    /// Not sampled: light spans; the upstreams get this context.
    Unsampled(UnsampledTrace),
}

impl Sampling {
    /// The request's spans are exported (they carry the collector's attributes).
    pub fn sampled(&self) -> bool {
        matches!(self, Self::Sampled)
    }
}

/// The W3C trace context of a request that is not sampled: no span of it is built for the
/// collector, yet its log lines carry its trace id and its upstreams receive a `traceparent`
/// (flags `00`) in the same trace, as an OpenTelemetry SDK's non-recording span would send.
#[derive(Clone, Debug)]
pub struct UnsampledTrace {
    /// The client's trace, or a new one.
    pub trace_id: opentelemetry::trace::TraceId,
    /// The id that stands for the gateway's span (the upstream's parent).
    pub span_id: opentelemetry::trace::SpanId,
    /// The client's `tracestate`, passed on.
    pub tracestate: Option<std::sync::Arc<str>>,
}

impl UnsampledTrace {
    /// The `traceparent` and (when the client sent one) `tracestate` headers for an upstream.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("traceparent", format!("00-{}-{}-00", self.trace_id, self.span_id))];
        if let Some(state) = &self.tracestate {
            h.push(("tracestate", state.to_string()));
        }
        h
    }
}

/// What the data plane's spans may carry.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceSettings {
    /// Record prompt and answer text on spans (`telemetry.capture_content`).
    pub capture_content: bool,
}

/// The process's telemetry, to flush at shutdown.
pub struct Telemetry {
    traces: Option<otlp::Tracing>,
}

impl Telemetry {
    /// Flushes and stops trace export (off the async runtime: the exporter blocks).
    pub async fn shutdown(self) {
        if let Some(t) = self.traces {
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
    }
}

/// How text log lines show fields: the span attributes meant for the trace collector
/// (`otel.*`, `http.*`, `gen_ai.*`) stay out of the lines; the request id, trace id and every
/// event field stay in.
fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let name = field.name();
        if ["otel.", "http.", "gen_ai."].iter().any(|p| name.starts_with(p)) {
            return Ok(());
        }
        if name == "message" { write!(w, "{value:?}") } else { write!(w, "{name}={value:?}") }
    })
    .delimited(" ")
}

/// Installs the global subscriber: logs at `settings.level` (`RUST_LOG` wins), and, when an OTLP
/// endpoint is configured, trace export of the gateway's spans, whatever the log level. Once per
/// process; later calls change nothing.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> Result<Telemetry, String> {
    let traces = otlp::Tracing::from_settings(telemetry)?;
    let directives =
        std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| log.level.clone());
    // With export on, every log line of a request carries its request id and trace id whatever
    // the level (the request's span is always on for the log layer); without it, the span follows
    // the level like any other (on at `info`).
    let forced = if traces.is_some() { format!(",{REQUEST_TARGET}=trace") } else { String::new() };
    let filter = EnvFilter::try_new(format!("{directives}{forced}"))
        .or_else(|_| EnvFilter::try_new(&log.level))
        .map_err(|e| format!("log.level: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = if log.format == "json" {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .fmt_fields(log_fields())
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let otel = traces.as_ref().map(otlp::Tracing::layer);
    let result = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    if result.is_err() {
        // A subscriber is already installed (tests): keep it; export nothing new.
        return Ok(Telemetry { traces: None });
    }
    if let Some(t) = &traces {
        t.installed();
        tracing::info!(endpoint = %t.endpoint, sample_ratio = t.sample_ratio, "Exporting traces over OTLP/gRPC.");
    }
    Ok(Telemetry { traces })
}

/// The metric label of a provider: a configured provider's id, or `user` for every user's own
/// provider (ids `<username>/<name>`), so label sets stay bounded by the configuration and no
/// tenant's names are exposed.
pub fn provider_label(id: &str) -> &str {
    if id.contains('/') { "user" } else { id }
}

/// The metric label of a canonical route: global routes as they are, every user's route as `user`.
pub fn route_label(route: &str) -> &str {
    if route.starts_with("user-") { "user" } else { route }
}

/// The node's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, provider and status.
    pub requests: IntCounterVec,
    /// Gateway latency by route.
    pub latency: HistogramVec,
    /// Upstream latency (to the last byte) by provider.
    pub upstream_latency: HistogramVec,
    /// Upstream failures by provider and kind.
    pub upstream_errors: IntCounterVec,
    /// Tokens by provider, model and kind (`prompt`, `completion`, `cached`).
    pub tokens: IntCounterVec,
    /// Requests in flight on this node.
    pub in_flight: IntGauge,
    /// Usage records waiting to be written.
    pub usage_queue: IntGauge,
    /// Usage records written, and the ones dropped because the queue was full.
    pub usage_records: IntCounterVec,
    /// Spans exported, and spans dropped (export queue full, collector unreachable).
    pub spans: IntCounterVec,
    /// Response-cache lookups by result (`hit`, `miss`, `bypass`).
    pub cache_requests: IntCounterVec,
    /// Bytes of answers stored in the response cache (as stored, compressed or not).
    pub cache_stored_bytes: IntCounter,
    /// Entries in the in-process response cache.
    pub cache_entries: IntGauge,
    /// Bytes held by the in-process response cache.
    pub cache_bytes: IntGauge,
    /// Entries the in-process response cache evicted for room.
    pub cache_evictions: IntCounter,
}

const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

impl Metrics {
    /// A fresh registry with every collector registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("switchyard_requests_total", "Proxied requests by route, provider and status."),
            &["route", "provider", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("switchyard_request_duration_seconds", "Time from request to last byte, by route.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new("switchyard_upstream_duration_seconds", "Upstream time to last byte, by provider.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("switchyard_upstream_errors_total", "Failed upstream attempts by provider and kind."),
            &["provider", "kind"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("switchyard_tokens_total", "Tokens by provider, model and kind."),
            &["provider", "model", "kind"],
        )?;
        let in_flight = IntGauge::new("switchyard_requests_in_flight", "Requests in flight on this node.")?;
        let usage_queue = IntGauge::new("switchyard_usage_queue_depth", "Usage records waiting to be written.")?;
        let usage_records = IntCounterVec::new(
            Opts::new("switchyard_usage_records_total", "Usage records by fate (written, dropped)."),
            &["fate"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(usage_queue.clone()))?;
        registry.register(Box::new(usage_records.clone()))?;
        let spans = IntCounterVec::new(
            Opts::new("switchyard_trace_spans_total", "Spans by fate (exported, dropped)."),
            &["fate"],
        )?;
        registry.register(Box::new(spans.clone()))?;
        let cache_requests = IntCounterVec::new(
            Opts::new("switchyard_cache_requests_total", "Response-cache lookups by result (hit, miss, bypass)."),
            &["result"],
        )?;
        let cache_stored_bytes =
            IntCounter::new("switchyard_cache_stored_bytes_total", "Bytes of answers stored in the response cache.")?;
        let cache_entries = IntGauge::new("switchyard_cache_entries", "Entries in the in-process response cache.")?;
        let cache_bytes = IntGauge::new("switchyard_cache_bytes", "Bytes held by the in-process response cache.")?;
        let cache_evictions = IntCounter::new(
            "switchyard_cache_evictions_total",
            "Entries the in-process response cache evicted for room.",
        )?;
        registry.register(Box::new(cache_requests.clone()))?;
        registry.register(Box::new(cache_stored_bytes.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            upstream_latency,
            upstream_errors,
            tokens,
            in_flight,
            usage_queue,
            usage_records,
            spans,
            cache_requests,
            cache_stored_bytes,
            cache_entries,
            cache_bytes,
            cache_evictions,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let (exported, dropped) = otlp::span_counts();
        for (fate, total) in [("exported", exported), ("dropped", dropped)] {
            let c: IntCounter = self.spans.with_label_values(&[fate]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
