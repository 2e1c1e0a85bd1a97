//! Upstream failures become generic, OpenAI-shaped errors that never echo upstream text beyond
//! 200 characters, URLs or keys (B9), and streams that break end with one error event.

use std::time::Duration;

use serde_json::json;

use crate::support::mock_upstream::{BadBody, MockUpstream, Plan};
use crate::support::{TestApp, chat, openai_provider, post_json, sse_data};

async fn app(mock: &MockUpstream) -> TestApp {
    let base = mock.base();
    TestApp::spawn(|s| {
        s.upstream.first_byte_timeout_ms = 500;
        s.upstream.idle_timeout_ms = 700;
        let mut p = openai_provider("local", &base, &["qwen"]);
        p.max_concurrency = Some(1);
        s.providers.push(p);
        s.providers.push(openai_provider("dead", "http://127.0.0.1:9/v1", &["gone"]));
    })
    .await
}

fn no_leak(r: &crate::support::Resp) {
    let t = r.text();
    assert!(
        !t.contains("10.1.2.3") && !t.contains("127.0.0.1") && !t.contains("<html") && !t.contains("http://"),
        "leak: {t}"
    );
    assert!(r.json()["error"]["message"].as_str().unwrap().chars().count() <= 400);
}

#[actix_web::test]
async fn broken_upstream_answers_become_502() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let t = &app.admin_token;
    let plans = [
        Plan { status: 502, bad_body: Some(BadBody::Html), ..Plan::default() },
        Plan { status: 500, bad_body: Some(BadBody::Text), ..Plan::default() },
        Plan { status: 500, ..Plan::default() },
        Plan {
            status: 503,
            error_body: Some(format!(
                r#"{{"error":{{"message":"{} see https://internal.example/x key sk-abcdefabcdefabcdefabcdef"}}}}"#,
                "long ".repeat(100)
            )),
            ..Plan::default()
        },
        Plan { bad_body: Some(BadBody::Html), ..Plan::default() },
        Plan { bad_body: Some(BadBody::Truncated), ..Plan::default() },
        Plan { bad_body: Some(BadBody::WrongShape), ..Plan::default() },
        Plan { bad_body: Some(BadBody::Empty), ..Plan::default() },
        Plan { status: 401, ..Plan::default() },
    ];
    for plan in plans {
        mock.plan(plan.clone());
        let r = post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await;
        r.assert_error(502, "upstream_error");
        no_leak(&r);
        assert!(!r.text().contains("sk-abcdef"), "{}", r.text());
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!(rec.status, 502, "{plan:?}");
        assert_eq!(rec.outcome, "upstream_error");
    }
    // A stream request answered without an event stream.
    mock.plan(Plan { bad_body: Some(BadBody::WrongContentType), ..Plan::default() });
    let r = post_json(
        &app.url("/v1/chat/completions"),
        t,
        &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    r.assert_error(502, "upstream_error");
    no_leak(&r);
    app.stop().await;
}

#[actix_web::test]
async fn status_timeout_connect_and_capacity_rows() {
    let mock = MockUpstream::start(2);
    let app = app(&mock).await;
    let t = &app.admin_token;
    mock.plan(Plan { status: 429, retry_after: Some(7), ..Plan::default() });
    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await;
    r.assert_error(429, "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("7"));

    mock.plan(Plan {
        status: 400,
        error_body: Some(r#"{"error":{"message":"max_tokens is too large for this model"}}"#.into()),
        ..Plan::default()
    });
    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await;
    let v = r.assert_error(400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_tokens is too large"));

    mock.plan(Plan { delay_headers_ms: 3_000, ..Plan::default() });
    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await;
    r.assert_error(504, "upstream_timeout");
    assert_eq!(app.usage(r.header("x-request-id").unwrap()).await.outcome, "upstream_timeout");

    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("gone", "hi")).await;
    r.assert_error(502, "upstream_error");
    no_leak(&r);

    // max_concurrency = 1: a second request while one is in flight gets 503.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    mock.plan(Plan { chunks: 3, chunk_interval_ms: 400, ..Plan::default() });
    let client = awc::Client::builder().disable_timeout().finish();
    let first = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(t)
        .send_json(&json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await;
    r.assert_error(503, "no_available_upstream");
    assert!(r.header("retry-after").is_some());
    drop(first);
    let mut ok = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if post_json(&app.url("/v1/chat/completions"), t, &chat("qwen", "hi")).await.status == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "the slot was not released");
    app.stop().await;
}

#[actix_web::test]
async fn broken_streams_end_with_one_error_event() {
    let mock = MockUpstream::start(1);
    let app = app(&mock).await;
    let t = &app.admin_token;
    let body = json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    for (plan, outcome, relayed) in [
        (Plan { chunks: 6, cut_after: Some(3), ..Plan::default() }, "partial", 3),
        (Plan { chunks: 6, hang_after: Some(2), ..Plan::default() }, "upstream_timeout", 2),
        (Plan { chunks: 2, bad_body: Some(BadBody::SseInvalidJson), ..Plan::default() }, "invalid_response", 0),
    ] {
        mock.plan(plan);
        let r = post_json(&app.url("/v1/chat/completions"), t, &body).await;
        assert_eq!(r.status, 200);
        let events = sse_data(&r.body);
        assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
        let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{events:?}");
        assert_eq!(events.len(), relayed + 1, "{events:?}");
        assert!(!r.text().contains("not json"));
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!(rec.outcome, outcome);
        assert_eq!(rec.completion_tokens, i64::try_from(relayed).unwrap());
        assert!(rec.partial, "a cut stream's record is partial");
        assert_eq!(rec.usage_source, if relayed > 0 { "counted" } else { "estimated" });
    }
    app.stop().await;
}

/// Every legal framing of an upstream's body arrives whole, JSON and streams alike — the body
/// that ends when the upstream closes the connection included (no `Content-Length`, no chunked
/// encoding, `Connection: close`, or HTTP/1.0), which the gateway once lost entirely.
#[actix_web::test]
async fn every_body_framing_arrives_whole() {
    use crate::support::framed_upstream::{FramedUpstream, Framing, TEXT, events, whole_body};
    for framing in [Framing::Length, Framing::Chunked, Framing::Close, Framing::Http10] {
        let up = FramedUpstream::start(framing).await;
        let base = up.base();
        let app = TestApp::spawn(|s| s.providers.push(openai_provider("framed", &base, &["m"]))).await;
        let t = &app.admin_token;
        let r = post_json(&app.url("/v1/chat/completions"), t, &chat("m", "hi")).await;
        assert_eq!(r.status, 200, "{framing:?}: {}", r.text());
        assert_eq!(r.text(), whole_body("m"), "{framing:?}: the JSON body changed on the way");
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!((rec.outcome.as_str(), rec.completion_tokens, rec.usage_source.as_str()), ("ok", 5, "reported"));

        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]});
        let r = post_json(&app.url("/v1/chat/completions"), t, &body).await;
        assert_eq!(r.status, 200, "{framing:?}");
        assert_eq!(r.text(), events("m").concat(), "{framing:?}: the stream changed on the way");
        let text: String = sse_data(r.text().as_bytes())
            .iter()
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, TEXT, "{framing:?}");
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!((rec.outcome.as_str(), rec.partial, rec.completion_tokens), ("ok", false, 5), "{framing:?}");
        app.stop().await;
    }
}
