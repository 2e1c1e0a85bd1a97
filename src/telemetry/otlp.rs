//! Trace export over OTLP/gRPC, built so that a slow or unreachable collector changes nothing for
//! clients: finished spans go into a bounded buffer (a full buffer drops the span and counts it),
//! and one thread of their own batches them and exports with a timeout (a failed export drops
//! the batch and counts it), woken once per batch window rather than per span. Spans are
//! flushed at shutdown.
//!
//! Configuration: `[telemetry] otlp_endpoint`, `sample_ratio`, `service_name`, else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`
//! (+ `_ARG`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true` turns
//! export off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
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
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The root sampling ratio, as `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether this process exports traces (spans then carry what the collector needs; without
/// export they carry only what the log lines show).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The target suffix of the light spans of a request whose spans are not exported (no export,
/// or not sampled): they carry only what the log lines show, and the trace layer never sees them.
/// A log directive for `switchyard::route` covers `switchyard::route::untraced` too.
pub const UNTRACED: &str = "::untraced";

/// Whether a new trace (no sampled or unsampled parent from the client) with `trace_id` is
/// sampled at the configured ratio: the OpenTelemetry `TraceIdRatioBased` rule, decided once, at
/// the request's server span, so that an unsampled request builds no span for the collector.
pub fn sample_root(trace_id: opentelemetry::trace::TraceId) -> bool {
    ratio_samples(f64::from_bits(RATIO.load(Ordering::Relaxed)), trace_id)
}

/// `TraceIdRatioBased`: the trace id's low 64 bits, as a fraction of 2⁶⁴, below `ratio`.
fn ratio_samples(ratio: f64, trace_id: opentelemetry::trace::TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let b = trace_id.to_bytes();
    let high = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let low = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    let fraction = (f64::from(high) * 4_294_967_296.0 + f64::from(low)) / 18_446_744_073_709_551_616.0;
    fraction < ratio
}

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
            // The ratio is applied once, by the request's server span ([`sample_root`]): a span
            // that reaches the SDK without a parent is a sampled request's.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        Ok(Some(Self { provider, endpoint, sample_ratio }))
    }

    /// Marks this process as exporting (once its layer is installed).
    pub fn installed(&self) {
        RATIO.store(self.sample_ratio.to_bits(), Ordering::Relaxed);
        EXPORTING.store(true, Ordering::Relaxed);
    }

    /// The `tracing` layer that turns the gateway's spans of sampled requests (and only spans:
    /// log events stay in the logs) into OpenTelemetry spans, whatever the log level. An
    /// unsampled request's spans are the light ones (targets ending in
    /// [`UNTRACED`]), which it never sees: no span data is built
    /// for them, and at a log level that hides them they are not even created.
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
            // Nothing reads the thread's current OpenTelemetry context (an attempt's context is
            // taken from its span): attaching one on every poll of every span would cost a
            // context clone and a guard each time.
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target().starts_with("switchyard") && !m.target().ends_with(UNTRACED)
            }))
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
    /// Spans are waiting: the first into an empty buffer, or a full batch.
    Wake,
    Resource(Resource),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// Ended spans waiting for the export thread, at most `capacity`.
#[derive(Debug)]
struct Buffer {
    spans: Mutex<Vec<SpanData>>,
    capacity: usize,
}

impl Buffer {
    /// Every waiting span.
    fn take(&self) -> Vec<SpanData> {
        let fresh = Vec::with_capacity(self.capacity.min(BATCH));
        self.spans.lock().map(|mut q| std::mem::replace(&mut *q, fresh)).unwrap_or_default()
    }
}

/// The span processor: a bounded buffer in front of the export thread. A span's end is a push
/// under an uncontended lock, never a system call: the thread is woken once per batch window (by
/// the first span into an empty buffer, then by a full batch), not once per span.
#[derive(Debug)]
struct Queue {
    buffer: Arc<Buffer>,
    tx: SyncSender<Msg>,
    timeout: Duration,
}

impl Queue {
    fn start(endpoint: String, timeout: Duration, capacity: usize) -> Result<Self, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let buffer = Arc::new(Buffer { spans: Mutex::new(Vec::new()), capacity });
        let theirs = Arc::clone(&buffer);
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(&endpoint, timeout, &rx, &theirs, &ready_tx))
            .map_err(|e| format!("cannot start the trace exporter: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { buffer, tx, timeout }),
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
        let waiting = match self.buffer.spans.lock() {
            Ok(mut q) if q.len() < self.buffer.capacity => {
                q.push(span);
                q.len()
            }
            _ => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if waiting == 1 || waiting == BATCH {
            // A full control channel already holds a wake-up.
            let _ = self.tx.try_send(Msg::Wake);
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
/// Spans go out in batches of at most [`BATCH`], a full batch at once, else [`DELAY`] after the
/// first span of the window.
fn export_loop(
    endpoint: &str,
    timeout: Duration,
    rx: &Receiver<Msg>,
    buffer: &Buffer,
    ready: &SyncSender<Result<(), String>>,
) {
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
    let mut last_warning: Option<Instant> = None;
    // Exports every waiting span, a batch at a time; the first failure is the result.
    let mut export_all = |exporter: &opentelemetry_otlp::SpanExporter| -> OTelSdkResult {
        let mut result = Ok(());
        let mut spans = buffer.take();
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(BATCH));
            let n = u64::try_from(spans.len()).unwrap_or(u64::MAX);
            match rt.block_on(exporter.export(std::mem::replace(&mut spans, rest))) {
                Ok(()) => {
                    EXPORTED.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    DROPPED.fetch_add(n, Ordering::Relaxed);
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(error = %e, spans = n, "Trace export failed; spans dropped (counted in /metrics).");
                    }
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    };
    // When the waiting spans are due (none waiting: no deadline, the thread sleeps).
    let mut due: Option<Instant> = None;
    loop {
        let got = match due {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(Msg::Wake) => {
                let waiting = buffer.spans.lock().map(|q| q.len()).unwrap_or(0);
                if waiting >= BATCH {
                    let _ = export_all(&exporter);
                    due = None;
                } else if waiting > 0 {
                    due.get_or_insert_with(|| Instant::now() + DELAY);
                }
            }
            Ok(Msg::Resource(r)) => exporter.set_resource(&r),
            Ok(Msg::Flush(ack)) => {
                let _ = ack.send(export_all(&exporter));
                due = None;
            }
            Ok(Msg::Shutdown(ack)) => {
                let r = export_all(&exporter);
                let _ = exporter.shutdown();
                let _ = ack.send(r);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = export_all(&exporter);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = export_all(&exporter);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceId;

    use super::ratio_samples;

    fn id(low: u64) -> TraceId {
        TraceId::from(u128::from(low) | (0xabcd_u128 << 64))
    }

    #[test]
    fn the_ratio_decides_on_the_trace_ids_low_bits() {
        for low in [0, 1, u64::MAX / 2, u64::MAX] {
            assert!(ratio_samples(1.0, id(low)));
            assert!(!ratio_samples(0.0, id(low)));
            assert!(!ratio_samples(f64::NAN, id(low)));
        }
        assert!(ratio_samples(0.5, id(0)));
        assert!(ratio_samples(0.5, id(u64::MAX / 3)));
        assert!(!ratio_samples(0.5, id(u64::MAX)));
        assert!(!ratio_samples(0.01, id(u64::MAX / 50)));
        assert!(ratio_samples(0.01, id(u64::MAX / 200)));
        // About the ratio over many ids.
        let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
        let sampled = (0..20_000)
            .filter(|_| ratio_samples(0.1, opentelemetry_sdk::trace::IdGenerator::new_trace_id(&ids)))
            .count();
        assert!((1_600..2_400).contains(&sampled), "{sampled} of 20,000 at 10 %");
    }
}
