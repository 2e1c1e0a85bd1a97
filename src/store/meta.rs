use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::store::StoreError;
use crate::store::entity::meta;

const CATALOG_VERSION: &str = "catalog_version";

/// The stored catalog version: bumped by every change that nodes must reload.
pub async fn catalog_version(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let row = meta::Entity::find_by_id(CATALOG_VERSION.to_owned()).one(db).await?;
    Ok(row.map_or(0, |r| r.value))
}

/// Increments the catalog version and returns the new value.
pub async fn bump_catalog_version(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    meta::Entity::update_many()
        .col_expr(meta::Column::Value, Expr::col(meta::Column::Value).add(Expr::val(1i64)))
        .filter(meta::Column::Name.eq(CATALOG_VERSION))
        .exec(db)
        .await?;
    catalog_version(db).await
}
