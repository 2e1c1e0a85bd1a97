//! Brute-force throttling (TESTPLAN S11): failed authentications with tokens that do not exist
//! (guesses; a revoked or expired token is known and not counted) are counted per client address
//! in a cluster-wide one-minute window; past `security.auth_failures_per_minute`, that address's
//! further failures get 429 for `security.auth_lockout_secs`, and its never-seen tokens are not
//! looked up in the database at all. Valid tokens the node knows are still served from that
//! address (a known token never reaches the throttle; one minted since the node's last catalog
//! reload — at most `catalog.poll_interval_ms` — waits for it). When the shared store is unreachable each node
//! counts its share of the limit (the limit divided by the live nodes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::shared::{MemoryShared, SharedState};
use crate::types::now_ms;

const MINUTE_MS: u64 = 60_000;
/// At most this many locked addresses are remembered on a node (the shared store has them all).
const LOCAL_LOCKS: usize = 10_000;

/// The throttle of one node.
pub struct AuthThrottle {
    shared: Arc<dyn SharedState>,
    local: MemoryShared,
    live_nodes: Arc<AtomicU64>,
    per_minute: u64,
    lockout_ms: u64,
    /// Locked addresses this node knows of, until when (ms).
    locked: Mutex<HashMap<IpAddr, i64>>,
    /// Database lookups of never-seen tokens in flight.
    pub(crate) lookups: tokio::sync::Semaphore,
    /// When the node-local counters were last swept of expired windows (ms).
    swept: std::sync::atomic::AtomicI64,
}

fn fail_key(ip: IpAddr) -> String {
    format!("authfail:{ip}")
}

fn lock_key(ip: IpAddr) -> String {
    format!("authlock:{ip}")
}

impl AuthThrottle {
    /// A throttle over `shared`; `live_nodes` is the node count the heartbeat keeps.
    pub fn new(
        shared: Arc<dyn SharedState>,
        live_nodes: Arc<AtomicU64>,
        per_minute: u32,
        lockout_secs: u64,
        lookups: u32,
    ) -> Self {
        Self {
            shared,
            local: MemoryShared::new(),
            live_nodes,
            per_minute: u64::from(per_minute.max(1)),
            lockout_ms: lockout_secs.saturating_mul(1_000).max(1_000),
            locked: Mutex::new(HashMap::new()),
            lookups: tokio::sync::Semaphore::new(usize::try_from(lookups.max(1)).unwrap_or(1)),
            swept: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn remember(&self, ip: IpAddr, until: i64) {
        if let Ok(mut l) = self.locked.lock() {
            if l.len() >= LOCAL_LOCKS {
                let now = now_ms();
                l.retain(|_, u| *u > now);
            }
            if l.len() < LOCAL_LOCKS {
                l.insert(ip, until);
            }
        }
    }

    fn locally_locked(&self, ip: IpAddr) -> Option<u64> {
        let now = now_ms();
        let until = self.locked.lock().ok().and_then(|l| l.get(&ip).copied())?;
        (until > now).then(|| u64::try_from(until - now).unwrap_or(0).div_ceil(1_000).max(1))
    }

    /// Seconds until `ip` may try again, when it is locked out (this node's knowledge first, then
    /// the shared store's; an unreachable store is not a lock).
    pub async fn locked(&self, ip: IpAddr) -> Option<u64> {
        if let Some(s) = self.locally_locked(ip) {
            return Some(s);
        }
        match self.shared.kv_get(&lock_key(ip)).await {
            Ok(Some(v)) => {
                let until = std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
                let now = now_ms();
                (until > now).then(|| {
                    self.remember(ip, until);
                    u64::try_from(until - now).unwrap_or(0).div_ceil(1_000).max(1)
                })
            }
            _ => None,
        }
    }

    /// Counts one failed authentication from `ip`; `Some(seconds)` when the address is over its
    /// limit (this failure is answered 429, and the address is locked out).
    pub async fn failed(&self, ip: IpAddr) -> Option<u64> {
        if let Some(s) = self.locally_locked(ip) {
            return Some(s);
        }
        let key = fail_key(ip);
        let allowed = match self.shared.window_add(&key, MINUTE_MS, 1, Some(self.per_minute)).await {
            Ok(o) => o.allowed,
            Err(_) => {
                // The node-local windows expire after a minute; sweep them now and then so that
                // an outage with many addresses does not grow them without bound.
                let now = now_ms();
                if now - self.swept.swap(now, Ordering::Relaxed) > 10_000 {
                    self.local.sweep();
                }
                let share = (self.per_minute / self.live_nodes.load(Ordering::Relaxed).max(1)).max(1);
                self.local.window_add(&key, MINUTE_MS, 1, Some(share)).await.map_or(true, |o| o.allowed)
            }
        };
        if allowed {
            return None;
        }
        let until = now_ms().saturating_add(i64::try_from(self.lockout_ms).unwrap_or(i64::MAX));
        self.remember(ip, until);
        if let Err(e) = self.shared.kv_set(&lock_key(ip), until.to_string().as_bytes(), self.lockout_ms).await {
            tracing::debug!(error = %e, "Shared store unreachable; the lockout holds on this node.");
        }
        tracing::warn!(client = %ip, "Too many failed authentications; the address is locked out.");
        Some(self.lockout_ms.div_ceil(1_000))
    }
}
