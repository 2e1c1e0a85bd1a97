//! Autoselect in `rules` mode: classify the request for privacy, then take the first candidate
//! that may receive it and can serve it (capabilities), else the fallback. Behind the privacy
//! fence a private request only ever reaches `privacy = true` candidates or local targets — the
//! fallback and every failover included.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::catalog::{Autoselect, Plan, Snapshot};
use crate::error::{ApiError, Code};
use crate::proxy::ProxyState;
use crate::proxy::privacy::Classifier;
use crate::types::Locality;

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

fn classifier(state: &ProxyState, a: &Autoselect) -> Result<Arc<Classifier>, ApiError> {
    let key = format!("autoselect/{}", a.name);
    if let Some(c) = state.classifiers.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let c = Arc::new(Classifier::new(&a.privacy_keywords, &a.privacy_patterns).map_err(|e| {
        tracing::error!(error = %e, autoselect = %a.name, "Autoselect has an invalid privacy pattern.");
        ApiError::internal()
    })?);
    if let Ok(mut m) = state.classifiers.lock() {
        m.insert(key, Arc::clone(&c));
    }
    Ok(c)
}

/// Keeps only the plan's targets that have every required capability; `None` when none has.
fn with_capabilities(mut plan: Plan, required: &[&str]) -> Option<Plan> {
    plan.candidates.retain(|c| required.iter().all(|r| c.target.model.capabilities.iter().any(|have| have == r)));
    (!plan.candidates.is_empty()).then_some(plan)
}

/// Chooses the plan of an autoselect request and the reason (`privacy`, `capability`, `rules`,
/// `fallback`). The returned plan carries the autoselect's route name.
pub fn select(
    state: &ProxyState,
    snapshot: &Snapshot,
    a: &Autoselect,
    body: &Map<String, Value>,
    text: &str,
) -> Result<(Plan, &'static str), ApiError> {
    let route = format!("autoselect/{}", a.name);
    if a.selection != "rules" {
        return Err(ApiError::new(
            Code::ModelNotFound,
            format!(
                "The route `{route}` selects by `{}`, which is not available in this version of Switchyard.",
                a.selection
            ),
        ));
    }
    let private = a.classify_privacy && classifier(state, a)?.classify(text).is_private();
    let required = required_capabilities(body);
    let mut skipped_for_capability = false;
    for c in &a.candidates {
        if private && !c.privacy {
            continue;
        }
        let Ok(plan) = snapshot.resolve(&c.route) else { continue };
        match with_capabilities(plan, &required) {
            Some(mut plan) => {
                plan.route = route;
                let reason = if private {
                    "privacy"
                } else if skipped_for_capability {
                    "capability"
                } else {
                    "rules"
                };
                return Ok((plan, reason));
            }
            None => skipped_for_capability = true,
        }
    }
    let Some(fallback) = &a.fallback else {
        return Err(if private {
            ApiError::new(Code::PrivacyRouteUnavailable, "The request looks private and no private route can serve it.")
        } else {
            ApiError::new(Code::ModelNotFound, format!("No candidate of `{route}` can serve this request."))
        });
    };
    let mut plan = snapshot.resolve(fallback)?;
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
    plan.route = route;
    Ok((plan, "fallback"))
}
