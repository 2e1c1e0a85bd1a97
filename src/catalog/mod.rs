//! The in-memory catalog every request reads: providers and their models, route names, users
//! and token hashes. It is swapped whole on reload; the hot path only takes a read lock to clone
//! an `Arc`, and never waits on SQL except for a token it has never seen (then one indexed
//! lookup by hash, remembered either way).
//!
//! Reloads happen when shared state announces a newer catalog version, and on a timer that
//! compares the stored version, so a lost announcement costs at most one poll interval.
//!
//! Architecture Invariant: reads the store and shared state; never writes either.

pub mod purges;
mod resolve;
mod throttle;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{CostConfig, Secret, Settings, resolve_env_ref};
use crate::shared::SharedState;
use crate::store::{self, PriceRow, Store, StoreError, TierRow};
use crate::types::{Locality, ProviderKind, Role};

pub use resolve::{BurstMode, BurstSpec, CachePolicy, Candidate, Health, Plan, Strategy, Target};
pub use tokens::{AuthError, TokenEntry, credential, hex, missing_credentials, token_hash};

/// One provider, ready to be called.
#[derive(Debug)]
pub struct Provider {
    /// Id: the configured id, or `<username>/<name>` for a user's provider (unique cluster-wide:
    /// cooldowns and in-flight counts are keyed by it).
    pub id: String,
    /// `provider/<id>` or `user-provider/<name>`: its models' routes start with this.
    pub route_prefix: String,
    /// A user-defined endpoint: connections go through the SSRF guard.
    pub guarded: bool,
    /// Dialect.
    pub kind: ProviderKind,
    /// Base URL, parsed.
    pub endpoint: Option<crate::upstream::Endpoint>,
    /// The resolved key.
    pub api_key: Option<Secret>,
    /// Azure OpenAI's `api-version`.
    pub api_version: Option<String>,
    /// It serves OpenAI's Responses API too.
    pub responses_api: bool,
    /// Local or cloud.
    pub locality: Locality,
    /// Whole-request timeout override.
    pub timeout: Option<Duration>,
    /// In-flight requests it accepts, cluster-wide.
    pub max_concurrency: Option<u32>,
    /// Seconds an entry of this provider cools down after a failure, unless the entry says.
    pub default_error_cooldown: u64,
    /// Models by name, in configuration order.
    pub models: Vec<ModelInfo>,
}

impl Provider {
    /// Builds a provider from its configuration table. `owner` is the owning user's name for a
    /// user's provider (then `p.id` is its name in that namespace).
    pub fn from_config(p: &crate::config::ProviderConfig, api_key: Option<Secret>, owner: Option<&str>) -> Self {
        let models = p
            .models
            .iter()
            .map(|m| ModelInfo {
                name: m.name.clone(),
                context_size: m.context_size.or(p.default_context_size),
                max_request_tokens: m.max_request_tokens,
                cost: p.cost.get(&m.name).cloned(),
                capabilities: m.capabilities.clone(),
                cache: CachePolicy::from_config(m.cache_ttl_secs, m.cache_scope, owner.is_some()),
            })
            .collect();
        let (id, route_prefix) = match owner {
            Some(user) => (format!("{user}/{}", p.id), format!("user-provider/{}", p.id)),
            None => (p.id.clone(), format!("provider/{}", p.id)),
        };
        Self {
            id,
            route_prefix,
            guarded: owner.is_some(),
            kind: p.kind,
            api_version: p.api_version.clone(),
            responses_api: p.responses_api,
            endpoint: p.endpoint.as_deref().map(crate::upstream::Endpoint::parse),
            api_key,
            locality: p.locality,
            timeout: p.timeout.map(Duration::from_secs),
            max_concurrency: p.max_concurrency,
            default_error_cooldown: p.default_error_cooldown,
            models,
        }
    }

    /// The route of one of its models.
    pub fn route(&self, model: &str) -> String {
        format!("{}/{model}", self.route_prefix)
    }

    /// The model with this name.
    pub fn model(&self, name: &str) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// One model of a provider.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The provider's model name.
    pub name: String,
    /// Context window in tokens.
    pub context_size: Option<u64>,
    /// Largest prompt in tokens.
    pub max_request_tokens: Option<u64>,
    /// Prices per 1M tokens.
    pub cost: Option<CostConfig>,
    /// Capability tags (`tools`, `vision`, `json`, …).
    pub capabilities: Vec<String>,
    /// How its answers are cached (`provider/<id>/<model>`).
    pub cache: CachePolicy,
}

/// A user as the catalog knows it.
#[derive(Clone, Debug)]
pub struct UserEntry {
    /// Id.
    pub id: i64,
    /// Name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Active (not disabled).
    pub active: bool,
    /// Tier name.
    pub tier: Option<String>,
}

/// One immutable view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The stored version this view was built from.
    pub version: i64,
    providers: Arc<HashMap<String, Arc<Provider>>>,
    provider_order: Arc<Vec<String>>,
    rotations: Arc<Vec<Rotation>>,
    autoselects: Arc<Vec<Arc<Autoselect>>>,
    users: HashMap<String, Arc<UserEntry>>,
    users_by_id: HashMap<i64, Arc<UserEntry>>,
    tokens: HashMap<[u8; 32], Arc<TokenEntry>>,
    tokens_by_id: HashMap<i64, Arc<TokenEntry>>,
    tiers: HashMap<String, Arc<TierRow>>,
    prices: Arc<Vec<PriceRow>>,
    user_catalogs: HashMap<i64, Arc<UserCatalog>>,
    /// Response-cache purge marks in force.
    pub cache_purges: Arc<purges::CachePurges>,
    /// Autoselect candidate vectors (`embedding` selection) by (embeddings route, text): derived
    /// state of this version, so a changed route or description is embedded anew.
    pub embeddings: EmbeddingCache,
}

/// Candidate text vectors by (owner and embeddings route, text).
pub type EmbeddingCache = Arc<Mutex<HashMap<(String, String), Arc<Vec<f32>>>>>;

/// The providers and rotations a user owns (their namespace: `user-provider/…`, `user-rotation/…`).
#[derive(Debug, Default)]
pub struct UserCatalog {
    /// Providers by name.
    pub providers: HashMap<String, Arc<Provider>>,
    /// Rotations.
    pub rotations: Vec<Rotation>,
    /// Autoselects.
    pub autoselects: Vec<Arc<Autoselect>>,
}

impl Snapshot {
    /// The tier of a user, if they are on one.
    pub fn tier_of(&self, user_id: i64) -> Option<Arc<TierRow>> {
        let name = self.users_by_id.get(&user_id)?.tier.as_deref()?;
        self.tiers.get(name).cloned()
    }

    /// The price of `model` served by `provider`: the provider's own `cost` in the configuration,
    /// else the price table (a price for this provider before one for every provider; the model
    /// name or one of its aliases).
    pub fn price(&self, provider: &str, model: &ModelInfo) -> Option<CostConfig> {
        if let Some(c) = &model.cost {
            return Some(c.clone());
        }
        let matches = |p: &&PriceRow| p.model == model.name || p.aliases.contains(&model.name);
        let specific = self.prices.iter().filter(matches).find(|p| p.provider == provider);
        let generic = self.prices.iter().filter(matches).find(|p| p.provider.is_empty());
        specific.or(generic).map(|p| CostConfig {
            input_per_million: p.input_per_million,
            output_per_million: p.output_per_million,
            cached_input_per_million: p.cached_input_per_million,
            cache_write_per_million: p.cache_write_per_million,
        })
    }
}

/// The catalog of one node.
pub struct Catalog {
    snapshot: RwLock<Arc<Snapshot>>,
    store: Store,
    shared: Arc<dyn SharedState>,
    poll: Duration,
    /// Tokens found in the database since the last reload.
    late: Mutex<HashMap<[u8; 32], Arc<TokenEntry>>>,
    /// Hashes that do not authenticate, with the time until which that is trusted and whether
    /// the token exists (revoked, or its owner disabled) rather than being unknown.
    misses: Mutex<HashMap<[u8; 32], (i64, bool)>>,
    /// Opens users' sealed provider keys.
    master: Option<crate::crypto::MasterKey>,
    /// Failed authentications per client address.
    throttle: throttle::AuthThrottle,
    /// The live-node count the heartbeat keeps (shared with the limiter).
    live_nodes: Arc<std::sync::atomic::AtomicU64>,
}

/// Why the catalog could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A provider key reference does not resolve.
    #[error("providers[{0}].api_key: {1}")]
    Key(usize, String),
    /// The master key is missing or unusable.
    #[error("security.master_key: {0}")]
    MasterKey(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Catalog {
    /// Builds the catalog from the configuration and the store.
    pub async fn load(settings: &Settings, store: Store, shared: Arc<dyn SharedState>) -> Result<Self, CatalogError> {
        let master = match settings.security.master_key_value().map_err(CatalogError::MasterKey)? {
            Some(k) => Some(crate::crypto::MasterKey::parse(&k).map_err(|e| CatalogError::MasterKey(e.to_string()))?),
            None => None,
        };
        // Sealed keys without the master key would leave users' providers silently keyless.
        if master.is_none() && store::count_sealed_keys(store.conn()).await? > 0 {
            return Err(CatalogError::MasterKey(
                "users' provider keys are stored encrypted, and security.master_key is not set".into(),
            ));
        }
        let mut providers = HashMap::new();
        let mut order = Vec::new();
        for (i, p) in settings.providers.iter().enumerate() {
            let api_key = match &p.api_key {
                Some(r) => Some(Secret::new(resolve_env_ref(r.expose()).map_err(|m| CatalogError::Key(i, m))?)),
                None => None,
            };
            let provider = Provider::from_config(p, api_key, None);
            order.push(p.id.clone());
            providers.insert(p.id.clone(), Arc::new(provider));
        }
        let rotations = settings.rotations.iter().map(|r| Rotation::build(r, &providers, false)).collect();
        let base = Snapshot {
            providers: Arc::new(providers),
            provider_order: Arc::new(order),
            rotations: Arc::new(rotations),
            autoselects: Arc::new(
                settings.autoselects.iter().map(|a| Arc::new(Autoselect::from_config(a, None))).collect(),
            ),
            ..Snapshot::default()
        };
        let live_nodes = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let sec = &settings.security;
        let throttle = throttle::AuthThrottle::new(
            Arc::clone(&shared),
            Arc::clone(&live_nodes),
            sec.auth_failures_per_minute,
            sec.auth_lockout_secs,
            sec.unknown_token_lookups,
        );
        let catalog = Self {
            snapshot: RwLock::new(Arc::new(base)),
            store,
            throttle,
            live_nodes,
            shared,
            poll: Duration::from_millis(settings.catalog.poll_interval_ms.max(10)),
            late: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            master,
        };
        catalog.reload().await?;
        Ok(catalog)
    }

    /// The live-node count the heartbeat keeps.
    pub fn live_nodes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.live_nodes)
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Rebuilds users and tokens from the store.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let db = self.store.conn();
        let version = store::catalog_version(db).await?;
        let users = store::list_users(db).await?;
        let tokens = store::list_active_tokens(db).await?;
        let tiers = store::list_tiers(db).await?;
        let prices = store::list_prices(db).await?;
        let objects = store::list_user_objects(db, None).await?;
        let marks = store::meta_with_prefix(db, purges::PREFIX).await?;
        let old = self.snapshot();
        let mut by_id = HashMap::with_capacity(users.len());
        let mut by_name = HashMap::with_capacity(users.len());
        for u in users {
            let e = Arc::new(UserEntry {
                id: u.id,
                active: u.is_active(),
                role: u.role,
                username: u.username,
                tier: u.tier,
            });
            by_name.insert(e.username.clone(), Arc::clone(&e));
            by_id.insert(e.id, e);
        }
        let mut token_map = HashMap::with_capacity(tokens.len());
        let mut by_token_id = HashMap::with_capacity(tokens.len());
        for t in tokens {
            if let Some(entry) = TokenEntry::from_row(&t, &by_id) {
                let entry = Arc::new(entry);
                by_token_id.insert(entry.id, Arc::clone(&entry));
                token_map.insert(entry.hash, entry);
            }
        }
        let user_catalogs = self.user_catalogs(&objects, &by_id);
        let snap = Snapshot {
            version,
            providers: Arc::clone(&old.providers),
            provider_order: Arc::clone(&old.provider_order),
            rotations: Arc::clone(&old.rotations),
            autoselects: Arc::clone(&old.autoselects),
            users: by_name,
            users_by_id: by_id,
            tokens: token_map,
            tokens_by_id: by_token_id,
            tiers: tiers.into_iter().map(|t| (t.name.clone(), Arc::new(t))).collect(),
            prices: Arc::new(prices),
            user_catalogs,
            cache_purges: Arc::new(purges::CachePurges::from_marks(marks)),
            embeddings: EmbeddingCache::default(),
        };
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(snap),
            Err(p) => *p.into_inner() = Arc::new(snap),
        }
        if let Ok(mut late) = self.late.lock() {
            late.clear();
        }
        if let Ok(mut misses) = self.misses.lock() {
            misses.clear();
        }
        tracing::debug!(version, "Catalog reloaded.");
        Ok(())
    }

    /// Builds every user's catalog from their stored objects. An object that no longer parses,
    /// or a key that does not open, is left out and logged (never served half-built).
    fn user_catalogs(
        &self,
        objects: &[store::UserObjectRow],
        users: &HashMap<i64, Arc<UserEntry>>,
    ) -> HashMap<i64, Arc<UserCatalog>> {
        let mut out: HashMap<i64, UserCatalog> = HashMap::new();
        for o in objects.iter().filter(|o| o.kind == "provider") {
            let Some(user) = users.get(&o.user_id) else { continue };
            let Ok(cfg) = serde_json::from_str::<crate::config::ProviderConfig>(&o.spec) else {
                tracing::error!(user = %user.username, provider = %o.name, "A stored user provider does not parse; skipped.");
                continue;
            };
            let key = match (&o.sealed_key, &self.master) {
                (None, _) => None,
                (Some(sealed), Some(master)) => {
                    match master.open(&crate::crypto::provider_key_aad(o.user_id, &o.name), sealed) {
                        Ok(k) => Some(Secret::new(k)),
                        Err(_) => {
                            tracing::error!(user = %user.username, provider = %o.name, "A user provider's key does not open with the master key; skipped.");
                            continue;
                        }
                    }
                }
                (Some(_), None) => continue,
            };
            let p = Provider::from_config(&cfg, key, Some(&user.username));
            out.entry(o.user_id).or_default().providers.insert(o.name.clone(), Arc::new(p));
        }
        for o in objects.iter().filter(|o| o.kind == "rotation") {
            let Ok(cfg) = serde_json::from_str::<crate::config::RotationConfig>(&o.spec) else {
                tracing::error!(rotation = %o.name, "A stored user rotation does not parse; skipped.");
                continue;
            };
            let cat = out.entry(o.user_id).or_default();
            let r = Rotation::build(&cfg, &cat.providers, true);
            cat.rotations.push(r);
        }
        for o in objects.iter().filter(|o| o.kind == "autoselect") {
            let Ok(cfg) = serde_json::from_str::<crate::config::AutoselectConfig>(&o.spec) else {
                tracing::error!(autoselect = %o.name, "A stored user autoselect does not parse; skipped.");
                continue;
            };
            out.entry(o.user_id)
                .or_default()
                .autoselects
                .push(Arc::new(Autoselect::from_config(&cfg, Some(o.user_id))));
        }
        out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
    }

    /// Whether the database holds another catalog version than the snapshot.
    async fn database_differs(&self) -> bool {
        match store::catalog_version(self.store.conn()).await {
            Ok(v) => v != self.snapshot().version,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the catalog version.");
                false
            }
        }
    }

    /// Keeps the catalog current until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut announced = self.shared.catalog_versions();
        let mut listening = true;
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stale = tokio::select! {
                () = cancel.cancelled() => return,
                changed = announced.changed(), if listening => match changed {
                    // A newer announced version; or a notice without one (the shared state
                    // reconnected and may have missed announcements): ask the database.
                    Ok(()) => *announced.borrow_and_update() > self.snapshot().version || self.database_differs().await,
                    Err(_) => { listening = false; false }
                },
                _ = tick.tick() => self.database_differs().await,
            };
            if stale && let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "Catalog reload failed; serving the previous one.");
            }
        }
    }
}

/// How an autoselect chooses among its eligible candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionMode {
    /// The first eligible candidate, in configuration order.
    Rules,
    /// The candidate most similar to the prompt, by embeddings.
    Embedding,
    /// The candidate a selection model names.
    Llm,
}

impl SelectionMode {
    /// Parses `rules`, `embedding` or `llm`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rules" => Some(Self::Rules),
            "embedding" => Some(Self::Embedding),
            "llm" => Some(Self::Llm),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Embedding => "embedding",
            Self::Llm => "llm",
        }
    }
}

/// An autoselect route.
#[derive(Debug)]
pub struct Autoselect {
    /// Name (`autoselect/<name>`, or `user-autoselect/<name>` for a user's).
    pub name: String,
    /// The owning user, for a user's autoselect.
    pub owner: Option<i64>,
    /// How it chooses.
    pub selection: SelectionMode,
    /// `llm`: the chat route asked to choose.
    pub selection_model: Option<String>,
    /// `embedding`: the embeddings route.
    pub embedding_route: Option<String>,
    /// How long a selection call may take before the fallback is used.
    pub selection_timeout: std::time::Duration,
    /// `embedding`: the lowest similarity that counts as a match.
    pub min_similarity: Option<f64>,
    /// Route used when no candidate fits.
    pub fallback: Option<String>,
    /// Classify requests for secrets and personal data.
    pub classify_privacy: bool,
    /// Extra words that make a request private.
    pub privacy_keywords: Vec<String>,
    /// Extra regexes that make a request private.
    pub privacy_patterns: Vec<String>,
    /// The privacy classifier compiled from the keywords and patterns above, derived with the
    /// snapshot (a changed rule takes effect with the catalog version that carries it); `None`
    /// when a pattern does not compile (configuration checks and the API refuse those).
    pub classifier: Option<Arc<crate::privacy::Classifier>>,
    /// Candidates in configuration order.
    pub candidates: Vec<AutoCandidate>,
    /// How its answers are cached.
    pub cache: CachePolicy,
}

impl Autoselect {
    /// Builds an autoselect from its configuration table; `owner` is the owning user's id for
    /// a user's autoselect (its candidate routes resolve in that user's namespace).
    pub fn from_config(a: &crate::config::AutoselectConfig, owner: Option<i64>) -> Self {
        Self {
            name: a.name.clone(),
            owner,
            // Configuration checks and the API refuse other names before a catalog is built.
            selection: SelectionMode::parse(&a.selection).unwrap_or_else(|| {
                tracing::error!(autoselect = %a.name, "Unknown selection mode; using rules.");
                SelectionMode::Rules
            }),
            selection_model: a.selection_model.clone(),
            embedding_route: a.embedding_route.clone(),
            selection_timeout: Duration::from_millis(a.selection_timeout_ms),
            min_similarity: a.min_similarity,
            fallback: a.fallback.clone(),
            classify_privacy: a.classify_privacy,
            privacy_keywords: a.privacy_keywords.clone(),
            privacy_patterns: a.privacy_patterns.clone(),
            classifier: compile_classifier(&a.privacy_keywords, &a.privacy_patterns, &a.name),
            cache: CachePolicy::from_config(a.cache_ttl_secs, a.cache_scope, owner.is_some()),
            candidates: a
                .available_models
                .iter()
                .map(|c| AutoCandidate {
                    route: c.route.clone(),
                    privacy: c.privacy,
                    description: c.description.clone(),
                    examples: c.examples.clone(),
                })
                .collect(),
        }
    }

    /// Its route name (`autoselect/<name>` or `user-autoselect/<name>`).
    pub fn route(&self) -> String {
        match self.owner {
            Some(_) => format!("user-autoselect/{}", self.name),
            None => format!("autoselect/{}", self.name),
        }
    }
}

/// Compiles a privacy classifier for the snapshot; a pattern that does not compile is logged
/// and leaves `None`, which refuses the route's requests rather than skipping the check.
fn compile_classifier(
    keywords: &[String],
    patterns: &[String],
    owner: &str,
) -> Option<Arc<crate::privacy::Classifier>> {
    match crate::privacy::Classifier::new(keywords, patterns) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!(error = %e, route = owner, "A privacy pattern does not compile; the route refuses requests.");
            None
        }
    }
}

/// One candidate of an autoselect.
#[derive(Clone, Debug)]
pub struct AutoCandidate {
    /// A provider or rotation route.
    pub route: String,
    /// May receive private requests.
    pub privacy: bool,
    /// What it is good at (read by the `embedding` and `llm` selections).
    pub description: String,
    /// Example prompts (read by the `embedding` and `llm` selections).
    pub examples: Vec<String>,
}

/// A rotation as the router uses it.
#[derive(Debug)]
pub struct Rotation {
    /// Route name (`rotation/<name>`).
    pub name: String,
    /// `None` for a strategy this version does not serve (`burst`).
    pub strategy: Option<Strategy>,
    /// Candidates in configuration order.
    pub candidates: Vec<Candidate>,
    /// Attempts before giving up (default: one per candidate).
    pub max_attempts: usize,
    /// Burst settings, for `burst` rotations.
    pub burst: Option<Arc<BurstSpec>>,
    /// Ejection settings.
    pub health: Health,
    /// How its answers are cached.
    pub cache: CachePolicy,
}

impl Rotation {
    fn build(r: &crate::config::RotationConfig, providers: &HashMap<String, Arc<Provider>>, owned: bool) -> Self {
        let strategy = match r.strategy.as_str() {
            "weighted" => Some(Strategy::Weighted),
            "priority" => Some(Strategy::Priority),
            "least_busy" => Some(Strategy::LeastBusy),
            "burst" => r.mode.as_deref().and_then(BurstMode::parse).map(|_| Strategy::Burst),
            _ => None,
        };
        let burst = r.mode.as_deref().and_then(BurstMode::parse).filter(|_| r.strategy == "burst").map(|mode| {
            Arc::new(BurstSpec {
                name: r.name.clone(),
                mode,
                max_queue: r.max_queue,
                latency_threshold_ms: r.latency_threshold_ms,
                daily_cloud_budget_usd: r.daily_cloud_budget_usd,
                sensitive_keywords: r.sensitive_keywords.clone(),
                sensitive_patterns: r.sensitive_patterns.clone(),
                classifier: compile_classifier(&r.sensitive_keywords, &r.sensitive_patterns, &r.name),
            })
        });
        // A burst rotation's candidates are its primary entries, then its secondary ones.
        let entries: Vec<&crate::config::RotationEntryConfig> = if burst.is_some() {
            r.primary.iter().chain(r.secondary.iter()).collect()
        } else {
            r.entries.iter().collect()
        };
        let candidates: Vec<Candidate> = entries
            .into_iter()
            .filter_map(|e| {
                let provider = providers.get(&e.provider_id)?;
                let model = provider.model(&e.model)?.clone();
                Some(Candidate {
                    target: Target { provider: Arc::clone(provider), route: provider.route(&model.name), model },
                    weight: e.weight,
                    cooldown_secs: e.error_cooldown.unwrap_or(provider.default_error_cooldown),
                })
            })
            .collect();
        let max_attempts = r.max_attempts.map_or(candidates.len(), |m| usize::try_from(m).unwrap_or(usize::MAX));
        let health = Health {
            eject_after: r.eject_after.unwrap_or(1).max(1),
            max_ejection_percent: r.max_ejection_percent.unwrap_or(100).clamp(1, 100),
        };
        let cache = CachePolicy::from_config(r.cache_ttl_secs, r.cache_scope, owned);
        Self { name: r.name.clone(), strategy, candidates, max_attempts: max_attempts.max(1), burst, health, cache }
    }
}
