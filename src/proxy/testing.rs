//! A data plane without an HTTP server, for the phases' unit tests: a SQLite store in a temporary
//! directory, in-process shared state, one user with one token, and the catalog built from a
//! configuration given as TOML.

use std::sync::Arc;
use std::time::Duration;

use crate::accounting::{Accounting, UsageQueue};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::dialect::Dialect;
use crate::proxy::caller::Caller;
use crate::proxy::request::{Request, Scope};
use crate::proxy::state::{ProxyState, RetryBudget};
use crate::shared::membership::Membership;
use crate::shared::{MemoryShared, SharedState};
use crate::store::{NewToken, NewUser, Store, UsageRow};
use crate::types::{Operation, RequestId};
use crate::upstream::http::Clients;

/// A data plane and its caller.
pub struct Fixture {
    /// The state every phase takes.
    pub state: ProxyState,
    /// The upstream clients.
    pub clients: Clients,
    /// An authenticated user token.
    pub caller: Caller,
    queue: UsageQueue,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A chat request of the fixture's caller in its own namespace, with body `raw`.
    pub fn request<'a>(&'a self, raw: &'a [u8]) -> Request<'a> {
        Request {
            id: RequestId::new(),
            caller: &self.caller,
            op: Operation::Chat,
            scope: Scope::Owner,
            burst_mode: None,
            raw,
            dialect: Dialect::OpenAi,
            parent: None,
            sampling: crate::telemetry::Sampling::Off,
            forwarded: Vec::new(),
            cache_control: crate::cache::Directives::default(),
        }
    }

    /// A data plane over `toml` (providers, rotations, autoselects).
    pub async fn new(toml: &str) -> Self {
        let mut settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("test settings");
        settings.upstream.first_byte_timeout_ms = 2_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url, 1).await.expect("store");
        store.migrate().await.expect("migrate");
        let shared: Arc<dyn SharedState> = Arc::new(MemoryShared::new());
        let user = crate::store::create_user(
            store.conn(),
            NewUser {
                username: "alice",
                role: crate::types::Role::User,
                tier: None,
                password_hash: None,
                email: None,
                identity: None,
            },
        )
        .await
        .expect("user");
        let raw = format!("sy-{}", "ab12".repeat(16));
        let token = NewToken {
            user_id: user.id,
            name: "t".into(),
            token_hash: crate::catalog::hex(&crate::catalog::token_hash(&raw)),
            display_prefix: raw.chars().take(8).collect(),
            routes: None,
            quota_usd: None,
            rpm: Some(5),
            tpm: None,
            expires_at: None,
            created_at: crate::types::now_ms(),
            parent_id: None,
            worker_provider: None,
        };
        crate::store::create_token(store.conn(), token).await.expect("token");
        let catalog = Arc::new(Catalog::load(&settings, store.clone(), Arc::clone(&shared)).await.expect("catalog"));
        let caller = Caller(catalog.authenticate(&raw).await.expect("authenticate"));
        let metrics = Arc::new(crate::telemetry::Metrics::new().expect("metrics"));
        let (accounting, queue) = Accounting::new(100, "test", Arc::clone(&metrics));
        let membership =
            Arc::new(Membership::new(Arc::clone(&shared), "test".into(), Duration::from_secs(5), catalog.live_nodes()));
        let cache = crate::cache::ResponseCache::new(
            &settings.cache,
            Arc::new(crate::shared::cache::MemoryCache::new(settings.cache.max_bytes)),
            Duration::from_secs(10),
            Arc::clone(&metrics),
        );
        let state = ProxyState {
            cache,
            catalog,
            accounting,
            upstream: Arc::new(settings.upstream.clone()),
            max_body_bytes: 1 << 20,
            metrics,
            shared: Arc::clone(&shared),
            latency: Arc::default(),
            failing: Arc::default(),
            retries: Arc::new(RetryBudget::new(20, 3)),
            limiter: Arc::new(crate::proxy::limits::Limiter::new(Arc::clone(&shared), Arc::clone(&membership))),
            membership,
            tracing: crate::telemetry::TraceSettings::default(),
            quotas: Arc::new(crate::accounting::quota::Quotas::new(store, shared)),
            endpoint_allowlist: Arc::new(Vec::new()),
            drain: crate::types::Drain::default(),
            heavy: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        let tls = crate::upstream::http::tls_config().expect("tls");
        let clients = Clients::new(&tls, Duration::from_secs(1), Duration::from_secs(5), Arc::new(Vec::new()));
        Self { state, clients, caller, queue, _dir: dir }
    }

    /// The usage records written so far.
    pub fn records(&mut self) -> Vec<UsageRow> {
        let mut out = Vec::new();
        while let Ok(r) = self.queue.0.try_recv() {
            out.push(r);
        }
        out
    }
}

/// A configuration with two mock providers (`local`, `cloud`) and a priority rotation over them.
pub const MOCKS: &str = r#"
[[providers]]
id = "local"
type = "mock"
locality = "local"
models = [{ name = "m", context_size = 1000 }]

[[providers]]
id = "cloud"
type = "mock"
locality = "cloud"
models = [{ name = "m" }]

[[providers]]
id = "nowhere"
type = "openai"
endpoint = "http://127.0.0.1:9/v1"
models = [{ name = "m" }]

[[rotations]]
name = "r"
strategy = "priority"
entries = [{ provider_id = "nowhere", model = "m" }, { provider_id = "cloud", model = "m" }]
"#;
