//! What the admin plane's handlers share: its state, the caller extractors, the error mapping.

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
    /// The response cache, when enabled.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
}

impl AdminState {
    /// The admin plane over `catalog`, `control` and the shared state's node registry.
    pub fn new(catalog: Arc<Catalog>, control: Control, shared: Arc<dyn crate::shared::SharedState>) -> Self {
        Self { catalog, control, shared, cache: None }
    }

    /// With the node's response cache (its figures, and purges that free its room at once).
    #[must_use]
    pub fn with_cache(mut self, cache: Option<Arc<crate::cache::ResponseCache>>) -> Self {
        self.cache = cache;
        self
    }
}

/// What a handler returns.
pub type Reply = Result<HttpResponse, ApiError>;

fn authenticate(req: &HttpRequest) -> Pin<Box<dyn Future<Output = Result<Arc<TokenEntry>, ApiError>>>> {
    let state = req.app_data::<web::Data<AdminState>>().cloned();
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let raw = crate::catalog::credential(h(header::AUTHORIZATION.as_str()).as_deref(), h("x-api-key").as_deref());
    let client = actix_web::HttpMessage::extensions(req).get::<crate::types::ClientAddr>().map(|c| c.0);
    Box::pin(async move {
        let state = state.ok_or_else(ApiError::internal)?;
        let raw = raw.ok_or_else(crate::catalog::missing_credentials)?;
        let token = state.catalog.authenticate_from(&raw, client).await?;
        token.refuse_worker()?;
        Ok(token)
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
pub fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Invalid(m) => ApiError::new(Code::InvalidRequest, m),
        ControlError::NotFound(m) => ApiError::new(Code::NotFound, m),
        ControlError::Conflict(m) => ApiError::new(Code::Conflict, m),
        ControlError::Forbidden(m) => ApiError::new(Code::PermissionDenied, m),
        ControlError::Throttled(m, secs) => ApiError::new(Code::RateLimitExceeded, m).with_retry_after(secs),
        ControlError::Store(e) => {
            tracing::error!(error = %e, "Store failure in the admin API.");
            ApiError::unavailable()
        }
    }
}
