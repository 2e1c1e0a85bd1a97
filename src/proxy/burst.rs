//! Burst routing (aiburstcloud's two modes). Candidates split by provider locality: edge mode
//! leads with local targets and overflows to cloud, cloud mode leads with cloud and bursts
//! sensitive requests down to local. A sensitive request only ever gets local candidates — its
//! failovers included — and a spent daily cloud budget keeps traffic local.

use crate::catalog::{BurstMode, BurstSpec, Candidate};
use crate::error::{ApiError, Code};
use crate::privacy::Classifier;
use crate::proxy::slot::inflight_key;
use crate::proxy::state::ProxyState;
use crate::types::Locality;

/// One UTC day, the window of the cloud budget.
pub const DAY_MS: u64 = 86_400_000;

/// Why a burst rotation ordered its candidates as it did (`X-Burst-Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurstReason {
    /// Edge mode: a sensitive request stays local.
    SensitiveForcedLocal,
    /// Cloud mode: a sensitive request goes down to local.
    SensitiveBurstDownToLocal,
    /// Today's cloud budget is spent.
    BudgetExhausted,
    /// Edge mode: local is at `max_queue`.
    LocalOverloaded,
    /// Edge mode: local's average latency is over the threshold.
    LocalSlow,
    /// Edge mode, normal: local first.
    EdgeFirst,
    /// Edge mode without a local target.
    NoLocalTarget,
    /// Cloud mode: cloud is at `max_queue`.
    CloudOverloaded,
    /// Cloud mode: cloud's average latency is over the threshold.
    CloudSlow,
    /// Cloud mode, normal: cloud first.
    CloudFirst,
    /// Cloud mode without a cloud target.
    NoCloudTarget,
}

impl BurstReason {
    /// aiburstcloud's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SensitiveForcedLocal => "sensitive_forced_local",
            Self::SensitiveBurstDownToLocal => "sensitive_burst_down_to_local",
            Self::BudgetExhausted => "budget_exhausted",
            Self::LocalOverloaded => "local_overloaded_burst_to_cloud",
            Self::LocalSlow => "local_slow_burst_to_cloud",
            Self::EdgeFirst => "edge_first",
            Self::NoLocalTarget => "no_local_target",
            Self::CloudOverloaded => "cloud_overloaded_burst_to_local",
            Self::CloudSlow => "cloud_slow_burst_to_local",
            Self::CloudFirst => "cloud_first",
            Self::NoCloudTarget => "no_cloud_target",
        }
    }
}

/// The routing decision of a burst rotation.
#[derive(Debug)]
pub struct Decision {
    /// Candidates in the order to try; for sensitive or over-budget requests, local ones only.
    pub candidates: Vec<Candidate>,
    /// `X-Burst-Reason` of the first attempt.
    pub reason: BurstReason,
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

fn classifier(spec: &BurstSpec) -> Result<&Classifier, ApiError> {
    spec.classifier.as_deref().ok_or_else(|| {
        tracing::error!(rotation = %spec.name, "Burst rotation has an invalid sensitivity pattern.");
        ApiError::internal()
    })
}

/// What the decision depends on, gathered from the request, shared state and this node.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// The mode in force.
    pub mode: BurstMode,
    /// The classifier found secrets or personal data.
    pub sensitive: bool,
    /// Today's cloud budget is spent.
    pub budget_spent: bool,
    /// The leading tier is at `max_queue`.
    pub overloaded: bool,
    /// The leading tier's moving-average latency is over the threshold.
    pub slow: bool,
}

/// Decides the order of a burst rotation's candidates for one request.
pub async fn decide(
    state: &ProxyState,
    spec: &BurstSpec,
    candidates: Vec<Candidate>,
    text: &str,
    mode_override: Option<BurstMode>,
) -> Result<Decision, ApiError> {
    let mode = mode_override.unwrap_or(spec.mode);
    let sensitive = classifier(spec)?.classify(text).is_private();
    let budget_spent = match spec.daily_cloud_budget_usd {
        Some(budget) if !sensitive => match state.shared.window_add(&spend_key(spec), DAY_MS, 0, None).await {
            Ok(w) => micros_to_usd(w.count) >= budget,
            Err(e) => {
                tracing::warn!(error = %e, "Cloud spend unavailable; budget not enforced for this request.");
                false
            }
        },
        _ => false,
    };
    let lead_locality = if mode == BurstMode::Edge { Locality::Local } else { Locality::Cloud };
    let mut overloaded = false;
    if let Some(max) = spec.max_queue.filter(|_| !sensitive && !budget_spent) {
        let mut providers: Vec<&str> = candidates
            .iter()
            .filter(|c| c.target.provider.locality == lead_locality)
            .map(|c| c.target.provider.id.as_str())
            .collect();
        providers.sort_unstable();
        providers.dedup();
        let mut inflight = 0u64;
        for p in providers {
            inflight += state.shared.slot_count(&inflight_key(p)).await.unwrap_or(0);
        }
        overloaded = inflight >= max;
    }
    let slow = spec.latency_threshold_ms.is_some_and(|threshold| {
        let avg = state.latency.lock().ok().and_then(|m| m.get(&latency_key(spec, lead_locality)).copied());
        avg.is_some_and(|a| a > threshold_f64(threshold))
    });
    order(Facts { mode, sensitive, budget_spent, overloaded, slow }, candidates)
}

/// The pure decision: which candidates, in which order, and why.
pub fn order(f: Facts, candidates: Vec<Candidate>) -> Result<Decision, ApiError> {
    let (local, cloud): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(|c| c.target.provider.locality == Locality::Local);
    let Facts { mode, sensitive, .. } = f;
    let decision = |candidates, reason| Ok(Decision { candidates, reason, mode, sensitive });
    if sensitive {
        if local.is_empty() {
            return Err(ApiError::new(
                Code::PrivacyRouteUnavailable,
                "The request looks sensitive and this route has no local target to keep it on.",
            ));
        }
        let reason = if mode == BurstMode::Edge {
            BurstReason::SensitiveForcedLocal
        } else {
            BurstReason::SensitiveBurstDownToLocal
        };
        return decision(local, reason);
    }
    if f.budget_spent {
        if local.is_empty() {
            return Err(ApiError::new(
                Code::NoAvailableUpstream,
                "Today's cloud budget of this route is spent and it has no local target.",
            )
            .with_retry_after(60));
        }
        return decision(local, BurstReason::BudgetExhausted);
    }
    let (lead, other) = match mode {
        BurstMode::Edge => (local, cloud),
        BurstMode::Cloud => (cloud, local),
    };
    use BurstReason as R;
    let (over_reason, slow_reason, first_reason, unavailable) = match mode {
        BurstMode::Edge => (R::LocalOverloaded, R::LocalSlow, R::EdgeFirst, R::NoLocalTarget),
        BurstMode::Cloud => (R::CloudOverloaded, R::CloudSlow, R::CloudFirst, R::NoCloudTarget),
    };
    if lead.is_empty() {
        return decision(other, unavailable);
    }
    let burst_reason = if f.overloaded {
        Some(over_reason)
    } else if f.slow {
        Some(slow_reason)
    } else {
        None
    };
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

/// Micro-USD to USD.
pub fn micros_to_usd(micros: u64) -> f64 {
    f64::from(u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX))
        + f64::from(u32::try_from(micros % 1_000_000).unwrap_or(0)) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::{ModelInfo, Provider, Target};
    use crate::types::ProviderKind;

    fn candidate(id: usize, locality: Locality) -> Candidate {
        let provider = Arc::new(Provider {
            id: format!("p{id}"),
            route_prefix: format!("provider/p{id}"),
            guarded: false,
            kind: ProviderKind::Mock,
            endpoint: None,
            api_key: None,
            api_version: None,
            responses_api: false,
            locality,
            timeout: None,
            max_concurrency: None,
            default_error_cooldown: 1,
            models: vec![],
        });
        let model = ModelInfo {
            name: "m".into(),
            context_size: None,
            max_request_tokens: None,
            cost: None,
            capabilities: vec![],
            cache: crate::catalog::CachePolicy::default(),
        };
        Candidate {
            target: Target { route: format!("provider/p{id}/m"), provider, model },
            weight: 1.0,
            cooldown_secs: 1,
        }
    }

    /// A small deterministic generator (xorshift), so the property runs the same cases everywhere.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bool(&mut self) -> bool {
            self.next() & 1 == 1
        }
    }

    /// The privacy fence: for any mix of candidates, mode, budget, load and latency, a sensitive
    /// request's candidate list — the whole failover order — holds no cloud target.
    #[test]
    fn sensitive_requests_never_get_a_cloud_candidate() {
        let mut g = Gen(0x5eed_1234_abcd_ef01);
        let mut refused = 0;
        for _ in 0..5_000 {
            let n = usize::try_from(g.next() % 6).unwrap_or(0) + 1;
            let cands: Vec<Candidate> =
                (0..n).map(|i| candidate(i, if g.bool() { Locality::Local } else { Locality::Cloud })).collect();
            let any_local = cands.iter().any(|c| c.target.provider.locality == Locality::Local);
            let facts = Facts {
                mode: if g.bool() { BurstMode::Edge } else { BurstMode::Cloud },
                sensitive: true,
                budget_spent: g.bool(),
                overloaded: g.bool(),
                slow: g.bool(),
            };
            match order(facts, cands) {
                Ok(d) => {
                    assert!(d.candidates.iter().all(|c| c.target.provider.locality == Locality::Local));
                    assert!(!d.candidates.is_empty());
                }
                Err(e) => {
                    assert!(!any_local, "refused although a local target existed");
                    assert_eq!(e.code, Code::PrivacyRouteUnavailable);
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "the generator never produced an all-cloud route");
    }

    #[test]
    fn public_requests_keep_every_candidate_and_lead_by_mode() {
        let mut g = Gen(0x0123_4567_89ab_cdef);
        for _ in 0..2_000 {
            let n = usize::try_from(g.next() % 6).unwrap_or(0) + 1;
            let cands: Vec<Candidate> =
                (0..n).map(|i| candidate(i, if g.bool() { Locality::Local } else { Locality::Cloud })).collect();
            let mode = if g.bool() { BurstMode::Edge } else { BurstMode::Cloud };
            let facts = Facts { mode, sensitive: false, budget_spent: false, overloaded: false, slow: false };
            let d = order(facts, cands.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.candidates.len(), n, "a public request lost candidates");
            let lead = if mode == BurstMode::Edge { Locality::Local } else { Locality::Cloud };
            if cands.iter().any(|c| c.target.provider.locality == lead) {
                assert_eq!(d.candidates[0].target.provider.locality, lead);
            }
            // Over budget: local only.
            let spent = Facts { budget_spent: true, ..facts };
            if let Ok(d) = order(spent, cands) {
                assert!(d.candidates.iter().all(|c| c.target.provider.locality == Locality::Local));
            }
        }
    }
}
