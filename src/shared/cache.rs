//! The response cache's store: one small trait, an in-process implementation bounded by bytes
//! (moka: TinyLFU admission, LRU eviction, per-entry TTL) and the Redis one (in `redis.rs`,
//! behind the same breaker as every other Redis call). Values are opaque bytes; what they hold
//! and how keys are derived is the `cache` module's business.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::shared::SharedError;

/// The key of one cached answer: whose it is, which route, and the digest of everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The tenant; `None`: an entry of a `global` route, which no tenant owns.
    pub owner: Option<i64>,
    /// The route's tag ([`route_tag`]).
    pub route: u64,
    /// SHA-256 over the owner, the route, the dialect, the stream flag and the canonical body.
    pub digest: [u8; 32],
}

/// A route's tag in cache keys and purges: the first 8 bytes of its name's SHA-256.
pub fn route_tag(route: &str) -> u64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(route.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// What a purge covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PurgeScope {
    /// Every entry.
    All,
    /// Every entry of one tenant (not those of `global` routes, which no tenant owns).
    User(i64),
    /// Every entry of one route (by [`route_tag`]), whoever's.
    Route(u64),
    /// One tenant's entries of one route.
    UserRoute(i64, u64),
}

impl PurgeScope {
    /// Whether the entry of `key` is covered.
    pub fn covers(self, key: &CacheKey) -> bool {
        match self {
            Self::All => true,
            Self::User(u) => key.owner == Some(u),
            Self::Route(r) => key.route == r,
            Self::UserRoute(u, r) => key.owner == Some(u) && key.route == r,
        }
    }
}

/// What an in-process cache holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Entries.
    pub entries: u64,
    /// Bytes, as weighed (values and keys).
    pub bytes: u64,
    /// Entries evicted for room since the start.
    pub evictions: u64,
}

/// Where cached answers are kept.
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    /// The value, unless absent or expired.
    async fn cache_get(&self, key: &CacheKey) -> Result<Option<Bytes>, SharedError>;

    /// Stores a value for `ttl` (replacing any).
    async fn cache_put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), SharedError>;

    /// Removes the entries `scope` covers; returns how many there were.
    async fn cache_purge(&self, scope: PurgeScope) -> Result<u64, SharedError>;

    /// Entries, bytes and evictions, for an in-process store (Redis reports its own).
    async fn cache_usage(&self) -> Option<CacheUsage>;
}

/// Bytes an entry weighs besides its value: the key, moka's bookkeeping (its map entry, the
/// access and write orders, the expiry timer) and the allocator's share, so that the bound is
/// close to the memory the cache really holds (measured by `cargo bench --bench cache`).
const ENTRY_OVERHEAD: usize = 512;

#[derive(Clone)]
struct Stored {
    value: Bytes,
    ttl: Duration,
}

struct PerEntry;

impl moka::Expiry<CacheKey, Stored> for PerEntry {
    fn expire_after_create(&self, _: &CacheKey, v: &Stored, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(&self, _: &CacheKey, v: &Stored, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// The in-process store: at most `max_bytes` of entries (values as stored, plus a fixed
/// overhead each); beyond it moka evicts by TinyLFU (a new entry rarely asked for may be the one
/// left out).
pub struct MemoryCache {
    cache: moka::future::Cache<CacheKey, Stored>,
    evictions: Arc<AtomicU64>,
}

impl MemoryCache {
    /// A store bounded by `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Stored| {
                u32::try_from(v.value.len().saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntry)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { cache, evictions }
    }

    /// Runs moka's pending upkeep (evictions, expiries, counts) now; tests and benchmarks read
    /// exact figures after it.
    pub async fn settle(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn cache_get(&self, key: &CacheKey) -> Result<Option<Bytes>, SharedError> {
        Ok(self.cache.get(key).await.map(|s| s.value))
    }

    async fn cache_put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), SharedError> {
        self.cache.insert(*key, Stored { value, ttl }).await;
        Ok(())
    }

    async fn cache_purge(&self, scope: PurgeScope) -> Result<u64, SharedError> {
        let keys: Vec<CacheKey> = self.cache.iter().filter(|(k, _)| scope.covers(k)).map(|(k, _)| *k).collect();
        let mut n = 0;
        for k in keys {
            if self.cache.remove(&k).await.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn cache_usage(&self) -> Option<CacheUsage> {
        // Counts are kept by moka's upkeep: run what is pending first.
        self.cache.run_pending_tasks().await;
        Some(CacheUsage {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: Option<i64>, route: u64, n: u8) -> CacheKey {
        CacheKey { owner, route, digest: [n; 32] }
    }

    #[tokio::test]
    async fn the_memory_store_keeps_expires_purges_and_stays_in_its_bound() {
        let c = MemoryCache::new(64 * 1024);
        let k = key(Some(1), 10, 1);
        c.cache_put(&k, Bytes::from_static(b"v"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.cache_get(&k).await.unwrap().as_deref(), Some(&b"v"[..]));
        let short = key(Some(1), 10, 2);
        c.cache_put(&short, Bytes::from_static(b"w"), Duration::from_millis(30)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(c.cache_get(&short).await.unwrap(), None, "expired");
        c.cache_put(&key(Some(2), 10, 3), Bytes::from_static(b"x"), Duration::from_secs(60)).await.unwrap();
        c.cache_put(&key(None, 11, 4), Bytes::from_static(b"y"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.cache_purge(PurgeScope::User(1)).await.unwrap(), 1);
        assert_eq!(c.cache_get(&k).await.unwrap(), None);
        assert_eq!(c.cache_purge(PurgeScope::Route(11)).await.unwrap(), 1);
        assert!(c.cache_get(&key(Some(2), 10, 3)).await.unwrap().is_some(), "another tenant's entry stays");
        // Far more than the bound: the store evicts down to it.
        let big = Bytes::from(vec![7u8; 4096]);
        for n in 0..100u8 {
            c.cache_put(&key(Some(3), 12, n), big.clone(), Duration::from_secs(60)).await.unwrap();
        }
        c.settle().await;
        let usage = c.cache_usage().await.unwrap();
        assert!(usage.bytes <= 64 * 1024, "{usage:?}");
        assert!(usage.evictions > 0, "{usage:?}");
    }
}
