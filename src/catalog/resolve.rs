//! Model-name resolution (SPEC §3).

use std::sync::Arc;

use crate::catalog::{ModelInfo, Provider, Snapshot, UserEntry};
use crate::error::{ApiError, Code};
use crate::types::RouteRef;

/// Where a request goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The provider.
    pub provider: Arc<Provider>,
    /// The provider's model.
    pub model: ModelInfo,
    /// The canonical route name (`provider/<id>/<model>`).
    pub route: String,
    /// Why this target (`X-Switchyard-Reason`).
    pub reason: &'static str,
}

impl Snapshot {
    /// Resolves a `model` string of a request.
    pub fn resolve(&self, requested: &str) -> Result<Target, ApiError> {
        if requested.is_empty() || requested.len() > 512 {
            return Err(ApiError::model_not_found(requested));
        }
        match RouteRef::parse(requested) {
            RouteRef::Provider { provider, model } => {
                self.resolve_direct(&provider, &model).map_err(|_| ApiError::model_not_found(requested))
            }
            RouteRef::Rotation(name) if self.rotations.contains(&name) => Err(not_served(requested, "rotation")),
            RouteRef::Autoselect(name) if self.autoselects.contains(&name) => Err(not_served(requested, "autoselect")),
            RouteRef::Bare(name) => self.resolve_bare(&name),
            _ => Err(ApiError::model_not_found(requested)),
        }
    }

    fn resolve_bare(&self, name: &str) -> Result<Target, ApiError> {
        if self.rotations.iter().any(|r| r == name) {
            return Err(not_served(name, "rotation"));
        }
        if self.autoselects.iter().any(|a| a == name) {
            return Err(not_served(name, "autoselect"));
        }
        let candidates: Vec<&Arc<Provider>> = self
            .provider_order
            .iter()
            .filter_map(|id| self.providers.get(id))
            .filter(|p| p.model(name).is_some())
            .collect();
        match candidates.as_slice() {
            [] => Err(ApiError::model_not_found(name)),
            [one] => self.resolve_direct(&one.id, name),
            many => {
                let names: Vec<String> = many.iter().map(|p| format!("provider/{}/{name}", p.id)).collect();
                Err(ApiError::invalid(
                    "model",
                    format!("The model `{name}` is ambiguous; name one of: {}.", names.join(", ")),
                ))
            }
        }
    }

    /// Resolves a provider's own model (`/api/{provider_id}/…` and `provider/<id>/<model>`).
    pub fn resolve_direct(&self, provider_id: &str, model: &str) -> Result<Target, ApiError> {
        let Some(provider) = self.providers.get(provider_id) else {
            return Err(ApiError::model_not_found(&format!("provider/{provider_id}/{model}")));
        };
        let Some(info) = provider.model(model) else {
            return Err(ApiError::model_not_found(&format!("provider/{provider_id}/{model}")));
        };
        Ok(Target {
            provider: Arc::clone(provider),
            model: info.clone(),
            route: format!("provider/{provider_id}/{model}"),
            reason: "direct",
        })
    }

    /// Every servable route, with the id of who provides it, in configuration order.
    pub fn routes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for id in self.provider_order.iter() {
            if let Some(p) = self.providers.get(id) {
                for m in &p.models {
                    out.push((format!("provider/{id}/{}", m.name), id.clone()));
                }
            }
        }
        out
    }

    /// Whether a provider id exists.
    pub fn has_provider(&self, id: &str) -> bool {
        self.providers.contains_key(id)
    }

    /// The user with this name.
    pub fn user(&self, username: &str) -> Option<Arc<UserEntry>> {
        self.users.get(username).cloned()
    }

    /// The user with this id.
    pub fn user_by_id(&self, id: i64) -> Option<Arc<UserEntry>> {
        self.users_by_id.get(&id).cloned()
    }
}

fn not_served(route: &str, kind: &str) -> ApiError {
    let shown: String = route.chars().take(128).collect();
    ApiError::new(
        Code::ModelNotFound,
        format!(
            "The route `{shown}` is a configured {kind}, but {kind} routing is not available in this version of Switchyard."
        ),
    )
}
