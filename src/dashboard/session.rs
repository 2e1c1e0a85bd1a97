//! Dashboard sessions, kept in the shared state so that any node serves any session and a
//! logout ends it everywhere. The cookie holds a random id; the store holds only its SHA-256.

use std::future::{Ready, ready};

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::catalog::hex;
use crate::dashboard::errors::DashError;
use crate::dashboard::state::{Config, DashboardState};
use crate::types::{Role, now_ms};

/// The session cookie.
pub const COOKIE: &str = "sy_session";

/// How a session was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Username and password.
    Password,
    /// Single sign-on.
    Oidc,
}

/// What the shared state keeps of a session.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The user.
    user_id: i64,
    /// The CSRF token of its forms.
    csrf: String,
    /// When it was opened (ms).
    created_ms: i64,
    /// How.
    method: Method,
}

/// The signed-in user of a dashboard request, as the catalog knows them now.
#[derive(Clone, Debug)]
pub struct Principal {
    /// User id.
    pub user_id: i64,
    /// Name.
    pub username: String,
    /// Role (current: a demoted admin loses the admin pages at once).
    pub role: Role,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session's key in the shared state.
    pub(crate) key: String,
}

impl Principal {
    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses non-admins.
    pub fn admin(&self) -> Result<(), DashError> {
        if self.is_admin() { Ok(()) } else { Err(DashError::admins_only()) }
    }
}

impl FromRequest for Principal {
    type Error = DashError;
    type Future = Ready<Result<Self, DashError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The gate put it there; a route outside the gate has none.
        ready(req.extensions().get::<Self>().cloned().ok_or_else(|| DashError::Forbidden("Sign in first.".into())))
    }
}

/// A fresh random value, base64url (no padding).
pub fn random_token() -> Result<String, DashError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|_| DashError::Unavailable)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The shared-state key of a secret value (never the value itself).
pub fn key_of(prefix: &str, secret: &str) -> String {
    use sha2::Digest as _;
    format!("{prefix}{}", hex(&sha2::Sha256::digest(secret.as_bytes())))
}

fn session_key(raw: &str) -> String {
    key_of("dash:session:", raw)
}

/// A cookie of the dashboard: `HttpOnly`, `SameSite=Lax`, `Secure` behind https, path `/dashboard`.
pub fn cookie<'a>(cfg: &Config, name: &'a str, value: String, max_age_secs: i64) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/dashboard")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(cfg.secure_cookies)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// The cookie that removes the session cookie.
pub fn clear_cookie(cfg: &Config) -> Cookie<'static> {
    cookie(cfg, COOKIE, String::new(), 0)
}

/// Opens a session for `user_id`; returns its cookie.
pub async fn open(s: &DashboardState, user_id: i64, method: Method) -> Result<Cookie<'static>, DashError> {
    let raw = random_token()?;
    let stored = Stored { user_id, csrf: random_token()?, created_ms: now_ms(), method };
    let value = serde_json::to_vec(&stored).map_err(|_| DashError::Unavailable)?;
    s.shared.kv_set(&session_key(&raw), &value, s.cfg.session_ttl_secs.saturating_mul(1000)).await.map_err(|e| {
        tracing::warn!(error = %e, "Session not stored.");
        DashError::Unavailable
    })?;
    Ok(cookie(&s.cfg, COOKIE, raw, i64::try_from(s.cfg.session_ttl_secs).unwrap_or(i64::MAX)))
}

/// Ends a session on every node.
pub async fn close(s: &DashboardState, p: &Principal) -> Result<(), DashError> {
    s.shared.kv_delete(&p.key).await.map_err(|e| {
        tracing::warn!(error = %e, "Session not removed.");
        DashError::Unavailable
    })?;
    Ok(())
}

/// The session of a request, if it has a live one whose user may still sign in.
pub async fn load(s: &DashboardState, req: &HttpRequest) -> Result<Option<Principal>, DashError> {
    let Some(raw) = req.cookie(COOKIE).map(|c| c.value().to_owned()) else { return Ok(None) };
    if raw.is_empty() || raw.len() > 128 {
        return Ok(None);
    }
    let key = session_key(&raw);
    let value = s.shared.kv_get(&key).await.map_err(|e| {
        tracing::warn!(error = %e, "Session store unreachable.");
        DashError::Unavailable
    })?;
    let Some(stored) = value.and_then(|v| serde_json::from_slice::<Stored>(&v).ok()) else { return Ok(None) };
    // The user as stored now, not as a catalog snapshot had them: a role change or a disable
    // applies to the very next page, on every node.
    let user = match s.control.get_user_by_id(stored.user_id).await {
        Ok(u) => {
            let active = u.is_active();
            Some((u.username, u.role, active))
        }
        Err(crate::control::ControlError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match user {
        Some((username, role, true)) => {
            Ok(Some(Principal { user_id: stored.user_id, username, role, csrf: stored.csrf, key }))
        }
        _ => {
            // Disabled or deleted: the session ends here, whichever node sees it first.
            let _ = s.shared.kv_delete(&key).await;
            Ok(None)
        }
    }
}
