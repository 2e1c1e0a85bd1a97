use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set};

use crate::store::StoreError;
use crate::store::entity::tiers;
use crate::types::now_ms;

/// A tier: limits and a quota that apply to every user on it. `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TierRow {
    /// Name (`[a-z0-9][a-z0-9_-]{0,62}`).
    pub name: String,
    /// Requests per minute, per user.
    pub rpm: Option<i64>,
    /// Tokens per minute, per user.
    pub tpm: Option<i64>,
    /// Requests in flight, per user.
    pub max_concurrency: Option<i64>,
    /// USD per calendar month (UTC), per user.
    pub monthly_quota_usd: Option<f64>,
    /// Allowed route globs.
    pub routes: Option<Vec<String>>,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: Option<i64>,
}

impl From<tiers::Model> for TierRow {
    fn from(m: tiers::Model) -> Self {
        Self {
            name: m.name,
            rpm: m.rpm,
            tpm: m.tpm,
            max_concurrency: m.max_concurrency,
            monthly_quota_usd: m.monthly_quota_usd,
            routes: m.routes.and_then(|r| serde_json::from_str(&r).ok()),
            max_tokens: m.max_tokens,
        }
    }
}

/// Creates or replaces a tier.
pub async fn put_tier(db: &impl ConnectionTrait, t: &TierRow) -> Result<TierRow, StoreError> {
    let now = now_ms();
    let existing = tiers::Entity::find_by_id(t.name.clone()).one(db).await?;
    let routes = t.routes.as_ref().map(|r| serde_json::to_string(r).unwrap_or_else(|_| "[]".into()));
    let mut am = tiers::ActiveModel {
        name: Set(t.name.clone()),
        rpm: Set(t.rpm),
        tpm: Set(t.tpm),
        max_concurrency: Set(t.max_concurrency),
        monthly_quota_usd: Set(t.monthly_quota_usd),
        routes: Set(routes),
        max_tokens: Set(t.max_tokens),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let saved = match existing {
        Some(old) => {
            am.created_at = Set(old.created_at);
            am.update(db).await?
        }
        None => am.insert(db).await.map_err(StoreError::from_db)?,
    };
    Ok(saved.into())
}

/// The tier with this name.
pub async fn find_tier(db: &impl ConnectionTrait, name: &str) -> Result<Option<TierRow>, StoreError> {
    Ok(tiers::Entity::find_by_id(name.to_owned()).one(db).await?.map(TierRow::from))
}

/// Every tier, by name.
pub async fn list_tiers(db: &impl ConnectionTrait) -> Result<Vec<TierRow>, StoreError> {
    let rows = tiers::Entity::find().order_by_asc(tiers::Column::Name).all(db).await?;
    Ok(rows.into_iter().map(TierRow::from).collect())
}

/// Deletes a tier; `NotFound` when there is none.
pub async fn delete_tier(db: &impl ConnectionTrait, name: &str) -> Result<(), StoreError> {
    let res = tiers::Entity::delete_by_id(name.to_owned()).exec(db).await?;
    if res.rows_affected == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}
