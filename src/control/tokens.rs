use crate::catalog::{TokenEntry, hex, token_hash};
use crate::control::{Control, ControlError, random_bytes};
use crate::store::{self, NewToken, StoreError, TokenRow};
use crate::types::{glob_within, is_well_formed_token, now_ms};

/// A token to create.
#[derive(Clone, Debug)]
pub struct NewTokenRequest {
    /// Owner.
    pub username: String,
    /// Label.
    pub name: String,
    /// Allowed route globs.
    pub routes: Option<Vec<String>>,
    /// Expiry, ms since the epoch.
    pub expires_at: Option<i64>,
    /// Quota in USD (0 allows nothing).
    pub quota_usd: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
    /// A known value instead of a random one (bootstrap only).
    pub raw: Option<String>,
    /// The minting token, for a child token (see [`child_within`]).
    pub parent_id: Option<i64>,
    /// Made by its user (self-service: a child token or the dashboard), so bounded by
    /// `tenant_limits.max_tokens`.
    pub self_service: bool,
    /// A worker token for this broker provider (SPEC §7): the user's own, or for an admin a
    /// configured one. It may only connect workers.
    pub worker: Option<String>,
}

impl NewTokenRequest {
    /// A token for `username` with no restrictions.
    pub fn for_user(username: &str) -> Self {
        Self {
            username: username.to_owned(),
            name: "default".into(),
            routes: None,
            expires_at: None,
            quota_usd: None,
            rpm: None,
            tpm: None,
            raw: None,
            parent_id: None,
            self_service: false,
            worker: None,
        }
    }
}

/// Checks that a token a user mints with `parent` stays within `parent`'s scope: explicit routes,
/// each covered by one of the parent's (a route scope of everything, `*`, is for admins only);
/// RPM, TPM, quota and expiry no looser than the parent's. The child is also charged against its
/// parent's limits and quota when it is used, so many children cannot add up to more.
pub fn child_within(parent: &TokenEntry, req: &NewTokenRequest) -> Result<(), ControlError> {
    let deny = |m: &str| Err(ControlError::Forbidden(m.to_owned()));
    if req.username != parent.username {
        return deny("a token can only mint tokens for its own user");
    }
    let Some(routes) = &req.routes else {
        return deny("a child token needs explicit routes (all routes is for admins only)");
    };
    for r in routes {
        if r.starts_with('*') {
            return deny("wildcard namespaces are for admins only");
        }
        // By matching, not by glob text: a parent of `provider/?/*` cannot mint `provider/*/*`.
        if let Some(mine) = &parent.routes
            && !mine.iter().any(|p| glob_within(r, p))
        {
            return deny(&format!("the route `{r}` is outside this token's routes"));
        }
    }
    let looser = |child: Option<i64>, parent: Option<i64>| parent.is_some_and(|p| child.is_none_or(|c| c > p));
    if looser(req.rpm, parent.rpm) || looser(req.tpm, parent.tpm) {
        return deny("a child token's rpm and tpm may not exceed this token's");
    }
    if parent.quota_usd.is_some_and(|p| req.quota_usd.is_none_or(|c| c > p)) {
        return deny("a child token's quota may not exceed this token's");
    }
    if looser(req.expires_at, parent.expires_at) {
        return deny("a child token may not outlive this token");
    }
    Ok(())
}

/// A new random token: `sy-` and 32 random bytes in hex.
pub fn mint_token() -> Result<String, ControlError> {
    Ok(format!("sy-{}", hex(&random_bytes::<32>()?)))
}

impl Control {
    /// Whether `owner` may hold a worker token for `provider`: their own broker provider, or
    /// (an admin) a configured one; a worker token carries no routes, limits or quota and is
    /// minted by no other token.
    async fn check_worker(
        &self,
        owner: &store::UserRow,
        provider: &str,
        req: &NewTokenRequest,
    ) -> Result<(), ControlError> {
        if req.routes.is_some()
            || req.rpm.is_some()
            || req.tpm.is_some()
            || req.quota_usd.is_some()
            || req.parent_id.is_some()
            || req.self_service
        {
            return Err(ControlError::Invalid(
                "a worker token has no routes, limits or quota, and is made by an admin for a user".into(),
            ));
        }
        if let Some(o) = store::find_user_object(self.store.conn(), owner.id, "provider", provider).await? {
            let kind = serde_json::from_str::<crate::config::ProviderConfig>(&o.spec).map(|c| c.kind);
            return match kind {
                Ok(crate::types::ProviderKind::Broker) => Ok(()),
                _ => Err(ControlError::Invalid(format!("`{provider}` is not a broker provider"))),
            };
        }
        if self.brokers.iter().any(|b| b == provider) {
            return if owner.role == crate::types::Role::Admin {
                Ok(())
            } else {
                Err(ControlError::Forbidden(
                    "workers of a configured broker provider take an admin's token; a user attaches workers to their own broker providers".into(),
                ))
            };
        }
        Err(ControlError::NotFound(format!(
            "no broker provider `{provider}` of `{}` (their own, or for an admin a configured one)",
            owner.username
        )))
    }

    /// Creates a token and returns it once, with its row. Only its SHA-256 is stored.
    pub async fn create_token(&self, req: NewTokenRequest) -> Result<(String, TokenRow), ControlError> {
        let db = self.store.conn();
        let Some(owner) = store::find_user(db, &req.username).await? else {
            return Err(ControlError::NotFound(format!("no user `{}`", req.username)));
        };
        if req.name.is_empty() || req.name.chars().count() > 128 || req.name.chars().any(char::is_control) {
            return Err(ControlError::Invalid("token names need 1–128 printable characters".into()));
        }
        validate_scope(req.quota_usd, req.rpm, req.tpm, req.routes.as_deref())?;
        if let Some(provider) = &req.worker {
            self.check_worker(&owner, provider, &req).await?;
        }
        // Tokens minted by tokens (self-service) are bounded per user, counted and stored one at a
        // time on this node.
        let mut _one_at_a_time = None;
        if req.parent_id.is_some() || req.self_service {
            _one_at_a_time = Some(self.bounded_writes.lock().await);
            let live = store::list_tokens(db, owner.id).await?.iter().filter(|t| !t.revoked).count();
            let cap = self.limits.max_tokens;
            if live >= usize::try_from(cap).unwrap_or(usize::MAX) {
                return Err(ControlError::Forbidden(format!(
                    "a user may hold at most {cap} tokens (tenant_limits.max_tokens); revoke one first"
                )));
            }
        }
        let raw = match req.raw {
            Some(r) if is_well_formed_token(&r) => r,
            Some(_) => {
                return Err(ControlError::Invalid("a token must be `sy-` and at least 43 URL-safe characters".into()));
            }
            None => mint_token()?,
        };
        let row = store::create_token(
            db,
            NewToken {
                user_id: owner.id,
                name: req.name,
                token_hash: hex(&token_hash(&raw)),
                display_prefix: raw.chars().take(10).collect(),
                routes: req.routes,
                quota_usd: req.quota_usd,
                rpm: req.rpm,
                tpm: req.tpm,
                expires_at: req.expires_at,
                created_at: now_ms(),
                parent_id: req.parent_id,
                worker_provider: req.worker,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ControlError::Conflict("that token exists already".into()),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok((raw, row))
    }

    /// The tokens of a user.
    pub async fn list_tokens(&self, username: &str) -> Result<Vec<TokenRow>, ControlError> {
        let db = self.store.conn();
        let Some(owner) = store::find_user(db, username).await? else {
            return Err(ControlError::NotFound(format!("no user `{username}`")));
        };
        Ok(store::list_tokens(db, owner.id).await?)
    }

    /// Revokes a token on every node.
    pub async fn revoke_token(&self, id: i64) -> Result<TokenRow, ControlError> {
        let row = store::revoke_token(self.store.conn(), id).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no token {id}")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }
}

/// The checks a token's scope passes at creation and on every change.
fn validate_scope(
    quota_usd: Option<f64>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    routes: Option<&[String]>,
) -> Result<(), ControlError> {
    if quota_usd.is_some_and(|q| !q.is_finite() || q < 0.0) {
        return Err(ControlError::Invalid("the quota must be 0 or more".into()));
    }
    if rpm.is_some_and(|v| v < 0) || tpm.is_some_and(|v| v < 0) {
        return Err(ControlError::Invalid("rpm and tpm must be 0 or more (0 allows nothing)".into()));
    }
    if let Some(routes) = routes
        && (routes.is_empty()
            || routes.iter().any(|r| r.is_empty() || r.len() > 512 || r.chars().any(char::is_control)))
    {
        return Err(ControlError::Invalid("routes must be non-empty globs such as `provider/local/*`".into()));
    }
    Ok(())
}

impl Control {
    /// Changes a token's routes, limits, quota or expiry, on every node. Its child tokens keep
    /// their own scope, and every request through them is still checked against this one.
    pub async fn update_token(&self, id: i64, change: &store::TokenScopeChange) -> Result<TokenRow, ControlError> {
        validate_scope(
            change.quota_usd.flatten(),
            change.rpm.flatten(),
            change.tpm.flatten(),
            change.routes.as_ref().and_then(|r| r.as_deref()),
        )?;
        let row = store::update_token_scope(self.store.conn(), id, change).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no token {id}")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }

    /// The ids of `root` and every token minted below it, among `user_id`'s tokens.
    pub async fn subtree(&self, user_id: i64, root: i64) -> Result<Vec<i64>, ControlError> {
        let rows = store::list_tokens(self.store.conn(), user_id).await?;
        Ok(subtree_of(&rows, root))
    }

    /// One token (for ownership checks).
    pub async fn get_token(&self, id: i64) -> Result<TokenRow, ControlError> {
        store::find_token(self.store.conn(), id).await?.ok_or_else(|| ControlError::NotFound(format!("no token {id}")))
    }
}

/// `root` and its descendants among `rows` (breadth first; a cycle cannot loop).
pub fn subtree_of(rows: &[TokenRow], root: i64) -> Vec<i64> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for r in rows {
            if r.parent_id == Some(parent) && !out.contains(&r.id) {
                out.push(r.id);
            }
        }
        i += 1;
    }
    out
}
