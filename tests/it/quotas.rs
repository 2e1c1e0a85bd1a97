//! USD quotas (tenancy issue): a token's lifetime quota and a tier's monthly quota per user are
//! reserved before the call and settled after it; a spent quota is a 402 without an upstream
//! call; concurrent requests never overdraw by more than one request (F13/P5 single-node, on
//! SQLite with in-process state and on Postgres with Redis); spend survives a restart.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use switchyard::config::{PriceConfig, Secret, Settings};
use switchyard::control::NewTokenRequest;
use switchyard::store::TierRow;
use switchyard::types::Role;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, fresh_database, openai_provider, post_json, service_url, unique};

/// Output costs $0.01 a token and input nothing: the mock reports 6 completion tokens, so each
/// request costs exactly $0.06, and with `max_tokens: 6` its reservation is exactly that.
fn priced(s: &mut Settings, base: &str) {
    s.providers.push(openai_provider("a", base, &["m"]));
    s.prices.push(PriceConfig {
        model: "m".into(),
        provider: None,
        input_per_million: 0.0,
        output_per_million: 10_000.0,
        cached_input_per_million: None,
        cache_write_per_million: None,
        aliases: vec![],
    });
}

fn body(max_tokens: Option<u64>) -> serde_json::Value {
    let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    b
}

async fn spent(app: &TestApp, user: &str) -> f64 {
    let store = app.store().await;
    let u = switchyard::store::find_user(store.conn(), user).await.unwrap().unwrap();
    switchyard::store::sum_cost(store.conn(), None, Some(u.id), None).await.unwrap()
}

/// 20 concurrent requests against a $0.30 quota: exactly 5 are served, the rest get 402 with no
/// upstream call, and the spend is exactly the quota.
async fn concurrent_requests_never_overdraw(app: &TestApp, mock: &MockUpstream) {
    let c = app.control().await;
    let user = unique("q");
    c.create_user(&user, Role::User, None, None).await.unwrap();
    let (t, _) =
        c.create_token(NewTokenRequest { quota_usd: Some(0.30), ..NewTokenRequest::for_user(&user) }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    mock.plan(Plan { delay_headers_ms: 300, times: 20, ..Plan::default() });
    let calls = mock.calls();
    let url = app.url("/v1/chat/completions");
    let six = body(Some(6));
    let results = join_all((0..20).map(|_| post_json(&url, &t, &six))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    for r in results.iter().filter(|r| r.status != 200) {
        r.assert_error(402, "insufficient_quota");
    }
    assert_eq!(ok, 5, "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(mock.calls() - calls, 5, "a refused request reached the upstream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = spent(app, &user).await;
    assert!((total - 0.30).abs() < 1e-9, "spent {total}");
    // Spent: even a request that would cost nothing more is refused.
    post_json(&url, &t, &body(Some(1))).await.assert_error(402, "insufficient_quota");
    mock.heal();
}

#[actix_web::test]
async fn quotas_on_sqlite_and_in_process_state() {
    let mock = MockUpstream::start(4);
    let base = mock.base();
    let app = TestApp::spawn(|s| priced(s, &base)).await;
    concurrent_requests_never_overdraw(&app, &mock).await;
    app.stop().await;
}

#[actix_web::test]
async fn quotas_on_postgres_and_redis() {
    quotas_on("SWITCHYARD_TEST_PG_URL").await;
}

#[actix_web::test]
async fn quotas_on_mariadb_and_redis() {
    quotas_on("SWITCHYARD_TEST_MYSQL_URL").await;
}

async fn quotas_on(database: &str) {
    let mock = MockUpstream::start(4);
    let base = mock.base();
    let db = fresh_database(&service_url(database)).await;
    let redis = service_url("SWITCHYARD_TEST_REDIS_URL");
    let app = TestApp::spawn(|s| {
        priced(s, &base);
        s.database.url = Secret::new(db);
        s.redis.url = Some(Secret::new(redis));
        s.redis.key_prefix = format!("{}:", unique("sy"));
    })
    .await;
    concurrent_requests_never_overdraw(&app, &mock).await;
    app.stop().await;
}

#[actix_web::test]
async fn reservations_estimate_the_worst_case_and_settle_to_the_actual_cost() {
    let mock = MockUpstream::start(2);
    let base = mock.base();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/q.db?mode=rwc", dir.path().display());
    let db2 = db.clone();
    let app = TestApp::spawn(|s| {
        priced(s, &base);
        s.database.url = Secret::new(db2);
    })
    .await;
    let c = app.control().await;
    c.create_user("est", Role::User, None, None).await.unwrap();
    let (t, _) =
        c.create_token(NewTokenRequest { quota_usd: Some(1.0), ..NewTokenRequest::for_user("est") }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = app.url("/v1/chat/completions");
    // Without max_tokens the reservation assumes 4,096 output tokens ($40.96): refused, and the
    // message says how to make it fit.
    let v = post_json(&url, &t, &body(None)).await.assert_error(402, "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_tokens"), "{v}");
    // max_tokens 90 reserves $0.90; the request costs $0.06, and the rest comes back.
    assert_eq!(post_json(&url, &t, &body(Some(90))).await.status, 200);
    let mut fits = false;
    for _ in 0..40 {
        let r = post_json(&url, &t, &body(Some(90))).await;
        if r.status == 200 {
            fits = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fits, "the reservation was never settled to the actual cost");

    // The tier's monthly quota applies per user, across their tokens.
    c.put_tier(&TierRow { name: "m1".into(), monthly_quota_usd: Some(0.12), ..TierRow::default() }).await.unwrap();
    c.create_user("monthly", Role::User, Some("m1"), None).await.unwrap();
    let (m1, _) = c.create_token(NewTokenRequest::for_user("monthly")).await.unwrap();
    let (m2, _) = c.create_token(NewTokenRequest::for_user("monthly")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post_json(&url, &m1, &body(Some(6))).await.status, 200);
    assert_eq!(post_json(&url, &m2, &body(Some(6))).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = post_json(&url, &m2, &body(Some(6))).await.assert_error(402, "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("month"), "{v}");
    app.stop().await;

    // A restarted node (fresh in-process state) rebuilds the spend from the usage records.
    let app = TestApp::spawn(|s| {
        priced(s, &base);
        s.database.url = Secret::new(db);
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    post_json(&app.url("/v1/chat/completions"), &m1, &body(Some(6))).await.assert_error(402, "insufficient_quota");
    app.stop().await;
}

/// A finished record that cost `micros` micro-USD.
fn row_costing(micros: u64) -> switchyard::store::UsageRow {
    let usd = f64::from(u32::try_from(micros).unwrap()) / 1_000_000.0;
    serde_json::from_value(json!({
        "request_id": "p5", "created_at": 0, "node": "n", "user_id": null, "token_id": null, "route": "m",
        "provider": null, "model": null, "status": 200, "outcome": "ok", "stream": false, "prompt_tokens": 0,
        "completion_tokens": 0, "cached_tokens": 0, "estimated": false, "cost_usd": usd, "latency_ms": 0,
        "ttft_ms": null, "cache_hit": false, "routing": null, "usage_source": "reported", "partial": false
    }))
    .unwrap()
}

/// P5 (model-based): for random interleavings of reservations and settlements — each request
/// costing at most its estimate — the spend counter always equals the settled costs plus the open
/// reservations, never passes the quota, refuses exactly what would not fit, and ends at the sum
/// of what the admitted requests cost.
#[tokio::test]
async fn p5_quota_reservations_follow_the_model() {
    use std::sync::Arc;
    use switchyard::accounting::quota::{Basis, QuotaError, Quotas};
    use switchyard::shared::{MemoryShared, SharedState};

    let store = switchyard::store::Store::connect("sqlite::memory:", 1).await.unwrap();
    store.migrate().await.unwrap();
    let shared: Arc<dyn SharedState> = Arc::new(MemoryShared::new());
    let quotas = Quotas::new(store, Arc::clone(&shared));
    let quota: u64 = 1_000_000;
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut admitted, mut refused) = (0, 0);
    for token in 1..=40i64 {
        let counter = |shared: Arc<dyn SharedState>| async move {
            shared.window_add(&format!("quota:tok:{token}"), 1 << 40, 0, None).await.unwrap().count
        };
        let (mut settled, mut open): (u64, Vec<(switchyard::accounting::Settle, u64, u64)>) = (0, Vec::new());
        for _ in 0..120 {
            if open.is_empty() || next() % 3 != 0 {
                let estimate = next() % 200_000;
                let actual = next() % (estimate + 1);
                let reserved: u64 = open.iter().map(|(_, _, e)| *e).sum();
                let fits = settled + reserved + estimate <= quota && (estimate > 0 || settled + reserved < quota);
                match quotas.reserve(&[(Basis::Token(token), 1.0)], estimate, 1).await {
                    Ok(Some(s)) => {
                        assert!(fits, "admitted what does not fit");
                        open.push((s, actual, estimate));
                        admitted += 1;
                    }
                    Err(QuotaError::Insufficient { .. }) => {
                        assert!(!fits, "refused what fits");
                        refused += 1;
                    }
                    other => panic!("unexpected {:?}", other.map(|s| s.is_some())),
                }
            } else {
                let i = usize::try_from(next()).unwrap() % open.len();
                let (s, actual, _) = open.swap_remove(i);
                s(&row_costing(actual));
                settled += actual;
            }
            // Settlements land asynchronously; let them.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let reserved: u64 = open.iter().map(|(_, _, e)| *e).sum();
            let c = counter(Arc::clone(&shared)).await;
            assert_eq!(c, settled + reserved, "the counter left the model");
            assert!(c <= quota, "the quota was passed: {c}");
        }
        for (s, actual, _) in open.drain(..) {
            s(&row_costing(actual));
            settled += actual;
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(counter(Arc::clone(&shared)).await, settled);
    }
    assert!(admitted > 100 && refused > 100, "{admitted} admitted, {refused} refused: the generator never bound");
}

/// Issue 10, defect 4 (property): however an upstream over-reports — prompt and output counts
/// drawn up to 10^9 — a request is billed at most its bounds (the prompt's byte bound plus
/// slack, the output it allowed), so the spend counter never passes the quota by more than the
/// prompt allowances (bound − estimate) of the requests in flight at the last admission.
#[tokio::test]
async fn p5_adversarial_upstream_reports_overdraw_at_most_the_prompt_allowance() {
    use std::sync::Arc;
    use switchyard::accounting::quota::{Basis, QuotaError, Quotas, micros};
    use switchyard::accounting::{BillCaps, billable, cost_of};
    use switchyard::config::CostConfig;
    use switchyard::shared::{MemoryShared, SharedState};
    use switchyard::types::Usage;

    let store = switchyard::store::Store::connect("sqlite::memory:", 1).await.unwrap();
    store.migrate().await.unwrap();
    let shared: Arc<dyn SharedState> = Arc::new(MemoryShared::new());
    let quotas = Quotas::new(store, Arc::clone(&shared));
    let price = CostConfig {
        input_per_million: 3.0,
        output_per_million: 15.0,
        cached_input_per_million: None,
        cache_write_per_million: None,
    };
    let quota_usd = 0.5;
    let quota = micros(quota_usd);
    let mut x = 0x0ddc_0ffe_e0dd_f00du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut admitted = 0;
    for token in 1..=30i64 {
        let counter = |shared: Arc<dyn SharedState>| async move {
            shared.window_add(&format!("quota:tok:{token}"), 1 << 40, 0, None).await.unwrap().count
        };
        // Open requests: settlement, adversarial actual cost, prompt allowance (micro-USD).
        let mut open: Vec<(switchyard::accounting::Settle, u64, u64)> = Vec::new();
        let mut allowance_at_last_admit = 0u64;
        for _ in 0..150 {
            if open.is_empty() || next() % 3 != 0 {
                let bytes = next() % 20_000;
                let estimate = bytes.div_ceil(4) + 4;
                let caps = BillCaps { prompt: bytes + 4 + 64, completion: 1 + next() % 2_000 };
                let reserve = micros(cost_of(
                    &price,
                    Usage { prompt_tokens: estimate, completion_tokens: caps.completion, ..Usage::default() },
                ));
                let reported = Usage {
                    prompt_tokens: next() % 1_000_000_000,
                    completion_tokens: next() % 1_000_000_000,
                    cached_tokens: next() % 1_000,
                    cache_write_tokens: next() % 1_000,
                };
                let (billed, _) = billable(reported, caps);
                let actual = micros(cost_of(&price, billed));
                let allowance = micros(cost_of(
                    &price,
                    Usage { prompt_tokens: caps.prompt - estimate, completion_tokens: 0, ..Usage::default() },
                )) + 1;
                match quotas.reserve(&[(Basis::Token(token), quota_usd)], reserve, 1).await {
                    Ok(Some(s)) => {
                        open.push((s, actual, allowance));
                        allowance_at_last_admit = open.iter().map(|(_, _, a)| *a).sum();
                        admitted += 1;
                    }
                    Err(QuotaError::Insufficient { .. }) => {}
                    other => panic!("unexpected {:?}", other.map(|s| s.is_some())),
                }
            } else {
                let i = usize::try_from(next()).unwrap() % open.len();
                let (s, actual, _) = open.swap_remove(i);
                s(&row_costing(actual));
            }
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let c = counter(Arc::clone(&shared)).await;
            assert!(c <= quota + allowance_at_last_admit, "overdrawn: {c} > {quota} + {allowance_at_last_admit}");
        }
        for (s, actual, _) in open.drain(..) {
            s(&row_costing(actual));
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let c = counter(Arc::clone(&shared)).await;
        assert!(c <= quota + allowance_at_last_admit, "overdrawn at the end: {c}");
    }
    assert!(admitted > 200, "only {admitted} admitted");
}
