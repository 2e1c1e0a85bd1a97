//! The state of the data plane, shared by every worker, and the node's retry budget.

use std::sync::Arc;

use crate::accounting::Accounting;
use crate::catalog::Catalog;
use crate::config::UpstreamSettings;
use crate::shared::SharedState;
use crate::telemetry::Metrics;

/// State of the data plane, shared by every worker.
#[derive(Clone)]
pub struct ProxyState {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Usage records.
    pub accounting: Accounting,
    /// Timeouts and caps.
    pub upstream: Arc<UpstreamSettings>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Shared state (concurrency slots).
    pub shared: Arc<dyn SharedState>,
    /// Moving-average latency (ms) of burst tiers on this node.
    pub latency: Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>,
    /// Failure-streak keys this node has added to since their last reset.
    pub failing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Requests and failover attempts in flight on this node (the retry budget).
    pub retries: Arc<RetryBudget>,
    /// Rate limits and concurrency of tokens and tiers.
    pub limiter: Arc<crate::proxy::limits::Limiter>,
    /// The cluster's live nodes (for per-node shares while shared state is down).
    pub membership: Arc<crate::shared::membership::Membership>,
    /// What traces carry.
    pub tracing: crate::telemetry::TraceSettings,
    /// USD quotas of tokens and tiers.
    pub quotas: Arc<crate::accounting::quota::Quotas>,
    /// `host:port` pairs user endpoints may reach despite the SSRF guard.
    pub endpoint_allowlist: Arc<Vec<String>>,
    /// The node's graceful shutdown.
    pub drain: crate::types::Drain,
    /// Permits for CPU-bound work over large prompts (classification, token counts): one per core.
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// The response cache, when `[cache] enabled`.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
}

/// The retry budget of one node (Envoy's): failover attempts in flight may be at most
/// `percent` of the requests in flight, or `min`, whichever is more.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: std::sync::atomic::AtomicUsize,
    retrying: std::sync::atomic::AtomicUsize,
    percent: usize,
    min: usize,
}

/// Holds one unit of a [`RetryBudget`] counter until dropped.
#[derive(Debug)]
pub struct BudgetHold<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for BudgetHold<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl RetryBudget {
    /// A budget of `percent` of active requests, at least `min`.
    pub fn new(percent: u32, min: u32) -> Self {
        Self {
            percent: usize::try_from(percent).unwrap_or(usize::MAX),
            min: usize::try_from(min).unwrap_or(usize::MAX),
            ..Self::default()
        }
    }

    /// Counts a request in flight.
    pub fn request(&self) -> BudgetHold<'_> {
        self.active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        BudgetHold(&self.active)
    }

    /// Takes a failover attempt from the budget, or `None` when it is spent.
    pub fn retry(&self) -> Option<BudgetHold<'_>> {
        use std::sync::atomic::Ordering;
        let active = self.active.load(Ordering::Acquire);
        let cap = (active.saturating_mul(self.percent) / 100).max(self.min);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1))
            .ok()
            .map(|_| BudgetHold(&self.retrying))
    }

    /// Requests in flight now (past admission, at the upstream stage).
    pub fn in_flight(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Failover attempts in flight now.
    pub fn retrying(&self) -> usize {
        self.retrying.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::RetryBudget;

    /// P7, the retry budget: under any interleaving of requests and failovers starting and
    /// ending, failovers in flight never exceed max(20 % of requests in flight, 3).
    #[test]
    fn retry_budget_property() {
        let budget = RetryBudget::new(20, 3);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut requests = Vec::new();
        let mut retries = Vec::new();
        let mut refused = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 4 {
                0 | 1 if requests.len() < 200 => requests.push(budget.request()),
                0 | 1 => drop(requests.pop()),
                2 => {
                    let cap = (requests.len() * 20 / 100).max(3);
                    match budget.retry() {
                        Some(h) => {
                            retries.push(h);
                            assert!(
                                retries.len() <= cap,
                                "{} failovers with {} requests",
                                retries.len(),
                                requests.len()
                            );
                        }
                        None => {
                            assert!(retries.len() >= cap, "refused below the budget");
                            refused += 1;
                        }
                    }
                }
                _ => {
                    if x & 8 == 0 {
                        drop(retries.pop());
                    } else {
                        drop(requests.pop());
                    }
                }
            }
            // (Requests may end while failovers are in flight: the budget binds when one is taken.)
            assert_eq!(budget.retrying(), retries.len());
        }
        assert!(refused > 0, "the budget never bound");
        drop(retries);
        assert_eq!(budget.retrying(), 0);
    }
}
