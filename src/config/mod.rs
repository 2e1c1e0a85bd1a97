//! The configuration tree (`Settings`), its layered loading and its validation.
//!
//! Architecture Invariant: depends only on `types`. Nothing here reads a database or the network.

mod check;
mod load;
mod secret;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::types::{Locality, ProviderKind};

pub use check::{Problem, check};
pub use load::{LoadError, load, resolve_env_ref};
pub use secret::Secret;

/// The whole configuration of a node.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// The durable store.
    pub database: DatabaseSettings,
    /// Shared volatile state; absent URL means in-process.
    pub redis: RedisSettings,
    /// Timeouts and caps for upstream calls.
    pub upstream: UpstreamSettings,
    /// The usage writer.
    pub usage: UsageSettings,
    /// The catalog cache.
    pub catalog: CatalogSettings,
    /// Logs.
    pub log: LogSettings,
    /// First-start behaviour.
    pub bootstrap: BootstrapSettings,
    /// Keys at rest and user endpoints.
    pub security: SecuritySettings,
    /// The node registry.
    pub cluster: ClusterSettings,
    /// `/metrics`.
    pub metrics: MetricsSettings,
    /// Traces.
    pub telemetry: TelemetrySettings,
    /// How much one tenant may store and change (`/api/me/…`).
    pub tenant_limits: TenantLimits,
    /// The dashboard's sessions and login throttling.
    pub dashboard: DashboardSettings,
    /// The response cache (off unless enabled).
    pub cache: CacheSettings,
    /// Single sign-on to the dashboard; absent: local passwords only.
    pub oidc: Option<OidcSettings>,
    /// Global providers.
    pub providers: Vec<ProviderConfig>,
    /// Global rotations.
    pub rotations: Vec<RotationConfig>,
    /// Global autoselects.
    pub autoselects: Vec<AutoselectConfig>,
    /// Seeds for the price table.
    pub prices: Vec<PriceConfig>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// actix workers; 0 means one per core.
    pub workers: usize,
    /// Seconds a graceful shutdown waits for in-flight requests and streams.
    pub shutdown_timeout_secs: u64,
    /// This node's name in usage records and metrics; empty means `host:port`.
    pub node_id: String,
    /// Milliseconds a client has to send a request's head; then 408.
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a whole request body; then 408.
    pub body_timeout_ms: u64,
    /// The slowest body accepted, in bytes per second, measured after the first 5 seconds; a
    /// slower one gets 408.
    pub body_min_bytes_per_sec: u64,
    /// Requests in flight at once from one client address (the rest get 429 at once); 0 means
    /// no cap. nginx's `limit_conn` is the front line (`nginx/nginx.conf`).
    pub max_requests_per_client: u32,
    /// Addresses of the proxies in front of the node (nginx): for a connection from one of them
    /// the client address is the last `X-Forwarded-For` hop (or `X-Real-IP`). Others' headers
    /// are ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The URL users reach the gateway at (`https://gw.example.com`), behind any proxy: the
    /// dashboard's printed address, its cookies' `Secure` flag (https), the origin its forms
    /// must come from, and the default OIDC redirect URL. Absent: the request's own host.
    pub public_url: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 10 * 1024 * 1024,
            workers: 0,
            shutdown_timeout_secs: 30,
            node_id: String::new(),
            header_timeout_ms: 5_000,
            body_timeout_ms: 60_000,
            body_min_bytes_per_sec: 1_024,
            max_requests_per_client: 512,
            trusted_proxies: vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            public_url: None,
        }
    }
}

/// `[dashboard]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Seconds a dashboard session lives after login (logout and disabling the user end it
    /// sooner, on every node).
    pub session_ttl_secs: u64,
    /// Failed logins for one username within `login_window_secs` (cluster-wide), after which
    /// logins as that name get 429 until the window ends — whether or not the user exists.
    pub login_failures_per_user: u32,
    /// Failed logins from one client address within `login_window_secs`, cluster-wide.
    pub login_failures_per_address: u32,
    /// The window failed logins are counted in, in seconds.
    pub login_window_secs: u64,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            login_failures_per_user: 5,
            login_failures_per_address: 20,
            login_window_secs: 900,
        }
    }
}

/// `[oidc]`: OpenID Connect login to the dashboard (SPEC §5).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// The client secret: a `$ENV_VAR` reference (or the value).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where the provider sends the browser back: `{public_url}/dashboard/oidc/callback` by
    /// default; it must end in `/dashboard/oidc/callback`.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Scopes asked for.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// E-mail domains whose identities may sign in (empty: any verified e-mail).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// A claim of the ID token or userinfo (`groups`, `roles`) that can make an admin.
    #[serde(default)]
    pub admin_claim: Option<String>,
    /// Values of `admin_claim` (a string or an array of strings) that make an admin.
    #[serde(default)]
    pub admin_values: Vec<String>,
    /// Link a first login to the existing user who has the verified e-mail on record (and no
    /// other identity yet), instead of creating a user.
    #[serde(default)]
    pub link_by_email: bool,
    /// The tier of users the first login creates.
    #[serde(default)]
    pub default_tier: Option<String>,
    /// The login page's button text.
    #[serde(default = "default_oidc_label")]
    pub label: String,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

fn default_oidc_label() -> String {
    "Sign in with SSO".to_owned()
}

impl OidcSettings {
    /// The client secret's value (a `$ENV_VAR` reference resolved).
    pub fn client_secret_value(&self) -> Result<Option<String>, String> {
        secret_value(self.client_secret.as_ref())
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// When set, `/metrics` answers only `Authorization: Bearer <this>` (a `$ENV_VAR` reference
    /// or the value); otherwise it is open, for a scraper on a private network.
    pub token: Option<Secret>,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/gRPC (SPEC §8). Unset keys fall back to the
/// standard `OTEL_*` variables; with no endpoint anywhere, nothing is exported.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/gRPC endpoint (`http://jaeger:4317`).
    pub otlp_endpoint: Option<String>,
    /// The fraction of new traces sampled (0 to 1); a client's `traceparent` decides for its own.
    pub sample_ratio: Option<f64>,
    /// `service.name`.
    pub service_name: Option<String>,
    /// Put prompt and answer text on spans. Off: spans never carry either.
    pub capture_content: bool,
    /// Finished spans waiting for export, at most; more are dropped (and counted in `/metrics`).
    pub max_queue: usize,
    /// How long one export may take.
    pub export_timeout_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: None,
            service_name: None,
            capture_content: false,
            max_queue: 4096,
            export_timeout_ms: 5_000,
        }
    }
}

impl MetricsSettings {
    /// The token's value (a `$ENV_VAR` reference resolved); `None` when not configured.
    pub fn token_value(&self) -> Result<Option<String>, String> {
        secret_value(self.token.as_ref())
    }
}

/// `[tenant_limits]`: what one user may keep in the catalog, and how fast they may change it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Own providers per user.
    pub max_providers: u32,
    /// Models per own provider.
    pub max_models_per_provider: u32,
    /// Own rotations per user.
    pub max_rotations: u32,
    /// Own autoselects per user.
    pub max_autoselects: u32,
    /// Tokens per user that are not revoked (minted through `/api/me/tokens`).
    pub max_tokens: u32,
    /// Writes (`POST`, `PUT`, `PATCH`, `DELETE`) per minute per user on `/api/me/…`.
    pub writes_per_minute: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_providers: 20,
            max_models_per_provider: 100,
            max_rotations: 50,
            max_autoselects: 20,
            max_tokens: 100,
            writes_per_minute: 60,
        }
    }
}

/// `[database]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://…`, `postgres://…` or `mysql://…`.
    pub url: Secret,
    /// Pool size.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: Secret::new("sqlite://switchyard.db?mode=rwc"), max_connections: 10 }
    }
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://…`; absent means the in-process implementation.
    pub url: Option<Secret>,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Pool size.
    pub pool_size: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: None, key_prefix: "sy:".into(), pool_size: 16 }
    }
}

/// `[upstream]`: how long to wait for upstreams, and how much to accept from them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// TCP (and TLS) connect.
    pub connect_timeout_ms: u64,
    /// An idle pooled upstream connection is closed after this long. Below the common server
    /// keep-alive timeouts (uvicorn/vLLM and actix: 5 s), so the gateway never sends a request
    /// on a connection the upstream is closing at that moment (it would fail unanswered).
    pub pool_idle_timeout_ms: u64,
    /// From sending the request to the response headers.
    pub first_byte_timeout_ms: u64,
    /// Longest silence between two body chunks.
    pub idle_timeout_ms: u64,
    /// Whole request, streams included; a provider's `timeout` overrides it.
    pub total_timeout_ms: u64,
    /// A `: keepalive` SSE comment is sent to the client after this much upstream silence.
    pub keepalive_interval_ms: u64,
    /// Largest non-streaming response body accepted.
    pub max_response_bytes: usize,
    /// Longest SSE line accepted from an upstream.
    pub max_sse_line_bytes: usize,
    /// Retry budget: failover attempts in flight on this node may be at most this percent of
    /// the requests in flight …
    pub retry_budget_percent: u32,
    /// … or this many, whichever is more.
    pub retry_budget_min: u32,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            pool_idle_timeout_ms: 4_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            keepalive_interval_ms: 15_000,
            max_response_bytes: 32 * 1024 * 1024,
            max_sse_line_bytes: 1024 * 1024,
            retry_budget_percent: 20,
            retry_budget_min: 3,
        }
    }
}

/// `[cache]`: the response cache (SPEC §10). In a cluster it lives in Redis, shared by every
/// node; embedded, in process, bounded by `max_bytes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Answers are cached (every route, unless a route sets `cache_ttl_secs = 0`).
    pub enabled: bool,
    /// Seconds an entry lives, unless its route sets `cache_ttl_secs`.
    pub ttl_secs: u64,
    /// The largest answer stored (a whole body, or every event of a stream), in bytes.
    pub max_entry_bytes: usize,
    /// The in-process cache's bound, in bytes (entries as stored, compressed or not); the least
    /// useful entries are evicted beyond it. A Redis cache is bounded by Redis's `maxmemory`.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { enabled: false, ttl_secs: 300, max_entry_bytes: 1024 * 1024, max_bytes: 128 * 1024 * 1024 }
    }
}

/// Who shares a route's cache entries (`cache_scope`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Each tenant (the user whose namespace the request runs in) has its own entries.
    #[default]
    Tenant,
    /// Every tenant shares the route's entries (global routes only).
    Global,
}

/// `[usage]`: the asynchronous usage writer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Records per insert.
    pub batch_size: usize,
    /// Longest a record waits before its batch is written.
    pub flush_interval_ms: u64,
    /// Records held in memory while the database is slow or down; when full, new requests get 503.
    pub queue_capacity: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self { batch_size: 500, flush_interval_ms: 50, queue_capacity: 50_000 }
    }
}

/// `[catalog]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    /// How often a node checks the stored catalog version, in case an invalidation was missed.
    pub poll_interval_ms: u64,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self { poll_interval_ms: 1_000 }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

/// `[bootstrap]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSettings {
    /// Name of the first user.
    pub admin_username: String,
    /// A known value for the first admin token (`sy-…`), for automated deployments.
    pub admin_token: Option<Secret>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self { admin_username: "admin".into(), admin_token: None }
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// How often a node announces itself; it counts as gone after three missed announcements
    /// (its orphaned usage records are then finalised by the others).
    pub heartbeat_interval_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { heartbeat_interval_ms: 5_000 }
    }
}

/// `[security]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// The master key sealing users' provider keys (AES-256-GCM): 32 bytes as 64 hex characters
    /// or base64, given as `$ENV_VAR` (or through `SWITCHYARD__SECURITY__MASTER_KEY`). Without
    /// it users cannot store provider keys, and a node refuses to start when sealed keys exist.
    pub master_key: Option<Secret>,
    /// Exact `host:port` pairs that user endpoints may reach although the SSRF guard would refuse
    /// them (a GPU box on the private network, say).
    pub endpoint_allowlist: Vec<String>,
    /// Failed authentications with tokens that do not exist (unknown or malformed: guesses) per
    /// minute from one client address, cluster-wide, after which that address's failures get 429
    /// for `auth_lockout_secs`.
    pub auth_failures_per_minute: u32,
    /// Seconds an address that failed too often is refused.
    pub auth_lockout_secs: u64,
    /// Database lookups of never-seen tokens in flight at once on a node; more wait, briefly.
    pub unknown_token_lookups: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            master_key: None,
            endpoint_allowlist: Vec::new(),
            auth_failures_per_minute: 20,
            auth_lockout_secs: 900,
            unknown_token_lookups: 4,
        }
    }
}

/// A secret setting's value: a `$ENV_VAR` reference resolved, else the value; `None` when unset.
fn secret_value(secret: Option<&Secret>) -> Result<Option<String>, String> {
    match secret {
        None => Ok(None),
        Some(k) if k.expose().starts_with('$') => resolve_env_ref(k.expose()).map(Some),
        Some(k) => Ok(Some(k.expose().to_owned())),
    }
}

impl SecuritySettings {
    /// The master key's value (a `$ENV_VAR` reference is resolved); `None` when not configured.
    pub fn master_key_value(&self) -> Result<Option<String>, String> {
        secret_value(self.master_key.as_ref())
    }
}

/// `[[providers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `[a-z0-9][a-z0-9_-]{0,62}`.
    pub id: String,
    /// Wire dialect.
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Base URL, e.g. `http://127.0.0.1:11434/v1`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `$ENV_VAR` reference to the key.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Azure OpenAI's `api-version` (`type = "azure"` only, and required there).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The upstream serves OpenAI's Responses API too (`POST {endpoint}/responses`; `type =
    /// "openai"` only): Responses clients pass through to it, `previous_response_id` included.
    #[serde(default)]
    pub responses_api: bool,
    /// Context size of models that state none.
    #[serde(default)]
    pub default_context_size: Option<u64>,
    /// Seconds an entry cools down after an error.
    #[serde(default = "default_cooldown")]
    pub default_error_cooldown: u64,
    /// Seconds for the whole request; overrides `upstream.total_timeout_ms`.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// In-flight requests this provider accepts.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// `local` or `cloud`.
    #[serde(default)]
    pub locality: Locality,
    /// Per-model prices per 1M tokens.
    #[serde(default)]
    pub cost: BTreeMap<String, CostConfig>,
    /// The models it serves.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

fn default_cooldown() -> u64 {
    60
}

/// One model of a provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The provider's own model name.
    pub name: String,
    /// Context window in tokens.
    #[serde(default)]
    pub context_size: Option<u64>,
    /// Largest prompt accepted, in tokens.
    #[serde(default)]
    pub max_request_tokens: Option<u64>,
    /// Free-form capability tags (`vision`, `tools`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Seconds its answers stay cached (`provider/<id>/<model>`); 0: never cached; absent:
    /// `cache.ttl_secs`.
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// `tenant` (default) or `global`: whether tenants share its cached answers.
    #[serde(default)]
    pub cache_scope: CacheScope,
}

/// USD per 1M tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Input tokens.
    pub input_per_million: f64,
    /// Output tokens.
    pub output_per_million: f64,
    /// Cached input tokens.
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
}

/// `[[rotations]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Route name (`rotation/<name>`).
    pub name: String,
    /// `weighted`, `priority`, `least_busy` or `burst`.
    pub strategy: String,
    /// Candidates.
    #[serde(default)]
    pub entries: Vec<RotationEntryConfig>,
    /// Only private targets.
    #[serde(default)]
    pub privacy: bool,
    /// Consecutive failures (cluster-wide) before an entry cools down; default 1 (at once). A
    /// `Retry-After` from the upstream always starts the cooldown at once.
    #[serde(default)]
    pub eject_after: Option<u32>,
    /// The most entries (percent, at least one) cooling down at once; beyond it the entries whose
    /// cooldowns end soonest keep serving (panic routing). Default 100: all may cool down, and
    /// then probes keep the route alive.
    #[serde(default)]
    pub max_ejection_percent: Option<u8>,
    /// Capability tags.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Default prompt cap.
    #[serde(default)]
    pub default_max_request_tokens: Option<u64>,
    /// Attempts before giving up.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Burst: `edge_burst` or `cloud_burst`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Burst: in-flight requests on the primary before bursting.
    #[serde(default)]
    pub max_queue: Option<u64>,
    /// Burst: moving-average latency before bursting.
    #[serde(default)]
    pub latency_threshold_ms: Option<u64>,
    /// Burst: cloud spend per day.
    #[serde(default)]
    pub daily_cloud_budget_usd: Option<f64>,
    /// Burst: extra words that make a request sensitive.
    #[serde(default)]
    pub sensitive_keywords: Vec<String>,
    /// Burst: extra regexes that make a request sensitive.
    #[serde(default)]
    pub sensitive_patterns: Vec<String>,
    /// Burst: primary entries.
    #[serde(default)]
    pub primary: Vec<RotationEntryConfig>,
    /// Burst: secondary entries.
    #[serde(default)]
    pub secondary: Vec<RotationEntryConfig>,
    /// Seconds its answers stay cached; 0: never cached; absent: `cache.ttl_secs`.
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// `tenant` (default) or `global`: whether tenants share its cached answers.
    #[serde(default)]
    pub cache_scope: CacheScope,
}

/// One candidate of a rotation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationEntryConfig {
    /// A provider id.
    pub provider_id: String,
    /// One of that provider's models.
    pub model: String,
    /// Relative weight (> 0).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Seconds of cooldown after an error.
    #[serde(default)]
    pub error_cooldown: Option<u64>,
}

fn default_weight() -> f64 {
    1.0
}

/// `[[autoselects]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoselectConfig {
    /// Route name (`autoselect/<name>`).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// `rules`, `embedding` or `llm`.
    #[serde(default = "default_selection")]
    pub selection: String,
    /// Route used when nothing else fits.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Look for secrets and personal data.
    #[serde(default)]
    pub classify_privacy: bool,
    /// Classify the task.
    #[serde(default)]
    pub classify_semantic: bool,
    /// `llm` selection: the route that picks.
    #[serde(default)]
    pub selection_model: Option<String>,
    /// `embedding` selection: the route that embeds.
    #[serde(default)]
    pub embedding_route: Option<String>,
    /// `embedding` and `llm` selection: how long the selection call may take before the
    /// fallback is used (milliseconds).
    #[serde(default = "default_selection_timeout_ms")]
    pub selection_timeout_ms: u64,
    /// `embedding` selection: the lowest cosine similarity that counts as a match; below it the
    /// fallback is used.
    #[serde(default)]
    pub min_similarity: Option<f64>,
    /// Capability tags.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Extra words that make a request private.
    #[serde(default)]
    pub privacy_keywords: Vec<String>,
    /// Extra regexes that make a request private.
    #[serde(default)]
    pub privacy_patterns: Vec<String>,
    /// Candidates.
    #[serde(default)]
    pub available_models: Vec<AutoselectCandidateConfig>,
    /// Seconds its answers stay cached (a hit skips the selection too); 0: never cached;
    /// absent: `cache.ttl_secs`.
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// `tenant` (default) or `global`: whether tenants share its cached answers.
    #[serde(default)]
    pub cache_scope: CacheScope,
}

fn default_selection() -> String {
    "rules".into()
}

fn default_selection_timeout_ms() -> u64 {
    3_000
}

/// One candidate of an autoselect.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoselectCandidateConfig {
    /// A route name.
    pub route: String,
    /// What it is good at.
    #[serde(default)]
    pub description: String,
    /// May receive private requests.
    #[serde(default)]
    pub privacy: bool,
    /// Example prompts.
    #[serde(default)]
    pub examples: Vec<String>,
}

/// `[[prices]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Model name.
    pub model: String,
    /// Restrict to one provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// USD per 1M input tokens.
    pub input_per_million: f64,
    /// USD per 1M output tokens.
    pub output_per_million: f64,
    /// USD per 1M cached input tokens.
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// USD per 1M input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
    /// Other names of the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Settings {
    /// A configuration for tests: loopback, port 0, one worker, nothing else.
    pub fn test_default() -> Self {
        let mut s = Self::default();
        s.server.port = 0;
        s.server.workers = 1;
        s.server.shutdown_timeout_secs = 5;
        s.database.url = Secret::new("sqlite::memory:");
        s.database.max_connections = 1;
        s.usage.flush_interval_ms = 20;
        s.catalog.poll_interval_ms = 200;
        s
    }
}
