//! The data-plane authentication extractor: `Authorization: Bearer sy-…` or `x-api-key`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::catalog::{AuthError, TokenEntry};
use crate::error::{ApiError, Code};
use crate::proxy::ProxyState;

/// An authenticated caller.
pub struct Caller(pub Arc<TokenEntry>);

fn credential(req: &HttpRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
    bearer.or(key).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ProxyState>>().cloned();
        let raw = credential(req);
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::internal());
            };
            let Some(raw) = raw else {
                return Err(ApiError::new(
                    Code::InvalidToken,
                    "Missing credentials: send `Authorization: Bearer <token>`.",
                ));
            };
            match state.catalog.authenticate(&raw).await {
                Ok(t) => Ok(Self(t)),
                Err(AuthError::Invalid) => {
                    Err(ApiError::new(Code::InvalidToken, "The token is invalid or has been revoked."))
                }
                Err(AuthError::Expired) => Err(ApiError::new(Code::TokenExpired, "The token has expired.")),
                Err(AuthError::Unavailable) => Err(ApiError::unavailable()),
            }
        })
    }
}
