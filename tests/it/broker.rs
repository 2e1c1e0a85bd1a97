//! Broker providers and worker tokens (SPEC §7; issue 15, in progress): a `type = "broker"`
//! provider is configured without an endpoint (global or a user's own); a worker token is made
//! only for a broker provider its user may attach workers to, and calls nothing else. Until
//! workers can connect, a broker provider has none, and its requests fail over.

use serde_json::{Value, json};
use switchyard::config::Settings;
use switchyard::types::ProviderKind;

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, get, openai_provider, post_json, rotation, send};

fn configure(s: &mut Settings, mock: &MockUpstream) {
    let mut gpu = openai_provider("gpu", "http://unused", &["m"]);
    gpu.kind = ProviderKind::Broker;
    gpu.endpoint = None;
    s.providers.push(gpu);
    s.providers.push(openai_provider("cloud", &mock.base(), &["m"]));
    let entry = |p: &str| switchyard::config::RotationEntryConfig {
        provider_id: p.into(),
        model: "m".into(),
        weight: 1.0,
        error_cooldown: Some(0),
    };
    s.rotations.push(rotation("r", "priority", vec![entry("gpu"), entry("cloud")]));
}

#[test]
fn a_broker_provider_has_no_endpoint() {
    let mock_less = |endpoint: Option<&str>| {
        let mut s = Settings::test_default();
        let mut gpu = openai_provider("gpu", "http://x", &["m"]);
        gpu.kind = ProviderKind::Broker;
        gpu.endpoint = endpoint.map(str::to_owned);
        s.providers.push(gpu);
        switchyard::config::check(&s).into_iter().map(|p| p.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(mock_less(None), Vec::<String>::new());
    let problems = mock_less(Some("http://127.0.0.1:1/v1"));
    assert!(problems.iter().any(|p| p.contains("workers dial in")), "{problems:?}");
}

async fn admin(app: &TestApp, method: &str, path: &str, body: Value) -> crate::support::Resp {
    let auth = format!("Bearer {}", app.admin_token);
    send(method, &app.url(path), &[("authorization", &auth), ("content-type", "application/json")], body.to_string())
        .await
}

#[actix_web::test]
async fn worker_tokens_are_made_for_a_broker_provider_and_call_nothing_else() {
    let mock = MockUpstream::start(1);
    let app = TestApp::spawn(|s| configure(s, &mock)).await;
    let ann = app.user_with_token("ann").await;
    // An admin's worker token for the configured broker provider.
    let r = admin(&app, "POST", "/admin/api/tokens", json!({"user": "admin", "worker": "gpu"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let worker = r.json()["token"].as_str().unwrap().to_owned();
    // Not for a user (they attach workers to their own broker providers), not for another kind of
    // provider, not with limits, not for a provider that does not exist.
    admin(&app, "POST", "/admin/api/tokens", json!({"user": "ann", "worker": "gpu"}))
        .await
        .assert_error(403, "permission_denied");
    admin(&app, "POST", "/admin/api/tokens", json!({"user": "admin", "worker": "gpu", "rpm": 5}))
        .await
        .assert_error(400, "invalid_request");
    admin(&app, "POST", "/admin/api/tokens", json!({"user": "admin", "worker": "nope"}))
        .await
        .assert_error(404, "not_found");
    // A user's own broker provider takes a worker token of theirs; an openai one does not.
    let r =
        admin(&app, "PUT", "/admin/api/users/ann/providers/box", json!({"type": "broker", "models": [{"name": "m"}]}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(
        &app,
        "PUT",
        "/admin/api/users/ann/providers/box",
        json!({"type": "broker", "api_key": "k",
        "models": [{"name": "m"}]}),
    )
    .await;
    r.assert_error(400, "invalid_request");
    let r = admin(&app, "POST", "/admin/api/tokens", json!({"user": "ann", "worker": "box"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let anns_worker = r.json()["token"].as_str().unwrap().to_owned();
    let r =
        post_json(&app.url("/api/me/tokens"), &ann, &json!({"worker": "box", "routes": ["user-provider/box/m"]})).await;
    r.assert_error(400, "invalid_request");
    // A worker token calls nothing: not the data plane, not the admin API, not self-service.
    for t in [&worker, &anns_worker] {
        post_json(&app.url("/v1/chat/completions"), t, &chat("cloud/m", "hi"))
            .await
            .assert_error(403, "permission_denied");
        get(&app.url("/v1/models"), t).await.assert_error(403, "permission_denied");
        get(&app.url("/api/me"), t).await.assert_error(403, "permission_denied");
    }
    get(&app.url("/admin/api/users"), &worker).await.assert_error(403, "permission_denied");
    let r = get(&app.url("/broker/ws"), &worker).await;
    let v = r.assert_error(404, "not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("cannot connect to this version"), "{v}");
    app.stop().await;
}

/// With no worker connected a broker provider fails like an unreachable upstream: a rotation
/// fails over past it, a direct request gets 502.
#[actix_web::test]
async fn a_broker_provider_without_workers_fails_over() {
    let mock = MockUpstream::start(1);
    let app = TestApp::spawn(|s| configure(s, &mock)).await;
    let token = app.user_with_token("ann").await;
    let r = post_json(&app.url("/v1/chat/completions"), &token, &chat("rotation/r", "hi")).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("cloud")), "{}", r.text());
    assert_eq!(r.header("x-switchyard-reason"), Some("failover_after_error"));
    let r = post_json(&app.url("/v1/chat/completions"), &token, &chat("provider/gpu/m", "hi")).await;
    let v = r.assert_error(502, "upstream_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpu"), "{v}");
    app.stop().await;
}
