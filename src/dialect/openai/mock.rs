//! The `mock` provider type: an upstream in process that speaks the OpenAI wire format (JSON and
//! SSE, with usage when asked for), so a fresh install can serve its first request and load tests
//! need no upstream. It reads the bytes the gateway would send an OpenAI server and answers with
//! the bytes such a server would; the in-process transport carries them through the same relay.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::dialect::sse::encode_data;
use crate::types::{Operation, Usage};

/// A mock answer.
pub enum MockReply {
    /// A JSON body.
    Json(Bytes),
    /// SSE events, `[DONE]` included.
    Stream(Vec<Bytes>),
}

/// Answers an upstream request body for `op` as an OpenAI server would: `Err` is a 400 body.
pub fn respond(op: Operation, body: &[u8], request_id: &str) -> Result<MockReply, Bytes> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        let e = json!({"error": {"message": "The body is not a JSON object.", "type": "invalid_request_error"}});
        return Err(Bytes::from(e.to_string()));
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(answer(op, &body, &model, request_id, stream, include_usage))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn approx_tokens(s: &str) -> u64 {
    u64::try_from(s.chars().count().div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// A deterministic 64-dimension embedding: one bucket per lower-cased word of four or more
/// characters (FNV-1a), so texts sharing words are similar — enough to demonstrate `embedding`
/// autoselection without a model.
fn bag_of_words(text: &str) -> Vec<f64> {
    let mut v = vec![0f64; 64];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() > 3) {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        if let Some(slot) = usize::try_from(h % 64).ok().and_then(|k| v.get_mut(k)) {
            *slot += 1.0;
        }
    }
    v
}

/// Answers `body` (already validated) for `model`.
pub fn answer(
    op: Operation,
    body: &serde_json::Map<String, Value>,
    model: &str,
    request_id: &str,
    stream: bool,
    include_usage: bool,
) -> MockReply {
    let created = chrono::Utc::now().timestamp();
    let id = format!("mock-{request_id}");
    match op {
        Operation::Embeddings => {
            let inputs: Vec<String> = match body.get("input") {
                Some(Value::Array(a)) => {
                    a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
                }
                Some(v) => vec![v.as_str().map_or_else(|| v.to_string(), str::to_owned)],
                None => Vec::new(),
            };
            let prompt: u64 = inputs.iter().map(|s| approx_tokens(s)).sum();
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": bag_of_words(s)}))
                .collect();
            let v = json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}});
            MockReply::Json(Bytes::from(v.to_string()))
        }
        Operation::Chat | Operation::Completions => {
            let said = if op == Operation::Chat {
                body.get("messages")
                    .and_then(Value::as_array)
                    .and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
                    .and_then(|m| m.get("content"))
                    .map(text_of)
                    .unwrap_or_default()
            } else {
                body.get("prompt").map(text_of).unwrap_or_default()
            };
            let prompt_tokens = approx_tokens(&said);
            let echo: String = said.chars().take(200).collect();
            let content = format!("This is the Switchyard mock provider. You said: {echo}");
            let words: Vec<&str> = content.split_inclusive(' ').collect();
            let usage =
                Usage { prompt_tokens, completion_tokens: u64::try_from(words.len()).unwrap_or(0), ..Usage::default() };
            let usage_json = json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens});
            let (object, chunk_object) = if op == Operation::Chat {
                ("chat.completion", "chat.completion.chunk")
            } else {
                ("text_completion", "text_completion")
            };
            if !stream {
                let choice = if op == Operation::Chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"})
                } else {
                    json!({"index": 0, "text": content, "finish_reason": "stop"})
                };
                let v = json!({"id": id, "object": object, "created": created, "model": model,
                    "choices": [choice], "usage": usage_json});
                return MockReply::Json(Bytes::from(v.to_string()));
            }
            let mut events = Vec::with_capacity(words.len() + 3);
            for (i, w) in words.iter().enumerate() {
                let choice = if op == Operation::Chat {
                    let delta = if i == 0 { json!({"role": "assistant", "content": w}) } else { json!({"content": w}) };
                    json!({"index": 0, "delta": delta, "finish_reason": null})
                } else {
                    json!({"index": 0, "text": w, "finish_reason": null})
                };
                let v =
                    json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice]});
                events.push(encode_data(&v.to_string()));
            }
            let last = if op == Operation::Chat {
                json!({"index": 0, "delta": {}, "finish_reason": "stop"})
            } else {
                json!({"index": 0, "text": "", "finish_reason": "stop"})
            };
            let v = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [last]});
            events.push(encode_data(&v.to_string()));
            if include_usage {
                let v = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [], "usage": usage_json});
                events.push(encode_data(&v.to_string()));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            MockReply::Stream(events)
        }
    }
}
