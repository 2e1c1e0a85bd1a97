use crate::control::{Control, ControlError};
use crate::store::{self, StoreError, TierRow, UserRow};
use crate::types::is_valid_provider_id;

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::Invalid(msg.into())
}

/// Checks a tier's fields: a valid name, limits of 0 or more (0 allows nothing), a finite quota.
pub fn validate_tier(t: &TierRow) -> Result<(), ControlError> {
    if !is_valid_provider_id(&t.name) {
        return Err(invalid(format!("`{}` is not a valid tier name: use [a-z0-9][a-z0-9_-]{{0,62}}", t.name)));
    }
    for (field, v) in
        [("rpm", t.rpm), ("tpm", t.tpm), ("max_concurrency", t.max_concurrency), ("max_tokens", t.max_tokens)]
    {
        if v.is_some_and(|v| v < 0) {
            return Err(invalid(format!("{field} must be 0 or more")));
        }
    }
    if t.monthly_quota_usd.is_some_and(|q| !q.is_finite() || q < 0.0) {
        return Err(invalid("monthly_quota_usd must be a number, 0 or more"));
    }
    if let Some(routes) = &t.routes
        && (routes.is_empty()
            || routes.iter().any(|r| r.is_empty() || r.len() > 512 || r.chars().any(char::is_control)))
    {
        return Err(invalid("routes must be non-empty globs such as `provider/local/*`"));
    }
    Ok(())
}

impl Control {
    /// Creates or replaces a tier; users on it get the new limits at once.
    pub async fn put_tier(&self, t: &TierRow) -> Result<TierRow, ControlError> {
        validate_tier(t)?;
        let row = store::put_tier(self.store.conn(), t).await?;
        self.changed().await?;
        Ok(row)
    }

    /// One tier.
    pub async fn get_tier(&self, name: &str) -> Result<TierRow, ControlError> {
        store::find_tier(self.store.conn(), name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no tier `{name}`")))
    }

    /// Every tier.
    pub async fn list_tiers(&self) -> Result<Vec<TierRow>, ControlError> {
        Ok(store::list_tiers(self.store.conn()).await?)
    }

    /// Deletes a tier no user is on.
    pub async fn delete_tier(&self, name: &str) -> Result<(), ControlError> {
        let users = store::count_users_on_tier(self.store.conn(), name).await?;
        if users > 0 {
            return Err(ControlError::Conflict(format!("{users} user(s) are on tier `{name}`; move them first")));
        }
        store::delete_tier(self.store.conn(), name).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no tier `{name}`")),
            other => ControlError::Store(other),
        })?;
        self.changed().await
    }

    /// Puts a user on a tier (`None`: off any tier); the tier must exist.
    pub async fn set_user_tier(&self, username: &str, tier: Option<&str>) -> Result<UserRow, ControlError> {
        if let Some(t) = tier {
            self.get_tier(t).await?;
        }
        let row = store::set_user_tier(self.store.conn(), username, tier).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no user `{username}`")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }
}
