//! The response cache (SPEC §10): exact-match, scoped to the tenant unless a route is `global`,
//! kept in the shared state's store (Redis in a cluster, a bounded in-process store embedded).
//!
//! The data plane asks [`ResponseCache::lookup`] after admission with the request's key
//! ([`key::derive`]) and its `Cache-Control` ([`Directives`]); [`decide`] — a pure function of
//! the route's TTL, the directives and the kind of request — says how the request uses the cache.
//! A miss carries a [`Fill`]: the answer is stored through it only when it is a complete 200 (a
//! whole body, or a stream [`Capture`]d event by event and completed after its last event).
//! Identical misses on one node coalesce ([`flight`]). A store that fails (Redis down: its
//! breaker answers at once) makes the request a bypass, never an error.
//!
//! Architecture Invariant: knows nothing of HTTP, tenants' tokens or the proxy's phases; the
//! proxy hands it keys, entries and policies.

pub mod entry;
pub mod flight;
pub mod key;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::CacheSettings;
use crate::shared::SharedError;
use crate::shared::cache::{CacheKey, CacheStore, PurgeScope};
use crate::telemetry::Metrics;
use crate::types::{Usage, now_ms};

pub use entry::{Entry, Frame, Stored};
pub use flight::{Flights, Joined};

/// The request's `Cache-Control`, as far as the cache reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: neither read nor write.
    pub no_store: bool,
    /// `no-cache`: skip the read, store the answer.
    pub no_cache: bool,
    /// `max-age=N`: only an entry at most N seconds old.
    pub max_age: Option<u64>,
}

impl Directives {
    /// Reads a `Cache-Control` header (directives are case-insensitive; unknown ones ignored;
    /// a `max-age` that is not a number is ignored).
    pub fn parse(header: Option<&str>) -> Self {
        let mut d = Self::default();
        for part in header.unwrap_or_default().split(',') {
            let part = part.trim();
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age")
                && let Some(n) = value.and_then(|v| v.parse::<u64>().ok())
            {
                d.max_age = Some(d.max_age.map_or(n, |m| m.min(n)));
            }
        }
        d
    }
}

/// What the cache said of a request (`X-Switchyard-Cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Served from the cache.
    Hit,
    /// Served by an upstream (and stored if it was complete).
    Miss,
    /// The cache was skipped (`no-store`, or its store unreachable).
    Bypass,
}

impl Status {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// How one request uses the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Caching does not apply (the route's TTL is 0, or the request is the gateway's own).
    Off,
    /// `no-store`: neither read nor write.
    Bypass,
    /// Read (an entry at most `max_age` seconds old, if set), else store the answer for `ttl`.
    Read {
        /// How long a stored answer lives.
        ttl: Duration,
        /// The oldest entry the request accepts.
        max_age: Option<u64>,
    },
    /// `no-cache`: store the answer for `ttl` without reading.
    Refresh {
        /// How long a stored answer lives.
        ttl: Duration,
    },
}

/// How a request uses the cache, from the route's TTL (`None`: the route is not cached), its
/// directives, and whether it is the gateway's own call (an autoselect's selection call).
pub fn decide(ttl: Option<Duration>, d: Directives, internal: bool) -> Use {
    let Some(ttl) = ttl.filter(|t| !t.is_zero() && !internal) else { return Use::Off };
    if d.no_store {
        Use::Bypass
    } else if d.no_cache {
        Use::Refresh { ttl }
    } else {
        Use::Read { ttl, max_age: d.max_age }
    }
}

/// A stored answer found for a request.
pub struct Hit {
    /// The answer.
    pub entry: Entry,
    /// Its age in seconds (`Age`).
    pub age_secs: u64,
}

/// What the cache made of a request.
pub enum Lookup {
    /// Caching does not apply: no header.
    Off,
    /// Skipped (`no-store`, or the store is unreachable): served by an upstream, not stored.
    Bypass,
    /// Served from the cache.
    Hit(Hit),
    /// Served by an upstream; a complete answer is stored through the fill.
    Miss(Fill),
}

impl Lookup {
    /// The `X-Switchyard-Cache` value, when caching applies.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Off => None,
            Self::Bypass => Some(Status::Bypass),
            Self::Hit(_) => Some(Status::Hit),
            Self::Miss(_) => Some(Status::Miss),
        }
    }
}

/// The response cache of a node.
pub struct ResponseCache {
    store: Arc<dyn CacheStore>,
    default_ttl: Duration,
    max_entry_bytes: usize,
    /// How long a follower waits for its flight's leader (the longest a request may take).
    wait: Duration,
    flights: Flights,
    metrics: Arc<Metrics>,
    exporting: std::sync::Mutex<()>,
}

impl ResponseCache {
    /// The node's cache, or `None` when `[cache] enabled` is off.
    pub fn new(
        settings: &CacheSettings,
        store: Arc<dyn CacheStore>,
        wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Option<Arc<Self>> {
        settings.enabled.then(|| {
            Arc::new(Self {
                store,
                default_ttl: Duration::from_secs(settings.ttl_secs),
                max_entry_bytes: settings.max_entry_bytes,
                wait,
                flights: Flights::default(),
                metrics,
                exporting: std::sync::Mutex::new(()),
            })
        })
    }

    /// `"memory"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    /// The TTL of a route that sets `ttl_secs` (or not); `None` when it is not cached.
    pub fn ttl(&self, ttl_secs: Option<u64>) -> Option<Duration> {
        let ttl = ttl_secs.map_or(self.default_ttl, Duration::from_secs);
        (!ttl.is_zero()).then_some(ttl)
    }

    /// Looks the request up as `how` says; its key, and `purged_at` of it (the latest purge
    /// covering its tenant or route, ms since the epoch: an entry no newer is not served), are
    /// derived only when the cache is used. `stream`: the request streams (an entry of the other
    /// kind is never served, whatever its key).
    pub async fn lookup(
        self: &Arc<Self>,
        key: impl FnOnce() -> CacheKey,
        purged_at: impl FnOnce(&CacheKey) -> i64,
        how: Use,
        stream: bool,
    ) -> Lookup {
        let key = match how {
            Use::Off => return Lookup::Off,
            Use::Bypass => return self.count(Lookup::Bypass),
            Use::Refresh { .. } | Use::Read { .. } => key(),
        };
        let purged_at = purged_at(&key);
        let (ttl, max_age) = match how {
            Use::Off | Use::Bypass => return Lookup::Off,
            Use::Refresh { ttl } => {
                // It leads a flight when none is in progress, so identical requests arriving
                // while its answer is stored wait for it.
                let leader = match self.flights.join(key) {
                    Joined::Leader(l) => Some(l),
                    Joined::Follower(_) => None,
                };
                return self.count(Lookup::Miss(self.fill(key, ttl, leader)));
            }
            Use::Read { ttl, max_age } => (ttl, max_age),
        };
        let limit = self.max_entry_bytes.saturating_add(64 * 1024);
        // Read; on a miss lead the flight, or follow it and read once more when it lands. A
        // follower whose leader stored nothing (it failed) goes upstream itself.
        let mut followed = false;
        loop {
            match self.store.cache_get(&key).await {
                Err(e) => {
                    tracing::debug!(error = %e, "Response cache unreachable; bypassing it.");
                    return self.count(Lookup::Bypass);
                }
                Ok(Some(bytes)) => {
                    if let Some(hit) = usable(&bytes, limit, max_age, purged_at, stream) {
                        return self.count(Lookup::Hit(hit));
                    }
                }
                Ok(None) => {}
            }
            if followed {
                return self.count(Lookup::Miss(self.fill(key, ttl, None)));
            }
            match self.flights.join(key) {
                Joined::Leader(leader) => return self.count(Lookup::Miss(self.fill(key, ttl, Some(leader)))),
                Joined::Follower(rx) => {
                    followed = true;
                    if tokio::time::timeout(self.wait, flight::landed(rx)).await.is_err() {
                        return self.count(Lookup::Miss(self.fill(key, ttl, None)));
                    }
                }
            }
        }
    }

    fn fill(self: &Arc<Self>, key: CacheKey, ttl: Duration, leader: Option<flight::Leader>) -> Fill {
        Fill { cache: Arc::clone(self), key, ttl, leader, asked_ms: now_ms() }
    }

    fn count(&self, l: Lookup) -> Lookup {
        if let Some(s) = l.status() {
            self.metrics.cache_requests.with_label_values(&[s.as_str()]).inc();
        }
        l
    }

    /// Removes the entries `scope` covers from the store (a purge's mark, in the catalog, covers
    /// every node; this frees the room now). Returns how many there were.
    pub async fn purge(&self, scope: PurgeScope) -> Result<u64, SharedError> {
        let n = self.store.cache_purge(scope).await?;
        self.export().await;
        Ok(n)
    }

    /// Copies the store's entries, bytes and evictions to the metrics (in process; a Redis
    /// cache's are Redis's own: `INFO`).
    pub async fn export(&self) {
        if let Some(u) = self.store.cache_usage().await {
            let m = &self.metrics;
            m.cache_entries.set(i64::try_from(u.entries).unwrap_or(i64::MAX));
            m.cache_bytes.set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
            // Read and raised under one lock: concurrent scrapes add each eviction once.
            let _one = self.exporting.lock();
            m.cache_evictions.inc_by(u.evictions.saturating_sub(m.cache_evictions.get()));
        }
    }

    /// Entries, bytes and evictions of an in-process store (`None` for Redis).
    pub async fn usage(&self) -> Option<crate::shared::cache::CacheUsage> {
        self.store.cache_usage().await
    }

    /// Identical misses in flight on this node now.
    pub fn flights(&self) -> usize {
        self.flights.len()
    }
}

/// The hit an entry (of at most `limit` bytes decoded) gives a request, if it may serve it:
/// of the request's kind, made after the latest purge covering it, and younger than `max_age`.
fn usable(bytes: &[u8], limit: usize, max_age: Option<u64>, purged_at: i64, stream: bool) -> Option<Hit> {
    let entry = Entry::decode(bytes, limit)?;
    if entry.created_ms <= purged_at || matches!(entry.body, Stored::Stream(_)) != stream {
        return None;
    }
    let age_ms = u64::try_from(now_ms().saturating_sub(entry.created_ms)).unwrap_or(0);
    if max_age.is_some_and(|m| age_ms >= m.saturating_mul(1000)) {
        return None;
    }
    Some(Hit { entry, age_secs: age_ms / 1000 })
}

/// How a miss's answer is stored. Dropped unused (an error, a refusal, a cut stream, an answer
/// over the size limit), it stores nothing and lets the flight's followers go on their own.
pub struct Fill {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    ttl: Duration,
    leader: Option<flight::Leader>,
    /// When the request looked the cache up: the entry's time (a purge after it covers it;
    /// `Age` counts from it).
    asked_ms: i64,
}

/// How long an answer waits for its entry to be stored before it is sent on (the store goes on
/// in the background beyond it): long enough for Redis, so the next request on any node reads
/// it; short enough that a slow Redis does not hold answers.
const STORE_WAIT: Duration = Duration::from_millis(250);

impl Fill {
    /// Stores a complete answer; returns when it is stored, or after [`STORE_WAIT`] (the flight
    /// lands when it is stored).
    pub async fn store(self, mut entry: Entry) {
        if entry.body_bytes() > self.cache.max_entry_bytes {
            return;
        }
        let Self { cache, key, ttl, leader, asked_ms } = self;
        entry.created_ms = asked_ms;
        let put = tokio::spawn(async move {
            let bytes = entry.encode();
            let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            match cache.store.cache_put(&key, bytes, ttl).await {
                Ok(()) => {
                    cache.metrics.cache_stored_bytes.inc_by(len);
                }
                Err(e) => tracing::debug!(error = %e, "Could not store an answer in the response cache."),
            }
            drop(leader);
        });
        let _ = tokio::time::timeout(STORE_WAIT, put).await;
    }

    /// A whole answer's entry, stored.
    pub async fn store_whole(self, body: Bytes, provider: &str, model: &str, usage: Usage, estimated: bool) {
        self.store(Entry {
            created_ms: now_ms(),
            provider: provider.to_owned(),
            model: model.to_owned(),
            usage,
            estimated,
            body: Stored::Whole(body),
        })
        .await;
    }

    /// Starts capturing a stream's events for the entry.
    pub fn capture(self, provider: &str, model: &str) -> Capture {
        let limit = self.cache.max_entry_bytes;
        Capture {
            fill: self,
            provider: provider.to_owned(),
            model: model.to_owned(),
            frames: Vec::new(),
            bytes: 0,
            limit,
        }
    }
}

/// A stream's events on their way to the client, kept for the cache; stored only when the
/// stream completes. Over the size limit, it keeps nothing more and stores nothing.
pub struct Capture {
    fill: Fill,
    provider: String,
    model: String,
    frames: Vec<Frame>,
    bytes: usize,
    limit: usize,
}

impl Capture {
    /// One event as the client receives it (or, `usage_only`, the usage chunk only a client
    /// asking for usage receives).
    pub fn frame(&mut self, bytes: &Bytes, usage_only: bool) {
        self.bytes = self.bytes.saturating_add(bytes.len());
        if self.bytes <= self.limit {
            self.frames.push(Frame { bytes: bytes.clone(), usage_only });
        } else if !self.frames.is_empty() {
            self.frames = Vec::new();
        }
    }

    /// The stream completed with `usage`: its entry is stored (see [`Fill::store`]).
    pub async fn complete(self, usage: Usage, estimated: bool) {
        if self.bytes > self.limit {
            return;
        }
        self.fill
            .store(Entry {
                created_ms: now_ms(),
                provider: self.provider,
                model: self.model,
                usage,
                estimated,
                body: Stored::Stream(self.frames),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_forms() {
        let p = |h: &str| Directives::parse(Some(h));
        assert_eq!(p("no-store"), Directives { no_store: true, ..Directives::default() });
        assert_eq!(p("No-Cache"), Directives { no_cache: true, ..Directives::default() });
        assert_eq!(p("max-age=60"), Directives { max_age: Some(60), ..Directives::default() });
        assert_eq!(p(" max-age = \"30\" , max-age=90"), Directives { max_age: Some(30), ..Directives::default() });
        assert_eq!(p("max-age=soon, private"), Directives::default());
        assert_eq!(Directives::parse(None), Directives::default());
        let ttl = Some(Duration::from_secs(60));
        assert_eq!(decide(ttl, p("no-store, no-cache"), false), Use::Bypass);
        assert_eq!(decide(ttl, p("no-cache"), false), Use::Refresh { ttl: Duration::from_secs(60) });
        assert_eq!(decide(ttl, p("max-age=5"), false), Use::Read { ttl: Duration::from_secs(60), max_age: Some(5) });
        assert_eq!(decide(None, p(""), false), Use::Off);
        assert_eq!(decide(Some(Duration::ZERO), p(""), false), Use::Off);
        assert_eq!(decide(ttl, p(""), true), Use::Off, "the gateway's own calls are not cached");
    }

    #[test]
    fn an_entry_serves_only_its_kind_when_fresh_and_unpurged() {
        let e = |created_ms, body| {
            Entry {
                created_ms,
                provider: "p".into(),
                model: "m".into(),
                usage: Usage::default(),
                estimated: false,
                body,
            }
            .encode()
        };
        let now = now_ms();
        let l = 1 << 20;
        let whole = e(now - 10_000, Stored::Whole(Bytes::from_static(b"{}")));
        assert_eq!(usable(&whole, l, None, 0, false).map(|h| h.age_secs), Some(10));
        assert!(usable(&whole, l, None, 0, true).is_none(), "a stream never gets a whole answer");
        assert!(usable(&whole, l, Some(5), 0, false).is_none(), "older than max-age");
        assert!(usable(&whole, l, Some(10), 0, false).is_none(), "max-age takes only younger entries");
        assert!(usable(&whole, l, Some(11), 0, false).is_some());
        assert!(usable(&whole, l, None, now - 10_000, false).is_none(), "purged");
        assert!(usable(&whole, l, None, now - 20_000, false).is_some(), "stored after the purge");
        let stream = e(now, Stored::Stream(vec![]));
        assert!(usable(&stream, l, None, 0, false).is_none(), "a whole request never gets a stream");
        assert!(usable(&stream, l, None, 0, true).is_some());
        assert!(usable(&stream, l, Some(0), 0, true).is_none(), "max-age=0 takes nothing");
        assert!(usable(b"garbage", l, None, 0, false).is_none());
    }
}
