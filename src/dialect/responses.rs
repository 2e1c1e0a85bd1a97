//! The OpenAI Responses dialect (`POST /v1/responses`, the one Codex speaks), and its stateless
//! mapping to and from OpenAI Chat, the pivot: a Responses request whose upstream does not serve
//! the Responses API is sent as a chat request, and the chat answer comes back as a response
//! object. Pure: JSON in, JSON out.
//!
//! - [`to_chat`]: a Responses request → a chat request. `instructions` and system/developer items
//!   become system messages, `function_call` items tool calls, `function_call_output` items tool
//!   messages; reasoning items of earlier turns are left out (encrypted for OpenAI's own models,
//!   meaningless to another). `previous_response_id` is refused: the translation keeps no state.
//! - [`from_chat`]: a whole chat completion → a response object (a message item with its text, a
//!   `function_call` item per tool call, `incomplete` when the output limit cut it).
//!
//! Not wired to the `/v1/responses` route yet (issue 12).

use serde_json::{Map, Value, json};

use crate::dialect::facts::{Malformed, ResponseMeta, Whole};
use crate::error::ApiError;
use crate::types::Usage;

/// Responses fields that are hints about storage or OpenAI's service, with nothing to carry to a
/// chat upstream: dropped (`store` and `include` only matter to OpenAI's own state).
const HINTS: &[&str] =
    &["include", "metadata", "prompt_cache_key", "safety_identifier", "service_tier", "store", "truncation", "user"];

/// The chat request for a Responses request `body`, sent to `model`.
pub fn to_chat(body: &Map<String, Value>, model: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let mut messages = Vec::new();
    if let Some(i) = body.get("instructions").and_then(Value::as_str).filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        _ => return Err(ApiError::invalid("input", "`input` must be a string or an array of items.")),
    }
    out.insert("messages".into(), Value::Array(messages));
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "input" | "instructions" => {}
            "temperature" | "top_p" | "parallel_tool_calls" => {
                out.insert(key.clone(), value.clone());
            }
            "max_output_tokens" => {
                out.insert("max_completion_tokens".into(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), value.clone());
                if value.as_bool() == Some(true) {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "tools" => {
                let tools = chat_tools(value)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => {
                let choice = match value {
                    Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => value.clone(),
                    _ => match (value.get("type").and_then(Value::as_str), value.get("name").and_then(Value::as_str)) {
                        (Some("function"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
                        _ => {
                            return Err(ApiError::invalid(
                                "tool_choice",
                                "`tool_choice` must be auto, none, required or a function.",
                            ));
                        }
                    },
                };
                out.insert("tool_choice".into(), choice);
            }
            "text" => {
                if let Some(format) = value.get("format") {
                    out.insert("response_format".into(), response_format(format)?);
                }
            }
            "reasoning" => {
                if let Some(effort) = value.get("effort").filter(|e| !e.is_null()) {
                    out.insert("reasoning_effort".into(), effort.clone());
                }
            }
            "previous_response_id" => {
                return Err(ApiError::invalid(
                    "previous_response_id",
                    "`previous_response_id` needs an upstream that serves the Responses API; this route's upstream does not (the translation keeps no state): send the whole conversation in `input`.",
                ));
            }
            k if HINTS.contains(&k) => {}
            k => {
                return Err(ApiError::invalid(
                    k,
                    format!("`{k}` cannot be expressed in an OpenAI Chat request; remove it to use this route."),
                ));
            }
        }
    }
    Ok(out)
}

/// One input item → chat messages (a function call joins the assistant message before it).
fn input_item(item: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("input[{i}]");
    match item.get("type").and_then(Value::as_str).unwrap_or("message") {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
            if !["user", "assistant", "system", "developer"].contains(&role) {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    format!("Role `{role}` is not a Responses message role."),
                ));
            }
            let content = match item.get("content") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Array(parts)) => {
                    let mut chat = Vec::new();
                    for (j, p) in parts.iter().enumerate() {
                        let at = format!("{at}.content[{j}]");
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text" | "text") => {
                                chat.push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or_default()}));
                            }
                            Some("input_image") => {
                                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                                    return Err(ApiError::invalid(
                                        at,
                                        "An input image needs its `image_url` (file ids need OpenAI's file store).",
                                    ));
                                };
                                let mut image = json!({"url": url});
                                if let (Some(d), Some(o)) = (p.get("detail"), image.as_object_mut()) {
                                    o.insert("detail".into(), d.clone());
                                }
                                chat.push(json!({"type": "image_url", "image_url": image}));
                            }
                            other => {
                                return Err(ApiError::invalid(
                                    at,
                                    format!(
                                        "A `{}` part cannot be expressed in an OpenAI Chat request.",
                                        other.unwrap_or("untyped")
                                    ),
                                ));
                            }
                        }
                    }
                    // Assistant and system messages take text: join it.
                    if role == "user" {
                        Value::Array(chat)
                    } else {
                        Value::String(chat.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("{at}.content"),
                        "Content must be a string or an array of parts.",
                    ));
                }
            };
            out.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let (Some(id), Some(name)) =
                (item.get("call_id").and_then(Value::as_str), item.get("name").and_then(Value::as_str))
            else {
                return Err(ApiError::invalid(at, "A function call item needs its `call_id` and `name`."));
            };
            let call = json!({"id": id, "type": "function", "function": {
                "name": name, "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
            }});
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some_and(Value::is_array) => {
                    if let Some(Value::Array(calls)) = last.get_mut("tool_calls") {
                        calls.push(call);
                    }
                }
                Some(last) if last["role"] == "assistant" => {
                    last["tool_calls"] = json!([call]);
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let Some(id) = item.get("call_id").and_then(Value::as_str) else {
                return Err(ApiError::invalid(format!("{at}.call_id"), "A function call output needs its `call_id`."));
            };
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        "reasoning" => {}
        other => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("A `{other}` item cannot be expressed in an OpenAI Chat request."),
            ));
        }
    }
    Ok(())
}

fn chat_tools(value: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = value else { return Err(ApiError::invalid("tools", "`tools` must be an array.")) };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t.get("name").and_then(Value::as_str).filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
            let Some(name) = name else {
                return Err(ApiError::invalid(
                    format!("tools[{i}]"),
                    "Only function tools can reach this route's upstream (hosted tools run on OpenAI's side).",
                ));
            };
            let mut f = json!({"name": name, "parameters": t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(o) = f.as_object_mut() {
                for k in ["description", "strict"] {
                    if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                        o.insert(k.into(), v.clone());
                    }
                }
            }
            Ok(json!({"type": "function", "function": f}))
        })
        .collect()
}

fn response_format(format: &Value) -> Result<Value, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = json!({"name": format.get("name").cloned().unwrap_or_else(|| json!("response"))});
            if let Some(o) = schema.as_object_mut() {
                for k in ["schema", "strict", "description"] {
                    if let Some(v) = format.get(k) {
                        o.insert(k.into(), v.clone());
                    }
                }
            }
            Ok(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => Err(ApiError::invalid("text.format.type", "`text.format.type` must be text, json_object or json_schema.")),
    }
}

/// The response object for a whole chat completion (the first choice), and what it says.
pub fn from_chat(body: &[u8], created_at: u64) -> Result<(Value, Whole), Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Malformed("the chat completion is not JSON"))?;
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or(Malformed("the chat completion has no choice"))?;
    let message = choice.get("message").ok_or(Malformed("the chat completion's choice has no message"))?;
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut output = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        output.push(json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        let f = call.get("function");
        output.push(json!({
            "type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id, "status": "completed",
            "name": f.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
            "arguments": f.and_then(|f| f.get("arguments")).cloned().unwrap_or_else(|| json!("")),
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
    let incomplete = match finish {
        "length" => Some("max_output_tokens"),
        "content_filter" => Some("content_filter"),
        _ => None,
    };
    let usage = v.get("usage").map(read_usage);
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let response = json!({
        "id": format!("resp_{id}"),
        "object": "response",
        "created_at": created_at,
        "status": if incomplete.is_some() { "incomplete" } else { "completed" },
        "incomplete_details": incomplete.map(|r| json!({"reason": r})),
        "error": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "usage": usage.map(|u| response_usage(u, v.get("usage"))),
    });
    let meta = ResponseMeta {
        id: Some(id.to_owned()).filter(|i| !i.is_empty()),
        model,
        finish_reasons: vec![finish.to_owned()],
    };
    Ok((response, Whole { usage, output_tokens: 0, meta }))
}

fn read_usage(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n(u.get("prompt_tokens")),
        completion_tokens: n(u.get("completion_tokens")),
        cached_tokens: n(u.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens"))),
    }
}

/// The Responses `usage` object (reasoning tokens carried over when the chat usage has them).
fn response_usage(u: Usage, chat: Option<&Value>) -> Value {
    let reasoning = chat
        .and_then(|c| c.get("completion_tokens_details"))
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Result<Value, ApiError> {
        let Value::Object(body) = v else { panic!("an object") };
        to_chat(&body, "m").map(Value::Object)
    }

    /// The shape of Codex's requests: instructions, developer and user messages, earlier
    /// reasoning, function calls and their outputs, function tools, streaming, no storage.
    #[test]
    fn a_codex_shaped_request_maps_to_chat() {
        let out = convert(json!({
            "model": "gpt-5-codex",
            "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List files."}, {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running."}]},
                {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call", "call_id": "call_2", "name": "shell", "arguments": "{\"command\":[\"pwd\"]}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.rs"},
                {"type": "function_call_output", "call_id": "call_2", "output": "/w"}
            ],
            "tools": [{"type": "function", "name": "shell", "description": "Run", "strict": false, "parameters": {"type": "object"}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "store": false,
            "stream": true,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k"
        }))
        .expect("converted");
        assert_eq!(
            out,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "You are Codex."},
                    {"role": "developer", "content": "Sandbox: read-only."},
                    {"role": "user", "content": [{"type": "text", "text": "List files."}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
                    {"role": "assistant", "content": "Running.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"pwd\"]}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "a.rs"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "/w"}
                ],
                "tools": [{"type": "function", "function": {"name": "shell", "description": "Run", "strict": false, "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "parallel_tool_calls": false,
                "reasoning_effort": "medium",
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn a_string_input_and_json_schema_format_map_and_state_is_refused() {
        let out = convert(json!({"input": "hi", "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true}}}))
        .expect("converted");
        assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(out["max_completion_tokens"], 50);
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}})
        );
        let refused = |v: Value| convert(v).err().map(|e| e.param).expect("refused");
        assert_eq!(
            refused(json!({"input": "hi", "previous_response_id": "resp_1"})).as_deref(),
            Some("previous_response_id")
        );
        assert_eq!(refused(json!({"input": "hi", "tools": [{"type": "web_search"}]})).as_deref(), Some("tools[0]"));
        assert_eq!(
            refused(json!({"input": [{"type": "item_reference", "id": "x"}]})).as_deref(),
            Some("input[0].type")
        );
        assert_eq!(refused(json!({"input": "hi", "background": true})).as_deref(), Some("background"));
    }

    #[test]
    fn a_chat_completion_becomes_a_response_object() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Running ls.",
              "tool_calls":[{"id":"call_9","type":"function","function":{"name":"shell","arguments":"{\"command\":[\"ls\"]}"}}]}}],
            "usage":{"prompt_tokens":30,"completion_tokens":8,"total_tokens":38,"prompt_tokens_details":{"cached_tokens":10},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        let (r, whole) = from_chat(body, 77).expect("converted");
        assert_eq!(
            r,
            json!({
                "id": "resp_chatcmpl-1", "object": "response", "created_at": 77, "status": "completed",
                "incomplete_details": null, "error": null, "model": "m", "parallel_tool_calls": true,
                "output": [
                    {"type": "message", "id": "msg_chatcmpl-1", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": "Running ls.", "annotations": []}]},
                    {"type": "function_call", "id": "fc_call_9", "call_id": "call_9", "status": "completed", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"}
                ],
                "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 8,
                          "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 38}
            })
        );
        assert_eq!(whole.usage, Some(Usage { prompt_tokens: 30, completion_tokens: 8, cached_tokens: 10 }));
        let cut = br#"{"id":"c","choices":[{"message":{"content":"abc"},"finish_reason":"length"}]}"#;
        let (r, _) = from_chat(cut, 0).expect("converted");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert!(from_chat(b"[]", 0).is_err());
    }
}
