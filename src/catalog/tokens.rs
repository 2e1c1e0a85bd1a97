//! Token authentication against the catalog: SHA-256 lookup, constant-time comparison,
//! revocation, disabled owners and expiry.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::{Catalog, UserEntry};
use crate::store::{self, TokenRow};
use crate::types::{Role, is_well_formed_token, now_ms};

/// How long a hash that is in no table is remembered as unknown.
const MISS_TTL_MS: i64 = 5_000;
/// At most this many unknown hashes are remembered.
const MISS_CAP: usize = 10_000;

/// An authenticated token and its owner.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    /// Token id.
    pub id: i64,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// Owner id.
    pub user_id: i64,
    /// Owner name.
    pub username: String,
    /// Owner role.
    pub role: Role,
    /// Owner is active.
    pub owner_active: bool,
    /// Allowed route globs.
    pub routes: Option<Vec<String>>,
    /// Expiry, ms since the epoch.
    pub expires_at: Option<i64>,
    /// Revoked.
    pub revoked: bool,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
    /// Quota in USD.
    pub quota_usd: Option<f64>,
    /// The token that minted this one.
    pub parent_id: Option<i64>,
    /// A worker token's broker provider (SPEC §7): such a token only connects workers.
    pub worker_provider: Option<String>,
}

impl TokenEntry {
    pub(crate) fn from_row(t: &TokenRow, users: &HashMap<i64, Arc<UserEntry>>) -> Option<Self> {
        let owner = users.get(&t.user_id)?;
        let hash = unhex32(&t.token_hash)?;
        Some(Self {
            id: t.id,
            hash,
            user_id: t.user_id,
            username: owner.username.clone(),
            role: owner.role,
            owner_active: owner.active,
            routes: t.routes.clone(),
            expires_at: t.expires_at,
            revoked: t.revoked,
            rpm: t.rpm,
            tpm: t.tpm,
            quota_usd: t.quota_usd,
            parent_id: t.parent_id,
            worker_provider: t.worker_provider.clone(),
        })
    }

    /// Whether this token may use `route` (a canonical route name).
    pub fn may_use(&self, route: &str) -> bool {
        self.routes.as_ref().is_none_or(|globs| globs.iter().any(|g| crate::types::glob_match(g, route)))
    }

    /// A worker token's refusal everywhere but the workers' websocket.
    pub fn refuse_worker(&self) -> Result<(), crate::error::ApiError> {
        match &self.worker_provider {
            None => Ok(()),
            Some(_) => Err(crate::error::ApiError::new(
                crate::error::Code::PermissionDenied,
                "A worker token only connects broker workers (GET /broker/ws).",
            )),
        }
    }

    /// Whether this token may act in `username`'s namespace.
    pub fn may_act_for(&self, username: &str) -> bool {
        self.role == Role::Admin || self.username == username
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Revoked, or its owner is disabled (a token that exists).
    Invalid,
    /// Malformed, or no such token: what guessing produces, counted against the client address.
    Unknown,
    /// Past its expiry.
    Expired,
    /// The store is unreachable and the token is not cached.
    Unavailable,
    /// Too many failures from this client address: retry after this many seconds.
    Throttled(u64),
}

/// The credential of a request: `Authorization: Bearer …`, else `x-api-key` (both planes).
pub fn credential(authorization: Option<&str>, x_api_key: Option<&str>) -> Option<String> {
    let bearer =
        authorization.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim);
    bearer.or(x_api_key.map(str::trim)).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl From<AuthError> for crate::error::ApiError {
    fn from(e: AuthError) -> Self {
        use crate::error::{ApiError, Code};
        match e {
            // The same answer either way: an unknown token and a revoked one look alike.
            AuthError::Invalid | AuthError::Unknown => {
                ApiError::new(Code::InvalidToken, "The token is invalid or has been revoked.")
            }
            AuthError::Expired => ApiError::new(Code::TokenExpired, "The token has expired."),
            AuthError::Unavailable => ApiError::unavailable(),
            AuthError::Throttled(secs) => ApiError::new(
                Code::RateLimitExceeded,
                "Too many failed authentications from this address; retry later.",
            )
            .with_retry_after(secs),
        }
    }
}

/// The error for a request without credentials.
pub fn missing_credentials() -> crate::error::ApiError {
    crate::error::ApiError::new(
        crate::error::Code::InvalidToken,
        "Missing credentials: send `Authorization: Bearer <token>`.",
    )
}

/// SHA-256 of a raw token.
pub fn token_hash(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

fn check(entry: &TokenEntry, hash: &[u8; 32]) -> Result<(), AuthError> {
    if !bool::from(entry.hash.ct_eq(hash)) || entry.revoked || !entry.owner_active {
        return Err(AuthError::Invalid);
    }
    if entry.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// Revocation, owner and expiry, for a token found by id (an ancestor).
fn check_valid(entry: &TokenEntry) -> Result<(), AuthError> {
    if entry.revoked || !entry.owner_active {
        return Err(AuthError::Invalid);
    }
    if entry.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// How long a never-seen token waits for a database lookup slot before 503.
const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How deep a chain of child tokens may go.
const MAX_TOKEN_DEPTH: usize = 8;

impl Catalog {
    /// Authenticates a raw bearer token. A child token is valid only while every token above it
    /// is (revoking or expiring a parent ends its children).
    pub async fn authenticate(&self, raw: &str) -> Result<Arc<TokenEntry>, AuthError> {
        self.authenticate_from(raw, None).await
    }

    /// [`Catalog::authenticate`] for a request from `client`: its failures count against the
    /// address (see `throttle`), and a locked-out address's unseen tokens never reach the store.
    pub async fn authenticate_from(
        &self,
        raw: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Arc<TokenEntry>, AuthError> {
        match (self.authenticate_checked(raw, client).await, client) {
            (Err(AuthError::Unknown), Some(ip)) => match self.throttle.failed(ip).await {
                Some(secs) => Err(AuthError::Throttled(secs)),
                None => Err(AuthError::Unknown),
            },
            (other, _) => other,
        }
    }

    async fn authenticate_checked(
        &self,
        raw: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Arc<TokenEntry>, AuthError> {
        let entry = self.authenticate_one(raw, client).await?;
        if entry.parent_id.is_some() {
            self.ancestors(&entry).await?;
        }
        Ok(entry)
    }

    /// The tokens above `token` (parent first), each checked; `Err` when one is no longer valid.
    pub async fn ancestors(&self, token: &TokenEntry) -> Result<Vec<Arc<TokenEntry>>, AuthError> {
        let mut out: Vec<Arc<TokenEntry>> = Vec::new();
        let mut next = token.parent_id;
        while let Some(id) = next {
            if out.len() >= MAX_TOKEN_DEPTH || id == token.id || out.iter().any(|t| t.id == id) {
                return Err(AuthError::Invalid);
            }
            let snap = self.snapshot();
            let found = match snap.tokens_by_id.get(&id) {
                Some(t) => Some(Arc::clone(t)),
                None => {
                    // Not in the snapshot: revoked (absent from it), or newer than the last reload.
                    let db = self.store.conn();
                    match store::find_token(db, id).await.map_err(|_| AuthError::Unavailable)? {
                        Some(t) if !t.revoked => {
                            let owner = snap.users_by_id.get(&t.user_id).cloned();
                            owner.and_then(|o| TokenEntry::from_row(&t, &HashMap::from([(o.id, o)]))).map(Arc::new)
                        }
                        _ => None,
                    }
                }
            };
            let Some(t) = found else { return Err(AuthError::Invalid) };
            check_valid(&t)?;
            next = t.parent_id;
            out.push(t);
        }
        Ok(out)
    }

    async fn authenticate_one(
        &self,
        raw: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Arc<TokenEntry>, AuthError> {
        if !is_well_formed_token(raw) {
            return Err(AuthError::Unknown);
        }
        let hash = token_hash(raw);
        let snap = self.snapshot();
        if let Some(e) = snap.tokens.get(&hash) {
            check(e, &hash)?;
            return Ok(Arc::clone(e));
        }
        if let Some(e) = self.late.lock().ok().and_then(|l| l.get(&hash).cloned()) {
            check(&e, &hash)?;
            return Ok(e);
        }
        let now = now_ms();
        if let Some((until, known)) = self.misses.lock().ok().and_then(|m| m.get(&hash).copied())
            && until > now
        {
            return Err(if known { AuthError::Invalid } else { AuthError::Unknown });
        }
        // A locked-out address's unseen tokens are not looked up at all.
        if let Some(ip) = client
            && let Some(secs) = self.throttle.locked(ip).await
        {
            return Err(AuthError::Throttled(secs));
        }
        // Not seen since the last reload: one indexed lookup by hash (the raw token never reaches
        // SQL), a few at a time per node, so a flood of unknown tokens cannot take the pool.
        let _lookup = match tokio::time::timeout(LOOKUP_WAIT, self.throttle.lookups.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(AuthError::Unavailable),
        };
        let db = self.store.conn();
        let row = store::find_token_by_hash(db, &hex(&hash)).await.map_err(|_| AuthError::Unavailable)?;
        let known = row.is_some();
        let entry = match row {
            Some(t) if !t.revoked => {
                let owner = store::find_user_by_id(db, t.user_id).await.map_err(|_| AuthError::Unavailable)?;
                owner.and_then(|u| {
                    let ue = Arc::new(UserEntry {
                        id: u.id,
                        active: u.is_active(),
                        role: u.role,
                        username: u.username,
                        tier: u.tier,
                    });
                    TokenEntry::from_row(&t, &HashMap::from([(u.id, ue)]))
                })
            }
            _ => None,
        };
        match entry {
            Some(e) => {
                let e = Arc::new(e);
                if let Ok(mut late) = self.late.lock() {
                    late.insert(hash, Arc::clone(&e));
                }
                check(&e, &hash)?;
                Ok(e)
            }
            None => {
                if let Ok(mut m) = self.misses.lock() {
                    if m.len() >= MISS_CAP {
                        m.retain(|_, (until, _)| *until > now);
                        if m.len() >= MISS_CAP {
                            m.clear();
                        }
                    }
                    m.insert(hash, (now + MISS_TTL_MS, known));
                }
                Err(if known { AuthError::Invalid } else { AuthError::Unknown })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = token_hash("sy-abc");
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32("zz"), None);
    }
}
