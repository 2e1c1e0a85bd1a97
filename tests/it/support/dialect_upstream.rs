//! An upstream speaking OpenAI Chat, Anthropic Messages and Gemini `generateContent` on a raw
//! socket, each in its documented wire format (JSON and SSE, usage, stop reasons, tool calls,
//! error bodies), framing its bodies every way HTTP/1.1 allows (`Content-Length`, chunked, ended
//! by closing the connection). Which dialect answers is the path's: `/v1/chat/completions`,
//! `/v1/responses`, `/v1/messages`, `/v1beta/models/{model}:generateContent` or
//! `:streamGenerateContent?alt=sse`.
//!
//! It answers a request that defines tools with one call of the first tool
//! (`{"city":"Paris"}`), any other with [`TEXT`]; it can be told to answer with an error status or
//! to cut its stream after two events. It records what it received.
#![allow(dead_code, clippy::allow_attributes, reason = "shared between the test binary and the benchmark")]

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub use super::framed_upstream::Framing;

/// The text of every answer without tools.
pub const TEXT: &str = "Hello from the upstream, in words.";
/// The arguments of every tool call, as a JSON text.
pub const ARGS: &str = r#"{"city":"Paris"}"#;
/// Usage every answer reports: input, output, cache reads (of the input), and, for Anthropic
/// (the one dialect that reports them), cache writes (of the input).
pub const USAGE: (u64, u64, u64, u64) = (21, 7, 4, 3);

/// What the next answers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer.
    Answer,
    /// An error status with the dialect's error body.
    Status(u16),
    /// A stream cut after two events (the connection closes).
    Cut,
    /// A 200 with an HTML page naming an internal address.
    Html,
    /// A 200 whose JSON (or first event) is cut in half.
    Truncated,
}

/// One request received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Path and query.
    pub target: String,
    /// Lower-cased header names and their values.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    behaviour: Option<Behaviour>,
    seen: Vec<Seen>,
}

/// A running upstream.
pub struct DialectUpstream {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DialectUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DialectUpstream {
    /// Starts on a random loopback port, framing every answer with `framing`.
    pub async fn start(framing: Framing) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind dialect upstream");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, framing, Arc::clone(&st)));
            }
        });
        Self { port, state, task }
    }

    /// The endpoint of a provider of `kind` (`openai`, `anthropic`, `gemini`).
    pub fn endpoint(&self, kind: &str) -> String {
        let version = if kind == "gemini" { "v1beta" } else { "v1" };
        format!("http://127.0.0.1:{}/{version}", self.port)
    }

    /// What every following answer does.
    pub fn behave(&self, b: Behaviour) {
        self.state.lock().expect("state").behaviour = Some(b);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// The last request.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the upstream")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Responses,
    Anthropic,
    Gemini,
}

/// Serves one connection: requests one after another while the framing lets the connection
/// live (`Content-Length`, chunked), one request when its end closes the body.
async fn serve(mut sock: tokio::net::TcpStream, framing: Framing, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some(rest) = serve_one(&mut sock, framing, &state, std::mem::take(&mut buf)).await {
        buf = rest;
    }
    let _ = sock.shutdown().await;
}

/// Reads and answers one request; the bytes read past it, when the connection lives on.
async fn serve_one(
    sock: &mut tokio::net::TcpStream,
    framing: Framing,
    state: &Mutex<State>,
    mut buf: Vec<u8>,
) -> Option<Vec<u8>> {
    let mut tmp = vec![0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
    let rest = buf.split_off(head_end + len);
    let behaviour = {
        let mut s = state.lock().expect("state");
        s.seen.push(Seen { target: target.clone(), headers, body: body.clone() });
        s.behaviour.unwrap_or(Behaviour::Answer)
    };
    let path = target.split('?').next().unwrap_or_default();
    let (wire, stream) = if path.ends_with("/chat/completions") {
        (Wire::OpenAi, body["stream"].as_bool().unwrap_or(false))
    } else if path.ends_with("/responses") {
        (Wire::Responses, body["stream"].as_bool().unwrap_or(false))
    } else if path.ends_with("/messages") {
        (Wire::Anthropic, body["stream"].as_bool().unwrap_or(false))
    } else if path.contains(":streamGenerateContent") {
        (Wire::Gemini, true)
    } else {
        (Wire::Gemini, false)
    };
    let model = match wire {
        Wire::Gemini => path.rsplit('/').next().unwrap_or_default().split(':').next().unwrap_or_default().to_owned(),
        _ => body["model"].as_str().unwrap_or("m").to_owned(),
    };
    let tool = tool_name(wire, &body);
    let (status, content_type, mut pieces) = match behaviour {
        Behaviour::Status(s) => (s, "application/json", vec![error_body(wire, s)]),
        Behaviour::Html => {
            (200, "text/html", vec!["<html><body>oops at http://10.1.2.3/internal</body></html>".into()])
        }
        Behaviour::Truncated if stream => (200, "text/event-stream", vec!["data: {\"id\":\"x\",\"choi\n\n".into()]),
        Behaviour::Truncated => (200, "application/json", vec!["{\"id\":\"x\",\"choi".into()]),
        _ if stream => (200, "text/event-stream", events(wire, &model, tool.as_deref())),
        _ => (200, "application/json", split(whole(wire, &model, tool.as_deref()))),
    };
    let cut = behaviour == Behaviour::Cut && stream;
    if cut {
        pieces.truncate(2);
    }
    let reason = if status == 200 { "OK" } else { "Error" };
    let total: usize = pieces.iter().map(String::len).sum();
    // A cut stream has no length: it ends when the connection does, before its end.
    let framing = if cut { Framing::Close } else { framing };
    let head = match framing {
        Framing::Length => {
            format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {total}\r\n\r\n")
        }
        Framing::Chunked => {
            format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")
        }
        Framing::Close => {
            format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n")
        }
        Framing::Http10 => format!("HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n\r\n"),
    };
    sock.write_all(head.as_bytes()).await.ok()?;
    for p in pieces {
        let out = if framing == Framing::Chunked { format!("{:x}\r\n{p}\r\n", p.len()) } else { p };
        sock.write_all(out.as_bytes()).await.ok()?;
        let _ = sock.flush().await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    if framing == Framing::Chunked {
        sock.write_all(b"0\r\n\r\n").await.ok()?;
    }
    let _ = sock.flush().await;
    matches!(framing, Framing::Length | Framing::Chunked).then_some(rest)
}

/// A whole body in two pieces.
fn split(b: String) -> Vec<String> {
    let mut at = b.len() / 2;
    while !b.is_char_boundary(at) {
        at += 1;
    }
    let (a, z) = b.split_at(at);
    vec![a.to_owned(), z.to_owned()]
}

/// The name of the first tool the request defines, in its dialect.
fn tool_name(wire: Wire, body: &Value) -> Option<String> {
    let t = body.get("tools")?.get(0)?;
    let name = match wire {
        Wire::OpenAi => t.pointer("/function/name"),
        Wire::Responses => t.get("name"),
        Wire::Anthropic => t.get("name"),
        Wire::Gemini => t.pointer("/functionDeclarations/0/name"),
    };
    name.and_then(Value::as_str).map(str::to_owned)
}

fn error_body(wire: Wire, status: u16) -> String {
    let message = format!("mock refused the request with {status}");
    match wire {
        Wire::OpenAi | Wire::Responses => {
            json!({"error": {"message": message, "type": "invalid_request_error", "code": null, "param": null}})
        }
        Wire::Anthropic => json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
        Wire::Gemini => json!({"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}),
    }
    .to_string()
}

fn whole(wire: Wire, model: &str, tool: Option<&str>) -> String {
    let (input, output, cached, written) = USAGE;
    match wire {
        Wire::OpenAi => {
            let message = match tool {
                Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": ARGS}}]}),
                None => json!({"role": "assistant", "content": TEXT}),
            };
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": if tool.is_some() {"tool_calls"} else {"stop"}}],
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
                    "prompt_tokens_details": {"cached_tokens": cached}}})
        }
        Wire::Responses => {
            let item = match tool {
                Some(name) => json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name,
                    "arguments": ARGS, "status": "completed"}),
                None => json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}),
            };
            json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": model,
                "output": [item], "usage": responses_usage()})
        }
        Wire::Anthropic => {
            let content = match tool {
                Some(name) => json!([{"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Paris"}}]),
                None => json!([{"type": "text", "text": TEXT}]),
            };
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": if tool.is_some() {"tool_use"} else {"end_turn"}, "stop_sequence": null,
                "usage": {"input_tokens": input - cached - written, "cache_read_input_tokens": cached,
                    "cache_creation_input_tokens": written, "output_tokens": output}})
        }
        Wire::Gemini => {
            let parts = match tool {
                Some(name) => json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]),
                None => json!([{"text": TEXT}]),
            };
            json!({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": input, "candidatesTokenCount": output,
                    "totalTokenCount": input + output, "cachedContentTokenCount": cached},
                "modelVersion": model, "responseId": "resp-1"})
        }
    }
    .to_string()
}

fn responses_usage() -> Value {
    let (input, output, cached, _) = USAGE;
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input + output})
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn named(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

/// Words of [`TEXT`], each with its trailing space.
fn words() -> Vec<&'static str> {
    TEXT.split_inclusive(' ').collect()
}

fn events(wire: Wire, model: &str, tool: Option<&str>) -> Vec<String> {
    let (input, output, cached, written) = USAGE;
    let (a, z) = ARGS.split_at(8);
    match wire {
        Wire::OpenAi => {
            let chunk = |delta: Value, finish: Value| {
                data(&json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
            };
            let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
            match tool {
                Some(name) => {
                    out.push(chunk(
                        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    ));
                    for piece in [a, z] {
                        out.push(chunk(
                            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                            Value::Null,
                        ));
                    }
                    out.push(chunk(json!({}), json!("tool_calls")));
                }
                None => {
                    out.extend(words().into_iter().map(|w| chunk(json!({"content": w}), Value::Null)));
                    out.push(chunk(json!({}), json!("stop")));
                }
            }
            out.push(data(
                &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output,
                    "total_tokens": input + output, "prompt_tokens_details": {"cached_tokens": cached}}}),
            ));
            out.push("data: [DONE]\n\n".into());
            out
        }
        Wire::Responses => {
            let mut seq = 0;
            let mut ev = |name: &str, mut v: Value| {
                v["type"] = json!(name);
                v["sequence_number"] = json!(seq);
                seq += 1;
                named(name, &v)
            };
            let response = |status: &str, output: Value| {
                let usage = if status == "completed" { responses_usage() } else { Value::Null };
                json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status, "model": model,
                    "output": output, "usage": usage})
            };
            let mut out = vec![
                ev("response.created", json!({"response": response("in_progress", json!([]))})),
                ev("response.in_progress", json!({"response": response("in_progress", json!([]))})),
            ];
            let item = match tool {
                Some(name) => {
                    let added = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name,
                        "arguments": "", "status": "in_progress"});
                    out.push(ev("response.output_item.added", json!({"output_index": 0, "item": added})));
                    for piece in [a, z] {
                        let d = json!({"item_id": "fc_1", "output_index": 0, "delta": piece});
                        out.push(ev("response.function_call_arguments.delta", d));
                    }
                    let d = json!({"item_id": "fc_1", "output_index": 0, "arguments": ARGS});
                    out.push(ev("response.function_call_arguments.done", d));
                    json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name,
                        "arguments": ARGS, "status": "completed"})
                }
                None => {
                    let added = json!({"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []});
                    out.push(ev("response.output_item.added", json!({"output_index": 0, "item": added})));
                    let part = json!({"type": "output_text", "text": "", "annotations": []});
                    let at = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part});
                    out.push(ev("response.content_part.added", at));
                    for w in words() {
                        let d = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": w});
                        out.push(ev("response.output_text.delta", d));
                    }
                    let d = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": TEXT});
                    out.push(ev("response.output_text.done", d));
                    json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": TEXT, "annotations": []}]})
                }
            };
            out.push(ev("response.output_item.done", json!({"output_index": 0, "item": item})));
            out.push(ev("response.completed", json!({"response": response("completed", json!([item]))})));
            out
        }
        Wire::Anthropic => {
            let mut out = vec![named(
                "message_start",
                &json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input - cached - written, "cache_read_input_tokens": cached,
                    "cache_creation_input_tokens": written, "output_tokens": 1}}}),
            )];
            out.push(named("ping", &json!({"type": "ping"})));
            match tool {
                Some(name) => {
                    out.push(named(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}}),
                    ));
                    for piece in [a, z] {
                        out.push(named(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ));
                    }
                }
                None => {
                    out.push(named(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
                    ));
                    for w in words() {
                        out.push(named(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": w}}),
                        ));
                    }
                }
            }
            out.push(named("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
            out.push(named(
                "message_delta",
                &json!({"type": "message_delta",
                "delta": {"stop_reason": if tool.is_some() {"tool_use"} else {"end_turn"}, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
            ));
            out.push(named("message_stop", &json!({"type": "message_stop"})));
            out
        }
        Wire::Gemini => {
            let event = |parts: Value, finish: Option<&str>, usage: bool| {
                let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
                if let Some(f) = finish {
                    c["finishReason"] = json!(f);
                }
                let mut v = json!({"candidates": [c], "modelVersion": model, "responseId": "resp-1"});
                if usage {
                    v["usageMetadata"] = json!({"promptTokenCount": input, "candidatesTokenCount": output,
                        "totalTokenCount": input + output, "cachedContentTokenCount": cached});
                }
                data(&v)
            };
            match tool {
                Some(name) => vec![event(
                    json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]),
                    Some("STOP"),
                    true,
                )],
                None => {
                    let w = words();
                    let last = w.len() - 1;
                    w.into_iter()
                        .enumerate()
                        .map(|(i, word)| event(json!([{"text": word}]), (i == last).then_some("STOP"), i == last))
                        .collect()
                }
            }
        }
    }
}
