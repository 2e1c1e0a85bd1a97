//! Write-side business rules for users, tiers, tokens and prices, and first-start bootstrap. Every change that
//! nodes must see bumps the stored catalog version and announces it through shared state.
//!
//! Architecture Invariant: used by the CLI, the admin API and the dashboard; never by the proxy.

mod cache;
mod login;
mod prices;
mod tiers;
mod tokens;
mod user_catalog;
mod users;

use std::sync::Arc;

use crate::shared::SharedState;
use crate::store::{self, Store, StoreError};

pub use login::{BAD_LOGIN, OidcIdentity, password_matches};
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
    /// Too many changes or attempts; retry after so many seconds.
    #[error("{0}")]
    Throttled(String, u64),
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
    /// The configured (global) broker providers' ids.
    brokers: Arc<Vec<String>>,
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
            brokers: Arc::default(),
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

    /// With the configured providers: worker tokens are checked against its broker providers.
    #[must_use]
    pub fn with_providers(mut self, providers: &[crate::config::ProviderConfig]) -> Self {
        self.brokers = Arc::new(
            providers.iter().filter(|p| p.kind == crate::types::ProviderKind::Broker).map(|p| p.id.clone()).collect(),
        );
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
    /// The live nodes of the cluster (those heartbeating), each with what it announces, by id.
    pub async fn cluster_nodes(&self) -> Result<Vec<serde_json::Value>, crate::shared::SharedError> {
        let ids = self.shared.slot_holders(crate::shared::NODES_KEY).await.inspect_err(|e| {
            tracing::warn!(error = %e, "Node registry unreachable.");
        })?;
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let info = self.shared.kv_get(&crate::shared::node_info_key(&id)).await.ok().flatten();
            let info: serde_json::Value =
                info.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| serde_json::json!({"id": id}));
            nodes.push(info);
        }
        nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(nodes)
    }

    /// Which shared state the cluster uses (`memory` or `redis`).
    pub fn shared_kind(&self) -> &'static str {
        self.shared.kind()
    }

    /// Counts one write of `user_id`'s own catalog or tokens against
    /// `tenant_limits.writes_per_minute` (cluster-wide through the shared state; an unreachable
    /// shared state does not block writes, which need the database anyway).
    pub async fn tenant_write(&self, user_id: i64) -> Result<(), ControlError> {
        let limit = u64::from(self.limits.writes_per_minute);
        let key = format!("mewrites:{user_id}");
        match self.shared.window_add(&key, 60_000, 1, Some(limit)).await {
            Ok(o) if !o.allowed => Err(ControlError::Throttled(
                format!("At most {limit} changes a minute (tenant_limits.writes_per_minute)."),
                o.reset_ms.div_ceil(1_000).max(1),
            )),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "Shared store unreachable; tenant writes are not counted.");
                Ok(())
            }
        }
    }

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
