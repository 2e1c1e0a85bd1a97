//! The request pipeline: `admit` → `plan` → `attempt` per candidate → reply, in the spirit of
//! pingora's proxy phases. Retries are decided here, in one place ([`after_failure`]), and every
//! request that passed admission but gets no answer has its record finished here, in one place
//! ([`run`]'s end), with the client's error and the outcome.

use std::sync::Arc;

use tracing::Instrument as _;

use crate::accounting::{Outcome, UsageGuard};
use crate::cache::Lookup;
use crate::catalog::Strategy;
use crate::error::{ApiError, Code};
use crate::proxy::admit::{Admitted, admit};
use crate::proxy::attempt::{Attempt, Failed, attempt};
use crate::proxy::autoselect::{CallReply, Calls, SelectionOutcome};
use crate::proxy::cached;
use crate::proxy::plan::{Planned, output_cap, plan};
use crate::proxy::reason::{Filter, Reason};
use crate::proxy::reply::{Body, CacheNote, Reply, Routing};
use crate::proxy::request::{Refusal, Request, Scope};
use crate::proxy::slot::Slot;
use crate::proxy::state::ProxyState;
use crate::proxy::trace;
use crate::proxy::{burst, router};
use crate::types::{Locality, Operation, RequestId};
use crate::upstream::http::Clients;
use crate::upstream::{Disposition, FailureKind, UpstreamFailure};

/// Runs one request through the phases. `Err` before admission has no usage record; after it,
/// the record is finished with the error.
pub async fn run(state: &ProxyState, clients: &Clients, req: Request<'_>) -> Result<Reply, ApiError> {
    let (admitted, guard) = admit(state, &req).await?;
    // The routing span: the cache, the plan and every attempt (the attempts' spans are its
    // children).
    let span = trace::routing_span(&admitted.checked.model, req.is_selection(), req.sampling.sampled());
    // The response cache comes after admission: a request that would be refused is refused.
    let lookup = cached::lookup(state, &req, &admitted).instrument(span.clone()).await;
    let status = lookup.status();
    if let Some(s) = status {
        trace::record_cache(&span, s.as_str());
    }
    let fill = match lookup {
        Lookup::Hit(hit) => {
            return match cached::serve(state, &req, &admitted, guard, hit).instrument(span.clone()).await {
                Ok(reply) => {
                    let r = &reply.routing;
                    trace::record_hit(&span, &r.route, &r.provider, &r.model);
                    Ok(reply)
                }
                Err((g, r)) => {
                    trace::record_unanswered(&span, r.outcome.as_str());
                    Err(end(g, r))
                }
            };
        }
        Lookup::Miss(fill) => Some(fill),
        Lookup::Off | Lookup::Bypass => None,
    };
    let mut reply = route(state, clients, &req, &admitted, guard, &span).instrument(span.clone()).await?;
    reply.cache = status.map(|status| CacheNote { status, age_secs: None });
    if let Some(fill) = fill {
        cached::keep(&mut reply, fill).await;
    }
    Ok(reply)
}

/// `plan`, then the attempts; the record of an ending without an answer is finished here.
async fn route(
    state: &ProxyState,
    clients: &Clients,
    req: &Request<'_>,
    admitted: &Admitted,
    mut guard: UsageGuard,
    span: &tracing::Span,
) -> Result<Reply, ApiError> {
    let calls = SelectionCalls { state, clients, caller: req.caller, parent: req.id, sampling: &req.sampling };
    let planned = match plan(state, req, admitted, &mut guard, &calls).await {
        Ok(p) => p,
        Err(r) => {
            trace::record_unanswered(span, r.outcome.as_str());
            return Err(end(guard, r));
        }
    };
    if !span.is_disabled() {
        let order: Vec<&str> = planned.queue.iter().map(|(c, _)| c.target.route.as_str()).collect();
        let filtered = planned.receipt.as_ref().map(|r| r.filtered_summary()).unwrap_or_default();
        trace::record_plan(span, &planned.plan.route, planned.plan.strategy, &order, &filtered);
    }
    let result = attempts(state, clients, req, admitted, planned, guard).await;
    match result {
        Ok(reply) => {
            let r = &reply.routing;
            trace::record_answered(span, &format!("provider/{}/{}", r.provider, r.model), r.reason.as_str());
            Ok(reply)
        }
        Err((guard, r)) => {
            trace::record_unanswered(span, r.outcome.as_str());
            Err(end(guard, r))
        }
    }
}

/// Finishes the record of a request that ends without an answer.
fn end(guard: UsageGuard, r: Refusal) -> ApiError {
    guard.finish_unanswered(r.error.code.status(), r.outcome);
    r.error
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Try the next candidate.
    Failover,
    /// The client gets this failure's answer now.
    Stop,
}

/// The retry decision, in one place: a failure that is the client's fault ends the request;
/// any other moves on to the next candidate (the caller checks attempts left and the budget).
fn after_failure(f: &UpstreamFailure) -> Next {
    match f.disposition() {
        Disposition::Reject => Next::Stop,
        Disposition::Failover => Next::Failover,
    }
}

/// Tries the planned candidates in order until one answers.
async fn attempts(
    state: &ProxyState,
    clients: &Clients,
    req: &Request<'_>,
    a: &Admitted,
    planned: Planned,
    mut guard: UsageGuard,
) -> Result<Reply, (UsageGuard, Refusal)> {
    let Planned { plan, queue, decision, mut receipt } = planned;
    let checked = &a.checked;
    let request_id = req.id.to_string();
    let ask_usage = checked.stream && !checked.client_wants_usage;
    // Cluster mode: the ledger learns of the request before any upstream does.
    guard.started().await;
    let _in_flight = state.retries.request();
    let (queue, untranslatable) = carriers(req, a, queue, &mut receipt);
    if let Some(r) = receipt.as_ref().filter(|_| untranslatable.is_some()) {
        guard.set_routing(r.to_json());
    }
    let max = queue.len().min(plan.max_attempts);
    let mut last: Option<(String, UpstreamFailure)> = None;
    let mut over_capacity = false;
    let mut number = 0;
    let input = state.tracing.capture_content.then(|| crate::dialect::pivot::input_messages(&a.body));
    for (cand, first) in queue.into_iter().take(max) {
        // A failover needs the node's retry budget, so an outage cannot multiply the load.
        let _retry = match &last {
            None => None,
            Some(_) => match state.retries.retry() {
                Some(hold) => Some(hold),
                None => {
                    tracing::warn!(route = %plan.route, "Retry budget spent; no failover for this request.");
                    if let Some(r) = &mut receipt {
                        r.retry_budget_exhausted = true;
                        guard.set_routing(r.to_json());
                    }
                    break;
                }
            },
        };
        let reason = if last.is_some() { Reason::Failover } else { first };
        let target = &cand.target;
        guard.set_target(&target.provider.id, &target.model, a.snapshot.price(&target.provider.id, &target.model));
        guard.progress.caps =
            Some(crate::accounting::BillCaps { prompt: checked.prompt_cap(), completion: output_cap(target, checked) });
        let Ok(slot) = Slot::acquire(state, &plan, target, &request_id).await else {
            over_capacity = true;
            if let Some(r) = &mut receipt {
                r.filtered(&target.route, Filter::OverCapacity);
            }
            continue;
        };
        number += 1;
        if let Some(r) = &mut receipt {
            r.attempt(&target.route, number, reason);
            guard.set_routing(r.to_json());
        }
        let spend = plan.burst.as_ref().filter(|b| b.daily_cloud_budget_usd.is_some());
        let cloud = target.provider.locality == Locality::Cloud;
        guard.count_spend(
            spend.filter(|_| cloud).map(|b| (Arc::clone(&state.shared), burst::spend_key(b), burst::DAY_MS)),
        );
        let body = match upstream_body(req, a, target, ask_usage) {
            Ok(b) => b,
            Err(error) => {
                let outcome = if error.code.status() < 500 { Outcome::Refused } else { Outcome::InternalError };
                return Err((guard, Refusal { error, outcome }));
            }
        };
        let started = std::time::Instant::now();
        let one = Attempt {
            op: req.op,
            client: req.dialect,
            forwarded: &req.forwarded,
            echo: &a.echo,
            target,
            body,
            request_id: &request_id,
            stream: checked.stream,
            strip_usage: ask_usage,
            number,
            input: input.as_deref(),
            sampling: &req.sampling,
        };
        let result = attempt(state, clients, one, guard, slot).await;
        if let Some(spec) = &plan.burst {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            burst::observe_latency(state, burst::latency_key(spec, target.provider.locality), ms);
        }
        match result {
            Ok((body, served)) => {
                if plan.strategy != Strategy::Direct {
                    router::record_success(state, plan.health, &cand);
                }
                let routing = Routing {
                    route: plan.route.clone(),
                    provider: target.provider.id.clone(),
                    model: target.model.name.clone(),
                    reason,
                    locality: target.provider.locality,
                    burst: decision.as_ref().map(|d| (d.mode, d.sensitive)),
                };
                return Ok(Reply { body, routing, served, cache: None });
            }
            Err(Failed { failure, guard: g }) => {
                guard = *g;
                let provider = target.provider.id.as_str();
                if let Some(r) = &mut receipt {
                    r.failed(&target.route, failure.kind.label());
                    guard.set_routing(r.to_json());
                }
                state
                    .metrics
                    .upstream_errors
                    .with_label_values(&[crate::telemetry::provider_label(provider), failure.kind.label()])
                    .inc();
                tracing::warn!(provider, kind = failure.kind.label(), detail = %failure.message, "Upstream attempt failed.");
                if after_failure(&failure) == Next::Stop {
                    // The upstream judged the client's request: not the provider's fault.
                    let error = failure_to_error(provider, &failure);
                    return Err((guard, Refusal { error, outcome: Outcome::Rejected }));
                }
                if plan.strategy != Strategy::Direct {
                    router::record_failure(state, plan.health, &cand, &failure).await;
                }
                last = Some((provider.to_owned(), failure));
            }
        }
    }
    if last.is_none()
        && !over_capacity
        && let Some(error) = untranslatable
    {
        return Err((guard, Refusal::refused(error)));
    }
    Err((guard, exhausted(&plan.route, last, over_capacity)))
}

/// The candidates that can carry the request: all of them, unless it holds what only its own
/// dialect's upstreams can carry (a rotation mixing dialects) — then those, before any attempt is
/// counted, with the reason for a client whose candidates were all skipped.
fn carriers<C>(
    req: &Request<'_>,
    a: &Admitted,
    queue: Vec<(crate::catalog::Candidate, C)>,
    receipt: &mut Option<crate::proxy::receipt::Receipt>,
) -> (Vec<(crate::catalog::Candidate, C)>, Option<ApiError>) {
    let Some(e) = &a.untranslatable else { return (queue, None) };
    let mut skipped = None;
    let kept = queue
        .into_iter()
        .filter(|(cand, _)| {
            let ok = serves_as_is(req.dialect, &cand.target);
            if !ok {
                skipped = Some(e.clone());
                if let Some(r) = receipt.as_mut() {
                    r.filtered(&cand.target.route, Filter::Dialect);
                }
            }
            ok
        })
        .collect();
    (kept, skipped)
}

/// Whether `target` receives a client of `client`'s dialect as it is (a passthrough).
fn serves_as_is(client: crate::dialect::Dialect, target: &crate::catalog::Target) -> bool {
    let p = &target.provider;
    crate::dialect::Dialect::for_attempt(p.kind, p.responses_api, client) == Some(client)
}

/// The body `target` receives: the client's bytes when it speaks the client's dialect (`model`
/// replaced), else the pivot in the target's dialect. An unsupported provider type gets none
/// (its attempt fails over).
fn upstream_body(
    req: &Request<'_>,
    a: &Admitted,
    target: &crate::catalog::Target,
    ask_usage: bool,
) -> Result<bytes::Bytes, ApiError> {
    use crate::dialect::bridge;
    let p = &target.provider;
    let Some(upstream) = crate::dialect::Dialect::for_attempt(p.kind, p.responses_api, req.dialect) else {
        return Ok(bytes::Bytes::new());
    };
    let out = bridge::Outbound {
        op: req.op,
        raw: req.raw,
        client_body: a.client_body.as_ref().unwrap_or(&a.body),
        pivot: &a.body,
        untranslatable: a.untranslatable.as_ref(),
        model: &target.model.name,
        ask_usage,
        default_max_tokens: target
            .model
            .context_size
            .map_or(bridge::DEFAULT_MAX_TOKENS, |c| c.min(bridge::DEFAULT_MAX_TOKENS)),
    };
    bridge::upstream_body(bridge::Sides { client: req.dialect, upstream }, &out)
}

/// The end of a request whose every attempt failed (or could not be made).
fn exhausted(route: &str, last: Option<(String, UpstreamFailure)>, over_capacity: bool) -> Refusal {
    match last {
        Some((provider, f)) => Refusal {
            error: failure_to_error(&provider, &f),
            outcome: if f.kind == FailureKind::Timeout { Outcome::UpstreamTimeout } else { Outcome::UpstreamError },
        },
        None if over_capacity => Refusal {
            error: ApiError::new(
                Code::NoAvailableUpstream,
                format!("Every candidate of `{route}` is at its concurrency limit."),
            )
            .with_retry_after(1),
            outcome: Outcome::OverCapacity,
        },
        None => Refusal {
            error: ApiError::new(Code::NoAvailableUpstream, "No candidate could take the request.").with_retry_after(1),
            outcome: Outcome::OverCapacity,
        },
    }
}

/// An autoselect's selection calls: requests through this pipeline on the caller's behalf,
/// each with its own usage record that names the request it serves.
struct SelectionCalls<'a> {
    state: &'a ProxyState,
    clients: &'a Clients,
    caller: &'a crate::proxy::caller::Caller,
    parent: RequestId,
    sampling: &'a crate::telemetry::Sampling,
}

impl Calls for SelectionCalls<'_> {
    async fn call(
        &self,
        op: Operation,
        body: Vec<u8>,
        private: bool,
        owner: Option<i64>,
    ) -> Result<CallReply, SelectionOutcome> {
        let id = RequestId::new();
        tracing::debug!(request_id = %self.parent, selection_request_id = %id, "Autoselect selection call.");
        let req = Request {
            id,
            caller: self.caller,
            op,
            scope: Scope::Selection { private, owner },
            burst_mode: None,
            raw: &body,
            dialect: crate::dialect::Dialect::OpenAi,
            parent: Some(self.parent),
            sampling: self.sampling.clone(),
            forwarded: Vec::new(),
            cache_control: crate::cache::Directives::default(),
        };
        match Box::pin(run(self.state, self.clients, req)).await {
            Ok(Reply { body: Body::Whole(body), served, .. }) => Ok(CallReply { body, served }),
            Ok(_) => Err(SelectionOutcome::Error),
            Err(e) if e.code == Code::PrivacyRouteUnavailable => Err(SelectionOutcome::NoPrivateSelectionRoute),
            Err(e) if e.code == Code::PermissionDenied => Err(SelectionOutcome::SelectionRouteForbidden),
            Err(_) => Err(SelectionOutcome::Error),
        }
    }
}

/// The client's error for an upstream failure: generic, naming the provider id, never its URL.
pub fn failure_to_error(provider: &str, f: &UpstreamFailure) -> ApiError {
    match f.kind {
        FailureKind::Timeout => {
            ApiError::new(Code::UpstreamTimeout, format!("The upstream `{provider}` did not answer in time."))
        }
        FailureKind::Connect => {
            ApiError::new(Code::UpstreamError, format!("The gateway could not reach the upstream `{provider}`."))
        }
        FailureKind::Protocol => ApiError::new(
            Code::UpstreamError,
            format!("The upstream `{provider}` sent an invalid response: {}.", f.message),
        ),
        FailureKind::Status(429) => {
            ApiError::new(Code::RateLimitExceeded, format!("The upstream `{provider}` is rate limiting requests."))
                .with_retry_after(f.retry_after.unwrap_or(1))
        }
        FailureKind::Status(s @ (401 | 403)) => ApiError::new(
            Code::UpstreamError,
            format!("The upstream `{provider}` refused the gateway's credentials (HTTP {s})."),
        ),
        FailureKind::Status(s) if f.disposition() == Disposition::Reject => ApiError::new(
            Code::InvalidRequest,
            format!("The upstream `{provider}` rejected the request (HTTP {s}): {}", f.message),
        ),
        FailureKind::Status(s) => {
            ApiError::new(Code::UpstreamError, format!("The upstream `{provider}` failed with HTTP {s}: {}", f.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{Fixture, MOCKS};

    #[test]
    fn retries_are_decided_by_what_failed() {
        let f = |kind| UpstreamFailure::new(kind, "x");
        for kind in [FailureKind::Connect, FailureKind::Timeout, FailureKind::Protocol] {
            assert_eq!(after_failure(&f(kind)), Next::Failover, "{kind:?}");
        }
        for s in [500, 502, 503, 429, 408, 401, 403] {
            assert_eq!(after_failure(&f(FailureKind::Status(s))), Next::Failover, "{s}");
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(after_failure(&f(FailureKind::Status(s))), Next::Stop, "{s}");
        }
    }

    /// The whole pipeline without an HTTP server: a rotation whose first candidate cannot be
    /// reached fails over to the in-process mock; the reply is a typed value with its routing.
    #[actix_web::test]
    async fn a_rotation_fails_over_to_a_typed_reply() {
        let mut f = Fixture::new(MOCKS).await;
        let raw = br#"{"model":"rotation/r","messages":[{"role":"user","content":"hi there"}]}"#;
        let reply = run(&f.state, &f.clients, f.request(raw)).await.expect("a reply");
        assert_eq!((reply.routing.provider.as_str(), reply.routing.reason), ("cloud", Reason::Failover));
        let Body::Whole(body) = reply.body else { panic!("a whole body") };
        assert!(String::from_utf8_lossy(&body).contains("You said: hi there"));
        let served = reply.served.expect("the record of a whole reply");
        let records = f.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].request_id, served.request_id);
        assert_eq!((records[0].outcome.as_str(), records[0].provider.as_deref()), ("ok", Some("cloud")));
        let receipt = records[0].routing.as_deref().unwrap_or_default();
        assert!(receipt.contains(r#""failure":"connect""#), "{receipt}");
    }

    /// The usage-record rule: nothing before admission has a record; every admitted request has
    /// exactly one, refusals included.
    #[actix_web::test]
    async fn records_begin_at_admission() {
        let mut f = Fixture::new(MOCKS).await;
        let bad = br#"{"model":"provider/local/m","messages":"not a list"}"#;
        let e = run(&f.state, &f.clients, f.request(bad)).await.err().expect("refused");
        assert_eq!(e.code, Code::InvalidRequest);
        let unknown = br#"{"model":"provider/nope/m","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(
            run(&f.state, &f.clients, f.request(unknown)).await.err().map(|e| e.code),
            Some(Code::ModelNotFound)
        );
        assert!(f.records().is_empty(), "a request refused before admission has no record");
        // Over the local model's context of 1000 tokens: admitted, then refused.
        let big = serde_json::json!({"model": "provider/local/m",
            "messages": [{"role": "user", "content": "word ".repeat(3_000)}]})
        .to_string();
        let e = run(&f.state, &f.clients, f.request(big.as_bytes())).await.err().expect("refused");
        assert_eq!(e.code, Code::InvalidRequest);
        let records = f.records();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].status, records[0].outcome.as_str(), records[0].cost_usd), (400, "refused", 0.0));
    }
}
