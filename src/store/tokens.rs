use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::store::StoreError;
use crate::store::entity::tokens;

/// A token row. The raw token is never stored: only its SHA-256.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TokenRow {
    /// Primary key.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Label.
    pub name: String,
    /// Hex SHA-256 of the token.
    #[serde(skip)]
    pub token_hash: String,
    /// The first characters, to recognise a token in listings.
    pub display_prefix: String,
    /// Allowed route globs; `None` means every route of the owner.
    pub routes: Option<Vec<String>>,
    /// Quota in USD.
    pub quota_usd: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
    /// Expiry, ms since the epoch.
    pub expires_at: Option<i64>,
    /// Revoked tokens never authenticate again.
    pub revoked: bool,
    /// Last request, ms since the epoch.
    pub last_used_at: Option<i64>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// The token that minted this one (a child never exceeds its parent's scope, and is charged
    /// against its parent's limits and quota too).
    pub parent_id: Option<i64>,
    /// A worker token's broker provider: it may only register workers for it (SPEC §7), and
    /// call nothing else.
    pub worker_provider: Option<String>,
}

impl From<tokens::Model> for TokenRow {
    fn from(m: tokens::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            name: m.name,
            token_hash: m.token_hash,
            display_prefix: m.display_prefix,
            routes: m.routes.and_then(|r| serde_json::from_str(&r).ok()),
            quota_usd: m.quota_usd,
            rpm: m.rpm,
            tpm: m.tpm,
            expires_at: m.expires_at,
            revoked: m.revoked,
            last_used_at: m.last_used_at,
            created_at: m.created_at,
            parent_id: m.parent_id,
            worker_provider: m.worker_provider,
        }
    }
}

/// What `create_token` stores.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// Owner.
    pub user_id: i64,
    /// Label.
    pub name: String,
    /// Hex SHA-256.
    pub token_hash: String,
    /// First characters of the token.
    pub display_prefix: String,
    /// Allowed route globs.
    pub routes: Option<Vec<String>>,
    /// Quota in USD.
    pub quota_usd: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
    /// Expiry, ms since the epoch.
    pub expires_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// The minting token, for child tokens.
    pub parent_id: Option<i64>,
    /// A worker token's broker provider.
    pub worker_provider: Option<String>,
}

/// Inserts a token.
pub async fn create_token(db: &impl ConnectionTrait, t: NewToken) -> Result<TokenRow, StoreError> {
    let routes = match &t.routes {
        Some(r) => Some(serde_json::to_string(r).map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(e.to_string())))?),
        None => None,
    };
    let model = tokens::ActiveModel {
        user_id: Set(t.user_id),
        name: Set(t.name),
        token_hash: Set(t.token_hash),
        display_prefix: Set(t.display_prefix),
        routes: Set(routes),
        quota_usd: Set(t.quota_usd),
        rpm: Set(t.rpm),
        tpm: Set(t.tpm),
        expires_at: Set(t.expires_at),
        revoked: Set(false),
        last_used_at: Set(None),
        created_at: Set(t.created_at),
        parent_id: Set(t.parent_id),
        worker_provider: Set(t.worker_provider),
        ..Default::default()
    };
    model.insert(db).await.map(TokenRow::from).map_err(StoreError::from_db)
}

/// The token with this hash (a parameterised lookup; the raw token never reaches SQL).
pub async fn find_token_by_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<TokenRow>, StoreError> {
    let row = tokens::Entity::find().filter(tokens::Column::TokenHash.eq(hash)).one(db).await?;
    Ok(row.map(TokenRow::from))
}

/// Every token of a user, by id.
pub async fn list_tokens(db: &impl ConnectionTrait, user_id: i64) -> Result<Vec<TokenRow>, StoreError> {
    let rows = tokens::Entity::find()
        .filter(tokens::Column::UserId.eq(user_id))
        .order_by_asc(tokens::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(TokenRow::from).collect())
}

/// Every token that is not revoked, for the in-memory cache.
pub async fn list_active_tokens(db: &impl ConnectionTrait) -> Result<Vec<TokenRow>, StoreError> {
    let rows = tokens::Entity::find().filter(tokens::Column::Revoked.eq(false)).all(db).await?;
    Ok(rows.into_iter().map(TokenRow::from).collect())
}

/// Marks a token revoked; `NotFound` when there is no such token.
pub async fn revoke_token(db: &impl ConnectionTrait, id: i64) -> Result<TokenRow, StoreError> {
    let Some(row) = tokens::Entity::find_by_id(id).one(db).await? else {
        return Err(StoreError::NotFound);
    };
    let mut am: tokens::ActiveModel = row.into();
    am.revoked = Set(true);
    Ok(am.update(db).await?.into())
}

/// A change to a token's scope: `None` leaves a field, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct TokenScopeChange {
    /// Allowed route globs.
    pub routes: Option<Option<Vec<String>>>,
    /// Requests per minute.
    pub rpm: Option<Option<i64>>,
    /// Tokens per minute.
    pub tpm: Option<Option<i64>>,
    /// Quota in USD.
    pub quota_usd: Option<Option<f64>>,
    /// Expiry, ms since the epoch.
    pub expires_at: Option<Option<i64>>,
}

/// Changes a token's scope; `NotFound` when there is no such token.
pub async fn update_token_scope(
    db: &impl ConnectionTrait,
    id: i64,
    change: &TokenScopeChange,
) -> Result<TokenRow, StoreError> {
    let Some(row) = tokens::Entity::find_by_id(id).one(db).await? else {
        return Err(StoreError::NotFound);
    };
    let mut am: tokens::ActiveModel = row.into();
    if let Some(r) = &change.routes {
        let json = match r {
            Some(r) => {
                Some(serde_json::to_string(r).map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(e.to_string())))?)
            }
            None => None,
        };
        am.routes = Set(json);
    }
    if let Some(v) = change.rpm {
        am.rpm = Set(v);
    }
    if let Some(v) = change.tpm {
        am.tpm = Set(v);
    }
    if let Some(v) = change.quota_usd {
        am.quota_usd = Set(v);
    }
    if let Some(v) = change.expires_at {
        am.expires_at = Set(v);
    }
    Ok(am.update(db).await?.into())
}

/// Records that tokens were used at `at` (batched by the usage writer, never per request).
pub async fn touch_tokens(db: &impl ConnectionTrait, ids: &[i64], at: i64) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    tokens::Entity::update_many()
        .col_expr(tokens::Column::LastUsedAt, Expr::value(at))
        .filter(tokens::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// The token with this id.
pub async fn find_token(db: &impl ConnectionTrait, id: i64) -> Result<Option<TokenRow>, StoreError> {
    Ok(tokens::Entity::find_by_id(id).one(db).await?.map(TokenRow::from))
}
