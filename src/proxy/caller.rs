//! The data-plane authentication extractor: `Authorization: Bearer sy-…` or `x-api-key`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::catalog::TokenEntry;
use crate::error::ApiError;
use crate::proxy::ProxyState;

/// An authenticated caller.
pub struct Caller(pub Arc<TokenEntry>);

fn credential(req: &HttpRequest) -> Option<String> {
    let h = |name| req.headers().get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    crate::catalog::credential(h(header::AUTHORIZATION.as_str()), h("x-api-key"))
}

/// The client address of a request (see [`crate::catalog::Catalog::client_ip`]).
pub fn client_ip(catalog: &crate::catalog::Catalog, req: &HttpRequest) -> Option<std::net::IpAddr> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    catalog.client_ip(req.peer_addr().map(|a| a.ip()), h("x-forwarded-for"), h("x-real-ip"))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ProxyState>>().cloned();
        let raw = credential(req);
        let client = state.as_ref().and_then(|s| client_ip(&s.catalog, req));
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::internal());
            };
            let Some(raw) = raw else {
                return Err(crate::catalog::missing_credentials());
            };
            Ok(Self(state.catalog.authenticate_from(&raw, client).await?))
        })
    }
}
