use sea_orm::sea_query::OnConflict;
use std::collections::HashSet;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionSession as _, TransactionTrait,
};

use crate::store::entity::usage_records;
use crate::store::{StoreError, rollups};

/// One usage record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    /// UUIDv7 of the request; the idempotency key.
    pub request_id: String,
    /// When the request arrived, ms since the epoch.
    pub created_at: i64,
    /// The node that served it.
    pub node: String,
    /// Owner of the token.
    pub user_id: Option<i64>,
    /// The token.
    pub token_id: Option<i64>,
    /// The route as requested (`provider/x/m`, `rotation/r`, …).
    pub route: String,
    /// The provider that served it.
    pub provider: Option<String>,
    /// The upstream model.
    pub model: Option<String>,
    /// HTTP status sent to the client (499: client went away).
    pub status: i32,
    /// `ok`, `upstream_error`, `timeout`, `client_disconnected`, `partial`, `rejected`, …
    pub outcome: String,
    /// Streaming request.
    pub stream: bool,
    /// Input tokens.
    pub prompt_tokens: i64,
    /// Output tokens.
    pub completion_tokens: i64,
    /// Cached input tokens (cache reads; part of the prompt).
    pub cached_tokens: i64,
    /// Input tokens written to the prompt cache (part of the prompt).
    #[serde(default)]
    pub cache_write_tokens: i64,
    /// Counts were estimated by the gateway, not reported by the upstream.
    pub estimated: bool,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Total latency.
    pub latency_ms: i64,
    /// Time to first byte of the answer.
    pub ttft_ms: Option<i64>,
    /// Served from cache.
    pub cache_hit: bool,
    /// The routing receipt (JSON): candidates considered, what filtered each, the attempts and
    /// their failures, the chosen target and the reason. Absent for direct provider routes.
    pub routing: Option<String>,
    /// Where the token counts come from: `reported` (the upstream's usage fields), `counted`
    /// (the gateway counted what it relayed with its tokenizer) or `estimated` (nothing was
    /// relayed; the prompt is the gateway's estimate).
    pub usage_source: String,
    /// The answer was cut short (a broken or stalled stream, a client that left mid-stream).
    pub partial: bool,
    /// For an autoselect's selection call: the request it was made for.
    #[serde(default)]
    pub parent_request_id: Option<String>,
}

impl From<usage_records::Model> for UsageRow {
    fn from(m: usage_records::Model) -> Self {
        Self {
            request_id: m.request_id,
            created_at: m.created_at,
            node: m.node,
            user_id: m.user_id,
            token_id: m.token_id,
            route: m.route,
            provider: m.provider,
            model: m.model,
            status: m.status,
            outcome: m.outcome,
            stream: m.stream,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            cached_tokens: m.cached_tokens,
            cache_write_tokens: m.cache_write_tokens,
            estimated: m.estimated,
            cost_usd: m.cost_usd,
            latency_ms: m.latency_ms,
            ttft_ms: m.ttft_ms,
            cache_hit: m.cache_hit,
            routing: m.routing,
            usage_source: m.usage_source,
            partial: m.partial,
            parent_request_id: m.parent_request_id,
        }
    }
}

fn active(r: &UsageRow) -> usage_records::ActiveModel {
    usage_records::ActiveModel {
        request_id: Set(r.request_id.clone()),
        created_at: Set(r.created_at),
        node: Set(r.node.clone()),
        user_id: Set(r.user_id),
        token_id: Set(r.token_id),
        route: Set(r.route.chars().take(512).collect()),
        provider: Set(r.provider.clone()),
        model: Set(r.model.as_ref().map(|m| m.chars().take(256).collect())),
        status: Set(r.status),
        outcome: Set(r.outcome.clone()),
        stream: Set(r.stream),
        prompt_tokens: Set(r.prompt_tokens),
        completion_tokens: Set(r.completion_tokens),
        cached_tokens: Set(r.cached_tokens),
        cache_write_tokens: Set(r.cache_write_tokens),
        estimated: Set(r.estimated),
        cost_usd: Set(r.cost_usd),
        latency_ms: Set(r.latency_ms),
        ttft_ms: Set(r.ttft_ms),
        cache_hit: Set(r.cache_hit),
        routing: Set(r.routing.clone()),
        usage_source: Set(r.usage_source.clone()),
        partial: Set(r.partial),
        parent_request_id: Set(r.parent_request_id.clone()),
    }
}

/// Chunk sizes of multi-row inserts. The SQL text of an insert depends on its row count, and
/// the driver caches one prepared statement per text: a few fixed sizes keep that cache (and the
/// node's memory) bounded whatever batch sizes the writer produces.
const CHUNKS: [usize; 4] = [128, 32, 8, 1];

/// Inserts records and adds them to the rollups, in one transaction; a request id that is
/// already stored is skipped (neither inserted nor counted again), so replays are harmless.
/// Returns how many rows were new.
pub async fn insert_usage_batch(
    db: &(impl ConnectionTrait + TransactionTrait),
    rows: &[UsageRow],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let tx = db.begin().await?;
    // The rollup rows first: a concurrent writer of the same record waits here until this
    // transaction ends, and then sees the record stored.
    rollups::lock(&tx, rows).await?;
    let mut stored: HashSet<String> = HashSet::new();
    for ids in rows.chunks(128) {
        let found: Vec<String> = usage_records::Entity::find()
            .select_only()
            .column(usage_records::Column::RequestId)
            .filter(usage_records::Column::RequestId.is_in(ids.iter().map(|r| r.request_id.as_str())))
            .into_tuple()
            .all(&tx)
            .await?;
        stored.extend(found);
    }
    let mut fresh: Vec<&UsageRow> = Vec::with_capacity(rows.len());
    for r in rows {
        // A batch may hold one request twice (a replay next to the original).
        if stored.insert(r.request_id.clone()) {
            fresh.push(r);
        }
    }
    let mut inserted = 0;
    let mut rest = fresh.as_slice();
    while !rest.is_empty() {
        let size = CHUNKS.iter().copied().find(|c| *c <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        let conflict = OnConflict::column(usage_records::Column::RequestId)
            .do_nothing_on([usage_records::Column::RequestId])
            .to_owned();
        inserted += usage_records::Entity::insert_many(chunk.iter().map(|r| active(r)))
            .on_conflict(conflict)
            .exec_without_returning(&tx)
            .await?;
        rest = tail;
    }
    rollups::add(&tx, &fresh).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// The record of one request.
pub async fn find_usage(db: &impl ConnectionTrait, request_id: &str) -> Result<Option<UsageRow>, StoreError> {
    Ok(usage_records::Entity::find_by_id(request_id.to_owned()).one(db).await?.map(UsageRow::from))
}

/// The newest records, optionally of one user.
pub async fn list_usage(
    db: &impl ConnectionTrait,
    user_id: Option<i64>,
    limit: u64,
) -> Result<Vec<UsageRow>, StoreError> {
    let mut q = usage_records::Entity::find();
    if let Some(u) = user_id {
        q = q.filter(usage_records::Column::UserId.eq(u));
    }
    let rows = q.order_by_desc(usage_records::Column::CreatedAt).limit(limit).all(db).await?;
    Ok(rows.into_iter().map(UsageRow::from).collect())
}

/// How many records exist.
pub async fn count_usage(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(usage_records::Entity::find().count(db).await?)
}

/// The total cost (USD) of the records of a token, or of a user since a time (ms).
pub async fn sum_cost(
    db: &impl ConnectionTrait,
    token_id: Option<i64>,
    user_id: Option<i64>,
    since_ms: Option<i64>,
) -> Result<f64, StoreError> {
    let mut q = usage_records::Entity::find().select_only().column_as(usage_records::Column::CostUsd.sum(), "total");
    if let Some(t) = token_id {
        q = q.filter(usage_records::Column::TokenId.eq(t));
    }
    if let Some(u) = user_id {
        q = q.filter(usage_records::Column::UserId.eq(u));
    }
    if let Some(s) = since_ms {
        q = q.filter(usage_records::Column::CreatedAt.gte(s));
    }
    let total: Option<Option<f64>> = q.into_tuple().one(db).await?;
    Ok(total.flatten().unwrap_or(0.0))
}

/// Which records a usage query reads.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    /// From this time (ms, inclusive).
    pub from_ms: Option<i64>,
    /// Before this time (ms, exclusive).
    pub to_ms: Option<i64>,
    /// Of this user.
    pub user_id: Option<i64>,
    /// Of this model.
    pub model: Option<String>,
    /// Of this route.
    pub route: Option<String>,
    /// Only of these tokens (a child token sees its own subtree's usage).
    pub token_ids: Option<Vec<i64>>,
    /// Only failures (status 400 or more).
    pub errors_only: bool,
}

fn filtered(f: &UsageFilter) -> sea_orm::Select<usage_records::Entity> {
    let mut q = usage_records::Entity::find();
    if let Some(v) = f.from_ms {
        q = q.filter(usage_records::Column::CreatedAt.gte(v));
    }
    if let Some(v) = f.to_ms {
        q = q.filter(usage_records::Column::CreatedAt.lt(v));
    }
    if let Some(v) = f.user_id {
        q = q.filter(usage_records::Column::UserId.eq(v));
    }
    if let Some(v) = &f.model {
        q = q.filter(usage_records::Column::Model.eq(v.as_str()));
    }
    if let Some(v) = &f.route {
        q = q.filter(usage_records::Column::Route.eq(v.as_str()));
    }
    if let Some(ids) = &f.token_ids {
        q = q.filter(usage_records::Column::TokenId.is_in(ids.iter().copied()));
    }
    if f.errors_only {
        q = q.filter(usage_records::Column::Status.gte(400));
    }
    q
}

/// The records a filter selects, oldest first, at most `limit`.
pub async fn query_usage(db: &impl ConnectionTrait, f: &UsageFilter, limit: u64) -> Result<Vec<UsageRow>, StoreError> {
    page_usage(db, f, None, false, limit).await
}

/// One page of the records a filter selects, by (time, request id): after `cursor` oldest
/// first, or before it newest first (`newest_first`). Each page is one index range scan, however
/// many records there are.
pub async fn page_usage(
    db: &impl ConnectionTrait,
    f: &UsageFilter,
    cursor: Option<(i64, String)>,
    newest_first: bool,
    limit: u64,
) -> Result<Vec<UsageRow>, StoreError> {
    use sea_orm::Condition;
    let mut q = filtered(f);
    if let Some((t, id)) = cursor {
        // The bound alone is an index range; the tie-break on the request id filters within it.
        q = q.filter(if newest_first {
            usage_records::Column::CreatedAt.lte(t)
        } else {
            usage_records::Column::CreatedAt.gte(t)
        });
        let (time_past, id_past) = if newest_first {
            (usage_records::Column::CreatedAt.lt(t), usage_records::Column::RequestId.lt(id))
        } else {
            (usage_records::Column::CreatedAt.gt(t), usage_records::Column::RequestId.gt(id))
        };
        q = q.filter(
            Condition::any()
                .add(time_past)
                .add(Condition::all().add(usage_records::Column::CreatedAt.eq(t)).add(id_past)),
        );
    }
    let q = if newest_first {
        q.order_by_desc(usage_records::Column::CreatedAt).order_by_desc(usage_records::Column::RequestId)
    } else {
        q.order_by_asc(usage_records::Column::CreatedAt).order_by_asc(usage_records::Column::RequestId)
    };
    let rows = q.limit(limit).all(db).await?;
    Ok(rows.into_iter().map(UsageRow::from).collect())
}

/// The records made for `request_id` (an autoselect's selection call).
pub async fn child_usage(db: &impl ConnectionTrait, request_id: &str) -> Result<Vec<UsageRow>, StoreError> {
    let rows = usage_records::Entity::find()
        .filter(usage_records::Column::ParentRequestId.eq(request_id))
        .order_by_asc(usage_records::Column::CreatedAt)
        .limit(20)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(UsageRow::from).collect())
}
