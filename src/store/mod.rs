//! All SQL: connecting, migrating, and one file per aggregate. Functions take
//! `&impl ConnectionTrait` so callers may pass a transaction, and return plain row types.
//!
//! Architecture Invariant: the only module (with `migration/`) that names `sea_orm`.

mod db;
pub mod entity;
mod meta;
mod prices;
mod rollups;
mod tiers;
mod tokens;
mod usage;
mod user_objects;
mod users;

pub use db::{Backend, Store};
pub use meta::{bump_catalog_version, catalog_version, meta_with_prefix, set_meta};
pub use prices::{PriceRow, delete_price, find_price, list_prices, put_price};
pub use rollups::{
    BUCKETS, Dimension, LATENCY_BOUNDS_MS, RollupFilter, RollupGroup, Span, Sums, latency_bucket, query_rollups,
};
pub use tiers::{TierRow, delete_tier, find_tier, list_tiers, put_tier};
pub use tokens::{
    NewToken, TokenRow, TokenScopeChange, create_token, find_token, find_token_by_hash, list_active_tokens,
    list_tokens, revoke_token, touch_tokens, update_token_scope,
};
pub use usage::{
    UsageFilter, UsageRow, child_usage, count_usage, find_usage, insert_usage_batch, list_usage, page_usage,
    query_usage, sum_cost,
};
pub use user_objects::{
    UserObjectRow, count_sealed_keys, delete_user_object, find_user_object, list_user_objects, put_user_object,
};
pub use users::{
    NewUser, UserChange, UserRow, count_users, count_users_on_tier, create_user, find_user, find_user_by_id,
    find_user_by_identity, find_users_by_email, list_users, set_user_status, set_user_tier, update_user,
};

pub use sea_orm::ConnectionTrait as Conn;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already holds this value.
    #[error("already exists")]
    Conflict,
    /// No such row.
    #[error("not found")]
    NotFound,
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl StoreError {
    fn from_db(e: sea_orm::DbErr) -> Self {
        match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Self::Conflict,
            _ => Self::Db(e),
        }
    }
}

/// Converts a count into the `i64` the store keeps, saturating.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
