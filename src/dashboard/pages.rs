//! The read-only pages: overview, usage (and its CSV), one request, the global catalog, the
//! cluster. Figures come from the rollups and single-record lookups, never a scan of the usage
//! table; a user sees only their own.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounting::report::{self, Summary, Window};
use crate::dashboard::chart::{Chart, line_chart};
use crate::dashboard::errors::DashError;
use crate::dashboard::forms::opt_text;
use crate::dashboard::session::Principal;
use crate::dashboard::state::DashboardState;
use crate::dashboard::views::{Frame, count, page, see_other, time, usd};
use crate::store::{self, Dimension, RollupFilter, Span, UsageFilter, UsageRow};
use crate::types::now_ms;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(overview))
        .route("/", web::get().to(overview))
        .route("/usage", web::get().to(usage))
        .route("/usage.csv", web::get().to(usage_csv))
        .route("/requests", web::get().to(requests))
        .route("/requests/{id}", web::get().to(request))
        .route("/catalog", web::get().to(catalog))
        .route("/cluster", web::get().to(cluster));
}

/// A choice of a `<select>`.
pub struct Choice {
    /// Value.
    pub value: &'static str,
    /// Text.
    pub label: &'static str,
    /// Selected.
    pub selected: bool,
}

fn choices(all: &[(&'static str, &'static str)], current: &str) -> Vec<Choice> {
    all.iter().map(|(value, label)| Choice { value, label, selected: *value == current }).collect()
}

fn period_choices(current: &str) -> Vec<Choice> {
    PERIODS.iter().map(|(value, label, _)| Choice { value, label, selected: *value == current }).collect()
}

/// The periods the pages offer: value, label, hours.
const PERIODS: [(&str, &str, u32); 5] = [
    ("24h", "Last 24 hours", 24),
    ("48h", "Last 48 hours", 48),
    ("7d", "Last 7 days", 24 * 7),
    ("30d", "Last 30 days", 24 * 30),
    ("90d", "Last 90 days", 24 * 90),
];

/// The filters of the overview and usage pages.
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    errors: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

/// The filters as resolved for one caller.
struct Resolved {
    period: &'static str,
    window: Window,
    user_id: Option<i64>,
    user: String,
    route: Option<String>,
    model: Option<String>,
    errors_only: bool,
}

impl Filters {
    fn resolve(&self, s: &DashboardState, p: &Principal) -> Result<Resolved, DashError> {
        let period = self.period.as_deref().unwrap_or("24h");
        let Some((period, _, hours)) = PERIODS.iter().find(|(v, _, _)| *v == period) else {
            return Err(DashError::Invalid(format!(
                "Unknown period `{}`.",
                period.chars().take(20).collect::<String>()
            )));
        };
        let window = Window::last_hours(*hours, now_ms());
        // A user sees their own records only, whatever the query says.
        let (user_id, user) = if p.is_admin() {
            match self.user.as_deref().and_then(opt_text) {
                Some(name) => match s.catalog.snapshot().user(&name) {
                    Some(u) => (Some(u.id), name),
                    None => {
                        return Err(DashError::Invalid(format!(
                            "No user `{}`.",
                            name.chars().take(64).collect::<String>()
                        )));
                    }
                },
                None => (None, String::new()),
            }
        } else {
            (Some(p.user_id), p.username.clone())
        };
        Ok(Resolved {
            period,
            window,
            user_id,
            user,
            route: self.route.as_deref().and_then(opt_text),
            model: self.model.as_deref().and_then(opt_text),
            errors_only: self.errors.as_deref().is_some_and(|e| !e.is_empty()),
        })
    }
}

impl Resolved {
    fn rollups(&self) -> RollupFilter {
        RollupFilter {
            from_ms: None,
            to_ms: None,
            user_id: self.user_id,
            route: self.route.clone(),
            model: self.model.clone(),
        }
    }

    fn records(&self) -> UsageFilter {
        UsageFilter {
            from_ms: Some(self.window.from_ms),
            to_ms: Some(self.window.to_ms),
            user_id: self.user_id,
            model: self.model.clone(),
            route: self.route.clone(),
            token_ids: None,
            errors_only: self.errors_only,
        }
    }

    /// The query string that selects the same records.
    fn query(&self) -> String {
        let mut q = vec![("period", self.period.to_owned())];
        if !self.user.is_empty() {
            q.push(("user", self.user.clone()));
        }
        if let Some(r) = &self.route {
            q.push(("route", r.clone()));
        }
        if let Some(m) = &self.model {
            q.push(("model", m.clone()));
        }
        if self.errors_only {
            q.push(("errors", "1".into()));
        }
        serde_urlencoded::to_string(q).unwrap_or_default()
    }
}

/// Summary figures as text.
pub struct Cards {
    pub requests: String,
    pub errors: String,
    pub error_rate: String,
    pub prompt_tokens: String,
    pub completion_tokens: String,
    pub cached_tokens: String,
    pub cost: String,
    pub p50: String,
    pub p99: String,
}

fn cards(t: &Summary) -> Cards {
    let rate = if t.requests > 0 {
        format!("{:.1} %", f64::from(u32::try_from(t.errors * 1000 / t.requests).unwrap_or(0)) / 10.0)
    } else {
        "—".into()
    };
    Cards {
        requests: count(t.requests),
        errors: count(t.errors),
        error_rate: rate,
        prompt_tokens: count(t.prompt_tokens),
        completion_tokens: count(t.completion_tokens),
        cached_tokens: count(t.cached_tokens + t.cache_write_tokens),
        cost: usd(t.cost_usd),
        p50: format!("{} ms", count(t.p50_ms)),
        p99: format!("{} ms", count(t.p99_ms)),
    }
}

/// A row of a totals table.
pub struct GroupRow {
    pub key: String,
    pub requests: String,
    pub errors: String,
    pub tokens: String,
    pub cost: String,
    pub p50: String,
    pub p99: String,
}

fn group_row(key: String, t: &Summary) -> GroupRow {
    GroupRow {
        key,
        requests: count(t.requests),
        errors: count(t.errors),
        tokens: count(t.prompt_tokens + t.completion_tokens),
        cost: usd(t.cost_usd),
        p50: count(t.p50_ms),
        p99: count(t.p99_ms),
    }
}

/// A count on a chart (saturating, as the rest of the code converts counts).
fn as_f64(v: i64) -> f64 {
    f64::from(u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX }))
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    f: Frame,
    periods: Vec<Choice>,
    groups: Vec<Choice>,
    user: String,
    route: String,
    model: String,
    cards: Cards,
    charts: Vec<Chart>,
    rows: Vec<GroupRow>,
    group_label: &'static str,
    usage_link: String,
}

/// How many groups get their own line on a chart.
const LINES: usize = 5;

async fn overview(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<Filters>,
) -> Result<HttpResponse, DashError> {
    let r = q.resolve(&s, &p)?;
    let mut group_choices: Vec<(&'static str, &'static str)> = vec![("route", "Route"), ("model", "Model")];
    if p.is_admin() {
        group_choices.push(("user", "User"));
    }
    let group = q.group.as_deref().unwrap_or("route");
    let Some((group, group_label)) = group_choices.iter().copied().find(|(v, _)| *v == group) else {
        return Err(DashError::Invalid("Group by route, model or (for administrators) user.".into()));
    };
    let by = match group {
        "model" => Dimension::Model,
        "user" => Dimension::User,
        _ => Dimension::Route,
    };
    let o = report::overview(s.control.store(), r.window, &r.rollups(), by).await?;
    let snapshot = s.catalog.snapshot();
    let name = |key: &str| -> String {
        if by == Dimension::User {
            key.parse::<i64>()
                .ok()
                .and_then(|id| snapshot.user_by_id(id))
                .map_or_else(|| format!("user #{key}"), |u| u.username.clone())
        } else if key.is_empty() {
            "—".to_owned()
        } else {
            key.to_owned()
        }
    };
    let hourly = r.window.span == Span::Hour;
    let top: Vec<&report::GroupSeries> = o.groups.iter().take(LINES).collect();
    let per_group = |f: &dyn Fn(&Summary) -> f64| -> Vec<(String, Vec<f64>)> {
        top.iter().map(|g| (name(&g.key), g.points.iter().map(f).collect())).collect()
    };
    let total = |label: &str, f: &dyn Fn(&Summary) -> f64| -> (String, Vec<f64>) {
        (label.to_owned(), o.points.iter().map(f).collect())
    };
    let mut requests = vec![total("all", &|t| as_f64(t.requests))];
    requests.extend(per_group(&|t| as_f64(t.requests)));
    let mut cost = vec![total("all", &|t| t.cost_usd)];
    cost.extend(per_group(&|t| t.cost_usd));
    let mut errors = vec![total("all", &|t| as_f64(t.errors))];
    errors.extend(per_group(&|t| as_f64(t.errors)));
    let charts = vec![
        line_chart("Requests", "", &o.buckets, hourly, requests),
        line_chart(
            "Tokens",
            "",
            &o.buckets,
            hourly,
            vec![total("input", &|t| as_f64(t.prompt_tokens)), total("output", &|t| as_f64(t.completion_tokens))],
        ),
        line_chart("Cost (USD)", "$", &o.buckets, hourly, cost),
        line_chart("Errors", "", &o.buckets, hourly, errors),
        line_chart(&format!("p50 latency by {group}"), "ms", &o.buckets, hourly, per_group(&|t| as_f64(t.p50_ms))),
        line_chart(&format!("p99 latency by {group}"), "ms", &o.buckets, hourly, per_group(&|t| as_f64(t.p99_ms))),
    ];
    let rows = o.groups.iter().map(|g| group_row(name(&g.key), &g.total)).collect();
    page(&OverviewPage {
        f: Frame::new(&p, "/dashboard", "Overview"),
        periods: period_choices(r.period),
        groups: choices(&group_choices, group),
        user: r.user.clone(),
        route: r.route.clone().unwrap_or_default(),
        model: r.model.clone().unwrap_or_default(),
        cards: cards(&o.total),
        charts,
        rows,
        group_label,
        usage_link: format!("/dashboard/usage?{}", r.query()),
    })
}

/// A usage record as a table row.
pub struct RecordRow {
    pub id: String,
    pub time: String,
    pub user: String,
    pub route: String,
    pub target: String,
    pub status: String,
    pub failed: bool,
    pub outcome: String,
    pub tokens: String,
    pub cost: String,
    pub latency: String,
}

fn record_row(s: &DashboardState, r: &UsageRow) -> RecordRow {
    let snapshot = s.catalog.snapshot();
    RecordRow {
        id: r.request_id.clone(),
        time: time(r.created_at),
        user: r.user_id.and_then(|u| snapshot.user_by_id(u)).map_or_else(|| "—".into(), |u| u.username.clone()),
        route: r.route.clone(),
        target: match (&r.provider, &r.model) {
            (Some(p), Some(m)) => format!("{p} / {m}"),
            (Some(p), None) => p.clone(),
            _ => "—".into(),
        },
        status: r.status.to_string(),
        failed: r.status >= 400,
        outcome: r.outcome.clone(),
        tokens: format!("{} / {}", count(r.prompt_tokens), count(r.completion_tokens)),
        cost: usd(r.cost_usd),
        latency: format!("{} ms", count(r.latency_ms)),
    }
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    f: Frame,
    periods: Vec<Choice>,
    user: String,
    route: String,
    model: String,
    errors_only: bool,
    cards: Cards,
    records: Vec<RecordRow>,
    older: Option<String>,
    csv: String,
}

/// Records a usage page shows.
const PAGE: u64 = 50;

fn cursor(v: Option<&str>) -> Result<Option<(i64, String)>, DashError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else { return Ok(None) };
    let bad = || DashError::Invalid("The page cursor is malformed.".into());
    let (t, id) = v.split_once('_').ok_or_else(bad)?;
    if id.len() > 64 {
        return Err(bad());
    }
    Ok(Some((t.parse().map_err(|_| bad())?, id.to_owned())))
}

async fn usage(s: web::Data<DashboardState>, p: Principal, q: web::Query<Filters>) -> Result<HttpResponse, DashError> {
    let r = q.resolve(&s, &p)?;
    let totals = report::summary(s.control.store(), r.window, &r.rollups()).await?;
    let rows =
        store::page_usage(s.control.store().conn(), &r.records(), cursor(q.before.as_deref())?, true, PAGE).await?;
    let older = (u64::try_from(rows.len()).unwrap_or(0) == PAGE)
        .then(|| {
            rows.last().map(|l| format!("/dashboard/usage?{}&before={}_{}", r.query(), l.created_at, l.request_id))
        })
        .flatten();
    page(&UsagePage {
        f: Frame::new(&p, "/dashboard/usage", "Usage"),
        periods: period_choices(r.period),
        user: r.user.clone(),
        route: r.route.clone().unwrap_or_default(),
        model: r.model.clone().unwrap_or_default(),
        errors_only: r.errors_only,
        cards: cards(&totals),
        records: rows.iter().map(|row| record_row(&s, row)).collect(),
        older,
        csv: format!("/dashboard/usage.csv?{}", r.query()),
    })
}

async fn usage_csv(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<Filters>,
) -> Result<HttpResponse, DashError> {
    let r = q.resolve(&s, &p)?;
    let body = report::csv_stream(s.control.store().clone(), r.records());
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("content-disposition", "attachment; filename=\"usage.csv\""))
        .streaming(body))
}

#[derive(Deserialize)]
struct RequestQuery {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage {
    f: Frame,
    records: Vec<RecordRow>,
}

async fn requests(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<RequestQuery>,
) -> Result<HttpResponse, DashError> {
    if let Some(id) = q.id.as_deref().and_then(opt_text) {
        let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
        return Ok(see_other(&format!("/dashboard/requests/{id}")));
    }
    let f = UsageFilter { user_id: (!p.is_admin()).then_some(p.user_id), ..Default::default() };
    let rows = store::page_usage(s.control.store().conn(), &f, None, true, 20).await?;
    page(&RequestsPage {
        f: Frame::new(&p, "/dashboard/requests", "Requests"),
        records: rows.iter().map(|r| record_row(&s, r)).collect(),
    })
}

/// A labelled value.
pub struct Field {
    pub label: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    f: Frame,
    fields: Vec<Field>,
    receipt: Option<String>,
    /// The calls made for it (an autoselect's selection).
    records: Vec<RecordRow>,
}

async fn request(s: web::Data<DashboardState>, p: Principal, id: web::Path<String>) -> Result<HttpResponse, DashError> {
    let db = s.control.store().conn();
    let id = id.into_inner();
    if id.len() > 64 {
        return Err(DashError::NotFound);
    }
    // Someone else's request answers exactly like one that does not exist.
    let Some(r) = store::find_usage(db, &id).await?.filter(|r| p.is_admin() || r.user_id == Some(p.user_id)) else {
        return Err(DashError::NotFound);
    };
    let row = record_row(&s, &r);
    let opt = |v: Option<i64>| v.map_or_else(|| "—".to_owned(), |v| format!("{} ms", count(v)));
    let fields = vec![
        Field { label: "Time (UTC)", value: row.time.clone() },
        Field { label: "User", value: row.user.clone() },
        Field { label: "Token", value: r.token_id.map_or_else(|| "—".into(), |t| format!("#{t}")) },
        Field { label: "Route", value: r.route.clone() },
        Field { label: "Served by", value: row.target.clone() },
        Field { label: "Status", value: format!("{} ({})", r.status, r.outcome) },
        Field { label: "Streamed", value: if r.stream { "yes" } else { "no" }.into() },
        Field { label: "Input tokens", value: count(r.prompt_tokens) },
        Field {
            label: "Cache reads / writes",
            value: format!("{} / {}", count(r.cached_tokens), count(r.cache_write_tokens)),
        },
        Field { label: "Output tokens", value: count(r.completion_tokens) },
        Field {
            label: "Counts",
            value: format!("{}{}", r.usage_source, if r.partial { ", partial answer" } else { "" }),
        },
        Field { label: "Cost", value: usd(r.cost_usd) },
        Field { label: "Latency", value: format!("{} ms", count(r.latency_ms)) },
        Field { label: "Time to first byte", value: opt(r.ttft_ms) },
        Field { label: "Cache hit", value: if r.cache_hit { "yes" } else { "no" }.into() },
        Field { label: "Node", value: r.node.clone() },
        Field { label: "Made for request", value: r.parent_request_id.clone().unwrap_or_else(|| "—".into()) },
    ];
    let receipt = r.routing.as_deref().map(|j| {
        serde_json::from_str::<serde_json::Value>(j)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| j.to_owned())
    });
    let children = store::child_usage(db, &r.request_id).await?;
    page(&RequestPage {
        f: Frame::new(&p, "/dashboard/requests", format!("Request {}", r.request_id)),
        fields,
        receipt,
        records: children.iter().map(|c| record_row(&s, c)).collect(),
    })
}

/// A provider of the global catalog as shown.
pub struct ProviderView {
    pub id: String,
    pub kind: String,
    pub endpoint: String,
    pub locality: String,
    pub models: String,
}

/// A rotation of the global catalog as shown.
pub struct RotationView {
    pub name: String,
    pub strategy: String,
    pub targets: String,
}

/// An autoselect as shown.
pub struct AutoselectView {
    pub name: String,
    pub selection: String,
    pub candidates: String,
    pub fallback: String,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    f: Frame,
    providers: Vec<ProviderView>,
    rotations: Vec<RotationView>,
    autoselects: Vec<AutoselectView>,
}

async fn catalog(s: web::Data<DashboardState>, p: Principal) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let snap = s.catalog.snapshot();
    let providers = snap
        .providers()
        .iter()
        .filter(|pr| !pr.guarded)
        .map(|pr| ProviderView {
            id: pr.id.clone(),
            kind: pr.kind.as_str().to_owned(),
            endpoint: pr.endpoint.as_ref().map_or_else(|| "in process".into(), |e| e.url.clone()),
            locality: match pr.locality {
                crate::types::Locality::Local => "local",
                crate::types::Locality::Cloud => "cloud",
            }
            .to_owned(),
            models: pr.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>().join(", "),
        })
        .collect();
    let rotations = snap
        .rotations()
        .iter()
        .map(|r| RotationView {
            name: r.name.clone(),
            strategy: r.strategy.map_or("burst", |st| st.reason()).to_owned(),
            targets: r
                .candidates
                .iter()
                .map(|c| format!("{} (weight {})", c.target.route, c.weight))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let autoselects = snap
        .autoselects()
        .iter()
        .map(|a| AutoselectView {
            name: a.name.clone(),
            selection: a.selection.as_str().to_owned(),
            candidates: a.candidates.iter().map(|c| c.route.clone()).collect::<Vec<_>>().join(", "),
            fallback: a.fallback.clone().unwrap_or_else(|| "—".into()),
        })
        .collect();
    page(&CatalogPage { f: Frame::new(&p, "/dashboard/catalog", "Catalog"), providers, rotations, autoselects })
}

/// A table for a list of JSON objects: the union of their keys as columns.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn table(items: &[serde_json::Value]) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for i in items {
        if let Some(o) = i.as_object() {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let cell = |column: &str, v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "—".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        // Instants (ms since the epoch) read as times.
        Some(serde_json::Value::Number(n)) if column.ends_with("_at") => n.as_i64().map_or_else(|| n.to_string(), time),
        Some(other) => other.to_string(),
    };
    let rows = items.iter().map(|i| columns.iter().map(|c| cell(c, i.get(c))).collect()).collect();
    Table { columns, rows }
}

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    f: Frame,
    shared_state: String,
    nodes: Table,
    providers: Table,
    cooldowns: Table,
    burst: Table,
}

async fn cluster(s: web::Data<DashboardState>, p: Principal) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let nodes = s.control.cluster_nodes().await.map_err(|_| DashError::Unavailable)?;
    let status = s.routing.status().await;
    let list = |k: &str| status.get(k).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    page(&ClusterPage {
        f: Frame::new(&p, "/dashboard/cluster", "Cluster"),
        shared_state: s.control.shared_kind().to_owned(),
        nodes: table(&nodes),
        providers: table(&list("providers")),
        cooldowns: table(&list("cooldowns")),
        burst: table(&list("burst")),
    })
}
