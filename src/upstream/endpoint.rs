//! A provider's base URL, parsed once, when the catalog is built: what every request to it needs
//! — the connection pool's key, the `Host` value, the path below which the dialect's paths go —
//! is derived here, not per request.

use std::sync::Arc;

/// A provider's base URL and what requests to it need.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// As configured, without a trailing slash.
    pub url: String,
    parsed: Option<Parsed>,
}

/// The parts of a valid `http`/`https` base URL.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// `scheme://authority/`: what a new connection is made to.
    pub origin: http::Uri,
    /// `scheme://authority`: connections are pooled by it.
    pub key: Arc<str>,
    /// The `Host` header's value.
    pub host: http::HeaderValue,
    /// The base URL's path, without a trailing slash (empty for none).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `url` (a trailing slash is dropped). One that is not a valid `http`/`https` URL
    /// without a query is kept, and every request to it fails as a connection failure.
    pub fn parse(url: &str) -> Self {
        let url = url.trim_end_matches('/').to_owned();
        let parsed = Self::parts_of(&url);
        Self { url, parsed }
    }

    fn parts_of(url: &str) -> Option<Parsed> {
        let uri: http::Uri = url.parse().ok()?;
        let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
        if !matches!(scheme, "http" | "https") || uri.query().is_some() {
            return None;
        }
        Some(Parsed {
            origin: format!("{scheme}://{authority}/").parse().ok()?,
            key: Arc::from(format!("{scheme}://{authority}")),
            host: http::HeaderValue::from_str(authority.as_str()).ok()?,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Its parts, when it is a valid URL.
    pub fn parts(&self) -> Option<&Parsed> {
        self.parsed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn a_base_url_is_parsed_once_into_what_requests_need() {
        let e = Endpoint::parse("http://127.0.0.1:8080/v1/");
        assert_eq!(e.url, "http://127.0.0.1:8080/v1");
        let p = e.parts().expect("valid");
        assert_eq!(
            (&*p.key, p.host.to_str().unwrap(), p.prefix.as_str()),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", "/v1")
        );
        assert_eq!(p.origin.to_string(), "http://127.0.0.1:8080/");
        let bare = Endpoint::parse("https://api.example.com");
        assert_eq!(bare.parts().map(|p| p.prefix.as_str()), Some(""));
        for bad in ["not a url", "ftp://h/x", "http://h/v1?x=1", "/v1", ""] {
            assert!(Endpoint::parse(bad).parts().is_none(), "{bad}");
        }
    }
}
