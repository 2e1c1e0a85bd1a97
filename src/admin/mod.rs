//! The admin JSON API under `/admin/api/` (admin tokens) and self-service under `/api/me/` (any
//! token, own objects only): thin handlers over `control` and accounting reports.
//!
//! Architecture Invariant: never imports `proxy` or `dashboard`; authenticates through the
//! catalog like the data plane, authorises with [`Admin`] / [`Me`] extractors, and every write
//! goes through `control` (which validates and announces the change to every node).

mod me;
mod resources;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, web};

use crate::catalog::{Catalog, TokenEntry};
use crate::control::{Control, ControlError};
use crate::error::{ApiError, Code};
use crate::types::Role;

/// What the admin plane needs.
#[derive(Clone)]
pub struct AdminState {
    /// Authentication.
    pub catalog: Arc<Catalog>,
    /// Every write.
    pub control: Control,
    /// The node registry.
    pub shared: Arc<dyn crate::shared::SharedState>,
}

impl AdminState {
    /// The admin plane over `catalog`, `control` and the shared state's node registry.
    pub fn new(catalog: Arc<Catalog>, control: Control, shared: Arc<dyn crate::shared::SharedState>) -> Self {
        Self { catalog, control, shared }
    }
}

type Reply = Result<HttpResponse, ApiError>;

fn authenticate(req: &HttpRequest) -> Pin<Box<dyn Future<Output = Result<Arc<TokenEntry>, ApiError>>>> {
    let state = req.app_data::<web::Data<AdminState>>().cloned();
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let raw = crate::catalog::credential(h(header::AUTHORIZATION.as_str()).as_deref(), h("x-api-key").as_deref());
    let client = actix_web::HttpMessage::extensions(req).get::<crate::types::ClientAddr>().map(|c| c.0);
    Box::pin(async move {
        let state = state.ok_or_else(ApiError::internal)?;
        let raw = raw.ok_or_else(crate::catalog::missing_credentials)?;
        Ok(state.catalog.authenticate_from(&raw, client).await?)
    })
}

/// A caller with an admin token (else 401, or 403 for other tokens).
pub struct Admin(pub Arc<TokenEntry>);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = authenticate(req);
        Box::pin(async move {
            let t = auth.await?;
            if t.role != Role::Admin {
                return Err(ApiError::new(Code::PermissionDenied, "The admin API needs an admin token."));
            }
            Ok(Self(t))
        })
    }
}

/// Any authenticated caller, acting on their own objects.
pub struct Me(pub Arc<TokenEntry>);

impl FromRequest for Me {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = authenticate(req);
        Box::pin(async move { Ok(Self(auth.await?)) })
    }
}

/// Control-plane refusals in the API's error shape.
fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Invalid(m) => ApiError::new(Code::InvalidRequest, m),
        ControlError::NotFound(m) => ApiError::new(Code::NotFound, m),
        ControlError::Conflict(m) => ApiError::new(Code::Conflict, m),
        ControlError::Forbidden(m) => ApiError::new(Code::PermissionDenied, m),
        ControlError::Store(e) => {
            tracing::error!(error = %e, "Store failure in the admin API.");
            ApiError::unavailable()
        }
    }
}

/// JSON bodies of the admin plane: strict (unknown fields refused), size-capped, and every
/// rejection in the API's error shape.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(64 * 1024).error_handler(|err, _| {
        // The server's pacing of request bodies fails a trickled body with a timeout.
        if let actix_web::error::JsonPayloadError::Payload(actix_web::error::PayloadError::Io(io)) = &err
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ApiError::new(Code::RequestTimeout, "The request body arrived too slowly.").into();
        }
        let msg: String = err.to_string().chars().take(300).collect();
        ApiError::new(Code::InvalidRequest, format!("Invalid JSON body: {msg}")).into()
    })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let msg: String = err.to_string().chars().take(300).collect();
        ApiError::new(Code::InvalidRequest, format!("Invalid query: {msg}")).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::new(Code::NotFound, "No such object.").into())
}

/// Registers `/admin/api/…` and `/api/me/…`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/api")
            .app_data(json_config())
            .app_data(query_config())
            .app_data(path_config())
            .configure(resources::configure),
    )
    .service(
        web::scope("/api/me")
            .app_data(json_config())
            .app_data(query_config())
            .app_data(path_config())
            .configure(me::configure),
    );
}
