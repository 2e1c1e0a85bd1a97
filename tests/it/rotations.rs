//! Rotations (issue 3, first part): strategies, failover, cluster-wide cooldowns that only grow,
//! 503 with Retry-After when everything cools down, probes, and no retry after the first byte.

use std::time::Duration;

use serde_json::json;
use switchyard::config::{RotationConfig, RotationEntryConfig, Secret, Settings};

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{
    TestApp, chat, fresh_database, get, openai_provider, post_json, rotation, service_url, sse_data, unique,
};

fn entry(provider: &str, weight: f64) -> RotationEntryConfig {
    RotationEntryConfig { provider_id: provider.into(), model: "m".into(), weight, error_cooldown: Some(2) }
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

    // The routing detail shows the cooldown in force (admin tokens only).
    let status = get(&app.url("/health/routing"), &app.admin_token).await.json();
    let cooling: Vec<&str> =
        status["cooldowns"].as_array().unwrap().iter().filter_map(|c| c["target"].as_str()).collect();
    assert!(cooling.contains(&"provider/a/m") && !cooling.contains(&"provider/b/m"), "{status}");
    assert_eq!(status["providers"][0]["id"], "a");
    // `/health` shows the same detail to admin tokens, and plain liveness to anyone else.
    let health = get(&app.url("/health"), &app.admin_token).await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["routing"]["cooldowns"][0]["target"], "provider/a/m", "{health}");
    let user = app.user_with_token("carol").await;
    for token in [user.as_str(), "sy-not-a-token"] {
        let plain = get(&app.url("/health"), token).await;
        assert_eq!((plain.status, plain.json()), (200, json!({"status": "ok"})));
    }
    get(&app.url("/health/routing"), &user).await.assert_error(403, "permission_denied");
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
async fn rotation_routes_and_listing() {
    let (_a, _b, app) = setup().await;
    let t = &app.admin_token;
    let r = post_json(&app.url("/api/rotations/chat/completions"), t, &chat("pri", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("rotation/pri"));
    post_json(&app.url("/api/rotations/chat/completions"), t, &chat("nope", "hi"))
        .await
        .assert_error(404, "model_not_found");
    let r = ask(&app, "rotation/edge").await;
    assert_eq!(r.status, 200, "burst rotations are served: {}", r.text());
    let ids = get(&app.url("/v1/models"), t).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(ids.contains(&"rotation/pri".to_owned()) && ids.contains(&"rotation/edge".to_owned()), "{ids:?}");
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

fn burst(name: &str, mode: &str, primary: &str, secondary: &str) -> RotationConfig {
    let mut r = rotation(name, "burst", vec![]);
    r.mode = Some(mode.into());
    r.primary = vec![RotationEntryConfig {
        provider_id: primary.into(),
        model: "m".into(),
        weight: 1.0,
        error_cooldown: Some(2),
    }];
    r.secondary = vec![RotationEntryConfig {
        provider_id: secondary.into(),
        model: "m".into(),
        weight: 1.0,
        error_cooldown: Some(2),
    }];
    r
}

async fn burst_setup() -> (MockUpstream, MockUpstream, TestApp) {
    let (local, cloud) = (MockUpstream::start(1), MockUpstream::start(1));
    let app = TestApp::spawn(|s| {
        s.providers.push(openai_provider("local", &local.base(), &["m"]));
        let mut c = openai_provider("cloud", &cloud.base(), &["m"]);
        c.locality = switchyard::types::Locality::Cloud;
        // The mock reports 11 prompt + 6 completion tokens: 17 tokens at $1,000 per 1M = $0.017.
        c.cost.insert(
            "m".into(),
            switchyard::config::CostConfig {
                input_per_million: 1000.0,
                output_per_million: 1000.0,
                cached_input_per_million: None,
                cache_write_per_million: None,
            },
        );
        s.providers.push(c);
        let mut edge = burst("edge", "edge_burst", "local", "cloud");
        edge.max_queue = Some(1);
        edge.sensitive_keywords = vec!["patient".into()];
        s.rotations.push(edge);
        s.rotations.push(burst("cloudy", "cloud_burst", "cloud", "local"));
        let mut budget = burst("budget", "cloud_burst", "cloud", "local");
        budget.daily_cloud_budget_usd = Some(0.02);
        s.rotations.push(budget);
        s.rotations.push(burst("cloudonly", "edge_burst", "cloud", "cloud"));
    })
    .await;
    (local, cloud, app)
}

fn burst_headers(r: &crate::support::Resp) -> (String, String, String, String) {
    let h = |n: &str| r.header(n).unwrap_or("-").to_owned();
    (h("x-burst-backend"), h("x-burst-mode"), h("x-burst-reason"), h("x-burst-sensitivity"))
}

#[actix_web::test]
async fn edge_burst_overflows_to_cloud_and_keeps_sensitive_requests_local() {
    let (local, cloud, app) = burst_setup().await;
    let r = ask(&app, "rotation/edge").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(burst_headers(&r), ("local".into(), "edge_burst".into(), "edge_first".into(), "public".into()));
    assert_eq!(r.header("x-switchyard-reason"), Some("edge_first"));

    // Local holds one request (max_queue = 1): the next one bursts to cloud.
    local.plan(Plan { chunks: 4, chunk_interval_ms: 400, ..Plan::default() });
    let client = awc::Client::builder().disable_timeout().finish();
    let slow = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.admin_token)
        .send_json(&json!({"model": "rotation/edge", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await
        .unwrap();
    assert_eq!(slow.headers().get("x-burst-backend").unwrap(), "local");
    let r = ask(&app, "rotation/edge").await;
    assert_eq!(burst_headers(&r).0, "cloud");
    assert_eq!(burst_headers(&r).2, "local_overloaded_burst_to_cloud");
    // A sensitive request stays local however busy local is.
    for prompt in ["mail jane.doe@example.com about it", "the Patient is stable", "card 4111 1111 1111 1111"] {
        let r = post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat("rotation/edge", prompt)).await;
        assert_eq!(
            burst_headers(&r),
            ("local".into(), "edge_burst".into(), "sensitive_forced_local".into(), "sensitive".into())
        );
    }
    // Let the slow stream finish, so local is idle again.
    let mut slow = slow;
    let _ = slow.body().limit(1 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The request can pick the mode.
    let auth = format!("Bearer {}", app.admin_token);
    let r = crate::support::send(
        "POST",
        &app.url("/v1/chat/completions"),
        &[("authorization", &auth), ("content-type", "application/json"), ("x-burst-mode", "cloud_burst")],
        chat("rotation/edge", "hi").to_string(),
    )
    .await;
    assert_eq!(burst_headers(&r), ("cloud".into(), "cloud_burst".into(), "cloud_first".into(), "public".into()));

    // Local fails: a public request fails over to cloud, a sensitive one never does.
    local.plan(Plan { status: 500, ..Plan::default() });
    let r = ask(&app, "rotation/edge").await;
    assert_eq!(burst_headers(&r).0, "cloud");
    assert_eq!(burst_headers(&r).2, "failover_after_error");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    local.plan(Plan { status: 500, ..Plan::default() });
    let before = cloud.calls();
    let r =
        post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat("rotation/edge", "ssn 123-45-6789")).await;
    r.assert_error(502, "upstream_error");
    assert_eq!(cloud.calls(), before, "a sensitive request reached a cloud target");
    app.stop().await;
}

#[actix_web::test]
async fn cloud_burst_budget_and_the_privacy_fence() {
    let (local, cloud, app) = burst_setup().await;
    let r = ask(&app, "rotation/cloudy").await;
    assert_eq!(burst_headers(&r), ("cloud".into(), "cloud_burst".into(), "cloud_first".into(), "public".into()));
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &app.admin_token,
        &chat("rotation/cloudy", "key sk-abcdefghijklmnopqrstuvwxyz123"),
    )
    .await;
    assert_eq!(
        burst_headers(&r),
        ("local".into(), "cloud_burst".into(), "sensitive_burst_down_to_local".into(), "sensitive".into())
    );
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    let receipt: serde_json::Value = serde_json::from_str(rec.routing.as_deref().unwrap()).unwrap();
    assert_eq!(receipt["candidates"][0], json!({"target": "provider/cloud/m", "filtered": "privacy"}), "{receipt}");
    assert_eq!(receipt["chosen"], "provider/local/m");

    // $0.017 per cloud request against a $0.02 budget: the third request goes local.
    for expected in ["cloud", "cloud"] {
        assert_eq!(burst_headers(&ask(&app, "rotation/budget").await).0, expected);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = ask(&app, "rotation/budget").await;
    assert_eq!(burst_headers(&r).0, "local");
    assert_eq!(burst_headers(&r).2, "budget_exhausted");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!(rec.provider.as_deref(), Some("local"));
    let status = get(&app.url("/health/routing"), &app.admin_token).await.json();
    let budget = status["burst"].as_array().unwrap().iter().find(|b| b["rotation"] == "budget").unwrap().clone();
    assert!(budget["cloud_spend_today_usd"].as_f64().unwrap() >= 0.034, "{budget}");
    assert_eq!(budget["daily_cloud_budget_usd"], 0.02);
    let c = app.control().await;
    c.create_user("viewer", switchyard::types::Role::User, None, None).await.unwrap();
    let (user_token, _) = c.create_token(switchyard::control::NewTokenRequest::for_user("viewer")).await.unwrap();
    get(&app.url("/health/routing"), &user_token).await.assert_error(403, "permission_denied");

    // No local target: a sensitive request is refused, never sent to the cloud.
    let before = cloud.calls();
    post_json(
        &app.url("/v1/chat/completions"),
        &app.admin_token,
        &chat("rotation/cloudonly", "iban DE89370400440532013000"),
    )
    .await
    .assert_error(403, "privacy_route_unavailable");
    assert_eq!(cloud.calls(), before);
    let _ = local;
    app.stop().await;
}
