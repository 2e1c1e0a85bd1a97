//! Usage reports over stored records: totals of requests, errors, tokens, cost and latency
//! percentiles, grouped by day (UTC), user, model or route; and CSV export.

use std::collections::BTreeMap;

use crate::store::{self, Store, StoreError, UsageFilter, UsageRow};

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

/// The records `f` selects as CSV (header first).
pub async fn csv(store: &Store, f: &UsageFilter) -> Result<String, ReportError> {
    let rows = rows(store, f).await?;
    let mut out = String::from(
        "request_id,time,user_id,token_id,route,provider,model,status,outcome,stream,prompt_tokens,\
         completion_tokens,cached_tokens,cache_write_tokens,usage_source,partial,cost_usd,latency_ms,ttft_ms,node\n",
    );
    for r in rows {
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
    Ok(out)
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
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
