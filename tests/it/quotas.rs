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
    let mock = MockUpstream::start(4);
    let base = mock.base();
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
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
