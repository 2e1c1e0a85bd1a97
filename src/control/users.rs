use argon2::Argon2;
use argon2::password_hash::PasswordHasher;

use crate::catalog::hex;
use crate::config::Settings;
use crate::control::tokens::NewTokenRequest;
use crate::control::{Control, ControlError, random_bytes};
use crate::store::{self, NewUser, StoreError, UserRow};
use crate::types::{Role, is_valid_username};

/// What the first start created; printed once.
#[derive(Debug, serde::Serialize)]
pub struct Bootstrap {
    /// The admin's name.
    pub username: String,
    /// The admin's one-time password.
    pub password: String,
    /// The admin token (absent when it came from configuration).
    pub token: Option<String>,
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, ControlError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Invalid(format!("cannot hash password: {e}")))
}

impl Control {
    /// Creates a user.
    pub async fn create_user(
        &self,
        username: &str,
        role: Role,
        tier: Option<&str>,
        password: Option<&str>,
    ) -> Result<UserRow, ControlError> {
        if !is_valid_username(username) {
            return Err(ControlError::Invalid(format!(
                "`{username}` is not a valid username: use 1–63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
            )));
        }
        if password.is_some_and(|p| p.chars().count() < 8) {
            return Err(ControlError::Invalid("passwords need at least 8 characters".into()));
        }
        if let Some(t) = tier {
            self.get_tier(t).await?;
        }
        let password_hash = password.map(hash_password).transpose()?;
        let row = store::create_user(
            self.store.conn(),
            NewUser { username, role, tier, password_hash, email: None, identity: None },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ControlError::Conflict(format!("user `{username}` exists already")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, ControlError> {
        Ok(store::list_users(self.store.conn()).await?)
    }

    /// One user.
    pub async fn get_user(&self, username: &str) -> Result<UserRow, ControlError> {
        store::find_user(self.store.conn(), username)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no user `{username}`")))
    }

    /// One user, by id.
    pub async fn get_user_by_id(&self, id: i64) -> Result<UserRow, ControlError> {
        store::find_user_by_id(self.store.conn(), id)
            .await?
            .ok_or_else(|| ControlError::NotFound("no such user".into()))
    }

    /// Re-enables a disabled user.
    pub async fn enable_user(&self, username: &str) -> Result<UserRow, ControlError> {
        let row = store::set_user_status(self.store.conn(), username, "active").await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no user `{username}`")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }

    /// Disables a user: every token of theirs stops working on every node.
    pub async fn disable_user(&self, username: &str) -> Result<UserRow, ControlError> {
        let row = store::set_user_status(self.store.conn(), username, "disabled").await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no user `{username}`")),
            other => ControlError::Store(other),
        })?;
        self.changed().await?;
        Ok(row)
    }

    /// On an empty database: creates the admin user with a one-time password and an admin token
    /// (`bootstrap.admin_token` when configured). Returns `None` when users exist already.
    pub async fn bootstrap(&self, settings: &Settings) -> Result<Option<Bootstrap>, ControlError> {
        if store::count_users(self.store.conn()).await? > 0 {
            return Ok(None);
        }
        let username = settings.bootstrap.admin_username.clone();
        let password = hex(&random_bytes::<12>()?);
        match self.create_user(&username, Role::Admin, None, Some(&password)).await {
            Ok(_) => {}
            // Another node bootstrapped at the same moment.
            Err(ControlError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let configured = settings.bootstrap.admin_token.as_ref().map(|s| s.expose().to_owned());
        let request = NewTokenRequest {
            name: "bootstrap".into(),
            raw: configured.clone(),
            ..NewTokenRequest::for_user(&username)
        };
        let (raw, _) = self.create_token(request).await?;
        Ok(Some(Bootstrap { username, password, token: if configured.is_some() { None } else { Some(raw) } }))
    }
}
