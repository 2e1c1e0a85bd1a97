//! Burst routing (aiburstcloud's two modes). Candidates split by provider locality: edge mode
//! leads with local targets and overflows to cloud, cloud mode leads with cloud and bursts
//! sensitive requests down to local. A sensitive request only ever gets local candidates — its
//! failovers included — and a spent daily cloud budget keeps traffic local.

use std::sync::Arc;

use crate::catalog::{BurstMode, BurstSpec, Candidate};
use crate::error::{ApiError, Code};
use crate::proxy::ProxyState;
use crate::proxy::privacy::Classifier;
use crate::proxy::router::inflight_key;
use crate::types::Locality;

/// One UTC day, the window of the cloud budget.
pub const DAY_MS: u64 = 86_400_000;

/// The routing decision of a burst rotation.
#[derive(Debug)]
pub struct Decision {
    /// Candidates in the order to try; for sensitive or over-budget requests, local ones only.
    pub candidates: Vec<Candidate>,
    /// `X-Burst-Reason` of the first attempt.
    pub reason: &'static str,
    /// The mode in force (configured, or the request's `X-Burst-Mode`).
    pub mode: BurstMode,
    /// Whether the classifier found secrets or personal data.
    pub sensitive: bool,
}

/// The shared-state key of a rotation's cloud spend (micro-USD per UTC day).
pub fn spend_key(spec: &BurstSpec) -> String {
    format!("burst:{}:cloud_spend", spec.name)
}

/// The per-node key of a tier's moving-average latency.
pub fn latency_key(spec: &BurstSpec, locality: Locality) -> String {
    format!("{}:{}", spec.name, if locality == Locality::Local { "local" } else { "cloud" })
}

fn classifier(state: &ProxyState, spec: &BurstSpec) -> Result<Arc<Classifier>, ApiError> {
    if let Some(c) = state.classifiers.lock().ok().and_then(|m| m.get(&spec.name).cloned()) {
        return Ok(c);
    }
    let c = Arc::new(Classifier::new(&spec.sensitive_keywords, &spec.sensitive_patterns).map_err(|e| {
        tracing::error!(error = %e, rotation = %spec.name, "Burst rotation has an invalid sensitivity pattern.");
        ApiError::internal()
    })?);
    if let Ok(mut m) = state.classifiers.lock() {
        m.insert(spec.name.clone(), Arc::clone(&c));
    }
    Ok(c)
}

/// Decides the order of a burst rotation's candidates for one request.
pub async fn decide(
    state: &ProxyState,
    spec: &BurstSpec,
    candidates: Vec<Candidate>,
    text: &str,
    mode_override: Option<&str>,
) -> Result<Decision, ApiError> {
    let mode = mode_override.and_then(BurstMode::parse).unwrap_or(spec.mode);
    let sensitive = classifier(state, spec)?.classify(text).is_private();
    let (local, cloud): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(|c| c.target.provider.locality == Locality::Local);
    let decision = |candidates, reason| Ok(Decision { candidates, reason, mode, sensitive });

    if sensitive {
        if local.is_empty() {
            return Err(ApiError::new(
                Code::PrivacyRouteUnavailable,
                "The request looks sensitive and this route has no local target to keep it on.",
            ));
        }
        let reason = if mode == BurstMode::Edge { "sensitive_forced_local" } else { "sensitive_burst_down_to_local" };
        return decision(local, reason);
    }
    if let Some(budget) = spec.daily_cloud_budget_usd {
        let spent = match state.shared.window_add(&spend_key(spec), DAY_MS, 0, None).await {
            Ok(w) => micros_to_usd(w.count),
            Err(e) => {
                tracing::warn!(error = %e, "Cloud spend unavailable; budget not enforced for this request.");
                0.0
            }
        };
        if spent >= budget {
            if local.is_empty() {
                return Err(ApiError::new(
                    Code::NoAvailableUpstream,
                    "Today's cloud budget of this route is spent and it has no local target.",
                )
                .with_retry_after(60));
            }
            return decision(local, "budget_exhausted");
        }
    }
    let (lead, other, lead_locality) = match mode {
        BurstMode::Edge => (local, cloud, Locality::Local),
        BurstMode::Cloud => (cloud, local, Locality::Cloud),
    };
    let (over_reason, slow_reason, first_reason, unavailable) = match mode {
        BurstMode::Edge => {
            ("local_overloaded_burst_to_cloud", "local_slow_burst_to_cloud", "edge_first", "no_local_target")
        }
        BurstMode::Cloud => {
            ("cloud_overloaded_burst_to_local", "cloud_slow_burst_to_local", "cloud_first", "no_cloud_target")
        }
    };
    if lead.is_empty() {
        return decision(other, unavailable);
    }
    let mut burst_reason = None;
    if let Some(max) = spec.max_queue {
        let mut providers: Vec<&str> = lead.iter().map(|c| c.target.provider.id.as_str()).collect();
        providers.dedup();
        let mut inflight = 0u64;
        for p in providers {
            inflight += state.shared.slot_count(&inflight_key(p)).await.unwrap_or(0);
        }
        if inflight >= max {
            burst_reason = Some(over_reason);
        }
    }
    if burst_reason.is_none()
        && let Some(threshold) = spec.latency_threshold_ms
    {
        let avg = state.latency.lock().ok().and_then(|m| m.get(&latency_key(spec, lead_locality)).copied());
        if avg.is_some_and(|a| a > threshold_f64(threshold)) {
            burst_reason = Some(slow_reason);
        }
    }
    match burst_reason {
        Some(reason) if !other.is_empty() => decision(other.into_iter().chain(lead).collect(), reason),
        _ => decision(lead.into_iter().chain(other).collect(), first_reason),
    }
}

/// Folds one latency sample into a tier's moving average (per node, weight 0.2).
pub fn observe_latency(state: &ProxyState, key: String, ms: f64) {
    if let Ok(mut m) = state.latency.lock() {
        let avg = m.entry(key).or_insert(ms);
        *avg = 0.8 * *avg + 0.2 * ms;
    }
}

fn threshold_f64(ms: u64) -> f64 {
    f64::from(u32::try_from(ms).unwrap_or(u32::MAX))
}

fn micros_to_usd(micros: u64) -> f64 {
    f64::from(u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX))
        + f64::from(u32::try_from(micros % 1_000_000).unwrap_or(0)) / 1_000_000.0
}
