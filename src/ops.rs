//! Operations endpoints: `/ready` (database and shared state reachable), `/metrics` (Prometheus
//! text format). `/health` (liveness, plus routing detail for admin tokens) is served by `proxy`,
//! which owns the routing state it shows.
//!
//! Architecture Invariant: reads infrastructure only (store, shared, telemetry, the cache's figures).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::shared::SharedState;
use crate::store::Store;
use crate::telemetry::Metrics;

/// State of the ops endpoints.
#[derive(Clone)]
pub struct OpsState {
    /// The store.
    pub store: Store,
    /// Shared state.
    pub shared: Arc<dyn SharedState>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The node's graceful shutdown: a draining node is not ready.
    pub drain: crate::types::Drain,
    /// SHA-256 of the bearer token `/metrics` requires, when one is configured.
    pub metrics_token: Option<[u8; 32]>,
    /// The response cache, whose in-process figures are read at each scrape.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
}

/// Registers the ops routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ready", web::get().to(ready)).route("/metrics", web::get().to(metrics));
}

async fn ready(state: web::Data<OpsState>) -> HttpResponse {
    if state.drain.draining.is_cancelled() {
        return HttpResponse::ServiceUnavailable().json(json!({"draining": true}));
    }
    let db = state.store.ping().await;
    let shared = state.shared.ping().await;
    let body = json!({
        "database": if db.is_ok() { "ok" } else { "unreachable" },
        "shared_state": if shared.is_ok() { "ok" } else { "unreachable" },
        "shared_state_kind": state.shared.kind(),
    });
    if db.is_ok() && shared.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<OpsState>, req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    if let Some(want) = &state.metrics_token {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.trim().as_bytes())));
        if !given.is_some_and(|g| bool::from(g.ct_eq(want))) {
            return crate::error::ApiError::new(
                crate::error::Code::InvalidToken,
                "`/metrics` needs `Authorization: Bearer <metrics.token>`.",
            )
            .error_response();
        }
    }
    if let Some(c) = &state.cache {
        c.export().await;
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
