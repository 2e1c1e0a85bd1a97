//! The admin API and self-service (tenancy issue): CRUD over users, tiers, tokens and prices,
//! usage reports and CSV; S4 (every admin route × every non-admin credential: 401/403, nothing
//! changes), S1 (tenants never see each other's objects), S2 (child tokens stay within scope and
//! are charged against their parent).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, get, openai_provider, post_json, send};

async fn app(mock: &MockUpstream) -> TestApp {
    let base = mock.base();
    TestApp::spawn(|s| {
        s.providers.push(openai_provider("a", &base, &["m", "m2"]));
        s.providers.push(openai_provider("b", &base, &["m"]));
    })
    .await
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> crate::support::Resp {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    send(method, &app.url(path), &headers, body.map(|b| b.to_string()).unwrap_or_default()).await
}

async fn reload() {
    tokio::time::sleep(Duration::from_millis(450)).await;
}

/// Everything an admin route could change, counted.
async fn state_of(app: &TestApp) -> Value {
    let a = &app.admin_token;
    let users = call(app, "GET", "/admin/api/users", a, None).await.json();
    let tiers = call(app, "GET", "/admin/api/tiers", a, None).await.json();
    let prices = call(app, "GET", "/admin/api/prices", a, None).await.json();
    let tokens = call(app, "GET", "/admin/api/users/alice/tokens", a, None).await.json();
    json!([users, tiers, prices, tokens])
}

#[actix_web::test]
async fn s4_every_admin_route_refuses_every_non_admin_credential() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let a = &app.admin_token;
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "alice"}))).await;
    call(&app, "PUT", "/admin/api/tiers/gold", a, Some(json!({"rpm": 5}))).await;
    let user_token = call(&app, "POST", "/admin/api/tokens", a, Some(json!({"user": "alice"}))).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    reload().await;
    let child = call(&app, "POST", "/api/me/tokens", &user_token, Some(json!({"routes": ["provider/a/*"]}))).await;
    assert_eq!(child.status, 201, "{}", child.text());
    let child = child.json()["token"].as_str().unwrap().to_owned();
    reload().await;
    let before = state_of(&app).await;

    let routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/admin/api/users", None),
        ("POST", "/admin/api/users", Some(json!({"username": "mallory", "role": "admin"}))),
        ("GET", "/admin/api/users/alice", None),
        ("PATCH", "/admin/api/users/alice", Some(json!({"status": "disabled"}))),
        ("PATCH", "/admin/api/users/admin", Some(json!({"tier": "gold"}))),
        ("GET", "/admin/api/users/alice/tokens", None),
        ("GET", "/admin/api/tiers", None),
        ("GET", "/admin/api/tiers/gold", None),
        ("PUT", "/admin/api/tiers/gold", Some(json!({"rpm": 100000}))),
        ("DELETE", "/admin/api/tiers/gold", None),
        ("POST", "/admin/api/tokens", Some(json!({"user": "admin"}))),
        ("DELETE", "/admin/api/tokens/1", None),
        ("PATCH", "/admin/api/tokens/2", Some(json!({"quota_usd": 1_000_000, "routes": ["*"]}))),
        ("GET", "/admin/api/prices", None),
        ("PUT", "/admin/api/prices", Some(json!({"model": "m", "input_per_million": 0, "output_per_million": 0}))),
        ("GET", "/admin/api/prices/m", None),
        ("DELETE", "/admin/api/prices/m", None),
        ("GET", "/admin/api/usage", None),
        ("GET", "/admin/api/cluster", None),
        ("GET", "/admin/api/usage.csv", None),
    ];
    let mut checked = 0;
    for (method, path, body) in &routes {
        for (who, token, status, code) in [
            ("none", "", 401, "invalid_token"),
            ("garbage", "sy-not-a-real-token-at-all-0000000000000000000000", 401, "invalid_token"),
            ("user", user_token.as_str(), 403, "permission_denied"),
            ("child", child.as_str(), 403, "permission_denied"),
        ] {
            let r = call(&app, method, path, token, body.clone()).await;
            assert_eq!(r.status, status, "{who} {method} {path}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], code, "{who} {method} {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * 4);
    assert_eq!(state_of(&app).await, before, "a refused admin call changed something");
    app.stop().await;
}

#[actix_web::test]
async fn admin_crud_usage_reports_and_csv() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let a = &app.admin_token;

    let r = call(&app, "PUT", "/admin/api/tiers/pro", a, Some(json!({"rpm": 100, "routes": ["provider/a/*"]}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "bob", "tier": "pro"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["user"]["tier"], "pro");
    let r = call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "bob"}))).await;
    r.assert_error(409, "conflict");
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "Bad Name"})))
        .await
        .assert_error(400, "invalid_request");
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "x", "admin": true})))
        .await
        .assert_error(400, "invalid_request");
    send(
        "POST",
        &app.url("/admin/api/users"),
        &[("authorization", &format!("Bearer {a}")), ("content-type", "application/json")],
        "{nope",
    )
    .await
    .assert_error(400, "invalid_request");
    call(&app, "GET", "/admin/api/users/nobody", a, None).await.assert_error(404, "not_found");
    call(&app, "DELETE", "/admin/api/tiers/pro", a, None).await.assert_error(409, "conflict");

    let r = call(&app, "POST", "/admin/api/tokens", a, Some(json!({"user": "bob", "name": "ci", "rpm": 50}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (bob, bob_id) = (r.json()["token"].as_str().unwrap().to_owned(), r.json()["id"].as_i64().unwrap());
    reload().await;
    // The tier's routes apply to bob's token.
    let url = app.url("/v1/chat/completions");
    assert_eq!(post_json(&url, &bob, &chat("provider/a/m", "hi")).await.status, 200);
    assert_eq!(post_json(&url, &bob, &chat("provider/a/m2", "hi")).await.status, 200);
    post_json(&url, &bob, &chat("provider/b/m", "hi")).await.assert_error(403, "permission_denied");
    assert_eq!(post_json(&url, a, &chat("provider/b/m", "hi")).await.status, 200);

    // Take bob off the tier; disable and re-enable him.
    let r = call(&app, "PATCH", "/admin/api/users/bob", a, Some(json!({"tier": null}))).await;
    assert!(r.json()["user"]["tier"].is_null(), "{}", r.text());
    call(&app, "PATCH", "/admin/api/users/bob", a, Some(json!({"status": "disabled"}))).await;
    reload().await;
    post_json(&url, &bob, &chat("provider/b/m", "hi")).await.assert_error(401, "invalid_token");
    call(&app, "PATCH", "/admin/api/users/bob", a, Some(json!({"status": "active"}))).await;
    reload().await;
    assert_eq!(post_json(&url, &bob, &chat("provider/b/m", "hi")).await.status, 200);

    // Prices.
    let price =
        json!({"model": "m", "input_per_million": 1000.0, "output_per_million": 2000.0, "aliases": ["m-latest"]});
    assert_eq!(call(&app, "PUT", "/admin/api/prices", a, Some(price)).await.status, 200);
    let r = call(&app, "GET", "/admin/api/prices/m", a, None).await;
    assert_eq!(r.json()["price"]["aliases"][0], "m-latest");
    call(
        &app,
        "PUT",
        "/admin/api/prices",
        a,
        Some(json!({"model": "m", "input_per_million": -1, "output_per_million": 0})),
    )
    .await
    .assert_error(400, "invalid_request");
    reload().await;
    assert_eq!(post_json(&url, &bob, &chat("provider/b/m", "hi")).await.status, 200);

    // Usage: totals, groups, percentiles; CSV.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = call(&app, "GET", "/admin/api/usage?group_by=model", a, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["total"]["requests"], 5, "{v}");
    assert_eq!(v["total"]["errors"], 0, "{v}");
    assert!(v["total"]["latency_ms"]["p99"].as_i64().unwrap() >= v["total"]["latency_ms"]["p50"].as_i64().unwrap());
    let m2 = v["groups"].as_array().unwrap().iter().find(|g| g["key"] == "m2").unwrap();
    assert_eq!(m2["requests"], 1);
    let priced = call(&app, "GET", "/admin/api/usage?user=bob&model=m", a, None).await.json();
    assert!(priced["total"]["cost_usd"].as_f64().unwrap() > 0.0, "{priced}");
    let by_day = call(&app, "GET", "/admin/api/usage?group_by=day&from=2020-01-01T00:00:00Z", a, None).await.json();
    assert_eq!(by_day["groups"].as_array().unwrap().len(), 1, "{by_day}");
    call(&app, "GET", "/admin/api/usage?from=yesterday", a, None).await.assert_error(400, "invalid_request");
    call(&app, "GET", "/admin/api/usage?group_by=planet", a, None).await.assert_error(400, "invalid_request");
    let csv = call(&app, "GET", "/admin/api/usage.csv?user=bob", a, None).await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    assert!(text.starts_with("request_id,time,user_id"), "{text}");
    assert_eq!(text.lines().count(), 1 + 4, "{text}");

    // Revocation reaches the data plane.
    assert_eq!(call(&app, "DELETE", &format!("/admin/api/tokens/{bob_id}"), a, None).await.status, 204);
    reload().await;
    post_json(&url, &bob, &chat("provider/b/m", "hi")).await.assert_error(401, "invalid_token");
    app.stop().await;
}

#[actix_web::test]
async fn s1_s2_self_service_stays_in_its_own_namespace_and_scope() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let a = &app.admin_token;
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "alice"}))).await;
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "eve"}))).await;
    let parent = call(
        &app,
        "POST",
        "/admin/api/tokens",
        a,
        Some(json!({"user": "alice", "routes": ["provider/a/*"], "rpm": 3, "quota_usd": 5})),
    )
    .await
    .json();
    let (alice, alice_id) = (parent["token"].as_str().unwrap().to_owned(), parent["id"].as_i64().unwrap());
    let eve = call(&app, "POST", "/admin/api/tokens", a, Some(json!({"user": "eve"}))).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    reload().await;

    // S2: children within scope only.
    for (body, why) in [
        (json!({}), "no routes"),
        (json!({"routes": ["*"]}), "wildcard"),
        (json!({"routes": ["provider/*"]}), "wider routes"),
        (json!({"routes": ["provider/b/m"]}), "other routes"),
        (json!({"routes": ["provider/a/m"], "rpm": 4, "quota_usd": 1}), "higher rpm"),
        (json!({"routes": ["provider/a/m"], "rpm": 1}), "no quota under a quota"),
        (json!({"routes": ["provider/a/m"], "rpm": 1, "quota_usd": 6}), "higher quota"),
        (json!({"routes": ["provider/a/m"], "rpm": 1, "quota_usd": 1, "user": "eve"}), "another user"),
    ] {
        let r = call(&app, "POST", "/api/me/tokens", &alice, Some(body)).await;
        r.assert_error(403, "permission_denied");
        let _ = why;
    }
    let r = call(
        &app,
        "POST",
        "/api/me/tokens",
        &alice,
        Some(json!({"routes": ["provider/a/m"], "rpm": 2, "quota_usd": 1})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (child, child_id) = (r.json()["token"].as_str().unwrap().to_owned(), r.json()["id"].as_i64().unwrap());
    reload().await;
    let url = app.url("/v1/chat/completions");
    assert_eq!(post_json(&url, &child, &chat("provider/a/m", "hi")).await.status, 200);
    post_json(&url, &child, &chat("provider/a/m2", "hi")).await.assert_error(403, "permission_denied");
    // The child is charged against its parent too: the parent's rpm of 3 is shared.
    assert_eq!(post_json(&url, &alice, &chat("provider/a/m", "hi")).await.status, 200);
    assert_eq!(post_json(&url, &alice, &chat("provider/a/m", "hi")).await.status, 200);
    post_json(&url, &child, &chat("provider/a/m", "hi")).await.assert_error(429, "rate_limit_exceeded");

    // S1: each tenant sees only their own tokens and usage; another's token id is "not found".
    let mine = call(&app, "GET", "/api/me/tokens", &alice, None).await.json();
    assert_eq!(mine["tokens"].as_array().unwrap().len(), 2, "{mine}");
    let theirs = call(&app, "GET", "/api/me/tokens", &eve, None).await.json();
    assert_eq!(theirs["tokens"].as_array().unwrap().len(), 1, "{theirs}");
    call(&app, "DELETE", &format!("/api/me/tokens/{alice_id}"), &eve, None).await.assert_error(404, "not_found");
    call(&app, "DELETE", "/api/me/tokens/999999", &eve, None).await.assert_error(404, "not_found");
    call(&app, "GET", "/api/me/usage?user=alice", &eve, None).await.assert_error(403, "permission_denied");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let usage = call(&app, "GET", "/api/me/usage", &eve, None).await.json();
    assert_eq!(usage["total"]["requests"], 0, "{usage}");
    let usage = call(&app, "GET", "/api/me/usage", &alice, None).await.json();
    assert_eq!(usage["total"]["requests"], 3, "{usage}");
    let me = get(&app.url("/api/me"), &child).await.json();
    assert_eq!((me["user"]["username"].as_str(), me["token"]["parent_id"].as_i64()), (Some("alice"), Some(alice_id)));

    // Revoking the parent ends the child.
    assert_eq!(call(&app, "DELETE", &format!("/api/me/tokens/{alice_id}"), &alice, None).await.status, 204);
    reload().await;
    post_json(&url, &child, &chat("provider/a/m", "hi")).await.assert_error(401, "invalid_token");
    let _ = child_id;
    app.stop().await;
}

/// `PATCH /admin/api/tokens/{id}`: a field left out stays, `null` clears it, bad values and
/// unknown fields are refused and change nothing, and the change takes effect on the data plane.
#[actix_web::test]
async fn token_scope_changes() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let a = &app.admin_token;
    call(&app, "POST", "/admin/api/users", a, Some(json!({"username": "carol"}))).await;
    let t = call(&app, "POST", "/admin/api/tokens", a, Some(json!({"user": "carol", "rpm": 5}))).await.json();
    let (token, id) = (t["token"].as_str().unwrap().to_owned(), t["id"].as_i64().unwrap());
    let path = format!("/admin/api/tokens/{id}");
    let r = call(&app, "PATCH", &path, a, Some(json!({"routes": ["provider/a/*"], "quota_usd": 2.5}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["token"]["routes"].clone(), v["token"]["rpm"].clone()), (json!(["provider/a/*"]), json!(5)));
    assert_eq!(v["token"]["quota_usd"], 2.5);
    assert!(!r.text().contains(&token), "the secret came back");
    let r = call(&app, "PATCH", &path, a, Some(json!({"rpm": null}))).await;
    assert_eq!(r.json()["token"]["rpm"], Value::Null);
    for bad in [json!({"rpm": -1}), json!({"routes": []}), json!({"expires_at": "tomorrow"}), json!({"owner": 1})] {
        call(&app, "PATCH", &path, a, Some(bad.clone())).await.assert_error(400, "invalid_request");
    }
    call(&app, "PATCH", "/admin/api/tokens/999999", a, Some(json!({"rpm": 1}))).await.assert_error(404, "not_found");
    let listed = call(&app, "GET", "/admin/api/users/carol/tokens", a, None).await.json();
    assert_eq!(listed["tokens"][0]["routes"], json!(["provider/a/*"]), "{listed}");
    // On the data plane: provider b is outside the new routes.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let body = json!({"model": "provider/b/m", "messages": [{"role": "user", "content": "hi"}]});
    call(&app, "POST", "/v1/chat/completions", &token, Some(body)).await.assert_error(403, "permission_denied");
    let body = json!({"model": "provider/a/m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(call(&app, "POST", "/v1/chat/completions", &token, Some(body)).await.status, 200);
    app.stop().await;
}
