//! Shared volatile state: one async trait, with an in-process implementation (embedded mode)
//! and a Redis implementation (cluster mode) that pass one contract test suite.
//!
//! What it holds: fixed-window counters, concurrency slots with leases, cooldown deadlines
//! (only ever extended), key/value with TTL, and "catalog version changed" announcements.
//! Announcements are lossy by design: subscribers also poll the stored version, so a missed
//! message costs at most one poll interval.
//!
//! Architecture Invariant: the only module that names `redis`. All key names are built in
//! `keys.rs`; every multi-step update is one Lua script.

pub mod cache;
mod keys;
pub mod membership;
mod memory;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::cache::{CacheStore, MemoryCache};
pub use self::memory::MemoryShared;
pub use self::redis::RedisShared;

/// The node registry: a slot key every node holds a lease on while it lives.
pub const NODES_KEY: &str = "nodes:live";

/// The registry entry of a node: address, version, start time, in-flight count.
pub fn node_info_key(node_id: &str) -> String {
    format!("nodes:info:{node_id}")
}

/// A shared-state operation failed (Redis unreachable, timed out, or answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct SharedError(pub String);

/// The result of adding to a windowed counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOutcome {
    /// Whether the amount was admitted (and counted).
    pub allowed: bool,
    /// The count in the current window after the call.
    pub count: u64,
    /// Milliseconds until the window resets.
    pub reset_ms: u64,
}

/// One counter of a [`SharedState::windows_add`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCheck {
    /// Counter key.
    pub key: String,
    /// Fixed window length.
    pub window_ms: u64,
    /// Amount to add; negative corrects an earlier charge (the count never goes below 0).
    pub amount: i64,
    /// The count may not exceed this (`None`: no limit). A negative amount is never refused; an
    /// amount of 0 is refused when the count has reached the limit (a spent quota).
    pub limit: Option<u64>,
}

/// The answer of [`SharedState::windows_add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Every amount was added (else none was).
    pub allowed: bool,
    /// When refused: milliseconds until the latest refusing window resets.
    pub retry_after_ms: u64,
}

/// The shared state of a cluster (or of one embedded node).
#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    /// Adds `amount` to the fixed window of `window_ms` that contains now, unless that would
    /// take the count over `limit`; a refused amount is not counted. `limit = None` always adds.
    async fn window_add(
        &self,
        key: &str,
        window_ms: u64,
        amount: u64,
        limit: Option<u64>,
    ) -> Result<WindowOutcome, SharedError>;

    /// Adds to several fixed-window counters atomically (one Lua script in Redis): either every
    /// amount is admitted and added, or none is. Rate limits (RPM and TPM of a token, a user and
    /// a tier) are checked this way in one round trip.
    async fn windows_add(&self, checks: &[WindowCheck]) -> Result<Admission, SharedError>;

    /// Sets a window counter to `value` unless it exists; returns whether it was set. Counters
    /// that mirror durable totals (quota spend) are rebuilt from the database this way.
    async fn window_init(&self, key: &str, window_ms: u64, value: u64) -> Result<bool, SharedError>;

    /// Takes one of `limit` slots for `holder` for `lease_ms` (renewing it if held already).
    /// Expired leases free their slot, so a crashed node cannot leak slots.
    async fn slot_acquire(&self, key: &str, holder: &str, limit: u64, lease_ms: u64) -> Result<bool, SharedError>;

    /// Frees `holder`'s slot.
    async fn slot_release(&self, key: &str, holder: &str) -> Result<(), SharedError>;

    /// Slots currently held.
    async fn slot_count(&self, key: &str) -> Result<u64, SharedError>;

    /// Sets the cooldown deadline (ms since the epoch) to `max(current, until_ms)` and returns it.
    async fn cooldown_extend(&self, key: &str, until_ms: i64) -> Result<i64, SharedError>;

    /// The deadline in force, or `None` when there is none or it has passed.
    async fn cooldown_until(&self, key: &str) -> Result<Option<i64>, SharedError>;

    /// Adds one to a counter that expires `ttl_ms` after its last increment, and returns the
    /// new count (consecutive failures of an upstream, cluster-wide).
    async fn streak_add(&self, key: &str, ttl_ms: u64) -> Result<u64, SharedError>;

    /// Resets a counter of [`SharedState::streak_add`] to zero.
    async fn streak_reset(&self, key: &str) -> Result<(), SharedError>;

    /// Live holders of a slot key (the node registry: who heartbeats).
    async fn slot_holders(&self, key: &str) -> Result<Vec<String>, SharedError>;

    /// Records that `request_id` on `node` is about to reach an upstream (`record`: its usage
    /// record so far, as JSON). Until finished, the orphan sweeper can finalise it.
    async fn ledger_start(&self, node: &str, request_id: &str, record: &str) -> Result<(), SharedError>;

    /// Moves finished records (request id, record JSON) of `node` into the ledger stream and
    /// drops their started entries, atomically.
    async fn ledger_finish(&self, node: &str, records: &[(String, String)]) -> Result<(), SharedError>;

    /// Drops the started entries of requests whose records are in the database already.
    async fn ledger_forget(&self, node: &str, request_ids: &[String]) -> Result<(), SharedError>;

    /// Reads up to `count` records for `consumer` of the ledger's consumer group: first those
    /// another consumer took more than `stale_ms` ago without acknowledging (a dead node's),
    /// then new ones. Returns (entry id, record JSON).
    async fn ledger_read(
        &self,
        consumer: &str,
        count: usize,
        stale_ms: u64,
    ) -> Result<Vec<(String, String)>, SharedError>;

    /// Acknowledges and removes ledger entries written to the database.
    async fn ledger_ack(&self, ids: &[String]) -> Result<(), SharedError>;

    /// The started records of nodes not in `live` (request id, record JSON), by node, at most
    /// `limit` in all.
    async fn ledger_orphans(
        &self,
        live: &[String],
        limit: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, SharedError>;

    /// Stores a value for `ttl_ms`.
    async fn kv_set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), SharedError>;

    /// The value, unless absent or expired.
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, SharedError>;

    /// Removes a value; returns whether it existed.
    async fn kv_delete(&self, key: &str) -> Result<bool, SharedError>;

    /// Announces that the catalog is now at `version` (to every node, this one included).
    async fn publish_catalog_version(&self, version: i64) -> Result<(), SharedError>;

    /// The newest catalog version announced to this node.
    fn catalog_versions(&self) -> watch::Receiver<i64>;

    /// Runs background upkeep (Redis: the subscription, reconnecting with backoff; memory:
    /// expiry sweeps) until `cancel` fires.
    async fn run(&self, cancel: CancellationToken);

    /// A round trip, for `/ready`.
    async fn ping(&self) -> Result<(), SharedError>;
}

/// Raises the announced catalog version to `version`, never lowering it.
pub(crate) fn raise_version(tx: &watch::Sender<i64>, version: i64) {
    tx.send_if_modified(|v| {
        let newer = version > *v;
        if newer {
            *v = version;
        }
        newer
    });
}

/// Builds the shared state the settings ask for and the response cache's store beside it: in
/// process (bounded by `cache_bytes`), or the same Redis.
pub async fn connect_with_cache(
    url: Option<&str>,
    key_prefix: &str,
    pool_size: usize,
    cache_bytes: u64,
) -> Result<(Arc<dyn SharedState>, Arc<dyn CacheStore>), SharedError> {
    match url {
        None => Ok((Arc::new(MemoryShared::new()), Arc::new(MemoryCache::new(cache_bytes)))),
        Some(url) => {
            let redis = Arc::new(RedisShared::connect(url, key_prefix, pool_size).await?);
            let state: Arc<dyn SharedState> = redis.clone();
            Ok((state, redis))
        }
    }
}

/// Builds the shared state the settings ask for.
pub async fn connect(
    url: Option<&str>,
    key_prefix: &str,
    pool_size: usize,
) -> Result<Arc<dyn SharedState>, SharedError> {
    match url {
        None => Ok(Arc::new(MemoryShared::new())),
        Some(url) => Ok(Arc::new(RedisShared::connect(url, key_prefix, pool_size).await?)),
    }
}
