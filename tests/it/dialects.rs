//! Every client dialect (OpenAI Chat, Anthropic Messages, OpenAI Responses) to every upstream
//! dialect (OpenAI, Anthropic, Gemini), streaming and not, with and without tools, against an
//! upstream that speaks each dialect's wire format and frames its bodies every legal way; the
//! Anthropic routes' errors, `x-api-key`, `count_tokens` and the per-user prefix.

use serde_json::{Value, json};
use switchyard::config::Secret;
use switchyard::types::ProviderKind;

use crate::support::dialect_upstream::{ARGS, Behaviour, DialectUpstream, Framing, TEXT, USAGE};
use crate::support::{TestApp, openai_provider, send, service_url};

const KINDS: [(&str, ProviderKind); 3] =
    [("oa", ProviderKind::Openai), ("an", ProviderKind::Anthropic), ("ge", ProviderKind::Gemini)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Chat,
    Messages,
    Responses,
}

const CLIENTS: [Client; 3] = [Client::Chat, Client::Messages, Client::Responses];

/// What an answer said, in no dialect's terms.
#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Call(String, Value),
}

async fn app(up: &DialectUpstream) -> TestApp {
    let endpoints: Vec<(String, ProviderKind, String)> =
        KINDS.iter().map(|(id, kind)| ((*id).to_owned(), *kind, up.endpoint(kind_name(*kind)))).collect();
    let responses_endpoint = up.endpoint("openai");
    TestApp::spawn(move |s| {
        for (id, kind, endpoint) in endpoints {
            let mut p = openai_provider(&id, &endpoint, &["m-1"]);
            p.kind = kind;
            p.api_key = Some(Secret::new("$SWITCHYARD_TEST_PROVIDER_KEY"));
            s.providers.push(p);
        }
        // Rotations mixing dialects: Chat first, then Anthropic; Chat and Gemini only.
        let entry = |id: &str| switchyard::config::RotationEntryConfig {
            provider_id: id.into(),
            model: "m-1".into(),
            weight: 1.0,
            error_cooldown: None,
        };
        s.rotations.push(crate::support::rotation("mixed", "priority", vec![entry("oa"), entry("an")]));
        s.rotations.push(crate::support::rotation("no-anthropic", "priority", vec![entry("oa"), entry("ge")]));
        // An OpenAI upstream that serves the Responses API too.
        let mut or = openai_provider("or", &responses_endpoint, &["m-1"]);
        or.responses_api = true;
        or.api_key = Some(Secret::new("$SWITCHYARD_TEST_PROVIDER_KEY"));
        s.providers.push(or);
        s.prices.push(switchyard::config::PriceConfig {
            model: "m-1".into(),
            provider: None,
            input_per_million: 1_000.0,
            output_per_million: 2_000.0,
            cached_input_per_million: Some(100.0),
            cache_write_per_million: Some(1_250.0),
            aliases: vec![],
        });
    })
    .await
}

fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        _ => "openai",
    }
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

fn request(client: Client, model: &str, stream: bool, tools: bool) -> (&'static str, Value) {
    let ask = "What is the weather in Paris?";
    let (path, mut body) = match client {
        Client::Chat => (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ask}]}),
        ),
        Client::Messages => (
            "/v1/messages",
            json!({"model": model, "max_tokens": 256, "system": "Be brief.", "messages": [{"role": "user", "content": ask}]}),
        ),
        Client::Responses => ("/v1/responses", json!({"model": model, "instructions": "Be brief.", "input": ask})),
    };
    if stream {
        body["stream"] = json!(true);
    }
    if tools {
        body["tools"] = match client {
            Client::Chat => {
                json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "parameters": schema()}}])
            }
            Client::Messages => {
                json!([{"name": "get_weather", "description": "Weather of a city.", "input_schema": schema()}])
            }
            Client::Responses => {
                json!([{"type": "function", "name": "get_weather", "description": "Weather of a city.", "parameters": schema()}])
            }
        };
    }
    (path, body)
}

/// Each SSE event of a body: its name (if any) and its data as JSON (`[DONE]` as a string).
fn events(body: &[u8]) -> Vec<(Option<String>, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            let name = ev.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
            let data: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if data.is_empty() {
                return None;
            }
            let data = data.join("\n");
            Some((name, serde_json::from_str(&data).unwrap_or(Value::String(data))))
        })
        .collect()
}

fn call(name: &str, args: &str) -> Got {
    Got::Call(name.to_owned(), serde_json::from_str(args).unwrap_or(Value::Null))
}

/// Reads an answer in the client's dialect; panics on anything off its wire format.
fn read(client: Client, stream: bool, body: &[u8]) -> Got {
    let text = String::from_utf8_lossy(body);
    if !stream {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {text}"));
        return match client {
            Client::Chat => {
                let m = &v["choices"][0]["message"];
                match m["tool_calls"].get(0) {
                    Some(c) => {
                        call(c["function"]["name"].as_str().unwrap(), c["function"]["arguments"].as_str().unwrap())
                    }
                    None => Got::Text(m["content"].as_str().unwrap_or_else(|| panic!("{text}")).to_owned()),
                }
            }
            Client::Messages => {
                assert_eq!(v["type"], "message", "{text}");
                let b = &v["content"][0];
                match b["type"].as_str() {
                    Some("tool_use") => Got::Call(b["name"].as_str().unwrap().to_owned(), b["input"].clone()),
                    _ => Got::Text(b["text"].as_str().unwrap_or_else(|| panic!("{text}")).to_owned()),
                }
            }
            Client::Responses => {
                assert_eq!(
                    (v["object"].as_str(), v["status"].as_str()),
                    (Some("response"), Some("completed")),
                    "{text}"
                );
                let item = v["output"].as_array().unwrap().last().unwrap();
                match item["type"].as_str() {
                    Some("function_call") => call(item["name"].as_str().unwrap(), item["arguments"].as_str().unwrap()),
                    _ => Got::Text(item["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{text}")).to_owned()),
                }
            }
        };
    }
    let evs = events(body);
    let (mut out, mut name, mut args) = (String::new(), None::<String>, String::new());
    match client {
        Client::Chat => {
            assert_eq!(evs.last().map(|e| &e.1), Some(&json!("[DONE]")), "{text}");
            for (_, e) in &evs {
                let d = &e["choices"][0]["delta"];
                out.push_str(d["content"].as_str().unwrap_or_default());
                if let Some(c) = d["tool_calls"].get(0) {
                    if let Some(n) = c["function"]["name"].as_str() {
                        name = Some(n.to_owned());
                    }
                    args.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
                }
            }
        }
        Client::Messages => {
            assert_eq!(evs.last().and_then(|e| e.0.as_deref()), Some("message_stop"), "{text}");
            assert_eq!(evs.first().and_then(|e| e.0.as_deref()), Some("message_start"), "{text}");
            for (ev, e) in &evs {
                assert_eq!(ev.as_deref(), e["type"].as_str(), "event names match types: {text}");
                if let Some(n) = e["content_block"]["name"].as_str() {
                    name = Some(n.to_owned());
                }
                out.push_str(e["delta"]["text"].as_str().unwrap_or_default());
                args.push_str(e["delta"]["partial_json"].as_str().unwrap_or_default());
            }
        }
        Client::Responses => {
            let last = evs.last().unwrap();
            assert_eq!(last.0.as_deref(), Some("response.completed"), "{text}");
            for (i, (ev, e)) in evs.iter().enumerate() {
                assert_eq!(ev.as_deref(), e["type"].as_str(), "{text}");
                assert_eq!(e["sequence_number"].as_u64(), u64::try_from(i).ok(), "{text}");
                if ev.as_deref() == Some("response.output_item.done") && e["item"]["type"] == "function_call" {
                    name = e["item"]["name"].as_str().map(str::to_owned);
                }
                if ev.as_deref() == Some("response.output_text.delta") {
                    out.push_str(e["delta"].as_str().unwrap_or_default());
                }
                if ev.as_deref() == Some("response.function_call_arguments.delta") {
                    args.push_str(e["delta"].as_str().unwrap_or_default());
                }
            }
            let usage = &last.1["response"]["usage"];
            assert_eq!(usage["input_tokens"].as_u64(), Some(USAGE.0), "{text}");
        }
    }
    match name {
        Some(n) => call(&n, &args),
        None => Got::Text(out),
    }
}

/// What the upstream of `kind` must have received.
fn check_upstream(kind: ProviderKind, stream: bool, tools: bool, up: &DialectUpstream) {
    let got = up.last();
    let key = service_url("SWITCHYARD_TEST_PROVIDER_KEY");
    let b = &got.body;
    match kind {
        ProviderKind::Anthropic => {
            assert_eq!(got.target, "/v1/messages");
            assert_eq!(got.header("x-api-key"), Some(key.as_str()));
            assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(got.header("authorization"), None);
            assert_eq!(b["model"], "m-1");
            assert!(b["system"].to_string().contains("Be brief."), "{b}");
            assert_eq!(b["tools"][0]["name"].as_str().is_some(), tools, "{b}");
        }
        ProviderKind::Gemini => {
            let want = if stream {
                "/v1beta/models/m-1:streamGenerateContent?alt=sse"
            } else {
                "/v1beta/models/m-1:generateContent"
            };
            assert_eq!(got.target, want);
            assert!(!got.target.contains(&key), "the key is never in the URL");
            assert_eq!(got.header("x-goog-api-key"), Some(key.as_str()));
            assert_eq!(got.header("authorization"), None);
            assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Be brief.", "{b}");
            assert_eq!(b["tools"][0]["functionDeclarations"][0]["name"].as_str().is_some(), tools, "{b}");
        }
        _ => {
            assert_eq!(got.target, "/v1/chat/completions");
            assert_eq!(got.header("authorization"), Some(format!("Bearer {key}").as_str()));
            assert_eq!(b["model"], "m-1");
            assert_eq!(b["messages"][0], json!({"role": "system", "content": "Be brief."}), "{b}");
            if stream {
                assert_eq!(b["stream_options"]["include_usage"], true, "usage asked on the client's behalf");
            }
        }
    }
}

async fn matrix(framing: Framing) {
    let up = DialectUpstream::start(framing).await;
    let app = app(&up).await;
    for (id, kind) in KINDS {
        for client in CLIENTS {
            for stream in [false, true] {
                for tools in [false, true] {
                    let case = format!("{client:?} → {id} (stream {stream}, tools {tools}, {framing:?})");
                    let (path, body) = request(client, &format!("provider/{id}/m-1"), stream, tools);
                    let r = crate::support::post_json(&app.url(path), &app.admin_token, &body).await;
                    assert_eq!(r.status, 200, "{case}: {}", r.text());
                    assert_eq!(r.header("x-switchyard-provider"), Some(id), "{case}");
                    let want = if tools {
                        Got::Call("get_weather".into(), serde_json::from_str(ARGS).unwrap())
                    } else {
                        Got::Text(TEXT.into())
                    };
                    assert_eq!(read(client, stream, &r.body), want, "{case}: {}", r.text());
                    check_upstream(kind, stream, tools, &up);
                    let rec = app.usage(r.header("x-request-id").unwrap()).await;
                    // Cache reads and (Anthropic's) cache writes apart, each at its own price.
                    let written = if kind == ProviderKind::Anthropic { USAGE.3 } else { 0 };
                    let n = |v: u64| i64::try_from(v).unwrap();
                    assert_eq!(
                        (rec.outcome.as_str(), rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens),
                        ("ok", n(USAGE.0), n(USAGE.1), n(USAGE.2)),
                        "{case}"
                    );
                    assert_eq!(rec.cache_write_tokens, n(written), "{case}");
                    let fresh = USAGE.0 - USAGE.2 - written;
                    let micros = fresh * 1_000 + USAGE.2 * 100 + written * 1_250 + USAGE.1 * 2_000;
                    let cost = f64::from(u32::try_from(micros).unwrap()) / 1e6;
                    assert!((rec.cost_usd - cost).abs() < 1e-9, "{case}: {} != {cost}", rec.cost_usd);
                    assert!(!rec.estimated, "{case}: the upstream's own usage");
                }
            }
        }
    }
    assert_eq!(up.seen().len(), KINDS.len() * CLIENTS.len() * 4, "one upstream call a case");
    app.stop().await;
}

#[actix_web::test]
async fn every_client_reaches_every_upstream_with_content_length() {
    matrix(Framing::Length).await;
}

#[actix_web::test]
async fn every_client_reaches_every_upstream_chunked() {
    matrix(Framing::Chunked).await;
}

#[actix_web::test]
async fn every_client_reaches_every_upstream_close_delimited() {
    matrix(Framing::Close).await;
}

/// Same dialect on both sides: the client's bytes reach the upstream with only `model` changed,
/// and the upstream's answer reaches the client as it was sent.
#[actix_web::test]
async fn messages_to_anthropic_is_a_passthrough() {
    let up = DialectUpstream::start(Framing::Length).await;
    let app = app(&up).await;
    let raw = r#"{"model":"provider/an/m-1","max_tokens":64,"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"thinking":{"type":"adaptive"}}"#;
    let auth = format!("Bearer {}", app.admin_token);
    let r =
        send("POST", &app.url("/v1/messages"), &[("authorization", &auth), ("content-type", "application/json")], raw)
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last().body;
    let want: Value = serde_json::from_str(&raw.replace("provider/an/m-1", "m-1")).unwrap();
    assert_eq!(sent, want, "only model rewritten; thinking and cache_control pass");
    assert_eq!(r.json()["id"], "msg_1");
    // What only Anthropic has (a server tool, a document) passes through to Anthropic, and is
    // refused by name for an upstream of another dialect, after admission (a record, 400).
    let only = json!({"model": "provider/an/m-1", "max_tokens": 64,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            {"type": "text", "text": "Summarise."}]}]});
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let r = send("POST", &app.url("/v1/messages"), &headers, only.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut want = only.clone();
    want["model"] = json!("m-1");
    assert_eq!(up.last().body, want);
    let calls = up.seen().len();
    for id in ["oa", "ge"] {
        let mut elsewhere = only.clone();
        elsewhere["model"] = json!(format!("provider/{id}/m-1"));
        let r = send("POST", &app.url("/v1/messages"), &headers, elsewhere.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("messages[0].content[0]: A `document` part"),
            "{v}"
        );
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!((rec.status, rec.outcome.as_str()), (400, "refused"));
    }
    assert_eq!(up.seen().len(), calls, "nothing reached another upstream");
    // In a rotation mixing dialects, the targets of another dialect are skipped, not tried: the
    // request reaches the Anthropic entry; with none, it is refused by name.
    let mut mixed = only.clone();
    mixed["model"] = json!("rotation/mixed");
    let r = send("POST", &app.url("/v1/messages"), &headers, mixed.to_string()).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("an")), "{}", r.text());
    assert_eq!(up.last().target, "/v1/messages");
    let rec = app.usage(r.header("x-request-id").unwrap()).await;
    assert!(rec.routing.as_deref().is_some_and(|x| x.contains(r#""filtered":"dialect""#)), "{:?}", rec.routing);
    let calls = up.seen().len();
    mixed["model"] = json!("rotation/no-anthropic");
    let r = send("POST", &app.url("/v1/messages"), &headers, mixed.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("messages[0].content[0]"), "{}", r.text());
    assert_eq!(up.seen().len(), calls);
    // A request every dialect carries still goes to the rotation's first entry.
    let (_, plain) = request(Client::Messages, "rotation/mixed", false, false);
    let r = send("POST", &app.url("/v1/messages"), &headers, plain.to_string()).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("oa"));
    app.stop().await;
}

/// The Anthropic routes: `x-api-key`, errors in Anthropic's shape (the gateway's and the
/// upstream's), `count_tokens`, and the per-user prefix with its namespace rule.
#[actix_web::test]
async fn anthropic_routes_speak_anthropic() {
    let up = DialectUpstream::start(Framing::Chunked).await;
    let app = app(&up).await;
    let (_, body) = request(Client::Messages, "provider/oa/m-1", false, false);
    let key = [("x-api-key", app.admin_token.as_str()), ("content-type", "application/json")];
    let r = send("POST", &app.url("/v1/messages?beta=true"), &key, body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], TEXT);

    let anthropic_error = |r: &crate::support::Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some(kind)), "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(r.header("x-request-id").is_some());
    };
    let r = send("POST", &app.url("/v1/messages"), &[("content-type", "application/json")], body.to_string()).await;
    anthropic_error(&r, 401, "authentication_error");
    let r = send("POST", &app.url("/v1/messages"), &key, "{not json").await;
    anthropic_error(&r, 400, "invalid_request_error");
    let r =
        send("POST", &app.url("/v1/messages"), &key, json!({"model": "provider/oa/m-1", "max_tokens": 5}).to_string())
            .await;
    anthropic_error(&r, 400, "invalid_request_error");
    let r = send("GET", &app.url("/v1/messages"), &key, "").await;
    anthropic_error(&r, 405, "invalid_request_error");
    let mut unknown = body.clone();
    unknown["model"] = json!("provider/nope/m");
    let r = send("POST", &app.url("/v1/messages"), &key, unknown.to_string()).await;
    anthropic_error(&r, 404, "not_found_error");
    // The upstream refuses: the client's mistake, in the client's dialect.
    up.behave(Behaviour::Status(400));
    let r = send("POST", &app.url("/v1/messages"), &key, body.to_string()).await;
    anthropic_error(&r, 400, "invalid_request_error");
    assert!(r.text().contains("mock refused the request with 400"), "{}", r.text());
    up.behave(Behaviour::Answer);
    // The chat routes keep OpenAI's shape.
    let r = send("POST", &app.url("/v1/chat/completions"), &key, "{not json").await;
    r.assert_error(400, "invalid_request");

    // count_tokens: counted by the gateway for a route the caller may use; nothing goes upstream.
    let before = up.seen().len();
    let count = json!({"model": "provider/an/m-1", "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is the weather in Paris today?"}]});
    let r = send("POST", &app.url("/v1/messages/count_tokens"), &key, count.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!((10..40).contains(&n), "{n}");
    assert_eq!(up.seen().len(), before);
    let mut missing = count.clone();
    missing["model"] = json!("provider/nope/m");
    let r = send("POST", &app.url("/v1/messages/count_tokens"), &key, missing.to_string()).await;
    anthropic_error(&r, 404, "not_found_error");

    // The per-user prefix: one's own namespace, never another's.
    let alice = app.user_with_token("alice").await;
    let _bob = app.user_with_token("bob").await;
    let alice_key = [("x-api-key", alice.as_str()), ("content-type", "application/json")];
    let r = send("POST", &app.url("/api/u/alice/v1/messages"), &alice_key, body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send("POST", &app.url("/api/u/bob/v1/messages"), &alice_key, body.to_string()).await;
    anthropic_error(&r, 403, "permission_error");
    let r = send("POST", &app.url("/api/u/alice/v1/messages/count_tokens"), &alice_key, count.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, responses) = request(Client::Responses, "provider/ge/m-1", false, false);
    let auth = format!("Bearer {alice}");
    let bearer = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let r = send("POST", &app.url("/api/u/alice/v1/responses"), &bearer, responses.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send("POST", &app.url("/api/u/bob/v1/responses"), &bearer, responses.to_string()).await;
    r.assert_error(403, "permission_denied");
    app.stop().await;
}

/// A stream cut mid-way ends with one error event in the client's dialect, never a false end,
/// and its record is partial.
#[actix_web::test]
async fn a_cut_stream_ends_in_the_clients_dialect() {
    let up = DialectUpstream::start(Framing::Chunked).await;
    let app = app(&up).await;
    up.behave(Behaviour::Cut);
    for (id, _) in KINDS {
        for client in CLIENTS {
            let case = format!("{client:?} → {id}");
            let (path, body) = request(client, &format!("provider/{id}/m-1"), true, false);
            let r = crate::support::post_json(&app.url(path), &app.admin_token, &body).await;
            assert_eq!(r.status, 200, "{case}: {}", r.text());
            let evs = events(&r.body);
            let (name, last) = evs.last().cloned().unwrap_or_else(|| panic!("{case}: no events"));
            match client {
                Client::Chat => {
                    assert_eq!(last["error"]["code"], "upstream_error", "{case}: {}", r.text());
                    assert!(!r.text().contains("[DONE]"), "{case}");
                }
                Client::Messages => {
                    assert_eq!(
                        (name.as_deref(), last["error"]["type"].as_str()),
                        (Some("error"), Some("api_error")),
                        "{case}: {}",
                        r.text()
                    );
                    assert!(!r.text().contains("message_stop"), "{case}");
                }
                Client::Responses => {
                    assert_eq!(name.as_deref(), Some("response.failed"), "{case}: {}", r.text());
                    assert_eq!(last["response"]["error"]["code"], "upstream_error", "{case}");
                    assert!(!r.text().contains("response.completed"), "{case}");
                }
            }
            let rec = app.usage(r.header("x-request-id").unwrap()).await;
            assert_eq!((rec.outcome.as_str(), rec.partial), ("partial", true), "{case}");
        }
    }
    app.stop().await;
}

/// Claude Code's traffic shape, to every upstream: `?beta=true`, the `anthropic-beta` header,
/// system blocks and tools marked for caching, a system turn between the others, adaptive thinking, metadata, a tool-use turn and
/// its result in the history, streaming. Passed as it is to Anthropic (the beta header too).
#[actix_web::test]
async fn claude_code_shaped_traffic_reaches_every_upstream() {
    let up = DialectUpstream::start(Framing::Chunked).await;
    let app = app(&up).await;
    let key = app.admin_token.clone();
    for (id, kind) in KINDS {
        let body = json!({
            "model": format!("provider/{id}/m-1"), "max_tokens": 32000, "stream": true, "temperature": 1,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0"},
                       {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "description": "Weather of a city.", "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false},
                "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "adaptive"}, "metadata": {"user_id": "user_abc_session_1"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                             {"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                                                  {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0", "content": "Sunny."}]}
            ]
        });
        let headers = [
            ("x-api-key", key.as_str()),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
        ];
        let r = send("POST", &app.url("/v1/messages?beta=true"), &headers, body.to_string()).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(
            read(Client::Messages, true, &r.body),
            Got::Call("get_weather".into(), serde_json::from_str(ARGS).unwrap()),
            "{id}"
        );
        let got = up.last();
        match kind {
            ProviderKind::Anthropic => {
                assert_eq!(got.header("anthropic-beta"), Some("claude-code-20250219,interleaved-thinking-2025-05-14"));
                let mut want = body.clone();
                want["model"] = json!("m-1");
                assert_eq!(got.body, want, "passed as it is");
            }
            _ => {
                assert_eq!(got.header("anthropic-beta"), None, "{id}: a beta header is Anthropic's alone");
                let system = match kind {
                    ProviderKind::Gemini => got.body["systemInstruction"]["parts"][0]["text"].clone(),
                    _ => got.body["messages"][0]["content"].clone(),
                };
                assert!(system.as_str().is_some_and(|s| s.contains("You are Claude Code.")), "{id}: {}", got.body);
            }
        }
    }
    app.stop().await;
}

/// Codex's traffic shape, to every upstream: streaming Responses with function and custom tools,
/// the hosted web_search it offers by default, and a history of calls and their outputs. A call of
/// the custom tool comes back as a `custom_tool_call` item with the raw input.
#[actix_web::test]
async fn codex_shaped_traffic_reaches_every_upstream() {
    let up = DialectUpstream::start(Framing::Close).await;
    let app = app(&up).await;
    for (id, kind) in KINDS {
        let body = json!({
            "model": format!("provider/{id}/m-1"), "instructions": "You are Codex.", "stream": true,
            "tool_choice": "auto", "parallel_tool_calls": false, "reasoning": null, "store": false,
            "include": [], "prompt_cache_key": "conv-1",
            "tools": [
                {"type": "custom", "name": "apply_patch", "description": "Edit files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}},
                {"type": "function", "name": "exec_command", "description": "Run.", "strict": false,
                 "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
                {"type": "web_search", "external_web_access": false},
                {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
                    {"type": "function", "name": "close_agent", "strict": false, "parameters": {"type": "object"}}]}
            ],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: workspace-write"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]},
                {"type": "function_call", "call_id": "call_0", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_0", "output": "src"}
            ]
        });
        let r = crate::support::post_json(&app.url("/v1/responses"), &app.admin_token, &body).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let evs = events(&r.body);
        let done: Vec<&Value> = evs
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("response.output_item.done"))
            .map(|(_, e)| &e["item"])
            .collect();
        assert_eq!(done.len(), 1, "{id}: {}", r.text());
        assert_eq!(
            (done[0]["type"].as_str(), done[0]["name"].as_str()),
            (Some("custom_tool_call"), Some("apply_patch")),
            "{id}"
        );
        assert_eq!(done[0]["input"], ARGS, "{id}: arguments that are not {{input}} are the input");
        let completed = &evs.last().unwrap().1;
        assert_eq!(completed["type"], "response.completed", "{id}");
        assert!(completed["response"]["id"].as_str().is_some_and(|i| !i.is_empty()));
        let tools = match kind {
            ProviderKind::Anthropic => up.last().body["tools"].clone(),
            ProviderKind::Gemini => up.last().body["tools"][0]["functionDeclarations"].clone(),
            _ => up.last().body["tools"].clone(),
        };
        assert_eq!(tools.as_array().map(Vec::len), Some(3), "{id}: web_search is not offered, close_agent is: {tools}");
    }
    app.stop().await;
}

/// The official `anthropic` and `openai` Python SDKs (from PyPI, in the venv `tests/run.sh`
/// makes) against every upstream dialect: Messages, `count_tokens`, Chat and Responses, whole and
/// streamed with the SDKs' stream helpers, with tools, and the errors as the SDKs raise them.
#[actix_web::test]
async fn the_official_sdks_work_against_every_upstream() {
    let python = service_url("SWITCHYARD_TEST_PYTHON");
    let up = DialectUpstream::start(Framing::Chunked).await;
    let app = app(&up).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/clients.py");
    let routes: Vec<String> = KINDS.iter().map(|(id, _)| format!("provider/{id}/m-1")).collect();
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(app.url(""))
        .arg(&app.admin_token)
        .args(&routes)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .await
        .expect("run the SDK script");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("all passed"), "{log}");
    app.stop().await;
}

/// A Responses client of an upstream that serves the Responses API passes through: its bytes
/// with only `model` replaced (`previous_response_id` included), the answer and its events as the
/// upstream sent them, the usage read from them. Other clients of that provider speak Chat to it;
/// a Responses client of a Chat-only upstream is refused `previous_response_id` by name.
#[actix_web::test]
async fn responses_pass_through_to_an_upstream_that_serves_them() {
    let up = DialectUpstream::start(Framing::Chunked).await;
    let app = app(&up).await;
    let t = &app.admin_token;
    let key = service_url("SWITCHYARD_TEST_PROVIDER_KEY");
    for stream in [false, true] {
        let body = json!({"model": "provider/or/m-1", "previous_response_id": "resp_0", "input": "And now?",
            "store": true, "stream": stream, "reasoning": {"effort": "high", "summary": "auto"},
            "include": ["reasoning.encrypted_content"], "text": {"verbosity": "low"}});
        let r = crate::support::post_json(&app.url("/v1/responses"), t, &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = up.last();
        assert_eq!(got.target, "/v1/responses");
        assert_eq!(got.header("authorization"), Some(format!("Bearer {key}").as_str()));
        let mut want = body.clone();
        want["model"] = json!("m-1");
        assert_eq!(got.body, want, "passed as it is");
        assert_eq!(read(Client::Responses, stream, &r.body), Got::Text(TEXT.into()));
        if stream {
            // The upstream's own events, its response id included.
            assert!(r.text().contains(r#""id":"resp_1""#), "{}", r.text());
        } else {
            assert_eq!(r.json()["id"], "resp_1");
        }
        let rec = app.usage(r.header("x-request-id").unwrap()).await;
        assert_eq!(
            (rec.outcome.as_str(), rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens),
            ("ok", 21, 7, 4)
        );
        assert_eq!(rec.usage_source, "reported");
    }
    // A chat client of the same provider speaks Chat to it.
    let (path, body) = request(Client::Chat, "provider/or/m-1", false, false);
    let r = crate::support::post_json(&app.url(path), t, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().target, "/v1/chat/completions");
    // Tools through the passthrough, streamed.
    let (_, body) = request(Client::Responses, "provider/or/m-1", true, true);
    let r = crate::support::post_json(&app.url("/v1/responses"), t, &body).await;
    assert_eq!(
        read(Client::Responses, true, &r.body),
        Got::Call("get_weather".into(), serde_json::from_str(ARGS).unwrap())
    );
    // State a Chat upstream cannot keep: refused by name, after admission, nothing sent.
    let calls = up.seen().len();
    let body = json!({"model": "provider/oa/m-1", "previous_response_id": "resp_0", "input": "And now?"});
    let r = crate::support::post_json(&app.url("/v1/responses"), t, &body).await;
    let v = r.assert_error(400, "invalid_request");
    assert_eq!(v["error"]["param"], "previous_response_id");
    assert_eq!(up.seen().len(), calls);
    app.stop().await;
}

/// B9 on every (client, upstream) pair: an upstream error status, an HTML page, a body cut in
/// half — whole or streamed — reach the client as a 502 in its own dialect with a generic
/// message (no upstream URL, no HTML), and the record says `upstream_error`.
#[actix_web::test]
async fn broken_upstream_answers_are_502_in_the_clients_dialect() {
    let up = DialectUpstream::start(Framing::Length).await;
    let app = app(&up).await;
    for behaviour in [Behaviour::Status(500), Behaviour::Html, Behaviour::Truncated] {
        up.behave(behaviour);
        for (id, _) in KINDS {
            for client in CLIENTS {
                for stream in [false, true] {
                    let case = format!("{behaviour:?}: {client:?} → {id} (stream {stream})");
                    let (path, body) = request(client, &format!("provider/{id}/m-1"), stream, false);
                    let r = crate::support::post_json(&app.url(path), &app.admin_token, &body).await;
                    let text = r.text();
                    assert!(
                        !text.contains("10.1.2.3") && !text.contains("<html") && !text.contains("127.0.0.1"),
                        "{case}: {text}"
                    );
                    let rec = app.usage(r.header("x-request-id").unwrap()).await;
                    if behaviour == Behaviour::Truncated && stream {
                        // A stream that started and broke ends in-band, in the client's dialect.
                        assert_eq!(r.status, 200, "{case}: {text}");
                        assert!(
                            rec.outcome == "invalid_response" || rec.outcome == "partial",
                            "{case}: {}",
                            rec.outcome
                        );
                        continue;
                    }
                    assert_eq!(r.status, 502, "{case}: {text}");
                    let v = r.json();
                    match client {
                        Client::Messages => assert_eq!(
                            (v["type"].as_str(), v["error"]["type"].as_str()),
                            (Some("error"), Some("api_error")),
                            "{case}: {v}"
                        ),
                        _ => assert_eq!(v["error"]["code"], "upstream_error", "{case}: {v}"),
                    }
                    assert_eq!((rec.status, rec.outcome.as_str()), (502, "upstream_error"), "{case}");
                }
            }
        }
    }
    app.stop().await;
}
