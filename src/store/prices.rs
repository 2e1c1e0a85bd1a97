use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::store::StoreError;
use crate::store::entity::prices;
use crate::types::now_ms;

/// One price: USD per 1M tokens for a model, for every provider (`provider` empty) or one.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PriceRow {
    /// Model name.
    pub model: String,
    /// Provider id, or empty for every provider.
    #[serde(default)]
    pub provider: String,
    /// USD per 1M input tokens.
    pub input_per_million: f64,
    /// USD per 1M output tokens.
    pub output_per_million: f64,
    /// USD per 1M cached input tokens (default: the input price).
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// USD per 1M input tokens written to the prompt cache (default: the input price).
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
    /// Other names of the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl From<prices::Model> for PriceRow {
    fn from(m: prices::Model) -> Self {
        Self {
            model: m.model,
            provider: m.provider,
            input_per_million: m.input_per_million,
            output_per_million: m.output_per_million,
            cached_input_per_million: m.cached_input_per_million,
            cache_write_per_million: m.cache_write_per_million,
            aliases: m.aliases.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default(),
        }
    }
}

/// Creates or replaces the price of (`model`, `provider`).
pub async fn put_price(db: &impl ConnectionTrait, p: &PriceRow) -> Result<PriceRow, StoreError> {
    let existing = prices::Entity::find()
        .filter(prices::Column::Model.eq(p.model.as_str()))
        .filter(prices::Column::Provider.eq(p.provider.as_str()))
        .one(db)
        .await?;
    let aliases = (!p.aliases.is_empty()).then(|| serde_json::to_string(&p.aliases).unwrap_or_else(|_| "[]".into()));
    let mut am = prices::ActiveModel {
        model: Set(p.model.clone()),
        provider: Set(p.provider.clone()),
        input_per_million: Set(p.input_per_million),
        output_per_million: Set(p.output_per_million),
        cached_input_per_million: Set(p.cached_input_per_million),
        cache_write_per_million: Set(p.cache_write_per_million),
        aliases: Set(aliases),
        updated_at: Set(now_ms()),
        ..Default::default()
    };
    let saved = match existing {
        Some(old) => {
            am.id = Set(old.id);
            am.update(db).await?
        }
        None => am.insert(db).await.map_err(StoreError::from_db)?,
    };
    Ok(saved.into())
}

/// Every price, by model then provider.
pub async fn list_prices(db: &impl ConnectionTrait) -> Result<Vec<PriceRow>, StoreError> {
    let rows = prices::Entity::find()
        .order_by_asc(prices::Column::Model)
        .order_by_asc(prices::Column::Provider)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(PriceRow::from).collect())
}

/// The price of (`model`, `provider`) exactly as stored.
pub async fn find_price(
    db: &impl ConnectionTrait,
    model: &str,
    provider: &str,
) -> Result<Option<PriceRow>, StoreError> {
    let row = prices::Entity::find()
        .filter(prices::Column::Model.eq(model))
        .filter(prices::Column::Provider.eq(provider))
        .one(db)
        .await?;
    Ok(row.map(PriceRow::from))
}

/// Deletes the price of (`model`, `provider`); `NotFound` when there is none.
pub async fn delete_price(db: &impl ConnectionTrait, model: &str, provider: &str) -> Result<(), StoreError> {
    let res = prices::Entity::delete_many()
        .filter(prices::Column::Model.eq(model))
        .filter(prices::Column::Provider.eq(provider))
        .exec(db)
        .await?;
    if res.rows_affected == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}
