//! The dashboard's refusals, as HTML pages (never the API's JSON).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::control::ControlError;

/// Why a dashboard request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    /// No such page or object (also: someone else's object).
    #[error("Not found.")]
    NotFound,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The object exists already.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; retry after so many seconds.
    #[error("{0}")]
    Throttled(String, u64),
    /// The database or the shared state is unreachable.
    #[error("The gateway cannot reach its database or shared state right now; try again shortly.")]
    Unavailable,
}

impl DashError {
    /// The admin-only refusal.
    pub fn admins_only() -> Self {
        Self::Forbidden("Only administrators may open this page.".into())
    }
}

impl From<ControlError> for DashError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(m) => Self::Invalid(m),
            ControlError::NotFound(_) => Self::NotFound,
            ControlError::Conflict(m) => Self::Conflict(m),
            ControlError::Forbidden(m) => Self::Forbidden(m),
            ControlError::Throttled(m, s) => Self::Throttled(m, s),
            ControlError::Store(e) => {
                tracing::error!(error = %e, "Store failure in the dashboard.");
                Self::Unavailable
            }
        }
    }
}

impl From<crate::accounting::report::ReportError> for DashError {
    fn from(e: crate::accounting::report::ReportError) -> Self {
        match e {
            crate::accounting::report::ReportError::TooMany => Self::Invalid(e.to_string()),
            crate::accounting::report::ReportError::Store(e) => {
                tracing::error!(error = %e, "Store failure in a dashboard report.");
                Self::Unavailable
            }
        }
    }
}

impl From<crate::store::StoreError> for DashError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Store failure in the dashboard.");
        Self::Unavailable
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for DashError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Throttled(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.to_string(),
        };
        let mut res = HttpResponse::build(status);
        if let Self::Throttled(_, secs) = self {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        match page.render() {
            Ok(html) => res.content_type("text/html; charset=utf-8").body(html),
            Err(_) => res.content_type("text/plain; charset=utf-8").body(self.to_string()),
        }
    }
}
