//! OIDC login routes (SPEC §5): authorization code with PKCE S256, `state` and `nonce`; the ID
//! token's signature, issuer, audience, expiry and nonce verified by the `openidconnect` crate.
//! What a login started (PKCE verifier, nonce) waits in the shared state under the hash of its
//! `state`, single-use, bound to the browser that started it by a cookie, so any node can finish
//! it. Who may sign in, and as whom, is decided in `control` ([`Control::oidc_login`]).
//!
//! [`Control::oidc_login`]: crate::control::Control::oidc_login

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, Scope,
};
use serde::{Deserialize, Serialize};

use crate::control::OidcIdentity;
use crate::dashboard::errors::DashError;
use crate::dashboard::forms::same_secret;
use crate::dashboard::oidc::{ALGORITHMS, claim_values, flag, payload, userinfo};
use crate::dashboard::session::{self, Method, cookie, key_of, random_token};
use crate::dashboard::state::DashboardState;

/// The cookie binding a login to the browser that started it.
const BINDING_COOKIE: &str = "sy_oidc";
/// How long a started login may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Logins one client address may start a minute (each holds a pending entry until it ends).
const STARTS_PER_MINUTE: u64 = 30;

/// What a started login leaves in the shared state.
#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    nonce: String,
    /// SHA-256 of the binding cookie's value.
    binding: String,
}

/// `GET /dashboard/oidc/login`: to the provider, with PKCE S256, `state` and `nonce`.
pub async fn start(s: web::Data<DashboardState>, req: HttpRequest) -> Result<HttpResponse, DashError> {
    let Some(o) = s.oidc.as_ref() else { return Err(DashError::NotFound) };
    // Each start stores a pending login for ten minutes: so many a minute per client address.
    let addr = actix_web::HttpMessage::extensions(&req).get::<crate::types::ClientAddr>().map(|a| a.0);
    if let Some(addr) = addr {
        let key = format!("dashoidc:addr:{addr}");
        let w = s.shared.window_add(&key, 60_000, 1, Some(STARTS_PER_MINUTE)).await.map_err(|e| {
            tracing::warn!(error = %e, "OIDC start throttle unreachable.");
            DashError::Unavailable
        })?;
        if !w.allowed {
            let secs = w.reset_ms.div_ceil(1000).max(1);
            return Err(DashError::Throttled(
                "Too many sign-ins started from this address; wait a minute.".into(),
                secs,
            ));
        }
    }
    let m = o.metadata(false).await?;
    let client = o.client(&m);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut auth = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .set_pkce_challenge(challenge);
    for scope in o.cfg.scopes.iter().filter(|sc| *sc != "openid") {
        auth = auth.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = auth.url();
    let binding = random_token()?;
    let pending =
        Pending { verifier: verifier.secret().clone(), nonce: nonce.secret().clone(), binding: key_of("", &binding) };
    let value = serde_json::to_vec(&pending).map_err(|_| DashError::Unavailable)?;
    let ttl = u64::try_from(PENDING_TTL.as_millis()).unwrap_or(600_000);
    s.shared.kv_set(&key_of("dash:oidc:", state.secret()), &value, ttl).await.map_err(|e| {
        tracing::warn!(error = %e, "OIDC login state not stored.");
        DashError::Unavailable
    })?;
    Ok(HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, url.to_string()))
        .cookie(cookie(&s.cfg, BINDING_COOKIE, binding, i64::try_from(PENDING_TTL.as_secs()).unwrap_or(600)))
        .finish())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn refused(why: &str) -> DashError {
    tracing::info!(reason = why, "OIDC login refused.");
    DashError::Forbidden(format!("Single sign-on failed: {why}. Start again from the login page."))
}

/// `GET /dashboard/oidc/callback`: the provider's answer.
pub async fn callback(
    s: web::Data<DashboardState>,
    req: HttpRequest,
    q: web::Query<CallbackQuery>,
) -> Result<HttpResponse, DashError> {
    let Some(o) = s.oidc.as_ref() else { return Err(DashError::NotFound) };
    if let Some(e) = &q.error {
        let e: String = e.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return Err(refused(&format!("the identity provider answered `{e}`")));
    }
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return Err(refused("the answer has no code or state"));
    };
    if state.len() > 256 || code.len() > 4096 {
        return Err(refused("the answer is malformed"));
    }
    // Single use: the first callback with a state takes it.
    let key = key_of("dash:oidc:", state);
    let unavailable = |e: crate::shared::SharedError| {
        tracing::warn!(error = %e, "OIDC login state unreachable.");
        DashError::Unavailable
    };
    let stored = s.shared.kv_get(&key).await.map_err(unavailable)?;
    let Some(pending) = stored.and_then(|v| serde_json::from_slice::<Pending>(&v).ok()) else {
        return Err(refused("this login was not started here, has expired or was used already"));
    };
    if !s.shared.kv_delete(&key).await.map_err(unavailable)? {
        return Err(refused("this login was used already"));
    }
    let bound = req.cookie(BINDING_COOKIE).is_some_and(|c| same_secret(&key_of("", c.value()), &pending.binding));
    if !bound {
        return Err(refused("this login was started in another browser"));
    }
    let m = o.metadata(false).await?;
    let client = o.client(&m);
    let http = |r| o.call(r);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|_| refused("the provider has no token endpoint"))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&http)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "OIDC code exchange failed.");
            refused("the code was not accepted")
        })?;
    let Some(id_token) = token.extra_fields().id_token() else { return Err(refused("no ID token came back")) };
    let verifier = client.id_token_verifier().set_allowed_algs(ALGORITHMS);
    let nonce = Nonce::new(pending.nonce);
    let claims = match id_token.claims(&verifier, &nonce) {
        Ok(c) => c.clone(),
        Err(e) => {
            // The provider may have rotated its keys: read them again once.
            tracing::info!(error = %e, "ID token not verified.");
            let m = o.metadata(true).await?;
            let client = o.client(&m);
            let verifier = client.id_token_verifier().set_allowed_algs(ALGORITHMS);
            id_token.claims(&verifier, &nonce).map_err(|_| refused("the ID token is not valid"))?.clone()
        }
    };
    let raw = payload(&id_token.to_string());
    let mut identity = OidcIdentity {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: flag(raw.get("email_verified")),
        preferred_username: claims.preferred_username().map(|u| u.to_string()),
        admin_claim_values: o.cfg.admin_claim.as_ref().map(|c| claim_values(raw.get(c))).unwrap_or_default(),
    };
    if identity.email.is_none() || (o.cfg.admin_claim.is_some() && identity.admin_claim_values.is_empty()) {
        userinfo(o, &m, token.access_token().secret(), &mut identity).await;
    }
    let user = s.control.oidc_login(&identity, &o.cfg).await.map_err(|e| match e {
        crate::control::ControlError::Forbidden(m) => refused(&m),
        other => DashError::from(other),
    })?;
    let c = session::open(&s, user.id, Method::Oidc).await?;
    tracing::info!(user_id = user.id, "Dashboard login by SSO.");
    Ok(HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/dashboard"))
        .cookie(c)
        .cookie(cookie(&s.cfg, BINDING_COOKIE, String::new(), 0))
        .finish())
}
