//! The OIDC client (SPEC §5): discovery (kept for a while, read again when keys may have
//! rotated), the `openidconnect` client with the provider's client authentication, the
//! algorithms an ID token may use, and the userinfo call. The login routes are in `sso.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::core::{CoreClient, CoreClientAuthMethod, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{AuthType, ClientId, ClientSecret, IssuerUrl, RedirectUrl};

use crate::config::OidcSettings;
use crate::control::OidcIdentity;
use crate::dashboard::errors::DashError;
use crate::upstream::http::FetchClient;

/// How long discovery (and its keys) is trusted before it is read again.
const METADATA_TTL: Duration = Duration::from_secs(600);

/// The algorithms an ID token may be signed with: asymmetric ones only (never `none`, never an
/// HMAC keyed with something public).
pub(crate) const ALGORITHMS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The OIDC client of a node.
pub struct Oidc {
    pub(crate) cfg: OidcSettings,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    secret: Option<String>,
    pub(crate) http: FetchClient,
    metadata: tokio::sync::Mutex<Option<(Arc<CoreProviderMetadata>, Instant)>>,
}

/// Why the OIDC HTTP client failed (for the `openidconnect` crate).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Oidc {
    /// The client of `[oidc]`; `public` is `server.public_url` (trailing slash trimmed).
    pub fn new(cfg: &OidcSettings, public: Option<&str>, tls: Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| format!("oidc.issuer: {e}"))?;
        let redirect = match (&cfg.redirect_url, public) {
            (Some(r), _) => r.clone(),
            (None, Some(p)) => format!("{p}/dashboard/oidc/callback"),
            (None, None) => return Err("oidc.redirect_url: set it, or server.public_url".into()),
        };
        let redirect = RedirectUrl::new(redirect).map_err(|e| format!("oidc.redirect_url: {e}"))?;
        let secret = cfg.client_secret_value().map_err(|e| format!("oidc.client_secret: {e}"))?;
        Ok(Self {
            cfg: cfg.clone(),
            issuer,
            redirect,
            secret,
            http: FetchClient::new(&tls, Duration::from_secs(10), 1024 * 1024),
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    /// The login page's button text.
    pub fn label(&self) -> &str {
        &self.cfg.label
    }

    pub(crate) async fn call(&self, req: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, HttpError> {
        self.http.fetch(req).await.map_err(|e| HttpError(e.to_string()))
    }

    /// The provider's metadata and keys, read again after [`METADATA_TTL`] (or when `fresh`).
    pub(crate) async fn metadata(&self, fresh: bool) -> Result<Arc<CoreProviderMetadata>, DashError> {
        let mut held = self.metadata.lock().await;
        if let Some((m, at)) = held.as_ref()
            && !fresh
            && at.elapsed() < METADATA_TTL
        {
            return Ok(Arc::clone(m));
        }
        let client = |req| self.call(req);
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &client).await.map_err(|e| {
            tracing::warn!(error = %e, "OIDC discovery failed.");
            DashError::Unavailable
        })?;
        let m = Arc::new(m);
        *held = Some((Arc::clone(&m), Instant::now()));
        Ok(m)
    }

    pub(crate) fn client(
        &self,
        m: &CoreProviderMetadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        let client = CoreClient::from_provider_metadata(
            m.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone());
        // client_secret_basic unless the provider only takes client_secret_post.
        let methods = m.token_endpoint_auth_methods_supported();
        let post_only = methods.is_some_and(|ms| {
            ms.contains(&CoreClientAuthMethod::ClientSecretPost)
                && !ms.contains(&CoreClientAuthMethod::ClientSecretBasic)
        });
        if post_only { client.set_auth_type(AuthType::RequestBody) } else { client }
    }
}

/// The claims of an ID token the crate has verified, all of them (to read the configured admin
/// claim and `email_verified`, which it does not model).
pub(crate) fn payload(jwt: &str) -> serde_json::Map<String, serde_json::Value> {
    jwt.split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(crate) fn claim_values(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn flag(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        // Some providers send it as a string.
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Fills what the ID token left out from the userinfo endpoint (JSON answers only; its `sub`
/// must be the ID token's). Nothing is cached: each login asks for its own token.
pub(crate) async fn userinfo(o: &Oidc, m: &CoreProviderMetadata, access_token: &str, id: &mut OidcIdentity) {
    let Some(url) = m.userinfo_endpoint() else { return };
    let Ok(req) = http::Request::get(url.url().as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {access_token}"))
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
    else {
        return;
    };
    let Ok(res) = o.http.fetch(req).await else { return };
    if !res.status().is_success() {
        return;
    }
    let Ok(info) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(res.body()) else { return };
    if info.get("sub").and_then(|v| v.as_str()) != Some(id.subject.as_str()) {
        tracing::info!("Userinfo names another subject; ignored.");
        return;
    }
    if id.email.is_none()
        && let Some(e) = info.get("email").and_then(|v| v.as_str())
    {
        id.email = Some(e.to_owned());
        id.email_verified = flag(info.get("email_verified"));
    }
    if let Some(c) = &o.cfg.admin_claim
        && id.admin_claim_values.is_empty()
    {
        id.admin_claim_values = claim_values(info.get(c));
    }
    if id.preferred_username.is_none() {
        id.preferred_username = info.get("preferred_username").and_then(|v| v.as_str()).map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_read_from_a_verified_token() {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"a","email_verified":"true","groups":["x","admins"]}"#);
        let p = payload(&format!("h.{body}.s"));
        assert!(flag(p.get("email_verified")));
        assert_eq!(claim_values(p.get("groups")), vec!["x", "admins"]);
        assert!(payload("garbage").is_empty());
        assert!(!flag(None));
    }
}
