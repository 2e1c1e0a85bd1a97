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

/// The rows whose name starts with `prefix` (name, value).
pub async fn meta_with_prefix(db: &impl ConnectionTrait, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = meta::Entity::find().filter(meta::Column::Name.starts_with(prefix)).all(db).await?;
    Ok(rows.into_iter().map(|r| (r.name, r.value)).collect())
}

/// Sets a row (names are at most 64 characters), inserting it when absent.
pub async fn set_meta(db: &impl ConnectionTrait, name: &str, value: i64) -> Result<(), StoreError> {
    use sea_orm::sea_query::OnConflict;
    use sea_orm::{ActiveValue::Set, EntityTrait as _};
    let row = meta::ActiveModel { name: Set(name.to_owned()), value: Set(value) };
    meta::Entity::insert(row)
        .on_conflict(OnConflict::column(meta::Column::Name).update_column(meta::Column::Value).to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(())
}
