//! Rate limits and concurrency, cluster-wide: a token's own RPM/TPM, and its user's tier RPM,
//! TPM and requests in flight. RPM and TPM are checked and charged together in one atomic call
//! (one Lua script in Redis); TPM is charged on the estimate (prompt + `max_tokens`) and
//! corrected with the actual usage when the record is written. Concurrency takes a leased slot.
//!
//! When the shared store cannot be reached, each node enforces its share of every limit — the
//! limit divided by the live nodes it last counted (from heartbeats) — on in-process counters,
//! so a Redis outage neither opens the gates nor closes them.

use std::sync::Arc;

use crate::accounting::Settle;
use crate::catalog::TokenEntry;
use crate::error::{ApiError, Code};
use crate::shared::membership::Membership;
use crate::shared::{MemoryShared, SharedState, WindowCheck};
use crate::store::TierRow;

const MINUTE_MS: u64 = 60_000;

/// Enforces limits against the shared store, or per-node shares when it is unreachable.
pub struct Limiter {
    shared: Arc<dyn SharedState>,
    local: Arc<MemoryShared>,
    membership: Arc<Membership>,
}

/// What an admitted request holds until its record is written.
struct Held {
    windows: Arc<dyn SharedState>,
    tpm_keys: Vec<String>,
    charged: u64,
    slots: Arc<dyn SharedState>,
    slot: Option<(String, String)>,
}

impl Limiter {
    /// A limiter on `shared`; per-node shares divide by `membership`'s live nodes.
    pub fn new(shared: Arc<dyn SharedState>, membership: Arc<Membership>) -> Self {
        Self { shared, local: Arc::new(MemoryShared::new()), membership }
    }

    fn live_nodes(&self) -> u64 {
        self.membership.live_nodes()
    }

    /// This node's share of `limit` while the shared store is down.
    fn share(&self, limit: u64) -> u64 {
        if limit == 0 { 0 } else { (limit / self.live_nodes()).max(1) }
    }

    /// Checks and charges the caller's limits for one request of about `tokens` tokens. The
    /// returned work (for [`UsageGuard::on_settle`]) corrects the TPM charge and releases the
    /// slot once the record is written; `None` when no limit applies. `Err` is the 429.
    pub async fn admit(
        &self,
        token: &TokenEntry,
        ancestors: &[Arc<TokenEntry>],
        tier: Option<&TierRow>,
        tokens: u64,
        holder: &str,
    ) -> Result<Option<Settle>, ApiError> {
        let limit = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
        let amount = i64::try_from(tokens).unwrap_or(i64::MAX);
        let mut checks = Vec::new();
        let mut tpm_keys = Vec::new();
        let mut add = |key: String, amount: i64, limit: Option<u64>, tpm: bool| {
            if let Some(l) = limit {
                if tpm {
                    tpm_keys.push(key.clone());
                }
                checks.push(WindowCheck { key, window_ms: MINUTE_MS, amount, limit: Some(l) });
            }
        };
        // A child token is charged against every token above it too.
        for t in std::iter::once(token).chain(ancestors.iter().map(|a| &**a)) {
            add(format!("lim:tok:{}:rpm", t.id), 1, limit(t.rpm), false);
            add(format!("lim:tok:{}:tpm", t.id), amount, limit(t.tpm), true);
        }
        add(format!("lim:user:{}:rpm", token.user_id), 1, limit(tier.and_then(|t| t.rpm)), false);
        add(format!("lim:user:{}:tpm", token.user_id), amount, limit(tier.and_then(|t| t.tpm)), true);
        let concurrency = limit(tier.and_then(|t| t.max_concurrency));
        if checks.is_empty() && concurrency.is_none() {
            return Ok(None);
        }

        let local: Arc<dyn SharedState> = self.local.clone();
        let mut windows = Arc::clone(&self.shared);
        if !checks.is_empty() {
            let admission = match self.shared.windows_add(&checks).await {
                Ok(a) => {
                    if a.allowed {
                        // Mirror this node's admissions locally, so that if the shared store goes
                        // away mid-window, this node's share counts what it already admitted.
                        let mirror: Vec<WindowCheck> =
                            checks.iter().map(|c| WindowCheck { limit: None, ..c.clone() }).collect();
                        let _ = self.local.windows_add(&mirror).await;
                    }
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, nodes = self.live_nodes(), "Shared store unreachable; enforcing this node's share of the limits.");
                    windows = Arc::clone(&local);
                    let shares: Vec<WindowCheck> = checks
                        .iter()
                        .map(|c| WindowCheck { limit: c.limit.map(|l| self.share(l)), ..c.clone() })
                        .collect();
                    local.windows_add(&shares).await.map_err(|_| ApiError::unavailable())?
                }
            };
            if !admission.allowed {
                return Err(rate_limited(admission.retry_after_ms));
            }
        }
        let mut slots = Arc::clone(&self.shared);
        let mut slot = None;
        if let Some(max) = concurrency {
            let key = format!("lim:user:{}:inflight", token.user_id);
            let lease = 10 * MINUTE_MS;
            let got = match self.shared.slot_acquire(&key, holder, max, lease).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(error = %e, "Shared store unreachable; enforcing this node's share of concurrency.");
                    slots = Arc::clone(&local);
                    local.slot_acquire(&key, holder, self.share(max), lease).await.unwrap_or(false)
                }
            };
            if !got {
                // Give back what the windows charged for a request that will not run.
                refund(&windows, &checks).await;
                return Err(ApiError::new(
                    Code::RateLimitExceeded,
                    format!("Too many requests in flight for this user (at most {max})."),
                )
                .with_retry_after(1));
            }
            slot = Some((key, holder.to_owned()));
        }
        Ok(Some(settle(Held { windows, tpm_keys, charged: tokens, slots, slot })))
    }
}

fn rate_limited(retry_after_ms: u64) -> ApiError {
    ApiError::new(Code::RateLimitExceeded, "Rate limit reached for this token or user; retry later.")
        .with_retry_after(retry_after_ms.div_ceil(1_000).max(1))
}

async fn refund(backend: &Arc<dyn SharedState>, checks: &[WindowCheck]) {
    let back: Vec<WindowCheck> =
        checks.iter().map(|c| WindowCheck { amount: -c.amount, limit: None, ..c.clone() }).collect();
    if !back.is_empty()
        && let Err(e) = backend.windows_add(&back).await
    {
        tracing::warn!(error = %e, "Could not refund a rate-limit charge.");
    }
}

/// After the request: TPM charged on the estimate is corrected to the actual tokens (none for a
/// cache hit), and the concurrency slot is released.
fn settle(held: Held) -> Settle {
    Box::new(move |row| {
        // An answer from the response cache counts as a request, not as tokens: no upstream
        // generated them.
        let actual = if row.cache_hit {
            0
        } else {
            u64::try_from(row.prompt_tokens.saturating_add(row.completion_tokens)).unwrap_or(0)
        };
        let delta = i64::try_from(actual).unwrap_or(i64::MAX) - i64::try_from(held.charged).unwrap_or(i64::MAX);
        if (delta == 0 || held.tpm_keys.is_empty()) && held.slot.is_none() {
            return;
        }
        drop(tokio::spawn(async move {
            if delta != 0 && !held.tpm_keys.is_empty() {
                let fix: Vec<WindowCheck> = held
                    .tpm_keys
                    .iter()
                    .map(|k| WindowCheck { key: k.clone(), window_ms: MINUTE_MS, amount: delta, limit: None })
                    .collect();
                if let Err(e) = held.windows.windows_add(&fix).await {
                    tracing::warn!(error = %e, "Could not correct a TPM charge.");
                }
            }
            if let Some((key, holder)) = held.slot
                && let Err(e) = held.slots.slot_release(&key, &holder).await
            {
                tracing::warn!(error = %e, "Could not release a concurrency slot; its lease will.");
            }
        }));
    })
}
