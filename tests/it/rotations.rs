//! Rotations (issue 3, first part): strategies, failover, cluster-wide cooldowns that only grow,
//! 503 with Retry-After when everything cools down, probes, and no retry after the first byte.

use std::time::Duration;

use serde_json::json;
use switchyard::config::{RotationConfig, RotationEntryConfig, Secret, Settings};

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, chat, fresh_database, get, openai_provider, post_json, service_url, sse_data, unique};

fn entry(provider: &str, weight: f64) -> RotationEntryConfig {
    RotationEntryConfig { provider_id: provider.into(), model: "m".into(), weight, error_cooldown: Some(2) }
}

fn rotation(name: &str, strategy: &str, entries: Vec<RotationEntryConfig>) -> RotationConfig {
    RotationConfig {
        name: name.into(),
        strategy: strategy.into(),
        entries,
        privacy: false,
        capabilities: vec![],
        default_max_request_tokens: None,
        max_attempts: None,
        mode: None,
        max_queue: None,
        latency_threshold_ms: None,
        daily_cloud_budget_usd: None,
        sensitive_keywords: vec![],
        sensitive_patterns: vec![],
        primary: vec![],
        secondary: vec![],
    }
}

fn configure(s: &mut Settings, a: &MockUpstream, b: &MockUpstream) {
    s.upstream.first_byte_timeout_ms = 1_000;
    s.providers.push(openai_provider("a", &a.base(), &["m"]));
    s.providers.push(openai_provider("b", &b.base(), &["m"]));
    s.rotations.push(rotation("pri", "priority", vec![entry("a", 1.0), entry("b", 1.0)]));
    s.rotations.push(rotation("wei", "weighted", vec![entry("a", 3.0), entry("b", 1.0)]));
    s.rotations.push(rotation("busy", "least_busy", vec![entry("a", 1.0), entry("b", 1.0)]));
    let mut capped = rotation("capped", "priority", vec![entry("a", 1.0), entry("b", 1.0)]);
    capped.max_attempts = Some(1);
    s.rotations.push(capped);
    let mut burst = rotation("edge", "burst", vec![]);
    burst.mode = Some("edge_burst".into());
    burst.primary = vec![entry("a", 1.0)];
    burst.secondary = vec![entry("b", 1.0)];
    s.rotations.push(burst);
}

async fn setup() -> (MockUpstream, MockUpstream, TestApp) {
    let (a, b) = (MockUpstream::start(1), MockUpstream::start(1));
    let app = TestApp::spawn(|s| configure(s, &a, &b)).await;
    (a, b, app)
}

async fn ask(app: &TestApp, model: &str) -> crate::support::Resp {
    post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat(model, "hi")).await
}

#[actix_web::test]
async fn priority_fails_over_and_the_failed_entry_cools_down() {
    let (a, b, app) = setup().await;
    let r = ask(&app, "rotation/pri").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("rotation/pri"));
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    assert_eq!(r.header("x-switchyard-reason"), Some("priority"));

    a.plan(Plan { status: 503, ..Plan::default() });
    let r = ask(&app, "pri").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-reason"), Some("failover_after_error"));
    assert_eq!((a.calls(), b.calls()), (2, 1));
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!((rec.status, rec.provider.as_deref()), (200, Some("b")), "one record, for the attempt that served");
    let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
    assert_eq!(
        receipt,
        json!({"route": "rotation/pri", "strategy": "priority",
               "candidates": [{"target": "provider/a/m", "attempt": 1, "failure": "status_5xx"},
                              {"target": "provider/b/m", "attempt": 2}],
               "chosen": "provider/b/m", "reason": "failover_after_error"})
    );
    // While A cools down, the receipt says so.
    let r = ask(&app, "rotation/pri").await;
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
    assert_eq!(receipt["candidates"][0], json!({"target": "provider/a/m", "filtered": "cooldown"}));
    assert_eq!(receipt["chosen"], "provider/b/m");

    // A cools down: the next requests go straight to B.
    for _ in 0..2 {
        let r = ask(&app, "rotation/pri").await;
        assert_eq!(r.header("x-switchyard-provider"), Some("b"));
        assert_eq!(r.header("x-switchyard-reason"), Some("priority"));
    }
    assert_eq!(a.calls(), 2, "a cooling entry was called");
    // After its cooldown (2 s) A serves again.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(ask(&app, "rotation/pri").await.header("x-switchyard-provider"), Some("a"));

    // A client mistake judged by the upstream is not the provider's fault: no failover, no cooldown.
    a.plan(Plan {
        status: 400,
        error_body: Some(r#"{"error":{"message":"bad max_tokens"}}"#.into()),
        ..Plan::default()
    });
    ask(&app, "rotation/pri").await.assert_error(400, "invalid_request");
    let b_before = b.calls();
    assert_eq!(ask(&app, "rotation/pri").await.header("x-switchyard-provider"), Some("a"));
    assert_eq!(b.calls(), b_before);

    // max_attempts = 1: no failover.
    a.plan(Plan { status: 500, ..Plan::default() });
    ask(&app, "rotation/capped").await.assert_error(502, "upstream_error");
    assert_eq!(b.calls(), b_before);
    app.stop().await;
}

#[actix_web::test]
async fn retry_after_extends_a_cooldown_and_never_shortens_it() {
    let (a, b, app) = setup().await;
    a.plan(Plan { status: 429, retry_after: Some(4), ..Plan::default() });
    assert_eq!(ask(&app, "rotation/pri").await.header("x-switchyard-provider"), Some("b"));
    // The entry's own cooldown is 2 s, but the upstream asked for 4.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert_eq!(ask(&app, "rotation/pri").await.header("x-switchyard-provider"), Some("b"));
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(ask(&app, "rotation/pri").await.header("x-switchyard-provider"), Some("a"));
    assert_eq!(a.calls(), 2);
    let _ = b;
    app.stop().await;
}

#[actix_web::test]
async fn all_cooling_answers_503_and_probes_once_per_second() {
    let (a, b, app) = setup().await;
    a.plan(Plan { status: 500, times: 2, ..Plan::default() });
    b.plan(Plan { status: 500, times: 2, ..Plan::default() });
    ask(&app, "rotation/pri").await.assert_error(502, "upstream_error");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    // Everything cools down: one probe per candidate per second, then 503 with Retry-After.
    ask(&app, "rotation/pri").await.assert_error(502, "upstream_error");
    ask(&app, "rotation/pri").await.assert_error(502, "upstream_error");
    assert_eq!((a.calls(), b.calls()), (2, 2));
    let r = ask(&app, "rotation/pri").await;
    r.assert_error(503, "no_available_upstream");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!((a.calls(), b.calls()), (2, 2), "a 503 must not call anyone");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!(rec.outcome, "all_cooling_down");
    let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
    assert_eq!(receipt["candidates"][0]["filtered"], "cooldown");
    assert_eq!(receipt["candidates"][1]["filtered"], "cooldown");
    assert!(receipt["chosen"].is_null());
    // The upstreams have healed: the next probe (a second later) serves, long before the cooldown ends.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = ask(&app, "rotation/pri").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-reason"), Some("cooldown_probe"));
    app.stop().await;
}

#[actix_web::test]
async fn weighted_and_least_busy_orders() {
    let (a, b, app) = setup().await;
    for _ in 0..200 {
        assert_eq!(ask(&app, "rotation/wei").await.status, 200);
    }
    let (na, nb) = (a.calls(), b.calls());
    assert_eq!(na + nb, 200);
    assert!((115..=185).contains(&na), "weights 3:1 gave a={na} b={nb}");

    // least_busy: while A holds a slow stream, the next request goes to B.
    a.plan(Plan { chunks: 4, chunk_interval_ms: 400, ..Plan::default() });
    let client = awc::Client::builder().disable_timeout().finish();
    let slow = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.admin_token)
        .send_json(&json!({"model": "rotation/busy", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await
        .unwrap();
    assert_eq!(slow.headers().get("x-switchyard-provider").unwrap(), "a", "ties go to the first entry");
    let r = ask(&app, "rotation/busy").await;
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-reason"), Some("least_busy"));
    drop(slow);
    app.stop().await;
}

#[actix_web::test]
async fn no_retry_once_a_byte_reached_the_client() {
    let (a, b, app) = setup().await;
    a.plan(Plan { chunks: 6, cut_after: Some(2), ..Plan::default() });
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &app.admin_token,
        &json!({"model": "rotation/pri", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert_eq!(events.len(), 3, "two chunks and one error event: {events:?}");
    assert!(events[2].contains("\"error\""));
    assert_eq!(b.calls(), 0, "a stream that sent bytes was retried");
    let _ = a;
    app.stop().await;
}

#[actix_web::test]
async fn rotation_routes_listing_and_unserved_strategies() {
    let (_a, _b, app) = setup().await;
    let t = &app.admin_token;
    let r = post_json(&app.url("/api/rotations/chat/completions"), t, &chat("pri", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("rotation/pri"));
    post_json(&app.url("/api/rotations/chat/completions"), t, &chat("nope", "hi"))
        .await
        .assert_error(404, "model_not_found");
    let v = ask(&app, "rotation/edge").await.assert_error(404, "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("not available"), "{v}");
    let ids = get(&app.url("/v1/models"), t).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(ids.contains(&"rotation/pri".to_owned()) && !ids.contains(&"rotation/edge".to_owned()), "{ids:?}");
    // A token scoped to one provider may not use a rotation.
    let c = app.control().await;
    c.create_user("sam", switchyard::types::Role::User, None, None).await.unwrap();
    let (scoped, _) = c
        .create_token(switchyard::control::NewTokenRequest {
            routes: Some(vec!["provider/a/*".into()]),
            ..switchyard::control::NewTokenRequest::for_user("sam")
        })
        .await
        .unwrap();
    post_json(&app.url("/v1/chat/completions"), &scoped, &chat("rotation/pri", "hi"))
        .await
        .assert_error(403, "permission_denied");
    app.stop().await;
}

#[actix_web::test]
async fn cooldowns_are_cluster_wide_through_redis() {
    let (a, b) = (MockUpstream::start(1), MockUpstream::start(1));
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let redis = service_url("SWITCHYARD_TEST_REDIS_URL");
    let prefix = format!("{}:", unique("r"));
    let edit = |s: &mut Settings| {
        configure(s, &a, &b);
        s.database.url = Secret::new(db.clone());
        s.redis.url = Some(Secret::new(redis.clone()));
        s.redis.key_prefix = prefix.clone();
    };
    let n1 = TestApp::spawn(edit).await;
    let n2 = TestApp::spawn(edit).await;
    a.plan(Plan { status: 503, ..Plan::default() });
    assert_eq!(ask(&n1, "rotation/pri").await.header("x-switchyard-provider"), Some("b"));
    // N2 never saw A fail, but skips it.
    let r = ask(&n2, "rotation/pri").await;
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-reason"), Some("priority"));
    assert_eq!(a.calls(), 1);
    n1.stop().await;
    n2.stop().await;
}
