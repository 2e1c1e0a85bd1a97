//! One proxied request from parsed body to response: validate, resolve, authorise, check the
//! context window, open the usage record, dispatch, and relay.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::accounting::{UsageGuard, UsageStart, quota};
use crate::catalog::{Candidate, Plan, Strategy, Target};
use crate::error::{ApiError, Code};
use crate::proxy::{Caller, ProxyState, autoselect, body, burst, relay, router, validate};
use crate::types::{Locality, Operation, ProviderKind, RequestId};
use crate::upstream::client::{self, Outgoing};
use crate::upstream::mock::{self, MockReply};
use crate::upstream::usage::summarize_body;
use crate::upstream::{FailureKind, UpstreamFailure, safe_upstream_message};

/// Whose names a request is resolved among.
#[derive(Clone, Debug)]
pub enum Scope {
    /// The token owner's namespace.
    Owner,
    /// `/api/u/{username}`: that user's namespace (already authorised; the user's id).
    User(i64),
    /// `/api/{provider_id}`: one provider's own model names.
    Provider(String),
    /// `/api/rotations`: `model` names a rotation.
    Rotation,
    /// `/api/autoselect`: `model` names an autoselect.
    Autoselect,
    /// An autoselect's selection call (embeddings or the selection model) on the caller's behalf:
    /// the autoselect's permission covers it; `private` keeps it on local targets.
    Selection {
        /// The prompt it carries is private.
        private: bool,
        /// Whose namespace the selection route is in (a user's autoselect), or global.
        owner: Option<i64>,
    },
}

/// What the handler extracted from the HTTP request.
pub struct Incoming<'a> {
    /// The request id.
    pub id: RequestId,
    /// The authenticated caller.
    pub caller: &'a Caller,
    /// Chat, completions or embeddings.
    pub op: Operation,
    /// Whose names the model resolves among.
    pub scope: Scope,
    /// The request's `X-Burst-Mode`, if any.
    pub burst_mode: Option<&'a str>,
}

/// What routes a caller may reach: its token, every token above it (a child token is held to
/// its ancestors' current scopes), and its tier. Every route actually called is checked.
pub struct Permit<'a> {
    /// The caller's token.
    pub token: &'a crate::catalog::TokenEntry,
    /// The tokens above it, parent first.
    pub ancestors: &'a [std::sync::Arc<crate::catalog::TokenEntry>],
    /// The owner's tier.
    pub tier: Option<&'a crate::store::TierRow>,
}

impl Permit<'_> {
    /// Whether `route` (a canonical route name) may be called.
    pub fn allows(&self, route: &str) -> bool {
        self.check(route).is_ok()
    }

    /// `Ok` when `route` may be called, else the 403 that says who forbids it.
    pub fn check(&self, route: &str) -> Result<(), ApiError> {
        if !self.token.may_use(route) || !self.ancestors.iter().all(|a| a.may_use(route)) {
            return Err(ApiError::new(Code::PermissionDenied, format!("This token may not use the route `{route}`.")));
        }
        if let Some(t) = self.tier
            && let Some(globs) = &t.routes
            && !globs.iter().any(|g| crate::types::glob_match(g, route))
        {
            return Err(ApiError::new(
                Code::PermissionDenied,
                format!("The tier `{}` does not include the route `{route}`.", t.name),
            ));
        }
        Ok(())
    }
}

/// What a request's `model` resolved to: a plan, or an autoselect that chooses one after admission.
enum Resolved {
    Plan(Plan),
    Autoselect(std::sync::Arc<crate::catalog::Autoselect>),
}

/// Prompts of at least this many bytes are classified and counted off the worker threads.
const OFFLOAD_BYTES: usize = 256 * 1024;
/// A prompt of more bytes per token than this is not counted to see whether it fits a window:
/// no real text comes close (about four bytes a token), so it is refused on its byte bound.
const MAX_BYTES_PER_TOKEN: u64 = 32;

/// Runs CPU-bound work over a prompt of `bytes` bytes: inline when small, else on the blocking
/// pool behind the node's semaphore for such work (one permit per core), so that no number of
/// large prompts can hold the actix workers that serve every other request.
pub(crate) async fn offload<T: Send + 'static>(
    state: &ProxyState,
    bytes: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if bytes < OFFLOAD_BYTES {
        return Ok(f());
    }
    // The permit goes with the work: a request dropped meanwhile (its client left) cannot free it
    // while the blocking work still runs.
    let permit = std::sync::Arc::clone(&state.heavy).acquire_owned().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|_| ApiError::internal())
}

/// Runs one request. The order is the cost order: cheap checks (body, scope, tier cap, route
/// permission), then admission (rate limits and concurrency — a request refused later still
/// counts against them), then the expensive work (autoselect classification and selection calls,
/// exact token counts off the worker threads), the quota reservation, and the attempts. Every
/// request past admission gets exactly one usage record, refusals included.
pub async fn run(
    state: &ProxyState,
    client: &crate::proxy::UpstreamClient,
    incoming: Incoming<'_>,
    raw: &[u8],
) -> Result<HttpResponse, ApiError> {
    let Incoming { id, caller, op, scope, burst_mode } = incoming;
    let mut body = body::parse_object(raw)?;
    let checked = validate::check(op, &body)?;
    let snapshot = state.catalog.snapshot();
    // A child token is held to its ancestors' scopes (which may have narrowed since it was
    // minted) and spends their limits and quotas.
    let ancestors = if caller.0.parent_id.is_some() { state.catalog.ancestors(&caller.0).await? } else { Vec::new() };
    let tier = snapshot.tier_of(caller.0.user_id);
    let permit = Permit { token: &caller.0, ancestors: &ancestors, tier: tier.as_deref() };
    let selection_call = matches!(scope, Scope::Selection { .. });
    // The tier's output cap, over every field an upstream may read as the limit.
    if let Some(t) = &tier
        && let Some(cap) = t.max_tokens
    {
        checked.check_output_cap(cap, &t.name)?;
    }
    let auto = match &scope {
        Scope::Autoselect => Some(
            snapshot
                .autoselect(&checked.model)
                .ok_or_else(|| ApiError::model_not_found(&format!("autoselect/{}", checked.model)))?,
        ),
        Scope::Owner => snapshot.autoselect_in(caller.0.user_id, &checked.model),
        Scope::User(u) => snapshot.autoselect_in(*u, &checked.model),
        Scope::Provider(_) | Scope::Rotation | Scope::Selection { .. } => None,
    };
    let resolved = match (&scope, auto) {
        (_, Some(a)) => Resolved::Autoselect(a),
        (Scope::Provider(p), None) => Resolved::Plan(snapshot.resolve_direct(p, &checked.model)?),
        (Scope::Rotation, None) => Resolved::Plan(
            snapshot
                .rotation_plan(&checked.model)
                .unwrap_or_else(|| Err(ApiError::model_not_found(&format!("rotation/{}", checked.model))))?,
        ),
        (Scope::Selection { private: true, owner }, None) => {
            let mut plan = snapshot.resolve_as(*owner, &checked.model)?;
            plan.candidates.retain(|c| c.target.provider.locality == Locality::Local);
            if plan.candidates.is_empty() {
                return Err(ApiError::new(
                    Code::PrivacyRouteUnavailable,
                    "The request looks private and the selection route has no local target.",
                ));
            }
            Resolved::Plan(plan)
        }
        (Scope::Selection { private: false, owner }, None) => {
            Resolved::Plan(snapshot.resolve_as(*owner, &checked.model)?)
        }
        (Scope::User(user), None) => Resolved::Plan(snapshot.resolve_in(*user, &checked.model)?),
        (Scope::Owner, None) => Resolved::Plan(snapshot.resolve_in(caller.0.user_id, &checked.model)?),
        (_, None) => Resolved::Plan(snapshot.resolve(&checked.model)?),
    };
    let route = match &resolved {
        Resolved::Autoselect(a) => a.route(),
        Resolved::Plan(p) => p.route.clone(),
    };
    permit.check(&route)?;
    if !state.accounting.has_room() {
        tracing::error!("Usage queue is full; refusing billable requests until it drains.");
        return Err(ApiError::unavailable().with_retry_after(5));
    }

    // Admission: rate limits and concurrency, charged on the cheap estimate before any costly
    // work. Selection calls are billed (their own records) but ride on their request's admission.
    let request_id = id.to_string();
    let mut settles = Vec::new();
    if !selection_call {
        let estimate = checked.prompt.estimate().saturating_add(checked.output_limit().unwrap_or(0));
        settles.extend(state.limiter.admit(&caller.0, &ancestors, tier.as_deref(), estimate, &request_id).await?);
    }
    let mut guard = state.accounting.open(UsageStart {
        request_id: id,
        user_id: caller.0.user_id,
        token_id: caller.0.id,
        route: checked.model.clone(),
        stream: checked.stream,
        canonical_route: route,
    });
    guard.progress.estimated_prompt = checked.prompt.estimate();
    for s in settles {
        guard.on_settle(s);
    }
    // From here on a refusal is finished into the record (cost 0, the prompt estimate counted
    // against the token limits that measure it).
    macro_rules! refuse {
        ($e:expr) => {{
            let e: ApiError = $e;
            guard.finish_unanswered(e.code.status(), "refused");
            return Err(e);
        }};
    }

    // The request's text, for the classifiers and the tokenizer: built at most once, and only
    // when one reads it.
    let mut text: Option<std::sync::Arc<str>> = None;
    let mut auto_reason = None;
    let mut selection_detail = None;
    let plan = match resolved {
        Resolved::Plan(plan) => plan,
        Resolved::Autoselect(a) => {
            let t = text.get_or_insert_with(|| validate::request_text(&body).into()).clone();
            let cx = autoselect::Context { state, client, caller, id, permit: &permit };
            match autoselect::select(&cx, &snapshot, &a, &body, &t).await {
                Ok(sel) => {
                    auto_reason = Some(sel.reason);
                    selection_detail = Some(sel.detail);
                    sel.plan
                }
                Err(e) => refuse!(e),
            }
        }
    };
    // The routing receipt (rotations and autoselects: a direct route has nothing to choose).
    let mut receipt = (plan.strategy != Strategy::Direct || selection_detail.is_some()).then(|| {
        let mut r = router::Receipt::new(&plan);
        r.selection = selection_detail;
        r
    });
    // Only candidates whose context window fits the request stay in the running. The prompt is
    // counted with the tokenizer only when that can change the decision: its byte bound is over
    // some candidate's limit, and not so far over that no real text could fit.
    let bound = checked.prompt.bound();
    let countable = plan
        .candidates
        .iter()
        .filter_map(|c| window_limit(&c.target))
        .any(|l| bound > l && checked.prompt.bytes <= l.saturating_mul(MAX_BYTES_PER_TOKEN));
    let counted = if countable {
        let t = text.get_or_insert_with(|| validate::request_text(&body).into()).clone();
        let tools = validate::tools_text(&body);
        let size = checked.prompt;
        let bytes = t.len();
        match offload(state, bytes, move || validate::count_prompt(&t, &tools, size)).await {
            Ok(n) => Some(n),
            Err(e) => refuse!(e),
        }
    } else {
        None
    };
    let prompt_estimate = counted.unwrap_or_else(|| checked.prompt.estimate());
    guard.progress.estimated_prompt = prompt_estimate;
    let prompt_tokens = counted.unwrap_or(bound);
    let mut fitting = Vec::with_capacity(plan.candidates.len());
    let mut too_big = None;
    for c in &plan.candidates {
        match check_window(&c.target, prompt_tokens, checked.max_tokens) {
            Ok(()) => fitting.push(c.clone()),
            Err(e) => {
                too_big = too_big.or(Some(e));
                if let Some(r) = &mut receipt {
                    r.filtered(&c.target.route, "context");
                }
            }
        }
    }
    if fitting.is_empty() {
        refuse!(too_big.unwrap_or_else(|| ApiError::model_not_found(&plan.route)));
    }

    // The body goes upstream with only `model` rewritten (and usage requested for streams).
    let inject_usage = checked.stream && !checked.client_wants_usage;
    if inject_usage {
        match body.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
    }

    // Quotas: reserved at the most the request may be billed on any of its candidates.
    if !selection_call {
        let mut quotas = Vec::new();
        for t in std::iter::once(&caller.0).chain(ancestors.iter()) {
            if let Some(q) = t.quota_usd {
                quotas.push((quota::Basis::Token(t.id), q));
            }
        }
        if let Some(q) = tier.as_ref().and_then(|t| t.monthly_quota_usd) {
            quotas.push((quota::Basis::UserMonth(caller.0.user_id), q));
        }
        if !quotas.is_empty() {
            let cost = worst_cost(&snapshot, &fitting, prompt_estimate, &checked);
            match state.quotas.reserve(&quotas, cost, state.limiter.live_nodes()).await {
                Ok(s) => {
                    if let Some(s) = s {
                        guard.on_settle(s);
                    }
                }
                Err(quota::QuotaError::Insufficient { basis }) => {
                    let whose = match basis {
                        quota::Basis::Token(_) => "The token's quota",
                        quota::Basis::UserMonth(_) => "This month's quota of the user's tier",
                    };
                    refuse!(ApiError::new(
                        Code::InsufficientQuota,
                        format!(
                            "{whose} is spent, or cannot cover this request (up to ${:.6}; a lower max_tokens costs less).",
                            quota::to_usd(cost)
                        ),
                    ));
                }
                Err(quota::QuotaError::Unavailable) => refuse!(ApiError::unavailable().with_retry_after(5)),
            }
        }
    }

    // Burst rotations decide by sensitivity, budget, queue depth and latency.
    let decision = match &plan.burst {
        Some(spec) => {
            let t = text.get_or_insert_with(|| validate::request_text(&body).into()).clone();
            match burst::decide(state, spec, fitting.clone(), &t, burst_mode).await {
                Ok(d) => Some(d),
                Err(e) => refuse!(e),
            }
        }
        None => None,
    };
    // Candidates a burst decision left out were removed by the privacy fence or the budget.
    if let (Some(d), Some(r)) = (&decision, receipt.as_mut()) {
        let why = if d.sensitive { "privacy" } else { "budget" };
        for c in &fitting {
            if !d.candidates.iter().any(|k| k.target.route == c.target.route) {
                r.filtered(&c.target.route, why);
            }
        }
    }
    // Order the candidates, set aside those cooling down, and probe if nothing else is left.
    let (ordered, first_reason) = match &decision {
        Some(d) => (d.candidates.clone(), d.reason),
        None => (router::order(state, &plan, fitting).await, plan.strategy.reason()),
    };
    let first_reason = auto_reason.unwrap_or(first_reason);
    let queue: Vec<(Candidate, &'static str)> = if plan.strategy == Strategy::Direct {
        ordered.into_iter().map(|c| (c, first_reason)).collect()
    } else {
        let (ready, cooling, capped) = router::split_cooling(state, ordered, plan.health).await;
        if !capped.is_empty() {
            tracing::warn!(route = %plan.route, kept = ?capped, "Ejection cap reached; cooling entries keep serving.");
        }
        let probe_needed = ready.is_empty();
        let (probed, rate_limited) = if probe_needed {
            let earliest = cooling.iter().map(|(_, d)| *d).min().unwrap_or(0);
            let (limited, errored) = router::split_rate_limited(state, cooling.clone()).await;
            let all_limited = errored.is_empty();
            (Some(router::probe(state, errored, earliest).await), all_limited && !limited.is_empty())
        } else {
            (None, false)
        };
        if let Some(r) = &mut receipt {
            let probe_target = match &probed {
                Some(Ok(c)) => Some(c.target.route.as_str()),
                _ => None,
            };
            for (c, _) in &cooling {
                if probe_target != Some(c.target.route.as_str()) {
                    r.filtered(&c.target.route, "cooldown");
                }
            }
        }
        if let Some(probed) = probed {
            match probed {
                Ok(c) => vec![(c, "cooldown_probe")],
                Err(retry_after) => {
                    if let Some(r) = &receipt {
                        guard.set_routing(r.to_json());
                    }
                    let err = if rate_limited {
                        ApiError::new(
                            Code::RateLimitExceeded,
                            format!("Every candidate of `{}` is rate limited by its upstream.", plan.route),
                        )
                    } else {
                        ApiError::new(
                            Code::NoAvailableUpstream,
                            format!("Every candidate of `{}` is cooling down after errors.", plan.route),
                        )
                    };
                    guard.finish_unanswered(err.code.status(), "all_cooling_down");
                    return Err(err.with_retry_after(retry_after));
                }
            }
        } else {
            ready
                .into_iter()
                .map(|c| {
                    let why = if capped.contains(&c.target.route) { "ejection_cap" } else { first_reason };
                    (c, why)
                })
                .collect()
        }
    };

    // Cluster mode: the ledger learns of the request before any upstream does.
    guard.started().await;
    let attempts = queue.len().min(plan.max_attempts);
    let mut last: Option<(String, UpstreamFailure)> = None;
    let mut over_capacity = false;
    let _in_flight = state.retries.request();
    for (i, (cand, first_reason)) in queue.into_iter().take(attempts).enumerate() {
        let reason = if i == 0 { first_reason } else { "failover_after_error" };
        // A failover attempt needs the node's retry budget, so an outage cannot multiply the load.
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
        let target = &cand.target;
        let provider = target.provider.id.as_str();
        guard.set_target(provider, &target.model, snapshot.price(provider, &target.model));
        guard.progress.caps = Some(crate::accounting::BillCaps {
            prompt: checked.prompt_cap(),
            completion: output_cap(target, &checked),
        });
        let slot = match acquire_slot(state, &plan, target, &request_id).await {
            Ok(slot) => slot,
            Err(()) => {
                over_capacity = true;
                if let Some(r) = &mut receipt {
                    r.filtered(&target.route, "over_capacity");
                }
                continue;
            }
        };
        if let Some(r) = &mut receipt {
            r.attempt(&target.route, i + 1, reason);
            guard.set_routing(r.to_json());
        }
        let spend = plan.burst.as_ref().filter(|b| b.daily_cloud_budget_usd.is_some());
        let cloud = target.provider.locality == Locality::Cloud;
        guard.count_spend(
            spend.filter(|_| cloud).map(|b| (std::sync::Arc::clone(&state.shared), burst::spend_key(b), burst::DAY_MS)),
        );
        let attempt_started = std::time::Instant::now();
        body.insert("model".into(), Value::String(target.model.name.clone()));
        let attempt = match target.provider.kind {
            ProviderKind::Mock => {
                Ok(dispatch_mock(op, &body, target, &request_id, checked.stream, checked.client_wants_usage, guard))
            }
            ProviderKind::Openai => {
                let Ok(bytes) = serde_json::to_vec(&body) else {
                    guard.finish_unanswered(500, "internal_error");
                    return Err(ApiError::internal());
                };
                let call =
                    Call { op, target, request_id: &request_id, stream: checked.stream, strip_usage: inject_usage };
                dispatch_openai(state, client, call, Bytes::from(bytes), guard, slot).await
            }
            other => Err(Failed {
                failure: UpstreamFailure::new(
                    FailureKind::Protocol,
                    format!("provider type `{}` is not supported by this version", other.as_str()),
                ),
                guard,
            }),
        };
        if let Some(spec) = &plan.burst {
            let ms = attempt_started.elapsed().as_secs_f64() * 1000.0;
            burst::observe_latency(state, burst::latency_key(spec, target.provider.locality), ms);
        }
        match attempt {
            Ok(mut res) => {
                if plan.strategy != Strategy::Direct {
                    router::record_success(state, plan.health, &cand);
                }
                add_route_headers(&mut res, &plan.route, target, reason);
                if let Some(d) = &decision {
                    add_burst_headers(&mut res, d, target, reason);
                }
                return Ok(res);
            }
            Err(Failed { failure, guard: g }) => {
                guard = g;
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
                if failure.is_client_fault() {
                    // The upstream judged the client's request: not the provider's fault, no failover.
                    let err = failure_to_error(provider, &failure);
                    guard.finish_unanswered(err.code.status(), "rejected");
                    return Err(err);
                }
                if plan.strategy != Strategy::Direct {
                    router::record_failure(state, plan.health, &cand, &failure).await;
                }
                last = Some((provider.to_owned(), failure));
            }
        }
    }
    let err = match &last {
        Some((provider, f)) => failure_to_error(provider, f),
        None if over_capacity => ApiError::new(
            Code::NoAvailableUpstream,
            format!("Every candidate of `{}` is at its concurrency limit.", plan.route),
        )
        .with_retry_after(1),
        None => ApiError::new(Code::NoAvailableUpstream, "No candidate could take the request.").with_retry_after(1),
    };
    let outcome = match last.as_ref().map(|(_, f)| f.kind) {
        Some(FailureKind::Timeout) => "upstream_timeout",
        Some(_) => "upstream_error",
        None => "over_capacity",
    };
    guard.finish_unanswered(err.code.status(), outcome);
    Err(err)
}

/// A failed attempt hands the usage record back, so the next candidate can carry it on.
pub struct Failed {
    failure: UpstreamFailure,
    guard: UsageGuard,
}

/// What one upstream call needs besides the body.
struct Call<'a> {
    op: Operation,
    target: &'a Target,
    request_id: &'a str,
    stream: bool,
    strip_usage: bool,
}

/// Takes an in-flight slot of the target's provider when it has a concurrency limit, or when
/// the plan orders by load. `Err` means the provider is full (or its limit cannot be checked).
async fn acquire_slot(state: &ProxyState, plan: &Plan, target: &Target, holder: &str) -> Result<Option<Slot>, ()> {
    let limit = match (target.provider.max_concurrency, plan.strategy) {
        (Some(l), _) => l,
        (None, Strategy::LeastBusy | Strategy::Burst) => u32::MAX,
        (None, _) => return Ok(None),
    };
    let total = target.provider.timeout.unwrap_or(Duration::from_millis(state.upstream.total_timeout_ms));
    match Slot::acquire(state, &target.provider.id, holder, limit, total).await {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) => Err(()),
        // Counting for least_busy is best effort; a hard limit fails closed.
        Err(e) if target.provider.max_concurrency.is_none() => {
            tracing::warn!(error = %e, "Shared state unavailable for in-flight counting.");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Shared state unavailable for a concurrency slot.");
            Err(())
        }
    }
}

/// Output tokens a request may be billed when it sets no output limit and the model's context
/// size is unknown (per choice): set `context_size` on models that write longer answers.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 4_096;

/// The most output tokens a request may be billed on `target`: its limit × choices, else the
/// model's context × choices, else [`DEFAULT_OUTPUT_ESTIMATE`] × choices.
fn output_cap(target: &Target, checked: &validate::Checked) -> u64 {
    checked
        .output_limit()
        .unwrap_or_else(|| target.model.context_size.unwrap_or(DEFAULT_OUTPUT_ESTIMATE).saturating_mul(checked.choices))
}

/// The most a request could cost on any of its candidates (micro-USD): its prompt, and its
/// output limit × choices (else the rest of the context window, else a default, per choice).
fn worst_cost(
    snapshot: &crate::catalog::Snapshot,
    cands: &[Candidate],
    prompt: u64,
    checked: &validate::Checked,
) -> u64 {
    cands
        .iter()
        .filter_map(|c| {
            let price = snapshot.price(&c.target.provider.id, &c.target.model)?;
            let output = checked.output_limit().unwrap_or_else(|| {
                c.target
                    .model
                    .context_size
                    .map_or(DEFAULT_OUTPUT_ESTIMATE, |ctx| ctx.saturating_sub(prompt))
                    .saturating_mul(checked.choices)
            });
            let usage = crate::types::Usage { prompt_tokens: prompt, completion_tokens: output, cached_tokens: 0 };
            Some(quota::micros(crate::accounting::cost_of(&price, usage)))
        })
        .max()
        .unwrap_or(0)
}

/// The smallest prompt-token limit of a target, if it has one.
fn window_limit(target: &Target) -> Option<u64> {
    match (target.model.max_request_tokens, target.model.context_size) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn check_window(target: &Target, prompt: u64, max_tokens: Option<u64>) -> Result<(), ApiError> {
    if let Some(limit) = target.model.max_request_tokens
        && prompt > limit
    {
        return Err(ApiError::invalid(
            "messages",
            format!("The request has {prompt} prompt tokens; this route accepts at most {limit}."),
        ));
    }
    if let Some(ctx) = target.model.context_size {
        if prompt > ctx {
            return Err(ApiError::invalid(
                "messages",
                format!("The request has {prompt} prompt tokens; the model's context is {ctx}."),
            ));
        }
        if let Some(max) = max_tokens
            && max > ctx
        {
            return Err(ApiError::invalid("max_tokens", format!("max_tokens is {max}; the model's context is {ctx}.")));
        }
    }
    Ok(())
}

fn add_burst_headers(res: &mut HttpResponse, d: &burst::Decision, target: &Target, reason: &str) {
    let backend = if target.provider.locality == Locality::Local { "local" } else { "cloud" };
    let h = res.headers_mut();
    let pairs = [
        ("x-burst-backend", backend),
        ("x-burst-mode", d.mode.as_str()),
        ("x-burst-reason", reason),
        ("x-burst-sensitivity", if d.sensitive { "sensitive" } else { "public" }),
    ];
    for (k, v) in pairs {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(v) {
            h.insert(actix_web::http::header::HeaderName::from_static(k), v);
        }
    }
}

fn add_route_headers(res: &mut HttpResponse, route: &str, target: &Target, reason: &str) {
    let h = res.headers_mut();
    let pairs = [
        ("x-switchyard-route", route),
        ("x-switchyard-provider", target.provider.id.as_str()),
        ("x-switchyard-model", target.model.name.as_str()),
        ("x-switchyard-reason", reason),
    ];
    for (k, v) in pairs {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(v) {
            h.insert(actix_web::http::header::HeaderName::from_static(k), v);
        }
    }
}

fn dispatch_mock(
    op: Operation,
    body: &serde_json::Map<String, Value>,
    target: &Target,
    request_id: &str,
    stream: bool,
    client_wants_usage: bool,
    mut guard: UsageGuard,
) -> HttpResponse {
    let reply = mock::answer(op, body, &target.model.name, request_id, stream, true);
    guard.mark_first_byte();
    match reply {
        MockReply::Json(b) => {
            if let Ok(s) = summarize_body(&b, op == Operation::Embeddings) {
                guard.progress.reported = s.usage;
            }
            guard.finish(200, "ok");
            HttpResponse::Ok().content_type("application/json").body(b)
        }
        MockReply::Stream(events) => {
            let mut out = Vec::with_capacity(events.len());
            for ev in events {
                let data = ev.strip_prefix(b"data: ").unwrap_or(&ev);
                if let Ok(s) = crate::upstream::usage::summarize_chunk(data.trim_ascii_end())
                    && s.usage.is_some()
                {
                    guard.progress.reported = s.usage;
                    if !client_wants_usage && s.empty_choices {
                        continue;
                    }
                }
                out.push(Ok::<Bytes, std::convert::Infallible>(ev));
            }
            guard.finish(200, "ok");
            sse_response().streaming(futures_util::stream::iter(out))
        }
    }
}

/// The head of a streaming response.
pub fn sse_response() -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    b
}

/// One attempt at an OpenAI-compatible upstream. Before any byte reaches the client a failure
/// is returned (with the usage guard) so the caller may try another candidate; once the
/// response is committed, failures end the stream in-band.
async fn dispatch_openai(
    state: &ProxyState,
    clients: &crate::proxy::UpstreamClient,
    call: Call<'_>,
    body: Bytes,
    mut guard: UsageGuard,
    slot: Option<Slot>,
) -> Result<HttpResponse, Failed> {
    let Call { op, target, request_id, stream, strip_usage } = call;
    let up = &state.upstream;
    // A user-defined endpoint goes through the SSRF guard: its resolver checks host names, and
    // an IP-literal host is checked here.
    let client = if target.provider.guarded { &clients.guarded } else { &clients.open };
    if target.provider.guarded
        && target
            .provider
            .endpoint
            .as_deref()
            .is_some_and(|e| !crate::upstream::ssrf::literal_allowed(e, &state.endpoint_allowlist))
    {
        return Err(Failed {
            failure: UpstreamFailure::new(FailureKind::Connect, "the endpoint's address is not allowed"),
            guard,
        });
    }
    let Some(endpoint) = target.provider.endpoint.as_deref() else {
        return Err(Failed {
            failure: UpstreamFailure::new(FailureKind::Connect, "the provider has no endpoint"),
            guard,
        });
    };
    let url = format!("{endpoint}{}", op.path());
    let total = target.provider.timeout.unwrap_or(Duration::from_millis(up.total_timeout_ms));
    let deadline = tokio::time::Instant::now() + total;
    let first_byte = Duration::from_millis(up.first_byte_timeout_ms).min(total);
    let out =
        Outgoing { url: &url, api_key: target.provider.api_key.as_ref().map(|k| k.expose()), body, request_id, stream };
    let started = std::time::Instant::now();
    let provider = target.provider.id.as_str();
    let mut resp = match client::send(client, out, first_byte).await {
        Ok(r) => r,
        Err(f) => return Err(Failed { failure: f, guard }),
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry_after =
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let text = read_limited(&mut resp, 64 * 1024, Duration::from_millis(up.idle_timeout_ms), deadline)
            .await
            .unwrap_or_default();
        let detail = safe_upstream_message(&text, target.provider.api_key.as_ref().map(|k| k.expose()));
        let mut f = UpstreamFailure::new(
            FailureKind::Status(status),
            detail.unwrap_or_else(|| "no usable error message".into()),
        );
        f.retry_after = retry_after;
        return Err(Failed { failure: f, guard });
    }
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    if stream {
        if !is_sse {
            let f = UpstreamFailure::new(FailureKind::Protocol, "the upstream did not answer with an event stream");
            return Err(Failed { failure: f, guard });
        }
        guard.mark_first_byte();
        let relay = relay::Relay::new(
            resp,
            guard,
            relay::Limits {
                idle: Duration::from_millis(up.idle_timeout_ms),
                first_event_by: tokio::time::Instant::from_std(started) + first_byte,
                keepalive: Duration::from_millis(up.keepalive_interval_ms),
                deadline,
                max_line: up.max_sse_line_bytes,
                strip_usage_only_chunk: strip_usage,
                cut: state.drain.cut.clone(),
            },
            state.metrics.clone(),
            provider.to_owned(),
            started,
            slot,
        );
        return Ok(sse_response().streaming(relay.into_stream()));
    }
    let body = match read_limited(&mut resp, up.max_response_bytes, Duration::from_millis(up.idle_timeout_ms), deadline)
        .await
    {
        Ok(b) => b,
        Err(f) => return Err(Failed { failure: f, guard }),
    };
    guard.mark_first_byte();
    match summarize_body(&body, op == Operation::Embeddings) {
        Ok(s) => {
            guard.progress.reported = s.usage;
            if s.usage.is_none() {
                guard.progress.relayed_output = s.output_tokens;
            }
            state
                .metrics
                .upstream_latency
                .with_label_values(&[crate::telemetry::provider_label(provider)])
                .observe(started.elapsed().as_secs_f64());
            guard.finish(200, "ok");
            Ok(HttpResponse::Ok().content_type("application/json").body(body))
        }
        Err(why) => Err(Failed { failure: UpstreamFailure::new(FailureKind::Protocol, why), guard }),
    }
}

/// One held concurrency slot of a provider, cluster-wide; released when dropped.
pub struct Slot {
    shared: std::sync::Arc<dyn crate::shared::SharedState>,
    key: String,
    holder: String,
}

impl Slot {
    async fn acquire(
        state: &ProxyState,
        provider: &str,
        holder: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Option<Self>, crate::shared::SharedError> {
        let key = format!("provider:{provider}:inflight");
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).saturating_add(5_000);
        let got = state.shared.slot_acquire(&key, holder, u64::from(limit), lease_ms).await?;
        Ok(got.then(|| Self { shared: std::sync::Arc::clone(&state.shared), key, holder: holder.to_owned() }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (shared, key, holder) =
            (std::sync::Arc::clone(&self.shared), std::mem::take(&mut self.key), std::mem::take(&mut self.holder));
        // The lease frees the slot anyway if this release never runs.
        actix_web::rt::spawn(async move {
            if let Err(e) = shared.slot_release(&key, &holder).await {
                tracing::warn!(error = %e, "Could not release a concurrency slot; its lease will.");
            }
        });
    }
}

/// Reads an upstream body with a size cap, an idle timeout between chunks and an overall deadline.
async fn read_limited(
    resp: &mut client::Response,
    cap: usize,
    idle: Duration,
    deadline: tokio::time::Instant,
) -> Result<Bytes, UpstreamFailure> {
    let mut buf = actix_web::web::BytesMut::new();
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, resp.next()).await {
            Err(_) => {
                return Err(UpstreamFailure::new(
                    FailureKind::Timeout,
                    "the upstream stalled while sending its answer",
                ));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => {
                return Err(UpstreamFailure::new(
                    FailureKind::Protocol,
                    "the upstream connection broke while sending its answer",
                ));
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > cap {
                    return Err(UpstreamFailure::new(
                        FailureKind::Protocol,
                        "the upstream answer was larger than the gateway accepts",
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
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
        FailureKind::Status(s) if f.is_client_fault() => ApiError::new(
            Code::InvalidRequest,
            format!("The upstream `{provider}` rejected the request (HTTP {s}): {}", f.message),
        ),
        FailureKind::Status(s) => {
            ApiError::new(Code::UpstreamError, format!("The upstream `{provider}` failed with HTTP {s}: {}", f.message))
        }
    }
}
