//! A scriptable mock of an OpenAI-compatible upstream, on 127.0.0.1 and a random port.
//!
//! It speaks the real wire format (JSON and SSE with usage) and can be told, for the next K
//! calls, to answer with a status, delay its headers, stream N chunks at an interval, cut the
//! connection after N chunks, stall after N chunks, send a broken body, or omit usage. It records
//! every request it receives. The benchmark includes this file too.
#![allow(dead_code, clippy::allow_attributes, reason = "shared between the test binary and the benchmark")]

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use serde_json::{Value, json};

/// What a broken body looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadBody {
    Html,
    Text,
    Truncated,
    WrongShape,
    Empty,
    WrongContentType,
    SseInvalidJson,
}

/// Behaviour for the next `times` calls.
#[derive(Clone, Debug)]
pub struct Plan {
    pub times: usize,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay_headers_ms: u64,
    pub chunks: usize,
    pub chunk_interval_ms: u64,
    pub cut_after: Option<usize>,
    pub hang_after: Option<usize>,
    pub bad_body: Option<BadBody>,
    pub omit_usage: bool,
    pub error_body: Option<String>,
    /// The assistant's reply text (non-streaming chat) instead of the fixture's.
    pub content: Option<String>,
    /// A stream's headers go out at once, its first chunk after this long.
    pub first_chunk_delay_ms: u64,
    /// The `usage` object reported instead of the true one (an upstream that over-reports).
    pub usage: Option<Value>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            times: 1,
            status: 200,
            retry_after: None,
            delay_headers_ms: 0,
            chunks: 5,
            chunk_interval_ms: 0,
            cut_after: None,
            hang_after: None,
            bad_body: None,
            omit_usage: false,
            error_body: None,
            content: None,
            first_chunk_delay_ms: 0,
            usage: None,
        }
    }
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The status the plan answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    plans: VecDeque<Plan>,
    received: Vec<Received>,
    record: bool,
}

/// A running mock upstream.
pub struct MockUpstream {
    pub port: u16,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl MockUpstream {
    /// Starts on a random loopback port with `workers` workers.
    pub fn start(workers: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock upstream");
        let port = listener.local_addr().expect("mock addr").port();
        let state = Arc::new(Mutex::new(State { record: true, ..State::default() }));
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/v1/chat/completions", web::post().to(answer))
                .route("/v1/completions", web::post().to(answer))
                .route("/v1/embeddings", web::post().to(answer))
                // Anthropic's Messages API, for the benchmarks of translation.
                .route("/v1/messages", web::post().to(messages))
                // Azure OpenAI's addresses: the same wire format under a deployment.
                .route("/openai/deployments/{deployment}/chat/completions", web::post().to(answer))
                .route("/openai/deployments/{deployment}/completions", web::post().to(answer))
                .route("/openai/deployments/{deployment}/embeddings", web::post().to(answer))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen mock upstream")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { port, state, handle }
    }

    /// Starts one (one worker, not recording) on an actix system of its own thread, for the
    /// benchmarks; returns its port and base URL.
    pub fn start_detached() -> (u16, String) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let mock = Self::start(1);
                mock.stop_recording();
                tx.send((mock.port, mock.base())).expect("report the mock's port");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the mock started")
    }

    /// The base URL a provider `endpoint` should use.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Queues a plan.
    pub fn plan(&self, plan: Plan) {
        self.state.lock().expect("mock state").plans.push_back(plan);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("mock state").received.clone()
    }

    /// How many requests were received.
    pub fn calls(&self) -> usize {
        self.state.lock().expect("mock state").received.len()
    }

    /// Drops every pending plan: the upstream is healthy again.
    pub fn heal(&self) {
        self.state.lock().expect("mock state").plans.clear();
    }

    /// Stops recording requests (for load tests).
    pub fn stop_recording(&self) {
        self.state.lock().expect("mock state").record = false;
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn next_plan(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> Plan {
    let mut s = state.lock().expect("mock state");
    let plan = match s.plans.front_mut() {
        None => Plan::default(),
        Some(front) => {
            let plan = front.clone();
            front.times = front.times.saturating_sub(1);
            if front.times == 0 {
                s.plans.pop_front();
            }
            plan
        }
    };
    if s.record {
        s.received.push(Received {
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.to_vec(),
            at: std::time::Instant::now(),
            status: plan.status,
        });
    }
    plan
}

/// A deterministic 64-dimension embedding: one bucket per lower-cased word of three or more
/// characters (FNV-1a), so texts
/// that share words are similar and texts that share none are orthogonal-ish.
pub fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 64];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        v[usize::try_from(h % 64).unwrap_or(0)] += 1.0;
    }
    v
}

/// Stream chunk texts, each a single `o200k_base` token.
pub const WORDS: [&str; 11] =
    [" zero", " one", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten"];

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn named(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// Anthropic's Messages API: the answer of `answer` in Messages' wire format, whole or streamed
/// (one text delta per word), with its usage. Plans' statuses apply.
async fn messages(req: HttpRequest, body: Bytes, state: web::Data<Mutex<State>>) -> HttpResponse {
    let plan = next_plan(&state, &req, &body);
    if plan.status != 200 {
        let status = actix_web::http::StatusCode::from_u16(plan.status).expect("status");
        return HttpResponse::build(status)
            .content_type("application/json")
            .body(r#"{"type":"error","error":{"type":"api_error","message":"mock failure"}}"#);
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = parsed.get("model").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    let n = plan.chunks.min(WORDS.len());
    let usage =
        json!({"input_tokens": 9, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": n});
    if !parsed.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let text: String = WORDS[..n].concat();
        return HttpResponse::Ok().content_type("application/json").body(
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage})
            .to_string(),
        );
    }
    let mut events = vec![
        named(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for w in &WORDS[..n] {
        events.push(named(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    events.push(named("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    events.push(named(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": n}}),
    ));
    events.push(named("message_stop", &json!({"type": "message_stop"})));
    let body = futures_util::stream::iter(events.into_iter().map(Ok::<Bytes, std::io::Error>));
    HttpResponse::Ok().content_type("text/event-stream").insert_header(("cache-control", "no-cache")).streaming(body)
}

async fn answer(req: HttpRequest, body: Bytes, state: web::Data<Mutex<State>>) -> HttpResponse {
    let plan = next_plan(&state, &req, &body);
    if plan.delay_headers_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.delay_headers_ms)).await;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = parsed.get("model").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    if plan.status != 200 {
        let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(plan.status).expect("status"));
        if let Some(r) = plan.retry_after {
            res.insert_header(("retry-after", r.to_string()));
        }
        return match plan.bad_body {
            Some(BadBody::Html) => res
                .content_type("text/html")
                .body("<html><body><h1>502 Bad Gateway</h1>upstream at http://10.1.2.3/internal</body></html>"),
            Some(BadBody::Text) => res.content_type("text/plain").body("internal error at http://10.1.2.3/"),
            _ => res.content_type("application/json").body(
                plan.error_body
                    .clone()
                    .unwrap_or_else(|| include_str!("../../fixtures/openai/error_500.json").to_owned()),
            ),
        };
    }
    match plan.bad_body {
        Some(BadBody::Html) => return HttpResponse::Ok().content_type("text/html").body("<html>oops</html>"),
        Some(BadBody::Text) => return HttpResponse::Ok().content_type("text/plain").body("plain text"),
        Some(BadBody::Truncated) => {
            return HttpResponse::Ok().content_type("application/json").body(r#"{"id":"x","choices":[{"mess"#);
        }
        Some(BadBody::WrongShape) => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"id":"x","object":"chat.completion"}"#);
        }
        Some(BadBody::Empty) => return HttpResponse::Ok().content_type("application/json").body(""),
        Some(BadBody::WrongContentType) => {
            return HttpResponse::Ok().content_type("text/html").body("<p>not an event stream</p>");
        }
        _ => {}
    }
    if req.path().ends_with("/embeddings") {
        let inputs: Vec<String> = match parsed.get("input") {
            Some(Value::Array(a)) => {
                a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
            }
            Some(v) => vec![v.as_str().map_or_else(|| v.to_string(), str::to_owned)],
            None => vec![],
        };
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object":"embedding","index":i,"embedding":bag_of_words(t)}))
            .collect();
        let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
        return HttpResponse::Ok().json(json!({"object":"list","model":model,"data":data,
            "usage":{"prompt_tokens":tokens,"total_tokens":tokens}}));
    }
    let stream = parsed.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let text = include_str!("../../fixtures/openai/chat.json").replace("MODEL", &model);
        let mut v: Value = serde_json::from_str(&text).expect("fixture");
        if plan.omit_usage {
            v.as_object_mut().expect("object").remove("usage");
        }
        if let Some(c) = &plan.content {
            v["choices"][0]["message"]["content"] = Value::String(c.clone());
        }
        if let Some(u) = &plan.usage {
            v["usage"] = u.clone();
        }
        return HttpResponse::Ok().content_type("application/json").body(v.to_string());
    }
    let include_usage = parsed.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let mut events: Vec<Bytes> = Vec::new();
    if plan.bad_body == Some(BadBody::SseInvalidJson) {
        events.push(Bytes::from_static(b"data: {not json\n\n"));
    }
    for i in 0..plan.chunks {
        // One token per chunk (o200k_base), so a gateway counting relayed tokens gets exact figures.
        let word = WORDS.get(i).copied().unwrap_or(" more");
        let delta = if i == 0 { json!({"role":"assistant","content":word}) } else { json!({"content":word}) };
        events
            .push(sse(&json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
            "choices":[{"index":0,"delta":delta,"finish_reason":null}]})));
    }
    events.push(sse(&json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
        "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})));
    if include_usage && !plan.omit_usage {
        events.push(sse(
            &json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":model,
            "choices":[],"usage":plan.usage.clone().unwrap_or_else(
                || json!({"prompt_tokens":9,"completion_tokens":plan.chunks,"total_tokens":9 + plan.chunks}))}),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let interval = Duration::from_millis(plan.chunk_interval_ms);
    let first_delay = Duration::from_millis(plan.first_chunk_delay_ms);
    let (cut, hang) = (plan.cut_after, plan.hang_after);
    let body = futures_util::stream::unfold((events.into_iter(), 0usize), move |(mut it, n)| async move {
        if cut == Some(n) {
            // Let the bytes before the cut leave first, or actix drops them with the connection.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Some((Err(std::io::Error::other("cut by plan")), (it, n + 1)));
        }
        if cut.is_some_and(|c| n > c) {
            return None;
        }
        if hang == Some(n) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if n == 0 && !first_delay.is_zero() {
            tokio::time::sleep(first_delay).await;
        }
        if n > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        it.next().map(|b| (Ok::<Bytes, std::io::Error>(b), (it, n + 1)))
    });
    HttpResponse::Ok().content_type("text/event-stream").insert_header(("cache-control", "no-cache")).streaming(body)
}
