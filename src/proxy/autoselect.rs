//! Autoselect: classify the request for privacy, drop the candidates that may not receive it or
//! cannot serve it (capabilities), then choose among the rest by `selection`:
//!
//! - `rules`: the first eligible candidate, in configuration order;
//! - `embedding`: the eligible candidate whose description or example prompts are most similar
//!   (cosine) to the prompt, embedded through `embedding_route`; candidate vectors are cached;
//! - `llm`: the `selection_model` route is asked for one candidate id; its answer is parsed
//!   robustly, and a timeout, garbage or an unknown id goes to the fallback.
//!
//! Selection calls are ordinary requests through the pipeline on the caller's behalf: they get
//! their own usage record (billed to the caller), failover and cooldowns. Behind the privacy
//! fence a private request only ever reaches `privacy = true` candidates or local targets — the
//! fallback, every failover and the selection call itself (which sees the prompt) included.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::catalog::{AutoCandidate, Autoselect, Plan, SelectionMode, Snapshot};
use crate::dialect::Capability;
use crate::error::{ApiError, Code};
use crate::privacy::Classifier;
use crate::proxy::offload::offload;
use crate::proxy::permit::Permit;
use crate::proxy::state::ProxyState;
use crate::types::{Locality, Operation};

/// The most prompt text a selection call sends (bytes, the end of the prompt kept).
const SELECTION_TEXT_BYTES: usize = 8 * 1024;
/// Cached candidate vectors, at most (the cache is cleared when full).
const EMBEDDING_CACHE_ENTRIES: usize = 4096;

/// Why an autoselect chose what it chose (`X-Switchyard-Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionReason {
    /// A private request, chosen among private candidates.
    Privacy,
    /// The most similar candidate by embeddings.
    Semantic,
    /// The selection model named it.
    Llm,
    /// Earlier candidates lacked a capability the request needs.
    Capability,
    /// The first eligible candidate.
    Rules,
    /// No mode could place the request.
    Fallback,
}

impl SelectionReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privacy => "privacy",
            Self::Semantic => "semantic",
            Self::Llm => "llm",
            Self::Capability => "capability",
            Self::Rules => "rules",
            Self::Fallback => "fallback",
        }
    }
}

/// How a selection ended (the receipt's `selection.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionOutcome {
    /// `rules`: the first eligible candidate.
    Rules,
    /// One candidate was eligible: nothing to ask.
    OnlyOne,
    /// The mode chose a candidate.
    Chosen,
    /// `embedding`: the best similarity was under `min_similarity`.
    BelowMinSimilarity,
    /// The selection call took too long.
    Timeout,
    /// The selection answer could not be read.
    Garbage,
    /// The selection model named no candidate.
    UnknownId,
    /// The selection model named several candidates.
    Ambiguous,
    /// The selection call failed.
    Error,
    /// There was no prompt text to compare.
    EmptyPrompt,
    /// A private prompt, and the selection route has no local target.
    NoPrivateSelectionRoute,
    /// The caller may not use the selection route.
    SelectionRouteForbidden,
}

impl SelectionOutcome {
    /// The receipt's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::OnlyOne => "only_one",
            Self::Chosen => "chosen",
            Self::BelowMinSimilarity => "below_min_similarity",
            Self::Timeout => "timeout",
            Self::Garbage => "garbage",
            Self::UnknownId => "unknown_id",
            Self::Ambiguous => "ambiguous",
            Self::Error => "error",
            Self::EmptyPrompt => "empty_prompt",
            Self::NoPrivateSelectionRoute => "no_private_selection_route",
            Self::SelectionRouteForbidden => "selection_route_forbidden",
        }
    }
}

/// A selection call's answer: the body, and what its own usage record says.
pub struct CallReply {
    /// The whole answer body.
    pub body: bytes::Bytes,
    /// The call's record: request id, latency, cost.
    pub served: Option<crate::accounting::Finished>,
}

/// Selection calls: ordinary requests on the caller's behalf (the data plane implements this;
/// autoselect never sees how).
pub trait Calls {
    /// Sends `body` (an upstream body in the route's dialect) for `op` to the route `body` names,
    /// resolved in `owner`'s namespace (or globally), kept on local targets when `private`.
    fn call(
        &self,
        op: Operation,
        body: Vec<u8>,
        private: bool,
        owner: Option<i64>,
    ) -> impl std::future::Future<Output = Result<CallReply, SelectionOutcome>>;
}

fn classifier(a: &Autoselect) -> Result<&Arc<Classifier>, ApiError> {
    a.classifier.as_ref().ok_or_else(|| {
        tracing::error!(autoselect = %a.name, "Autoselect has an invalid privacy pattern.");
        ApiError::internal()
    })
}

/// Keeps only the plan's targets that have every required capability; `None` when none has.
fn with_capabilities(mut plan: Plan, required: &[Capability]) -> Option<Plan> {
    plan.candidates
        .retain(|c| required.iter().all(|r| c.target.model.capabilities.iter().any(|have| have == r.as_str())));
    (!plan.candidates.is_empty()).then_some(plan)
}

/// The outcome of a selection: the plan (carrying the autoselect's route name), the reason for
/// the headers, and what the routing receipt records about it.
pub struct Selection {
    /// What to dispatch.
    pub plan: Plan,
    /// Why.
    pub reason: SelectionReason,
    /// The receipt's `selection` object.
    pub detail: Value,
}

/// What a selection needs besides the autoselect and the request.
pub struct Context<'a, C> {
    /// Shared proxy state.
    pub state: &'a ProxyState,
    /// How selection calls are made (on the caller's behalf, billed to the caller).
    pub calls: &'a C,
    /// The routes the caller may reach: candidates, the fallback and the selection routes out
    /// of it are never called.
    pub permit: &'a Permit,
}

/// One eligible candidate and its plan.
struct Eligible<'a> {
    cand: &'a AutoCandidate,
    plan: Plan,
}

/// Chooses the plan of an autoselect request.
pub async fn select<C: Calls>(
    cx: &Context<'_, C>,
    snapshot: &Snapshot,
    a: &Autoselect,
    body: &Map<String, Value>,
    text: &Arc<str>,
) -> Result<Selection, ApiError> {
    let route = a.route();
    let verdict = if a.classify_privacy {
        let c = Arc::clone(classifier(a)?);
        let t = Arc::clone(text);
        Some(offload(cx.state, text.len(), move || c.classify(&t)).await?)
    } else {
        None
    };
    let text: &str = text;
    let private = verdict.as_ref().is_some_and(|v| v.is_private());
    let required = crate::dialect::pivot::required_capabilities(body);
    let mut considered = Vec::with_capacity(a.candidates.len());
    let mut eligible = Vec::with_capacity(a.candidates.len());
    let mut skipped_for_capability = false;
    let mut out_of_scope = 0usize;
    for c in &a.candidates {
        if private && !c.privacy {
            considered.push(json!({"route": c.route, "filtered": "privacy"}));
            continue;
        }
        let Ok(plan) = snapshot.resolve_as(a.owner, &c.route) else {
            considered.push(json!({"route": c.route, "filtered": "unavailable"}));
            continue;
        };
        // The caller's token, its ancestors and its tier must allow the route actually called.
        if !cx.permit.allows(&plan.route) {
            out_of_scope += 1;
            considered.push(json!({"route": c.route, "filtered": "scope"}));
            continue;
        }
        match with_capabilities(plan, &required) {
            Some(plan) => {
                considered.push(json!({"route": c.route}));
                eligible.push(Eligible { cand: c, plan });
            }
            None => {
                skipped_for_capability = true;
                considered.push(json!({"route": c.route, "filtered": "capability"}));
            }
        }
    }
    let mut detail = json!({
        "autoselect": route,
        "mode": a.selection.as_str(),
        "private": private,
        "candidates": considered,
    });
    if let Some(v) = &verdict
        && v.is_private()
    {
        detail["privacy_kinds"] = json!(v.kinds);
    }
    // A private request is only chosen among private candidates; that is the reason it went there.
    let chosen_reason = |by_mode: Option<SelectionReason>| match by_mode {
        _ if private => SelectionReason::Privacy,
        Some(r) => r,
        None if skipped_for_capability => SelectionReason::Capability,
        None => SelectionReason::Rules,
    };
    let (picked, outcome) = match (a.selection, eligible.len()) {
        (_, 0) => (None, None),
        (SelectionMode::Rules, _) => (Some((0, chosen_reason(None))), Some(SelectionOutcome::Rules)),
        (_, 1) => (Some((0, chosen_reason(None))), Some(SelectionOutcome::OnlyOne)),
        (SelectionMode::Embedding, _) => {
            match by_embedding(cx, &snapshot.embeddings, a, &eligible, text, private, &mut detail).await {
                Ok((i, scores)) => {
                    let below = a.min_similarity.is_some_and(|m| scores.get(i).is_none_or(|s| f64::from(*s) < m));
                    detail["scores"] = json!(scores);
                    if below {
                        (None, Some(SelectionOutcome::BelowMinSimilarity))
                    } else {
                        (Some((i, chosen_reason(Some(SelectionReason::Semantic)))), Some(SelectionOutcome::Chosen))
                    }
                }
                Err(why) => (None, Some(why)),
            }
        }
        (SelectionMode::Llm, _) => match by_llm(cx, a, &eligible, text, private, &mut detail).await {
            Ok(i) => (Some((i, chosen_reason(Some(SelectionReason::Llm)))), Some(SelectionOutcome::Chosen)),
            Err(why) => (None, Some(why)),
        },
    };
    if let Some(o) = outcome {
        detail["outcome"] = json!(o.as_str());
    }
    if let Some((i, reason)) = picked
        && i < eligible.len()
    {
        let Eligible { cand, mut plan } = eligible.swap_remove(i);
        detail["chosen"] = json!(cand.route);
        plan.route = route;
        return Ok(Selection { plan, reason, detail });
    }
    // No candidate chosen: the fallback, else (when selection failed) the first eligible one. A
    // fallback the caller may not reach counts as none.
    let all_out_of_scope = out_of_scope > 0 && out_of_scope == a.candidates.len();
    let mut fallback_out_of_scope = false;
    let fallback_plan = match &a.fallback {
        Some(f) => {
            let plan = snapshot.resolve_as(a.owner, f)?;
            if cx.permit.allows(&plan.route) {
                Some((f, plan))
            } else {
                detail["fallback_filtered"] = json!("scope");
                fallback_out_of_scope = true;
                None
            }
        }
        None => None,
    };
    let Some((fallback, mut plan)) = fallback_plan else {
        if !eligible.is_empty() {
            let Eligible { cand, mut plan } = eligible.swap_remove(0);
            detail["chosen"] = json!(cand.route);
            plan.route = route;
            return Ok(Selection { plan, reason: SelectionReason::Fallback, detail });
        }
        return Err(if private {
            ApiError::new(Code::PrivacyRouteUnavailable, "The request looks private and no private route can serve it.")
        } else if fallback_out_of_scope || all_out_of_scope {
            ApiError::new(Code::PermissionDenied, format!("This token may not use any candidate of `{route}`."))
        } else {
            ApiError::new(Code::ModelNotFound, format!("No candidate of `{route}` can serve this request."))
        });
    };
    if private {
        // The fallback is not declared private: only its local targets may take the request.
        plan.candidates.retain(|c| c.target.provider.locality == Locality::Local);
    }
    let Some(mut plan) = with_capabilities(plan, &required) else {
        return Err(if private {
            ApiError::new(Code::PrivacyRouteUnavailable, "The request looks private and no local target can serve it.")
        } else {
            ApiError::new(Code::ModelNotFound, format!("No candidate of `{route}` can serve this request."))
        });
    };
    detail["chosen"] = json!(fallback);
    plan.route = route;
    Ok(Selection { plan, reason: SelectionReason::Fallback, detail })
}

/// The end of `text`, at most `max` bytes, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Sends one selection request and returns its answer body, recording the call (its request
/// id, latency and cost) in the receipt's `selection.call`; a timeout is the fallback's business.
async fn call<C: Calls>(
    cx: &Context<'_, C>,
    op: Operation,
    body: Vec<u8>,
    private: bool,
    a: &Autoselect,
    detail: &mut Value,
) -> Result<bytes::Bytes, SelectionOutcome> {
    let reply = match tokio::time::timeout(a.selection_timeout, cx.calls.call(op, body, private, a.owner)).await {
        Err(_) => return Err(SelectionOutcome::Timeout),
        Ok(r) => r?,
    };
    if let Some(f) = &reply.served {
        detail["call"] = json!({"request_id": f.request_id, "latency_ms": f.latency_ms, "cost_usd": f.cost_usd});
    }
    Ok(reply.body)
}

/// The texts a candidate is compared by: its description and each example prompt.
fn candidate_texts(c: &AutoCandidate) -> Vec<&str> {
    std::iter::once(c.description.as_str())
        .chain(c.examples.iter().map(String::as_str))
        .filter(|t| !t.trim().is_empty())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return -1.0;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { -1.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

/// Embeds the prompt (and every candidate text not cached yet) in one call, and returns the
/// index of the most similar eligible candidate with every candidate's best similarity.
async fn by_embedding<C: Calls>(
    cx: &Context<'_, C>,
    cache: &crate::catalog::EmbeddingCache,
    a: &Autoselect,
    eligible: &[Eligible<'_>],
    text: &str,
    private: bool,
    detail: &mut Value,
) -> Result<(usize, Vec<f32>), SelectionOutcome> {
    let route = a.embedding_route.as_deref().ok_or(SelectionOutcome::Error)?;
    // Users' routes of the same name are different routes: the cache key says whose.
    let cache_route = format!("{:?}|{route}", a.owner);
    let cache_route = cache_route.as_str();
    let mut missing: Vec<&str> = Vec::new();
    if let Ok(c) = cache.lock() {
        for e in eligible {
            for t in candidate_texts(e.cand) {
                if !c.contains_key(&(cache_route.to_owned(), t.to_owned())) && !missing.contains(&t) {
                    missing.push(t);
                }
            }
        }
    }
    let prompt = tail(text.trim(), SELECTION_TEXT_BYTES);
    if prompt.is_empty() {
        return Err(SelectionOutcome::EmptyPrompt);
    }
    let mut inputs = vec![prompt];
    inputs.extend(missing.iter().copied());
    let body = crate::dialect::openai::embeddings_request(route, &inputs);
    let reply = call(cx, Operation::Embeddings, body, private, a, detail).await?;
    let vectors = crate::dialect::openai::read_vectors(&reply, inputs.len()).ok_or(SelectionOutcome::Garbage)?;
    let mut got = vectors.into_iter();
    let prompt_vec = got.next().ok_or(SelectionOutcome::Garbage)?;
    let mut scores = Vec::with_capacity(eligible.len());
    {
        let Ok(mut c) = cache.lock() else { return Err(SelectionOutcome::Error) };
        if c.len() + missing.len() > EMBEDDING_CACHE_ENTRIES {
            c.clear();
        }
        for (t, v) in missing.iter().zip(got) {
            c.insert((cache_route.to_owned(), (*t).to_owned()), Arc::new(v));
        }
        for e in eligible {
            let best = candidate_texts(e.cand)
                .into_iter()
                .filter_map(|t| c.get(&(cache_route.to_owned(), t.to_owned())).map(|v| cosine(&prompt_vec, v)))
                .fold(-1.0f32, f32::max);
            scores.push(best);
        }
    }
    // Highest similarity; ties keep configuration order.
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    Ok((best, scores))
}

/// Asks the selection model for one candidate id (the candidates' routes).
async fn by_llm<C: Calls>(
    cx: &Context<'_, C>,
    a: &Autoselect,
    eligible: &[Eligible<'_>],
    text: &str,
    private: bool,
    detail: &mut Value,
) -> Result<usize, SelectionOutcome> {
    let route = a.selection_model.as_deref().ok_or(SelectionOutcome::Error)?;
    let mut listing = String::new();
    for e in eligible {
        listing.push_str(&format!("- id: {}\n  description: {}\n", e.cand.route, e.cand.description.trim()));
        for ex in &e.cand.examples {
            listing.push_str(&format!("  example: {}\n", ex.trim()));
        }
    }
    let system = format!(
        "You choose which model should answer a user's request. The candidates:\n{listing}\n\
         Reply with the id of the single best candidate and nothing else."
    );
    let body = crate::dialect::openai::selection_request(route, &system, tail(text.trim(), SELECTION_TEXT_BYTES), 64);
    let reply = call(cx, Operation::Chat, body, private, a, detail).await?;
    let answer = crate::dialect::openai::answer_text(&reply).ok_or(SelectionOutcome::Garbage)?;
    detail["answer"] = json!(answer.chars().take(200).collect::<String>());
    let ids: Vec<&str> = eligible.iter().map(|e| e.cand.route.as_str()).collect();
    parse_choice(&answer, &ids)
}

/// Finds the one candidate id an answer names: exactly, as JSON (`"id"`, `{"id": …}`), quoted,
/// fenced or inside a sentence (as a whole word); thinking blocks are ignored. Several different
/// ids, or none, is `Err`.
pub fn parse_choice(answer: &str, ids: &[&str]) -> Result<usize, SelectionOutcome> {
    let mut text = answer.to_owned();
    // Drop <think>…</think> blocks of reasoning models (an unclosed one drops the rest).
    while let Some(start) = text.find("<think>") {
        match text[start..].find("</think>") {
            Some(end) => text.replace_range(start..start + end + "</think>".len(), ""),
            None => text.truncate(start),
        }
    }
    let trimmed =
        text.trim().trim_matches(|c: char| c == '`' || c == '"' || c == '\'' || c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return Err(SelectionOutcome::Garbage);
    }
    if let Some(i) = ids.iter().position(|id| id.eq_ignore_ascii_case(trimmed)) {
        return Ok(i);
    }
    if let Ok(v) = serde_json::from_str::<Value>(text.trim().trim_start_matches("```json").trim_matches('`').trim()) {
        let named = match &v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => {
                ["id", "choice", "model", "route", "candidate"].iter().find_map(|k| o.get(*k).and_then(Value::as_str))
            }
            _ => None,
        };
        if let Some(n) = named {
            return ids.iter().position(|id| id.eq_ignore_ascii_case(n.trim())).ok_or(SelectionOutcome::UnknownId);
        }
    }
    // Whole-word mentions: an id followed by an id character is a different, longer id.
    let is_id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':');
    let lower = text.to_ascii_lowercase();
    let mut found: Option<usize> = None;
    for (i, id) in ids.iter().enumerate() {
        let needle = id.to_ascii_lowercase();
        let mentioned = lower.match_indices(&needle).any(|(at, _)| {
            let before = lower[..at].chars().next_back();
            let after = lower[at + needle.len()..].chars().next();
            before.is_none_or(|c| !is_id_char(c)) && after.is_none_or(|c| !is_id_char(c) || c == '.')
        });
        if mentioned {
            if found.is_some() {
                return Err(SelectionOutcome::Ambiguous);
            }
            found = Some(i);
        }
    }
    found.ok_or(SelectionOutcome::UnknownId)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &[&str] = &["provider/local/qwen", "provider/cloud/big", "provider/cloud/big-2", "rotation/coding"];

    #[test]
    fn parses_answers_robustly() {
        let ok = [
            ("provider/cloud/big", 1),
            ("  `provider/cloud/big`  ", 1),
            ("\"rotation/coding\"", 3),
            ("PROVIDER/LOCAL/QWEN.", 0),
            ("{\"id\": \"provider/cloud/big-2\"}", 2),
            ("```json\n{\"choice\": \"rotation/coding\"}\n```", 3),
            ("The best candidate is provider/cloud/big.", 1),
            ("I pick provider/cloud/big-2 for this.", 2),
            ("<think>maybe provider/local/qwen? no</think>provider/cloud/big", 1),
        ];
        for (answer, want) in ok {
            assert_eq!(parse_choice(answer, IDS), Ok(want), "{answer}");
        }
        let bad = [
            ("", "garbage"),
            ("<think>still thinking about provider/local/qwen", "garbage"),
            ("gpt-4o", "unknown_id"),
            ("{\"id\": \"provider/cloud/huge\"}", "unknown_id"),
            ("either provider/cloud/big or rotation/coding", "ambiguous"),
            ("provider/cloud/bigger", "unknown_id"),
            ("I'm sorry, I cannot help with that.", "unknown_id"),
        ];
        for (answer, want) in bad {
            assert_eq!(parse_choice(answer, IDS).map_err(SelectionOutcome::as_str), Err(want), "{answer}");
        }
    }

    #[test]
    fn cosine_similarity() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[1.0]) + 1.0).abs() < 1e-6, "dimension mismatch is the worst score");
        assert!((cosine(&[0.0, 0.0], &[1.0, 0.0]) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn tail_cuts_at_a_character_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }
}
