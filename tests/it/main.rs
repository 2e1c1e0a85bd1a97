//! The one integration-test binary (one link step matters on a 2-core machine). Services come
//! from `tests/run.sh`, which exports their URLs; tests that need one fail loudly without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::allow_attributes,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test code"
)]

mod admin;
mod auth;
mod autoselect;
mod broker;
mod browser;
mod cache;
mod chat;
mod cli;
mod cluster;
mod config;
mod dashboard;
mod dialects;
mod errors;
mod faults;
mod hardening;
mod injection;
mod layering;
mod ledger;
mod limits;
mod nginx;
mod oidc;
mod prices;
mod quotas;
mod rotations;
mod secrets;
mod shared;
mod shutdown;
mod store;
mod support;
mod traces;
mod upstream_faults;
mod user_catalog;
