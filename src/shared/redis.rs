//! Shared state in Redis (deadpool-redis pool, one subscription connection).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt as _;
use redis::{AsyncCommands, Script};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::shared::keys::Keys;
use crate::shared::{Admission, SharedError, SharedState, WindowCheck, WindowOutcome};
use crate::types::now_ms;

/// Every Redis call gives up after this long, so a hung Redis cannot hang a request.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// While Redis is unreachable, one call per this period (per node) tries it; the others fail at
/// once (TESTPLAN F7: at most 2 reconnect attempts per second per node, and no request waits
/// on a dead Redis).
const RETRY_PERIOD_MS: i64 = 1_000;

/// A circuit breaker over the connection: closed (0) or open until a time (ms since the epoch).
#[derive(Default)]
struct Breaker {
    open_until: std::sync::atomic::AtomicI64,
}

impl Breaker {
    /// Whether this call may try Redis.
    fn admit(&self) -> Result<(), SharedError> {
        use std::sync::atomic::Ordering;
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = now_ms();
        // Past the period: the first caller probes, the others keep failing fast.
        if now >= until
            && self
                .open_until
                .compare_exchange(until, now + RETRY_PERIOD_MS, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        Err(SharedError("redis is unreachable; retrying shortly".into()))
    }

    fn failed(&self) {
        use std::sync::atomic::Ordering;
        if self.open_until.swap(now_ms() + RETRY_PERIOD_MS, Ordering::AcqRel) == 0 {
            tracing::warn!("Redis unreachable; shared state falls back to node-local until it returns.");
        }
    }

    fn succeeded(&self) {
        use std::sync::atomic::Ordering;
        if self.open_until.load(Ordering::Acquire) != 0 && self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("Redis reachable again.");
        }
    }
}

struct Scripts {
    window: Script,
    windows_add: Script,
    window_init: Script,
    slot_holders: Script,
    ledger_finish: Script,
    slot_acquire: Script,
    slot_count: Script,
    cooldown_extend: Script,
    publish_version: Script,
}

/// Shared state in Redis.
pub struct RedisShared {
    client: redis::Client,
    pool: Pool,
    keys: Keys,
    scripts: Arc<Scripts>,
    version_tx: watch::Sender<i64>,
    breaker: Breaker,
}

fn err(e: impl std::fmt::Display) -> SharedError {
    SharedError(e.to_string())
}

impl RedisShared {
    /// Connects and checks the server answers.
    pub async fn connect(url: &str, key_prefix: &str, pool_size: usize) -> Result<Self, SharedError> {
        let client = redis::Client::open(url).map_err(|e| SharedError(format!("invalid redis url: {:?}", e.kind())))?;
        let mut cfg = deadpool_redis::Config::from_url(url);
        let mut pool_cfg = PoolConfig::new(pool_size.max(1));
        pool_cfg.timeouts = Timeouts { wait: Some(OP_TIMEOUT), create: Some(OP_TIMEOUT), recycle: Some(OP_TIMEOUT) };
        cfg.pool = Some(pool_cfg);
        let pool = cfg.create_pool(Some(Runtime::Tokio1)).map_err(err)?;
        let me = Self {
            client,
            pool,
            keys: Keys::new(key_prefix),
            scripts: Arc::new(Scripts {
                window: Script::new(include_str!("lua/window.lua")),
                windows_add: Script::new(include_str!("lua/windows_add.lua")),
                window_init: Script::new(include_str!("lua/window_init.lua")),
                slot_holders: Script::new(include_str!("lua/slot_holders.lua")),
                ledger_finish: Script::new(include_str!("lua/ledger_finish.lua")),
                slot_acquire: Script::new(include_str!("lua/slot_acquire.lua")),
                slot_count: Script::new(include_str!("lua/slot_count.lua")),
                cooldown_extend: Script::new(include_str!("lua/cooldown_extend.lua")),
                publish_version: Script::new(include_str!("lua/publish_version.lua")),
            }),
            version_tx: watch::Sender::new(0),
            breaker: Breaker::default(),
        };
        me.ping().await?;
        Ok(me)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, SharedError> {
        self.breaker.admit()?;
        self.pool.get().await.map_err(|e| {
            self.breaker.failed();
            err(e)
        })
    }

    async fn timed<T>(&self, fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, SharedError> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                // A command error (a script's, a type's) says Redis is there; a transport one
                // says it is not.
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    self.breaker.failed();
                }
                Err(err(e))
            }
            Err(_) => {
                self.breaker.failed();
                Err(SharedError("redis did not answer in time".into()))
            }
        }
    }

    async fn subscribe_once(&self, cancel: &CancellationToken) -> Result<(), SharedError> {
        let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
        self.timed(pubsub.subscribe(self.keys.catalog_channel())).await?;
        // Catch up on anything announced while we were not subscribed.
        let mut conn = self.conn().await?;
        let stored: Option<i64> = self.timed(conn.get(self.keys.catalog_version())).await?;
        drop(conn);
        if let Some(v) = stored {
            self.bump(v);
        }
        // Announcements made while we were away are lost (pub/sub is at-most-once, and a Redis
        // that restarted empty holds no version either): tell the catalog to compare its
        // version with the database's.
        self.version_tx.send_modify(|_| {});
        tracing::info!("Subscribed to catalog announcements.");
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                msg = messages.next() => match msg {
                    Some(m) => {
                        if let Ok(v) = m.get_payload::<i64>() {
                            self.bump(v);
                        }
                    }
                    None => return Err(SharedError("subscription closed".into())),
                },
            }
        }
    }

    fn bump(&self, version: i64) {
        crate::shared::raise_version(&self.version_tx, version);
    }
}

/// The consumer group every node's ledger writer joins.
const LEDGER_GROUP: &str = "writers";

/// (id, record) of stream entries `[[id, [field, value, …]], …]`.
fn stream_entries(v: &redis::Value) -> Vec<(String, String)> {
    let redis::Value::Array(entries) = v else { return Vec::new() };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    entries
        .iter()
        .filter_map(|e| {
            let redis::Value::Array(pair) = e else { return None };
            let id = text(pair.first()?)?;
            let redis::Value::Array(fields) = pair.get(1)? else { return None };
            let rec =
                fields.chunks(2).find(|kv| kv.first().and_then(text).as_deref() == Some("r"))?.get(1).and_then(text)?;
            Some((id, rec))
        })
        .collect()
}

#[async_trait]
impl crate::shared::cache::CacheStore for RedisShared {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn cache_get(&self, key: &crate::shared::cache::CacheKey) -> Result<Option<bytes::Bytes>, SharedError> {
        let mut conn = self.conn().await?;
        let v: Option<Vec<u8>> = self.timed(conn.get(self.keys.cache(key))).await?;
        Ok(v.map(bytes::Bytes::from))
    }

    async fn cache_put(
        &self,
        key: &crate::shared::cache::CacheKey,
        value: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = self.timed(conn.pset_ex(self.keys.cache(key), value.as_ref(), ms)).await?;
        Ok(())
    }

    async fn cache_purge(&self, scope: crate::shared::cache::PurgeScope) -> Result<u64, SharedError> {
        // SCAN, not KEYS: Redis keeps serving while the keyspace is walked.
        let pattern = self.keys.cache_pattern(scope);
        let mut conn = self.conn().await?;
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .timed(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            if !keys.is_empty() {
                let n: u64 = self.timed(redis::cmd("UNLINK").arg(&keys).query_async(&mut conn)).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn cache_usage(&self) -> Option<crate::shared::cache::CacheUsage> {
        None
    }
}

fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

#[async_trait]
impl SharedState for RedisShared {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn window_add(
        &self,
        key: &str,
        window_ms: u64,
        amount: u64,
        limit: Option<u64>,
    ) -> Result<WindowOutcome, SharedError> {
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.window.key(self.keys.window(key));
        inv.arg(window_ms.max(1)).arg(amount).arg(limit_arg(limit));
        let (allowed, count, reset): (i64, u64, u64) = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(WindowOutcome { allowed: allowed == 1, count, reset_ms: reset })
    }

    async fn windows_add(&self, checks: &[WindowCheck]) -> Result<Admission, SharedError> {
        if checks.is_empty() {
            return Ok(Admission { allowed: true, retry_after_ms: 0 });
        }
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.windows_add.prepare_invoke();
        for c in checks {
            inv.key(self.keys.window(&c.key));
            inv.arg(c.window_ms.max(1)).arg(c.amount).arg(limit_arg(c.limit));
        }
        let (allowed, wait): (i64, u64) = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(Admission { allowed: allowed == 1, retry_after_ms: wait })
    }

    async fn window_init(&self, key: &str, window_ms: u64, value: u64) -> Result<bool, SharedError> {
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.window_init.key(self.keys.window(key));
        inv.arg(window_ms.max(1)).arg(value);
        let set: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(set == 1)
    }

    async fn slot_acquire(&self, key: &str, holder: &str, limit: u64, lease_ms: u64) -> Result<bool, SharedError> {
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.slot_acquire.key(self.keys.slots(key));
        inv.arg(holder).arg(limit).arg(lease_ms.max(1));
        let got: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(got == 1)
    }

    async fn slot_release(&self, key: &str, holder: &str) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let _: i64 = self.timed(conn.zrem(self.keys.slots(key), holder)).await?;
        Ok(())
    }

    async fn slot_count(&self, key: &str) -> Result<u64, SharedError> {
        let mut conn = self.conn().await?;
        let inv = self.scripts.slot_count.key(self.keys.slots(key));
        self.timed(inv.invoke_async(&mut conn)).await
    }

    async fn cooldown_extend(&self, key: &str, until_ms: i64) -> Result<i64, SharedError> {
        let now = now_ms();
        let mut conn = self.conn().await?;
        if until_ms <= now {
            let cur: Option<i64> = self.timed(conn.get(self.keys.cooldown(key))).await?;
            return Ok(cur.unwrap_or(0).max(until_ms));
        }
        let mut inv = self.scripts.cooldown_extend.key(self.keys.cooldown(key));
        inv.arg(until_ms);
        self.timed(inv.invoke_async(&mut conn)).await
    }

    async fn cooldown_until(&self, key: &str) -> Result<Option<i64>, SharedError> {
        let mut conn = self.conn().await?;
        let cur: Option<i64> = self.timed(conn.get(self.keys.cooldown(key))).await?;
        let now = now_ms();
        Ok(cur.filter(|d| *d > now))
    }

    async fn kv_set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let _: () = self.timed(conn.pset_ex(self.keys.kv(key), value, ttl_ms.max(1))).await?;
        Ok(())
    }

    async fn streak_add(&self, key: &str, ttl_ms: u64) -> Result<u64, SharedError> {
        let mut conn = self.conn().await?;
        let k = self.keys.streak(key);
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&k, 1u64).pexpire(&k, i64::try_from(ttl_ms.max(1)).unwrap_or(i64::MAX)).ignore();
        let (n,): (u64,) = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(n)
    }

    async fn streak_reset(&self, key: &str) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let _: i64 = self.timed(conn.del(self.keys.streak(key))).await?;
        Ok(())
    }

    async fn slot_holders(&self, key: &str) -> Result<Vec<String>, SharedError> {
        let mut conn = self.conn().await?;
        let inv = self.scripts.slot_holders.key(self.keys.slots(key));
        self.timed(inv.invoke_async(&mut conn)).await
    }

    async fn ledger_start(&self, node: &str, request_id: &str, record: &str) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(self.keys.ledger_started(node), request_id, record)
            .ignore()
            .sadd(self.keys.ledger_nodes(), node)
            .ignore();
        let _: () = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn ledger_finish(&self, node: &str, records: &[(String, String)]) -> Result<(), SharedError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.ledger_finish.prepare_invoke();
        inv.key(self.keys.ledger_stream()).key(self.keys.ledger_started(node)).key(self.keys.ledger_nodes());
        inv.arg(node);
        for (rid, rec) in records {
            inv.arg(rid).arg(rec);
        }
        let _: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn ledger_read(
        &self,
        consumer: &str,
        count: usize,
        stale_ms: u64,
    ) -> Result<Vec<(String, String)>, SharedError> {
        let mut conn = self.conn().await?;
        let stream = self.keys.ledger_stream();
        // The group is created once (MKSTREAM); "already exists" is expected afterwards.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(LEDGER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(err(e));
        }
        let mut out = Vec::new();
        // A dead consumer's entries first.
        let claimed: redis::Value = self
            .timed(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(LEDGER_GROUP)
                    .arg(consumer)
                    .arg(stale_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        if let redis::Value::Array(parts) = claimed
            && let Some(entries) = parts.get(1)
        {
            out.extend(stream_entries(entries));
        }
        if out.len() < count {
            let read: redis::Value = self
                .timed(
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(LEDGER_GROUP)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(count - out.len())
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">")
                        .query_async(&mut conn),
                )
                .await?;
            // [[stream, [entries…]]] (or nil when there is nothing new).
            if let redis::Value::Array(streams) = read {
                for s in streams {
                    if let redis::Value::Array(pair) = s
                        && let Some(entries) = pair.get(1)
                    {
                        out.extend(stream_entries(entries));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn ledger_forget(&self, node: &str, request_ids: &[String]) -> Result<(), SharedError> {
        if request_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let started = self.keys.ledger_started(node);
        let mut pipe = redis::pipe();
        pipe.hdel(&started, request_ids).ignore().hlen(&started);
        let (left,): (i64,) = self.timed(pipe.query_async(&mut conn)).await?;
        if left == 0 {
            let _: i64 = self.timed(conn.srem(self.keys.ledger_nodes(), node)).await?;
        }
        Ok(())
    }

    async fn ledger_ack(&self, ids: &[String]) -> Result<(), SharedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let stream = self.keys.ledger_stream();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(&stream).arg(LEDGER_GROUP).arg(ids).ignore();
        pipe.cmd("XDEL").arg(&stream).arg(ids).ignore();
        let _: () = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn ledger_orphans(
        &self,
        live: &[String],
        limit: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, SharedError> {
        let mut conn = self.conn().await?;
        let nodes: Vec<String> = self.timed(conn.smembers(self.keys.ledger_nodes())).await?;
        let mut out = Vec::new();
        let mut left = limit;
        for node in nodes.into_iter().filter(|n| !live.contains(n)) {
            if left == 0 {
                break;
            }
            let all: Vec<(String, String)> = self.timed(conn.hgetall(self.keys.ledger_started(&node))).await?;
            let take: Vec<(String, String)> = all.into_iter().take(left).collect();
            left -= take.len();
            if take.is_empty() {
                let _: i64 = self.timed(conn.srem(self.keys.ledger_nodes(), &node)).await?;
                continue;
            }
            out.push((node, take));
        }
        Ok(out)
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, SharedError> {
        let mut conn = self.conn().await?;
        self.timed(conn.get(self.keys.kv(key))).await
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, SharedError> {
        let mut conn = self.conn().await?;
        let n: i64 = self.timed(conn.del(self.keys.kv(key))).await?;
        Ok(n > 0)
    }

    async fn publish_catalog_version(&self, version: i64) -> Result<(), SharedError> {
        // This node learns at once, whatever happens to the message.
        self.bump(version);
        let mut conn = self.conn().await?;
        let mut inv = self.scripts.publish_version.key(self.keys.catalog_version());
        inv.arg(version).arg(self.keys.catalog_channel());
        let _: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    fn catalog_versions(&self) -> watch::Receiver<i64> {
        self.version_tx.subscribe()
    }

    async fn run(&self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        while !cancel.is_cancelled() {
            match self.subscribe_once(&cancel).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "Catalog subscription lost; reconnecting."),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn ping(&self) -> Result<(), SharedError> {
        let mut conn = self.conn().await?;
        let pong: String = self.timed(redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" { Ok(()) } else { Err(SharedError(format!("unexpected PING answer {pong}"))) }
    }
}
