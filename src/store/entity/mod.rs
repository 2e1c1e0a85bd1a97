//! sea-orm entities, one file per table. Only `store` may use them.

pub mod meta;
pub mod prices;
pub mod tiers;
pub mod tokens;
pub mod usage_records;
pub mod user_objects;
pub mod users;
