//! The data plane: OpenAI-compatible routes, authentication, validation, resolution, dispatch
//! to upstreams, the streaming relay and its usage tap.
//!
//! Architecture Invariant: never imports `control`, `admin` or `dashboard`; talks to the
//! control plane only through the catalog (reads) and accounting (usage records).

mod autoselect;
mod body;
pub(crate) mod burst;
mod caller;
mod handlers;
pub(crate) mod pipeline;
pub mod privacy;
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
    /// Compiled sensitivity classifiers of burst rotations, by rotation name.
    pub classifiers: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<privacy::Classifier>>>>,
    /// Moving-average latency (ms) of burst tiers on this node.
    pub latency: Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>,
    /// Autoselect candidate vectors (`embedding` selection), by embeddings route and text.
    pub embeddings: autoselect::EmbeddingCache,
}

/// The per-worker upstream client (awc is `!Send`, so each worker builds its own).
pub struct UpstreamClient(pub awc::Client);

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
        .service(get("/health/routing", web::get().to(handlers::routing_health)))
        .service(post("/api/{provider_id}/chat/completions", web::post().to(handlers::provider_chat)));
}

fn method_not_allowed(allow: &'static str) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    let mut res = ApiError::new(Code::MethodNotAllowed, format!("This path accepts {allow} only.")).error_response();
    res.headers_mut().insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static(allow));
    res
}
