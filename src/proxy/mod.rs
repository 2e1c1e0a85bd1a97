//! The data plane: OpenAI-compatible routes, authentication, validation, resolution, dispatch
//! to upstreams, the streaming relay and its usage tap.
//!
//! Architecture Invariant: never imports `control`, `admin` or `dashboard`; talks to the
//! control plane only through the catalog (reads) and accounting (usage records).

mod autoselect;
pub mod body;
pub(crate) mod burst;
mod caller;
pub mod gate;
mod handlers;
pub mod limits;
pub(crate) mod pipeline;
mod relay;
pub(crate) mod router;
mod validate;

use std::sync::Arc;

use actix_web::web;

use crate::accounting::Accounting;
use crate::catalog::Catalog;
use crate::config::UpstreamSettings;
use crate::error::{ApiError, Code};
use crate::shared::SharedState;
use crate::telemetry::Metrics;

pub use caller::Caller;

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
    pub limiter: Arc<limits::Limiter>,
    /// USD quotas of tokens and tiers.
    pub quotas: Arc<crate::accounting::quota::Quotas>,
    /// `host:port` pairs user endpoints may reach despite the SSRF guard.
    pub endpoint_allowlist: Arc<Vec<String>>,
    /// The node's graceful shutdown.
    pub drain: crate::types::Drain,
    /// Permits for CPU-bound work over large prompts (classification, token counts): one per core.
    pub heavy: Arc<tokio::sync::Semaphore>,
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

/// The per-worker upstream client (awc is `!Send`, so each worker builds its own).
pub struct UpstreamClient {
    /// For configured providers.
    pub open: awc::Client,
    /// For user-defined providers: the SSRF guard resolves their hosts.
    pub guarded: awc::Client,
}

/// Registers the data-plane routes. Every path answers other methods with 405 and `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers::{AUTOSELECTS, CHAT, COMPLETIONS, EMBEDDINGS, OWNER, ROTATIONS, owner, user};
    let post = |path: &str, route: actix_web::Route| {
        web::resource(path).route(route).default_service(web::to(|| async { method_not_allowed("POST") }))
    };
    let get = |path: &str, route: actix_web::Route| {
        web::resource(path).route(route).default_service(web::to(|| async { method_not_allowed("GET") }))
    };
    cfg.service(post("/v1/chat/completions", web::post().to(owner::<CHAT, OWNER>)))
        .service(post("/v1/completions", web::post().to(owner::<COMPLETIONS, OWNER>)))
        .service(post("/v1/embeddings", web::post().to(owner::<EMBEDDINGS, OWNER>)))
        .service(get("/v1/models", web::get().to(handlers::models)))
        .service(get("/api/v1/models", web::get().to(handlers::models)))
        .service(post("/api/user/chat/completions", web::post().to(owner::<CHAT, OWNER>)))
        .service(post("/api/user/completions", web::post().to(owner::<COMPLETIONS, OWNER>)))
        .service(post("/api/user/embeddings", web::post().to(owner::<EMBEDDINGS, OWNER>)))
        .service(get("/api/user/models", web::get().to(handlers::models)))
        .service(post("/api/u/{username}/chat/completions", web::post().to(user::<CHAT>)))
        .service(post("/api/u/{username}/completions", web::post().to(user::<COMPLETIONS>)))
        .service(post("/api/u/{username}/embeddings", web::post().to(user::<EMBEDDINGS>)))
        .service(get("/api/u/{username}/models", web::get().to(handlers::user_models)))
        .service(post("/api/rotations/chat/completions", web::post().to(owner::<CHAT, ROTATIONS>)))
        .service(post("/api/autoselect/chat/completions", web::post().to(owner::<CHAT, AUTOSELECTS>)))
        .service(get("/health", web::get().to(handlers::health)))
        .service(get("/health/routing", web::get().to(handlers::routing_health)))
        .service(post("/api/{provider_id}/chat/completions", web::post().to(handlers::provider_chat)));
}

fn method_not_allowed(allow: &'static str) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    let mut res = ApiError::new(Code::MethodNotAllowed, format!("This path accepts {allow} only.")).error_response();
    res.headers_mut().insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static(allow));
    res
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
