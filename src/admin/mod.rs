//! The admin JSON API under `/admin/api/` (admin tokens) and self-service under `/api/me/` (any
//! token, own objects only): thin handlers over `control` and accounting reports.
//!
//! Architecture Invariant: never imports `proxy` or `dashboard`; authenticates through the
//! catalog like the data plane, authorises with [`Admin`] / [`Me`] extractors, and every write
//! goes through `control` (which validates and announces the change to every node).

pub mod context;
mod me;
mod resources;

use actix_web::web;

use crate::error::{ApiError, Code};

pub use context::{Admin, AdminState, Me};

/// JSON bodies of the admin plane: strict (unknown fields refused), size-capped, and every
/// rejection in the API's error shape.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(64 * 1024).error_handler(|err, _| {
        // The server's pacing of request bodies fails a trickled body with a timeout.
        if let actix_web::error::JsonPayloadError::Payload(actix_web::error::PayloadError::Io(io)) = &err
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ApiError::new(Code::RequestTimeout, "The request body arrived too slowly.").into();
        }
        let msg: String = err.to_string().chars().take(300).collect();
        ApiError::new(Code::InvalidRequest, format!("Invalid JSON body: {msg}")).into()
    })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let msg: String = err.to_string().chars().take(300).collect();
        ApiError::new(Code::InvalidRequest, format!("Invalid query: {msg}")).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::new(Code::NotFound, "No such object.").into())
}

/// Registers `/admin/api/…` and `/api/me/…`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/api")
            .app_data(json_config())
            .app_data(query_config())
            .app_data(path_config())
            .configure(resources::configure),
    )
    .service(
        web::scope("/api/me")
            .app_data(json_config())
            .app_data(query_config())
            .app_data(path_config())
            .configure(me::configure),
    );
}
