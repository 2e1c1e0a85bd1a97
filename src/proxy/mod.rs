//! The data plane: OpenAI-compatible routes, authentication, validation, resolution, dispatch
//! to upstreams, the streaming relay and its usage tap.
//!
//! Architecture Invariant: never imports `control`, `admin` or `dashboard`; talks to the
//! control plane only through the catalog (reads) and accounting (usage records).

//!
//! A request goes through named phases over one context (pingora's shape): [`admit`] (parse,
//! validate, resolve, permission, rate limits; the usage record opens here) → [`cached`] (the
//! response cache: a hit is answered and recorded here; a miss carries its fill) → [`plan`] (autoselect,
//! context windows, quota, burst, order, cooldowns) → [`attempt`] per candidate, each giving a
//! [`reply::Reply`] or a failure → the [`pipeline`] decides retries in one place and finishes the
//! record of every ending that is not an answer; [`reply::respond`] alone makes HTTP of a reply.
//!
//! The usage-record rule (SPEC §6): a request that passes admission — authenticated, valid,
//! resolved, permitted, within its rate limits, with room in the usage queue — has exactly one
//! record, whatever happens next (refusals, failures, disconnects included); a request refused
//! before that has none. Selection calls are admitted with the request they serve.

pub mod admit;
pub mod attempt;
pub mod autoselect;
pub mod body;
pub mod burst;
pub mod cached;
pub mod caller;
pub mod gate;
pub mod handlers;
pub mod limits;
pub mod offload;
pub mod permit;
pub mod pipeline;
pub mod plan;
pub mod reason;
pub mod receipt;
pub mod relay;
pub mod reply;
pub mod request;
pub mod router;
pub mod routing_status;
pub mod slot;
pub mod state;
#[cfg(test)]
pub mod testing;
pub mod trace;

use actix_web::web;

use crate::error::{ApiError, Code};

pub use caller::Caller;
pub use state::{ProxyState, RetryBudget};

/// Registers the data-plane routes. Every path answers other methods with 405 and `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers::{AUTOSELECTS, CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, OWNER, RESPONSES, ROTATIONS, owner, user};
    let post = |path: &str, route: actix_web::Route| {
        web::resource(path).route(route).default_service(web::to(|| async { method_not_allowed("POST") }))
    };
    let get = |path: &str, route: actix_web::Route| {
        web::resource(path).route(route).default_service(web::to(|| async { method_not_allowed("GET") }))
    };
    cfg.service(post("/v1/chat/completions", web::post().to(owner::<CHAT, OWNER>)))
        .service(post("/v1/completions", web::post().to(owner::<COMPLETIONS, OWNER>)))
        .service(post("/v1/embeddings", web::post().to(owner::<EMBEDDINGS, OWNER>)))
        .service(post("/v1/messages", web::post().to(owner::<MESSAGES, OWNER>)))
        .service(post("/v1/messages/count_tokens", web::post().to(handlers::count_tokens)))
        .service(post("/v1/responses", web::post().to(owner::<RESPONSES, OWNER>)))
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
        .service(post("/api/u/{username}/v1/messages", web::post().to(user::<MESSAGES>)))
        .service(post("/api/u/{username}/v1/messages/count_tokens", web::post().to(handlers::user_count_tokens)))
        .service(post("/api/u/{username}/v1/responses", web::post().to(user::<RESPONSES>)))
        .service(post("/api/u/{username}/responses", web::post().to(user::<RESPONSES>)))
        .service(post("/api/rotations/chat/completions", web::post().to(owner::<CHAT, ROTATIONS>)))
        .service(post("/api/autoselect/chat/completions", web::post().to(owner::<CHAT, AUTOSELECTS>)))
        .service(get("/health", web::get().to(handlers::health)))
        .service(get("/broker/ws", web::get().to(handlers::broker_ws)))
        .service(get("/health/routing", web::get().to(handlers::routing_health)))
        .service(post("/api/{provider_id}/chat/completions", web::post().to(handlers::provider_chat)));
}

/// The dialect of a path's error bodies: Anthropic's on the Messages routes, OpenAI's elsewhere.
pub fn error_dialect(path: &str) -> crate::dialect::Dialect {
    if path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens") {
        crate::dialect::Dialect::Anthropic
    } else {
        crate::dialect::Dialect::OpenAi
    }
}

fn method_not_allowed(allow: &'static str) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    let mut res = ApiError::new(Code::MethodNotAllowed, format!("This path accepts {allow} only.")).error_response();
    res.headers_mut().insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static(allow));
    res
}
