//! Cluster membership: this node announces itself in the node registry every heartbeat (a lease
//! of three), with what it wants others to see, and counts the live nodes. The count is what
//! per-node shares divide by while the shared store is down (rate limits, quotas, the
//! authentication throttle).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shared::{NODES_KEY, SharedState, node_info_key};

/// This node's membership in the cluster.
pub struct Membership {
    shared: Arc<dyn SharedState>,
    node_id: String,
    heartbeat: Duration,
    nodes: Arc<AtomicU64>,
    info: std::sync::Mutex<Option<Announcement>>,
}

/// What a node announces about itself besides its id.
struct Announcement {
    info: serde_json::Value,
    in_flight: Box<dyn Fn() -> usize + Send + Sync>,
}

impl Membership {
    /// The membership of `node_id` (this process in the node registry) on `shared`, renewed every
    /// `heartbeat`; `nodes` is where the live count is kept (shared with its readers).
    pub fn new(shared: Arc<dyn SharedState>, node_id: String, heartbeat: Duration, nodes: Arc<AtomicU64>) -> Self {
        Self { shared, node_id, heartbeat, nodes, info: std::sync::Mutex::new(None) }
    }

    /// What the heartbeat publishes (address, version, start time) and where the node's
    /// in-flight count comes from.
    pub fn describe(&self, info: serde_json::Value, in_flight: impl Fn() -> usize + Send + Sync + 'static) {
        if let Ok(mut i) = self.info.lock() {
            *i = Some(Announcement { info, in_flight: Box::new(in_flight) });
        }
    }

    /// Live nodes last counted (at least 1).
    pub fn live_nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// Announces this node every heartbeat and counts the live ones, until `cancel` fires; then
    /// leaves the registry.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        let lease = u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX).saturating_mul(3);
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = self.shared.slot_release(NODES_KEY, &self.node_id).await;
                    let _ = self.shared.kv_delete(&node_info_key(&self.node_id)).await;
                    return;
                }
                _ = tick.tick() => self.beat(lease).await,
            }
        }
    }

    async fn beat(&self, lease: u64) {
        let beat = self.shared.slot_acquire(NODES_KEY, &self.node_id, u64::MAX, lease).await;
        let info = self.info.lock().ok().and_then(|i| {
            i.as_ref().map(|a| {
                let mut info = a.info.clone();
                info["id"] = serde_json::json!(self.node_id);
                info["in_flight"] = serde_json::json!((a.in_flight)());
                info["seen_at"] = serde_json::json!(crate::types::now_ms());
                info
            })
        });
        if let Some(info) = info {
            let _ = self.shared.kv_set(&node_info_key(&self.node_id), info.to_string().as_bytes(), lease).await;
        }
        match (beat, self.shared.slot_count(NODES_KEY).await) {
            (Ok(_), Ok(n)) => self.nodes.store(n.max(1), Ordering::Relaxed),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "Heartbeat failed; keeping the last node count.");
            }
        }
    }
}
