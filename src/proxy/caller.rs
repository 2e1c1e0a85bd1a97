//! The data-plane authentication extractor: `Authorization: Bearer sy-…` or `x-api-key`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::catalog::TokenEntry;
use crate::error::ApiError;
use crate::proxy::state::ProxyState;

/// An authenticated caller.
pub struct Caller(pub Arc<TokenEntry>);

fn credential(req: &HttpRequest) -> Option<String> {
    let h = |name| req.headers().get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    crate::catalog::credential(h(header::AUTHORIZATION.as_str()), h("x-api-key"))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ProxyState>>().cloned();
        let raw = credential(req);
        let client = actix_web::HttpMessage::extensions(req).get::<crate::types::ClientAddr>().map(|c| c.0);
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::internal());
            };
            let Some(raw) = raw else {
                return Err(crate::catalog::missing_credentials());
            };
            let token = state.catalog.authenticate_from(&raw, client).await?;
            token.refuse_worker()?;
            // The request's server span names who is calling.
            tracing::Span::current().record("switchyard.user_id", token.user_id);
            Ok(Self(token))
        })
    }
}
