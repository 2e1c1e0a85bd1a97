//! Concurrency slots of providers, cluster-wide: held for an attempt (and its stream), released
//! when dropped; a lease frees a slot whose release never ran.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Plan, Strategy, Target};
use crate::proxy::state::ProxyState;
use crate::shared::SharedState;

/// The shared-state key of a provider's in-flight slots.
pub fn inflight_key(provider: &str) -> String {
    format!("provider:{provider}:inflight")
}

/// One held concurrency slot of a provider, cluster-wide; released when dropped.
pub struct Slot {
    shared: Arc<dyn SharedState>,
    key: String,
    holder: String,
}

/// The provider is at its concurrency limit (or its limit cannot be checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl Slot {
    /// Takes an in-flight slot of the target's provider when it has a concurrency limit, or when
    /// the plan orders by load (`None`: nothing to hold).
    pub async fn acquire(state: &ProxyState, plan: &Plan, target: &Target, holder: &str) -> Result<Option<Self>, Full> {
        let limit = match (target.provider.max_concurrency, plan.strategy) {
            (Some(l), _) => l,
            (None, Strategy::LeastBusy | Strategy::Burst) => u32::MAX,
            (None, _) => return Ok(None),
        };
        let total = target.provider.timeout.unwrap_or(Duration::from_millis(state.upstream.total_timeout_ms));
        let key = inflight_key(&target.provider.id);
        let lease_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX).saturating_add(5_000);
        match state.shared.slot_acquire(&key, holder, u64::from(limit), lease_ms).await {
            Ok(true) => Ok(Some(Self { shared: Arc::clone(&state.shared), key, holder: holder.to_owned() })),
            Ok(false) => Err(Full),
            // Counting for least_busy is best effort; a hard limit fails closed.
            Err(e) if target.provider.max_concurrency.is_none() => {
                tracing::warn!(error = %e, "Shared state unavailable for in-flight counting.");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Shared state unavailable for a concurrency slot.");
                Err(Full)
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (shared, key, holder) =
            (Arc::clone(&self.shared), std::mem::take(&mut self.key), std::mem::take(&mut self.holder));
        // The lease frees the slot anyway if this release never runs.
        actix_web::rt::spawn(async move {
            if let Err(e) = shared.slot_release(&key, &holder).await {
                tracing::warn!(error = %e, "Could not release a concurrency slot; its lease will.");
            }
        });
    }
}
