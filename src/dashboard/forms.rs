//! State-changing requests: they must come from the dashboard's own origin, and carry the
//! session's CSRF token in a form field `csrf` ([`Form`]); else 403 and nothing changes.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use crate::dashboard::errors::DashError;
use crate::dashboard::session::Principal;
use crate::dashboard::state::origin_of;

/// Whether two secrets are equal, in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The origin a request must come from: `server.public_url`'s, else the request's own.
fn expected_origin(req: &HttpRequest, public: Option<&str>) -> String {
    match public {
        Some(p) => p.to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host()).to_ascii_lowercase()
        }
    }
}

/// Whether a state-changing request comes from the dashboard's origin: its `Origin` (else its
/// `Referer`) must name it; a request with neither is judged by its CSRF token alone.
pub fn same_origin(req: &HttpRequest, public: Option<&str>) -> bool {
    let h = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let claimed = match (h(header::ORIGIN), h(header::REFERER)) {
        (Some(o), _) => Some(origin_of(o)),
        (None, Some(r)) => Some(origin_of(r)),
        (None, None) => None,
    };
    match claimed {
        None => true,
        Some(None) => false,
        Some(Some(o)) => o == expected_origin(req, public),
    }
}

/// A dashboard form: the body (`application/x-www-form-urlencoded`) of a request whose `csrf`
/// field is the session's token.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Form<T> {
    type Error = DashError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, DashError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body.await.map_err(|_| DashError::Invalid("The form could not be read.".into()))?;
            let Some(p) = principal else { return Err(DashError::Forbidden("Sign in first.".into())) };
            if !is_form {
                return Err(DashError::Forbidden("Dashboard changes come from its forms.".into()));
            }
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
                .map_err(|_| DashError::Invalid("The form could not be read.".into()))?;
            let given = pairs.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
            if !same_secret(given, &p.csrf) {
                return Err(DashError::Forbidden(
                    "This form has expired or came from elsewhere; reload the page and try again.".into(),
                ));
            }
            let t = serde_urlencoded::from_bytes(&body).map_err(|e| {
                let m: String = e.to_string().chars().take(200).collect();
                DashError::Invalid(format!("The form is incomplete: {m}"))
            })?;
            Ok(Self(t))
        })
    }
}

/// A form with nothing but its CSRF token (a button).
#[derive(serde::Deserialize)]
pub struct Nothing {}

/// An optional number typed into a form: empty is `None`.
pub fn opt<T: FromStr>(field: &str, v: &str) -> Result<Option<T>, DashError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| DashError::Invalid(format!("`{field}` must be a number, not `{v}`.")))
}

/// An optional text typed into a form: empty is `None`.
pub fn opt_text(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() { None } else { Some(v.to_owned()) }
}

/// A comma- or line-separated list typed into a form.
pub fn list(v: &str) -> Vec<String> {
    v.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "gw.example.com:8080"))
            .insert_header((header::ORIGIN, "http://gw.example.com:8080"))
            .to_http_request();
        assert!(same_origin(&req, None));
        assert!(!same_origin(&req, Some("https://gw.example.com")));
        let evil = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "gw.example.com:8080"))
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!same_origin(&evil, None));
        let null = actix_web::test::TestRequest::default().insert_header((header::ORIGIN, "null")).to_http_request();
        assert!(!same_origin(&null, None));
        let referer = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "gw"))
            .insert_header((header::REFERER, "http://gw/dashboard/tokens?x=1"))
            .to_http_request();
        assert!(same_origin(&referer, None));
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert!(same_origin(&none, None));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("", ""));
        assert!(!same_secret("abc", "abd"));
    }

    #[test]
    fn form_values() {
        assert_eq!(opt::<i64>("rpm", " 60 ").unwrap(), Some(60));
        assert_eq!(opt::<i64>("rpm", "").unwrap(), None);
        assert!(opt::<i64>("rpm", "x").is_err());
        assert_eq!(list("a, b\nc,,"), vec!["a", "b", "c"]);
    }
}
