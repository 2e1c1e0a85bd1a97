//! Write-side business rules for users, tiers, tokens and prices, and first-start bootstrap. Every change that
//! nodes must see bumps the stored catalog version and announces it through shared state.
//!
//! Architecture Invariant: used by the CLI, the admin API and the dashboard; never by the proxy.

mod prices;
mod tiers;
mod tokens;
mod user_catalog;
mod users;

use std::sync::Arc;

use crate::shared::SharedState;
use crate::store::{self, Store, StoreError};

pub use prices::validate_price;
pub use tiers::validate_tier;
pub use tokens::{NewTokenRequest, child_within, mint_token, subtree_of};
pub use user_catalog::ObjectKind;
pub use users::{Bootstrap, hash_password};

/// Why a control operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The object exists already.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The control plane's services.
#[derive(Clone)]
pub struct Control {
    store: Store,
    shared: Arc<dyn SharedState>,
    master: Option<crate::crypto::MasterKey>,
    allowlist: Arc<Vec<String>>,
    limits: crate::config::TenantLimits,
    /// Creations bounded by `limits` are counted and stored one at a time on this node, so
    /// concurrent writes cannot pass a cap together (across nodes, by at most one per node).
    pub(crate) bounded_writes: Arc<tokio::sync::Mutex<()>>,
}

impl Control {
    /// Control over `store`, announcing through `shared`.
    pub fn new(store: Store, shared: Arc<dyn SharedState>) -> Self {
        Self {
            store,
            shared,
            master: None,
            allowlist: Arc::new(Vec::new()),
            limits: crate::config::TenantLimits::default(),
            bounded_writes: Arc::default(),
        }
    }

    /// With the master key (to seal users' provider keys) and the endpoint allowlist of the
    /// SSRF guard, from `[security]`.
    pub fn with_security(mut self, settings: &crate::config::SecuritySettings) -> Result<Self, ControlError> {
        self.master = match settings.master_key_value().map_err(ControlError::Invalid)? {
            Some(k) => Some(crate::crypto::MasterKey::parse(&k).map_err(|e| ControlError::Invalid(e.to_string()))?),
            None => None,
        };
        self.allowlist = Arc::new(settings.endpoint_allowlist.clone());
        Ok(self)
    }

    /// With `[tenant_limits]`: what one user may keep in the catalog and how fast they may change it.
    #[must_use]
    pub fn with_tenant_limits(mut self, limits: &crate::config::TenantLimits) -> Self {
        self.limits = limits.clone();
        self
    }

    /// The tenant limits in force.
    pub fn tenant_limits(&self) -> &crate::config::TenantLimits {
        &self.limits
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bumps and announces the catalog version. An announcement that fails is only logged:
    /// every node also polls the stored version.
    async fn changed(&self) -> Result<(), ControlError> {
        let v = store::bump_catalog_version(self.store.conn()).await?;
        if let Err(e) = self.shared.publish_catalog_version(v).await {
            tracing::warn!(error = %e, "Catalog change stored but not announced; nodes will see it on their next poll.");
        }
        Ok(())
    }
}

/// Random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ControlError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| ControlError::Invalid(format!("no randomness available: {e}")))?;
    Ok(buf)
}
