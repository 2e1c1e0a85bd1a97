//! Routing decisions for one request: the order of a plan's candidates (weighted, priority,
//! least busy), which are cooling down (cluster-wide, through shared state), the probe that keeps
//! an all-cooling route from going dark, and the cooldown a failure starts.

use crate::catalog::{Candidate, Plan, Strategy};
use crate::proxy::ProxyState;
use crate::types::now_ms;
use crate::upstream::UpstreamFailure;

/// The shared-state key of a candidate's cooldown. Keyed by provider and model, so a broken
/// upstream model is skipped by every route that uses it, on every node.
pub fn cooldown_key(c: &Candidate) -> String {
    format!("cooldown:{}:{}", c.target.provider.id, c.target.model.name)
}

/// The shared-state key of a provider's in-flight slots.
pub fn inflight_key(provider: &str) -> String {
    format!("provider:{provider}:inflight")
}

fn random_unit() -> f64 {
    // 53 random bits → [0, 1).
    let bits = getrandom::u64().unwrap_or(0) >> 11;
    f64::from(u32::try_from(bits >> 21).unwrap_or(0)) * 2f64.powi(-32)
        + f64::from(u32::try_from(bits & 0x1f_ffff).unwrap_or(0)) * 2f64.powi(-53)
}

/// Orders candidates by the plan's strategy.
pub async fn order(state: &ProxyState, plan: &Plan, mut cands: Vec<Candidate>) -> Vec<Candidate> {
    match plan.strategy {
        // Burst plans are ordered by `burst::decide`.
        Strategy::Direct | Strategy::Priority | Strategy::Burst => cands,
        Strategy::Weighted => {
            // Weighted random order without replacement: the first pick follows the weights,
            // the rest are the failover order.
            let mut out = Vec::with_capacity(cands.len());
            while !cands.is_empty() {
                let total: f64 = cands.iter().map(|c| c.weight.max(0.0)).sum();
                let mut x = random_unit() * total;
                let mut pick = cands.len() - 1;
                for (i, c) in cands.iter().enumerate() {
                    x -= c.weight.max(0.0);
                    if x < 0.0 {
                        pick = i;
                        break;
                    }
                }
                out.push(cands.remove(pick));
            }
            out
        }
        Strategy::LeastBusy => {
            let mut busy = Vec::with_capacity(cands.len());
            for c in cands {
                let n = match state.shared.slot_count(&inflight_key(&c.target.provider.id)).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "In-flight counts unavailable; ordering by weight.");
                        0
                    }
                };
                busy.push((n, c));
            }
            busy.sort_by(|(na, a), (nb, b)| na.cmp(nb).then(b.weight.total_cmp(&a.weight)));
            busy.into_iter().map(|(_, c)| c).collect()
        }
    }
}

/// Splits candidates into those ready now and those cooling down (with their deadlines).
/// When shared state cannot be read, every candidate counts as ready: availability first.
pub async fn split_cooling(state: &ProxyState, cands: Vec<Candidate>) -> (Vec<Candidate>, Vec<(Candidate, i64)>) {
    let mut ready = Vec::with_capacity(cands.len());
    let mut cooling = Vec::new();
    for c in cands {
        match state.shared.cooldown_until(&cooldown_key(&c)).await {
            Ok(Some(deadline)) => cooling.push((c, deadline)),
            Ok(None) => ready.push(c),
            Err(e) => {
                tracing::warn!(error = %e, "Cooldowns unavailable; treating the candidate as ready.");
                ready.push(c);
            }
        }
    }
    (ready, cooling)
}

/// When every candidate is cooling down: the first one whose probe budget (one request per
/// second per candidate, cluster-wide) allows a probe. `Err` carries the seconds until the
/// earliest cooldown ends, for `Retry-After`.
pub async fn probe(state: &ProxyState, cooling: Vec<(Candidate, i64)>) -> Result<Candidate, u64> {
    let earliest = cooling.iter().map(|(_, d)| *d).min().unwrap_or(0);
    for (c, _) in cooling {
        let key = format!("probe:{}:{}", c.target.provider.id, c.target.model.name);
        if let Ok(w) = state.shared.window_add(&key, 1_000, 1, Some(1)).await
            && w.allowed
        {
            return Ok(c);
        }
    }
    let wait_ms = u64::try_from(earliest - now_ms()).unwrap_or(0);
    Err(wait_ms.div_ceil(1_000).max(1))
}

/// Starts (or extends) a candidate's cooldown after an upstream failure: its `error_cooldown`,
/// or the upstream's `Retry-After` when that is longer. A deadline is never shortened.
pub async fn cool_down(state: &ProxyState, c: &Candidate, f: &UpstreamFailure) {
    let secs = c.cooldown_secs.max(f.retry_after.unwrap_or(0));
    let until = now_ms().saturating_add(i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX));
    match state.shared.cooldown_extend(&cooldown_key(c), until).await {
        Ok(deadline) => tracing::info!(
            provider = %c.target.provider.id,
            model = %c.target.model.name,
            cooldown_ms = deadline - now_ms(),
            "Candidate cooling down."
        ),
        Err(e) => tracing::warn!(error = %e, "Could not record a cooldown."),
    }
}

/// What `/health/routing` shows: in-flight requests per provider (cluster-wide, where tracked),
/// cooldowns in force, and for burst rotations the latency averages of this node and today's
/// cloud spend. Shared-state errors show as `null`s, never as a failed health check.
pub async fn status(state: &ProxyState) -> serde_json::Value {
    use serde_json::json;
    let snapshot = state.catalog.snapshot();
    let mut providers = Vec::new();
    for p in snapshot.providers() {
        let inflight = state.shared.slot_count(&inflight_key(&p.id)).await.ok();
        providers.push(
            json!({"id": p.id, "locality": p.locality, "in_flight": inflight, "max_concurrency": p.max_concurrency}),
        );
    }
    let now = now_ms();
    let mut cooldowns = Vec::new();
    let mut rotations = Vec::new();
    for r in snapshot.rotations() {
        for c in &r.candidates {
            if let Ok(Some(until)) = state.shared.cooldown_until(&cooldown_key(c)).await {
                cooldowns.push(json!({"rotation": r.name, "target": c.target.route, "remaining_ms": until - now}));
            }
        }
        if let Some(b) = &r.burst {
            let spend =
                state.shared.window_add(&crate::proxy::burst::spend_key(b), crate::proxy::burst::DAY_MS, 0, None).await;
            let latency =
                |loc| state.latency.lock().ok().and_then(|m| m.get(&crate::proxy::burst::latency_key(b, loc)).copied());
            rotations.push(json!({
                "rotation": r.name,
                "mode": b.mode.as_str(),
                "latency_ms": {"local": latency(crate::types::Locality::Local), "cloud": latency(crate::types::Locality::Cloud)},
                "cloud_spend_today_usd": spend.ok().map(|w| crate::proxy::burst::micros_to_usd(w.count)),
                "daily_cloud_budget_usd": b.daily_cloud_budget_usd,
                "max_queue": b.max_queue,
            }));
        }
    }
    json!({"shared_state": state.shared.kind(), "providers": providers, "cooldowns": cooldowns, "burst": rotations})
}

/// The routing receipt stored on a rotation's usage record.
#[derive(Debug, serde::Serialize)]
pub struct Receipt {
    route: String,
    strategy: &'static str,
    candidates: Vec<ReceiptEntry>,
    chosen: Option<String>,
    reason: Option<&'static str>,
    /// An autoselect's choice: candidates considered, filters, scores, outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<serde_json::Value>,
}

#[derive(Debug, serde::Serialize)]
struct ReceiptEntry {
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    filtered: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'static str>,
}

impl Receipt {
    /// A receipt listing every candidate of `plan`.
    pub fn new(plan: &Plan) -> Self {
        Self {
            route: plan.route.clone(),
            strategy: plan.strategy.reason(),
            candidates: plan
                .candidates
                .iter()
                .map(|c| ReceiptEntry { target: c.target.route.clone(), filtered: None, attempt: None, failure: None })
                .collect(),
            chosen: None,
            reason: None,
            selection: None,
        }
    }

    fn entry(&mut self, target: &str) -> Option<&mut ReceiptEntry> {
        self.candidates.iter_mut().find(|e| e.target == target && e.attempt.is_none() && e.filtered.is_none())
    }

    /// A candidate was removed before any attempt (`context`, `cooldown`, `over_capacity`).
    pub fn filtered(&mut self, target: &str, why: &'static str) {
        if let Some(e) = self.entry(target) {
            e.filtered = Some(why);
        }
    }

    /// Attempt `n` (from 1) goes to `target` for `reason`.
    pub fn attempt(&mut self, target: &str, n: usize, reason: &'static str) {
        if let Some(e) = self.entry(target) {
            e.attempt = Some(n);
        }
        self.chosen = Some(target.to_owned());
        self.reason = Some(reason);
    }

    /// The attempt at `target` failed with `kind`.
    pub fn failed(&mut self, target: &str, kind: &'static str) {
        if let Some(e) = self.candidates.iter_mut().rev().find(|e| e.target == target && e.attempt.is_some()) {
            e.failure = Some(kind);
        }
        self.chosen = None;
        self.reason = None;
    }

    /// The receipt as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
