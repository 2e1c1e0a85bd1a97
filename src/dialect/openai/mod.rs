//! The OpenAI dialect: Chat Completions, Completions and Embeddings, as OpenAI and every
//! OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, …) speak them.

pub mod mock;
pub mod request;
pub mod usage;
pub mod view;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::dialect::facts::{Capability, Chunk, Event, Malformed};
use crate::error::ApiError;
use crate::types::Operation;

/// Azure OpenAI speaks this dialect at other addresses: a deployment (the model's name) in the
/// path, the API version in the query, the key in a header of its own.
pub mod azure {
    use crate::types::Operation;

    /// The header that carries the key.
    pub const KEY_HEADER: &str = "api-key";

    /// The path of `op` on `deployment`, below the resource root (`https://NAME.openai.azure.com`).
    /// The configuration check keeps deployment names and versions to URL-safe characters.
    pub fn path(op: Operation, deployment: &str, api_version: &str) -> String {
        format!("/openai/deployments/{deployment}{}?api-version={api_version}", super::path(op))
    }
}

/// The path an operation is posted to, below a base URL that ends in the API version (`…/v1`).
pub fn path(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "/chat/completions",
        Operation::Completions => "/completions",
        Operation::Embeddings => "/embeddings",
    }
}

/// The upstream body: the client's bytes with the `model` value replaced and, when `ask_usage`,
/// `stream_options.include_usage` set. Everything else is forwarded byte for byte. Falls back to
/// serialising the parsed body if the bytes hold a surprise.
pub fn upstream_body(raw: &[u8], body: &Map<String, Value>, model: &str, ask_usage: bool) -> Result<Bytes, ApiError> {
    if let Some(b) = splice_body(raw, body, model, ask_usage) {
        return Ok(Bytes::from(b));
    }
    let mut body = body.clone();
    body.insert("model".into(), Value::String(model.to_owned()));
    if ask_usage {
        match body.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
    }
    serde_json::to_vec(&body).map(Bytes::from).map_err(|_| ApiError::internal())
}

fn splice_body(raw: &[u8], body: &Map<String, Value>, model: &str, ask_usage: bool) -> Option<Vec<u8>> {
    use crate::dialect::json::{member, splice};
    let m = member(raw, "model")?;
    let mut edits = vec![(m.value?, serde_json::to_vec(model).ok()?)];
    if ask_usage {
        let options = member(raw, "stream_options")?;
        match (options.value, body.get("stream_options")) {
            (Some(range), Some(Value::Object(o))) => {
                let mut o = o.clone();
                o.insert("include_usage".into(), Value::Bool(true));
                edits.push((range, serde_json::to_vec(&o).ok()?));
            }
            (Some(range), _) => edits.push((range, br#"{"include_usage":true}"#.to_vec())),
            (None, _) => edits.push((m.open..m.open, br#""stream_options":{"include_usage":true},"#.to_vec())),
        }
    }
    splice(raw, edits)
}

/// Reads the data of one stream event: `[DONE]`, or a chunk object.
pub fn decode_event(data: &[u8]) -> Result<Event<'_>, Malformed> {
    if data.trim_ascii() == b"[DONE]" {
        return Ok(Event::Done);
    }
    let s = usage::summarize_chunk(data).map_err(|_| Malformed("the upstream sent an invalid event"))?;
    Ok(Event::Chunk(Chunk {
        text: s.text,
        has_output: s.has_output,
        usage_only: s.empty_choices && s.usage.is_some(),
        usage: s.usage,
        meta: s.meta,
    }))
}

/// The message of an error body (`error.message`, or a bare `message` or `error` string).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let msg = v.pointer("/error/message").or_else(|| v.get("message")).or_else(|| v.get("error"))?.as_str()?;
    Some(msg.to_owned())
}

/// The event that ends a broken stream: one `data:` event with the error object, no `[DONE]`.
pub fn error_event(err: &ApiError) -> Bytes {
    crate::dialect::sse::encode_data(&err.body())
}

/// A chat assistant message: its text (null when it only calls tools) and its tool calls.
pub fn assistant_message(text: String, calls: Vec<Value>) -> Value {
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut m = json!({"role": "assistant", "content": content});
    if !calls.is_empty()
        && let Some(o) = m.as_object_mut()
    {
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    m
}

/// A chat chunk of the first choice.
pub fn chunk(id: &Value, created: u64, model: &Value, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// The usage-only chunk that ends a stream whose client asked for it.
pub fn usage_chunk(id: &Value, created: u64, model: &Value, usage: Value) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage})
}

/// A tool call's arguments as the object the other dialects take: empty is `{}`; anything but a
/// JSON object is `None`.
pub fn arguments_object(args: &str) -> Option<Value> {
    if args.trim().is_empty() {
        return Some(json!({}));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// The message of an error a stream carries as an event (`{"error":{"message":…}}`).
pub fn stream_error(event: &Value) -> Option<String> {
    let e = event.get("error")?;
    Some(e.get("message").and_then(Value::as_str).unwrap_or("the upstream stream failed").to_owned())
}

/// The capabilities a request needs: tools, vision (image parts), JSON mode.
pub fn required_capabilities(body: &Map<String, Value>) -> Vec<Capability> {
    let mut out = Vec::new();
    if body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        out.push(Capability::Tools);
    }
    let has_image = body.get("messages").and_then(Value::as_array).is_some_and(|msgs| {
        msgs.iter().any(|m| {
            m.get("content").and_then(Value::as_array).is_some_and(|parts| {
                parts.iter().any(|p| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "input_image")))
            })
        })
    });
    if has_image {
        out.push(Capability::Vision);
    }
    if matches!(
        body.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str),
        Some("json_object" | "json_schema")
    ) {
        out.push(Capability::Json);
    }
    out
}

/// An embeddings request for `inputs` (an autoselect's selection call).
pub fn embeddings_request(model: &str, inputs: &[&str]) -> Vec<u8> {
    json!({"model": model, "input": inputs}).to_string().into_bytes()
}

/// A short, deterministic chat request (an autoselect's selection call).
pub fn selection_request(model: &str, system: &str, user: &str, max_tokens: u32) -> Vec<u8> {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": false,
    })
    .to_string()
    .into_bytes()
}

/// The text of the first choice of a chat answer.
pub fn answer_text(reply: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(reply).ok()?;
    v.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_owned)
}

#[expect(clippy::as_conversions, reason = "embedding components are f32 precision; there is no From")]
fn to_f32(f: f64) -> f32 {
    f as f32
}

/// Reads `data[i].embedding` of an embeddings answer for `n` inputs: every vector present, of
/// one non-zero dimension.
pub fn read_vectors(reply: &[u8], n: usize) -> Option<Vec<Vec<f32>>> {
    let reply: Value = serde_json::from_slice(reply).ok()?;
    vectors(&reply, n)
}

fn vectors(reply: &Value, n: usize) -> Option<Vec<Vec<f32>>> {
    let data = reply.get("data")?.as_array()?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for (k, item) in data.iter().enumerate() {
        let i = item.get("index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or(k);
        let v: Vec<f32> =
            item.get("embedding")?.as_array()?.iter().map(|x| x.as_f64().map(to_f32)).collect::<Option<_>>()?;
        *out.get_mut(i)? = Some(v);
    }
    let out: Vec<Vec<f32>> = out.into_iter().collect::<Option<_>>()?;
    let dims = out.first().map(Vec::len)?;
    (dims > 0 && out.iter().all(|v| v.len() == dims)).then_some(out)
}

/// The `/v1/models` list of `(id, owner)` pairs.
pub fn model_list(models: impl IntoIterator<Item = (String, String)>) -> Value {
    let data: Vec<Value> = models
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(raw: &[u8]) -> Map<String, Value> {
        serde_json::from_slice(raw).unwrap()
    }

    #[test]
    fn passthrough_body_changes_only_model_and_usage() {
        let raw =
            br#"{ "model" : "alias", "messages":[{"role":"user","content":"1.0e5 \u00e9"}], "stream":true, "x":1.50}"#;
        let body = obj(raw);
        let out = upstream_body(raw, &body, "real/m", false).unwrap();
        assert_eq!(
            &out[..],
            &br#"{ "model" : "real/m", "messages":[{"role":"user","content":"1.0e5 \u00e9"}], "stream":true, "x":1.50}"#[..]
        );
        let out = upstream_body(raw, &body, "m", true).unwrap();
        assert!(out.starts_with(br#"{"stream_options":{"include_usage":true}, "model" : "m""#), "{out:?}");
        let raw = br#"{"model":"a","stream_options":{"other":1},"stream":true}"#;
        let out = upstream_body(raw, &obj(raw), "b", true).unwrap();
        assert_eq!(&out[..], &br#"{"model":"b","stream_options":{"other":1,"include_usage":true},"stream":true}"#[..]);
        let raw = br#"{"model":"a","stream_options":null}"#;
        let out = upstream_body(raw, &obj(raw), "b", true).unwrap();
        assert_eq!(&out[..], &br#"{"model":"b","stream_options":{"include_usage":true}}"#[..]);
    }

    #[test]
    fn events_and_errors() {
        assert_eq!(decode_event(b" [DONE] "), Ok(Event::Done));
        let Ok(Event::Chunk(c)) = decode_event(br#"{"id":"r1","model":"m","choices":[],"usage":{"prompt_tokens":1}}"#)
        else {
            panic!("not a chunk")
        };
        assert!(c.usage_only && c.meta.id.as_deref() == Some("r1"));
        assert!(decode_event(b"nope").is_err());
        assert_eq!(error_message(br#"{"error":{"message":"bad"}}"#).as_deref(), Some("bad"));
        assert_eq!(error_message(b"<html>"), None);
    }

    #[test]
    fn vectors_are_read_whole_or_not_at_all() {
        let reply = json!({"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]});
        assert_eq!(vectors(&reply, 2), Some(vec![vec![1.0, 0.0], vec![0.0, 1.0]]));
        assert_eq!(vectors(&reply, 3), None, "a missing vector");
        assert_eq!(vectors(&json!({"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}), 2), None);
        assert_eq!(vectors(&json!({"data": [{"embedding": "AAAA"}]}), 1), None);
        assert_eq!(vectors(&json!({"error": {}}), 1), None);
    }
}
