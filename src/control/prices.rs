use crate::config::Settings;
use crate::control::{Control, ControlError};
use crate::store::{self, PriceRow, StoreError};

/// Checks a price: a model name, finite non-negative prices, a valid provider id or none.
pub fn validate_price(p: &PriceRow) -> Result<(), ControlError> {
    if p.model.trim().is_empty() || p.model.len() > 255 {
        return Err(ControlError::Invalid("the model name must be 1–255 characters".into()));
    }
    if !p.provider.is_empty() && !crate::types::is_valid_provider_id(&p.provider) {
        return Err(ControlError::Invalid(format!("`{}` is not a valid provider id", p.provider)));
    }
    let prices =
        [Some(p.input_per_million), Some(p.output_per_million), p.cached_input_per_million, p.cache_write_per_million];
    if prices.into_iter().flatten().any(|v| !v.is_finite() || v < 0.0) {
        return Err(ControlError::Invalid("prices must be numbers, 0 or more (USD per 1M tokens)".into()));
    }
    if p.aliases.iter().any(|a| a.trim().is_empty() || a.len() > 255 || *a == p.model) {
        return Err(ControlError::Invalid("aliases must be other model names of 1–255 characters".into()));
    }
    Ok(())
}

impl Control {
    /// Creates or replaces a price; new usage records are priced with it at once.
    pub async fn put_price(&self, p: &PriceRow) -> Result<PriceRow, ControlError> {
        validate_price(p)?;
        let row = store::put_price(self.store.conn(), p).await?;
        self.changed().await?;
        Ok(row)
    }

    /// The price of `model` (for `provider`, or for every provider when empty).
    pub async fn get_price(&self, model: &str, provider: &str) -> Result<PriceRow, ControlError> {
        store::find_price(self.store.conn(), model, provider)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no price for `{model}`")))
    }

    /// Every price.
    pub async fn list_prices(&self) -> Result<Vec<PriceRow>, ControlError> {
        Ok(store::list_prices(self.store.conn()).await?)
    }

    /// Deletes a price.
    pub async fn delete_price(&self, model: &str, provider: &str) -> Result<(), ControlError> {
        store::delete_price(self.store.conn(), model, provider).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no price for `{model}`")),
            other => ControlError::Store(other),
        })?;
        self.changed().await
    }

    /// Seeds the price table from `[[prices]]`: a price not stored yet is added; a stored one is
    /// kept (the CLI and admin API change prices at run time) and a difference is logged.
    pub async fn seed_prices(&self, settings: &Settings) -> Result<usize, ControlError> {
        let mut added = 0;
        for p in &settings.prices {
            let row = PriceRow {
                model: p.model.clone(),
                provider: p.provider.clone().unwrap_or_default(),
                input_per_million: p.input_per_million,
                output_per_million: p.output_per_million,
                cached_input_per_million: p.cached_input_per_million,
                cache_write_per_million: p.cache_write_per_million,
                aliases: p.aliases.clone(),
            };
            match store::find_price(self.store.conn(), &row.model, &row.provider).await? {
                None => {
                    validate_price(&row)?;
                    match store::put_price(self.store.conn(), &row).await {
                        Ok(_) => added += 1,
                        // Another node seeded it at the same moment.
                        Err(StoreError::Conflict) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(stored) if stored != row => tracing::warn!(
                    model = %row.model,
                    "The stored price differs from [[prices]] in the configuration; keeping the stored one \
                     (change it with `switchyard price set`)."
                ),
                Some(_) => {}
            }
        }
        if added > 0 {
            self.changed().await?;
        }
        Ok(added)
    }
}
