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
//! - [`ResponseEvents`]: chat chunks → Responses stream events (`response.created`, the message
//!   item's `output_text` deltas, each function call's `function_call_arguments` deltas, the
//!   `.done` events, then `response.completed` or `response.incomplete` with the usage).
//!
//! Served on `/v1/responses` through [`crate::dialect::bridge`]: to an `openai` provider that
//! serves the Responses API (`responses_api = true`) the request passes as it is; every other
//! upstream is reached through Chat, stateless ([`to_chat`]; what needs OpenAI's stored state is
//! refused by name). [`ChatTap`] reads a passed-through stream's usage; [`to_chat_text`] is the
//! counting pivot of a request only a Responses upstream can carry.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::dialect::facts::{Malformed, ResponseMeta, Step, StreamError, Whole};
use crate::dialect::openai;
use crate::error::ApiError;
use crate::types::Usage;

/// The path of the Responses API below an OpenAI endpoint (`https://api.openai.com/v1`).
pub const PATH: &str = "/responses";

/// Responses fields that are hints about storage or OpenAI's service, with nothing to carry to a
/// chat upstream: dropped (`store` and `include` only matter to OpenAI's own state).
const HINTS: &[&str] = &[
    "client_metadata",
    "include",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "store",
    "stream_options",
    "truncation",
    "user",
];

/// Tools the model is offered that run on OpenAI's side (or, for `local_shell`, that only
/// OpenAI's models are trained to call): a chat upstream cannot run them, so they are not offered
/// to it — the model answers without them (Codex offers `web_search` by default).
const HOSTED_TOOLS: &[&str] = &[
    "code_interpreter",
    "computer_use_preview",
    "file_search",
    "image_generation",
    "local_shell",
    "mcp",
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
];

/// What a request's tools say about the calls that come back: which are custom (freeform) tools
/// — their calls reach a chat upstream as function calls with one string argument, `input`, and
/// come back as `custom_tool_call` items — and which live in a namespace (Codex's
/// `{"type":"namespace","tools":[…]}`: flattened for a chat upstream, their calls come back
/// naming it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolKinds {
    /// Names of custom tools.
    pub custom: Vec<String>,
    /// (tool, namespace) of namespaced tools.
    pub namespaced: Vec<(String, String)>,
}

impl ToolKinds {
    /// The kinds of a Responses request's tools.
    pub fn of(body: &Map<String, Value>) -> Self {
        let mut kinds = Self::default();
        let mut visit = |t: &Value, ns: Option<&str>| {
            let Some(name) = t.get("name").and_then(Value::as_str) else { return };
            if t.get("type").and_then(Value::as_str) == Some("custom") {
                kinds.custom.push(name.to_owned());
            }
            if let Some(ns) = ns {
                kinds.namespaced.push((name.to_owned(), ns.to_owned()));
            }
        };
        for t in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
            if t.get("type").and_then(Value::as_str) == Some("namespace") {
                let ns = t.get("name").and_then(Value::as_str);
                for inner in t.get("tools").and_then(Value::as_array).into_iter().flatten() {
                    visit(inner, ns);
                }
            } else {
                visit(t, None);
            }
        }
        kinds
    }

    fn is_custom(&self, name: &str) -> bool {
        self.custom.iter().any(|c| c == name)
    }

    fn namespace(&self, name: &str) -> Option<String> {
        self.namespaced.iter().find(|(t, _)| t == name).map(|(_, ns)| ns.clone())
    }
}

/// The raw input of a custom tool's call from its chat arguments (`{"input": "…"}`; arguments
/// that are not that object are the input themselves).
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => match o.get("input") {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

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
            // Many OpenAI-compatible servers know no `developer` role; OpenAI reads `system` alike.
            let role = if role == "developer" { "system" } else { role };
            out.push(json!({"role": role, "content": content}));
        }
        kind @ ("function_call" | "custom_tool_call" | "local_shell_call") => {
            let name = match kind {
                "local_shell_call" => Some("local_shell"),
                _ => item.get("name").and_then(Value::as_str),
            };
            let (Some(id), Some(name)) = (item.get("call_id").and_then(Value::as_str), name) else {
                return Err(ApiError::invalid(at, "A call item needs its `call_id` and `name`."));
            };
            let arguments = match kind {
                "custom_tool_call" => {
                    json!({"input": item.get("input").and_then(Value::as_str).unwrap_or_default()}).to_string()
                }
                "local_shell_call" => item.get("action").cloned().unwrap_or_else(|| json!({})).to_string(),
                _ => item.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_owned(),
            };
            let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
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
        "function_call_output" | "custom_tool_call_output" => {
            let Some(id) = item.get("call_id").and_then(Value::as_str) else {
                return Err(ApiError::invalid(format!("{at}.call_id"), "A call output needs its `call_id`."));
            };
            // Text, or parts: their text joins the tool message, their images follow it in a
            // user message (a chat tool message holds only text).
            let mut images = Vec::new();
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = Vec::new();
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_image") => {
                                if let Some(url) = p.get("image_url").and_then(Value::as_str) {
                                    images.push(json!({"type": "image_url", "image_url": {"url": url}}));
                                }
                            }
                            _ => text.push(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                        }
                    }
                    text.join("\n")
                }
                Some(other) => other.to_string(),
                None => String::new(),
            };
            out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            if !images.is_empty() {
                out.push(json!({"role": "user", "content": images}));
            }
        }
        // Earlier reasoning is the upstream's own (encrypted for OpenAI); hosted tools' calls
        // ran on OpenAI's side: neither is context a chat upstream can read.
        "reasoning" | "web_search_call" | "file_search_call" | "image_generation_call" | "code_interpreter_call" => {}
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
    // A namespace's tools are offered as tools of their own (their calls come back naming it).
    let mut flat = Vec::new();
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) == Some("namespace") {
            let Some(inner) = t.get("tools").and_then(Value::as_array) else {
                return Err(ApiError::invalid(format!("tools[{i}].tools"), "A namespace lists its tools in `tools`."));
            };
            flat.extend(inner.iter().map(|t| (i, t)));
        } else {
            flat.push((i, t));
        }
    }
    flat.into_iter()
        .filter(|(_, t)| !t.get("type").and_then(Value::as_str).is_some_and(|k| HOSTED_TOOLS.contains(&k)))
        .map(|(i, t)| {
            let kind = t.get("type").and_then(Value::as_str);
            let name = t.get("name").and_then(Value::as_str).filter(|_| matches!(kind, Some("function" | "custom")));
            let Some(name) = name else {
                return Err(ApiError::invalid(
                    format!("tools[{i}]"),
                    "Only function and custom tools can reach this route's upstream.",
                ));
            };
            if kind == Some("custom") {
                return Ok(custom_function(name, t));
            }
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

/// A custom (freeform) tool as a chat function taking its input as one string, `input`; its
/// grammar, if it has one, goes in the argument's description.
fn custom_function(name: &str, t: &Value) -> Value {
    let mut about = String::from("The tool's input, as free-form text (not JSON).");
    if let Some(f) = t.get("format").filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar")) {
        let syntax = f.get("syntax").and_then(Value::as_str).unwrap_or("lark");
        let definition = f.get("definition").and_then(Value::as_str).unwrap_or_default();
        about = format!("{about} It must follow this {syntax} grammar:\n{definition}");
    }
    let mut f = json!({"name": name, "parameters": {
        "type": "object",
        "properties": {"input": {"type": "string", "description": about}},
        "required": ["input"],
        "additionalProperties": false,
    }});
    if let (Some(d), Some(o)) = (t.get("description").filter(|d| !d.is_null()), f.as_object_mut()) {
        o.insert("description".into(), d.clone());
    }
    json!({"type": "function", "function": f})
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

/// The response object for a whole chat completion (the first choice), and what it says; calls
/// of the request's `custom` tools are `custom_tool_call` items.
pub fn from_chat(body: &[u8], created_at: u64, tools: &ToolKinds) -> Result<(Value, Whole), Malformed> {
    let v = openai::view::read_completion(body)?;
    let choice = v.choice().ok_or(Malformed("the chat completion has no choice"))?;
    let message = choice.message.as_ref().ok_or(Malformed("the chat completion's choice has no message"))?;
    let id = v.id.as_deref().unwrap_or_default();
    let mut output = Vec::new();
    if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
        output.push(json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }));
    }
    for call in message.tool_calls.iter().flatten() {
        let f = call.function.as_ref();
        let item = CallItem {
            chat_index: 0,
            output_index: 0,
            call_id: call.id.as_deref().unwrap_or_default().to_owned(),
            name: f.and_then(|f| f.name.as_deref()).unwrap_or_default().to_owned(),
            arguments: f.and_then(|f| f.arguments.as_deref()).unwrap_or_default().to_owned(),
            custom: false,
            namespace: None,
        };
        let (custom, namespace) = (tools.is_custom(&item.name), tools.namespace(&item.name));
        output.push(CallItem { custom, namespace, ..item }.item("completed"));
    }
    let finish = choice.finish_reason.as_deref().unwrap_or("stop");
    let incomplete = match finish {
        "length" => Some("max_output_tokens"),
        "content_filter" => Some("content_filter"),
        _ => None,
    };
    let usage = v.usage;
    let model = v.model.as_deref().map(str::to_owned);
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
        "usage": usage.map(|u| usage_object(u.usage, u.reasoning_tokens)),
    });
    let meta = ResponseMeta {
        id: Some(id.to_owned()).filter(|i| !i.is_empty()),
        model,
        finish_reasons: vec![finish.to_owned()],
    };
    Ok((response, Whole { usage: usage.map(|u| u.usage), output_tokens: 0, meta }))
}

/// What a whole response object from a Responses upstream says (relayed as it is).
pub fn whole_facts(body: &[u8]) -> Result<Whole, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Malformed("the response is not JSON"))?;
    if v.get("object").and_then(Value::as_str) != Some("response") {
        return Err(Malformed("the answer is not a response object"));
    }
    Ok(Whole {
        usage: v.get("usage").filter(|u| u.is_object()).map(openai::usage::read_usage),
        output_tokens: 0,
        meta: meta_of(&v),
    })
}

fn meta_of(response: &Value) -> ResponseMeta {
    let s = |k: &str| response.get(k).and_then(Value::as_str).map(str::to_owned);
    let finish = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => Some("length"),
        Some("completed") => Some("stop"),
        _ => None,
    };
    ResponseMeta { id: s("id"), model: s("model"), finish_reasons: finish.map(str::to_owned).into_iter().collect() }
}

/// Reads a Responses upstream's events for the usage tap, as Chat chunk data (the client gets the
/// events as they are): text deltas as content, argument deltas as tool-call text, the final
/// usage as the usage chunk and `[DONE]`; `response.failed` and `error` end the stream.
#[derive(Debug, Default)]
pub struct ChatTap {
    id: String,
    model: String,
}

impl ChatTap {
    /// One event's data → Chat chunk data.
    pub fn event(&mut self, data: &[u8]) -> Result<Vec<bytes::Bytes>, StreamError> {
        let v: Value = serde_json::from_slice(data).map_err(|_| Malformed("a Responses stream event is not JSON"))?;
        let chunk = |delta: Value, usage: Option<Value>| {
            let mut c = json!({"id": self.id, "model": self.model, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
            if let Some(u) = usage {
                c["choices"] = json!([]);
                c["usage"] = u;
            }
            bytes::Bytes::from(c.to_string())
        };
        let mut out = Vec::new();
        match v.get("type").and_then(Value::as_str) {
            Some("response.created") => {
                let r = v.get("response");
                let s = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
                (self.id, self.model) = (s("id"), s("model"));
            }
            Some("response.output_text.delta" | "response.refusal.delta") => {
                let d = v.get("delta").and_then(Value::as_str).unwrap_or_default();
                out.push(chunk(json!({"content": d}), None));
            }
            Some("response.function_call_arguments.delta" | "response.custom_tool_call_input.delta") => {
                let d = v.get("delta").and_then(Value::as_str).unwrap_or_default();
                out.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": d}}]}), None));
            }
            Some("response.completed" | "response.incomplete") => {
                let r = v.get("response").ok_or(Malformed("a final event without its response"))?;
                let meta = meta_of(r);
                let finish = meta.finish_reasons.first().cloned().unwrap_or_else(|| "stop".into());
                let mut last = json!({"id": self.id, "model": self.model, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]});
                if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
                    last["usage"] = openai::usage::usage_object(openai::usage::read_usage(u));
                }
                out.push(bytes::Bytes::from(last.to_string()));
                out.push(bytes::Bytes::from_static(b"[DONE]"));
            }
            Some("response.failed") => {
                let message =
                    v.pointer("/response/error/message").and_then(Value::as_str).unwrap_or("the response failed");
                return Err(StreamError::Upstream(message.to_owned()));
            }
            Some("error") => {
                let message = v.get("message").and_then(Value::as_str).unwrap_or("the upstream sent an error event");
                return Err(StreamError::Upstream(message.to_owned()));
            }
            _ => {}
        }
        Ok(out)
    }
}

/// The Chat body the phases read for a Responses request that [`to_chat`] cannot map (stored
/// state such as `previous_response_id`, an item only OpenAI keeps), which can still go to a
/// Responses upstream as it is: the instructions and every input item as text, to count and
/// classify; the output limit and streaming kept; function tools by name.
pub fn to_chat_text(body: &Map<String, Value>, model: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let mut messages = Vec::new();
    if let Some(i) = body.get("instructions").and_then(Value::as_str).filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("assistant") => "assistant",
                    Some("system" | "developer") => "system",
                    _ => "user",
                };
                let text = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|p| p.get("text").and_then(Value::as_str).map_or_else(|| p.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => item.to_string(),
                };
                messages.push(json!({"role": role, "content": text}));
            }
        }
        None if body.contains_key("previous_response_id") => {}
        _ => return Err(ApiError::invalid("input", "`input` must be a string or an array of items.")),
    }
    if messages.is_empty() {
        messages.push(json!({"role": "user", "content": ""}));
    }
    out.insert("messages".into(), Value::Array(messages));
    crate::dialect::counting_pivot_rest(body, &mut out, "max_output_tokens", "parameters");
    Ok(out)
}

/// The Responses `usage` object for `u` and its reasoning part.
fn usage_object(u: Usage, reasoning: u64) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// The message item of a streamed response.
#[derive(Debug)]
struct TextItem {
    output_index: u64,
    id: String,
    text: String,
}

/// A function call item of a streamed response.
#[derive(Debug)]
struct CallItem {
    chat_index: u64,
    output_index: u64,
    call_id: String,
    name: String,
    arguments: String,
    /// A call of a custom (freeform) tool: a `custom_tool_call` item with the raw input.
    custom: bool,
    /// The namespace of a namespaced tool.
    namespace: Option<String>,
}

impl CallItem {
    fn item(&self, status: &str) -> Value {
        if self.custom {
            let input = if status == "completed" { custom_input(&self.arguments) } else { String::new() };
            return json!({"type": "custom_tool_call", "id": format!("ctc_{}", self.call_id), "call_id": self.call_id,
                   "name": self.name, "input": input, "status": status});
        }
        let mut item = json!({"type": "function_call", "id": format!("fc_{}", self.call_id), "call_id": self.call_id,
               "name": self.name, "arguments": self.arguments, "status": status});
        if let Some(ns) = &self.namespace {
            item["namespace"] = json!(ns);
        }
        item
    }
}

impl TextItem {
    fn item(&self, status: &str) -> Value {
        json!({"type": "message", "id": self.id, "status": status, "role": "assistant",
               "content": [{"type": "output_text", "text": self.text, "annotations": []}]})
    }
}

/// The converter of one chat stream into Responses events.
#[derive(Debug)]
pub struct ResponseEvents {
    created_at: u64,
    sequence: u64,
    started: bool,
    id: String,
    model: Value,
    message: Option<TextItem>,
    /// Function call items still open.
    calls: Vec<CallItem>,
    /// Chat indexes of the calls already completed.
    finished_calls: Vec<u64>,
    /// Completed items, in order.
    items: Vec<Value>,
    next_output: u64,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
    /// The request's tools' kinds.
    tools: ToolKinds,
}

impl ResponseEvents {
    /// A converter stamping the response with `created_at`, for a request whose custom tools are
    /// `custom`.
    pub fn new(created_at: u64, tools: ToolKinds) -> Self {
        Self {
            created_at,
            sequence: 0,
            started: false,
            id: String::new(),
            model: Value::Null,
            message: None,
            calls: Vec::new(),
            finished_calls: Vec::new(),
            items: Vec::new(),
            next_output: 0,
            finish: None,
            usage: None,
            done: false,
            tools,
        }
    }

    /// Whether the closing events were sent.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Converts one event's data (a chat chunk, or `[DONE]`).
    pub fn event(&mut self, data: &[u8]) -> Result<Step, StreamError> {
        let mut step = Step::default();
        let Some(v) = openai::view::read(data)? else {
            self.close(&mut step);
            return Ok(step);
        };
        if !self.started {
            self.id = format!("resp_{}", v.id.as_deref().unwrap_or_default());
            self.model = v.model.as_deref().map_or(Value::Null, |m| Value::String(m.to_owned()));
            self.start(&mut step);
        }
        if let Some(u) = v.usage {
            self.usage = Some(usage_object(u.usage, u.reasoning_tokens));
        }
        let Some(choice) = v.choice() else { return Ok(step) };
        let delta = choice.delta.as_ref();
        if let Some(text) = delta.and_then(|d| d.content.as_deref()).filter(|t| !t.is_empty()) {
            self.text(text, &mut step);
        }
        for call in delta.and_then(|d| d.tool_calls.as_ref()).into_iter().flatten() {
            self.call(call, &mut step)?;
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(f.to_owned());
        }
        Ok(step)
    }

    /// The closing events of a stream that ended without `[DONE]` after its choice finished;
    /// nothing if it was closed or never finished.
    pub fn end(&mut self) -> Step {
        let mut step = Step::default();
        if self.finish.is_some() {
            self.close(&mut step);
        }
        step
    }

    /// The events that end a broken stream: `response.failed`, its response carrying the error
    /// (`code`, `message`), after the opening events when none were sent yet. Idempotent: a
    /// closed stream gets nothing.
    pub fn fail(&mut self, err: &ApiError) -> Step {
        let mut step = Step::default();
        if self.done {
            return step;
        }
        if !self.started {
            self.start(&mut step);
        }
        self.done = true;
        let items = std::mem::take(&mut self.items);
        let mut r = self.response("failed", items);
        r["error"] = json!({"code": err.code.row().2, "message": err.message});
        self.emit(&mut step, "response.failed", json!({"response": r}));
        step
    }

    /// `response.created` and `response.in_progress`: every stream opens with them.
    fn start(&mut self, step: &mut Step) {
        self.started = true;
        let r = self.response("in_progress", Vec::new());
        self.emit(step, "response.created", json!({"response": r}));
        self.emit(step, "response.in_progress", json!({"response": r}));
    }

    fn text(&mut self, text: &str, step: &mut Step) {
        step.text.push_str(text);
        if self.message.is_none() {
            // Items follow one another: the calls before this text are complete.
            self.finish_calls(step);
            let index = self.next_output;
            let item = TextItem { output_index: index, id: format!("msg_{}_{index}", self.id), text: String::new() };
            self.next_output += 1;
            let id = item.id.clone();
            let added = json!({"output_index": index, "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}});
            self.emit(step, "response.output_item.added", added);
            let part = json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}});
            self.emit(step, "response.content_part.added", part);
            self.message = Some(item);
        }
        let Some(m) = self.message.as_mut() else { return };
        m.text.push_str(text);
        let (id, index) = (m.id.clone(), m.output_index);
        let frame = self.delta_event("response.output_text.delta", &id, index, true, text);
        step.frames.push(frame);
    }

    /// A text or arguments delta event, written directly (a stream's most frequent event: no
    /// JSON tree built and walked for it), in `emit`'s field order.
    fn delta_event(&mut self, name: &str, item_id: &str, output_index: u64, text: bool, delta: &str) -> Bytes {
        let mut out = Vec::with_capacity(delta.len() + item_id.len() + 160);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        self.sequence += 1;
        out.extend_from_slice(b",\"item_id\":");
        openai::view::push_json_str(&mut out, item_id);
        out.extend_from_slice(b",\"output_index\":");
        out.extend_from_slice(output_index.to_string().as_bytes());
        if text {
            out.extend_from_slice(b",\"content_index\":0");
        }
        out.extend_from_slice(b",\"delta\":");
        openai::view::push_json_str(&mut out, delta);
        if text {
            out.extend_from_slice(b",\"logprobs\":[]");
        }
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }

    fn call(&mut self, call: &openai::view::CallDelta<'_>, step: &mut Step) -> Result<(), StreamError> {
        let n = call.index.unwrap_or(0);
        let f = call.function.as_ref();
        if !self.calls.iter().any(|c| c.chat_index == n) {
            if self.finished_calls.contains(&n) {
                return Err(Malformed("interleaved tool call arguments").into());
            }
            let name = f.and_then(|f| f.name.as_deref()).unwrap_or_default();
            if name.is_empty() {
                return Err(Malformed("a tool call's first delta has no name").into());
            }
            // Items follow one another: the text and the calls before this one are complete.
            self.finish_message(step);
            self.finish_calls(step);
            let call_id = call.id.as_deref().map_or_else(|| format!("call_{}_{n}", self.id), str::to_owned);
            let item = CallItem {
                chat_index: n,
                output_index: self.next_output,
                call_id,
                name: name.to_owned(),
                arguments: String::new(),
                custom: self.tools.is_custom(name),
                namespace: self.tools.namespace(name),
            };
            self.next_output += 1;
            step.text.push_str(name);
            let added = json!({"output_index": item.output_index, "item": item.item("in_progress")});
            self.emit(step, "response.output_item.added", added);
            self.calls.push(item);
        }
        let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or_default();
        if let Some(c) = self.calls.iter_mut().find(|c| c.chat_index == n).filter(|_| !args.is_empty()) {
            c.arguments.push_str(args);
            step.text.push_str(args);
            // A custom call's input is known whole at its end (its arguments are JSON around it).
            if !c.custom {
                let (item_id, index) = (format!("fc_{}", c.call_id), c.output_index);
                let frame = self.delta_event("response.function_call_arguments.delta", &item_id, index, false, args);
                step.frames.push(frame);
            }
        }
        Ok(())
    }

    /// Completes the open message item.
    fn finish_message(&mut self, step: &mut Step) {
        let Some(m) = self.message.take() else { return };
        let at = json!({"item_id": m.id, "output_index": m.output_index, "content_index": 0});
        let mut done = at.clone();
        done["text"] = json!(m.text);
        done["logprobs"] = json!([]);
        self.emit(step, "response.output_text.done", done);
        let mut part = at;
        part["part"] = json!({"type": "output_text", "text": m.text, "annotations": []});
        self.emit(step, "response.content_part.done", part);
        let item = m.item("completed");
        self.emit(step, "response.output_item.done", json!({"output_index": m.output_index, "item": item}));
        self.items.push(item);
    }

    /// Completes the open function call items.
    fn finish_calls(&mut self, step: &mut Step) {
        for c in std::mem::take(&mut self.calls) {
            let item = c.item("completed");
            if c.custom {
                let d = json!({"item_id": item["id"], "output_index": c.output_index, "input": item["input"]});
                self.emit(step, "response.custom_tool_call_input.done", d);
            } else {
                let d = json!({"item_id": item["id"], "output_index": c.output_index, "arguments": c.arguments});
                self.emit(step, "response.function_call_arguments.done", d);
            }
            self.emit(step, "response.output_item.done", json!({"output_index": c.output_index, "item": item}));
            self.finished_calls.push(c.chat_index);
            self.items.push(item);
        }
    }

    fn close(&mut self, step: &mut Step) {
        if self.done {
            return;
        }
        if !self.started {
            self.start(step);
        }
        self.done = true;
        self.finish_message(step);
        self.finish_calls(step);
        let incomplete = matches!(self.finish.as_deref(), Some("length" | "content_filter"));
        let items = std::mem::take(&mut self.items);
        let mut r = self.response(if incomplete { "incomplete" } else { "completed" }, items);
        if incomplete {
            let reason = if self.finish.as_deref() == Some("length") { "max_output_tokens" } else { "content_filter" };
            r["incomplete_details"] = json!({"reason": reason});
        }
        // A completed response always carries usage (zeros when the upstream reported none:
        // the gateway's own record counts the tokens).
        if r["usage"].is_null() {
            r["usage"] = usage_object(Usage::default(), 0);
        }
        let name = if incomplete { "response.incomplete" } else { "response.completed" };
        self.emit(step, name, json!({"response": r}));
    }

    fn response(&self, status: &str, output: Vec<Value>) -> Value {
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "incomplete_details": null, "error": null, "model": self.model, "output": output,
            "parallel_tool_calls": true, "usage": self.usage,
        })
    }

    /// One named event: `type` and `sequence_number` first, then `fields`.
    fn emit(&mut self, step: &mut Step, name: &str, fields: Value) {
        // Written as `{"type":…,"sequence_number":…,` and the fields' own serialisation after its
        // `{`: no second map built to put the two first.
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":");
        openai::view::push_json_str(&mut out, name);
        out.extend_from_slice(b",\"sequence_number\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        self.sequence += 1;
        match &fields {
            Value::Object(f) if !f.is_empty() => {
                // Serialising a `Value` cannot fail.
                let inner = serde_json::to_vec(&fields).unwrap_or_default();
                out.push(b',');
                out.extend_from_slice(inner.get(1..).unwrap_or_default());
            }
            _ => out.push(b'}'),
        }
        out.extend_from_slice(b"\n\n");
        step.frames.push(Bytes::from(out));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// The delta events written directly are the events `emit` builds of the same values.
    #[test]
    fn written_delta_events_equal_built_ones() {
        for delta in ["plain", "quote \" and \\ and \n", "\u{1F916}\u{0001}"] {
            let (mut a, mut b) =
                (ResponseEvents::new(1, ToolKinds::default()), ResponseEvents::new(1, ToolKinds::default()));
            a.sequence = 7;
            b.sequence = 7;
            let fast = a.delta_event("response.output_text.delta", "msg_\"x", 2, true, delta);
            let mut step = Step::default();
            b.emit(
                &mut step,
                "response.output_text.delta",
                json!({"item_id": "msg_\"x", "output_index": 2, "content_index": 0, "delta": delta, "logprobs": []}),
            );
            assert_eq!(fast, step.frames[0], "{delta:?}");
            let fast = a.delta_event("response.function_call_arguments.delta", "fc_1", 0, false, delta);
            let mut step = Step::default();
            b.emit(
                &mut step,
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_1", "output_index": 0, "delta": delta}),
            );
            assert_eq!(fast, step.frames[0], "{delta:?}");
            assert_eq!(a.sequence, b.sequence);
        }
    }

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
                    {"role": "system", "content": "Sandbox: read-only."},
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
        assert_eq!(
            refused(json!({"input": "hi", "tools": [{"type": "web_search"}, {"type": "namespace"}]})).as_deref(),
            Some("tools[1].tools")
        );
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
        let (r, whole) = from_chat(body, 77, &ToolKinds::default()).expect("converted");
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
        assert_eq!(
            whole.usage,
            Some(Usage { prompt_tokens: 30, completion_tokens: 8, cached_tokens: 10, cache_write_tokens: 0 })
        );
        let cut = br#"{"id":"c","choices":[{"message":{"content":"abc"},"finish_reason":"length"}]}"#;
        let (r, _) = from_chat(cut, 0, &ToolKinds::default()).expect("converted");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert!(from_chat(b"[]", 0, &ToolKinds::default()).is_err());
    }

    /// What Codex sends a model it does not know (its fallback model family): function tools,
    /// the hosted `web_search` it offers by default, a freeform `apply_patch` when enabled, and
    /// in the history custom tool calls and outputs given as parts. Hosted tools are not offered
    /// to a chat upstream; a custom tool becomes a function of one string, `input`.
    #[test]
    fn codex_custom_and_hosted_tools_and_part_outputs_map() {
        let body = json!({
            "model": "qwen3-coder", "instructions": "You are Codex.", "tool_choice": "auto",
            "parallel_tool_calls": false, "reasoning": null, "store": false, "stream": true, "include": [],
            "prompt_cache_key": "c1", "client_metadata": {"x": "y"},
            "tools": [
                {"type": "function", "name": "exec_command", "description": "Run.", "strict": false,
                 "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"], "additionalProperties": false}},
                {"type": "web_search", "external_web_access": false},
                {"type": "custom", "name": "apply_patch", "description": "Edit files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}},
                {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
                    {"type": "function", "name": "close_agent", "strict": false, "parameters": {"type": "object"}}]}
            ],
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix it."}]},
                {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done."},
                {"type": "function_call", "call_id": "call_v", "name": "view_image", "arguments": "{\"path\":\"a.png\"}"},
                {"type": "function_call_output", "call_id": "call_v", "output": [
                    {"type": "input_text", "text": "the image:"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "x"}}
            ]
        });
        let out = convert(body.clone()).expect("converted");
        let tools = out["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 3, "web_search is not offered: {tools:?}");
        assert_eq!(tools[1]["function"]["name"], "apply_patch");
        assert_eq!(tools[2]["function"]["name"], "close_agent", "a namespace's tools are offered flat");
        assert_eq!(tools[1]["function"]["parameters"]["required"], json!(["input"]));
        let about = tools[1]["function"]["parameters"]["properties"]["input"]["description"].as_str().unwrap();
        assert!(about.contains("lark grammar") && about.contains("begin_patch"), "{about}");
        let m = &out["messages"];
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            json!({"input": "*** Begin Patch\n*** End Patch"}).to_string()
        );
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "call_p", "content": "Done."}));
        assert_eq!(m[5], json!({"role": "tool", "tool_call_id": "call_v", "content": "the image:"}));
        assert_eq!(m[6]["content"][0]["image_url"]["url"], "data:image/png;base64,AA");
        assert_eq!(m.as_array().unwrap().len(), 7);
        let Value::Object(b) = body else { unreachable!() };
        let kinds = ToolKinds::of(&b);
        assert_eq!(kinds.custom, vec!["apply_patch".to_owned()]);
        assert_eq!(kinds.namespaced, vec![("close_agent".to_owned(), "multi_agent_v1".to_owned())]);
        // A namespaced tool's call names its namespace.
        let chat = json!({"id": "c8", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "close_agent", "arguments": "{}"}}]}}]});
        let (r, _) = from_chat(chat.to_string().as_bytes(), 1, &kinds).expect("converted");
        assert_eq!(
            (r["output"][0]["type"].as_str(), r["output"][0]["namespace"].as_str()),
            (Some("function_call"), Some("multi_agent_v1"))
        );

        // The answer: a call of the custom tool is a custom_tool_call item with the raw input,
        // whole or streamed (and a function call stays one).
        let args = json!({"input": "*** Begin Patch\n*** End Patch"}).to_string();
        let chat = json!({"id": "c9", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "apply_patch", "arguments": args}}]}}]});
        let custom = vec!["apply_patch".to_owned()];
        let (r, _) =
            from_chat(chat.to_string().as_bytes(), 1, &ToolKinds { custom: custom.clone(), namespaced: Vec::new() })
                .expect("converted");
        assert_eq!(r["output"][0]["type"], "custom_tool_call");
        assert_eq!(r["output"][0]["input"], "*** Begin Patch\n*** End Patch");
        let mut events = ResponseEvents::new(1, ToolKinds { custom, namespaced: Vec::new() });
        let first = json!({"id": "c9", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}]}}]});
        let more = json!({"id": "c9", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "finish_reason": "tool_calls"}]});
        let mut frames = Vec::new();
        for data in [first.to_string(), more.to_string(), "[DONE]".to_owned()] {
            frames.extend(events.event(data.as_bytes()).expect("event").frames);
        }
        let named: Vec<(String, Value)> = frames.iter().map(named).collect();
        assert!(!named.iter().any(|(n, _)| n == "response.function_call_arguments.delta"));
        let done = named.iter().find(|(n, _)| n == "response.output_item.done").expect("an item done");
        assert_eq!(done.1["item"]["type"], "custom_tool_call");
        assert_eq!(done.1["item"]["input"], "*** Begin Patch\n*** End Patch");
        assert_eq!(named.last().unwrap().0, "response.completed");
    }

    const CHUNKS: &[&str] = &[
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Running"},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" ls."},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"shell","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"[\"ls\"]}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":8,"total_tokens":38}}"#,
        "[DONE]",
    ];

    fn named(frame: &Bytes) -> (String, Value) {
        let s = std::str::from_utf8(frame).expect("utf-8");
        let (head, data) = s.split_once('\n').expect("two lines");
        let data = data.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n")).expect("data");
        (head.strip_prefix("event: ").expect("named").to_owned(), serde_json::from_str(data).expect("json"))
    }

    #[test]
    fn chat_chunks_become_responses_events() {
        let mut r = ResponseEvents::new(5, ToolKinds::default());
        let mut events = Vec::new();
        for c in CHUNKS {
            events.extend(r.event(c.as_bytes()).expect("converted").frames.iter().map(named));
        }
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        assert_eq!(
            events[9].1["item"],
            json!({"type": "function_call", "id": "fc_call_1", "call_id": "call_1", "name": "shell", "arguments": "", "status": "in_progress"})
        );
        assert_eq!(events[6].1["text"], "Running ls.");
        assert_eq!(events[12].1["arguments"], "{\"command\":[\"ls\"]}");
        let done = &events[14].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["id"], "resp_c1");
        assert_eq!(done["output"][0]["content"][0]["text"], "Running ls.");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["input_tokens"], 30);
        assert_eq!(done["usage"]["output_tokens"], 8);
        assert!(r.finished());
        assert!(r.end().frames.is_empty());
    }

    #[test]
    fn a_cut_output_is_incomplete_and_cut_bytes_never_panic() {
        let mut r = ResponseEvents::new(0, ToolKinds::default());
        r.event(CHUNKS[1].as_bytes()).expect("converted");
        r.event(br#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#).expect("converted");
        let last = r.end().frames.iter().map(named).last().expect("events");
        assert_eq!(last.0, "response.incomplete");
        assert_eq!(last.1["response"]["incomplete_details"], json!({"reason": "max_output_tokens"}));
        let mut r = ResponseEvents::new(0, ToolKinds::default());
        assert!(r.end().frames.is_empty());
        let names: Vec<String> = r.event(b"[DONE]").expect("converted").frames.iter().map(|f| named(f).0).collect();
        assert_eq!(
            names,
            vec!["response.created", "response.in_progress", "response.completed"],
            "opened before it is closed"
        );
        let mut r = ResponseEvents::new(0, ToolKinds::default());
        for c in CHUNKS {
            for cut in 0..c.len() {
                let _ = r.event(&c.as_bytes()[..cut]);
            }
        }
    }
}
