//! The data plane's one error type and its code table (SPEC §2).
//!
//! Every error a client sees is built here and rendered as
//! `{"error":{"message","type","code","param"}}`. 5xx messages are generic: the cause is logged
//! once where the error is built, never sent to the client.
//!
//! Architecture Invariant: depends on `types` only (plus actix-web for `ResponseError`).

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One row of the error table: the HTTP status, OpenAI `type` and `code` of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 400: malformed JSON, wrong types, over a limit.
    InvalidRequest,
    /// 400: a required field is absent.
    MissingParameter,
    /// 401: missing, unknown or revoked token.
    InvalidToken,
    /// 401: the token's expiry has passed.
    TokenExpired,
    /// 402: quota or budget spent.
    InsufficientQuota,
    /// 403: the token may not use this namespace, route or model.
    PermissionDenied,
    /// 403: a private request has no private target.
    PrivacyRouteUnavailable,
    /// 404: no such route for this user.
    ModelNotFound,
    /// 404: no such path or object.
    NotFound,
    /// 405: the path exists with another method.
    MethodNotAllowed,
    /// 408: the client did not send its request (head or body) in time.
    RequestTimeout,
    /// 409: the object exists already, or is in use.
    Conflict,
    /// 413: the body is over `server.max_body_bytes`.
    RequestTooLarge,
    /// 429: a rate, token or concurrency limit.
    RateLimitExceeded,
    /// 431: the request head is too large.
    HeadersTooLarge,
    /// 500: a bug or an internal failure.
    Internal,
    /// 502: every candidate failed.
    UpstreamError,
    /// 503: every candidate is cooling down or over capacity.
    NoAvailableUpstream,
    /// 503: a dependency of the gateway (database, shared state) is unavailable.
    ServiceUnavailable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
}

impl Code {
    /// `(status, type, code)` for this row.
    pub fn row(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::InvalidRequest => (400, "invalid_request_error", "invalid_request"),
            Self::MissingParameter => (400, "invalid_request_error", "missing_required_parameter"),
            Self::InvalidToken => (401, "authentication_error", "invalid_token"),
            Self::TokenExpired => (401, "authentication_error", "token_expired"),
            Self::InsufficientQuota => (402, "insufficient_quota", "insufficient_quota"),
            Self::PermissionDenied => (403, "permission_error", "permission_denied"),
            Self::PrivacyRouteUnavailable => (403, "permission_error", "privacy_route_unavailable"),
            Self::ModelNotFound => (404, "invalid_request_error", "model_not_found"),
            Self::NotFound => (404, "invalid_request_error", "not_found"),
            Self::MethodNotAllowed => (405, "invalid_request_error", "method_not_allowed"),
            Self::RequestTimeout => (408, "invalid_request_error", "request_timeout"),
            Self::Conflict => (409, "invalid_request_error", "conflict"),
            Self::RequestTooLarge => (413, "invalid_request_error", "request_too_large"),
            Self::RateLimitExceeded => (429, "rate_limit_error", "rate_limit_exceeded"),
            Self::HeadersTooLarge => (431, "invalid_request_error", "request_header_fields_too_large"),
            Self::Internal => (500, "server_error", "internal_error"),
            Self::UpstreamError => (502, "upstream_error", "upstream_error"),
            Self::NoAvailableUpstream => (503, "server_error", "no_available_upstream"),
            Self::ServiceUnavailable => (503, "server_error", "service_unavailable"),
            Self::UpstreamTimeout => (504, "upstream_error", "upstream_timeout"),
        }
    }

    /// The HTTP status of this row.
    pub fn status(self) -> u16 {
        self.row().0
    }
}

/// An error as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The table row.
    pub code: Code,
    /// A human-readable sentence; never contains secrets, upstream URLs or prompt text.
    pub message: String,
    /// The offending request field, as a JSON path (`messages[0].content`).
    pub param: Option<String>,
    /// Seconds for `Retry-After` (429 and some 503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), param: None, retry_after: None }
    }

    /// 400 naming the offending field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(Code::InvalidRequest, message) }
    }

    /// 400 `missing_required_parameter`.
    pub fn missing(param: &str) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(Code::MissingParameter, format!("Missing required parameter: '{param}'."))
        }
    }

    /// 404 with one answer for "unknown" and "not yours", so it is no existence oracle.
    pub fn model_not_found(model: &str) -> Self {
        let shown: String = model.chars().take(128).collect();
        Self::new(Code::ModelNotFound, format!("The model `{shown}` does not exist or you do not have access to it."))
    }

    /// 500 with a generic message; the caller logs the cause.
    pub fn internal() -> Self {
        Self::new(Code::Internal, "The gateway had an internal error. Retry the request.")
    }

    /// 503 for an unavailable dependency of the gateway itself.
    pub fn unavailable() -> Self {
        Self::new(Code::ServiceUnavailable, "The gateway is temporarily unable to serve requests. Retry shortly.")
    }

    /// Adds a `Retry-After` figure.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body of this error.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            r#type: &'static str,
            code: &'static str,
            param: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let (_, ty, code) = self.code.row();
        let outer = Outer { error: Inner { message: &self.message, r#type: ty, code, param: self.param.as_deref() } };
        serde_json::to_string(&outer).unwrap_or_else(|_| {
            String::from(
                r#"{"error":{"message":"internal error","type":"server_error","code":"internal_error","param":null}}"#,
            )
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, _, code) = self.code.row();
        write!(f, "{status} {code}: {}", self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.body(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::missing("messages");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "missing_required_parameter");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        let v: serde_json::Value = serde_json::from_str(&ApiError::internal().body()).unwrap();
        assert!(v["error"]["param"].is_null());
    }
}
