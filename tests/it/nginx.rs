//! `nginx/nginx.conf` in front of two cluster nodes (Postgres + Redis) and one dead address:
//! it passes `nginx -t`, spreads requests and skips the node it cannot reach, relays SSE
//! without buffering, and answers its own errors (413, 502) in the OpenAI shape, over HTTP/1.1
//! and, on its HTTPS listener, HTTP/2.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use switchyard::config::Secret;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::services::{Nginx, free_port};
use crate::support::{TestApp, chat, fresh_database, openai_provider, post_json, send, service_url, sse_data, unique};

#[actix_web::test]
async fn nginx_spreads_load_relays_streams_and_answers_in_the_openai_shape() {
    let mock = MockUpstream::start(4);
    let db = fresh_database(&service_url("SWITCHYARD_TEST_PG_URL")).await;
    let redis = service_url("SWITCHYARD_TEST_REDIS_URL");
    let prefix = format!("{}:", unique("ngx"));
    let node = |db: String, redis: String, prefix: String, base: String| {
        move |s: &mut switchyard::config::Settings| {
            s.database.url = Secret::new(db);
            s.redis.url = Some(Secret::new(redis));
            s.redis.key_prefix = prefix;
            s.providers.push(openai_provider("a", &base, &["m"]));
        }
    };
    let a = TestApp::spawn(node(db.clone(), redis.clone(), prefix.clone(), mock.base())).await;
    let b = TestApp::spawn(node(db, redis, prefix, mock.base())).await;
    let dead = free_port();
    let nginx = Nginx::start(&[a.port, dead, b.port]);
    let listen = nginx.port;
    let url = format!("http://127.0.0.1:{listen}/v1/chat/completions");
    let token = a.admin_token.clone();

    // Spread over both live nodes; the dead one is skipped (connect error → next node).
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let r = post_json(&url, &token, &chat("m", "hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        nodes.insert(a.usage(r.header("x-request-id").unwrap()).await.node);
    }
    assert_eq!(nodes.len(), 2, "{nodes:?}");

    // SSE passes unbuffered: the first chunks arrive while the upstream is still silent.
    mock.plan(Plan { chunks: 5, hang_after: Some(2), ..Plan::default() });
    let client = awc::Client::builder().disable_timeout().finish();
    let mut res = client
        .post(&url)
        .bearer_auth(&token)
        .send_json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while sse_data(&seen).len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.next()).await.expect("nginx buffered the stream");
        seen.extend_from_slice(&chunk.unwrap().unwrap());
    }
    drop(res);

    // nginx's own 413, in the OpenAI shape.
    let big = vec![b'x'; 11 * 1024 * 1024];
    let auth = format!("Bearer {token}");
    let r = send("POST", &url, &[("authorization", &auth), ("content-type", "application/json")], big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large", "{}", r.text());

    // The HTTPS listener speaks HTTP/2: proxied answers and nginx's own JSON errors alike.
    let (v, status, body) = curl_h2(nginx.tls_port, &token, chat("m", "hi").to_string().as_bytes());
    assert_eq!((v.as_str(), status), ("2", 200), "{body}");
    assert!(body.contains("chat.completion"), "{body}");
    let (v, status, body) = curl_h2(nginx.tls_port, &token, &vec![b'x'; 11 * 1024 * 1024]);
    assert_eq!((v.as_str(), status), ("2", 413), "{body}");
    assert!(body.contains("\"code\":\"request_too_large\""), "{body}");

    // The node registry lists both nodes, with what each announces.
    let cluster = crate::support::get(&a.url("/admin/api/cluster"), &token).await.json();
    let listed = cluster["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{cluster}");
    let addresses: Vec<&str> = listed.iter().filter_map(|n| n["address"].as_str()).collect();
    assert!(addresses.contains(&format!("127.0.0.1:{}", a.port).as_str()), "{cluster}");
    assert!(listed.iter().all(|n| n["version"].is_string() && n["in_flight"].is_u64()), "{cluster}");

    // Every node gone: nginx's 502, in the OpenAI shape.
    a.stop().await;
    b.stop().await;
    let r = post_json(&url, &token, &chat("m", "hi")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    assert!(!r.text().contains("<html"), "{}", r.text());
    let (v, status, body) = curl_h2(nginx.tls_port, &token, chat("m", "hi").to_string().as_bytes());
    assert_eq!((v.as_str(), status), ("2", 502), "{body}");
    assert!(body.contains("\"code\":\"upstream_error\"") && !body.contains("<html"), "{body}");
}

/// A POST over HTTPS with HTTP/2 (curl, certificate not verified: it is a throwaway one);
/// returns the HTTP version, the status and the body.
fn curl_h2(port: u16, token: &str, body: &[u8]) -> (String, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sk", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}", "-X", "POST"])
        .arg(format!("https://127.0.0.1:{port}/v1/chat/completions"))
        .args(["-H", &format!("authorization: Bearer {token}"), "-H", "content-type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .output()
        .expect("curl (installed by tests/run.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = last.split_whitespace();
    let version = parts.next().unwrap_or("").to_owned();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (version, status, body.to_owned())
}
