//! The in-process shared state of an embedded node. Same semantics as the Redis one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::shared::{Admission, SharedError, SharedState, WindowCheck, WindowOutcome};
use crate::types::now_ms;

#[derive(Default)]
struct Maps {
    windows: HashMap<String, (u64, u64, i64)>,
    slots: HashMap<String, HashMap<String, i64>>,
    cooldowns: HashMap<String, i64>,
    kv: HashMap<String, (Vec<u8>, i64)>,
    streaks: HashMap<String, (u64, i64)>,
    /// Ledger: started records by node, the stream (id, record), entries read but not acked
    /// (id → (consumer, read at)), and the next entry id.
    started: HashMap<String, HashMap<String, String>>,
    stream: std::collections::BTreeMap<u64, String>,
    pending: HashMap<u64, (String, i64)>,
    next_entry: u64,
}

/// Shared state held in this process.
pub struct MemoryShared {
    maps: Mutex<Maps>,
    version_tx: watch::Sender<i64>,
}

impl MemoryShared {
    /// An empty state.
    pub fn new() -> Self {
        Self { maps: Mutex::new(Maps::default()), version_tx: watch::Sender::new(0) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Maps) -> T) -> Result<T, SharedError> {
        let mut guard = self.maps.lock().map_err(|_| SharedError("in-process state lock poisoned".into()))?;
        Ok(f(&mut guard))
    }

    /// Drops what has expired (the `run` loop does it every 10 s; a holder without that loop
    /// calls it itself).
    pub fn sweep(&self) {
        let now = now_ms();
        let _ = self.with(|m| {
            m.windows.retain(|_, (_, _, expires)| *expires > now);
            for s in m.slots.values_mut() {
                s.retain(|_, until| *until > now);
            }
            m.slots.retain(|_, s| !s.is_empty());
            m.cooldowns.retain(|_, until| *until > now);
            m.kv.retain(|_, (_, until)| *until > now);
            m.streaks.retain(|_, (_, until)| *until > now);
        });
    }
}

impl Default for MemoryShared {
    fn default() -> Self {
        Self::new()
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl SharedState for MemoryShared {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn window_add(
        &self,
        key: &str,
        window_ms: u64,
        amount: u64,
        limit: Option<u64>,
    ) -> Result<WindowOutcome, SharedError> {
        let window = window_ms.max(1);
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let idx = now / window;
        let reset_ms = (idx + 1) * window - now;
        self.with(|m| {
            let entry = m.windows.entry(key.to_owned()).or_insert((idx, 0, 0));
            if entry.0 != idx {
                *entry = (idx, 0, 0);
            }
            if limit.is_some_and(|l| entry.1.saturating_add(amount) > l) {
                return WindowOutcome { allowed: false, count: entry.1, reset_ms };
            }
            entry.1 = entry.1.saturating_add(amount);
            entry.2 = ms(now.saturating_add(window.saturating_mul(2)));
            WindowOutcome { allowed: true, count: entry.1, reset_ms }
        })
    }

    async fn windows_add(&self, checks: &[WindowCheck]) -> Result<Admission, SharedError> {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        self.with(|m| {
            let mut wait = 0;
            for c in checks {
                let window = c.window_ms.max(1);
                let idx = now / window;
                let count = m.windows.get(&c.key).filter(|e| e.0 == idx).map_or(0, |e| e.1);
                let amount = u64::try_from(c.amount).unwrap_or(0);
                let over = |l: u64| c.amount >= 0 && (count.saturating_add(amount) > l || (amount == 0 && count >= l));
                if c.limit.is_some_and(over) {
                    wait = wait.max((idx + 1) * window - now);
                }
            }
            if wait > 0 {
                return Admission { allowed: false, retry_after_ms: wait };
            }
            for c in checks {
                let window = c.window_ms.max(1);
                let idx = now / window;
                if !m.windows.contains_key(&c.key) {
                    m.windows.insert(c.key.clone(), (idx, 0, 0));
                }
                let Some(entry) = m.windows.get_mut(&c.key) else { continue };
                if entry.0 != idx {
                    *entry = (idx, 0, 0);
                }
                entry.1 = if c.amount >= 0 {
                    entry.1.saturating_add(c.amount.unsigned_abs())
                } else {
                    entry.1.saturating_sub(c.amount.unsigned_abs())
                };
                entry.2 = ms(now.saturating_add(window.saturating_mul(2)));
            }
            Admission { allowed: true, retry_after_ms: 0 }
        })
    }

    async fn window_init(&self, key: &str, window_ms: u64, value: u64) -> Result<bool, SharedError> {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let window = window_ms.max(1);
        self.with(|m| {
            if m.windows.contains_key(key) {
                return false;
            }
            m.windows.insert(key.to_owned(), (now / window, value, ms(now.saturating_add(window.saturating_mul(2)))));
            true
        })
    }

    async fn slot_acquire(&self, key: &str, holder: &str, limit: u64, lease_ms: u64) -> Result<bool, SharedError> {
        let now = now_ms();
        self.with(|m| {
            let set = m.slots.entry(key.to_owned()).or_default();
            set.retain(|_, until| *until > now);
            let held = set.contains_key(holder);
            if !held && u64::try_from(set.len()).unwrap_or(u64::MAX) >= limit {
                return false;
            }
            set.insert(holder.to_owned(), now.saturating_add(ms(lease_ms)));
            true
        })
    }

    async fn slot_release(&self, key: &str, holder: &str) -> Result<(), SharedError> {
        self.with(|m| {
            if let Some(set) = m.slots.get_mut(key) {
                set.remove(holder);
            }
        })
    }

    async fn slot_count(&self, key: &str) -> Result<u64, SharedError> {
        let now = now_ms();
        self.with(|m| {
            m.slots.get_mut(key).map_or(0, |set| {
                set.retain(|_, until| *until > now);
                u64::try_from(set.len()).unwrap_or(u64::MAX)
            })
        })
    }

    async fn cooldown_extend(&self, key: &str, until_ms: i64) -> Result<i64, SharedError> {
        let now = now_ms();
        self.with(|m| {
            let cur = m.cooldowns.get(key).copied().filter(|d| *d > now).unwrap_or(0);
            let new = cur.max(until_ms);
            if new > now {
                m.cooldowns.insert(key.to_owned(), new);
            }
            new
        })
    }

    async fn cooldown_until(&self, key: &str) -> Result<Option<i64>, SharedError> {
        let now = now_ms();
        self.with(|m| m.cooldowns.get(key).copied().filter(|d| *d > now))
    }

    async fn kv_set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), SharedError> {
        let until = now_ms().saturating_add(ms(ttl_ms));
        self.with(|m| {
            m.kv.insert(key.to_owned(), (value.to_vec(), until));
        })
    }

    async fn streak_add(&self, key: &str, ttl_ms: u64) -> Result<u64, SharedError> {
        let now = now_ms();
        let until = now.saturating_add(ms(ttl_ms.max(1)));
        self.with(|m| {
            let e = m.streaks.entry(key.to_owned()).or_insert((0, until));
            if e.1 <= now {
                e.0 = 0;
            }
            e.0 = e.0.saturating_add(1);
            e.1 = until;
            e.0
        })
    }

    async fn streak_reset(&self, key: &str) -> Result<(), SharedError> {
        self.with(|m| {
            m.streaks.remove(key);
        })
    }

    async fn slot_holders(&self, key: &str) -> Result<Vec<String>, SharedError> {
        let now = now_ms();
        self.with(|m| {
            m.slots.get_mut(key).map_or_else(Vec::new, |set| {
                set.retain(|_, until| *until > now);
                set.keys().cloned().collect()
            })
        })
    }

    async fn ledger_start(&self, node: &str, request_id: &str, record: &str) -> Result<(), SharedError> {
        self.with(|m| {
            m.started.entry(node.to_owned()).or_default().insert(request_id.to_owned(), record.to_owned());
        })
    }

    async fn ledger_finish(&self, node: &str, records: &[(String, String)]) -> Result<(), SharedError> {
        self.with(|m| {
            for (rid, rec) in records {
                m.next_entry += 1;
                let id = m.next_entry;
                m.stream.insert(id, rec.clone());
                if let Some(h) = m.started.get_mut(node) {
                    h.remove(rid);
                }
            }
            if m.started.get(node).is_some_and(HashMap::is_empty) {
                m.started.remove(node);
            }
        })
    }

    async fn ledger_read(
        &self,
        consumer: &str,
        count: usize,
        stale_ms: u64,
    ) -> Result<Vec<(String, String)>, SharedError> {
        let now = now_ms();
        let stale = i64::try_from(stale_ms).unwrap_or(i64::MAX);
        self.with(|m| {
            let mut out = Vec::new();
            let ids: Vec<u64> = m.stream.keys().copied().collect();
            for id in ids {
                if out.len() >= count {
                    break;
                }
                let take = match m.pending.get(&id) {
                    None => true,
                    Some((who, at)) => who != consumer && now - *at > stale,
                };
                if take && let Some(rec) = m.stream.get(&id) {
                    out.push((id.to_string(), rec.clone()));
                    m.pending.insert(id, (consumer.to_owned(), now));
                }
            }
            out
        })
    }

    async fn ledger_forget(&self, node: &str, request_ids: &[String]) -> Result<(), SharedError> {
        self.with(|m| {
            if let Some(h) = m.started.get_mut(node) {
                for rid in request_ids {
                    h.remove(rid);
                }
            }
            if m.started.get(node).is_some_and(HashMap::is_empty) {
                m.started.remove(node);
            }
        })
    }

    async fn ledger_ack(&self, ids: &[String]) -> Result<(), SharedError> {
        self.with(|m| {
            for id in ids.iter().filter_map(|i| i.parse::<u64>().ok()) {
                m.stream.remove(&id);
                m.pending.remove(&id);
            }
        })
    }

    async fn ledger_orphans(
        &self,
        live: &[String],
        limit: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, SharedError> {
        self.with(|m| {
            let mut out = Vec::new();
            let mut left = limit;
            for (node, recs) in &m.started {
                if live.contains(node) || left == 0 {
                    continue;
                }
                let take: Vec<(String, String)> = recs.iter().take(left).map(|(k, v)| (k.clone(), v.clone())).collect();
                left -= take.len();
                out.push((node.clone(), take));
            }
            out
        })
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, SharedError> {
        let now = now_ms();
        self.with(|m| m.kv.get(key).filter(|(_, until)| *until > now).map(|(v, _)| v.clone()))
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, SharedError> {
        let now = now_ms();
        self.with(|m| m.kv.remove(key).is_some_and(|(_, until)| until > now))
    }

    async fn publish_catalog_version(&self, version: i64) -> Result<(), SharedError> {
        crate::shared::raise_version(&self.version_tx, version);
        Ok(())
    }

    fn catalog_versions(&self) -> watch::Receiver<i64> {
        self.version_tx.subscribe()
    }

    async fn run(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => self.sweep(),
            }
        }
    }

    async fn ping(&self) -> Result<(), SharedError> {
        Ok(())
    }
}
