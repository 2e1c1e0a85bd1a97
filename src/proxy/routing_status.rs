//! `/health/routing`: what routing sees right now.

use crate::proxy::burst;
use crate::proxy::router::cooldown_key;
use crate::proxy::slot::inflight_key;
use crate::proxy::state::ProxyState;
use crate::types::now_ms;

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
            let spend = state.shared.window_add(&burst::spend_key(b), burst::DAY_MS, 0, None).await;
            let latency = |loc| state.latency.lock().ok().and_then(|m| m.get(&burst::latency_key(b, loc)).copied());
            rotations.push(json!({
                "rotation": r.name,
                "mode": b.mode.as_str(),
                "latency_ms": {"local": latency(crate::types::Locality::Local), "cloud": latency(crate::types::Locality::Cloud)},
                "cloud_spend_today_usd": spend.ok().map(|w| burst::micros_to_usd(w.count)),
                "daily_cloud_budget_usd": b.daily_cloud_budget_usd,
                "max_queue": b.max_queue,
            }));
        }
    }
    json!({"shared_state": state.shared.kind(), "providers": providers, "cooldowns": cooldowns, "burst": rotations})
}
