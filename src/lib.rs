pub mod config;
pub mod error;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod types;
pub mod upstream;
pub mod catalog;
