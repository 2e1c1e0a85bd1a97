//! Usage rollups: totals by hour and by day × user × route × model, with a latency histogram,
//! added in the same transaction as the records they count. Pages and reports read these, never
//! `usage_records` in bulk.
//!
//! Exactly once: a batch first locks the rollup rows it will add to (an upsert adding nothing),
//! then asks which of its records are stored already, inserts the others and adds only those.
//! Two writers of the same record (a replayed ledger entry) share its rollup rows, so the second
//! waits for the first to commit and then sees its record.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::store::{StoreError, UsageRow};

/// Upper bounds (ms, exclusive) of the latency histogram's buckets; the last bucket holds the
/// rest. The migration that made the tables has the same bounds.
pub const LATENCY_BOUNDS_MS: [i64; 22] =
    [1, 2, 5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 8000, 15000, 30000, 60000];

/// Buckets of the latency histogram.
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Longest route and model a rollup keeps (longer ones are cut, as their records' are).
const ROUTE_CHARS: usize = 300;
const MODEL_CHARS: usize = 200;

/// A rollup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// `usage_hourly`.
    Hour,
    /// `usage_daily` (UTC days).
    Day,
}

impl Span {
    /// The bucket's length in ms.
    pub const fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    const fn table(self) -> &'static str {
        match self {
            Self::Hour => "usage_hourly",
            Self::Day => "usage_daily",
        }
    }

    /// The start of the bucket holding `ms`.
    pub const fn floor(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.millis())
    }
}

/// A rollup table: per user, or over every user (for the views that filter on no user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    /// `usage_hourly` or `usage_daily`: bucket × user × route × model.
    ByUser(Span),
    /// `usage_hourly_all`: bucket × route × model.
    All,
}

impl Table {
    const fn name(self) -> &'static str {
        match self {
            Self::ByUser(s) => s.table(),
            Self::All => "usage_hourly_all",
        }
    }

    const fn span(self) -> Span {
        match self {
            Self::ByUser(s) => s,
            Self::All => Span::Hour,
        }
    }

    const fn per_user(self) -> bool {
        matches!(self, Self::ByUser(_))
    }
}

/// The histogram bucket of a latency.
pub fn latency_bucket(ms: i64) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|b| ms < *b).unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Sums of a set of records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sums {
    /// Records.
    pub requests: i64,
    /// Records with a status of 400 or more.
    pub errors: i64,
    /// Input tokens.
    pub prompt_tokens: i64,
    /// Output tokens.
    pub completion_tokens: i64,
    /// Cache reads.
    pub cached_tokens: i64,
    /// Cache writes.
    pub cache_write_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Sum of latencies (ms).
    pub latency_sum_ms: i64,
    /// Records per latency bucket ([`LATENCY_BOUNDS_MS`]).
    pub histogram: [i64; BUCKETS],
}

impl Sums {
    fn add_row(&mut self, r: &UsageRow) {
        self.requests += 1;
        self.errors += i64::from(r.status >= 400);
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cache_write_tokens += r.cache_write_tokens;
        self.cost_usd += r.cost_usd;
        self.latency_sum_ms += r.latency_ms;
        if let Some(b) = self.histogram.get_mut(latency_bucket(r.latency_ms)) {
            *b += 1;
        }
    }

    /// Adds another set's sums.
    pub fn merge(&mut self, o: &Self) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cached_tokens += o.cached_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.cost_usd += o.cost_usd;
        self.latency_sum_ms += o.latency_sum_ms;
        for (a, b) in self.histogram.iter_mut().zip(o.histogram.iter()) {
            *a += *b;
        }
    }
}

/// The key of a rollup row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    bucket: i64,
    user_id: i64,
    route: String,
    model: String,
}

fn key(table: Table, r: &UsageRow) -> Key {
    Key {
        bucket: table.span().floor(r.created_at),
        user_id: if table.per_user() { r.user_id.unwrap_or(0) } else { 0 },
        route: r.route.chars().take(ROUTE_CHARS).collect(),
        model: r.model.as_deref().map(|m| m.chars().take(MODEL_CHARS).collect()).unwrap_or_default(),
    }
}

fn rollup<'a>(table: Table, rows: impl Iterator<Item = &'a UsageRow>) -> BTreeMap<Key, Sums> {
    let mut out: BTreeMap<Key, Sums> = BTreeMap::new();
    for r in rows {
        out.entry(key(table, r)).or_default().add_row(r);
    }
    out
}

const SUM_COLUMNS: [&str; 8] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_sum_ms",
];

fn histogram_columns() -> impl Iterator<Item = String> {
    (0..BUCKETS).map(|i| format!("l{i:02}"))
}

/// The `n`th (1-based) placeholder of `backend`.
fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// Adds `sums` to the rows of `table` (creating them), in key order so that concurrent writers
/// lock rows in one order. With `lock_only`, adds nothing: takes the rows' locks.
async fn upsert(
    db: &impl ConnectionTrait,
    which: Table,
    sums: &BTreeMap<Key, Sums>,
    lock_only: bool,
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let table = which.name();
    let keys: &[&str] =
        if which.per_user() { &["bucket", "user_id", "route", "model"] } else { &["bucket", "route", "model"] };
    let columns: Vec<String> =
        keys.iter().copied().chain(SUM_COLUMNS).map(str::to_owned).chain(histogram_columns()).collect();
    let added: Vec<String> = SUM_COLUMNS.iter().map(|c| (*c).to_owned()).chain(histogram_columns()).collect();
    // At most 64 rows a statement: 64 × 35 values stays far below every driver's limit.
    let entries: Vec<(&Key, &Sums)> = sums.iter().collect();
    for chunk in entries.chunks(64) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * columns.len());
        let mut tuples = Vec::with_capacity(chunk.len());
        for (k, s) in chunk {
            let zero = Sums::default();
            let s = if lock_only { &zero } else { *s };
            let start = values.len();
            values.push(k.bucket.into());
            if which.per_user() {
                values.push(k.user_id.into());
            }
            values.push(k.route.clone().into());
            values.push(k.model.clone().into());
            for v in [s.requests, s.errors, s.prompt_tokens, s.completion_tokens, s.cached_tokens, s.cache_write_tokens]
            {
                values.push(v.into());
            }
            values.push(s.cost_usd.into());
            values.push(s.latency_sum_ms.into());
            for h in s.histogram {
                values.push(h.into());
            }
            let marks: Vec<String> = (start + 1..=values.len()).map(|n| ph(backend, n)).collect();
            tuples.push(format!("({})", marks.join(", ")));
        }
        let update: Vec<String> = added
            .iter()
            .map(|c| match backend {
                DbBackend::MySql => format!("{c} = {c} + VALUES({c})"),
                _ => format!("{c} = {table}.{c} + excluded.{c}"),
            })
            .collect();
        let conflict = match backend {
            DbBackend::MySql => format!("ON DUPLICATE KEY UPDATE {}", update.join(", ")),
            _ => format!("ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), update.join(", ")),
        };
        let sql = format!("INSERT INTO {table} ({}) VALUES {} {conflict}", columns.join(", "), tuples.join(", "));
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    }
    Ok(())
}

/// Locks the per-user rollup rows `rows` will add to (both spans): two writers of one record
/// share them, so the second waits for the first.
pub(crate) async fn lock(db: &impl ConnectionTrait, rows: &[UsageRow]) -> Result<(), StoreError> {
    for table in [Table::ByUser(Span::Hour), Table::ByUser(Span::Day)] {
        upsert(db, table, &rollup(table, rows.iter()), true).await?;
    }
    Ok(())
}

/// Adds `rows` (records just inserted) to every rollup.
pub(crate) async fn add(db: &impl ConnectionTrait, rows: &[&UsageRow]) -> Result<(), StoreError> {
    for table in [Table::ByUser(Span::Hour), Table::ByUser(Span::Day), Table::All] {
        upsert(db, table, &rollup(table, rows.iter().copied()), false).await?;
    }
    Ok(())
}

/// Which rollup rows a query reads.
#[derive(Clone, Debug, Default)]
pub struct RollupFilter {
    /// From this time (ms, inclusive; rounded down to the span).
    pub from_ms: Option<i64>,
    /// Before this time (ms, exclusive).
    pub to_ms: Option<i64>,
    /// Of this user.
    pub user_id: Option<i64>,
    /// Of this route.
    pub route: Option<String>,
    /// Of this model.
    pub model: Option<String>,
}

/// What rollup rows are grouped by (besides the time bucket, when asked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// User id.
    User,
    /// Route.
    Route,
    /// Model.
    Model,
}

/// One group of a rollup query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollupGroup {
    /// The bucket's start (ms) when grouped by time.
    pub bucket: Option<i64>,
    /// The dimension's value when grouped by one (user id as text).
    pub key: Option<String>,
    /// The group's sums.
    pub sums: Sums,
}

/// Sums of a `SUM(...)` the backend reads back as a 64-bit integer.
fn sum_int(backend: DbBackend, c: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)"),
        DbBackend::MySql => format!("CAST(COALESCE(SUM({c}), 0) AS SIGNED)"),
        _ => format!("COALESCE(SUM({c}), 0)"),
    }
}

/// Sums of the rollup rows `f` selects, grouped by time bucket (`by_time`) and/or `by`.
pub async fn query_rollups(
    db: &impl ConnectionTrait,
    span: Span,
    f: &RollupFilter,
    by_time: bool,
    by: Option<Dimension>,
) -> Result<Vec<RollupGroup>, StoreError> {
    let backend = db.get_database_backend();
    let mut values: Vec<Value> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let mut cond = |c: &str, v: Value| {
        values.push(v);
        conds.push(format!("{c} {}", ph(backend, values.len())));
    };
    if let Some(v) = f.from_ms {
        cond("bucket >=", span.floor(v).into());
    }
    if let Some(v) = f.to_ms {
        cond("bucket <", v.into());
    }
    if let Some(v) = f.user_id {
        cond("user_id =", v.into());
    }
    if let Some(v) = &f.route {
        cond("route =", v.chars().take(ROUTE_CHARS).collect::<String>().into());
    }
    if let Some(v) = &f.model {
        cond("model =", v.chars().take(MODEL_CHARS).collect::<String>().into());
    }
    let dim = by.map(|d| match d {
        Dimension::User => "user_id",
        Dimension::Route => "route",
        Dimension::Model => "model",
    });
    let mut group: Vec<&str> = Vec::new();
    if by_time {
        group.push("bucket");
    }
    group.extend(dim);
    let mut select: Vec<String> = group.iter().map(|g| (*g).to_owned()).collect();
    for c in SUM_COLUMNS {
        select.push(if c == "cost_usd" {
            format!("COALESCE(SUM({c}), 0.0) AS {c}")
        } else {
            format!("{} AS {c}", sum_int(backend, c))
        });
    }
    for c in histogram_columns() {
        select.push(format!("{} AS {c}", sum_int(backend, &c)));
    }
    // Views over every user read the table without the user dimension: a fraction of the rows.
    let table = if span == Span::Hour && f.user_id.is_none() && by != Some(Dimension::User) {
        Table::All
    } else {
        Table::ByUser(span)
    };
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), table.name());
    if !conds.is_empty() {
        sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
    }
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {0} ORDER BY {0}", group.join(", ")));
    }
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |c: &str| row.try_get::<i64>("", c);
        let mut s = Sums {
            requests: get("requests")?,
            errors: get("errors")?,
            prompt_tokens: get("prompt_tokens")?,
            completion_tokens: get("completion_tokens")?,
            cached_tokens: get("cached_tokens")?,
            cache_write_tokens: get("cache_write_tokens")?,
            cost_usd: row.try_get::<f64>("", "cost_usd")?,
            latency_sum_ms: get("latency_sum_ms")?,
            histogram: [0; BUCKETS],
        };
        for (i, c) in histogram_columns().enumerate() {
            if let Some(h) = s.histogram.get_mut(i) {
                *h = get(&c)?;
            }
        }
        if s.requests == 0 && group.is_empty() {
            // An empty selection's grand total.
            s = Sums::default();
        }
        let key = match by {
            None => None,
            Some(Dimension::User) => Some(get("user_id")?.to_string()),
            Some(Dimension::Route) => Some(row.try_get::<String>("", "route")?),
            Some(Dimension::Model) => Some(row.try_get::<String>("", "model")?),
        };
        out.push(RollupGroup { bucket: if by_time { Some(get("bucket")?) } else { None }, key, sums: s });
    }
    Ok(out)
}
