//! The usage ledger of a cluster: nothing a node knew about is lost when it dies.
//!
//! - Before a request reaches an upstream, its record so far is written to the node's "started"
//!   entries in the shared state ([`crate::accounting::UsageGuard::started`]).
//! - Finished records are written to the database in batches, idempotently by request id, and
//!   then their started entries go (the writer, with [`super::writer::Sink::Ledger`]). When the
//!   database is unreachable they move into the ledger stream (a Redis Stream) instead, together
//!   with the removal of their started entries, in one atomic step.
//! - Every node runs a reader in one consumer group: it writes stream entries to the database in
//!   batches, idempotently, and acknowledges them only then. Entries a dead node read but never
//!   acknowledged are claimed by the others.
//! - The orphan sweeper finalises the started entries of nodes whose heartbeat expired: each
//!   becomes a record (`outcome = node_lost`, estimated, partial) in the stream. A record that
//!   arrives later for the same request is ignored by the database.
//!
//! A database outage leaves records in the stream until it returns (F8).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shared::SharedState;
use crate::store::{Store, UsageRow};
use crate::telemetry::Metrics;

/// Writes ledger entries to the database until `cancel` fires. Entries another consumer read
/// more than `stale` ago without acknowledging them (it died) are claimed.
#[expect(clippy::too_many_arguments, reason = "one task's whole configuration, passed once")]
pub async fn run_reader(
    shared: Arc<dyn SharedState>,
    store: Store,
    metrics: Arc<Metrics>,
    consumer: String,
    batch: usize,
    poll: Duration,
    stale: Duration,
    cancel: CancellationToken,
) {
    let stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
    let mut backoff = poll;
    // On shutdown, keep writing for a moment: the writer is draining this node's last records
    // into the stream at the same time.
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        if stop_at.is_none() && cancel.is_cancelled() {
            stop_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
        }
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            return;
        }
        let entries = match shared.ledger_read(&consumer, batch.max(1), stale_ms).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "Ledger stream unreachable.");
                Vec::new()
            }
        };
        if entries.is_empty() {
            if stop_at.is_some() {
                tokio::time::sleep(poll).await;
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        let mut rows = Vec::with_capacity(entries.len());
        for (id, json) in &entries {
            match serde_json::from_str::<UsageRow>(json) {
                Ok(r) => rows.push(r),
                Err(_) => tracing::error!(entry = %id, "A ledger entry is not a usage record; dropped."),
            }
        }
        match super::writer::write_store(&store, &rows, &metrics).await {
            Ok(()) => {
                let ids: Vec<String> = entries.into_iter().map(|(id, _)| id).collect();
                if let Err(e) = shared.ledger_ack(&ids).await {
                    tracing::warn!(error = %e, "Ledger entries written but not acknowledged; they will be written again (harmlessly).");
                }
                backoff = poll;
            }
            Err(e) => {
                // Not acknowledged: the entries stay in the stream until the database is back.
                tracing::warn!(error = %e, pending = rows.len(), "Database unreachable; usage records wait in the ledger stream.");
                if stop_at.is_some() {
                    return;
                }
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Finalises the started records of dead nodes, every `interval`, until `cancel` fires.
pub async fn run_sweeper(
    shared: Arc<dyn SharedState>,
    registry_key: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = match shared.slot_holders(&registry_key).await {
            Ok(l) if !l.is_empty() => l,
            // Without a registry (or with nobody in it, which includes this node) judge nothing.
            _ => continue,
        };
        let orphans = match shared.ledger_orphans(&live, 500).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "Cannot look for orphaned usage records.");
                continue;
            }
        };
        for (node, records) in orphans {
            let finals: Vec<(String, String)> = records
                .into_iter()
                .filter_map(|(rid, json)| {
                    let mut row: UsageRow = serde_json::from_str(&json).ok()?;
                    row.status = 0;
                    row.outcome = "node_lost".into();
                    row.usage_source = "estimated".into();
                    row.estimated = true;
                    row.partial = true;
                    serde_json::to_string(&row).ok().map(|j| (rid, j))
                })
                .collect();
            tracing::warn!(node = %node, records = finals.len(), "Finalising the usage records of a node that stopped heartbeating.");
            if let Err(e) = shared.ledger_finish(&node, &finals).await {
                tracing::warn!(error = %e, "Could not finalise orphaned usage records.");
            }
        }
    }
}
