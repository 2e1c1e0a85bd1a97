//! The dashboard's state: what it reads and writes through, and its settings, resolved once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::control::Control;
use crate::dashboard::oidc;
use crate::shared::SharedState;

/// What the data plane sees of routing right now (cooldowns, in-flight, burst state), as JSON:
/// handed in by the composition root, since the dashboard may not import the proxy.
pub trait RoutingStatus: Send + Sync + 'static {
    /// The current status.
    fn status(&self) -> Pin<Box<dyn Future<Output = serde_json::Value> + '_>>;
}

/// What the dashboard needs.
#[derive(Clone)]
pub struct DashboardState {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) control: Control,
    pub(crate) shared: Arc<dyn SharedState>,
    pub(crate) routing: Arc<dyn RoutingStatus>,
    pub(crate) oidc: Option<Arc<oidc::Oidc>>,
    pub(crate) cfg: Arc<Config>,
}

/// The settings the dashboard reads, resolved once.
pub(crate) struct Config {
    /// Session lifetime (s).
    pub session_ttl_secs: u64,
    /// Login throttling.
    pub failures_per_user: u32,
    pub failures_per_address: u32,
    pub window_secs: u64,
    /// `scheme://host[:port]` of `server.public_url`, when set.
    pub public_origin: Option<String>,
    /// Cookies carry `Secure`.
    pub secure_cookies: bool,
}

impl DashboardState {
    /// The dashboard of a node.
    pub fn new(
        settings: &Settings,
        catalog: Arc<Catalog>,
        control: Control,
        shared: Arc<dyn SharedState>,
        routing: Arc<dyn RoutingStatus>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        let public = settings.server.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned());
        let public_origin = public.as_deref().and_then(origin_of);
        let oidc = match &settings.oidc {
            None => None,
            Some(o) => Some(Arc::new(oidc::Oidc::new(o, public.as_deref(), tls)?)),
        };
        let d = &settings.dashboard;
        Ok(Self {
            catalog,
            control,
            shared,
            routing,
            oidc,
            cfg: Arc::new(Config {
                session_ttl_secs: d.session_ttl_secs,
                failures_per_user: d.login_failures_per_user,
                failures_per_address: d.login_failures_per_address,
                window_secs: d.login_window_secs,
                secure_cookies: public.as_deref().is_some_and(|p| p.starts_with("https://")),
                public_origin,
            }),
        })
    }
}

/// `scheme://authority` of a URL, lowercase: what browsers send as `Origin`.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str()).to_ascii_lowercase())
}
