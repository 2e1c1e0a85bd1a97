//! S12: SQL injection payloads in bearer tokens, usernames, model names and usage filters behave
//! exactly like benign unknown values and delay nothing, on Postgres and on MariaDB.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard::config::Secret;

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, fresh_database, openai_provider, post_json, send, service_url};

const PAYLOADS: &[&str] = &[
    "' OR '1'='1",
    "x' OR 1=1 --",
    "x'; DROP TABLE users; --",
    "x' UNION SELECT token_hash FROM tokens --",
    "x' || pg_sleep(5) || '",
    "x' AND SLEEP(5) AND '1'='1",
    "x\\'; SELECT 1; --",
];

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn timed(f: impl std::future::Future<Output = crate::support::Resp>) -> crate::support::Resp {
    let started = Instant::now();
    let r = f.await;
    // A payload that reached SQL would sleep 5 s; nothing here may take 3.
    assert!(started.elapsed() < Duration::from_secs(3), "a request took {:?}", started.elapsed());
    r
}

async fn s12(admin_db: &str) {
    let mock = MockUpstream::start(1);
    let db = fresh_database(&service_url(admin_db)).await;
    let base = mock.base();
    let app = TestApp::spawn(|s| {
        s.database.url = Secret::new(db);
        s.providers.push(openai_provider("a", &base, &["m"]));
    })
    .await;
    let a = app.admin_token.clone();
    let auth = format!("Bearer {a}");
    let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let url = app.url("/v1/chat/completions");
    for p in PAYLOADS.iter().copied().chain(["benign value"]) {
        // As a bearer token: the same 401 as any unknown token.
        let r = timed(post_json(&url, p, &chat("m", "hi"))).await;
        r.assert_error(401, "invalid_token");
        // As a model name: the same 404 as any unknown model.
        let r = timed(post_json(&url, &a, &chat(p, "hi"))).await;
        assert!(r.status == 404 || r.status == 400, "{p}: {}", r.text());
        // As a username (path), a new user, and usage filters.
        timed(send("GET", &app.url(&format!("/admin/api/users/{}", enc(p))), &h, ""))
            .await
            .assert_error(404, "not_found");
        timed(send("POST", &app.url("/admin/api/users"), &h, json!({"username": p}).to_string()))
            .await
            .assert_error(400, "invalid_request");
        let q = format!("/admin/api/usage?model={}&route={}&group_by=model", enc(p), enc(p));
        let r = timed(send("GET", &app.url(&q), &h, "")).await;
        assert_eq!((r.status, r.json()["total"]["requests"].as_u64()), (200, Some(0)), "{p}: {}", r.text());
        timed(send("GET", &app.url(&format!("/admin/api/usage?user={}", enc(p))), &h, ""))
            .await
            .assert_error(404, "not_found");
    }
    // Nothing was changed or dropped: the admin still works, and is still the only user.
    let users = timed(send("GET", &app.url("/admin/api/users"), &h, "")).await.json();
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    assert_eq!(mock.calls(), 0);
    app.stop().await;
}

#[actix_web::test]
async fn s12_sql_injection_on_postgres() {
    s12("SWITCHYARD_TEST_PG_URL").await;
}

#[actix_web::test]
async fn s12_sql_injection_on_mariadb() {
    s12("SWITCHYARD_TEST_MYSQL_URL").await;
}
