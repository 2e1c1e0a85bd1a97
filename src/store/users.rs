use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use crate::store::StoreError;
use crate::store::entity::users;
use crate::types::{Role, now_ms};

/// A user as the rest of the gateway sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserRow {
    /// Primary key.
    pub id: i64,
    /// Canonical name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Tier name.
    pub tier: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// argon2id PHC string.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// E-mail on record (from SSO, or set by an admin).
    pub email: Option<String>,
    /// The OIDC issuer of the linked identity.
    #[serde(skip)]
    pub oidc_issuer: Option<String>,
    /// The OIDC subject of the linked identity.
    #[serde(skip)]
    pub oidc_subject: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

impl UserRow {
    /// Whether the user may authenticate.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

impl From<users::Model> for UserRow {
    fn from(m: users::Model) -> Self {
        Self {
            id: m.id,
            username: m.username,
            role: Role::parse(&m.role).unwrap_or(Role::User),
            tier: m.tier,
            status: m.status,
            password_hash: m.password_hash,
            email: m.email,
            oidc_issuer: m.oidc_issuer,
            oidc_subject: m.oidc_subject,
            created_at: m.created_at,
        }
    }
}

/// What `create_user` stores.
#[derive(Clone, Debug)]
pub struct NewUser<'a> {
    /// Canonical name (already validated).
    pub username: &'a str,
    /// Role.
    pub role: Role,
    /// Tier name.
    pub tier: Option<&'a str>,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// E-mail on record.
    pub email: Option<String>,
    /// A linked OIDC identity (issuer, subject).
    pub identity: Option<(String, String)>,
}

/// Inserts a user; `Conflict` when the name is taken.
pub async fn create_user(db: &impl ConnectionTrait, u: NewUser<'_>) -> Result<UserRow, StoreError> {
    let now = now_ms();
    let model = users::ActiveModel {
        username: Set(u.username.to_owned()),
        role: Set(u.role.as_str().to_owned()),
        tier: Set(u.tier.map(str::to_owned)),
        status: Set("active".to_owned()),
        password_hash: Set(u.password_hash),
        email: Set(u.email),
        oidc_issuer: Set(u.identity.as_ref().map(|i| i.0.clone())),
        oidc_subject: Set(u.identity.map(|i| i.1)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    model.insert(db).await.map(UserRow::from).map_err(StoreError::from_db)
}

/// The user with this name.
pub async fn find_user(db: &impl ConnectionTrait, username: &str) -> Result<Option<UserRow>, StoreError> {
    let row = users::Entity::find().filter(users::Column::Username.eq(username)).one(db).await?;
    Ok(row.map(UserRow::from))
}

/// The user with this id.
pub async fn find_user_by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<UserRow>, StoreError> {
    Ok(users::Entity::find_by_id(id).one(db).await?.map(UserRow::from))
}

/// Every user, by id.
pub async fn list_users(db: &impl ConnectionTrait) -> Result<Vec<UserRow>, StoreError> {
    let rows = users::Entity::find().order_by_asc(users::Column::Id).all(db).await?;
    Ok(rows.into_iter().map(UserRow::from).collect())
}

/// How many users exist.
pub async fn count_users(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(users::Entity::find().count(db).await?)
}

/// Sets `active` or `disabled`; `NotFound` when there is no such user.
pub async fn set_user_status(db: &impl ConnectionTrait, username: &str, status: &str) -> Result<UserRow, StoreError> {
    let Some(row) = users::Entity::find().filter(users::Column::Username.eq(username)).one(db).await? else {
        return Err(StoreError::NotFound);
    };
    let mut am: users::ActiveModel = row.into();
    am.status = Set(status.to_owned());
    am.updated_at = Set(now_ms());
    Ok(am.update(db).await?.into())
}

/// Sets a user's tier (`None`: no tier); `NotFound` when there is no such user.
pub async fn set_user_tier(
    db: &impl ConnectionTrait,
    username: &str,
    tier: Option<&str>,
) -> Result<UserRow, StoreError> {
    let Some(row) = users::Entity::find().filter(users::Column::Username.eq(username)).one(db).await? else {
        return Err(StoreError::NotFound);
    };
    let mut am: users::ActiveModel = row.into();
    am.tier = Set(tier.map(str::to_owned));
    am.updated_at = Set(now_ms());
    Ok(am.update(db).await?.into())
}

/// How many users are on `tier`.
pub async fn count_users_on_tier(db: &impl ConnectionTrait, tier: &str) -> Result<u64, StoreError> {
    Ok(users::Entity::find().filter(users::Column::Tier.eq(tier)).count(db).await?)
}

/// The user holding an OIDC identity.
pub async fn find_user_by_identity(
    db: &impl ConnectionTrait,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserRow>, StoreError> {
    let row = users::Entity::find()
        .filter(users::Column::OidcIssuer.eq(issuer))
        .filter(users::Column::OidcSubject.eq(subject))
        .one(db)
        .await?;
    Ok(row.map(UserRow::from))
}

/// The users with this e-mail on record.
pub async fn find_users_by_email(db: &impl ConnectionTrait, email: &str) -> Result<Vec<UserRow>, StoreError> {
    let rows = users::Entity::find().filter(users::Column::Email.eq(email)).all(db).await?;
    Ok(rows.into_iter().map(UserRow::from).collect())
}

/// What [`update_user`] changes (`None`: leave as is).
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    /// A new argon2id PHC string.
    pub password_hash: Option<String>,
    /// A new e-mail (`Some(None)` clears it).
    pub email: Option<Option<String>>,
    /// A new role.
    pub role: Option<Role>,
    /// An identity to link (issuer, subject).
    pub identity: Option<(String, String)>,
}

/// Changes a user; `NotFound` when there is no such user, `Conflict` when the identity is
/// another user's.
pub async fn update_user(db: &impl ConnectionTrait, id: i64, c: UserChange) -> Result<UserRow, StoreError> {
    let Some(row) = users::Entity::find_by_id(id).one(db).await? else {
        return Err(StoreError::NotFound);
    };
    let mut am: users::ActiveModel = row.into();
    if let Some(h) = c.password_hash {
        am.password_hash = Set(Some(h));
    }
    if let Some(e) = c.email {
        am.email = Set(e);
    }
    if let Some(r) = c.role {
        am.role = Set(r.as_str().to_owned());
    }
    if let Some((iss, sub)) = c.identity {
        am.oidc_issuer = Set(Some(iss));
        am.oidc_subject = Set(Some(sub));
    }
    am.updated_at = Set(now_ms());
    am.update(db).await.map(UserRow::from).map_err(StoreError::from_db)
}
