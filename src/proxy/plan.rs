//! Phase `plan`: the costly choices, after admission — the autoselect's selection, the context
//! windows (counting the prompt only when that can change the decision), the quota reservation,
//! the burst decision, the order of the candidates and the cooldown filter. The result is the
//! queue of attempts; a refusal here is finished into the usage record by the pipeline.

use std::sync::Arc;

use crate::accounting::{Outcome, UsageGuard, quota};
use crate::catalog::{Candidate, Plan, Strategy, Target};
use crate::dialect::pivot;
use crate::error::{ApiError, Code};
use crate::proxy::admit::{Admitted, Resolved};
use crate::proxy::autoselect::{self, Calls};
use crate::proxy::burst;
use crate::proxy::offload::offload;
use crate::proxy::reason::{Filter, Reason};
use crate::proxy::receipt::Receipt;
use crate::proxy::request::{Refusal, Request, Scope};
use crate::proxy::router;
use crate::proxy::state::ProxyState;
use crate::types::Locality;

/// A prompt of more bytes per token than this is not counted to see whether it fits a window:
/// no real text comes close (about four bytes a token), so it is refused on its byte bound.
const MAX_BYTES_PER_TOKEN: u64 = 32;

/// Output tokens a request may be billed when it sets no output limit and the model's context
/// size is unknown (per choice): set `context_size` on models that write longer answers.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 4_096;

/// The planned request: its candidates in the order to try, and why each goes where it goes.
pub struct Planned {
    /// The plan (route, strategy, health, attempts, burst settings).
    pub plan: Plan,
    /// The attempts to make, in order, with the reason of each first attempt.
    pub queue: Vec<(Candidate, Reason)>,
    /// A burst rotation's decision (its headers).
    pub decision: Option<burst::Decision>,
    /// The routing receipt (rotations and autoselects: a direct route has nothing to choose).
    pub receipt: Option<Receipt>,
}

/// Plans an admitted request.
pub async fn plan<C: Calls>(
    state: &ProxyState,
    req: &Request<'_>,
    a: &Admitted,
    guard: &mut UsageGuard,
    calls: &C,
) -> Result<Planned, Refusal> {
    // The request's text, for the classifiers and the tokenizer: built at most once, and only
    // when one reads it.
    let mut text: Option<Arc<str>> = None;
    let mut text_of = || Arc::clone(text.get_or_insert_with(|| pivot::request_text(&a.body).into()));
    let (mut plan, auto_reason, selection) = match &a.resolved {
        Resolved::Plan(p) => (p.clone(), None, None),
        Resolved::Autoselect(auto) => {
            let cx = autoselect::Context { state, calls, permit: &a.permit };
            let sel = autoselect::select(&cx, &a.snapshot, auto, &a.body, &text_of()).await?;
            (sel.plan, Some(Reason::Selection(sel.reason)), Some(sel.detail))
        }
    };
    if let Scope::Selection { private: true, .. } = req.scope {
        // A selection call carrying a private prompt stays on local targets.
        plan.candidates.retain(|c| c.target.provider.locality == Locality::Local);
        if plan.candidates.is_empty() {
            return Err(Refusal::refused(ApiError::new(
                Code::PrivacyRouteUnavailable,
                "The request looks private and the selection route has no local target.",
            )));
        }
    }
    let mut receipt = (plan.strategy != Strategy::Direct || selection.is_some()).then(|| {
        let mut r = Receipt::new(&plan);
        r.selection = selection;
        r
    });
    let fitting = fit(state, req, a, &plan, guard, &mut receipt, &mut text_of).await?;
    if !req.is_selection() {
        reserve(state, req, a, &fitting, guard).await?;
    }
    let decision = match &plan.burst {
        Some(spec) => Some(burst::decide(state, spec, fitting.clone(), &text_of(), req.burst_mode).await?),
        None => None,
    };
    // Candidates a burst decision left out were removed by the privacy fence or the budget.
    if let (Some(d), Some(r)) = (&decision, receipt.as_mut()) {
        let why = if d.sensitive { Filter::Privacy } else { Filter::Budget };
        for c in &fitting {
            if !d.candidates.iter().any(|k| k.target.route == c.target.route) {
                r.filtered(&c.target.route, why);
            }
        }
    }
    let (ordered, first) = match &decision {
        Some(d) => (d.candidates.clone(), Reason::Burst(d.reason)),
        None => (router::order(state, &plan, fitting).await, Reason::Strategy(plan.strategy)),
    };
    let first = auto_reason.unwrap_or(first);
    let queue = match ready(state, &plan, ordered, first, &mut receipt).await {
        Ok(q) => q,
        Err(refusal) => {
            if let Some(r) = &receipt {
                guard.set_routing(r.to_json());
            }
            return Err(refusal);
        }
    };
    Ok(Planned { plan, queue, decision, receipt })
}

/// The candidates whose context window fits the request. The prompt is counted with the
/// tokenizer only when that can change the decision: its byte bound is over some candidate's
/// limit, and not so far over that no real text could fit.
async fn fit(
    state: &ProxyState,
    req: &Request<'_>,
    a: &Admitted,
    plan: &Plan,
    guard: &mut UsageGuard,
    receipt: &mut Option<Receipt>,
    text_of: &mut impl FnMut() -> Arc<str>,
) -> Result<Vec<Candidate>, Refusal> {
    let checked = &a.checked;
    let bound = checked.prompt.bound();
    let countable = plan
        .candidates
        .iter()
        .filter_map(|c| window_limit(&c.target))
        .any(|l| bound > l && checked.prompt.bytes <= l.saturating_mul(MAX_BYTES_PER_TOKEN));
    let counted = if countable {
        let t = text_of();
        let (body, size) = (a.body.clone(), checked.prompt);
        Some(offload(state, t.len(), move || pivot::count_prompt(&body, &t, size)).await?)
    } else {
        None
    };
    guard.progress.estimated_prompt = counted.unwrap_or_else(|| checked.prompt.estimate());
    let prompt_tokens = counted.unwrap_or(bound);
    let mut fitting = Vec::with_capacity(plan.candidates.len());
    let mut too_big = None;
    let params = (req.dialect.prompt_param(req.op), req.dialect.output_param());
    for c in &plan.candidates {
        match check_window(&c.target, prompt_tokens, checked.max_tokens, params) {
            Ok(()) => fitting.push(c.clone()),
            Err(e) => {
                too_big = too_big.or(Some(e));
                if let Some(r) = receipt.as_mut() {
                    r.filtered(&c.target.route, Filter::Context);
                }
            }
        }
    }
    if fitting.is_empty() {
        return Err(Refusal::refused(too_big.unwrap_or_else(|| ApiError::model_not_found(&plan.route))));
    }
    Ok(fitting)
}

/// Reserves the quotas of the token, its ancestors and the tier at the most the request may be
/// billed on any of its candidates.
async fn reserve(
    state: &ProxyState,
    req: &Request<'_>,
    a: &Admitted,
    fitting: &[Candidate],
    guard: &mut UsageGuard,
) -> Result<(), Refusal> {
    let cost = worst_cost(&a.snapshot, fitting, guard.progress.estimated_prompt, &a.checked);
    reserve_quota(state, req, a, cost, guard).await
}

/// Reserves `cost` micro-USD against the quotas of the token, its ancestors and the tier (all or
/// none); the record settles it to the actual cost. A `cost` of 0 (a cache hit) reserves nothing
/// and is refused only when a quota is spent.
pub async fn reserve_quota(
    state: &ProxyState,
    req: &Request<'_>,
    a: &Admitted,
    cost: u64,
    guard: &mut UsageGuard,
) -> Result<(), Refusal> {
    let caller = &req.caller.0;
    let mut quotas = Vec::new();
    for t in std::iter::once(caller).chain(a.permit.ancestors.iter()) {
        if let Some(q) = t.quota_usd {
            quotas.push((quota::Basis::Token(t.id), q));
        }
    }
    if let Some(q) = a.permit.tier.as_ref().and_then(|t| t.monthly_quota_usd) {
        quotas.push((quota::Basis::UserMonth(caller.user_id), q));
    }
    if quotas.is_empty() {
        return Ok(());
    }
    match state.quotas.reserve(&quotas, cost, state.membership.live_nodes()).await {
        Ok(settle) => {
            if let Some(s) = settle {
                guard.on_settle(s);
            }
            Ok(())
        }
        Err(quota::QuotaError::Insufficient { basis }) => {
            let whose = match basis {
                quota::Basis::Token(_) => "The token's quota",
                quota::Basis::UserMonth(_) => "This month's quota of the user's tier",
            };
            Err(Refusal::refused(ApiError::new(
                Code::InsufficientQuota,
                format!(
                    "{whose} is spent, or cannot cover this request (up to ${:.6}; a lower max_tokens costs less).",
                    quota::to_usd(cost)
                ),
            )))
        }
        Err(quota::QuotaError::Unavailable) => Err(Refusal::refused(ApiError::unavailable().with_retry_after(5))),
    }
}

/// Sets aside the candidates cooling down (a direct route has no cooldowns) and, when nothing
/// else is left, probes one of them; every candidate cooling down with no probe allowed is the
/// request's end (`all_cooling_down`, 429 when upstreams rate-limited every one, else 503).
async fn ready(
    state: &ProxyState,
    plan: &Plan,
    ordered: Vec<Candidate>,
    first: Reason,
    receipt: &mut Option<Receipt>,
) -> Result<Vec<(Candidate, Reason)>, Refusal> {
    if plan.strategy == Strategy::Direct {
        return Ok(ordered.into_iter().map(|c| (c, first)).collect());
    }
    let (ready, cooling, capped) = router::split_cooling(state, ordered, plan.health).await;
    if !capped.is_empty() {
        tracing::warn!(route = %plan.route, kept = ?capped, "Ejection cap reached; cooling entries keep serving.");
    }
    if !ready.is_empty() {
        if let Some(r) = receipt.as_mut() {
            for (c, _) in &cooling {
                r.filtered(&c.target.route, Filter::Cooldown);
            }
        }
        return Ok(ready
            .into_iter()
            .map(|c| {
                let why = if capped.contains(&c.target.route) { Reason::EjectionCap } else { first };
                (c, why)
            })
            .collect());
    }
    let earliest = cooling.iter().map(|(_, d)| *d).min().unwrap_or(0);
    let (limited, errored) = router::split_rate_limited(state, cooling.clone()).await;
    let all_limited = errored.is_empty() && !limited.is_empty();
    let probed = router::probe(state, errored, earliest).await;
    if let Some(r) = receipt.as_mut() {
        let probe_target = probed.as_ref().ok().map(|c| c.target.route.as_str());
        for (c, _) in &cooling {
            if probe_target != Some(c.target.route.as_str()) {
                r.filtered(&c.target.route, Filter::Cooldown);
            }
        }
    }
    match probed {
        Ok(c) => Ok(vec![(c, Reason::CooldownProbe)]),
        Err(retry_after) => {
            let error = if all_limited {
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
            Err(Refusal { error: error.with_retry_after(retry_after), outcome: Outcome::AllCoolingDown })
        }
    }
}

/// The most output tokens a request may be billed on `target`: its limit × choices, else the
/// model's context × choices, else [`DEFAULT_OUTPUT_ESTIMATE`] × choices.
pub fn output_cap(target: &Target, checked: &crate::dialect::Checked) -> u64 {
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
    checked: &crate::dialect::Checked,
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
            let usage = crate::types::Usage {
                prompt_tokens: prompt,
                completion_tokens: output,
                ..crate::types::Usage::default()
            };
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

/// Whether a prompt of `prompt` tokens and an output limit fit `target`; the error names the
/// request's (prompt, output-limit) fields `params`.
fn check_window(
    target: &Target,
    prompt: u64,
    max_tokens: Option<u64>,
    (prompt_param, output_param): (&str, &str),
) -> Result<(), ApiError> {
    if let Some(limit) = target.model.max_request_tokens
        && prompt > limit
    {
        return Err(ApiError::invalid(
            prompt_param,
            format!("The request has {prompt} prompt tokens; this route accepts at most {limit}."),
        ));
    }
    if let Some(ctx) = target.model.context_size {
        if prompt > ctx {
            return Err(ApiError::invalid(
                prompt_param,
                format!("The request has {prompt} prompt tokens; the model's context is {ctx}."),
            ));
        }
        if let Some(max) = max_tokens
            && max > ctx
        {
            return Err(ApiError::invalid(
                output_param,
                format!("{output_param} is {max}; the model's context is {ctx}."),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::admit::admit;
    use crate::proxy::autoselect::{CallReply, SelectionOutcome, SelectionReason};
    use crate::proxy::testing::{Fixture, MOCKS};
    use crate::types::Operation;

    /// Selection calls answered in the test, not by an upstream: the seam autoselect calls through.
    struct Answering(&'static str);

    impl Calls for Answering {
        async fn call(
            &self,
            _: Operation,
            body: Vec<u8>,
            _: bool,
            _: Option<i64>,
        ) -> Result<CallReply, SelectionOutcome> {
            assert!(String::from_utf8_lossy(&body).contains("provider/local/m"), "the candidates are listed");
            let answer = serde_json::json!({"choices": [{"message": {"content": self.0}}]}).to_string();
            Ok(CallReply { body: bytes::Bytes::from(answer), served: None })
        }
    }

    fn autoselect() -> String {
        format!(
            "{MOCKS}\n[[autoselects]]\nname = \"pick\"\nselection = \"llm\"\nselection_model = \"provider/cloud/m\"\n\
             fallback = \"provider/cloud/m\"\navailable_models = [{{ route = \"provider/local/m\" }}, {{ route = \"provider/cloud/m\" }}]\n"
        )
    }

    /// `plan` alone: an autoselect in `llm` mode chooses through the `Calls` seam, and says `llm`.
    #[actix_web::test]
    async fn an_llm_selection_plans_the_named_candidate() {
        let f = Fixture::new(&autoselect()).await;
        let raw = br#"{"model":"autoselect/pick","messages":[{"role":"user","content":"fix my code"}]}"#;
        let req = f.request(raw);
        let (a, mut guard) = admit(&f.state, &req).await.expect("admitted");
        let p = plan(&f.state, &req, &a, &mut guard, &Answering("provider/local/m"))
            .await
            .unwrap_or_else(|r| panic!("{}", r.error));
        assert_eq!(p.queue[0].0.target.route, "provider/local/m");
        assert_eq!(p.queue[0].1, Reason::Selection(SelectionReason::Llm));
        let p =
            plan(&f.state, &req, &a, &mut guard, &Answering("no idea")).await.unwrap_or_else(|r| panic!("{}", r.error));
        assert_eq!(
            (p.queue[0].0.target.route.as_str(), p.queue[0].1),
            ("provider/cloud/m", Reason::Selection(SelectionReason::Fallback))
        );
    }
}
