//! Trace export over OTLP/gRPC, built so that a slow or unreachable collector changes nothing for
//! clients: finished spans go into a bounded queue (a full queue drops the span and counts it),
//! and one thread of their own batches them and exports with a timeout (a failed export drops
//! the batch and counts it). Spans are flushed at shutdown.
//!
//! Configuration: `[telemetry] otlp_endpoint`, `sample_ratio`, `service_name`, else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`
//! (+ `_ARG`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true` turns
//! export off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use tracing_subscriber::Layer as _;

use crate::config::TelemetrySettings;

static EXPORTED: AtomicU64 = AtomicU64::new(0);
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports traces (spans then carry what the collector needs; without
/// export they carry only what the log lines show).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans exported and dropped by this process so far.
pub fn span_counts() -> (u64, u64) {
    (EXPORTED.load(Ordering::Relaxed), DROPPED.load(Ordering::Relaxed))
}

/// Spans exported together, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch.
const DELAY: Duration = Duration::from_millis(500);

/// Trace export, once configured.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// The collector.
    pub endpoint: String,
    /// The root sampling ratio.
    pub sample_ratio: f64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The sampling ratio from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
fn env_ratio() -> Option<f64> {
    let arg = env("OTEL_TRACES_SAMPLER_ARG").and_then(|a| a.parse::<f64>().ok());
    match env("OTEL_TRACES_SAMPLER").as_deref() {
        Some("always_off" | "parentbased_always_off") => Some(0.0),
        Some("always_on" | "parentbased_always_on") => Some(1.0),
        Some("traceidratio" | "parentbased_traceidratio") => Some(arg.unwrap_or(1.0)),
        _ => arg,
    }
}

impl Tracing {
    /// Export as configured; `None` when no endpoint is set (or `OTEL_SDK_DISABLED=true`).
    pub fn from_settings(s: &TelemetrySettings) -> Result<Option<Self>, String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = s
            .otlp_endpoint
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let Some(endpoint) = endpoint else { return Ok(None) };
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "telemetry.otlp_endpoint: `{endpoint}` must be an http:// URL (OTLP/gRPC without TLS)"
            ));
        }
        let sample_ratio = s.sample_ratio.or_else(env_ratio).unwrap_or(1.0).clamp(0.0, 1.0);
        let service =
            s.service_name.clone().or_else(|| env("OTEL_SERVICE_NAME")).unwrap_or_else(|| "switchyard".into());
        let timeout = Duration::from_millis(s.export_timeout_ms.max(1));
        let processor = Queue::start(endpoint.clone(), timeout, s.max_queue.max(1))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio))))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        Ok(Some(Self { provider, endpoint, sample_ratio }))
    }

    /// Marks this process as exporting (once its layer is installed).
    pub fn installed(&self) {
        EXPORTING.store(true, Ordering::Relaxed);
    }

    /// The `tracing` layer that turns the gateway's spans (and only spans: log events stay in
    /// the logs) into OpenTelemetry spans, whatever the log level.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("switchyard"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span() && m.target().starts_with("switchyard")))
    }

    /// Exports what is queued and stops (blocking: call it off the async runtime).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "Could not flush the trace export queue.");
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "Trace export did not stop cleanly.");
        }
    }
}

enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// The span processor: a bounded queue in front of the export thread.
#[derive(Debug)]
struct Queue {
    tx: SyncSender<Msg>,
    timeout: Duration,
}

impl Queue {
    fn start(endpoint: String, timeout: Duration, capacity: usize) -> Result<Self, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(&endpoint, timeout, &rx, &ready_tx))
            .map_err(|e| format!("cannot start the trace exporter: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { tx, timeout }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the trace exporter did not start".into()),
        }
    }

    fn ask(&self, make: impl FnOnce(SyncSender<OTelSdkResult>) -> Msg, timeout: Duration) -> OTelSdkResult {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        self.tx.send(make(ack_tx)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        ack_rx.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Msg::Flush, self.timeout.saturating_mul(2))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Msg::Shutdown, timeout.max(self.timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.tx.send(Msg::Resource(resource.clone()));
    }
}

/// The export thread: its own single-threaded runtime drives the gRPC client during exports.
fn export_loop(endpoint: &str, timeout: Duration, rx: &Receiver<Msg>, ready: &SyncSender<Result<(), String>>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the trace exporter: {e}")));
            return;
        }
    };
    let built = rt.block_on(async {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
    });
    let mut exporter = match built {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(format!("telemetry.otlp_endpoint: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut oldest: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    let mut export = |batch: &mut Vec<SpanData>, exporter: &opentelemetry_otlp::SpanExporter| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let spans = std::mem::take(batch);
        let n = u64::try_from(spans.len()).unwrap_or(u64::MAX);
        let result = rt.block_on(exporter.export(spans));
        match &result {
            Ok(()) => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                DROPPED.fetch_add(n, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, spans = n, "Trace export failed; spans dropped (counted in /metrics).");
                }
            }
        }
        result
    };
    loop {
        let wait = oldest.map_or(DELAY, |t| DELAY.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                batch.push(*s);
                oldest.get_or_insert_with(Instant::now);
                if batch.len() >= BATCH {
                    let _ = export(&mut batch, &exporter);
                    oldest = None;
                }
            }
            Ok(Msg::Resource(r)) => exporter.set_resource(&r),
            Ok(Msg::Flush(ack)) => {
                let _ = ack.send(export(&mut batch, &exporter));
                oldest = None;
            }
            Ok(Msg::Shutdown(ack)) => {
                // Whatever is still queued goes out with the last batch.
                while let Ok(Msg::Span(s)) = rx.try_recv() {
                    batch.push(*s);
                }
                let r = export(&mut batch, &exporter);
                let _ = exporter.shutdown();
                let _ = ack.send(r);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = export(&mut batch, &exporter);
                oldest = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = export(&mut batch, &exporter);
                return;
            }
        }
    }
}
