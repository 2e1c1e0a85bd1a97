//! Phase `attempt`: one candidate, one upstream call. The target's dialect builds nothing here
//! (the pipeline hands over the body it built); the transport carries it; the dialect reads the
//! answer. Before any byte reaches the client a failure comes back with the usage record, so the
//! pipeline may try another candidate; once a stream is committed, failures end it in-band.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::Instrument as _;

use crate::accounting::{Finished, Outcome, UsageGuard};
use crate::catalog::Target;
use crate::dialect::bridge::{self, Sides};
use crate::dialect::{Dialect, KeyPlacement};
use crate::proxy::relay::{Limits, Relay, Reporting};
use crate::proxy::reply::Body;
use crate::proxy::slot::Slot;
use crate::proxy::state::ProxyState;
use crate::proxy::trace;
use crate::telemetry::Sampling;
use crate::types::{Operation, ProviderKind};
use crate::upstream::http::Clients;
use crate::upstream::{Auth, FailureKind, Outgoing, Response, Transport, UpstreamFailure, read_body, sanitize};

/// One attempt at one candidate.
pub struct Attempt<'a> {
    /// Chat, completions or embeddings.
    pub op: Operation,
    /// The client's dialect (the answer is translated into it).
    pub client: Dialect,
    /// The client's headers of its dialect, for an upstream of the same dialect.
    pub forwarded: &'a [(&'static str, String)],
    /// What translating the answer back needs of the request.
    pub echo: &'a bridge::Echo,
    /// Where it goes.
    pub target: &'a Target,
    /// The upstream body.
    pub body: Bytes,
    /// The request id (sent upstream).
    pub request_id: &'a str,
    /// The client asked for a stream.
    pub stream: bool,
    /// The gateway asked for stream usage on the client's behalf: drop that chunk.
    pub strip_usage: bool,
    /// Which attempt of the request this is (from 1).
    pub number: usize,
    /// The request's input, for the span (only with `telemetry.capture_content`).
    pub input: Option<&'a str>,
    /// Whether the request's spans are exported.
    pub sampling: &'a Sampling,
}

/// A failed attempt hands the usage record back, so the next candidate can carry it on.
pub struct Failed {
    /// What went wrong.
    pub failure: UpstreamFailure,
    /// The request's open record.
    pub guard: Box<UsageGuard>,
}

/// Makes one attempt: the answer's body, and for a whole answer its finished record.
pub async fn attempt(
    state: &ProxyState,
    clients: &Clients,
    a: Attempt<'_>,
    guard: UsageGuard,
    slot: Option<Slot>,
) -> Result<(Body, Option<Finished>), Failed> {
    let target = a.target;
    let fail =
        |guard, kind, msg: &str| Err(Failed { failure: UpstreamFailure::new(kind, msg), guard: Box::new(guard) });
    let Some(dialect) = Dialect::for_attempt(target.provider.kind, target.provider.responses_api, a.client) else {
        let msg = format!("provider type `{}` is not supported by this version", target.provider.kind.as_str());
        return fail(guard, FailureKind::Protocol, &msg);
    };
    let transport = match (target.provider.kind, target.provider.endpoint.as_ref()) {
        (ProviderKind::Mock, _) => Transport::InProcess(mock_upstream),
        // Workers cannot connect yet (issue 15): a broker provider has none, like one whose
        // workers are all gone, and its requests fail over.
        (ProviderKind::Broker, _) => {
            return fail(guard, FailureKind::Connect, "no worker of this broker provider is connected");
        }
        (_, None) => return fail(guard, FailureKind::Connect, "the provider has no endpoint"),
        (_, Some(endpoint)) => {
            let client = if target.provider.guarded { &clients.guarded } else { &clients.open };
            Transport::Http { client, endpoint }
        }
    };
    let span = trace::attempt_span(a.op, target, a.number, a.stream, a.sampling.sampled());
    if let Some(input) = a.input {
        trace::record_input(&span, input);
    }
    // The span is entered whenever the attempt runs (its end is its last exit: a stream's last
    // poll), so its logs carry it and it lasts as long as the attempt does.
    let in_span = span.clone();
    async move {
        let up = &state.upstream;
        let total = target.provider.timeout.unwrap_or(Duration::from_millis(up.total_timeout_ms));
        let deadline = tokio::time::Instant::now() + total;
        let first_byte = Duration::from_millis(up.first_byte_timeout_ms).min(total);
        let idle = Duration::from_millis(up.idle_timeout_ms);
        let api_key = target.provider.api_key.as_ref().map(|k| k.expose());
        let trace_headers = trace::context_headers(&span, a.sampling);
        let sides = Sides { client: a.client, upstream: dialect };
        // The Unix time a translated answer is stamped with.
        let created = || u64::try_from(crate::types::now_ms() / 1000).unwrap_or(0);
        let (path, placement) = crate::dialect::address(
            target.provider.kind,
            dialect,
            a.op,
            &target.model.name,
            target.provider.api_version.as_deref(),
            a.stream,
        );
        let auth = match (api_key, placement) {
            (None, _) => Auth::None,
            (Some(key), KeyPlacement::Bearer) => Auth::Bearer(key),
            (Some(key), KeyPlacement::Header(name)) => Auth::Header(name, key),
        };
        let out = Outgoing {
            path,
            body: a.body,
            stream: a.stream,
            request_id: a.request_id,
            trace_headers: &trace_headers,
            auth,
            headers: dialect.upstream_headers(),
            forwarded: if sides.passthrough() { a.forwarded } else { &[] },
        };
        let started = Instant::now();
        let sent = transport.send(out, first_byte).await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(failure) => {
                trace::record_error(&span, failure.kind.label());
                return Err(Failed { failure, guard: Box::new(guard) });
            }
        };
        trace::record_status(&span, resp.status);
        if !(200..300).contains(&resp.status) {
            let failure = status_failure(&mut resp, dialect, api_key, idle, deadline).await;
            trace::record_error(&span, failure.kind.label());
            return Err(Failed { failure, guard: Box::new(guard) });
        }
        let mut guard = guard;
        if a.stream {
            if !resp.is_event_stream() {
                trace::record_error(&span, FailureKind::Protocol.label());
                return fail(guard, FailureKind::Protocol, "the upstream did not answer with an event stream");
            }
            guard.mark_first_byte();
            let limits = Limits {
                idle,
                first_event_by: tokio::time::Instant::from_std(started) + first_byte,
                keepalive: Duration::from_millis(up.keepalive_interval_ms),
                deadline,
                max_line: up.max_sse_line_bytes,
                strip_usage_only_chunk: a.strip_usage,
                cut: state.drain.cut.clone(),
            };
            let report = Reporting {
                metrics: state.metrics.clone(),
                provider: target.provider.id.clone(),
                started,
                span,
                capture_content: state.tracing.capture_content,
            };
            let translation = (!(sides.passthrough() && dialect == Dialect::OpenAi))
                .then(|| bridge::Stream::new(sides, created(), a.echo));
            let relay = Relay::new(resp.body, a.client, translation, guard, limits, report, slot);
            return Ok((Body::Stream(Box::new(relay)), None));
        }
        let body = match read_body(&mut resp.body, up.max_response_bytes, idle, deadline).await {
            Ok(b) => b,
            Err(failure) => {
                trace::record_error(&span, failure.kind.label());
                return Err(Failed { failure, guard: Box::new(guard) });
            }
        };
        guard.mark_first_byte();
        match bridge::whole(sides, a.op, body, created(), a.echo) {
            Ok((body, w)) => {
                guard.progress.reported = w.usage;
                if w.usage.is_none() {
                    guard.progress.relayed_output = w.output_tokens;
                }
                state
                    .metrics
                    .upstream_latency
                    .with_label_values(&[crate::telemetry::provider_label(&target.provider.id)])
                    .observe(started.elapsed().as_secs_f64());
                let text = state.tracing.capture_content.then(|| String::from_utf8_lossy(&body).into_owned());
                trace::record_response(&span, &w.meta, guard.usage(), text.as_deref());
                drop(slot);
                let finished = guard.finish(200, Outcome::Ok);
                Ok((Body::Whole(body), finished))
            }
            Err(why) => {
                trace::record_error(&span, FailureKind::Protocol.label());
                fail(guard, FailureKind::Protocol, why.0)
            }
        }
    }
    .instrument(in_span)
    .await
}

/// The failure of a non-2xx answer: its status, `Retry-After`, and the dialect's error message,
/// sanitised (no URL, no key, at most 200 characters).
async fn status_failure(
    resp: &mut Response,
    dialect: Dialect,
    api_key: Option<&str>,
    idle: Duration,
    deadline: tokio::time::Instant,
) -> UpstreamFailure {
    let text = read_body(&mut resp.body, 64 * 1024, idle, deadline).await.unwrap_or_default();
    let detail = dialect.error_message(&text).map(|m| sanitize(&m, api_key));
    let mut f = UpstreamFailure::new(
        FailureKind::Status(resp.status),
        detail.unwrap_or_else(|| "no usable error message".into()),
    );
    f.retry_after = resp.retry_after;
    f
}

/// The `mock` provider's transport: the OpenAI-speaking mock answers in process.
fn mock_upstream(out: &Outgoing<'_>) -> Response {
    use crate::dialect::openai::{self, mock};
    let op = [Operation::Chat, Operation::Completions, Operation::Embeddings]
        .into_iter()
        .find(|op| openai::path(*op) == out.path)
        .unwrap_or(Operation::Chat);
    match mock::respond(op, &out.body, out.request_id) {
        Ok(mock::MockReply::Json(b)) => Response::in_process(200, "application/json", vec![b]),
        Ok(mock::MockReply::Stream(events)) => Response::in_process(200, "text/event-stream", events),
        Err(b) => Response::in_process(400, "application/json", vec![b]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::UsageStart;
    use crate::proxy::testing::{Fixture, MOCKS};
    use crate::types::RequestId;

    fn guard(f: &Fixture) -> UsageGuard {
        f.state.accounting.open(UsageStart {
            request_id: RequestId::new(),
            user_id: 1,
            token_id: 1,
            route: "m".into(),
            stream: false,
            canonical_route: "m".into(),
            parent: None,
        })
    }

    fn target(f: &Fixture, route: &str) -> Target {
        let plan = f.state.catalog.snapshot().resolve(route).expect("route");
        plan.candidates[0].target.clone()
    }

    static NO_ECHO: bridge::Echo = bridge::Echo {
        tools: crate::dialect::responses::ToolKinds { custom: Vec::new(), namespaced: Vec::new() },
        single_call: false,
    };

    fn one<'a>(t: &'a Target, body: &'static [u8], stream: bool) -> Attempt<'a> {
        Attempt {
            op: Operation::Chat,
            client: Dialect::OpenAi,
            forwarded: &[],
            echo: &NO_ECHO,
            target: t,
            body: Bytes::from_static(body),
            request_id: "r1",
            stream,
            strip_usage: false,
            number: 1,
            input: None,
            sampling: &Sampling::Off,
        }
    }

    /// `attempt` alone, over the in-process transport (the `mock` provider) and over HTTP to an
    /// address nobody listens on.
    #[actix_web::test]
    async fn an_attempt_answers_or_hands_the_record_back() {
        let mut f = Fixture::new(MOCKS).await;
        let t = target(&f, "provider/local/m");
        let body = br#"{"model":"m","messages":[{"role":"user","content":"ping"}]}"#;
        let (reply, finished) =
            attempt(&f.state, &f.clients, one(&t, body, false), guard(&f), None).await.ok().expect("an answer");
        let Body::Whole(b) = reply else { panic!("a whole body") };
        assert!(String::from_utf8_lossy(&b).contains("You said: ping"));
        assert!(finished.is_some());
        let stream = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"ping"}]}"#;
        let (reply, finished) =
            attempt(&f.state, &f.clients, one(&t, stream, true), guard(&f), None).await.ok().expect("a stream");
        assert!(matches!(reply, Body::Stream(_)) && finished.is_none(), "a stream's record ends with the stream");
        drop(reply);

        let nowhere = target(&f, "provider/nowhere/m");
        let Err(failed) = attempt(&f.state, &f.clients, one(&nowhere, body, false), guard(&f), None).await else {
            panic!("nobody listens there")
        };
        assert_eq!(failed.failure.kind, FailureKind::Connect);
        failed.guard.finish_unanswered(502, Outcome::UpstreamError);
        let outcomes: Vec<String> = f.records().into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, ["ok", "client_disconnected", "upstream_error"]);
    }
}
