//! Accounting: exactly one usage record per proxied request, written asynchronously in batches,
//! idempotently by request id, and flushed on shutdown.
//!
//! A `UsageGuard` is opened when a request has been authenticated; it is finished with the
//! outcome, or, if it is dropped first (the client went away, a panic unwound), it records
//! itself as `client_disconnected` (status 499) with what it had seen so far.
//!
//! Architecture Invariant: uses store (writes), catalog types and telemetry; never the proxy.

mod writer;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::catalog::ModelInfo;
use crate::config::CostConfig;
use crate::store::UsageRow;
use crate::telemetry::Metrics;
use crate::types::{RequestId, Usage, now_ms};

pub mod ledger;
pub mod quota;
pub mod report;

pub use writer::{Sink, run_writer};

/// The producer side of the usage pipeline.
#[derive(Clone)]
pub struct Accounting {
    tx: mpsc::Sender<UsageRow>,
    node: Arc<str>,
    metrics: Arc<Metrics>,
    headroom: usize,
    /// Cluster mode: the shared state holding the ledger, and this process's registry id.
    ledger: Option<(Arc<dyn crate::shared::SharedState>, Arc<str>)>,
}

/// The consumer side, handed to `run_writer`.
pub struct UsageQueue(pub(crate) mpsc::Receiver<UsageRow>);

impl Accounting {
    /// A pipeline holding up to `capacity` records in memory.
    pub fn new(capacity: usize, node: &str, metrics: Arc<Metrics>) -> (Self, UsageQueue) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let headroom = (capacity / 100).clamp(1, 1000);
        (Self { tx, node: Arc::from(node), metrics, headroom, ledger: None }, UsageQueue(rx))
    }

    /// Cluster mode: requests write "started" entries to the ledger in `shared` under
    /// `node_id` (this process's id in the node registry) before they reach an upstream.
    #[must_use]
    pub fn with_ledger(mut self, shared: Arc<dyn crate::shared::SharedState>, node_id: &str) -> Self {
        self.ledger = Some((shared, Arc::from(node_id)));
        self
    }

    /// Whether a new request may start: when the queue is nearly full (the database is down
    /// for long), billable requests are refused rather than served unrecorded.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > self.headroom
    }

    /// Opens the record of one request.
    pub fn open(&self, start: UsageStart) -> UsageGuard {
        self.metrics.in_flight.inc();
        UsageGuard {
            accounting: self.clone(),
            canonical_route: start.canonical_route,
            started: Instant::now(),
            first_byte_ms: None,
            row: Some(Box::new(UsageRow {
                parent_request_id: start.parent.map(|p| p.to_string()),
                ..blank_row(
                    start.request_id.to_string(),
                    self.node.to_string(),
                    Some(start.user_id),
                    Some(start.token_id),
                    start.route,
                    start.stream,
                )
            })),
            cost: None,
            spend: None,
            settle: Vec::new(),
            cached: None,
            progress: Progress::default(),
        }
    }

    fn submit(&self, row: UsageRow, route: &str) {
        self.metrics.in_flight.dec();
        tracing::debug!(
            request_id = %row.request_id,
            route = %row.route,
            provider = row.provider.as_deref().unwrap_or(""),
            status = row.status,
            outcome = %row.outcome,
            latency_ms = row.latency_ms,
            prompt_tokens = row.prompt_tokens,
            completion_tokens = row.completion_tokens,
            estimated = row.estimated,
            "Request finished."
        );
        let provider = crate::telemetry::provider_label(row.provider.as_deref().unwrap_or_default());
        let model = if provider == "user" { "user" } else { row.model.as_deref().unwrap_or_default() };
        let route = crate::telemetry::route_label(route);
        self.metrics.requests.with_label_values(&[route, provider, &row.status.to_string()]).inc();
        let secs = f64::from(u32::try_from(row.latency_ms).unwrap_or(u32::MAX)) / 1000.0;
        self.metrics.latency.with_label_values(&[route]).observe(secs);
        for (kind, n) in [
            ("prompt", row.prompt_tokens),
            ("completion", row.completion_tokens),
            ("cached", row.cached_tokens),
            ("cache_write", row.cache_write_tokens),
        ] {
            if n > 0 {
                self.metrics.tokens.with_label_values(&[provider, model, kind]).inc_by(u64::try_from(n).unwrap_or(0));
            }
        }
        match self.tx.try_send(row) {
            Ok(()) => self.metrics.usage_queue.inc(),
            Err(e) => {
                let row = match e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                };
                self.metrics.usage_records.with_label_values(&["dropped"]).inc();
                tracing::error!(request_id = %row.request_id, "Usage queue full or closed; a usage record was lost.");
            }
        }
    }
}

/// What is known when a request is accepted.
pub struct UsageStart {
    /// The request id.
    pub request_id: RequestId,
    /// Token owner.
    pub user_id: i64,
    /// Token.
    pub token_id: i64,
    /// The route as requested.
    pub route: String,
    /// Streaming.
    pub stream: bool,
    /// The canonical route it resolved to, for metric labels (see [`crate::telemetry::route_label`]).
    pub canonical_route: String,
    /// For a selection call: the request it is made for.
    pub parent: Option<RequestId>,
}

/// How a request ended, as its usage record says (`outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered in full.
    Ok,
    /// Refused after admission by the gateway (context window, quota, privacy, budget, …).
    Refused,
    /// The upstream judged the request invalid (a 4xx that is the client's fault).
    Rejected,
    /// Every attempt failed; the last with an error.
    UpstreamError,
    /// Every attempt failed; the last by a timeout (or a stream stalled).
    UpstreamTimeout,
    /// Every candidate was at its concurrency limit.
    OverCapacity,
    /// Every candidate was cooling down and none could be probed.
    AllCoolingDown,
    /// A stream broke after bytes had reached the client.
    Partial,
    /// The upstream sent an invalid event mid-stream.
    InvalidResponse,
    /// The node's drain deadline cut the stream.
    Shutdown,
    /// The client went away.
    ClientDisconnected,
    /// The gateway failed.
    InternalError,
}

impl Outcome {
    /// The name stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::OverCapacity => "over_capacity",
            Self::AllCoolingDown => "all_cooling_down",
            Self::Partial => "partial",
            Self::InvalidResponse => "invalid_response",
            Self::Shutdown => "shutdown",
            Self::ClientDisconnected => "client_disconnected",
            Self::InternalError => "internal_error",
        }
    }
}

/// What a finished record says about the request, for whoever made it (an autoselect's receipt
/// shows its selection call's latency and cost).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The record's request id.
    pub request_id: String,
    /// Total latency.
    pub latency_ms: i64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// The tokens billed.
    pub usage: Usage,
    /// They were estimated or counted by the gateway, not reported by the upstream.
    pub estimated: bool,
}

/// Token counts seen so far on a request, for the record written if it ends early.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Usage reported by the upstream, if any.
    pub reported: Option<Usage>,
    /// Estimated (or, when it was counted, exact) prompt tokens.
    pub estimated_prompt: u64,
    /// Output tokens already counted by the gateway (a usage-less non-streaming reply).
    pub relayed_output: u64,
    /// Generated text relayed to the client (streams), counted with the tokenizer when the
    /// upstream reports no usage.
    pub relayed_text: String,
    /// The answer was cut short.
    pub partial: bool,
    /// The most this request may be billed (what it allowed an upstream to use).
    pub caps: Option<BillCaps>,
}

/// The most tokens a request is billed, whatever an upstream reports: the prompt it sent (its
/// byte bound plus template slack and an allowance per image) and the output it allowed
/// (`max_tokens` × choices, else the model's context × choices, else a default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillCaps {
    /// Prompt tokens.
    pub prompt: u64,
    /// Output tokens.
    pub completion: u64,
}

/// Clamps `usage` to `caps`; `true` when something was over.
pub fn billable(usage: Usage, caps: BillCaps) -> (Usage, bool) {
    let prompt = usage.prompt_tokens.min(caps.prompt);
    let completion = usage.completion_tokens.min(caps.completion);
    let capped = prompt < usage.prompt_tokens || completion < usage.completion_tokens;
    (
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: usage.cached_tokens.min(prompt),
            cache_write_tokens: usage.cache_write_tokens.min(prompt),
        },
        capped,
    )
}

impl Progress {
    /// The usage to bill and where it comes from (`reported`, `counted`, `estimated`, or `capped`
    /// when the upstream reported more than the request allowed and the bound is billed).
    pub fn usage(&self) -> (Usage, &'static str) {
        let (usage, source) = if let Some(u) = self.reported {
            (u, "reported")
        } else {
            let counted = crate::tokens::count(&self.relayed_text).saturating_add(self.relayed_output);
            let source = if counted > 0 { "counted" } else { "estimated" };
            (Usage { prompt_tokens: self.estimated_prompt, completion_tokens: counted, ..Usage::default() }, source)
        };
        match self.caps.map(|c| billable(usage, c)) {
            Some((capped, true)) => (capped, "capped"),
            Some((u, false)) => (u, source),
            None => (usage, source),
        }
    }
}

/// Runs settlement work for a request that will not run after all: as if it used nothing, so
/// reservations and charges are given back and slots released.
pub fn cancel(settle: Settle) {
    let mut row = blank_row(String::new(), String::new(), None, None, String::new(), false);
    row.status = 0;
    row.outcome = "cancelled".into();
    settle(&row);
}

/// A record as opened: nothing known yet but who asked for what; a 499 until finished.
fn blank_row(
    request_id: String,
    node: String,
    user_id: Option<i64>,
    token_id: Option<i64>,
    route: String,
    stream: bool,
) -> UsageRow {
    UsageRow {
        request_id,
        created_at: now_ms(),
        node,
        user_id,
        token_id,
        route,
        provider: None,
        model: None,
        status: 499,
        outcome: "client_disconnected".into(),
        stream,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        cache_write_tokens: 0,
        estimated: true,
        cost_usd: 0.0,
        latency_ms: 0,
        ttft_ms: None,
        cache_hit: false,
        routing: None,
        usage_source: "estimated".into(),
        partial: false,
        parent_request_id: None,
    }
}

/// The open usage record of one request; see the module docs.
pub struct UsageGuard {
    accounting: Accounting,
    canonical_route: String,
    started: Instant,
    first_byte_ms: Option<i64>,
    row: Option<Box<UsageRow>>,
    cost: Option<CostConfig>,
    spend: Option<(std::sync::Arc<dyn crate::shared::SharedState>, String, u64)>,
    settle: Vec<Settle>,
    /// Served from the response cache (whether the original's usage was estimated).
    cached: Option<bool>,
    /// Token counts seen so far.
    pub progress: Progress,
}

/// Work that needs a request's final record: correcting a rate-limit charge, releasing a
/// concurrency slot, settling a quota. Runs once, when the record is written (also on drop).
pub type Settle = Box<dyn FnOnce(&UsageRow) + Send + 'static>;

impl UsageGuard {
    /// Records the chosen target and its price (from [`crate::catalog::Snapshot::price`]).
    pub fn set_target(&mut self, provider: &str, model: &ModelInfo, price: Option<CostConfig>) {
        if let Some(r) = &mut self.row {
            r.provider = Some(provider.to_owned());
            r.model = Some(model.name.clone());
        }
        self.cost = price;
    }

    /// Adds this request's cost, once known, to a cluster-wide windowed counter (micro-USD):
    /// how burst rotations track their daily cloud spend. `None` stops counting (a failover to
    /// another target).
    pub fn count_spend(&mut self, counter: Option<(std::sync::Arc<dyn crate::shared::SharedState>, String, u64)>) {
        self.spend = counter;
    }

    /// Cluster mode: writes this request's "started" entry to the ledger, so that if this node
    /// dies before the record is finished, another node finalises it. Call it before the first
    /// upstream call. A failure is logged: the request still gets its record on this node.
    pub async fn started(&mut self) {
        let Some((shared, node_id)) = &self.accounting.ledger else { return };
        let Some(row) = &mut self.row else { return };
        // The estimate is what a swept record bills; `write` sets the final counts anyway.
        row.prompt_tokens = crate::store::to_i64(self.progress.estimated_prompt);
        let Ok(json) = serde_json::to_string(&**row) else { return };
        if let Err(e) = shared.ledger_start(node_id, &row.request_id, &json).await {
            self.accounting.metrics.usage_records.with_label_values(&["unstarted"]).inc();
            tracing::warn!(error = %e, "Could not write a started usage entry; the record depends on this node.");
        }
    }

    /// Runs `f` with the final record when it is written.
    pub fn on_settle(&mut self, f: Settle) {
        self.settle.push(f);
    }

    /// Records the routing receipt (JSON) for the usage row.
    pub fn set_routing(&mut self, receipt: String) {
        if let Some(r) = &mut self.row {
            r.routing = Some(receipt);
        }
    }

    /// Marks the first byte of the answer (once).
    pub fn mark_first_byte(&mut self) {
        if self.first_byte_ms.is_none() {
            self.first_byte_ms = Some(elapsed_ms(self.started));
        }
    }

    /// Milliseconds since the request was accepted.
    pub fn elapsed_ms(&self) -> i64 {
        elapsed_ms(self.started)
    }

    /// Writes the record with the final status and outcome.
    pub fn finish(mut self, status: u16, outcome: Outcome) -> Option<Finished> {
        self.write(i32::from(status), outcome)
    }

    /// Writes the record of a request that no upstream answered (every attempt failed, or the
    /// upstream refused the request): its tokens are kept for the rate limits that measure
    /// them, and it costs nothing (SPEC §6: only what an upstream served is billed).
    pub fn finish_unanswered(mut self, status: u16, outcome: Outcome) -> Option<Finished> {
        self.cost = None;
        self.spend = None;
        self.write(i32::from(status), outcome)
    }

    /// Writes the record of an answer served from the response cache: the original answer's
    /// target and tokens, provenance `cache`, no cost (nothing was bought; quotas spend nothing).
    pub fn finish_cached(mut self, provider: &str, model: &str, usage: Usage, estimated: bool) -> Option<Finished> {
        if let Some(r) = &mut self.row {
            r.provider = Some(provider.to_owned());
            r.model = Some(model.to_owned());
            r.cache_hit = true;
        }
        self.cost = None;
        self.spend = None;
        self.progress.caps = None;
        self.progress.reported = Some(usage);
        self.cached = Some(estimated);
        self.mark_first_byte();
        self.write(200, Outcome::Ok)
    }

    /// The usage billed so far (reported, counted or estimated; capped), for traces.
    pub fn usage(&self) -> Usage {
        self.progress.usage().0
    }

    fn write(&mut self, status: i32, outcome: Outcome) -> Option<Finished> {
        let mut row = self.row.take()?;
        let outcome = outcome.as_str();
        let (usage, source) = self.progress.usage();
        row.status = status;
        row.outcome = outcome.to_owned();
        row.prompt_tokens = crate::store::to_i64(usage.prompt_tokens);
        row.completion_tokens = crate::store::to_i64(usage.completion_tokens);
        row.cached_tokens = crate::store::to_i64(usage.cached_tokens);
        row.cache_write_tokens = crate::store::to_i64(usage.cache_write_tokens);
        row.estimated = !matches!(source, "reported" | "capped");
        row.usage_source = source.to_owned();
        if let Some(estimated) = self.cached {
            row.estimated = estimated;
            row.usage_source = "cache".to_owned();
        }
        row.partial = self.progress.partial;
        row.cost_usd = self.cost.as_ref().map_or(0.0, |c| cost_of(c, usage));
        if let Some((shared, key, window_ms)) = self.spend.take() {
            let micros = usd_to_micros(row.cost_usd);
            if micros > 0 {
                tokio::spawn(async move {
                    if let Err(e) = shared.window_add(&key, window_ms, micros, None).await {
                        tracing::warn!(error = %e, "Could not add to a spend counter.");
                    }
                });
            }
        }
        row.latency_ms = elapsed_ms(self.started);
        row.ttft_ms = self.first_byte_ms;
        for f in self.settle.drain(..) {
            f(&row);
        }
        let finished = Finished {
            request_id: row.request_id.clone(),
            latency_ms: row.latency_ms,
            cost_usd: row.cost_usd,
            usage,
            estimated: row.estimated,
        };
        self.accounting.submit(*row, &self.canonical_route);
        Some(finished)
    }
}

impl Drop for UsageGuard {
    fn drop(&mut self) {
        if self.row.is_some() {
            self.write(499, Outcome::ClientDisconnected);
        }
    }
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// USD for `usage` at `price` (per 1M tokens; cache reads and cache writes of the input at their
/// own prices when set, else at the input price).
#[expect(clippy::as_conversions, reason = "token counts stay far below 2^53, where u64 → f64 is exact")]
pub fn cost_of(price: &CostConfig, usage: Usage) -> f64 {
    let per = |n: u64, p: f64| p * (n as f64) / 1_000_000.0;
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    let cached_price = price.cached_input_per_million.unwrap_or(price.input_per_million);
    let write_price = price.cache_write_per_million.unwrap_or(price.input_per_million);
    per(usage.prompt_tokens - cached - written, price.input_per_million)
        + per(cached, cached_price)
        + per(written, write_price)
        + per(usage.completion_tokens, price.output_per_million)
}

/// USD to whole micro-USD (negative and non-finite amounts count as zero).
#[expect(clippy::as_conversions, reason = "a saturating float-to-int cast is the conversion wanted")]
pub(crate) fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 { (usd * 1_000_000.0).round() as u64 } else { 0 }
}
