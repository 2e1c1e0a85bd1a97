//! Response-cache purges: a mark in the store, announced like any catalog change, so every node
//! (and an embedded node's in-process cache, whoever asks) stops serving what it covers.

use crate::catalog::purges::{PurgeScope, mark_name, route_tag};
use crate::control::{Control, ControlError};
use crate::store;

impl Control {
    /// Purges the cached answers of `username` (their own entries, not those of `global` routes)
    /// and/or of `route` (as resolved: `rotation/coding`, `provider/x/m`, `user-rotation/r`);
    /// neither: every entry. Returns what the purge covers (for removing the entries from the
    /// store now; the mark already keeps them from being served).
    pub async fn purge_cache(&self, username: Option<&str>, route: Option<&str>) -> Result<PurgeScope, ControlError> {
        let user = match username {
            Some(name) => Some(self.get_user(name).await?.id),
            None => None,
        };
        if let Some(r) = route
            && (r.is_empty() || r.len() > 512 || r.chars().any(char::is_control))
        {
            return Err(ControlError::Invalid("`route` must be a route name of 1–512 printable characters".into()));
        }
        let scope = match (user, route.map(route_tag)) {
            (None, None) => PurgeScope::All,
            (Some(u), None) => PurgeScope::User(u),
            (None, Some(r)) => PurgeScope::Route(r),
            (Some(u), Some(r)) => PurgeScope::UserRoute(u, r),
        };
        store::set_meta(self.store.conn(), &mark_name(scope), crate::types::now_ms()).await?;
        self.changed().await?;
        Ok(scope)
    }
}
