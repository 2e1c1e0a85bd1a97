//! Token authentication: 401 rows, expiry, revocation, disabled owners, quota 0 (S3).

use std::time::Duration;

use switchyard::control::NewTokenRequest;
use switchyard::types::now_ms;

use crate::support::{TestApp, chat, post_json, send};

async fn mock_app() -> TestApp {
    TestApp::spawn(|s| {
        s.providers.push(switchyard::config::ProviderConfig {
            kind: switchyard::types::ProviderKind::Mock,
            endpoint: None,
            ..crate::support::openai_provider("mock", "", &["m"])
        });
    })
    .await
}

async fn eventually_status(app: &TestApp, token: &str, want: u16) -> crate::support::Resp {
    for _ in 0..100 {
        let r = post_json(&app.url("/v1/chat/completions"), token, &chat("m", "hi")).await;
        if r.status == want {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("status {want} never seen");
}

#[actix_web::test]
async fn credentials_are_checked() {
    let app = mock_app().await;
    let url = app.url("/v1/chat/completions");
    let body = chat("m", "hi").to_string();
    let ct = ("content-type", "application/json");
    send("POST", &url, &[ct], body.clone()).await.assert_error(401, "invalid_token");
    send("POST", &url, &[ct, ("authorization", "Bearer ")], body.clone()).await.assert_error(401, "invalid_token");
    send("POST", &url, &[ct, ("authorization", "Basic abc")], body.clone()).await.assert_error(401, "invalid_token");
    let unknown = format!("Bearer sy-{}", "0".repeat(64));
    send("POST", &url, &[ct, ("authorization", &unknown)], body.clone()).await.assert_error(401, "invalid_token");
    for injection in ["sy-' OR '1'='1", "sy-\u{0}x", "x' UNION SELECT 1 --"] {
        let auth = format!("Bearer {injection}");
        if let Ok(v) = awc::http::header::HeaderValue::from_str(&auth) {
            let _ = v;
            send("POST", &url, &[ct, ("authorization", &auth)], body.clone()).await.assert_error(401, "invalid_token");
        }
    }
    // x-api-key works like a bearer token.
    let r = send("POST", &url, &[ct, ("x-api-key", &app.admin_token)], body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.stop().await;
}

#[actix_web::test]
async fn expiry_revocation_and_disabled_owners() {
    let app = mock_app().await;
    let c = app.control().await;
    c.create_user("carol", switchyard::types::Role::User, None, None).await.unwrap();
    let (expired, _) = c
        .create_token(NewTokenRequest { expires_at: Some(now_ms() - 1_000), ..NewTokenRequest::for_user("carol") })
        .await
        .unwrap();
    post_json(&app.url("/v1/chat/completions"), &expired, &chat("m", "hi")).await.assert_error(401, "token_expired");

    let (soon, _) = c
        .create_token(NewTokenRequest { expires_at: Some(now_ms() + 1_500), ..NewTokenRequest::for_user("carol") })
        .await
        .unwrap();
    assert_eq!(post_json(&app.url("/v1/chat/completions"), &soon, &chat("m", "hi")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    post_json(&app.url("/v1/chat/completions"), &soon, &chat("m", "hi")).await.assert_error(401, "token_expired");

    let (live, row) = c.create_token(NewTokenRequest::for_user("carol")).await.unwrap();
    assert_eq!(post_json(&app.url("/v1/chat/completions"), &live, &chat("m", "hi")).await.status, 200);
    // Revoked through another connection (as the CLI would): the node sees it by its poll.
    c.revoke_token(row.id).await.unwrap();
    eventually_status(&app, &live, 401).await.assert_error(401, "invalid_token");

    let (other, _) = c.create_token(NewTokenRequest::for_user("carol")).await.unwrap();
    assert_eq!(post_json(&app.url("/v1/chat/completions"), &other, &chat("m", "hi")).await.status, 200);
    c.disable_user("carol").await.unwrap();
    eventually_status(&app, &other, 401).await.assert_error(401, "invalid_token");

    // Quota 0 means nothing is allowed.
    c.create_user("dave", switchyard::types::Role::User, None, None).await.unwrap();
    let (broke, _) =
        c.create_token(NewTokenRequest { quota_usd: Some(0.0), ..NewTokenRequest::for_user("dave") }).await.unwrap();
    post_json(&app.url("/v1/chat/completions"), &broke, &chat("m", "hi")).await.assert_error(402, "insufficient_quota");

    // Only hashes are stored.
    let db_path =
        app.settings.database.url.expose().trim_start_matches("sqlite://").split('?').next().unwrap().to_owned();
    let mut bytes = std::fs::read(&db_path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{db_path}-wal")) {
        bytes.extend(wal);
    }
    for t in [&expired, &soon, &live, &other, &broke, &app.admin_token] {
        assert!(!bytes.windows(t.len()).any(|w| w == t.as_bytes()), "a plaintext token is in the database");
    }
    app.stop().await;
}
