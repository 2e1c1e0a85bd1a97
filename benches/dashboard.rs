//! Dashboard benchmark at scale: a private Postgres seeded with `BENCH_RECORDS` usage records
//! (default 10 million, over 30 days, 97 users × 20 routes — 1,940 combinations, each hour — 7
//! models, 2 % errors), rolled up by
//! the migration that makes the rollups; then a node on it, and the server time of every page an
//! operator opens — the overview per period and grouping, the usage page with each filter, one
//! request, a user's own pages — and the CSV export's first byte. Each figure is the median
//! of `BENCH_ROUNDS` (default 5) requests, with the slowest; the goal is ≤ 200 ms for every page.
//! Also the usage writer's throughput with the rollups (records a second, batches of 500).
//!
//! Run with `cargo bench --bench dashboard` (PostgreSQL installed, as `tests/run.sh` does);
//! under `cargo test` it is a smoke run on 20,000 records.
#![allow(
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic,
    clippy::allow_attributes,
    reason = "benchmark binary"
)]

#[path = "../tests/it/support/services.rs"]
mod services;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sea_orm::ConnectionTrait as _;
use switchyard::config::{Secret, Settings};
use switchyard::server::Application;
use switchyard::store::{Store, UsageRow};
use switchyard::types::{Role, now_ms};

const ADMIN: &str = "sy-bench-dashboard-admin-token-0123456789abcdefghijklmnopqrstuvwxyz";
const DAY_MS: i64 = 86_400_000;

/// Inserts `n` records over the 30 days before `now` with one statement (Postgres).
async fn seed(store: &Store, n: u64, now: i64) {
    let sql = format!(
        "INSERT INTO usage_records (request_id, created_at, node, user_id, token_id, route, provider, model, \
         status, outcome, stream, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, estimated, \
         cost_usd, latency_ms, ttft_ms, cache_hit, routing, usage_source, partial, parent_request_id) \
         SELECT md5(i::text), {now} - (i * {span} / {n}), 'n' || (i % 3), 1 + (i % 97), 1000 + (i % 300), \
         'rotation/r' || (i / 97 % 20), 'p' || (i / 97 % 5), 'model-' || (i / 97 % 20 % 7), \
         CASE WHEN i % 50 = 0 THEN 502 ELSE 200 END, CASE WHEN i % 50 = 0 THEN 'upstream_error' ELSE 'ok' END, \
         i % 3 = 0, 100 + (i % 2000), 20 + (i % 700), (i % 4) * 50, 0, false, (i % 1000) * 0.000013, \
         40 + ((i * 7919) % 2500), 15 + (i % 90), false, \
         '{{\"route\":\"rotation/r' || (i % 20) || '\",\"reason\":\"weighted\"}}', 'reported', false, NULL \
         FROM generate_series(1::bigint, {n}::bigint) AS i",
        span = 30 * DAY_MS,
    );
    store.conn().execute_unprepared(&sql).await.unwrap();
}

struct Page<'a> {
    label: &'a str,
    path: String,
}

async fn time_get(client: &awc::Client, url: &str, cookie: &str) -> (Duration, u16) {
    let t = Instant::now();
    let mut res = client.get(url).insert_header(("cookie", cookie)).send().await.unwrap();
    let status = res.status().as_u16();
    let _ = res.body().limit(64 << 20).await.unwrap();
    (t.elapsed(), status)
}

/// The time until the first bytes of a streamed body.
async fn first_byte(client: &awc::Client, url: &str, cookie: &str) -> Duration {
    let t = Instant::now();
    let mut res = client.get(url).insert_header(("cookie", cookie)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // The header row, then the first page of records.
    let mut seen = 0;
    while let Some(chunk) = res.next().await {
        seen += chunk.unwrap().len();
        if seen > 200 {
            break;
        }
    }
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value of cookie `name` an answer sets.
fn set_cookie<B>(res: &awc::ClientResponse<B>, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or("").to_owned()))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// Signs in with a password and returns the session cookie.
async fn sign_in(client: &awc::Client, base: &str, user: &str, password: &str) -> String {
    let mut page = client.get(format!("{base}/dashboard/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "sy_login");
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let res = client
        .post(format!("{base}/dashboard/login"))
        .insert_header(("cookie", format!("sy_login={login_cookie}")))
        .send_form(&[("username", user), ("password", password), ("csrf", &csrf)])
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303, "login as {user}");
    format!("sy_session={}", set_cookie(&res, "sy_session"))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let records = if full { env("BENCH_RECORDS", 10_000_000) } else { 20_000 };
    let rounds = if full { env("BENCH_ROUNDS", 5).max(1) } else { 1 };
    let pg = services::PrivatePostgres::start();
    actix_web::rt::System::new().block_on(async move {
        let db_url = pg.url.clone();
        let store = Store::connect(&db_url, 4).await.unwrap();
        store.migrate().await.unwrap();
        // Records first, then the rollups' migration again: it rolls up what is stored.
        store.rollback(2).await.unwrap();
        let now = now_ms();
        let t = Instant::now();
        seed(&store, records, now).await;
        let seeded = t.elapsed();
        let t = Instant::now();
        store.migrate().await.unwrap();
        let rolled = t.elapsed();
        store.conn().execute_unprepared("ANALYZE").await.unwrap();
        let count = |t: &'static str| {
            let store = store.clone();
            async move {
                let r = store
                    .conn()
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        format!("SELECT count(*) AS n FROM {t}"),
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                r.try_get::<i64>("", "n").unwrap()
            }
        };
        println!(
            "Seeded {} usage records in {:.1} s; migration 12 rolled them up in {:.1} s ({} hourly and {} daily rollup rows).\n",
            count("usage_records").await,
            seeded.as_secs_f64(),
            rolled.as_secs_f64(),
            count("usage_hourly").await,
            count("usage_daily").await,
        );

        // The usage writer with the rollups: batches of 500 records, as a node writes them.
        let writes = if full { 200_000 } else { 5_000 };
        let rows: Vec<UsageRow> = (0..writes)
            .map(|i| UsageRow {
                request_id: format!("w-{i:08}"),
                created_at: now - i64::from(i) * 10,
                node: "bench".into(),
                user_id: Some(i64::from(i % 100) + 1),
                token_id: Some(1000),
                route: format!("rotation/r{}", i % 20),
                provider: Some("p1".into()),
                model: Some(format!("model-{}", i % 7)),
                status: 200,
                outcome: "ok".into(),
                stream: false,
                prompt_tokens: 100,
                completion_tokens: 20,
                cached_tokens: 0,
                cache_write_tokens: 0,
                estimated: false,
                cost_usd: 0.001,
                latency_ms: 100,
                ttft_ms: Some(30),
                cache_hit: false,
                routing: None,
                usage_source: "reported".into(),
                partial: false,
                parent_request_id: None,
            })
            .collect();
        let t = Instant::now();
        for batch in rows.chunks(500) {
            switchyard::store::insert_usage_batch(store.conn(), batch).await.unwrap();
        }
        let el = t.elapsed();
        println!(
            "Usage writer with rollups: {writes} records in batches of 500 in {:.2} s: {:.0} records/s\n",
            el.as_secs_f64(),
            f64::from(writes) / el.as_secs_f64()
        );

        // A node on that database, and its users.
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::test_default();
        settings.database.url = Secret::new(db_url.clone());
        settings.database.max_connections = 8;
        settings.server.workers = 2;
        settings.bootstrap.admin_token = Some(Secret::new(ADMIN.to_owned()));
        let _ = &dir;
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        let control =
            switchyard::control::Control::new(store.clone(), switchyard::shared::connect(None, "", 1).await.unwrap());
        let admin = control.get_user("admin").await.unwrap();
        control.set_password(admin.id, "bench-admin-password").await.unwrap();
        // Users 2…100 (the admin is user 1): the records name them.
        for u in 2..=100 {
            control.create_user(&format!("u{u:03}"), Role::User, None, None).await.unwrap();
        }
        control.set_password(7, "bench-user-password").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let client = awc::Client::builder().timeout(Duration::from_secs(120)).disable_redirects().finish();
        let cookie = sign_in(&client, &base, "admin", "bench-admin-password").await;
        let user_cookie = sign_in(&client, &base, "u007", "bench-user-password").await;
        let one = format!("/dashboard/requests/{}", "c4ca4238a0b923820dcc509a6f75849b");
        let cursor = format!("{}_{}", now - 15 * DAY_MS, "ffffffffffffffffffffffffffffffff");
        let pages = [
            Page { label: "overview, 24 h by route", path: "/dashboard".into() },
            Page { label: "overview, 48 h by model", path: "/dashboard?period=48h&group=model".into() },
            Page { label: "overview, 7 days by route", path: "/dashboard?period=7d".into() },
            Page { label: "overview, 30 days by route", path: "/dashboard?period=30d".into() },
            Page { label: "overview, 30 days by user", path: "/dashboard?period=30d&group=user".into() },
            Page { label: "overview, 90 days by model", path: "/dashboard?period=90d&group=model".into() },
            Page { label: "overview, 30 days, one user", path: "/dashboard?period=30d&user=u042".into() },
            Page { label: "usage, 24 h", path: "/dashboard/usage".into() },
            Page { label: "usage, 30 days", path: "/dashboard/usage?period=30d".into() },
            Page { label: "usage, 30 days, user", path: "/dashboard/usage?period=30d&user=u042".into() },
            Page { label: "usage, 30 days, route", path: "/dashboard/usage?period=30d&route=rotation/r3".into() },
            Page { label: "usage, 30 days, model", path: "/dashboard/usage?period=30d&model=model-2".into() },
            Page { label: "usage, 30 days, errors only", path: "/dashboard/usage?period=30d&errors=1".into() },
            Page {
                label: "usage, 30 days, user + model + errors",
                path: "/dashboard/usage?period=30d&user=u042&model=model-3&errors=1".into(),
            },
            Page { label: "usage, 30 days, a page 15 days back", path: format!("/dashboard/usage?period=30d&before={cursor}") },
            Page { label: "requests (latest)", path: "/dashboard/requests".into() },
            Page { label: "one request", path: one },
            Page { label: "tokens", path: "/dashboard/tokens".into() },
            Page { label: "users", path: "/dashboard/users".into() },
            Page { label: "cluster", path: "/dashboard/cluster".into() },
        ];
        println!("Server time of each page over {records} records (median of {rounds}, slowest):");
        println!("{:<44} {:>10} {:>10}", "page", "median ms", "max ms");
        let mut worst: f64 = 0.0;
        for who in ["admin", "user u007"] {
            let c = if who == "admin" { &cookie } else { &user_cookie };
            for p in &pages {
                if who != "admin" && (p.path.contains("user") || p.path.contains("cluster") || p.path.contains("group=")) {
                    continue;
                }
                let mut times = Vec::new();
                for _ in 0..rounds {
                    let (d, status) = time_get(&client, &format!("{base}{}", p.path), c).await;
                    assert!(status == 200 || (status == 404 && p.label == "one request"), "{}: {status}", p.path);
                    times.push(ms(d));
                }
                times.sort_by(f64::total_cmp);
                let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
                worst = worst.max(median);
                let label = if who == "admin" { p.label.to_owned() } else { format!("{} ({who})", p.label) };
                println!("{label:<44} {median:>10.1} {max:>10.1}");
            }
        }
        for (label, path) in [
            ("CSV export, 30 days: first byte", "/dashboard/usage.csv?period=30d"),
            ("CSV export, 30 days, one model: first byte", "/dashboard/usage.csv?period=30d&model=model-5"),
        ] {
            let mut times = Vec::new();
            for _ in 0..rounds {
                times.push(ms(first_byte(&client, &format!("{base}{path}"), &cookie).await));
            }
            times.sort_by(f64::total_cmp);
            let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
            worst = worst.max(median);
            println!("{label:<44} {median:>10.1} {max:>10.1}");
        }
        println!("\nSlowest median: {worst:.1} ms (goal: ≤ 200 ms for every page).");
        handle.stop(true).await;
    });
}
