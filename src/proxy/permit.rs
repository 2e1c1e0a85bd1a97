//! What routes a caller may reach: its token, every token above it (a child token is held to its
//! ancestors' current scopes), and its tier. Every route actually called is checked.

use std::sync::Arc;

use crate::catalog::TokenEntry;
use crate::error::{ApiError, Code};
use crate::store::TierRow;

/// The caller's token, its ancestors (parent first) and its owner's tier.
#[derive(Clone, Debug)]
pub struct Permit {
    /// The caller's token.
    pub token: Arc<TokenEntry>,
    /// The tokens above it, parent first.
    pub ancestors: Vec<Arc<TokenEntry>>,
    /// The owner's tier.
    pub tier: Option<Arc<TierRow>>,
}

impl Permit {
    /// Whether `route` (a canonical route name) may be called.
    pub fn allows(&self, route: &str) -> bool {
        self.check(route).is_ok()
    }

    /// `Ok` when `route` may be called, else the 403 that says who forbids it.
    pub fn check(&self, route: &str) -> Result<(), ApiError> {
        if !self.token.may_use(route) || !self.ancestors.iter().all(|a| a.may_use(route)) {
            return Err(ApiError::new(Code::PermissionDenied, format!("This token may not use the route `{route}`.")));
        }
        if let Some(t) = &self.tier
            && let Some(globs) = &t.routes
            && !globs.iter().any(|g| crate::types::glob_match(g, route))
        {
            return Err(ApiError::new(
                Code::PermissionDenied,
                format!("The tier `{}` does not include the route `{route}`.", t.name),
            ));
        }
        Ok(())
    }
}
