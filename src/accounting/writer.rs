//! The background writer: drains the usage queue into the store in batches.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::accounting::UsageQueue;
use crate::shared::SharedState;
use crate::store::{self, Store, UsageRow};
use crate::telemetry::Metrics;

/// Where finished records go.
#[derive(Clone)]
pub enum Sink {
    /// Straight into the database (embedded mode).
    Store(Store),
    /// Cluster mode: into the database, clearing the requests' started entries in the ledger;
    /// when the database is unreachable, into the ledger stream, which every node's reader
    /// writes to the database once it is back.
    Ledger {
        /// The shared state holding the stream.
        shared: Arc<dyn SharedState>,
        /// This process's id in the node registry.
        node_id: String,
        /// The fallback.
        store: Store,
    },
}

/// Writes batches until `cancel` fires, then drains what is queued and writes it, retrying for
/// at most `drain_deadline`.
pub async fn run_writer(
    queue: UsageQueue,
    sink: Sink,
    metrics: Arc<Metrics>,
    batch_size: usize,
    flush_interval: Duration,
    drain_deadline: Duration,
    cancel: CancellationToken,
) {
    let mut rx = queue.0;
    let mut batch: Vec<UsageRow> = Vec::with_capacity(batch_size);
    let mut backoff = Duration::from_millis(100);
    let mut tick = tokio::time::interval(flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The writer wakes on its timer, never per record: producers only push into the queue, so a
    // busy node pays no cross-thread wake-up per request. A short tick keeps each burst of
    // inserts small, so writing never holds a core long enough to show in request latency.
    'outer: loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        loop {
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            match write(&sink, &batch, &metrics).await {
                Ok(()) => {
                    batch.clear();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = batch.len(), "Usage batch not written; retrying.");
                    tokio::select! {
                        () = cancel.cancelled() => break 'outer,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    // Drain: no new records can arrive once the receiver is closed.
    rx.close();
    while let Some(r) = rx.recv().await {
        batch.push(r);
    }
    let until = tokio::time::Instant::now() + drain_deadline;
    while !batch.is_empty() {
        let n = batch.len().min(batch_size.max(1));
        match write(&sink, &batch[..n], &metrics).await {
            Ok(()) => {
                batch.drain(..n);
            }
            Err(e) => {
                if tokio::time::Instant::now() >= until {
                    tracing::error!(error = %e, lost = batch.len(), "Shutdown deadline passed; usage records not written.");
                    metrics
                        .usage_records
                        .with_label_values(&["dropped"])
                        .inc_by(u64::try_from(batch.len()).unwrap_or(0));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    tracing::info!("Usage writer drained.");
}

async fn write(sink: &Sink, batch: &[UsageRow], metrics: &Metrics) -> Result<(), store::StoreError> {
    match sink {
        Sink::Store(store) => write_store(store, batch, metrics).await?,
        Sink::Ledger { shared, node_id, store } => {
            // The database first: a record there is safe whatever happens to Redis. Then the
            // started entries go. When the database is unreachable, the records wait in the
            // ledger stream (durable in Redis) for any node's reader to write them later.
            match write_store(store, batch, metrics).await {
                Ok(()) => {
                    let ids: Vec<String> = batch.iter().map(|r| r.request_id.clone()).collect();
                    if let Err(e) = shared.ledger_forget(node_id, &ids).await {
                        // Harmless: the sweeper's later records for these ids are ignored.
                        tracing::debug!(error = %e, "Started usage entries not cleared.");
                    }
                }
                Err(db) => {
                    let pairs: Vec<(String, String)> = batch
                        .iter()
                        .filter_map(|r| serde_json::to_string(r).ok().map(|j| (r.request_id.clone(), j)))
                        .collect();
                    shared.ledger_finish(node_id, &pairs).await.map_err(|e| {
                        tracing::warn!(error = %e, "Neither the database nor the ledger stream is reachable.");
                        db
                    })?;
                    let n = u64::try_from(batch.len()).unwrap_or(0);
                    metrics.usage_records.with_label_values(&["streamed"]).inc_by(n);
                }
            }
        }
    }
    let n = u64::try_from(batch.len()).unwrap_or(0);
    metrics.usage_queue.sub(i64::try_from(n).unwrap_or(0));
    Ok(())
}

/// Inserts records (idempotently) and records their tokens' last use.
pub(crate) async fn write_store(store: &Store, batch: &[UsageRow], metrics: &Metrics) -> Result<(), store::StoreError> {
    store::insert_usage_batch(store.conn(), batch).await?;
    let n = u64::try_from(batch.len()).unwrap_or(0);
    metrics.usage_records.with_label_values(&["written"]).inc_by(n);
    let tokens: BTreeSet<i64> = batch.iter().filter_map(|r| r.token_id).collect();
    let tokens: Vec<i64> = tokens.into_iter().collect();
    let at = batch.iter().map(|r| r.created_at).max().unwrap_or(0);
    if let Err(e) = store::touch_tokens(store.conn(), &tokens, at).await {
        tracing::warn!(error = %e, "Could not record token last-use times.");
    }
    Ok(())
}
