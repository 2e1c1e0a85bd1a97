//! What every page shares: the frame around it (who is signed in, the menu, the logout form's
//! CSRF token), rendering, and the stylesheet.

use actix_web::HttpResponse;
use askama::Template;

use crate::dashboard::errors::DashError;
use crate::dashboard::session::Principal;

/// A menu entry.
pub struct NavItem {
    /// Link.
    pub href: &'static str,
    /// Text.
    pub label: &'static str,
    /// The current page.
    pub active: bool,
}

/// The frame of a signed-in page.
pub struct Frame {
    /// Who is signed in.
    pub username: String,
    /// Admin menu entries shown.
    pub is_admin: bool,
    /// The session's CSRF token, for every form on the page.
    pub csrf: String,
    /// The menu.
    pub nav: Vec<NavItem>,
    /// The page's title.
    pub title: String,
}

impl Frame {
    /// The frame of page `current` (its menu link) for `p`.
    pub fn new(p: &Principal, current: &str, title: impl Into<String>) -> Self {
        let mut items: Vec<(&'static str, &'static str)> = vec![
            ("/dashboard", "Overview"),
            ("/dashboard/usage", "Usage"),
            ("/dashboard/requests", "Requests"),
            ("/dashboard/tokens", "Tokens"),
            ("/dashboard/routes", "My routes"),
        ];
        if p.is_admin() {
            items.extend([
                ("/dashboard/users", "Users"),
                ("/dashboard/tiers", "Tiers"),
                ("/dashboard/prices", "Prices"),
                ("/dashboard/catalog", "Catalog"),
                ("/dashboard/cluster", "Cluster"),
            ]);
        }
        items.push(("/dashboard/account", "Account"));
        Self {
            username: p.username.clone(),
            is_admin: p.is_admin(),
            csrf: p.csrf.clone(),
            nav: items.into_iter().map(|(href, label)| NavItem { href, label, active: href == current }).collect(),
            title: title.into(),
        }
    }
}

/// A page as a 200 answer.
pub fn page(t: &impl Template) -> Result<HttpResponse, DashError> {
    let html = t.render().map_err(|e| {
        tracing::error!(error = %e, "A dashboard template failed to render.");
        DashError::Unavailable
    })?;
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html))
}

/// A 303 to `to` (after a form).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((actix_web::http::header::LOCATION, to.to_owned())).finish()
}

/// `GET /dashboard/static/style.css`.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../../templates/style.css"))
}

/// A time (ms since the epoch) as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// An amount of USD for display.
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".to_owned()
    } else if v.abs() < 0.01 {
        format!("${v:.6}")
    } else {
        format!("${v:.2}")
    }
}

/// A count with thousands separators.
pub fn count(v: i64) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(1.5), "$1.50");
        assert_eq!(usd(0.000_25), "$0.000250");
        assert_eq!(time(0), "1970-01-01 00:00:00");
    }
}
