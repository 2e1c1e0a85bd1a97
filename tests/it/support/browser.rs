//! A cookie-keeping HTTP client that submits the dashboard's forms as a browser would (no
//! JavaScript is needed), for the dashboard's and OIDC tests.

use std::collections::BTreeMap;

use crate::support::Resp;

/// Sends a request without following redirects (the tests look at each one).
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> Resp {
    let client = awc::Client::builder().disable_redirects().disable_timeout().finish();
    let mut req = client.request(awc::http::Method::from_bytes(method.as_bytes()).expect("method"), url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send_body(body.into()).await.expect("request");
    let status = res.status().as_u16();
    let mut headers = Vec::new();
    for (k, v) in res.headers() {
        headers.push((k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()));
    }
    let body = res.body().limit(64 * 1024 * 1024).await.expect("body");
    Resp { status, headers, body }
}

/// A browser: cookies by name, and the origin its forms are sent from.
#[derive(Clone, Default)]
pub struct Browser {
    pub cookies: BTreeMap<String, String>,
    /// Sent as `Origin` with every POST (`None`: no Origin header).
    pub origin: Option<String>,
}

impl Browser {
    pub fn new(origin: &str) -> Self {
        Self { cookies: BTreeMap::new(), origin: Some(origin.to_owned()) }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// Keeps the cookies an answer sets (an empty value or `Max-Age=0` removes one).
    fn keep(&mut self, r: &Resp) {
        for (k, v) in &r.headers {
            if !k.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let first = v.split(';').next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else { continue };
            if value.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        let c = self.cookie_header();
        let r = send("GET", url, &[("cookie", &c)], "").await;
        self.keep(&r);
        r
    }

    /// Posts a form (`application/x-www-form-urlencoded`).
    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Resp {
        let c = self.cookie_header();
        let body = serde_urlencoded::to_string(form).expect("form");
        let mut headers = vec![("cookie", c.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        let origin = self.origin.clone();
        if let Some(o) = origin.as_deref() {
            headers.push(("origin", o));
        }
        let r = send("POST", url, &headers, body).await;
        self.keep(&r);
        r
    }
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_of(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([^"]+)""#).expect("regex");
    re.captures(html).and_then(|c| c.get(1)).map(|m| m.as_str().to_owned()).unwrap_or_default()
}

/// Signs in with a password; returns the answer to the login form.
pub async fn login(b: &mut Browser, base: &str, user: &str, password: &str) -> Resp {
    let page = b.get(&format!("{base}/dashboard/login")).await;
    let csrf = csrf_of(&page.text());
    b.post(&format!("{base}/dashboard/login"), &[("username", user), ("password", password), ("csrf", &csrf)]).await
}
