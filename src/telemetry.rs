//! Logs and metrics. Logs are structured `tracing` events that never carry tokens, keys or
//! prompt text; metrics are a Prometheus registry rendered by `/metrics`, labelled only by names
//! the configuration bounds (users' own providers and routes are aggregated as `user`).
//!
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogSettings;

/// Installs the global log subscriber (once per process; later calls are ignored).
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if settings.format == "json" {
        registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init()
    };
    drop(result);
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
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
