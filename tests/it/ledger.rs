//! The usage ledger in cluster mode (Postgres + Redis): F9 in its single-node form — a node
//! killed with SIGKILL mid-load leaves every request that reached the upstream with exactly one
//! usage record, finalised by another node from the ledger's "started" entries.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use switchyard::config::Secret;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, chat, fresh_database, openai_provider, post_json, service_url, unique};

#[actix_web::test]
async fn f9_sigkill_mid_load_loses_no_usage_record() {
    let mock = MockUpstream::start(8);
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let redis = service_url("SWITCHYARD_TEST_REDIS_URL");
    let prefix = format!("{}:", unique("f9"));
    let token = format!("sy-{}", "f9".repeat(24));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "[server]\nport = 0\n[database]\nurl = \"{db}\"\n[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\
             [cluster]\nheartbeat_interval_ms = 200\n[usage]\nflush_interval_ms = 20\n[log]\nlevel = \"error\"\n\
             [[providers]]\nid = \"a\"\ntype = \"openai\"\nendpoint = \"{}\"\nmodels = [{{ name = \"m\" }}]\n",
            mock.base()
        ),
    )
    .unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .args(["--config", "node.toml", "serve"])
        .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", &token)
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = 0u16;
    for line in BufReader::new(node.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if let Some(p) = line.strip_prefix("Switchyard listening on http://127.0.0.1:") {
            port = p.trim().parse().unwrap();
            break;
        }
    }
    assert!(port != 0, "the node did not start");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");

    // Some requests finish before the kill; 24 more are in flight at the upstream when it comes.
    for _ in 0..6 {
        assert_eq!(post_json(&url, &token, &chat("m", "before")).await.status, 200);
    }
    mock.plan(Plan { delay_headers_ms: 3_000, times: 24, ..Plan::default() });
    let in_flight = actix_web::rt::spawn(async move {
        let body = chat("m", "during");
        join_all((0..24).map(|_| post_json(&url, &token, &body))).await
    });
    for _ in 0..200 {
        if mock.calls() >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.calls(), 30, "the load did not reach the upstream");
    node.kill().unwrap(); // SIGKILL
    node.wait().unwrap();
    let _ = in_flight.await;

    // Another node of the cluster finalises what the dead one left.
    let reached: Vec<String> =
        mock.received().iter().filter_map(|r| r.header("x-request-id").map(str::to_owned)).collect();
    assert_eq!(reached.len(), 30);
    let base = mock.base();
    let db2 = db.clone();
    let app = TestApp::spawn(move |s| {
        s.database.url = Secret::new(db2);
        s.redis.url = Some(Secret::new(redis));
        s.redis.key_prefix = prefix;
        s.cluster.heartbeat_interval_ms = 200;
        s.providers.push(openai_provider("a", &base, &["m"]));
    })
    .await;
    let store = app.store().await;
    let mut missing = reached.clone();
    for _ in 0..150 {
        let mut still = Vec::new();
        for id in &missing {
            if switchyard::store::find_usage(store.conn(), id).await.unwrap().is_none() {
                still.push(id.clone());
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "{} of 30 requests that reached the upstream have no usage record", missing.len());
    // Exactly one each (the request id is the key), and nothing more than what reached the upstream.
    assert_eq!(switchyard::store::count_usage(store.conn()).await.unwrap(), 30);
    let mut lost = 0;
    for id in &reached {
        let r = switchyard::store::find_usage(store.conn(), id).await.unwrap().unwrap();
        if r.outcome == "node_lost" {
            lost += 1;
            assert!(r.partial && r.usage_source == "estimated" && r.user_id.is_some(), "{r:?}");
        }
    }
    assert!(lost >= 24, "the 24 requests in flight were finalised as node_lost ({lost})");
    app.stop().await;
}

/// F7 in single-node form: Redis dies under a cluster node; requests keep flowing (limits fall
/// back to the node's share, the ledger to direct database writes), and every request still gets
/// exactly one usage record.
#[actix_web::test]
async fn f7_requests_keep_flowing_and_are_recorded_without_redis() {
    let mock = MockUpstream::start(2);
    let mut redis = crate::support::services::PrivateRedis::start();
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let (base, url) = (mock.base(), redis.url.clone());
    let app = TestApp::spawn(move |s| {
        s.database.url = Secret::new(db);
        s.redis.url = Some(Secret::new(url));
        s.cluster.heartbeat_interval_ms = 200;
        s.providers.push(openai_provider("a", &base, &["m"]));
    })
    .await;
    let chat_url = app.url("/v1/chat/completions");
    let mut ids = Vec::new();
    for i in 0..20 {
        if i == 5 {
            redis.kill();
        }
        let r = post_json(&chat_url, &app.admin_token, &chat("m", "hi")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    let store = app.store().await;
    for id in &ids {
        let rec = app.usage(id).await;
        assert_eq!((rec.status, rec.outcome.as_str()), (200, "ok"), "{id}");
    }
    assert_eq!(switchyard::store::count_usage(store.conn()).await.unwrap(), 20);
    app.stop().await;
}
