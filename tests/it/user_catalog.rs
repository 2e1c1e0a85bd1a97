//! Per-user catalogs (tenancy issue): users' own providers and rotations, resolved only in their
//! namespace; provider keys sealed at rest (AES-256-GCM, bound to owner and provider) and a node
//! without the master key refusing to start; the SSRF guard (S7) at save and at connect time.

use std::io::Read as _;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::config::{Secret, Settings};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, post_json, send, settings_in};

const MASTER: &str = "8f3a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f90112233445566778899aabbccd";

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> crate::support::Resp {
    let auth = format!("Bearer {token}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    send(method, &app.url(path), &headers, body.map(|b| b.to_string()).unwrap_or_default()).await
}

fn secure(s: &mut Settings, allow: &[String]) {
    s.security.master_key = Some(Secret::new(MASTER));
    s.security.endpoint_allowlist = allow.to_vec();
}

async fn user(app: &TestApp, name: &str) -> String {
    let a = &app.admin_token;
    call(app, "POST", "/admin/api/users", a, Some(json!({"username": name}))).await;
    let t = call(app, "POST", "/admin/api/tokens", a, Some(json!({"user": name}))).await.json();
    t["token"].as_str().unwrap().to_owned()
}

async fn reload() {
    tokio::time::sleep(Duration::from_millis(450)).await;
}

#[actix_web::test]
async fn users_own_providers_and_rotations_with_sealed_keys() {
    let mock = MockUpstream::start(1);
    let allow = vec![format!("127.0.0.1:{}", mock.port)];
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/cat.db?mode=rwc", dir.path().display());
    let db2 = db.clone();
    let allow2 = allow.clone();
    let app = TestApp::spawn(move |s| {
        secure(s, &allow2);
        s.database.url = Secret::new(db2);
    })
    .await;
    let (alice, eve) = (user(&app, "alice").await, user(&app, "eve").await);
    let provider = json!({"type": "openai", "endpoint": mock.base(), "models": [{"name": "m"}],
        "api_key": "sk-alice-upstream-secret-0042"});
    let r = call(&app, "PUT", "/api/me/providers/gpu", &alice, Some(provider)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["has_api_key"], true);
    assert!(!r.text().contains("sk-alice"), "the key came back: {}", r.text());
    let r = call(
        &app,
        "PUT",
        "/api/me/rotations/pair",
        &alice,
        Some(json!({"strategy": "priority",
        "entries": [{"provider_id": "gpu", "model": "m"}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    call(
        &app,
        "PUT",
        "/api/me/rotations/bad",
        &alice,
        Some(json!({"strategy": "priority",
        "entries": [{"provider_id": "someone-elses", "model": "m"}]})),
    )
    .await
    .assert_error(400, "invalid_request");
    call(
        &app,
        "PUT",
        "/api/me/autoselects/bad",
        &alice,
        Some(json!({"available_models": [{"route": "user-provider/nope/m"}]})),
    )
    .await
    .assert_error(400, "invalid_request");
    call(
        &app,
        "PUT",
        "/api/me/autoselects/bad",
        &alice,
        Some(json!({"available_models": [{"route": "autoselect/x"}]})),
    )
    .await
    .assert_error(400, "invalid_request");
    let r = call(
        &app,
        "PUT",
        "/api/me/autoselects/pick",
        &alice,
        Some(json!({"classify_privacy": true,
        "available_models": [{"route": "user-rotation/pair", "privacy": true}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    reload().await;

    // Alice's namespace: her provider (with her key) and her rotation.
    let url = app.url("/v1/chat/completions");
    let r = post_json(&url, &alice, &chat("user-provider/gpu/m", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("alice/gpu"));
    assert_eq!(mock.received().last().unwrap().header("authorization"), Some("Bearer sk-alice-upstream-secret-0042"));
    let r = post_json(&url, &alice, &chat("user-rotation/pair", "hi")).await;
    assert_eq!((r.status, r.header("x-switchyard-route")), (200, Some("user-rotation/pair")), "{}", r.text());
    let r = post_json(&app.url("/api/u/alice/chat/completions"), &alice, &chat("user-provider/gpu/m", "hi")).await;
    assert_eq!(r.status, 200);
    let r = post_json(&url, &alice, &chat("user-autoselect/pick", "my email is alice@example.com")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.header("x-switchyard-route"), r.header("x-switchyard-reason")),
        (Some("user-autoselect/pick"), Some("privacy"))
    );
    let models = crate::support::get(&app.url("/v1/models"), &alice).await.text();
    assert!(models.contains("user-provider/gpu/m") && models.contains("user-rotation/pair"), "{models}");

    // S1: for Eve, Alice's objects are exactly like missing ones.
    let calls = mock.calls();
    let theirs = post_json(&url, &eve, &chat("user-provider/gpu/m", "hi")).await.assert_error(404, "model_not_found");
    let missing = post_json(&url, &eve, &chat("user-provider/nope/m", "hi")).await.assert_error(404, "model_not_found");
    assert_eq!(
        theirs["error"]["message"].as_str().unwrap().replace("gpu", "X"),
        missing["error"]["message"].as_str().unwrap().replace("nope", "X")
    );
    post_json(&url, &eve, &chat("user-rotation/pair", "hi")).await.assert_error(404, "model_not_found");
    post_json(&url, &eve, &chat("user-autoselect/pick", "hi")).await.assert_error(404, "model_not_found");
    post_json(&app.url("/api/u/alice/chat/completions"), &eve, &chat("user-provider/gpu/m", "hi"))
        .await
        .assert_error(403, "permission_denied");
    call(&app, "GET", "/api/me/providers/gpu", &eve, None).await.assert_error(404, "not_found");
    call(&app, "DELETE", "/api/me/providers/gpu", &eve, None).await.assert_error(404, "not_found");
    assert_eq!(mock.calls(), calls, "another user's provider was called");
    assert!(!crate::support::get(&app.url("/v1/models"), &eve).await.text().contains("user-provider"));
    // The admin sees it, never the key.
    let listed = call(&app, "GET", "/admin/api/users/alice/providers", &app.admin_token, None).await.text();
    assert!(listed.contains("\"gpu\"") && !listed.contains("sk-alice"), "{listed}");

    // What another object uses stays.
    call(&app, "DELETE", "/api/me/providers/gpu", &alice, None).await.assert_error(409, "conflict");
    call(&app, "DELETE", "/api/me/rotations/pair", &alice, None).await.assert_error(409, "conflict");
    app.stop().await;

    // At rest: no trace of the key in the database files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let mut bytes = Vec::new();
        std::fs::File::open(entry.unwrap().path()).unwrap().read_to_end(&mut bytes).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"sk-alice-ups"), "the key is stored in clear");
    }
    // A node without the master key refuses to start; with another key, the provider is left out.
    let mut s = settings_in(&tempfile::tempdir().unwrap());
    s.database.url = Secret::new(db.clone());
    let err = switchyard::server::Application::build(s).await.err().expect("must refuse to start");
    assert!(err.to_string().contains("master_key"), "{err}");
    let app = TestApp::spawn(move |x| {
        secure(x, &allow);
        x.security.master_key = Some(Secret::new(MASTER.replace('8', "9")));
        x.database.url = Secret::new(db);
    })
    .await;
    post_json(&app.url("/v1/chat/completions"), &alice, &chat("user-provider/gpu/m", "hi"))
        .await
        .assert_error(404, "model_not_found");
    app.stop().await;
}

/// S7: user endpoints may not reach loopback, private, link-local or metadata addresses in any
/// notation, checked when saved and again when connecting.
#[actix_web::test]
async fn s7_the_ssrf_guard_refuses_internal_endpoints() {
    let mock = MockUpstream::start(1);
    let allow = vec![format!("127.0.0.1:{}", mock.port), format!("localhost:{}", mock.port)];
    let allow2 = allow.clone();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/ssrf.db?mode=rwc", dir.path().display());
    let db2 = db.clone();
    let app = TestApp::spawn(move |s| {
        secure(s, &allow2);
        s.database.url = Secret::new(db2);
    })
    .await;
    let alice = user(&app, "alice").await;
    for endpoint in [
        "http://127.0.0.1:9/v1",
        "http://localhost:9/v1",
        "http://2130706433:9/v1",
        "http://0x7f000001:9/v1",
        "http://0177.0.0.1:9/v1",
        "http://127.1:9/v1",
        "http://[::1]:9/v1",
        "http://[::ffff:127.0.0.1]:9/v1",
        "http://[::ffff:0:7f00:1]:9/v1",
        "http://[64:ff9b:1::7f00:1]:9/v1",
        "http://[2001::7f00:1]:9/v1",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/v1",
        "http://192.168.0.10/v1",
        "http://100.64.1.1/v1",
        "http://0.0.0.0:9/v1",
        "http://[fd00:ec2::254]/v1",
        "file:///etc/passwd",
        "gopher://127.0.0.1:9/",
    ] {
        let body = json!({"type": "openai", "endpoint": endpoint, "models": [{"name": "m"}]});
        let r = call(&app, "PUT", "/api/me/providers/evil", &alice, Some(body)).await;
        r.assert_error(400, "invalid_request");
    }
    let listed = call(&app, "GET", "/api/me/providers", &alice, None).await.json();
    assert_eq!(listed["objects"].as_array().unwrap().len(), 0, "{listed}");
    // Allowlisted exactly (an IP literal and a host name), both work.
    for (name, endpoint) in
        [("lit", format!("http://127.0.0.1:{}/v1", mock.port)), ("dns", format!("http://localhost:{}/v1", mock.port))]
    {
        let body = json!({"type": "openai", "endpoint": endpoint, "models": [{"name": "m"}]});
        assert_eq!(call(&app, "PUT", &format!("/api/me/providers/{name}"), &alice, Some(body)).await.status, 200);
    }
    reload().await;
    let url = app.url("/v1/chat/completions");
    assert_eq!(post_json(&url, &alice, &chat("user-provider/lit/m", "hi")).await.status, 200);
    assert_eq!(post_json(&url, &alice, &chat("user-provider/dns/m", "hi")).await.status, 200);
    app.stop().await;

    // The operator withdraws the allowlist: the connect-time check refuses both, without a call.
    let calls = mock.calls();
    let app = TestApp::spawn(move |s| {
        secure(s, &[]);
        s.database.url = Secret::new(db);
    })
    .await;
    let url = app.url("/v1/chat/completions");
    for model in ["user-provider/lit/m", "user-provider/dns/m"] {
        let r = post_json(&url, &alice, &chat(model, "hi")).await;
        r.assert_error(502, "upstream_error");
        assert!(!r.text().contains("127.0.0.1"), "{}", r.text());
    }
    assert_eq!(mock.calls(), calls, "a refused endpoint was called");
    app.stop().await;
}
