//! Users' own providers and rotations: validated like the configuration's tables, endpoints
//! checked by the SSRF guard, API keys sealed with the master key (bound to owner and provider),
//! stored as JSON, announced to every node like any catalog change.

use serde_json::{Map, Value, json};

use crate::config::{AutoselectConfig, ProviderConfig, RotationConfig, Settings};
use crate::control::{Control, ControlError};
use crate::store::{self, StoreError, UserObjectRow};
use crate::types::{ProviderKind, RouteRef, is_valid_provider_id};

/// What a user can own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `user-provider/<name>/<model>`.
    Provider,
    /// `user-rotation/<name>`.
    Rotation,
    /// `user-autoselect/<name>`.
    Autoselect,
}

impl ObjectKind {
    /// From a path segment: `providers`, `rotations`, `autoselects`.
    pub fn from_plural(s: &str) -> Option<Self> {
        match s {
            "providers" => Some(Self::Provider),
            "rotations" => Some(Self::Rotation),
            "autoselects" => Some(Self::Autoselect),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Rotation => "rotation",
            Self::Autoselect => "autoselect",
        }
    }
}

fn invalid(m: impl Into<String>) -> ControlError {
    ControlError::Invalid(m.into())
}

fn problems(settings: &Settings) -> Result<(), ControlError> {
    let found = crate::config::check(settings);
    if found.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    Err(invalid(lines.join("; ")))
}

/// A user's routes are theirs alone: their cached answers are never shared.
fn tenant_scoped(scopes: impl IntoIterator<Item = crate::config::CacheScope>) -> Result<(), ControlError> {
    if scopes.into_iter().any(|s| s == crate::config::CacheScope::Global) {
        return Err(invalid("`cache_scope = \"global\"` is for global routes; a user's routes cache per tenant"));
    }
    Ok(())
}

/// The provider specs among a user's objects.
fn provider_specs(objects: &[UserObjectRow]) -> Vec<ProviderConfig> {
    objects.iter().filter(|o| o.kind == "provider").filter_map(|o| serde_json::from_str(&o.spec).ok()).collect()
}

/// The object as shown: its spec, and for providers whether a key is stored (never the key).
fn shown(o: &UserObjectRow) -> Value {
    let spec: Value = serde_json::from_str(&o.spec).unwrap_or(Value::Null);
    let mut v = json!({"kind": o.kind, "name": o.name, "spec": spec});
    if o.kind == "provider" {
        v["has_api_key"] = json!(o.sealed_key.is_some());
    }
    v
}

impl Control {
    async fn owner_id(&self, username: &str) -> Result<i64, ControlError> {
        Ok(self.get_user(username).await?.id)
    }

    /// Creates or replaces one of `username`'s objects from its JSON (shaped like the
    /// configuration table; `api_key` of a provider is the key itself, sealed before storage —
    /// absent on a replacement, the stored key is kept).
    pub async fn put_user_object(
        &self,
        username: &str,
        kind: ObjectKind,
        name: &str,
        body: Value,
    ) -> Result<Value, ControlError> {
        let user_id = self.owner_id(username).await?;
        if !is_valid_provider_id(name) {
            return Err(invalid(format!("`{name}` is not a valid name: use [a-z0-9][a-z0-9_-]{{0,62}}")));
        }
        let Value::Object(mut body) = body else { return Err(invalid("the body must be a JSON object")) };
        let key_field = if kind == ObjectKind::Provider { "id" } else { "name" };
        match body.get(key_field) {
            None => {
                body.insert(key_field.into(), Value::String(name.to_owned()));
            }
            Some(Value::String(n)) if n == name => {}
            Some(_) => return Err(invalid(format!("`{key_field}` must be `{name}`, as in the path"))),
        }
        let _one_at_a_time = self.bounded_writes.lock().await;
        let existing = store::find_user_object(self.store.conn(), user_id, kind.as_str(), name).await?;
        if existing.is_none() {
            let (cap, setting) = match kind {
                ObjectKind::Provider => (self.limits.max_providers, "max_providers"),
                ObjectKind::Rotation => (self.limits.max_rotations, "max_rotations"),
                ObjectKind::Autoselect => (self.limits.max_autoselects, "max_autoselects"),
            };
            let have = store::list_user_objects(self.store.conn(), Some(user_id)).await?;
            let have = have.iter().filter(|o| o.kind == kind.as_str()).count();
            if have >= usize::try_from(cap).unwrap_or(usize::MAX) {
                return Err(ControlError::Forbidden(format!(
                    "a user may keep at most {cap} {}s (tenant_limits.{setting}); delete one first",
                    kind.as_str()
                )));
            }
        }
        let row = match kind {
            ObjectKind::Provider => self.provider_row(user_id, name, body, existing).await?,
            ObjectKind::Rotation => self.rotation_row(user_id, name, body).await?,
            ObjectKind::Autoselect => self.autoselect_row(user_id, name, body).await?,
        };
        let saved = store::put_user_object(self.store.conn(), &row).await?;
        self.changed().await?;
        Ok(shown(&saved))
    }

    async fn provider_row(
        &self,
        user_id: i64,
        name: &str,
        mut body: Map<String, Value>,
        existing: Option<UserObjectRow>,
    ) -> Result<UserObjectRow, ControlError> {
        let key = match body.remove("api_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 4096 => Some(k),
            Some(_) => return Err(invalid("`api_key` must be a non-empty string")),
        };
        let spec = Value::Object(body);
        let cfg: ProviderConfig =
            serde_json::from_value(spec.clone()).map_err(|e| invalid(format!("invalid provider: {e}")))?;
        tenant_scoped(cfg.models.iter().map(|m| m.cache_scope))?;
        let max_models = self.limits.max_models_per_provider;
        if cfg.models.len() > usize::try_from(max_models).unwrap_or(usize::MAX) {
            return Err(invalid(format!(
                "a provider may list at most {max_models} models (tenant_limits.max_models_per_provider)"
            )));
        }
        if !matches!(cfg.kind, ProviderKind::Openai | ProviderKind::Broker) {
            return Err(invalid(
                "user providers are of type `openai` (any OpenAI-compatible server) or `broker` (your own workers)",
            ));
        }
        if !cfg.cost.is_empty() {
            return Err(invalid("user providers are priced by the price table; remove `cost`"));
        }
        problems(&Settings { providers: vec![cfg.clone()], ..Settings::default() })?;
        if cfg.kind.has_endpoint() {
            let endpoint = cfg.endpoint.as_deref().ok_or_else(|| invalid("`endpoint` is required"))?;
            crate::upstream::ssrf::check_endpoint(endpoint, &self.allowlist)
                .await
                .map_err(|e| invalid(format!("endpoint: {e}")))?;
        } else if key.is_some() {
            return Err(invalid("a broker provider has no `api_key`: its workers hold their own"));
        }
        let sealed_key = match key {
            Some(k) => {
                let master = self.master.as_ref().ok_or_else(|| {
                    invalid("this gateway has no security.master_key, so it cannot store provider keys")
                })?;
                Some(
                    master
                        .seal(&crate::crypto::provider_key_aad(user_id, name), &k)
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            None => existing.and_then(|e| e.sealed_key),
        };
        Ok(UserObjectRow {
            user_id,
            kind: "provider".into(),
            name: name.to_owned(),
            spec: spec.to_string(),
            sealed_key,
        })
    }

    async fn rotation_row(
        &self,
        user_id: i64,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<UserObjectRow, ControlError> {
        let spec = Value::Object(body);
        let cfg: RotationConfig =
            serde_json::from_value(spec.clone()).map_err(|e| invalid(format!("invalid rotation: {e}")))?;
        tenant_scoped([cfg.cache_scope])?;
        if !matches!(cfg.strategy.as_str(), "weighted" | "priority" | "least_busy") {
            return Err(invalid("user rotations use `weighted`, `priority` or `least_busy`"));
        }
        // Entries name the user's own providers.
        let objects = store::list_user_objects(self.store.conn(), Some(user_id)).await?;
        let providers = provider_specs(&objects);
        problems(&Settings { providers, rotations: vec![cfg], ..Settings::default() })?;
        Ok(UserObjectRow {
            user_id,
            kind: "rotation".into(),
            name: name.to_owned(),
            spec: spec.to_string(),
            sealed_key: None,
        })
    }

    async fn autoselect_row(
        &self,
        user_id: i64,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<UserObjectRow, ControlError> {
        let spec = Value::Object(body);
        let cfg: AutoselectConfig =
            serde_json::from_value(spec.clone()).map_err(|e| invalid(format!("invalid autoselect: {e}")))?;
        tenant_scoped([cfg.cache_scope])?;
        // The routes it names: the user's own must exist; global ones are checked when used (an
        // unavailable candidate is skipped); no autoselect may name another.
        let objects = store::list_user_objects(self.store.conn(), Some(user_id)).await?;
        let providers = provider_specs(&objects);
        let has_rotation = |n: &str| objects.iter().any(|o| o.kind == "rotation" && o.name == n);
        let check_route = |field: &str, route: &str| -> Result<(), ControlError> {
            match RouteRef::parse(route) {
                RouteRef::Autoselect(_) | RouteRef::UserAutoselect(_) => {
                    Err(invalid(format!("{field}: an autoselect may not name another autoselect")))
                }
                RouteRef::UserProvider { provider, model }
                    if !providers.iter().any(|p| p.id == provider && p.models.iter().any(|m| m.name == model)) =>
                {
                    Err(invalid(format!("{field}: you have no provider model `{route}`")))
                }
                RouteRef::UserRotation(r) if !has_rotation(&r) => {
                    Err(invalid(format!("{field}: you have no rotation `{route}`")))
                }
                _ if route.is_empty() || route.len() > 512 => Err(invalid(format!("{field}: not a route"))),
                _ => Ok(()),
            }
        };
        match cfg.selection.as_str() {
            "rules" => {}
            "embedding" => check_route("embedding_route", cfg.embedding_route.as_deref().unwrap_or_default())?,
            "llm" => check_route("selection_model", cfg.selection_model.as_deref().unwrap_or_default())?,
            other => return Err(invalid(format!("selection: `{other}` is not one of rules, embedding, llm"))),
        }
        if let Some(f) = &cfg.fallback {
            check_route("fallback", f)?;
        }
        if cfg.available_models.is_empty() {
            return Err(invalid("available_models lists no candidate"));
        }
        for (i, c) in cfg.available_models.iter().enumerate() {
            check_route(&format!("available_models[{i}].route"), &c.route)?;
        }
        if cfg.selection_timeout_ms == 0 || cfg.selection_timeout_ms > 60_000 {
            return Err(invalid("selection_timeout_ms must be between 1 and 60000"));
        }
        if cfg.min_similarity.is_some_and(|m| !(-1.0..=1.0).contains(&m)) {
            return Err(invalid("min_similarity must be between -1 and 1"));
        }
        for p in &cfg.privacy_patterns {
            regex::Regex::new(p).map_err(|e| invalid(format!("privacy_patterns: invalid regex: {e}")))?;
        }
        Ok(UserObjectRow {
            user_id,
            kind: "autoselect".into(),
            name: name.to_owned(),
            spec: spec.to_string(),
            sealed_key: None,
        })
    }

    /// `username`'s objects.
    pub async fn list_user_objects(&self, username: &str) -> Result<Vec<Value>, ControlError> {
        let user_id = self.owner_id(username).await?;
        let rows = store::list_user_objects(self.store.conn(), Some(user_id)).await?;
        Ok(rows.iter().map(shown).collect())
    }

    /// One of `username`'s objects.
    pub async fn get_user_object(&self, username: &str, kind: ObjectKind, name: &str) -> Result<Value, ControlError> {
        let user_id = self.owner_id(username).await?;
        store::find_user_object(self.store.conn(), user_id, kind.as_str(), name)
            .await?
            .map(|o| shown(&o))
            .ok_or_else(|| ControlError::NotFound(format!("no {} `{name}`", kind.as_str())))
    }

    /// Deletes one of `username`'s objects; one that another of theirs uses is kept.
    pub async fn delete_user_object(&self, username: &str, kind: ObjectKind, name: &str) -> Result<(), ControlError> {
        let user_id = self.owner_id(username).await?;
        let objects = store::list_user_objects(self.store.conn(), Some(user_id)).await?;
        let in_rotation = kind == ObjectKind::Provider
            && objects
                .iter()
                .filter(|o| o.kind == "rotation")
                .filter_map(|o| serde_json::from_str::<RotationConfig>(&o.spec).ok())
                .any(|r| r.entries.iter().any(|e| e.provider_id == name));
        let named = match kind {
            ObjectKind::Provider => format!("user-provider/{name}/"),
            ObjectKind::Rotation => format!("user-rotation/{name}"),
            ObjectKind::Autoselect => String::new(),
        };
        let in_autoselect = !named.is_empty()
            && objects
                .iter()
                .filter(|o| o.kind == "autoselect")
                .filter_map(|o| serde_json::from_str::<AutoselectConfig>(&o.spec).ok())
                .any(|a| {
                    let uses = |r: &str| r == named || (named.ends_with('/') && r.starts_with(&named));
                    a.available_models.iter().any(|c| uses(&c.route))
                        || [&a.fallback, &a.embedding_route, &a.selection_model].into_iter().flatten().any(|r| uses(r))
                });
        if in_rotation || in_autoselect {
            return Err(ControlError::Conflict(format!(
                "`{name}` is in use by a rotation or autoselect; change those first"
            )));
        }
        store::delete_user_object(self.store.conn(), user_id, kind.as_str(), name).await.map_err(|e| match e {
            StoreError::NotFound => ControlError::NotFound(format!("no {} `{name}`", kind.as_str())),
            other => ControlError::Store(other),
        })?;
        self.changed().await
    }
}
