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

use crate::catalog::{AutoCandidate, Autoselect, Plan, Snapshot};
use crate::error::{ApiError, Code};
use crate::privacy::Classifier;
use crate::proxy::pipeline::{self, Incoming, Scope};
use crate::proxy::{Caller, ProxyState};
use crate::types::{Locality, Operation, RequestId};

/// The most prompt text a selection call sends (bytes, the end of the prompt kept).
const SELECTION_TEXT_BYTES: usize = 8 * 1024;
/// Cached candidate vectors, at most (the cache is cleared when full).
const EMBEDDING_CACHE_ENTRIES: usize = 4096;
/// The largest selection reply read.
const SELECTION_REPLY_BYTES: usize = 4 << 20;

/// The capabilities a request needs: `tools`, `vision` (image parts), `json` (JSON mode).
pub fn required_capabilities(body: &Map<String, Value>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        out.push("tools");
    }
    let has_image = body.get("messages").and_then(Value::as_array).is_some_and(|msgs| {
        msgs.iter().any(|m| {
            m.get("content").and_then(Value::as_array).is_some_and(|parts| {
                parts.iter().any(|p| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "input_image")))
            })
        })
    });
    if has_image {
        out.push("vision");
    }
    if matches!(
        body.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str),
        Some("json_object" | "json_schema")
    ) {
        out.push("json");
    }
    out
}

fn classifier(a: &Autoselect) -> Result<&Arc<Classifier>, ApiError> {
    a.classifier.as_ref().ok_or_else(|| {
        tracing::error!(autoselect = %a.name, "Autoselect has an invalid privacy pattern.");
        ApiError::internal()
    })
}

/// Keeps only the plan's targets that have every required capability; `None` when none has.
fn with_capabilities(mut plan: Plan, required: &[&str]) -> Option<Plan> {
    plan.candidates.retain(|c| required.iter().all(|r| c.target.model.capabilities.iter().any(|have| have == r)));
    (!plan.candidates.is_empty()).then_some(plan)
}

/// The outcome of a selection: the plan (carrying the autoselect's route name), the reason for
/// the headers (`privacy`, `semantic`, `capability`, `rules`, `fallback`), and what the routing
/// receipt records about it.
pub struct Selection {
    /// What to dispatch.
    pub plan: Plan,
    /// `privacy`, `semantic`, `capability`, `rules` or `fallback`.
    pub reason: &'static str,
    /// The receipt's `selection` object.
    pub detail: Value,
}

/// What the selection call needs to make requests on the caller's behalf.
pub struct Context<'a> {
    /// Shared proxy state.
    pub state: &'a ProxyState,
    /// This worker's upstream client.
    pub client: &'a crate::proxy::UpstreamClient,
    /// The caller, who pays for the selection call.
    pub caller: &'a Caller,
    /// The client request's id (selection calls get their own ids, logged with this one).
    pub id: RequestId,
    /// The routes the caller may reach: candidates, the fallback and the selection routes out
    /// of it are never called.
    pub permit: &'a pipeline::Permit<'a>,
}

/// One eligible candidate and its plan.
struct Eligible<'a> {
    cand: &'a AutoCandidate,
    plan: Plan,
}

/// Chooses the plan of an autoselect request.
pub async fn select(
    cx: &Context<'_>,
    snapshot: &Snapshot,
    a: &Autoselect,
    body: &Map<String, Value>,
    text: &Arc<str>,
) -> Result<Selection, ApiError> {
    let route = a.route();
    let verdict = if a.classify_privacy {
        let c = Arc::clone(classifier(a)?);
        let t = Arc::clone(text);
        Some(pipeline::offload(cx.state, text.len(), move || c.classify(&t)).await?)
    } else {
        None
    };
    let text: &str = text;
    let private = verdict.as_ref().is_some_and(|v| v.is_private());
    let required = required_capabilities(body);
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
        "mode": a.selection,
        "private": private,
        "candidates": considered,
    });
    if let Some(v) = &verdict
        && v.is_private()
    {
        detail["privacy_kinds"] = json!(v.kinds);
    }
    // A private request is only chosen among private candidates; that is the reason it went there.
    let chosen_reason = |semantic: bool| {
        if private {
            "privacy"
        } else if semantic {
            "semantic"
        } else if skipped_for_capability {
            "capability"
        } else {
            "rules"
        }
    };
    let picked = match (a.selection.as_str(), eligible.len()) {
        (_, 0) => None,
        ("rules", _) | (_, 1) => {
            detail["outcome"] = json!(if eligible.len() == 1 && a.selection != "rules" { "only_one" } else { "rules" });
            Some((0, chosen_reason(false)))
        }
        ("embedding", _) => match by_embedding(cx, &snapshot.embeddings, a, &eligible, text, private).await {
            Ok((i, scores)) => {
                detail["scores"] = json!(scores);
                if a.min_similarity.is_some_and(|m| scores.get(i).is_none_or(|s| f64::from(*s) < m)) {
                    detail["outcome"] = json!("below_min_similarity");
                    None
                } else {
                    detail["outcome"] = json!("chosen");
                    Some((i, chosen_reason(true)))
                }
            }
            Err(why) => {
                detail["outcome"] = json!(why);
                None
            }
        },
        ("llm", _) => match by_llm(cx, a, &eligible, text, private).await {
            Ok(i) => {
                detail["outcome"] = json!("chosen");
                Some((i, chosen_reason(true)))
            }
            Err(why) => {
                detail["outcome"] = json!(why);
                None
            }
        },
        (other, _) => {
            tracing::error!(autoselect = %a.name, selection = other, "Unknown selection mode.");
            return Err(ApiError::internal());
        }
    };
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
            return Ok(Selection { plan, reason: "fallback", detail });
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
    Ok(Selection { plan, reason: "fallback", detail })
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

/// Sends one selection request through the pipeline and returns the JSON reply, or why not.
async fn call(
    cx: &Context<'_>,
    op: Operation,
    body: Value,
    private: bool,
    owner: Option<i64>,
    timeout: std::time::Duration,
) -> Result<Value, &'static str> {
    let raw = serde_json::to_vec(&body).map_err(|_| "error")?;
    let id = RequestId::new();
    let incoming = Incoming { id, caller: cx.caller, op, scope: Scope::Selection { private, owner }, burst_mode: None };
    tracing::debug!(request_id = %cx.id, selection_request_id = %id, "Autoselect selection call.");
    let run = Box::pin(pipeline::run(cx.state, cx.client, incoming, &raw));
    let res = match tokio::time::timeout(timeout, run).await {
        Err(_) => return Err("timeout"),
        Ok(Err(e)) if e.code == Code::PrivacyRouteUnavailable => return Err("no_private_selection_route"),
        Ok(Err(e)) if e.code == Code::PermissionDenied => return Err("selection_route_forbidden"),
        Ok(Err(_)) => return Err("error"),
        Ok(Ok(res)) => res,
    };
    if !res.status().is_success() {
        return Err("error");
    }
    let bytes = match actix_web::body::to_bytes_limited(res.into_body(), SELECTION_REPLY_BYTES).await {
        Ok(Ok(b)) => b,
        _ => return Err("error"),
    };
    serde_json::from_slice(&bytes).map_err(|_| "garbage")
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

#[expect(clippy::as_conversions, reason = "embedding components are f32 precision; there is no From")]
fn to_f32(f: f64) -> f32 {
    f as f32
}

/// Reads `data[i].embedding` of an embeddings reply, for `n` inputs.
fn vectors(reply: &Value, n: usize) -> Option<Vec<Vec<f32>>> {
    let data = reply.get("data")?.as_array()?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for (k, item) in data.iter().enumerate() {
        let i = item.get("index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or(k);
        let v: Vec<f32> =
            item.get("embedding")?.as_array()?.iter().map(|x| x.as_f64().map(to_f32)).collect::<Option<_>>()?;
        *out.get_mut(i)? = Some(v);
    }
    let out: Vec<Vec<f32>> = out.into_iter().collect::<Option<_>>()?;
    let dims = out.first().map(Vec::len)?;
    (dims > 0 && out.iter().all(|v| v.len() == dims)).then_some(out)
}

/// Embeds the prompt (and every candidate text not cached yet) in one call, and returns the
/// index of the most similar eligible candidate with every candidate's best similarity.
async fn by_embedding(
    cx: &Context<'_>,
    cache: &crate::catalog::EmbeddingCache,
    a: &Autoselect,
    eligible: &[Eligible<'_>],
    text: &str,
    private: bool,
) -> Result<(usize, Vec<f32>), &'static str> {
    let route = a.embedding_route.as_deref().ok_or("error")?;
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
        return Err("empty_prompt");
    }
    let mut inputs = vec![prompt];
    inputs.extend(missing.iter().copied());
    let reply = call(
        cx,
        Operation::Embeddings,
        json!({"model": route, "input": inputs}),
        private,
        a.owner,
        a.selection_timeout,
    )
    .await?;
    let mut got = vectors(&reply, inputs.len()).ok_or("garbage")?.into_iter();
    let prompt_vec = got.next().ok_or("garbage")?;
    let mut scores = Vec::with_capacity(eligible.len());
    {
        let Ok(mut c) = cache.lock() else { return Err("error") };
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
async fn by_llm(
    cx: &Context<'_>,
    a: &Autoselect,
    eligible: &[Eligible<'_>],
    text: &str,
    private: bool,
) -> Result<usize, &'static str> {
    let route = a.selection_model.as_deref().ok_or("error")?;
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
    let body = json!({
        "model": route,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": tail(text.trim(), SELECTION_TEXT_BYTES)},
        ],
        "temperature": 0,
        "max_tokens": 64,
        "stream": false,
    });
    let reply = call(cx, Operation::Chat, body, private, a.owner, a.selection_timeout).await?;
    let answer = reply.pointer("/choices/0/message/content").and_then(Value::as_str).ok_or("garbage")?;
    let ids: Vec<&str> = eligible.iter().map(|e| e.cand.route.as_str()).collect();
    parse_choice(answer, &ids)
}

/// Finds the one candidate id an answer names: exactly, as JSON (`"id"`, `{"id": …}`), quoted,
/// fenced or inside a sentence (as a whole word); thinking blocks are ignored. Several different
/// ids, or none, is `Err`.
pub fn parse_choice(answer: &str, ids: &[&str]) -> Result<usize, &'static str> {
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
        return Err("garbage");
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
            return ids.iter().position(|id| id.eq_ignore_ascii_case(n.trim())).ok_or("unknown_id");
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
                return Err("ambiguous");
            }
            found = Some(i);
        }
    }
    found.ok_or("unknown_id")
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
            assert_eq!(parse_choice(answer, IDS), Err(want), "{answer}");
        }
    }

    #[test]
    fn cosine_and_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[1.0]) + 1.0).abs() < 1e-6, "dimension mismatch is the worst score");
        assert!((cosine(&[0.0, 0.0], &[1.0, 0.0]) + 1.0).abs() < 1e-6);
        let reply = json!({"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]});
        assert_eq!(vectors(&reply, 2), Some(vec![vec![1.0, 0.0], vec![0.0, 1.0]]));
        assert_eq!(vectors(&reply, 3), None, "a missing vector");
        assert_eq!(vectors(&json!({"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}), 2), None);
        assert_eq!(vectors(&json!({"data": [{"embedding": "AAAA"}]}), 1), None);
        assert_eq!(vectors(&json!({"error": {}}), 1), None);
    }

    #[test]
    fn tail_cuts_at_a_character_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }
}
