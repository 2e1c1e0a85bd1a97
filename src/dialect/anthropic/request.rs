//! OpenAI Chat request → Anthropic Messages request.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Fields Anthropic's OpenAI-compatibility documentation lists as ignored: dropped.
const IGNORED: &[&str] = &[
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "metadata",
    "prediction",
    "presence_penalty",
    "seed",
    "service_tier",
    "store",
    "stream_options",
    "top_logprobs",
];

/// The Messages request for an OpenAI Chat request `body` (already checked by the OpenAI
/// dialect), sent to `model`. `max_tokens` (required by Messages) is the client's
/// `max_completion_tokens` or `max_tokens`, else `default_max_tokens`.
pub fn from_chat(
    body: &Map<String, Value>,
    model: &str,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let (system, messages) = messages(body.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).filter(|v| !v.is_null());
    out.insert("max_tokens".into(), max.cloned().unwrap_or_else(|| json!(default_max_tokens)));
    let mut tool_choice = None;
    let mut parallel = true;
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "messages" | "max_tokens" | "max_completion_tokens" => {}
            "temperature" | "top_p" | "top_k" | "stream" => {
                out.insert(key.clone(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    _ => return Err(ApiError::invalid("stop", "`stop` must be a string or an array of strings.")),
                };
                if !stops.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(stops));
                }
            }
            "tools" => {
                let tools = tools(value)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => tool_choice = Some(choice(value)?),
            "parallel_tool_calls" => parallel = value.as_bool().unwrap_or(true),
            "user" => {
                if let Some(u) = value.as_str() {
                    out.insert("metadata".into(), json!({"user_id": u}));
                }
            }
            "n" if value.as_u64() == Some(1) => {}
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            "modalities" if value.as_array().is_some_and(|m| m.iter().all(|x| x == "text")) => {}
            k if IGNORED.contains(&k) => {}
            k => return Err(unsupported(k)),
        }
    }
    if !parallel {
        let c = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none")
            && let Some(o) = c.as_object_mut()
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = tool_choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(out)
}

fn unsupported(field: &str) -> ApiError {
    ApiError::invalid(
        field,
        format!("`{field}` cannot be expressed in an Anthropic Messages request; remove it to use this route."),
    )
}

/// The system blocks and the messages. System and developer messages, wherever they are, become
/// the system prompt; a tool message becomes a `tool_result` block of a user turn; consecutive
/// turns of one role merge (tool results must all follow their `tool_use` turn in one message).
fn messages(messages: Option<&Value>) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let Some(Value::Array(list)) = messages else {
        return Err(ApiError::invalid("messages", "`messages` must be an array."));
    };
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}]{what}");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(m.get("content"), &at(".content"))?);
                continue;
            }
            "user" => ("user", user_blocks(m.get("content"), &at(".content"))?),
            "assistant" => ("assistant", assistant_blocks(m, &at(""))?),
            "tool" => ("user", vec![tool_result(m, &at(""))?]),
            other => {
                return Err(ApiError::invalid(
                    at(".role"),
                    format!("Role `{other}` cannot be expressed in an Anthropic Messages request."),
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.get("role").and_then(Value::as_str) == Some(role) => {
                if let Some(Value::Array(content)) = last.get_mut("content") {
                    content.extend(blocks);
                }
            }
            _ => out.push(json!({"role": role, "content": blocks})),
        }
    }
    Ok((system, out))
}

/// Text-only content (system prompts, tool results): a string, or text parts.
fn text_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.extend(text(
                        p.get("text").and_then(Value::as_str).unwrap_or_default(),
                        p.get("cache_control"),
                    )),
                    other => return Err(part_refused(&format!("{at}[{j}]"), other)),
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::invalid(at, "Content must be a string or an array of parts.")),
    }
}

/// A text block, or none for empty text (Messages refuses empty text blocks).
fn text(s: &str, cache_control: Option<&Value>) -> Option<Value> {
    if s.is_empty() {
        return None;
    }
    let mut b = json!({"type": "text", "text": s});
    if let (Some(c), Some(o)) = (cache_control, b.as_object_mut()) {
        o.insert("cache_control".into(), c.clone());
    }
    Some(b)
}

fn part_refused(at: &str, kind: Option<&str>) -> ApiError {
    ApiError::invalid(
        at,
        format!("A `{}` part cannot be expressed here in an Anthropic Messages request.", kind.unwrap_or("untyped")),
    )
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, ApiError> {
    let Some(Value::Array(parts)) = content else { return text_blocks(content, at) };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                out.extend(text(p.get("text").and_then(Value::as_str).unwrap_or_default(), p.get("cache_control")))
            }
            Some("image_url") => out.push(image(p, &format!("{at}[{j}]"))?),
            other => return Err(part_refused(&format!("{at}[{j}]"), other)),
        }
    }
    Ok(out)
}

/// An `image_url` part: a `data:` URL becomes a base64 source, an http(s) URL a URL source.
fn image(part: &Value, at: &str) -> Result<Value, ApiError> {
    let url = part.get("image_url").and_then(|i| i.get("url").or(Some(i))).and_then(Value::as_str).unwrap_or_default();
    let source = if let Some(rest) = url.strip_prefix("data:") {
        let Some((media_type, data)) = rest.split_once(";base64,") else {
            return Err(ApiError::invalid(at, "An image data URL must be base64 (`data:<type>;base64,…`)."));
        };
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return Err(ApiError::invalid(at, "An image URL must be a data: URL or an http(s) URL."));
    };
    let mut b = json!({"type": "image", "source": source});
    if let (Some(c), Some(o)) = (part.get("cache_control"), b.as_object_mut()) {
        o.insert("cache_control".into(), c.clone());
    }
    Ok(b)
}

/// An assistant turn: its text, then a `tool_use` block per tool call (arguments parsed: Messages
/// takes the input as an object).
fn assistant_blocks(m: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let mut out = text_blocks(m.get("content"), &format!("{at}.content"))?;
    let Some(Value::Array(calls)) = m.get("tool_calls") else { return Ok(out) };
    for (j, c) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let f = c.get("function");
        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
        let id = c.get("id").and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(ApiError::invalid(at, "A tool call needs an `id` and a `function.name`."));
        };
        let args = f.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        let input = if args.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(args) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(ApiError::invalid(
                        format!("{at}.function.arguments"),
                        "Tool call arguments must be a JSON object to reach an Anthropic upstream.",
                    ));
                }
            }
        };
        out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(out)
}

fn tool_result(m: &Value, at: &str) -> Result<Value, ApiError> {
    let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
        return Err(ApiError::invalid(format!("{at}.tool_call_id"), "A tool message needs its `tool_call_id`."));
    };
    let content = text_blocks(m.get("content"), &format!("{at}.content"))?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

/// OpenAI function tools → Messages tools.
fn tools(value: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = value else { return Err(ApiError::invalid("tools", "`tools` must be an array.")) };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
            let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
                return Err(ApiError::invalid(
                    format!("tools[{i}]"),
                    "Only function tools with a name can be expressed in an Anthropic Messages request.",
                ));
            };
            let schema = f
                .and_then(|f| f.get("parameters"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut tool = json!({"name": name, "input_schema": schema});
            if let (Some(d), Some(o)) = (f.and_then(|f| f.get("description")), tool.as_object_mut()) {
                o.insert("description".into(), d.clone());
            }
            Ok(tool)
        })
        .collect()
}

fn choice(value: &Value) -> Result<Value, ApiError> {
    match value {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(ApiError::invalid("tool_choice", "`tool_choice` must be auto, none, required or a function.")),
        },
        _ => match value.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "tool", "name": name})),
            None => Err(ApiError::invalid("tool_choice", "`tool_choice` must be auto, none, required or a function.")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Result<Value, ApiError> {
        let Value::Object(body) = v else { panic!("an object") };
        from_chat(&body, "claude-x", 4096).map(Value::Object)
    }

    #[test]
    fn a_conversation_with_tools_maps_turn_by_turn() {
        let out = convert(json!({
            "model": "ignored",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "Thanks."}
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "stop": "END",
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                      {"type": "function", "function": {"name": "time"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "u-1",
            "seed": 7
        }))
        .expect("converted");
        assert_eq!(
            out,
            json!({
                "model": "claude-x",
                "system": [{"type": "text", "text": "Be brief."}],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image, and the weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
                        {"type": "tool_use", "id": "call_2", "name": "time", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "rain"}]},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                        {"type": "text", "text": "Thanks."}
                    ]}
                ],
                "max_tokens": 300,
                "temperature": 0.2,
                "stop_sequences": ["END"],
                "stream": true,
                "tools": [
                    {"name": "weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                    {"name": "time", "input_schema": {"type": "object", "properties": {}}}
                ],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "u-1"}
            })
        );
    }

    #[test]
    fn max_tokens_defaults_and_urls_and_cache_control_pass() {
        let out = convert(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "n": 1,
            "response_format": {"type": "text"}
        }))
        .expect("converted");
        assert_eq!(out["max_tokens"], 4096);
        assert_eq!(out["messages"][0]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(
            out["messages"][0]["content"][1]["source"],
            json!({"type": "url", "url": "https://example.com/a.png"})
        );
        assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "weather"}));
    }

    #[test]
    fn what_messages_cannot_express_is_refused_by_name() {
        let refused = |v: Value| convert(v).err().map(|e| e.param).expect("refused");
        let user = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(refused(json!({"messages": user, "n": 2})).as_deref(), Some("n"));
        assert_eq!(
            refused(json!({"messages": user, "response_format": {"type": "json_object"}})).as_deref(),
            Some("response_format")
        );
        assert_eq!(refused(json!({"messages": user, "reasoning_effort": "high"})).as_deref(), Some("reasoning_effort"));
        assert_eq!(refused(json!({"messages": user, "functions": []})).as_deref(), Some("functions"));
        assert_eq!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}))
                .as_deref(),
            Some("messages[0].content[0]")
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}))
                .as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "function", "content": "x"}]})).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(refused(json!({"messages": user, "tools": [{"type": "web_search"}]})).as_deref(), Some("tools[0]"));
    }
}
