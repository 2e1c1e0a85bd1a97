//! Model-name resolution (SPEC §3).

use std::sync::Arc;

use crate::catalog::{ModelInfo, Provider, Snapshot, UserEntry};
use crate::error::{ApiError, Code};
use crate::types::RouteRef;

/// One upstream model a request may go to.
#[derive(Clone, Debug)]
pub struct Target {
    /// The provider.
    pub provider: Arc<Provider>,
    /// The provider's model.
    pub model: ModelInfo,
    /// The canonical route name (`provider/<id>/<model>`).
    pub route: String,
}

/// How the candidates of a plan are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// One named provider model: no failover, no cooldowns.
    Direct,
    /// Weighted random order.
    Weighted,
    /// Configuration order.
    Priority,
    /// Fewest in-flight requests cluster-wide first, ties by weight.
    LeastBusy,
    /// Edge/cloud burst (the plan's `burst` says how).
    Burst,
}

impl Strategy {
    /// The reason sent in `X-Switchyard-Reason` for a first attempt.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Weighted => "weighted",
            Self::Priority => "priority",
            Self::LeastBusy => "least_busy",
            Self::Burst => "burst",
        }
    }
}

/// A candidate of a plan.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Where it goes.
    pub target: Target,
    /// Relative weight.
    pub weight: f64,
    /// Seconds it cools down after a failure (cluster-wide).
    pub cooldown_secs: u64,
}

/// Everything the router needs for one request: the route as named, and its candidates.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The route name (`rotation/coding`, `provider/x/m`).
    pub route: String,
    /// How candidates are ordered and whether failures fail over and cool down.
    pub strategy: Strategy,
    /// Candidates in configuration order.
    pub candidates: Vec<Candidate>,
    /// Attempts before giving up.
    pub max_attempts: usize,
    /// Burst settings, for `Strategy::Burst`.
    pub burst: Option<Arc<BurstSpec>>,
    /// When failures eject a candidate.
    pub health: Health,
    /// How the route's answers are cached.
    pub cache: CachePolicy,
}

/// A route's cache settings as configured; the node's `[cache]` decides whether caching is on
/// and the TTL of routes that set none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachePolicy {
    /// Seconds an answer stays cached (`Some(0)`: never cached); `None`: the node's default.
    pub ttl_secs: Option<u64>,
    /// Every tenant shares the route's entries (global routes only: a user's route never).
    pub global: bool,
}

impl CachePolicy {
    /// The policy of a configured route; `owned`: a user's route (never shared).
    pub fn from_config(ttl_secs: Option<u64>, scope: crate::config::CacheScope, owned: bool) -> Self {
        Self { ttl_secs, global: scope == crate::config::CacheScope::Global && !owned }
    }
}

/// When failures take a rotation's entries out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// Consecutive failures (cluster-wide) before an entry cools down.
    pub eject_after: u32,
    /// The most entries cooling down at once, in percent (at least one).
    pub max_ejection_percent: u8,
}

impl Default for Health {
    fn default() -> Self {
        Self { eject_after: 1, max_ejection_percent: 100 }
    }
}

/// Which tier a burst rotation serves from first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurstMode {
    /// Local serves; cloud takes overflow and failures.
    Edge,
    /// Cloud serves; sensitive requests go local.
    Cloud,
}

impl BurstMode {
    /// Parses `edge_burst` / `cloud_burst`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "edge_burst" => Some(Self::Edge),
            "cloud_burst" => Some(Self::Cloud),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge_burst",
            Self::Cloud => "cloud_burst",
        }
    }
}

/// The settings of a burst rotation.
#[derive(Debug)]
pub struct BurstSpec {
    /// Rotation name.
    pub name: String,
    /// Configured mode.
    pub mode: BurstMode,
    /// In-flight requests on the leading tier (cluster-wide) at which requests overflow.
    pub max_queue: Option<u64>,
    /// Moving-average latency of the leading tier above which requests overflow.
    pub latency_threshold_ms: Option<u64>,
    /// Cloud spend per UTC day, cluster-wide, after which traffic stays local.
    pub daily_cloud_budget_usd: Option<f64>,
    /// Extra words that make a request sensitive.
    pub sensitive_keywords: Vec<String>,
    /// Extra regexes that make a request sensitive.
    pub sensitive_patterns: Vec<String>,
    /// The sensitivity classifier compiled from the two lists above, with the snapshot.
    pub classifier: Option<Arc<crate::privacy::Classifier>>,
}

impl Plan {
    fn direct(target: Target) -> Self {
        Self {
            cache: target.model.cache,
            route: target.route.clone(),
            strategy: Strategy::Direct,
            candidates: vec![Candidate { cooldown_secs: target.provider.default_error_cooldown, target, weight: 1.0 }],
            max_attempts: 1,
            burst: None,
            health: Health::default(),
        }
    }
}

impl Snapshot {
    /// Resolves a `model` string of a request.
    pub fn resolve(&self, requested: &str) -> Result<Plan, ApiError> {
        if requested.is_empty() || requested.len() > 512 {
            return Err(ApiError::model_not_found(requested));
        }
        match RouteRef::parse(requested) {
            RouteRef::Provider { provider, model } => {
                self.resolve_direct(&provider, &model).map_err(|_| ApiError::model_not_found(requested))
            }
            RouteRef::Rotation(name) => {
                self.rotation_plan(&name).ok_or_else(|| ApiError::model_not_found(requested))?
            }
            RouteRef::Autoselect(name) if self.autoselect(&name).is_some() => Err(not_served(requested, "autoselect")),
            RouteRef::Bare(name) => self.resolve_bare(&name),
            _ => Err(ApiError::model_not_found(requested)),
        }
    }

    /// Resolves a `model` string in `user_id`'s namespace: their own `user-provider/…` and
    /// `user-rotation/…` routes, then every global route. Another user's objects answer exactly
    /// like missing ones.
    pub fn resolve_in(&self, user_id: i64, requested: &str) -> Result<Plan, ApiError> {
        if requested.is_empty() || requested.len() > 512 {
            return Err(ApiError::model_not_found(requested));
        }
        let mine = self.user_catalogs.get(&user_id);
        match RouteRef::parse(requested) {
            RouteRef::UserProvider { provider, model } => {
                let p = mine
                    .and_then(|c| c.providers.get(&provider))
                    .ok_or_else(|| ApiError::model_not_found(requested))?;
                let info = p.model(&model).ok_or_else(|| ApiError::model_not_found(requested))?;
                Ok(Plan::direct(Target { provider: Arc::clone(p), model: info.clone(), route: p.route(&model) }))
            }
            RouteRef::UserRotation(name) => {
                let r = mine
                    .and_then(|c| c.rotations.iter().find(|r| r.name == name))
                    .ok_or_else(|| ApiError::model_not_found(requested))?;
                match r.strategy {
                    Some(strategy) if !r.candidates.is_empty() && r.burst.is_none() => Ok(Plan {
                        route: requested.to_owned(),
                        strategy,
                        candidates: r.candidates.clone(),
                        max_attempts: r.max_attempts,
                        burst: None,
                        health: r.health,
                        cache: r.cache,
                    }),
                    _ => Err(not_served(requested, "this rotation strategy")),
                }
            }
            RouteRef::UserAutoselect(_) => Err(ApiError::model_not_found(requested)),
            _ => self.resolve(requested),
        }
    }

    /// The autoselect a `model` string names in `user_id`'s namespace: their own
    /// `user-autoselect/<name>`, else a global one.
    pub fn autoselect_in(&self, user_id: i64, requested: &str) -> Option<Arc<crate::catalog::Autoselect>> {
        match RouteRef::parse(requested) {
            RouteRef::UserAutoselect(name) => {
                self.user_catalogs.get(&user_id)?.autoselects.iter().find(|a| a.name == name).cloned()
            }
            _ => self.autoselect_for(requested),
        }
    }

    /// Resolves a route in `owner`'s namespace, or among global routes for `None`.
    pub fn resolve_as(&self, owner: Option<i64>, requested: &str) -> Result<Plan, ApiError> {
        match owner {
            Some(u) => self.resolve_in(u, requested),
            None => self.resolve(requested),
        }
    }

    /// The canonical name of a route as a request in `owner`'s namespace (or among global
    /// routes) would resolve it (`coding` → `rotation/coding`); `None` when it does not resolve.
    pub fn canonical_route(&self, owner: Option<i64>, requested: &str) -> Option<String> {
        let auto = match owner {
            Some(u) => self.autoselect_in(u, requested),
            None => self.autoselect_for(requested),
        };
        if let Some(a) = auto {
            return Some(a.route());
        }
        self.resolve_as(owner, requested).ok().map(|p| p.route)
    }

    /// The `user-provider/…` and `user-rotation/…` routes of a user.
    pub fn user_routes(&self, user_id: i64) -> Vec<String> {
        let Some(c) = self.user_catalogs.get(&user_id) else { return Vec::new() };
        let mut out: Vec<String> =
            c.providers.values().flat_map(|p| p.models.iter().map(|m| p.route(&m.name))).collect();
        out.sort();
        out.extend(
            c.rotations.iter().filter(|r| !r.candidates.is_empty()).map(|r| format!("user-rotation/{}", r.name)),
        );
        out.extend(c.autoselects.iter().map(|a| a.route()));
        out
    }

    /// The plan of a configured rotation; `None` when there is no such rotation.
    pub fn rotation_plan(&self, name: &str) -> Option<Result<Plan, ApiError>> {
        let r = self.rotations.iter().find(|r| r.name == name)?;
        let route = format!("rotation/{name}");
        Some(match r.strategy {
            None => Err(not_served(&route, "this rotation strategy")),
            Some(_) if r.candidates.is_empty() => Err(ApiError::model_not_found(&route)),
            Some(strategy) => Ok(Plan {
                route,
                strategy,
                candidates: r.candidates.clone(),
                max_attempts: r.max_attempts,
                burst: r.burst.clone(),
                health: r.health,
                cache: r.cache,
            }),
        })
    }

    fn resolve_bare(&self, name: &str) -> Result<Plan, ApiError> {
        if let Some(plan) = self.rotation_plan(name) {
            return plan;
        }
        if self.autoselect(name).is_some() {
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
    pub fn resolve_direct(&self, provider_id: &str, model: &str) -> Result<Plan, ApiError> {
        let Some(provider) = self.providers.get(provider_id) else {
            return Err(ApiError::model_not_found(&format!("provider/{provider_id}/{model}")));
        };
        let Some(info) = provider.model(model) else {
            return Err(ApiError::model_not_found(&format!("provider/{provider_id}/{model}")));
        };
        Ok(Plan::direct(Target { provider: Arc::clone(provider), model: info.clone(), route: provider.route(model) }))
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
        for r in self.rotations.iter().filter(|r| r.strategy.is_some() && !r.candidates.is_empty()) {
            out.push((format!("rotation/{}", r.name), "switchyard".to_owned()));
        }
        for a in self.autoselects.iter() {
            out.push((format!("autoselect/{}", a.name), "switchyard".to_owned()));
        }
        out
    }

    /// The autoselect with this name.
    pub fn autoselect(&self, name: &str) -> Option<Arc<crate::catalog::Autoselect>> {
        self.autoselects.iter().find(|a| a.name == name).cloned()
    }

    /// The autoselect a `model` string names (`autoselect/<name>`, or a bare name that no
    /// rotation takes), if any.
    pub fn autoselect_for(&self, requested: &str) -> Option<Arc<crate::catalog::Autoselect>> {
        match RouteRef::parse(requested) {
            RouteRef::Autoselect(name) => self.autoselect(&name),
            RouteRef::Bare(name) if self.rotation_plan(&name).is_none() => self.autoselect(&name),
            _ => None,
        }
    }

    /// Every provider, in configuration order.
    pub fn providers(&self) -> Vec<Arc<Provider>> {
        self.provider_order.iter().filter_map(|id| self.providers.get(id).cloned()).collect()
    }

    /// Every rotation, in configuration order.
    pub fn rotations(&self) -> &[crate::catalog::Rotation] {
        &self.rotations
    }

    /// Every global autoselect, in configuration order.
    pub fn autoselects(&self) -> &[Arc<crate::catalog::Autoselect>] {
        &self.autoselects
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
