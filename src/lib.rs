pub mod config;
pub mod error;
pub mod shared;
pub mod store;
pub mod types;
