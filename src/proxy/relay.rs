//! The streaming relay: forwards each upstream SSE event as soon as it is complete, byte for
//! byte, reads usage and response facts from it on the way (the dialect decodes), sends
//! `: keepalive` comments during long silences, and ends a broken stream with one error event in
//! the client's dialect (never a silent cut, never a false end marker).
//! If the client goes away, the stream is dropped and so is the usage guard, which records the
//! request as `client_disconnected` with the tokens relayed so far. The attempt's span and the
//! provider's concurrency slot live as long as the relay: until the stream's last byte.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

use crate::accounting::{Outcome, UsageGuard};
use crate::dialect::bridge;
use crate::dialect::sse::{self, SseFramer};
use crate::dialect::{Dialect, Event, ResponseMeta, StreamError};
use crate::error::{ApiError, Code};
use crate::proxy::slot::Slot;
use crate::proxy::trace;
use crate::telemetry::Metrics;
use crate::upstream::BodyStream;

/// Time and size limits of one relay.
pub struct Limits {
    /// Longest upstream silence between events.
    pub idle: Duration,
    /// Until the first event, silence is allowed up to here (the first-byte timeout: a healthy
    /// upstream may take long to its first token; keepalives hold the client meanwhile).
    pub first_event_by: tokio::time::Instant,
    /// Silence after which a keepalive comment is sent to the client.
    pub keepalive: Duration,
    /// End of the whole request.
    pub deadline: tokio::time::Instant,
    /// Longest SSE line.
    pub max_line: usize,
    /// Drop the usage-only chunk the gateway asked for on the client's behalf.
    pub strip_usage_only_chunk: bool,
    /// Fires when the node's shutdown deadline is near.
    pub cut: tokio_util::sync::CancellationToken,
}

/// Who the relay reports to.
pub struct Reporting {
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The provider id (for metric labels and logs).
    pub provider: String,
    /// When the attempt started.
    pub started: Instant,
    /// The attempt's span (a client span; it ends when the relay does).
    pub span: tracing::Span,
    /// Record generated text on the span (`telemetry.capture_content`).
    pub capture_content: bool,
}

/// One relay in progress.
pub struct Relay {
    upstream: Option<BodyStream>,
    /// The client's dialect (its error events).
    client: Dialect,
    /// The translation between the two sides; `None`: a Chat stream relayed byte for byte.
    translation: Option<bridge::Stream>,
    framer: SseFramer,
    guard: Option<UsageGuard>,
    out: VecDeque<Bytes>,
    limits: Limits,
    last_upstream: tokio::time::Instant,
    got_event: bool,
    last_sent: tokio::time::Instant,
    done: bool,
    report: Reporting,
    meta: ResponseMeta,
    /// The node's shutdown cut, registered once (not re-armed on every event).
    cut: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// The response cache's copy of the client's events, stored if the stream completes.
    capture: Option<crate::cache::Capture>,
    /// The stream completed with this usage: the copy is stored once the step that completed
    /// it has queued its last event.
    sealed: Option<(crate::types::Usage, bool)>,
    _slot: Option<Slot>,
}

impl Relay {
    /// A relay of `upstream` into the client response: a Chat stream byte for byte, or, with a
    /// `translation`, an upstream's events in the client's dialect.
    pub fn new(
        upstream: BodyStream,
        client: Dialect,
        translation: Option<bridge::Stream>,
        guard: UsageGuard,
        limits: Limits,
        report: Reporting,
        slot: Option<Slot>,
    ) -> Self {
        let now = tokio::time::Instant::now();
        let cut = Box::pin(limits.cut.clone().cancelled_owned());
        Self {
            upstream: Some(upstream),
            client,
            translation,
            framer: SseFramer::new(limits.max_line),
            guard: Some(guard),
            out: VecDeque::new(),
            limits,
            last_upstream: now,
            got_event: false,
            last_sent: now,
            done: false,
            report,
            meta: ResponseMeta::default(),
            cut,
            capture: None,
            sealed: None,
            _slot: slot,
        }
    }

    /// Keeps a copy of every event the client receives (keepalives aside) for the response
    /// cache; it is stored when the stream completes, and dropped otherwise.
    pub fn capture(&mut self, capture: crate::cache::Capture) {
        self.capture = Some(capture);
    }

    /// Queues an event for the client (and the cache's copy).
    fn emit(&mut self, b: Bytes) {
        if let Some(c) = &mut self.capture {
            c.frame(&b, false);
        }
        self.out.push_back(b);
    }

    /// The body stream for the client. The attempt's span is not entered at every event (that
    /// cost two layer passes a chunk): the relay's log lines and its record are written inside
    /// it, and the relay enters it once more when it is dropped after the last byte (or when the
    /// client leaves) — its end, a span ending at its last exit. The state is boxed: `unfold`
    /// moves it in and out of its future at every event.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures_util::stream::unfold(Box::new(self), |mut st| async move {
            loop {
                if let Some(b) = st.out.pop_front() {
                    st.last_sent = tokio::time::Instant::now();
                    return Some((Ok(b), st));
                }
                if st.done {
                    return None;
                }
                st.step().await;
            }
        })
    }

    async fn step(&mut self) {
        let mut idle_at = self.last_upstream + self.limits.idle;
        if !self.got_event {
            idle_at = idle_at.max(self.limits.first_event_by);
        }
        let idle_at = idle_at.min(self.limits.deadline);
        let keepalive_at = self.last_sent + self.limits.keepalive;
        if self.upstream.is_none() {
            self.done = true;
            return;
        }
        self.select(idle_at, keepalive_at).await;
        // A completed stream's copy is stored before its last events go out (at most a short
        // wait), so the client's next request finds it on any node.
        if self.done
            && let (Some(c), Some((usage, estimated))) = (self.capture.take(), self.sealed.take())
        {
            c.complete(usage, estimated).await;
        }
    }

    async fn select(&mut self, idle_at: tokio::time::Instant, keepalive_at: tokio::time::Instant) {
        let Some(upstream) = self.upstream.as_mut() else { return };
        tokio::select! {
            biased;
            item = upstream.next() => match item {
                Some(Ok(chunk)) => {
                    self.last_upstream = tokio::time::Instant::now();
                    self.got_event |= !chunk.is_empty();
                    self.on_chunk(&chunk);
                }
                Some(Err(_)) => self.end_with_error(Code::UpstreamError, "The upstream connection broke mid-stream.", Outcome::Partial),
                None => self.on_end(),
            },
            () = tokio::time::sleep_until(idle_at) => {
                let msg = if idle_at == self.limits.deadline { "The request exceeded its time limit." } else { "The upstream stopped sending mid-stream." };
                self.end_with_error(Code::UpstreamTimeout, msg, Outcome::UpstreamTimeout);
            }
            () = tokio::time::sleep_until(keepalive_at) => {
                self.out.push_back(Bytes::from_static(b": keepalive\n\n"));
            }
            () = &mut self.cut => {
                self.end_with_error(
                    Code::ServiceUnavailable,
                    "The gateway node is shutting down and its drain deadline passed; retry the request.",
                    Outcome::Shutdown,
                );
            }
        }
    }

    fn on_chunk(&mut self, chunk: &[u8]) {
        let events = match self.framer.push(chunk) {
            Ok(e) => e,
            Err(_) => {
                self.end_with_error(
                    Code::UpstreamError,
                    "The upstream sent an oversized event.",
                    Outcome::InvalidResponse,
                );
                return;
            }
        };
        for ev in events {
            let Some(data) = ev.data else {
                // Comments pass in every dialect.
                self.emit(ev.raw);
                continue;
            };
            if self.on_event(ev.raw, data) {
                return;
            }
        }
    }

    /// One upstream event: `true` when the stream ended with it.
    fn on_event(&mut self, raw: Bytes, data: Vec<u8>) -> bool {
        let Some(tr) = self.translation.as_mut() else {
            return self.on_chat(&data, Some(raw));
        };
        let chats = match tr.upstream_event(data) {
            Ok(c) => c,
            Err(e) => {
                let same = tr.client_is_upstream();
                self.stream_error(e, same.then_some(raw));
                return true;
            }
        };
        let (same, chat_client) = (tr.client_is_upstream(), tr.client_is_chat());
        let mut ended = false;
        for chat in chats {
            let forward = chat_client.then(|| sse::frame_data(&chat));
            if self.on_chat(&chat, forward) {
                ended = true;
                break;
            }
        }
        if same {
            self.emit(raw);
        }
        ended
    }

    /// One Chat chunk (the upstream's, or translated from its event): its usage and text are
    /// read; `forward` goes to a Chat client; a translation makes the client's frames of it.
    /// `true` when the stream ended with it.
    fn on_chat(&mut self, chat: &[u8], forward: Option<Bytes>) -> bool {
        match crate::dialect::pivot::decode_event(chat) {
            Ok(Event::Done) => {
                if let Some(f) = forward {
                    self.emit(f);
                }
                if !self.client_frames(chat) {
                    return true;
                }
                self.finish(Outcome::Ok);
                // Read the upstream body to its end in the background, so its connection goes
                // back to the pool instead of being closed (a new connection per stream costs a
                // handshake on every request).
                if let Some(up) = self.upstream.take() {
                    actix_web::rt::spawn(drain(up));
                }
                true
            }
            Err(_) => {
                self.end_with_error(
                    Code::UpstreamError,
                    "The upstream sent an invalid event.",
                    Outcome::InvalidResponse,
                );
                true
            }
            Ok(Event::Chunk(c)) => {
                if let Some(g) = &mut self.guard {
                    if let Some(u) = c.usage {
                        g.progress.reported = Some(u);
                    }
                    if c.has_output {
                        g.progress.relayed_text.push_str(&c.text);
                    }
                }
                let strip = self.limits.strip_usage_only_chunk && c.usage_only;
                self.meta.absorb(c.meta);
                if let Some(f) = forward {
                    // The cache keeps the usage-only chunk, marked: a replay sends it to a client
                    // that asks for usage, whether or not this one did.
                    if let Some(cap) = &mut self.capture {
                        cap.frame(&f, c.usage_only);
                    }
                    if !strip {
                        self.out.push_back(f);
                    }
                }
                !self.client_frames(chat)
            }
        }
    }

    /// The client's frames of one Chat chunk, when a translation makes them; `false` when the
    /// chunk cannot be expressed in the client's dialect (the stream was ended with an error).
    fn client_frames(&mut self, chat: &[u8]) -> bool {
        let Some(tr) = self.translation.as_mut() else { return true };
        match tr.client_event(chat) {
            Ok(frames) => {
                for f in frames {
                    self.emit(f);
                }
                true
            }
            Err(e) => {
                self.stream_error(e, None);
                false
            }
        }
    }

    /// The upstream's body ended. A Chat stream must have ended with `[DONE]` before; an upstream
    /// with no end marker (Gemini), or a Chat stream whose choice finished without `[DONE]`, is
    /// closed by its translation when it was complete.
    fn on_end(&mut self) {
        if let Some(tr) = self.translation.as_mut() {
            let chat_client = tr.client_is_chat();
            for chat in tr.upstream_end() {
                let forward = chat_client.then(|| sse::frame_data(&chat));
                if self.on_chat(&chat, forward) {
                    return;
                }
            }
            if let Some(tr) = self.translation.as_mut() {
                let closing = tr.client_end();
                if !closing.is_empty() {
                    for f in closing {
                        self.emit(f);
                    }
                    self.finish(Outcome::Ok);
                    return;
                }
            }
        }
        self.end_with_error(
            Code::UpstreamError,
            "The upstream ended the stream before it was complete.",
            Outcome::Partial,
        );
    }

    /// A stream that cannot go on: an upstream `error` event (relayed as it is to a client of the
    /// same dialect, `raw`), or an event the translation cannot read or express.
    fn stream_error(&mut self, e: StreamError, raw: Option<Bytes>) {
        match (e, raw) {
            (StreamError::Upstream(_), Some(raw)) => {
                if let Some(g) = &mut self.guard {
                    g.progress.partial = true;
                }
                self.out.push_back(raw);
                trace::record_error(&self.report.span, Outcome::UpstreamError.as_str());
                self.finish(Outcome::UpstreamError);
            }
            (StreamError::Upstream(message), None) => {
                let message = format!(
                    "The upstream `{}` failed mid-stream: {}",
                    self.report.provider,
                    crate::upstream::sanitize(&message, None)
                );
                self.end_with_error(Code::UpstreamError, &message, Outcome::UpstreamError);
            }
            (StreamError::Malformed(m), _) => {
                let message = format!("The upstream's stream could not be translated: {m}.");
                self.end_with_error(Code::UpstreamError, &message, Outcome::InvalidResponse);
            }
        }
    }

    fn end_with_error(&mut self, code: Code, message: &str, outcome: Outcome) {
        if let Some(g) = &mut self.guard {
            g.progress.partial = true;
        }
        let err = ApiError::new(code, message);
        match self.translation.as_mut() {
            Some(tr) => self.out.extend(tr.error_event(self.client, &err)),
            None => self.out.push_back(self.client.error_event(&err)),
        }
        if outcome != Outcome::Shutdown {
            self.report
                .metrics
                .upstream_errors
                .with_label_values(&[crate::telemetry::provider_label(&self.report.provider), "mid_stream"])
                .inc();
        }
        trace::record_error(&self.report.span, outcome.as_str());
        self.report.span.in_scope(|| {
            tracing::warn!(provider = %self.report.provider, outcome = outcome.as_str(), "Stream ended early.");
        });
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        // The record is finished inside the span (its log lines carry the request).
        let _in_span = self.report.span.enter();
        // Only a complete stream is cached: an error, a refusal or a cut one never.
        if outcome != Outcome::Ok {
            self.capture = None;
        }
        if let Some(g) = self.guard.take() {
            if self.capture.is_some() {
                let (usage, source) = g.progress.usage();
                self.sealed = Some((usage, !matches!(source, "reported" | "capped")));
            }
            self.report
                .metrics
                .upstream_latency
                .with_label_values(&[crate::telemetry::provider_label(&self.report.provider)])
                .observe(self.report.started.elapsed().as_secs_f64());
            let text = self.report.capture_content.then_some(g.progress.relayed_text.as_str());
            trace::record_response(&self.report.span, &self.meta, g.usage(), text);
            g.finish(200, outcome);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropped with its record still open: the client left mid-stream. The record (written as
        // the guard drops, with the tokens relayed so far) is partial, and dropping the upstream
        // body closes its connection at once, so the upstream stops generating. Whichever way
        // it ends, the attempt's span ends here (its last exit).
        let _in_span = self.report.span.enter();
        if let Some(g) = &mut self.guard {
            g.progress.partial = true;
            trace::record_response(&self.report.span, &self.meta, g.usage(), None);
            trace::record_error(&self.report.span, Outcome::ClientDisconnected.as_str());
        }
    }
}

/// Reads what is left of a finished upstream body (normally just the terminating chunk), for at
/// most a second and 64 KiB, then drops it.
async fn drain(mut upstream: BodyStream) {
    let mut left = 64 * 1024usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(chunk)) = upstream.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::UsageStart;
    use crate::proxy::testing::{Fixture, MOCKS};
    use crate::types::RequestId;

    async fn relay(f: &Fixture, pieces: &[&'static [u8]]) -> Vec<u8> {
        let pieces: Vec<&'static [u8]> = pieces.to_vec();
        let guard = f.state.accounting.open(UsageStart {
            request_id: RequestId::new(),
            user_id: 1,
            token_id: 1,
            route: "m".into(),
            stream: true,
            canonical_route: "m".into(),
            parent: None,
        });
        let body: BodyStream =
            Box::pin(futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from_static(p)))));
        let now = tokio::time::Instant::now();
        let limits = Limits {
            idle: Duration::from_secs(5),
            first_event_by: now + Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            deadline: now + Duration::from_secs(10),
            max_line: 1 << 16,
            strip_usage_only_chunk: true,
            cut: tokio_util::sync::CancellationToken::new(),
        };
        let report = Reporting {
            metrics: Arc::clone(&f.state.metrics),
            provider: "p".into(),
            started: Instant::now(),
            span: tracing::Span::none(),
            capture_content: false,
        };
        let out: Vec<Bytes> = Relay::new(body, Dialect::OpenAi, None, guard, limits, report, None)
            .into_stream()
            .map(|r| r.unwrap_or_default())
            .collect()
            .await;
        out.concat()
    }

    /// The relay alone, fed bytes cut anywhere: events pass byte for byte, the usage-only chunk
    /// the gateway asked for is dropped and read, and a stream cut before its end marker ends with
    /// one error event and a partial record.
    #[actix_web::test]
    async fn relays_events_whole_and_ends_broken_streams_in_band() {
        let mut f = Fixture::new(MOCKS).await;
        let a: &[u8] = b"data: {\"id\":\"r\",\"choices\":[{\"delta\":{\"content\":\"hel";
        let b: &[u8] =
            b"lo\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\n";
        let out = relay(&f, &[a, b, b"data: [DONE]\n\n"]).await;
        let want = "data: {\"id\":\"r\",\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(String::from_utf8_lossy(&out), want);
        let out = relay(&f, &[a, b"lo\"}}]}\n\n"]).await;
        assert!(String::from_utf8_lossy(&out).ends_with("\"code\":\"upstream_error\",\"param\":null}}\n\n"), "{out:?}");
        let r = f.records();
        assert_eq!((r[0].outcome.as_str(), r[0].completion_tokens, r[0].usage_source.as_str()), ("ok", 1, "reported"));
        assert_eq!((r[1].outcome.as_str(), r[1].partial), ("partial", true));
    }
}
