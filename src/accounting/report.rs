//! Usage reports over stored records: totals of requests, errors, tokens, cost and latency
//! percentiles, grouped by day (UTC), user, model or route; and CSV export.

use std::collections::BTreeMap;

use crate::store::{
    self, BUCKETS, Dimension, LATENCY_BOUNDS_MS, RollupFilter, Span, Store, StoreError, Sums, UsageFilter, UsageRow,
};

/// The most records one report or export reads; a wider range is refused (narrow the filter).
pub const MAX_ROWS: u64 = 200_000;

/// How a report groups records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Calendar day (UTC), `YYYY-MM-DD`.
    Day,
    /// User id.
    User,
    /// Model.
    Model,
    /// Route as requested.
    Route,
}

/// Totals of one group (or of everything).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Totals {
    /// The group's key (absent for the grand total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Records.
    pub requests: u64,
    /// Records with a status of 400 or more.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Latency percentiles (ms).
    pub latency_ms: Percentiles,
}

/// Latency percentiles (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: i64,
    /// 95th percentile.
    pub p95: i64,
    /// 99th percentile.
    pub p99: i64,
}

fn percentiles(mut v: Vec<i64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_unstable();
    let at = |q: usize| v[((v.len() * q).div_ceil(100)).clamp(1, v.len()) - 1];
    Percentiles { p50: at(50), p95: at(95), p99: at(99) }
}

fn totals(key: Option<String>, rows: &[&UsageRow]) -> Totals {
    Totals {
        key,
        requests: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        errors: u64::try_from(rows.iter().filter(|r| r.status >= 400).count()).unwrap_or(u64::MAX),
        prompt_tokens: rows.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: rows.iter().map(|r| r.completion_tokens).sum(),
        cost_usd: rows.iter().map(|r| r.cost_usd).sum(),
        latency_ms: percentiles(rows.iter().map(|r| r.latency_ms).collect()),
    }
}

/// A usage report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// Everything selected.
    pub total: Totals,
    /// Per group, in key order (when grouped).
    pub groups: Vec<Totals>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// More records than [`MAX_ROWS`] match.
    #[error("more than {MAX_ROWS} records match; narrow the time range")]
    TooMany,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn rows(store: &Store, f: &UsageFilter) -> Result<Vec<UsageRow>, ReportError> {
    let rows = store::query_usage(store.conn(), f, MAX_ROWS + 1).await?;
    if u64::try_from(rows.len()).unwrap_or(u64::MAX) > MAX_ROWS {
        return Err(ReportError::TooMany);
    }
    Ok(rows)
}

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

/// Totals of the records `f` selects, grouped by `by`.
pub async fn report(store: &Store, f: &UsageFilter, by: Option<GroupBy>) -> Result<Report, ReportError> {
    let rows = rows(store, f).await?;
    let all: Vec<&UsageRow> = rows.iter().collect();
    let mut groups: BTreeMap<String, Vec<&UsageRow>> = BTreeMap::new();
    if let Some(by) = by {
        for r in &rows {
            let key = match by {
                GroupBy::Day => day(r.created_at),
                GroupBy::User => r.user_id.map_or_else(|| "-".into(), |u| u.to_string()),
                GroupBy::Model => r.model.clone().unwrap_or_else(|| "-".into()),
                GroupBy::Route => r.route.clone(),
            };
            groups.entry(key).or_default().push(r);
        }
    }
    Ok(Report { total: totals(None, &all), groups: groups.into_iter().map(|(k, v)| totals(Some(k), &v)).collect() })
}

fn csv_field(s: &str) -> String {
    // Quote every field that needs it; neutralise spreadsheet formulas.
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

const CSV_HEADER: &str = "request_id,time,user_id,token_id,route,provider,model,status,outcome,stream,prompt_tokens,\
     completion_tokens,cached_tokens,cache_write_tokens,usage_source,partial,cost_usd,latency_ms,ttft_ms,node\n";

fn csv_line(out: &mut String, r: UsageRow) {
    let time = chrono::DateTime::from_timestamp_millis(r.created_at).map_or_else(String::new, |d| d.to_rfc3339());
    let fields = [
        r.request_id,
        time,
        r.user_id.map(|v| v.to_string()).unwrap_or_default(),
        r.token_id.map(|v| v.to_string()).unwrap_or_default(),
        r.route,
        r.provider.unwrap_or_default(),
        r.model.unwrap_or_default(),
        r.status.to_string(),
        r.outcome,
        r.stream.to_string(),
        r.prompt_tokens.to_string(),
        r.completion_tokens.to_string(),
        r.cached_tokens.to_string(),
        r.cache_write_tokens.to_string(),
        r.usage_source,
        r.partial.to_string(),
        format!("{:.6}", r.cost_usd),
        r.latency_ms.to_string(),
        r.ttft_ms.map(|v| v.to_string()).unwrap_or_default(),
        r.node,
    ];
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&line.join(","));
    out.push('\n');
}

/// Records a page of the CSV export reads at once.
const CSV_PAGE: u64 = 2_000;

/// The records `f` selects as CSV (header first), oldest first, streamed page by page: the
/// first bytes leave at once and memory stays bounded, however many records match.
pub fn csv_stream(
    store: Store,
    f: UsageFilter,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, ReportError>> + 'static {
    enum At {
        Header,
        After(Option<(i64, String)>),
        Done,
    }
    futures_util::stream::unfold(At::Header, move |at| {
        let store = store.clone();
        let f = f.clone();
        async move {
            match at {
                At::Header => Some((Ok(bytes::Bytes::from_static(CSV_HEADER.as_bytes())), At::After(None))),
                At::Done => None,
                At::After(cursor) => match store::page_usage(store.conn(), &f, cursor, false, CSV_PAGE).await {
                    Err(e) => Some((Err(ReportError::Store(e)), At::Done)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let full = u64::try_from(rows.len()).unwrap_or(0) == CSV_PAGE;
                        let next = rows.last().map(|r| (r.created_at, r.request_id.clone()));
                        let mut out = String::with_capacity(rows.len() * 200);
                        for r in rows {
                            csv_line(&mut out, r);
                        }
                        Some((Ok(bytes::Bytes::from(out)), if full { At::After(next) } else { At::Done }))
                    }
                },
            }
        }
    })
}

/// A time window of the dashboard, in buckets of one rollup span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first bucket's start (ms).
    pub from_ms: i64,
    /// The end (ms, exclusive): the end of the bucket holding now.
    pub to_ms: i64,
    /// The bucket length.
    pub span: Span,
}

impl Window {
    /// The last `hours` hours up to `now_ms`: hourly buckets up to two days, daily beyond.
    pub fn last_hours(hours: u32, now_ms: i64) -> Self {
        let span = if hours <= 48 { Span::Hour } else { Span::Day };
        let to_ms = span.floor(now_ms) + span.millis();
        let from_ms = span.floor(now_ms - i64::from(hours) * 3_600_000) + span.millis();
        Self { from_ms, to_ms, span }
    }

    /// The start of every bucket, oldest first.
    pub fn buckets(&self) -> Vec<i64> {
        let step = usize::try_from(self.span.millis()).unwrap_or(usize::MAX);
        (self.from_ms..self.to_ms).step_by(step).collect()
    }
}

/// Totals of a set of records, read from rollups.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Records.
    pub requests: i64,
    /// Records with a status of 400 or more.
    pub errors: i64,
    /// Input tokens (cache reads and writes included).
    pub prompt_tokens: i64,
    /// Output tokens.
    pub completion_tokens: i64,
    /// Cache reads.
    pub cached_tokens: i64,
    /// Cache writes.
    pub cache_write_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Median latency (ms), from the rollups' histogram.
    pub p50_ms: i64,
    /// 99th percentile latency (ms), from the rollups' histogram.
    pub p99_ms: i64,
}

impl From<&Sums> for Summary {
    fn from(s: &Sums) -> Self {
        Self {
            requests: s.requests,
            errors: s.errors,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            cached_tokens: s.cached_tokens,
            cache_write_tokens: s.cache_write_tokens,
            cost_usd: s.cost_usd,
            p50_ms: histogram_percentile(&s.histogram, 50),
            p99_ms: histogram_percentile(&s.histogram, 99),
        }
    }
}

/// The `q`th percentile of a latency histogram, interpolated linearly inside its bucket (the
/// last, open bucket answers its lower bound).
pub fn histogram_percentile(h: &[i64; BUCKETS], q: u8) -> i64 {
    let n: i64 = h.iter().sum();
    if n <= 0 {
        return 0;
    }
    // The rank of the percentile, 1-based (nearest rank).
    let rank = ((n * i64::from(q) + 99) / 100).clamp(1, n);
    let mut seen = 0;
    for (i, c) in h.iter().enumerate() {
        if *c <= 0 {
            continue;
        }
        if seen + c >= rank {
            let lo = if i == 0 { 0 } else { LATENCY_BOUNDS_MS.get(i - 1).copied().unwrap_or(0) };
            let Some(hi) = LATENCY_BOUNDS_MS.get(i).copied() else { return lo };
            return lo + (hi - lo) * (rank - seen) / c;
        }
        seen += c;
    }
    LATENCY_BOUNDS_MS.last().copied().unwrap_or(0)
}

/// One group's totals and its points over a window.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupSeries {
    /// The group's key (route, model or user id).
    pub key: String,
    /// Its totals over the window.
    pub total: Summary,
    /// Its totals per bucket, aligned with [`Overview::buckets`].
    pub points: Vec<Summary>,
}

/// What the overview shows: totals, totals per bucket, and the same per group.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Overview {
    /// Everything selected.
    pub total: Summary,
    /// Bucket starts (ms).
    pub buckets: Vec<i64>,
    /// Totals per bucket.
    pub points: Vec<Summary>,
    /// Per group, most requests first.
    pub groups: Vec<GroupSeries>,
}

/// The overview of `window` for the rollups `f` selects (its time range is the window's),
/// grouped by `by`: one query over the rollup table of the window's span.
pub async fn overview(store: &Store, window: Window, f: &RollupFilter, by: Dimension) -> Result<Overview, ReportError> {
    let f = RollupFilter { from_ms: Some(window.from_ms), to_ms: Some(window.to_ms), ..f.clone() };
    let rows = store::query_rollups(store.conn(), window.span, &f, true, Some(by)).await?;
    let buckets = window.buckets();
    let index = |b: Option<i64>| b.and_then(|b| buckets.binary_search(&b).ok());
    let mut all = vec![Sums::default(); buckets.len()];
    let mut groups: BTreeMap<String, Vec<Sums>> = BTreeMap::new();
    for r in &rows {
        let Some(i) = index(r.bucket) else { continue };
        let key = r.key.clone().unwrap_or_default();
        let g = groups.entry(key).or_insert_with(|| vec![Sums::default(); buckets.len()]);
        if let (Some(slot), Some(total)) = (g.get_mut(i), all.get_mut(i)) {
            slot.merge(&r.sums);
            total.merge(&r.sums);
        }
    }
    let mut total = Sums::default();
    for s in &all {
        total.merge(s);
    }
    let mut groups: Vec<GroupSeries> = groups
        .into_iter()
        .map(|(key, points)| {
            let mut t = Sums::default();
            for p in &points {
                t.merge(p);
            }
            GroupSeries { key, total: Summary::from(&t), points: points.iter().map(Summary::from).collect() }
        })
        .collect();
    groups.sort_by(|a, b| b.total.requests.cmp(&a.total.requests).then_with(|| a.key.cmp(&b.key)));
    Ok(Overview { total: Summary::from(&total), buckets, points: all.iter().map(Summary::from).collect(), groups })
}

/// Totals of the rollups `f` selects over `window`, without grouping.
pub async fn summary(store: &Store, window: Window, f: &RollupFilter) -> Result<Summary, ReportError> {
    let f = RollupFilter { from_ms: Some(window.from_ms), to_ms: Some(window.to_ms), ..f.clone() };
    let rows = store::query_rollups(store.conn(), window.span, &f, false, None).await?;
    Ok(rows.first().map(|r| Summary::from(&r.sums)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentiles(vec![]), Percentiles::default());
        assert_eq!(percentiles(vec![7]), Percentiles { p50: 7, p95: 7, p99: 7 });
        let p = percentiles((1..=100).rev().collect());
        assert_eq!((p.p50, p.p95, p.p99), (50, 95, 99));
    }

    #[test]
    fn histogram_percentiles_interpolate_inside_a_bucket() {
        let mut h = [0; BUCKETS];
        assert_eq!(histogram_percentile(&h, 50), 0);
        // 100 records between 100 and 150 ms.
        h[store::latency_bucket(120)] = 100;
        assert_eq!(histogram_percentile(&h, 50), 125);
        assert_eq!(histogram_percentile(&h, 99), 149);
        // One slow outlier past the last bound.
        h[BUCKETS - 1] = 1;
        assert_eq!(histogram_percentile(&h, 99), 150);
        assert_eq!(histogram_percentile(&h, 100), 60_000);
        let w = Window::last_hours(24, 1_789_999_200_000 + 1234);
        assert_eq!(w.buckets().len(), 24);
        assert_eq!(w.span, Span::Hour);
        let w = Window::last_hours(24 * 30, 1_789_999_200_000);
        assert_eq!((w.span, w.buckets().len()), (Span::Day, 30));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
