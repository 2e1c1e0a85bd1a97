//! Routing decisions for one request: the order of a plan's candidates (weighted, priority,
//! least busy), which are cooling down (cluster-wide, through shared state), the probe that keeps
//! an all-cooling route from going dark, and the cooldown a failure starts.

use crate::catalog::{Candidate, Health, Plan, Strategy};
use crate::proxy::slot::inflight_key;
use crate::proxy::state::ProxyState;
use crate::types::now_ms;
use crate::upstream::UpstreamFailure;

/// The shared-state key of a candidate's cooldown. Keyed by provider and model, so a broken
/// upstream model is skipped by every route that uses it, on every node.
pub fn cooldown_key(c: &Candidate) -> String {
    format!("cooldown:{}:{}", c.target.provider.id, c.target.model.name)
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

/// The shared-state key of a candidate's consecutive-failure count.
pub fn streak_key(c: &Candidate) -> String {
    format!("fails:{}:{}", c.target.provider.id, c.target.model.name)
}

/// How long a failure streak lasts without a new failure.
const STREAK_TTL_MS: u64 = 60_000;

/// Splits candidates into those ready now and those cooling down (with their deadlines).
/// When shared state cannot be read, every candidate counts as ready: availability first.
/// The ejection cap: when more than `max_ejection_percent` of the candidates (at least one)
/// are cooling down, the excess whose cooldowns end soonest stay ready (panic routing); the
/// third list names them for the receipt.
pub async fn split_cooling(
    state: &ProxyState,
    cands: Vec<Candidate>,
    health: Health,
) -> (Vec<Candidate>, Vec<(Candidate, i64)>, Vec<String>) {
    let total = cands.len();
    let mut ready = Vec::with_capacity(total);
    let mut cooling: Vec<(Candidate, i64)> = Vec::new();
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
    let back = cap_ejections(total, &mut cooling, health.max_ejection_percent);
    let capped = back.iter().map(|c| c.target.route.clone()).collect();
    ready.extend(back);
    (ready, cooling, capped)
}

/// The ejection cap: of `total` candidates at most `percent` (at least one) may cool down.
/// Removes the excess from `cooling` — those whose cooldowns end soonest — and returns them.
pub fn cap_ejections<C>(total: usize, cooling: &mut Vec<(C, i64)>, percent: u8) -> Vec<C> {
    let allowed = (total.saturating_mul(usize::from(percent.min(100))) / 100).max(1);
    if cooling.len() <= allowed {
        return Vec::new();
    }
    cooling.sort_by_key(|(_, deadline)| *deadline);
    let excess = cooling.len() - allowed;
    cooling.drain(..excess).map(|(c, _)| c).collect()
}

/// Splits cooling candidates into those an upstream rate limit (HTTP 429) cooled down — never
/// probed: the upstream said when to come back — and those cooled by errors, which may be probed.
pub async fn split_rate_limited(
    state: &ProxyState,
    cooling: Vec<(Candidate, i64)>,
) -> (Vec<(Candidate, i64)>, Vec<(Candidate, i64)>) {
    let mut limited = Vec::new();
    let mut errored = Vec::new();
    for (c, d) in cooling {
        let key = format!("cause:{}", cooldown_key(&c));
        if matches!(state.shared.kv_get(&key).await, Ok(Some(v)) if v == b"429") {
            limited.push((c, d));
        } else {
            errored.push((c, d));
        }
    }
    (limited, errored)
}

/// When every candidate is cooling down: the first one whose probe budget (one request per
/// second per candidate, cluster-wide) allows a probe. `Err` carries the seconds until
/// `earliest` (the earliest cooldown's end), for `Retry-After`.
pub async fn probe(state: &ProxyState, cooling: Vec<(Candidate, i64)>, earliest: i64) -> Result<Candidate, u64> {
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

/// Counts a failure against a candidate and cools it down once the plan's `eject_after`
/// consecutive failures are reached (cluster-wide), or at once when the upstream said
/// `Retry-After`. Returns whether the candidate now cools down.
pub async fn record_failure(state: &ProxyState, health: Health, c: &Candidate, f: &UpstreamFailure) -> bool {
    if health.eject_after > 1 && f.retry_after.is_none() {
        let key = streak_key(c);
        match state.shared.streak_add(&key, STREAK_TTL_MS).await {
            Ok(n) if n < u64::from(health.eject_after) => {
                if let Ok(mut d) = state.failing.lock() {
                    d.insert(key);
                }
                return false;
            }
            Ok(_) => {
                if let Err(e) = state.shared.streak_reset(&key).await {
                    tracing::warn!(error = %e, "Could not reset a failure streak.");
                }
            }
            // Without shared state, fail safe: cool down at once.
            Err(e) => tracing::warn!(error = %e, "Failure streaks unavailable; cooling down at once."),
        }
    }
    cool_down(state, c, f).await;
    true
}

/// A success ends a failure streak this node has seen (the reset happens off the request path).
pub fn record_success(state: &ProxyState, health: Health, c: &Candidate) {
    if health.eject_after <= 1 {
        return;
    }
    let key = streak_key(c);
    let seen = state.failing.lock().is_ok_and(|mut d| d.remove(&key));
    if seen {
        let shared = std::sync::Arc::clone(&state.shared);
        drop(tokio::spawn(async move {
            if let Err(e) = shared.streak_reset(&key).await {
                tracing::warn!(error = %e, "Could not reset a failure streak.");
            }
        }));
    }
}

/// Starts (or extends) a candidate's cooldown after an upstream failure: its `error_cooldown`,
/// or the upstream's `Retry-After` when that is longer. A deadline is never shortened.
pub async fn cool_down(state: &ProxyState, c: &Candidate, f: &UpstreamFailure) {
    let secs = c.cooldown_secs.max(f.retry_after.unwrap_or(0));
    let until = now_ms().saturating_add(i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX));
    // Remember whether the upstream was rate limiting, so that a route whose every candidate
    // is rate limited answers 429 (what the client should back off from), not 503.
    let cause_key = format!("cause:{}", cooldown_key(c));
    let noted = if f.kind == crate::upstream::FailureKind::Status(429) {
        state.shared.kv_set(&cause_key, b"429", secs.saturating_mul(1_000)).await
    } else {
        state.shared.kv_delete(&cause_key).await.map(|_| ())
    };
    if let Err(e) = noted {
        tracing::warn!(error = %e, "Could not record a cooldown's cause.");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// P7, the ejection cap: whatever the candidates and deadlines, at most `percent` of them (at
    /// least one) stay ejected, the ones kept serving are those whose cooldowns end soonest, and
    /// nothing is lost or duplicated.
    #[test]
    fn ejection_cap_property() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let total = usize::try_from(next() % 10).unwrap_or(0) + 1;
            let n_cooling = usize::try_from(next()).unwrap_or(0) % (total + 1);
            let percent = u8::try_from(next() % 100).unwrap_or(0) + 1;
            let mut cooling: Vec<(usize, i64)> =
                (0..n_cooling).map(|i| (i, i64::try_from(next() % 1_000).unwrap_or(0))).collect();
            let before = cooling.clone();
            let back = cap_ejections(total, &mut cooling, percent);
            let allowed = (total * usize::from(percent) / 100).max(1);
            assert!(cooling.len() <= allowed, "{total} {percent} {before:?}");
            assert_eq!(cooling.len() + back.len(), before.len());
            if !back.is_empty() {
                assert_eq!(cooling.len(), allowed, "only the excess comes back");
                let latest_back = back.iter().map(|i| before[*i].1).max().unwrap_or(0);
                assert!(cooling.iter().all(|(_, d)| *d >= latest_back), "a later cooldown came back first");
            }
            let mut all: Vec<usize> = cooling.iter().map(|(i, _)| *i).chain(back).collect();
            all.sort_unstable();
            assert_eq!(all, (0..n_cooling).collect::<Vec<_>>());
        }
        let mut full: Vec<(u8, i64)> = vec![(0, 5), (1, 3)];
        assert!(cap_ejections(2, &mut full, 100).is_empty(), "100 %: everything may cool down");
    }
}
