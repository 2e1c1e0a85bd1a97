//! The data plane's routes, passthrough, streaming and usage records.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use switchyard::config::Secret;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{TestApp, chat, get, openai_provider, post_json, send, service_url, sse_data};

async fn app_with(mock: &MockUpstream) -> TestApp {
    let base = mock.base();
    TestApp::spawn(|s| {
        // A client that went away is noticed on the next write: keep writes frequent.
        s.upstream.keepalive_interval_ms = 200;
        let mut p = openai_provider("local", &base, &["qwen", "shared-name"]);
        p.api_key = Some(Secret::new("$SWITCHYARD_TEST_PROVIDER_KEY"));
        s.providers.push(p);
        s.providers.push(openai_provider("other", &base, &["shared-name", "solo"]));
        s.providers.push(switchyard::config::ProviderConfig {
            kind: switchyard::types::ProviderKind::Mock,
            endpoint: None,
            ..openai_provider("mock", "", &["mock-chat", "mock-embed"])
        });
    })
    .await
}

#[actix_web::test]
async fn mock_provider_serves_every_operation() {
    let mock = MockUpstream::start(1);
    let app = app_with(&mock).await;
    let t = &app.admin_token;
    let r = post_json(&app.url("/v1/chat/completions"), t, &chat("provider/mock/mock-chat", "hello")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("provider/mock/mock-chat"));
    assert_eq!(r.header("x-switchyard-provider"), Some("mock"));
    assert_eq!(r.header("x-switchyard-model"), Some("mock-chat"));
    assert_eq!(r.header("x-switchyard-reason"), Some("direct"));
    let v = r.json();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("hello"));
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.provider.as_deref(), Some("mock"));
    assert_eq!(rec.completion_tokens, v["usage"]["completion_tokens"].as_i64().unwrap());
    assert!(!rec.estimated);

    let r = post_json(&app.url("/v1/completions"), t, &json!({"model": "mock-chat", "prompt": "once upon"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["text"].is_string());
    let r = post_json(&app.url("/v1/embeddings"), t, &json!({"model": "mock-embed", "input": ["a", "b"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);

    let r = post_json(
        &app.url("/v1/chat/completions"),
        t,
        &json!({"model": "mock-chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| e == "[DONE]"
        || !serde_json::from_str::<serde_json::Value>(e).unwrap()["choices"].as_array().unwrap().is_empty()));
    assert_eq!(mock.calls(), 0);

    // Prometheus metrics: requests by route and status, latency histograms, tokens, queue depth.
    let m = crate::support::send("GET", &app.url("/metrics"), &[], "").await.text();
    for needle in [
        r#"switchyard_requests_total{provider="mock",route="provider/mock/mock-chat",status="200"}"#,
        r#"switchyard_request_duration_seconds_bucket{route="provider/mock/mock-chat""#,
        r#"switchyard_tokens_total{kind="completion",model="mock-chat",provider="mock"}"#,
        "switchyard_usage_queue_depth",
        "switchyard_requests_in_flight 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics:\n{m}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn openai_passthrough_rewrites_only_the_model() {
    let mock = MockUpstream::start(1);
    let app = app_with(&mock).await;
    let body = json!({"model": "provider/local/qwen", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "top_k": 40, "vendor_field": {"x": [1, 2]}});
    let auth = format!("Bearer {}", app.admin_token);
    let r = send(
        "POST",
        &app.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("cookie", "session=secret"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-api-key", "sy-client-secret"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = include_str!("../fixtures/openai/chat.json").replace("MODEL", "qwen");
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        expected,
        "bytes were not relayed unchanged"
    );
    assert_eq!(r.body, expected.to_string().as_bytes(), "the upstream's bytes must be relayed as they are");
    let got = &mock.received()[0];
    assert_eq!(got.path, "/v1/chat/completions");
    let mut sent = body.clone();
    sent["model"] = json!("qwen");
    assert_eq!(got.json(), sent);
    assert_eq!(got.body, serde_json::to_vec(&sent).unwrap(), "field order or content changed");
    let key = service_url("SWITCHYARD_TEST_PROVIDER_KEY");
    assert_eq!(got.header("authorization"), Some(format!("Bearer {key}").as_str()));
    for h in ["cookie", "x-hop", "x-forwarded-for", "x-api-key"] {
        assert!(got.header(h).is_none(), "{h} reached the upstream");
    }
    assert!(!got.headers.iter().any(|(_, v)| v.contains(&app.admin_token)), "the client's token reached the upstream");
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(got.header("x-request-id"), Some(rid));
    let rec = app.usage(rid).await;
    assert_eq!((rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens), (11, 6, 4));
    assert_eq!(rec.route, "provider/local/qwen");
    assert_eq!(rec.model.as_deref(), Some("qwen"));
    assert!(!rec.estimated);
    assert!(rec.ttft_ms.is_some());
    app.stop().await;
}

#[actix_web::test]
async fn streams_relay_events_and_read_usage() {
    let mock = MockUpstream::start(1);
    let app = app_with(&mock).await;
    let t = &app.admin_token;
    mock.plan(Plan { chunks: 7, ..Plan::default() });
    let r = post_json(
        &app.url("/v1/chat/completions"),
        t,
        &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    let events = sse_data(&r.body);
    assert_eq!(
        events.len(),
        7 + 2,
        "7 tokens, the stop chunk and [DONE]; the injected usage chunk is removed: {events:?}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
    let got = mock.received().pop().unwrap().json();
    assert_eq!(got["stream_options"]["include_usage"], true, "the gateway asks for usage");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!((rec.prompt_tokens, rec.completion_tokens), (9, 7));
    assert!(rec.stream && !rec.estimated && !rec.partial);
    assert_eq!(rec.usage_source, "reported");
    assert_eq!(rec.outcome, "ok");

    // A client that asked for usage gets the usage chunk.
    let r = post_json(&app.url("/v1/chat/completions"), t, &json!({"model": "qwen", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]})).await;
    let events = sse_data(&r.body);
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    // No usage from the upstream: counted from the relayed chunks and marked estimated.
    mock.plan(Plan { chunks: 4, omit_usage: true, ..Plan::default() });
    let r = post_json(
        &app.url("/v1/chat/completions"),
        t,
        &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!(rec.completion_tokens, 4, "counted with the tokenizer");
    assert!(rec.estimated && !rec.partial);
    assert_eq!(rec.usage_source, "counted");
    app.stop().await;
}

#[actix_web::test]
async fn chunks_arrive_before_the_stream_ends() {
    let mock = MockUpstream::start(1);
    let app = app_with(&mock).await;
    // The upstream sends two chunks and then says nothing for an hour.
    mock.plan(Plan { chunks: 5, hang_after: Some(2), ..Plan::default() });
    let client = awc::Client::builder().disable_timeout().finish();
    let mut res = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.admin_token)
        .send_json(&json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while sse_data(&seen).len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.next())
            .await
            .expect("chunks were held back")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&seen).contains(" one"));
    // Dropping the response is a client disconnect: one record, 499, with what was relayed.
    let rid = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    drop(res);
    let rec = app.usage(&rid).await;
    assert_eq!(rec.status, 499);
    assert_eq!(rec.outcome, "client_disconnected");
    assert_eq!(rec.completion_tokens, 2);
    assert!(rec.estimated && rec.partial);
    assert_eq!(rec.usage_source, "counted");
    app.stop().await;
}

#[actix_web::test]
async fn names_namespaces_and_listing() {
    let mock = MockUpstream::start(1);
    let app = app_with(&mock).await;
    let alice = app.user_with_token("alice").await;
    let bob = app.user_with_token("bob").await;
    // Users created through another connection reach the node's catalog by its poll (200 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r = post_json(&app.url("/v1/chat/completions"), &alice, &chat("solo", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-route"), Some("provider/other/solo"));
    let r = post_json(&app.url("/v1/chat/completions"), &alice, &chat("shared-name", "hi")).await;
    let v = r.assert_error(400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("provider/local/shared-name"));
    post_json(&app.url("/v1/chat/completions"), &alice, &chat("nope", "hi")).await.assert_error(404, "model_not_found");
    post_json(&app.url("/v1/chat/completions"), &alice, &chat("provider/ghost/qwen", "hi"))
        .await
        .assert_error(404, "model_not_found");

    for path in ["/api/user/chat/completions", "/api/u/alice/chat/completions", "/api/local/chat/completions"] {
        let r = post_json(&app.url(path), &alice, &chat(if path.contains("/local/") { "qwen" } else { "solo" }, "hi"))
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/api/user/completions", "/api/u/alice/completions"] {
        let r = post_json(&app.url(path), &alice, &json!({"model": "mock-chat", "prompt": "hi"})).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/api/user/embeddings", "/api/u/alice/embeddings", "/v1/embeddings"] {
        let r = post_json(&app.url(path), &alice, &json!({"model": "mock-embed", "input": "hi"})).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    post_json(&app.url("/api/u/bob/chat/completions"), &alice, &chat("solo", "hi"))
        .await
        .assert_error(403, "permission_denied");
    let r = post_json(&app.url("/api/u/bob/chat/completions"), &app.admin_token, &chat("solo", "hi")).await;
    assert_eq!(r.status, 200, "admins act on any namespace: {}", r.text());
    post_json(&app.url("/api/u/ghost/chat/completions"), &app.admin_token, &chat("solo", "hi"))
        .await
        .assert_error(404, "not_found");
    post_json(&app.url("/api/ghost/chat/completions"), &alice, &chat("qwen", "hi"))
        .await
        .assert_error(404, "not_found");
    post_json(&app.url("/api/local/chat/completions"), &alice, &chat("solo", "hi"))
        .await
        .assert_error(404, "model_not_found");
    let r = post_json(&app.url("/api/u/bob/embeddings"), &bob, &json!({"model": "mock-embed", "input": "x"})).await;
    assert_eq!(r.status, 200, "{}", r.text());

    for path in ["/v1/models", "/api/v1/models", "/api/user/models", "/api/u/alice/models"] {
        let r = get(&app.url(path), &alice).await;
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert_eq!(v["object"], "list");
        let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&"provider/local/qwen") && ids.contains(&"provider/mock/mock-chat"), "{ids:?}");
    }
    get(&app.url("/api/u/bob/models"), &alice).await.assert_error(403, "permission_denied");

    // A scoped token sees and uses only its routes.
    let c = app.control().await;
    let (scoped, _) = c
        .create_token(switchyard::control::NewTokenRequest {
            routes: Some(vec!["provider/mock/*".into()]),
            ..switchyard::control::NewTokenRequest::for_user("alice")
        })
        .await
        .unwrap();
    let ids = get(&app.url("/v1/models"), &scoped).await.json()["data"].as_array().unwrap().len();
    assert_eq!(ids, 2);
    post_json(&app.url("/v1/chat/completions"), &scoped, &chat("qwen", "hi"))
        .await
        .assert_error(403, "permission_denied");
    assert_eq!(post_json(&app.url("/v1/chat/completions"), &scoped, &chat("mock-chat", "hi")).await.status, 200);
    app.stop().await;
}

/// An Azure OpenAI provider: the model names the deployment in the path, the version goes in the
/// query, the key in `api-key` (never as a bearer token); answers are OpenAI's, relayed as such.
#[actix_web::test]
async fn azure_deployments_get_their_path_version_and_key_header() {
    let mock = MockUpstream::start(1);
    let root = mock.base().trim_end_matches("/v1").to_owned();
    let app = TestApp::spawn(|s| {
        let mut p = openai_provider("az", &root, &["gpt4o-prod"]);
        p.kind = switchyard::types::ProviderKind::Azure;
        p.api_version = Some("2024-10-21".into());
        p.api_key = Some(Secret::new("$SWITCHYARD_TEST_PROVIDER_KEY"));
        s.providers.push(p);
    })
    .await;
    let url = app.url("/v1/chat/completions");
    let r = post_json(&url, &app.admin_token, &chat("provider/az/gpt4o-prod", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-provider"), Some("az"));
    let got = &mock.received()[0];
    assert_eq!(got.path, "/openai/deployments/gpt4o-prod/chat/completions");
    assert_eq!(got.query, "api-version=2024-10-21");
    let key = service_url("SWITCHYARD_TEST_PROVIDER_KEY");
    assert_eq!(got.header("api-key"), Some(key.as_str()));
    assert_eq!(got.header("authorization"), None, "the key goes in api-key only");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert_eq!((rec.prompt_tokens, rec.completion_tokens), (11, 6));
    // Streams and embeddings take the same addresses.
    let mut body = chat("provider/az/gpt4o-prod", "hi");
    body["stream"] = json!(true);
    let r = post_json(&url, &app.admin_token, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!sse_data(&r.body).is_empty());
    assert_eq!(mock.received()[1].path, "/openai/deployments/gpt4o-prod/chat/completions");
    let r = post_json(
        &app.url("/v1/embeddings"),
        &app.admin_token,
        &json!({"model": "provider/az/gpt4o-prod", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.received()[2].path, "/openai/deployments/gpt4o-prod/embeddings");
    app.stop().await;
}
