//! Who may sign in to the dashboard: local passwords (argon2id) and OIDC identities, with the
//! provisioning rules of SPEC §5. The dashboard checks tokens and protocols; the rules are here.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};

use crate::config::OidcSettings;
use crate::control::{Control, ControlError, hash_password};
use crate::store::{self, NewUser, StoreError, UserChange, UserRow};
use crate::types::{Role, is_valid_username};

/// The one answer to a refused password login, whatever the reason (no such user, no password,
/// disabled, wrong password): it must not tell which.
pub const BAD_LOGIN: &str = "Wrong username or password.";

/// A hash no password matches, verified when there is no real one so that every refused login
/// costs the same argon2 work.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut salt = [0u8; 24];
        let _ = getrandom::fill(&mut salt);
        hash_password(&crate::catalog::hex(&salt)).unwrap_or_default()
    })
}

/// Whether `password` matches the PHC string `hash` (argon2 verification, constant time in the
/// password). Blocking: run it off the async workers.
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// An identity an OIDC provider vouched for (the ID token verified, userinfo merged).
#[derive(Clone, Debug, Default)]
pub struct OidcIdentity {
    /// The issuer.
    pub issuer: String,
    /// The subject at the issuer.
    pub subject: String,
    /// The e-mail claim.
    pub email: Option<String>,
    /// The `email_verified` claim (absent counts as false).
    pub email_verified: bool,
    /// `preferred_username`, when given.
    pub preferred_username: Option<String>,
    /// The values of the configured admin claim (a string claim gives one).
    pub admin_claim_values: Vec<String>,
}

fn email_domain(email: &str) -> Option<&str> {
    email.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// A username for a first login: `preferred_username` or the e-mail's local part, folded into
/// the username alphabet.
fn username_base(id: &OidcIdentity) -> String {
    let raw = id
        .preferred_username
        .clone()
        .or_else(|| id.email.as_deref().and_then(|e| e.split('@').next()).map(str::to_owned))
        .unwrap_or_else(|| "user".to_owned());
    let mut out: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .take(50)
        .collect();
    while out.starts_with(['_', '.', '-']) {
        out.remove(0);
    }
    while out.ends_with(['_', '.', '-']) {
        out.pop();
    }
    if out.is_empty() { "user".to_owned() } else { out }
}

impl Control {
    /// The user `username` if `password` is theirs and they may sign in; else [`BAD_LOGIN`]
    /// (as `Forbidden`), after the same argon2 work whatever the reason.
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<UserRow, ControlError> {
        let user =
            if is_valid_username(username) { store::find_user(self.store.conn(), username).await? } else { None };
        let hash = user.as_ref().and_then(|u| u.password_hash.clone()).unwrap_or_else(|| decoy().to_owned());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || password_matches(&hash, &password)).await.unwrap_or(false);
        match user {
            Some(u) if ok && u.is_active() && u.password_hash.is_some() => Ok(u),
            _ => Err(ControlError::Forbidden(BAD_LOGIN.into())),
        }
    }

    /// Changes a user's own password, given the current one (a user without one, from SSO, sets
    /// a first password with `current` empty).
    pub async fn change_password(&self, user_id: i64, current: &str, new: &str) -> Result<(), ControlError> {
        let user = store::find_user_by_id(self.store.conn(), user_id)
            .await?
            .ok_or_else(|| ControlError::NotFound("no such user".into()))?;
        if let Some(hash) = user.password_hash.clone() {
            let current = current.to_owned();
            let ok = tokio::task::spawn_blocking(move || password_matches(&hash, &current)).await.unwrap_or(false);
            if !ok {
                return Err(ControlError::Forbidden("The current password is wrong.".into()));
            }
        }
        self.set_password(user_id, new).await
    }

    /// Sets a user's password (an admin's reset, or after [`Control::change_password`]'s check).
    pub async fn set_password(&self, user_id: i64, new: &str) -> Result<(), ControlError> {
        if new.chars().count() < 8 {
            return Err(ControlError::Invalid("passwords need at least 8 characters".into()));
        }
        if new.len() > 1024 {
            return Err(ControlError::Invalid("passwords may have at most 1024 bytes".into()));
        }
        let new = new.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&new))
            .await
            .map_err(|_| ControlError::Invalid("cannot hash the password".into()))??;
        store::update_user(self.store.conn(), user_id, UserChange { password_hash: Some(hash), ..Default::default() })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ControlError::NotFound("no such user".into()),
                other => ControlError::Store(other),
            })?;
        Ok(())
    }

    /// Sets or clears the e-mail on record of `username`.
    pub async fn set_email(&self, username: &str, email: Option<&str>) -> Result<UserRow, ControlError> {
        if let Some(e) = email
            && (e.len() > 320 || email_domain(e).is_none() || e.chars().any(char::is_whitespace))
        {
            return Err(ControlError::Invalid(format!("`{e}` is not an e-mail address")));
        }
        let user = self.get_user(username).await?;
        let change = UserChange { email: Some(email.map(str::to_lowercase)), ..Default::default() };
        Ok(store::update_user(self.store.conn(), user.id, change).await?)
    }

    /// Signs in an OIDC identity (SPEC §5): its linked user; else, on a first login, the user who
    /// has its verified e-mail on record (`link_by_email`), or a new user on the default tier —
    /// only with a verified e-mail in `allowed_domains` (when set). With `admin_claim`, the
    /// claim decides the role at every login. A disabled user is refused.
    pub async fn oidc_login(&self, id: &OidcIdentity, cfg: &OidcSettings) -> Result<UserRow, ControlError> {
        let refuse = |m: &str| Err(ControlError::Forbidden(m.to_owned()));
        let db = self.store.conn();
        let email = id.email.as_deref().map(str::to_lowercase);
        let domain_ok = |e: &str| {
            cfg.allowed_domains.is_empty()
                || email_domain(e).is_some_and(|d| cfg.allowed_domains.iter().any(|a| a.eq_ignore_ascii_case(d)))
        };
        let mut user = match store::find_user_by_identity(db, &id.issuer, &id.subject).await? {
            Some(u) => u,
            None => {
                let Some(email) = email.as_deref().filter(|_| id.email_verified) else {
                    return refuse("Your identity provider did not vouch for your e-mail address.");
                };
                if !domain_ok(email) {
                    return refuse("Your e-mail domain may not sign in here.");
                }
                let linked = if cfg.link_by_email {
                    let found = store::find_users_by_email(db, email).await?;
                    let mut free: Vec<UserRow> = found.iter().filter(|u| u.oidc_subject.is_none()).cloned().collect();
                    if free.is_empty() && !found.is_empty() {
                        return refuse("This e-mail address belongs to a user linked to another identity.");
                    }
                    if free.len() > 1 {
                        return refuse("Several users have this e-mail address; ask an administrator.");
                    }
                    free.pop()
                } else {
                    None
                };
                match linked {
                    Some(u) => {
                        let change = UserChange {
                            identity: Some((id.issuer.clone(), id.subject.clone())),
                            ..Default::default()
                        };
                        store::update_user(db, u.id, change).await?
                    }
                    None => self.provision(id, email, cfg).await?,
                }
            }
        };
        if !user.is_active() {
            return refuse("This account is disabled.");
        }
        if let Some(claim) = &cfg.admin_claim
            && !claim.is_empty()
        {
            let role = if id.admin_claim_values.iter().any(|v| cfg.admin_values.contains(v)) {
                Role::Admin
            } else {
                Role::User
            };
            if role != user.role {
                user = store::update_user(db, user.id, UserChange { role: Some(role), ..Default::default() }).await?;
                self.changed().await?;
            }
        }
        Ok(user)
    }

    async fn provision(&self, id: &OidcIdentity, email: &str, cfg: &OidcSettings) -> Result<UserRow, ControlError> {
        if let Some(t) = &cfg.default_tier {
            self.get_tier(t).await?;
        }
        let base = username_base(id);
        for n in 0..50u32 {
            let name = if n == 0 { base.clone() } else { format!("{base}-{}", n + 1) };
            if !is_valid_username(&name) {
                continue;
            }
            let new = NewUser {
                username: &name,
                role: Role::User,
                tier: cfg.default_tier.as_deref(),
                password_hash: None,
                email: Some(email.to_owned()),
                identity: Some((id.issuer.clone(), id.subject.clone())),
            };
            match store::create_user(self.store.conn(), new).await {
                Ok(u) => {
                    self.changed().await?;
                    return Ok(u);
                }
                Err(StoreError::Conflict) => {
                    // The name is taken — or this identity was provisioned by a concurrent login.
                    if let Some(u) = store::find_user_by_identity(self.store.conn(), &id.issuer, &id.subject).await? {
                        return Ok(u);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::Conflict("no free username for this identity; ask an administrator".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_from_identities() {
        let id = |pu: Option<&str>, e: Option<&str>| OidcIdentity {
            preferred_username: pu.map(str::to_owned),
            email: e.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(username_base(&id(None, Some("Alice.Smith@example.com"))), "alice.smith");
        assert_eq!(username_base(&id(Some("Bob Jones"), None)), "bob-jones");
        assert_eq!(username_base(&id(Some("__x"), None)), "x");
        assert_eq!(username_base(&id(Some("Ünï"), None)), "n");
        assert_eq!(username_base(&id(None, None)), "user");
    }

    #[test]
    fn decoy_matches_nothing() {
        assert!(!password_matches(decoy(), ""));
        assert!(!password_matches("not a hash", "x"));
        let h = hash_password("correct horse").unwrap();
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "correct horsf"));
    }
}
