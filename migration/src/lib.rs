//! Schema migrations, in order. A shipped migration is never edited; each declares its own
//! identifiers and never imports entities, so old migrations keep their meaning.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_tokens;
mod m20261122_000003_create_usage_records;
mod m20261122_000004_create_meta;
mod m20261122_000005_add_usage_routing;
mod m20261122_000006_create_tiers_and_prices;
mod m20261122_000007_add_usage_source;
mod m20261122_000008_add_token_parent;
mod m20261122_000009_create_user_objects;
mod m20261129_000010_add_usage_parent;
mod m20261207_000011_add_cache_write;
mod m20261207_000012_create_usage_rollups;
mod m20261207_000013_add_user_identity;
mod m20261208_000014_add_token_worker;

/// Applies the migrations of this crate.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_tokens::Migration),
            Box::new(m20261122_000003_create_usage_records::Migration),
            Box::new(m20261122_000004_create_meta::Migration),
            Box::new(m20261122_000005_add_usage_routing::Migration),
            Box::new(m20261122_000006_create_tiers_and_prices::Migration),
            Box::new(m20261122_000007_add_usage_source::Migration),
            Box::new(m20261122_000008_add_token_parent::Migration),
            Box::new(m20261122_000009_create_user_objects::Migration),
            Box::new(m20261129_000010_add_usage_parent::Migration),
            Box::new(m20261207_000011_add_cache_write::Migration),
            Box::new(m20261207_000012_create_usage_rollups::Migration),
            Box::new(m20261207_000013_add_user_identity::Migration),
            Box::new(m20261208_000014_add_token_worker::Migration),
        ]
    }
}
