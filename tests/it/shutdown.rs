//! Graceful shutdown drains in-flight streams and flushes every usage record; a node on
//! Postgres and Redis serves like the embedded one.

use std::time::Duration;

use serde_json::json;
use switchyard::config::Secret;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, chat, fresh_database, openai_provider, post_json, service_url, sse_data, unique};

#[actix_web::test]
async fn stop_drains_streams_and_flushes_usage() {
    let mock = MockUpstream::start(2);
    let base = mock.base();
    let app = TestApp::spawn(|s| s.providers.push(openai_provider("local", &base, &["qwen"]))).await;
    mock.plan(Plan { times: 3, chunks: 8, chunk_interval_ms: 150, ..Plan::default() });
    let url = app.url("/v1/chat/completions");
    let token = app.admin_token.clone();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (url, token) = (url.clone(), token.clone());
        streams.push(actix_web::rt::spawn(async move {
            post_json(
                &url,
                &token,
                &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = app.store().await;
    let (handle, done) = (app.handle.clone(), app.done);
    handle.stop(true).await;
    done.await.unwrap().unwrap();
    let mut ids = Vec::new();
    for s in streams {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200);
        let events = sse_data(&r.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "a stream was cut by shutdown: {events:?}");
        ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    for id in ids {
        let rec = switchyard::store::find_usage(store.conn(), &id).await.unwrap();
        assert_eq!(rec.map(|r| r.outcome), Some("ok".to_owned()), "usage not flushed before exit");
    }
}

#[actix_web::test]
async fn cluster_backends_serve_and_propagate_revocation() {
    let mock = MockUpstream::start(1);
    let base = mock.base();
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let redis = service_url("SWITCHYARD_TEST_REDIS_URL");
    let prefix = format!("{}:", unique("c"));
    let edit = |s: &mut switchyard::config::Settings| {
        s.database.url = Secret::new(db.clone());
        s.redis.url = Some(Secret::new(redis.clone()));
        s.redis.key_prefix = prefix.clone();
        s.catalog.poll_interval_ms = 60_000;
        s.providers.push(openai_provider("local", &base, &["qwen"]));
    };
    let n1 = TestApp::spawn(edit).await;
    let n2 = TestApp::spawn(edit).await;
    let token = n1.user_with_token("erin").await;
    for n in [&n1, &n2] {
        let mut status = 0;
        for _ in 0..100 {
            status = post_json(&n.url("/v1/chat/completions"), &token, &chat("qwen", "hi")).await.status;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 200);
    }
    let c = n1.control().await;
    let id = c.list_tokens("erin").await.unwrap()[0].id;
    c.revoke_token(id).await.unwrap();
    // The poll interval is a minute: only the Redis announcement can make this pass.
    for n in [&n1, &n2] {
        let mut status = 0;
        for _ in 0..100 {
            status = post_json(&n.url("/v1/chat/completions"), &token, &chat("qwen", "hi")).await.status;
            if status == 401 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 401, "revocation did not reach a node through Redis");
    }
    let ready = crate::support::get(&n2.url("/ready"), "").await.json();
    assert_eq!(ready["shared_state_kind"], "redis");
    n1.stop().await;
    n2.stop().await;
}
