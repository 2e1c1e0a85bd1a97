//! OpenAI Chat request ⇄ Anthropic Messages request.

use serde_json::{Map, Value, json};

use crate::dialect::openai;
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
    let given = |k: &str| body.get(k).filter(|v| !v.is_null());
    let max = given("max_completion_tokens").or_else(|| given("max_tokens"));
    out.insert("max_tokens".into(), max.cloned().unwrap_or_else(|| json!(default_max_tokens)));
    let mut tool_choice = None;
    let mut parallel = true;
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "messages" | "max_tokens" | "max_completion_tokens" => {}
            // Anthropic's range is 0–1; its OpenAI-compatibility documentation caps higher values at 1.
            "temperature" => {
                let t = value.as_f64().map_or_else(|| value.clone(), |t| json!(t.min(1.0)));
                out.insert(key.clone(), t);
            }
            "top_p" | "top_k" | "stream" => {
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
    // Messages accepts a tool choice only beside tools.
    if let Some(c) = tool_choice.filter(|_| out.contains_key("tools")) {
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
        crate::dialect::push_turn(&mut out, role, "content", blocks);
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
        format!("A `{}` part cannot be expressed in the other side's dialect.", kind.unwrap_or("untyped")),
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
        let Some(input) = openai::arguments_object(args) else {
            return Err(ApiError::invalid(
                format!("{at}.function.arguments"),
                "Tool call arguments must be a JSON object to reach an Anthropic upstream.",
            ));
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

/// Messages fields that name a feature of Anthropic's own service, meaningless elsewhere, and
/// that its documentation makes optional hints: dropped on the way to an OpenAI upstream.
const HINTS: &[&str] = &["service_tier"];

/// The OpenAI Chat request for a Messages request `body`, sent to `model`. The system prompt
/// becomes the first message; a user turn's `tool_result` blocks become `tool` messages ahead of
/// its other content; an assistant turn's `tool_use` blocks become tool calls (input serialised as
/// the arguments); thinking blocks of earlier turns are left out (Anthropic strips them from the
/// context too); `cache_control` marks are left out (a caching hint, not content). Streams ask
/// for the usage chunk.
pub fn to_chat(body: &Map<String, Value>, model: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let mut messages = Vec::new();
    if let Some(system) = body.get("system").filter(|s| !s.is_null()) {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err(ApiError::invalid("messages", "`messages` must be an array."));
    };
    for (i, turn) in turns.iter().enumerate() {
        chat_turn(turn, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    let mut disable_parallel = false;
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "messages" | "system" => {}
            // OpenAI's current name (its reasoning models refuse `max_tokens`).
            "max_tokens" => {
                out.insert("max_completion_tokens".into(), value.clone());
            }
            "temperature" | "top_p" => {
                out.insert(key.clone(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), value.clone());
                if value.as_bool() == Some(true) {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), value.clone());
            }
            "tools" => {
                let tools = chat_tools(value)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => {
                disable_parallel = value.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
                let choice = match value.get("type").and_then(Value::as_str) {
                    Some("auto") => json!("auto"),
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => match value.get("name").and_then(Value::as_str) {
                        Some(name) => json!({"type": "function", "function": {"name": name}}),
                        None => {
                            return Err(ApiError::invalid(
                                "tool_choice.name",
                                "A `tool` choice needs the tool's name.",
                            ));
                        }
                    },
                    _ => {
                        return Err(ApiError::invalid(
                            "tool_choice",
                            "`tool_choice.type` must be auto, any, tool or none.",
                        ));
                    }
                };
                out.insert("tool_choice".into(), choice);
            }
            "metadata" => {
                if let Some(user) = value.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), Value::String(user.to_owned()));
                }
            }
            // Whether and how much the model thinks is the upstream model's own setting on the
            // OpenAI side (`reasoning_effort` is refused by models that do not reason); thinking
            // blocks are not part of a chat answer. `top_k` is Anthropic's "advanced use" sampling
            // knob, which OpenAI refuses.
            // Claude Code sends these to any gateway: `context_management` (Anthropic's server-side
            // context editing) and `output_config` (effort, and its beta structured output) govern
            // Anthropic's own service; Anthropic's gateway protocol page lists them among the
            // fields a gateway receives. Nothing on the OpenAI side carries them.
            "thinking" | "top_k" | "context_management" | "output_config" => {}
            k if HINTS.contains(&k) => {}
            k => {
                return Err(ApiError::invalid(
                    k,
                    format!("`{k}` cannot be expressed in an OpenAI Chat request; remove it to use this route."),
                ));
            }
        }
    }
    if disable_parallel && out.contains_key("tools") {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(out)
}

/// The Chat body the phases read for a Messages request that [`to_chat`] cannot map (a field or
/// block only Anthropic has: server tools, documents, containers, …), which can still go to an
/// Anthropic upstream as it is. Roles, the output limit and streaming are kept; every block
/// becomes text to count and classify (a block with a `source`, an image or a document, counts as
/// one media part, not as its bytes); tools keep their names and schemas.
pub fn to_chat_text(body: &Map<String, Value>, model: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<String> = blocks.iter().map(block_text).collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => return Err(ApiError::invalid("system", "`system` must be a string or an array of blocks.")),
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err(ApiError::invalid("messages", "`messages` must be an array."));
    };
    for (i, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
        if !["user", "assistant", "system"].contains(&role) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("Role `{role}` is not a Messages role (user, assistant or system)."),
            ));
        }
        let parts: Vec<Value> = match turn.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .map(|b| match b.get("source") {
                    Some(_) if role == "user" => json!({"type": "image_url", "image_url": {"url": "data:,"}}),
                    _ => json!({"type": "text", "text": block_text(b)}),
                })
                .collect(),
            _ => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    "Content must be a string or an array of blocks.",
                ));
            }
        };
        let content = if role != "user" {
            let text: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            Value::String(text.join("\n"))
        } else {
            Value::Array(parts)
        };
        messages.push(json!({"role": role, "content": content}));
    }
    out.insert("messages".into(), Value::Array(messages));
    crate::dialect::counting_pivot_rest(body, &mut out, "max_tokens", "input_schema");
    Ok(out)
}

/// A block's text for counting: its text, a tool call's name and input, a tool result's content,
/// or else the block itself as JSON.
fn block_text(b: &Value) -> String {
    match (b.get("text"), b.get("type").and_then(Value::as_str)) {
        (Some(Value::String(t)), _) => t.clone(),
        (_, Some("tool_use")) => format!(
            "{} {}",
            b.get("name").and_then(Value::as_str).unwrap_or_default(),
            b.get("input").map(Value::to_string).unwrap_or_default()
        ),
        (_, Some("tool_result")) => match b.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().map(block_text).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        },
        _ => b.to_string(),
    }
}

/// A system prompt: a string, or text blocks (joined with blank lines).
fn system_text(system: &Value) -> Result<String, ApiError> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                    other => return Err(part_refused(&format!("system[{j}]"), other)),
                }
            }
            Ok(parts.join("\n\n"))
        }
        _ => Err(ApiError::invalid("system", "`system` must be a string or an array of text blocks.")),
    }
}

/// One Messages turn → its chat messages.
fn chat_turn(turn: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("messages[{i}]");
    let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
    let blocks: Vec<Value> = match turn.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(b)) => b.clone(),
        _ => return Err(ApiError::invalid(format!("{at}.content"), "Content must be a string or an array of blocks.")),
    };
    match role {
        // Claude Code sends system turns between the others (its environment, reminders): a
        // chat system message in place.
        "system" => {
            let mut text = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                    other => return Err(part_refused(&format!("{at}.content[{j}]"), other)),
                }
            }
            out.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        "user" => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()}))
                    }
                    Some("image") => parts.push(chat_image(b, &at)?),
                    Some("tool_result") => out.push(tool_message(b, &at, &mut parts)?),
                    other => return Err(part_refused(&at, other)),
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": parts}));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("tool_use") => {
                        let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(json!({
                            "id": b.get("id").cloned().unwrap_or_default(),
                            "type": "function",
                            "function": {"name": b.get("name").cloned().unwrap_or_default(), "arguments": input.to_string()},
                        }));
                    }
                    Some("thinking" | "redacted_thinking") => {}
                    other => return Err(part_refused(&format!("{at}.content[{j}]"), other)),
                }
            }
            out.push(openai::assistant_message(text, calls));
        }
        other => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                format!("Role `{other}` is not a Messages role (user, assistant or system)."),
            ));
        }
    }
    Ok(())
}

/// An image block → an `image_url` part (base64 sources as a `data:` URL).
fn chat_image(b: &Value, at: &str) -> Result<Value, ApiError> {
    let source = b.get("source");
    let url = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("base64") => {
            let media = source.and_then(|s| s.get("media_type")).and_then(Value::as_str).unwrap_or_default();
            let data = source.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or_default();
            format!("data:{media};base64,{data}")
        }
        Some("url") => source.and_then(|s| s.get("url")).and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.source"),
                "An image source must be base64 or a URL to reach an OpenAI upstream.",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block → a `tool` message. A chat tool message holds only text: the result's
/// images go to `user_parts`, the user message that follows the tool messages. A failed tool's
/// result (`is_error`) says so in its text.
fn tool_message(b: &Value, at: &str, user_parts: &mut Vec<Value>) -> Result<Value, ApiError> {
    let Some(id) = b.get("tool_use_id").and_then(Value::as_str) else {
        return Err(ApiError::invalid(format!("{at}.tool_use_id"), "A tool result needs its `tool_use_id`."));
    };
    let content = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("image") => user_parts.push(chat_image(p, &format!("{at}.content[{k}]"))?),
                    other => return Err(part_refused(&format!("{at}.content[{k}]"), other)),
                }
            }
            text.join("\n")
        }
        Some(_) => {
            return Err(ApiError::invalid(format!("{at}.content"), "A tool result's content must be text or blocks."));
        }
    };
    let content =
        if b.get("is_error").and_then(Value::as_bool) == Some(true) { format!("Error: {content}") } else { content };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// Messages tools → OpenAI function tools (custom tools only: Anthropic's server and client tools
/// such as `web_search` or `bash` exist only on Anthropic's side).
fn chat_tools(value: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = value else { return Err(ApiError::invalid("tools", "`tools` must be an array.")) };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let custom = t.get("type").and_then(Value::as_str).is_none_or(|k| k == "custom");
            let Some(name) = t.get("name").and_then(Value::as_str).filter(|_| custom) else {
                return Err(ApiError::invalid(
                    format!("tools[{i}]"),
                    "Only custom tools with a name and an input schema can reach an OpenAI upstream.",
                ));
            };
            let mut function = json!({"name": name, "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let (Some(d), Some(o)) = (t.get("description"), function.as_object_mut()) {
                o.insert("description".into(), d.clone());
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Result<Value, ApiError> {
        let Value::Object(body) = v else { panic!("an object") };
        from_chat(&body, "claude-x", 4096).map(Value::Object)
    }

    /// Claude Code sends system turns between the others: each is a chat system message in
    /// place; a role Messages does not have is refused by name.
    #[test]
    fn system_turns_stay_in_place() {
        let Value::Object(body) = json!({"model": "m", "max_tokens": 5, "system": "top", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "env", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "more"}]},
            {"role": "user", "content": "go"}]})
        else {
            unreachable!()
        };
        let chat = to_chat(&body, "m").expect("mapped");
        let roles: Vec<&str> = chat["messages"].as_array().unwrap().iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, ["system", "user", "system", "user"]);
        assert_eq!(chat["messages"][2]["content"], "env\n\nmore");
        let Value::Object(bad) = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]})
        else {
            unreachable!()
        };
        assert_eq!(to_chat(&bad, "m").err().and_then(|e| e.param).as_deref(), Some("messages[0].role"));
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
            "tools": [{"type": "function", "function": {"name": "weather"}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "n": 1,
            "temperature": 1.7,
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
        assert_eq!(out["temperature"], 1.0, "capped at Anthropic's maximum");
        let Value::Object(no_tools) = json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none", "parallel_tool_calls": false})
        else {
            panic!("an object")
        };
        assert_eq!(
            from_chat(&no_tools, "m", 1).expect("converted").get("tool_choice"),
            None,
            "no tool choice without tools"
        );
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

    fn to_openai(v: Value) -> Result<Value, ApiError> {
        let Value::Object(body) = v else { panic!("an object") };
        to_chat(&body, "gpt-x").map(Value::Object)
    }

    /// The shape of Claude Code's requests: a system prompt in blocks with cache marks, tools,
    /// earlier thinking, tool use and results (one an error), streaming.
    #[test]
    fn a_claude_code_shaped_request_maps_to_chat() {
        let out = to_openai(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 32000,
            "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "List the files."},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "ls it is", "signature": "sig"},
                    {"type": "text", "text": "Running ls."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.rs"}], "is_error": false},
                    {"type": "text", "text": "And now?", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
            ],
            "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "user_abc"},
            "temperature": 1
        }))
        .expect("converted");
        assert_eq!(
            out,
            json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "You are Claude Code.\n\nBe careful."},
                    {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
                    {"role": "assistant", "content": "Running ls.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "a.rs"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "And now?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ]}
                ],
                "max_completion_tokens": 32000,
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "Bash", "description": "Run a command", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
                "tool_choice": "auto",
                "parallel_tool_calls": false,
                "user": "user_abc",
                "temperature": 1
            })
        );
    }

    #[test]
    fn what_chat_cannot_express_is_refused_by_name() {
        let refused = |v: Value| to_openai(v).err().map(|e| e.param).expect("refused");
        let user = json!([{"role": "user", "content": "hi"}]);
        let thinking = to_openai(json!({"messages": user, "max_tokens": 5, "top_k": 3, "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}, "output_config": {"effort": "high"}}))
            .expect("thinking and top_k are left to the upstream");
        assert_eq!(thinking.get("thinking"), None);
        assert_eq!(thinking.get("top_k"), None);
        assert_eq!(thinking.get("context_management"), None);
        assert_eq!(thinking.get("output_config"), None);
        assert_eq!(
            refused(json!({"messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
                .as_deref(),
            Some("tools[0]")
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}))
                .as_deref(),
            Some("messages[0].content[0]")
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document", "source": {}}]}]}]}))
                .as_deref(),
            Some("messages[0].content[0].content[0]")
        );
        // A screenshot in a tool result follows the tool message as a user image; a failed tool says so.
        let shot = to_openai(json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true, "content": [
            {"type": "text", "text": "crashed"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}]}))
        .expect("converted");
        assert_eq!(
            shot["messages"],
            json!([{"role": "tool", "tool_call_id": "t", "content": "Error: crashed"},
                   {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}])
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "developer", "content": "x"}]})).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(refused(json!({"messages": user, "mcp_servers": []})).as_deref(), Some("mcp_servers"));
    }

    /// Chat → Messages → Chat keeps roles, text, tool ids, names and arguments, over generated
    /// conversations (a small deterministic generator: no extra dependency).
    #[test]
    fn round_trips_keep_roles_text_and_tool_calls() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..300 {
            let mut messages = vec![json!({"role": "system", "content": format!("rules {case}")})];
            let mut pending: Vec<String> = Vec::new();
            for turn in 0..(1 + next(6)) {
                if !pending.is_empty() {
                    for id in pending.drain(..) {
                        messages
                            .push(json!({"role": "tool", "tool_call_id": id, "content": format!("result of {id}")}));
                    }
                } else if messages.last().is_some_and(|m| m["role"] == "assistant") || turn == 0 {
                    messages.push(json!({"role": "user", "content": format!("question {case}.{turn} \u{e9}\"q\"")}));
                } else {
                    let calls: Vec<Value> = (0..next(3))
                        .map(|k| {
                            let id = format!("call_{case}_{turn}_{k}");
                            pending.push(id.clone());
                            let args = json!({"n": next(100), "s": format!("x{k}")}).to_string();
                            json!({"id": id, "type": "function", "function": {"name": format!("tool{k}"), "arguments": args}})
                        })
                        .collect();
                    let mut m = json!({"role": "assistant", "content": if next(2) == 0 { Value::String(format!("answer {turn}")) } else { Value::Null }});
                    if !calls.is_empty() {
                        m["tool_calls"] = Value::Array(calls);
                    } else if m["content"].is_null() {
                        m["content"] = json!("answer");
                    }
                    messages.push(m);
                }
            }
            let chat = json!({"messages": messages});
            let there = convert(chat.clone()).expect("to messages");
            let back = to_openai(there).expect("back to chat");
            let norm = |m: &Value| -> Value {
                let content = match &m["content"] {
                    Value::Array(parts) => Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect()),
                    other => other.clone(),
                };
                json!({"role": m["role"], "content": content, "tool_calls": m.get("tool_calls").cloned().unwrap_or(Value::Null),
                       "tool_call_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null)})
            };
            let want: Vec<Value> = messages.iter().map(norm).collect();
            let got: Vec<Value> = back["messages"].as_array().expect("messages").iter().map(norm).collect();
            assert_eq!(got, want, "case {case}");
        }
    }
}
