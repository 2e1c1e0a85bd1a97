//! Every client mistake gets a clear error in the route's dialect, changes nothing and reaches no upstream
//! (B1 malformed JSON, B2 wrong types, B3 huge bodies, B5 invalid text, B7 namespace names).

use std::io::{Read as _, Write as _};

use serde_json::json;

use crate::support::mock_upstream::MockUpstream;
use crate::support::{TestApp, chat, openai_provider, post_json, send};

async fn app(mock: &MockUpstream, max_body: usize) -> TestApp {
    let base = mock.base();
    TestApp::spawn(|s| {
        s.server.max_body_bytes = max_body;
        let mut p = openai_provider("local", &base, &["qwen", "tiny"]);
        p.models[1].context_size = Some(50);
        p.models[1].max_request_tokens = Some(20);
        s.providers.push(p);
    })
    .await
}

#[actix_web::test]
async fn malformed_bodies_are_400_and_never_reach_the_upstream() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    let auth = format!("Bearer {}", app.admin_token);
    let ok = r#"{"model":"qwen","messages":[{"role":"user","content":"hi"}]}"#;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        ok.as_bytes()[..ok.len() - 3].to_vec(),
        format!("{ok} trailing").into_bytes(),
        format!("{ok}{ok}").into_bytes(),
        b"{'model':'qwen'}".to_vec(),
        br#"{"model":"qwen","messages":[],"temperature":NaN}"#.to_vec(),
        br#"{"model":"qwen","temperature":Infinity}"#.to_vec(),
        br#"{"model":"qwen","model":"qwen","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
        br#"{"model":"qwen","messages":[{"role":"user","role":"user","content":"x"}]}"#.to_vec(),
        [b"\xef\xbb\xbf".as_slice(), ok.as_bytes()].concat(),
        format!("// comment\n{ok}").into_bytes(),
        b"[1,2,3]".to_vec(),
        b"42".to_vec(),
        br#""just a string""#.to_vec(),
        b"null".to_vec(),
        br#"{"model":"qwen","messages":[{"role":"user","content":"\ud800"}]}"#.to_vec(),
        b"{\"model\":\"qwen\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(),
        b"{\"model\":\"qwen\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}".to_vec(),
        format!("{{\"model\":\"qwen\",\"messages\":{}{}}}", "[".repeat(1000), "]".repeat(1000)).into_bytes(),
    ];
    bodies.push(vec![0u8; 64]);
    let mut count = 0;
    // Every route answers in its dialect: Anthropic's shape on Messages, OpenAI's elsewhere.
    let paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"];
    let is_400 = |path: &str, r: &crate::support::Resp| {
        if path == "/v1/messages" {
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            let v = r.json();
            assert_eq!(
                (v["type"].as_str(), v["error"]["type"].as_str()),
                (Some("error"), Some("invalid_request_error")),
                "{v}"
            );
            assert!(r.header("x-request-id").is_some());
        } else {
            let v = r.assert_error(400, "invalid_request");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
    };
    for path in paths {
        for body in &bodies {
            let r = send(
                "POST",
                &app.url(path),
                &[("authorization", &auth), ("content-type", "application/json")],
                body.clone(),
            )
            .await;
            is_400(path, &r);
            count += 1;
        }
        // Wrong or missing content type, compressed garbage.
        for headers in [
            vec![("authorization", auth.as_str())],
            vec![("authorization", auth.as_str()), ("content-type", "text/plain")],
            vec![("authorization", auth.as_str()), ("content-type", "application/x-www-form-urlencoded")],
            vec![("authorization", auth.as_str()), ("content-type", "application/json"), ("content-encoding", "gzip")],
        ] {
            is_400(path, &send("POST", &app.url(path), &headers, ok).await);
            count += 1;
        }
    }
    assert_eq!(count, paths.len() * (bodies.len() + 4));
    assert_eq!(mock.calls(), 0, "a malformed request reached the upstream");
    app.stop().await;
}

#[actix_web::test]
async fn wrong_types_name_the_parameter() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    let t = &app.admin_token;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = vec![
        ("/v1/chat/completions", json!({"messages": msgs}), "model", "missing_required_parameter"),
        ("/v1/chat/completions", json!({"model": "qwen"}), "messages", "missing_required_parameter"),
        ("/v1/chat/completions", json!({"model": 5, "messages": msgs}), "model", "invalid_request"),
        ("/v1/chat/completions", json!({"model": "qwen", "messages": "hi"}), "messages", "invalid_request"),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "max_tokens": -1}),
            "max_tokens",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "max_tokens": 1e20}),
            "max_tokens",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "max_tokens": "10"}),
            "max_tokens",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "temperature": "hot"}),
            "temperature",
            "invalid_request",
        ),
        ("/v1/chat/completions", json!({"model": "qwen", "messages": msgs, "n": 1000}), "n", "invalid_request"),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "stream": "yes"}),
            "stream",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "tools": [{"type": "function"}]}),
            "tools[0].function",
            "missing_required_parameter",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "tools": {"a": 1}}),
            "tools",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "api_base": "http://127.0.0.1:1"}),
            "api_base",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "base_url": "http://evil"}),
            "base_url",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "api_key": "sk-x"}),
            "api_key",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "provider_id": "other"}),
            "provider_id",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "extra_body": {"api_base": "http://evil"}}),
            "extra_body.api_base",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen", "messages": msgs, "metadata": {"base_url": "http://evil"}}),
            "metadata.base_url",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "word ".repeat(100)}]}),
            "messages",
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": msgs, "max_tokens": 51}),
            "max_tokens",
            "invalid_request",
        ),
        ("/v1/completions", json!({"model": "qwen"}), "prompt", "missing_required_parameter"),
        ("/v1/completions", json!({"model": "qwen", "prompt": {"a": 1}}), "prompt", "invalid_request"),
        ("/v1/embeddings", json!({"model": "qwen"}), "input", "missing_required_parameter"),
        ("/v1/embeddings", json!({"model": "qwen", "input": [{"x": 1}]}), "input[0]", "invalid_request"),
        (
            "/v1/embeddings",
            json!({"model": "qwen", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
            "invalid_request",
        ),
    ];
    for (path, body, param, code) in cases {
        let r = post_json(&app.url(path), t, &body).await;
        let v = r.assert_error(400, code);
        assert_eq!(v["error"]["param"], param, "{path} {body}");
    }
    assert_eq!(mock.calls(), 0, "a rejected request reached the upstream");
    app.stop().await;
}

#[actix_web::test]
async fn body_size_limit_is_413_at_limit_plus_one() {
    let mock = MockUpstream::start(1);
    let limit = 64 * 1024;
    let app = app(&mock, limit).await;
    let auth = format!("Bearer {}", app.admin_token);
    let build = |size: usize| {
        let head = r#"{"model":"qwen","messages":[{"role":"user","content":""#;
        let tail = r#""}]}"#;
        let pad = size - head.len() - tail.len();
        format!("{head}{}{tail}", "a".repeat(pad))
    };
    let at = build(limit);
    assert_eq!(at.len(), limit);
    let r = send(
        "POST",
        &app.url("/v1/chat/completions"),
        &[("authorization", &auth), ("content-type", "application/json")],
        at,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let over = build(limit + 1);
    send(
        "POST",
        &app.url("/v1/chat/completions"),
        &[("authorization", &auth), ("content-type", "application/json")],
        over.clone(),
    )
    .await
    .assert_error(413, "request_too_large");

    // Chunked, without Content-Length, over the limit.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut req = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").into_bytes();
    for part in over.as_bytes().chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"), "{text}");
    assert_eq!(mock.calls(), 1);
    app.stop().await;
}

#[actix_web::test]
async fn nul_and_combining_characters_pass_unchanged() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    let weird = format!("a\u{0000}b{}", "e\u{0301}".repeat(20_000));
    let r = post_json(&app.url("/v1/chat/completions"), &app.admin_token, &chat("qwen", &weird)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.received()[0].json()["messages"][0]["content"], weird);
    app.stop().await;
}

#[actix_web::test]
async fn crafted_usernames_never_reach_another_namespace() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    let alice = app.user_with_token("alice").await;
    app.user_with_token("bob").await;
    let names = [
        "..",
        ".",
        "%2e%2e",
        "%252e%252e",
        "bob%2F..",
        "..%2Fbob",
        "%2e%2e%2fbob",
        "bob%00",
        "bob%20",
        "bob.",
        "bob;",
        "BOB",
        "Bob",
        "%EF%BD%82ob",
        "b%C3%B6b",
        "%62%6f%62",
        "bob%0d%0a",
        "a%5cb",
        &"b".repeat(256),
        "alice%2F..%2Fbob",
        "*",
        "bob%3B",
    ];
    for name in names {
        for (method, path) in [("POST", "chat/completions"), ("GET", "models")] {
            let url = app.url(&format!("/api/u/{name}/{path}"));
            let auth = format!("Bearer {alice}");
            let r = send(
                method,
                &url,
                &[("authorization", &auth), ("content-type", "application/json")],
                chat("qwen", "hi").to_string(),
            )
            .await;
            assert!(matches!(r.status, 400 | 403 | 404), "{name}: {} {}", r.status, r.text());
            assert!(r.json()["error"].is_object());
        }
    }
    assert_eq!(mock.calls(), 0);
    app.stop().await;
}

#[actix_web::test]
async fn framework_rejections_use_the_same_shape() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    send("GET", &app.url("/no/such/path"), &[], "").await.assert_error(404, "not_found");
    let r = send("GET", &app.url("/v1/chat/completions"), &[], "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = send("DELETE", &app.url("/v1/models"), &[], "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    send("PUT", &app.url("/api/u/alice/chat/completions"), &[], "").await.assert_error(405, "method_not_allowed");
    assert_eq!(send("GET", &app.url("/health"), &[], "").await.status, 200);
    let ready = send("GET", &app.url("/ready"), &[], "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["database"], "ok");
    app.stop().await;
}

/// The context window is judged by the tokenizer, not by characters ÷ 4: 60 digits are 20 tokens
/// (three per token), 105 characters of a long repeated word are far fewer.
#[actix_web::test]
async fn context_window_is_judged_by_the_tokenizer() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    // "tiny" accepts at most 20 prompt tokens; a message adds 4 of framing and a separator.
    let digits = "1234567890".repeat(6);
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &app.admin_token,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": digits}]}),
    )
    .await;
    let v = r.assert_error(400, "invalid_request");
    assert_eq!(v["error"]["param"], "messages");
    assert!(v["error"]["message"].as_str().unwrap().contains("25 prompt tokens"), "{v}");
    assert_eq!(mock.calls(), 0);
    let words = "internationalization ".repeat(5);
    let r = post_json(
        &app.url("/v1/chat/completions"),
        &app.admin_token,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": words}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.calls(), 1);
    app.stop().await;
}

/// B2 on the Messages and Responses routes: each mistake is a 400 in the route's dialect that
/// names the field as the client wrote it (Messages: leading the message; Responses: `param`),
/// and reaches no upstream.
#[actix_web::test]
async fn wrong_types_on_messages_and_responses_name_the_clients_field() {
    let mock = MockUpstream::start(1);
    let app = app(&mock, 1 << 20).await;
    let t = &app.admin_token;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let messages = vec![
        (json!({"messages": msgs, "max_tokens": 5}), "model"),
        (json!({"model": "qwen", "max_tokens": 5}), "messages"),
        (json!({"model": "qwen", "max_tokens": 5, "messages": "hi"}), "messages"),
        (json!({"model": "qwen", "max_tokens": -1, "messages": msgs}), "max_tokens"),
        (json!({"model": "qwen", "max_tokens": "10", "messages": msgs}), "max_tokens"),
        (json!({"model": "qwen", "max_tokens": 5, "temperature": "hot", "messages": msgs}), "temperature"),
        (json!({"model": "qwen", "max_tokens": 5, "stream": "yes", "messages": msgs}), "stream"),
        (json!({"model": "qwen", "max_tokens": 5, "messages": msgs, "api_base": "http://evil"}), "api_base"),
        (json!({"model": "qwen", "max_tokens": 5, "messages": msgs, "system": 5}), "system"),
        (json!({"model": "qwen", "max_tokens": 5, "messages": msgs, "tools": [{"input_schema": {}}]}), "tools[0]"),
        (
            json!({"model": "qwen", "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"model": "tiny", "max_tokens": 51, "messages": msgs}), "max_tokens"),
        (
            json!({"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "word ".repeat(100)}]}),
            "messages",
        ),
    ];
    for (body, field) in messages {
        let r = post_json(&app.url("/v1/messages"), t, &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{field}: ")), "{body}: {message}");
    }
    let responses = vec![
        (json!({"input": "hi"}), "model", "missing_required_parameter"),
        (json!({"model": "qwen"}), "input", "invalid_request"),
        (json!({"model": "qwen", "input": "hi", "max_output_tokens": -1}), "max_output_tokens", "invalid_request"),
        (json!({"model": "qwen", "input": "hi", "temperature": "hot"}), "temperature", "invalid_request"),
        (json!({"model": "qwen", "input": "hi", "base_url": "http://evil"}), "base_url", "invalid_request"),
        (
            json!({"model": "qwen", "input": [{"type": "message", "role": "wizard", "content": "x"}]}),
            "input[0].role",
            "invalid_request",
        ),
        (json!({"model": "qwen", "input": "hi", "tools": [{"type": "function"}]}), "tools[0]", "invalid_request"),
        (json!({"model": "tiny", "input": "hi", "max_output_tokens": 51}), "max_output_tokens", "invalid_request"),
        (json!({"model": "tiny", "input": "word ".repeat(100)}), "input", "invalid_request"),
    ];
    for (body, param, code) in responses {
        let r = post_json(&app.url("/v1/responses"), t, &body).await;
        let v = r.assert_error(400, code);
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    assert_eq!(mock.calls(), 0, "a rejected request reached the upstream");
    app.stop().await;
}
