//! Thin handlers: extract, call the pipeline, render.

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::catalog::BurstMode;
use crate::dialect::Dialect;
use crate::error::{ApiError, Code};
use crate::proxy::caller::Caller;
use crate::proxy::pipeline;
use crate::proxy::request::{Request, Scope};
use crate::proxy::state::ProxyState;
use crate::telemetry::Sampling;
use crate::types::{Operation, RequestId, is_valid_username};
use crate::upstream::http::Clients;

type Reply = Result<HttpResponse, ApiError>;

fn request_id(req: &HttpRequest) -> RequestId {
    req.extensions().get::<RequestId>().copied().unwrap_or_default()
}

async fn run(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ProxyState>,
    clients: web::Data<Clients>,
    caller: Caller,
    (op, dialect): (Operation, Dialect),
    scope: Scope,
) -> Reply {
    let raw = crate::proxy::body::read(&req, body, state.max_body_bytes).await?;
    let burst_mode = req.headers().get("x-burst-mode").and_then(|v| v.to_str().ok()).and_then(BurstMode::parse);
    let forwarded = dialect
        .client_headers()
        .iter()
        .filter_map(|name| Some((*name, req.headers().get(*name)?.to_str().ok()?.to_owned())))
        .collect();
    let request = Request {
        id: request_id(&req),
        caller: &caller,
        op,
        scope,
        burst_mode,
        raw: &raw,
        dialect,
        parent: None,
        sampling: req.extensions().get::<Sampling>().cloned().unwrap_or_default(),
        forwarded,
        cache_control: crate::cache::Directives::parse(
            req.headers().get(actix_web::http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
        ),
    };
    // Boxed: the pipeline's future is large; actix boxes the handler's, which stays small.
    let reply = Box::pin(pipeline::run(&state, &clients, request)).await?;
    Ok(crate::proxy::reply::respond(reply))
}

/// The operation codes of the generic handlers below (`Operation` cannot be a const parameter).
pub const CHAT: u8 = 0;
/// `…/completions`.
pub const COMPLETIONS: u8 = 1;
/// `…/embeddings`.
pub const EMBEDDINGS: u8 = 2;
/// `…/v1/messages` (Anthropic Messages).
pub const MESSAGES: u8 = 3;
/// `…/v1/responses` (OpenAI Responses).
pub const RESPONSES: u8 = 4;

/// The name spaces of the generic `owner` handler: the owner's names, or only rotation names
/// (`/api/rotations`), or only autoselect names (`/api/autoselect`).
pub const OWNER: u8 = 0;
/// `/api/rotations/…`.
pub const ROTATIONS: u8 = 1;
/// `/api/autoselect/…`.
pub const AUTOSELECTS: u8 = 2;

fn names(code: u8) -> Scope {
    match code {
        ROTATIONS => Scope::Rotation,
        AUTOSELECTS => Scope::Autoselect,
        _ => Scope::Owner,
    }
}

/// The operation and the client's dialect of a route.
fn operation(code: u8) -> (Operation, Dialect) {
    match code {
        CHAT => (Operation::Chat, Dialect::OpenAi),
        COMPLETIONS => (Operation::Completions, Dialect::OpenAi),
        MESSAGES => (Operation::Chat, Dialect::Anthropic),
        RESPONSES => (Operation::Chat, Dialect::Responses),
        _ => (Operation::Embeddings, Dialect::OpenAi),
    }
}

/// `POST /v1/{op}`, `/api/user/{op}`, `/api/rotations/{op}` and `/api/autoselect/{op}`: the token
/// owner's namespace, or only its rotation or autoselect names.
pub async fn owner<const OP: u8, const NAMES: u8>(
    req: HttpRequest,
    body: web::Payload,
    s: web::Data<ProxyState>,
    c: web::Data<Clients>,
    caller: Caller,
) -> Reply {
    run(req, body, s, c, caller, operation(OP), names(NAMES)).await
}

/// `POST /api/u/{username}/{op}`: that user's namespace.
pub async fn user<const OP: u8>(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    s: web::Data<ProxyState>,
    c: web::Data<Clients>,
    caller: Caller,
) -> Reply {
    let scope = namespace(&s, &caller, &path)?;
    run(req, body, s, c, caller, operation(OP), scope).await
}

/// Checks that `caller` may act in `username`'s namespace.
fn namespace(state: &ProxyState, caller: &Caller, username: &str) -> Result<Scope, ApiError> {
    if !caller.0.may_act_for(username) {
        return Err(ApiError::new(Code::PermissionDenied, "This token may not act in that user's namespace."));
    }
    // A token proves its owner exists; an admin naming someone else needs the lookup.
    if caller.0.username == username {
        return Ok(Scope::User(caller.0.user_id));
    }
    let user = is_valid_username(username).then(|| state.catalog.snapshot().user(username)).flatten();
    match user {
        Some(u) => Ok(Scope::User(u.id)),
        None => Err(ApiError::new(Code::NotFound, "No such user.")),
    }
}

/// `POST /api/{provider_id}/chat/completions`: one provider directly.
pub async fn provider_chat(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    s: web::Data<ProxyState>,
    c: web::Data<Clients>,
    caller: Caller,
) -> Reply {
    let provider = path.into_inner();
    if !s.catalog.snapshot().has_provider(&provider) {
        return Err(ApiError::new(Code::NotFound, "No such provider."));
    }
    run(req, body, s, c, caller, (Operation::Chat, Dialect::OpenAi), Scope::Provider(provider)).await
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the gateway counts them, for the
/// route the body names (resolved and permitted like a request to it; nothing is sent upstream
/// and no usage is recorded).
pub async fn count_tokens(req: HttpRequest, body: web::Payload, s: web::Data<ProxyState>, caller: Caller) -> Reply {
    count(req, body, s, caller, Scope::Owner).await
}

/// `POST /api/u/{username}/v1/messages/count_tokens`.
pub async fn user_count_tokens(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    s: web::Data<ProxyState>,
    caller: Caller,
) -> Reply {
    let scope = namespace(&s, &caller, &path)?;
    count(req, body, s, caller, scope).await
}

async fn count(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ProxyState>,
    caller: Caller,
    scope: Scope,
) -> Reply {
    let raw = crate::proxy::body::read(&req, body, state.max_body_bytes).await?;
    let request = Request {
        id: request_id(&req),
        caller: &caller,
        op: Operation::Chat,
        scope,
        burst_mode: None,
        raw: &raw,
        dialect: Dialect::Anthropic,
        parent: None,
        sampling: Sampling::Off,
        forwarded: Vec::new(),
        cache_control: crate::cache::Directives::default(),
    };
    let tokens = crate::proxy::admit::count_tokens(&state, &request).await?;
    Ok(HttpResponse::Ok().json(json!({ "input_tokens": tokens })))
}

/// `GET /health/routing` (admin tokens): in-flight counts, cooldowns in force, burst latency
/// averages and today's cloud spend.
/// `GET /health`: liveness for anyone (`{"status":"ok"}`, never touching a dependency); with an
/// admin token it adds the routing detail of `/health/routing`. A missing or bad token is not an
/// error here: a liveness probe must not fail on credentials.
pub async fn health(s: web::Data<ProxyState>, caller: Option<Caller>) -> HttpResponse {
    match caller {
        Some(c) if c.0.role == crate::types::Role::Admin => {
            HttpResponse::Ok().json(json!({"status": "ok", "routing": crate::proxy::routing_status::status(&s).await}))
        }
        _ => HttpResponse::Ok().json(json!({"status": "ok"})),
    }
}

/// `GET /broker/ws`: where broker workers will connect (SPEC §7). This version has broker
/// providers and worker tokens but not the workers' websocket yet: a clear refusal, not a 404
/// that looks like a wrong URL.
pub async fn broker_ws() -> Reply {
    Err(ApiError::new(
        Code::NotFound,
        "Broker workers cannot connect to this version of Switchyard yet: its broker providers have no workers.",
    ))
}

/// `GET /health/routing` (admin tokens): the routing detail alone.
pub async fn routing_health(s: web::Data<ProxyState>, caller: Caller) -> Reply {
    if caller.0.role != crate::types::Role::Admin {
        return Err(ApiError::new(Code::PermissionDenied, "Routing detail is for admin tokens."));
    }
    Ok(HttpResponse::Ok().json(crate::proxy::routing_status::status(&s).await))
}

fn model_list(state: &ProxyState, caller: &Caller) -> HttpResponse {
    let snapshot = state.catalog.snapshot();
    let mut models: Vec<(String, String)> =
        snapshot.routes().into_iter().filter(|(route, _)| caller.0.may_use(route)).collect();
    models.extend(
        snapshot
            .user_routes(caller.0.user_id)
            .into_iter()
            .filter(|route| caller.0.may_use(route))
            .map(|id| (id, caller.0.username.clone())),
    );
    HttpResponse::Ok().json(crate::dialect::openai::model_list(models))
}

/// `GET /v1/models`, `/api/v1/models`, `/api/user/models`.
pub async fn models(s: web::Data<ProxyState>, caller: Caller) -> Reply {
    Ok(model_list(&s, &caller))
}

/// `GET /api/u/{username}/models`.
pub async fn user_models(path: web::Path<String>, s: web::Data<ProxyState>, caller: Caller) -> Reply {
    namespace(&s, &caller, &path)?;
    Ok(model_list(&s, &caller))
}
