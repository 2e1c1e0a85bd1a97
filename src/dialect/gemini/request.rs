//! OpenAI Chat request → Gemini `generateContent` request.

use serde_json::{Map, Value, json};

use crate::dialect::openai;
use crate::error::ApiError;

/// OpenAI fields that are hints about the caller or OpenAI's own service, with nothing to carry
/// to Gemini: dropped. (`stream` and `stream_options` choose the path, not the body.)
const HINTS: &[&str] = &["metadata", "service_tier", "store", "stream", "stream_options", "user"];

/// The `generateContent` request for an OpenAI Chat request `body` (already checked by the
/// OpenAI dialect).
pub fn from_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let (system, contents) = contents(body.get("messages"))?;
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), Value::Array(contents));
    let mut config = Map::new();
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        let setting = match key.as_str() {
            "model" | "messages" => continue,
            "max_tokens" | "max_completion_tokens" => "maxOutputTokens",
            "temperature" => "temperature",
            "top_p" => "topP",
            "top_k" => "topK",
            "presence_penalty" => "presencePenalty",
            "frequency_penalty" => "frequencyPenalty",
            "seed" => "seed",
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    _ => return Err(ApiError::invalid("stop", "`stop` must be a string or an array of strings.")),
                };
                config.insert("stopSequences".into(), Value::Array(stops));
                continue;
            }
            "response_format" => {
                response_format(value, &mut config)?;
                continue;
            }
            "reasoning_effort" => {
                // Google's documented mapping of OpenAI's effort levels to thinking budgets.
                let budget = match value.as_str() {
                    Some("none") => 0,
                    Some("low" | "minimal") => 1024,
                    Some("medium") => 8192,
                    Some("high") => 24576,
                    _ => {
                        return Err(ApiError::invalid(
                            "reasoning_effort",
                            "`reasoning_effort` must be none, minimal, low, medium or high.",
                        ));
                    }
                };
                config.insert("thinkingConfig".into(), json!({"thinkingBudget": budget}));
                continue;
            }
            "tools" => {
                let declarations = declarations(value)?;
                if !declarations.is_empty() {
                    out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
                }
                continue;
            }
            "tool_choice" => {
                out.insert("toolConfig".into(), json!({"functionCallingConfig": calling_config(value)?}));
                continue;
            }
            "n" if value.as_u64() == Some(1) => continue,
            // Gemini has no switch for it: `false` is kept by answering with the turn's first call
            // only (`answer`, told by the bridge).
            "parallel_tool_calls" if value.is_boolean() => continue,
            "logprobs" | "top_logprobs" if value.as_bool() == Some(false) || value.as_u64() == Some(0) => continue,
            "modalities" if value.as_array().is_some_and(|m| m.iter().all(|x| x == "text")) => continue,
            k if HINTS.contains(&k) => continue,
            k => {
                return Err(ApiError::invalid(
                    k,
                    format!("`{k}` cannot be expressed in a Gemini request; remove it to use this route."),
                ));
            }
        };
        config.insert(setting.into(), value.clone());
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(out)
}

fn response_format(value: &Value, config: &mut Map<String, Value>) -> Result<(), ApiError> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            let Some(schema) = value.get("json_schema").and_then(|s| s.get("schema")) else {
                return Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "A JSON schema response format needs its schema.",
                ));
            };
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => {
            return Err(ApiError::invalid(
                "response_format.type",
                "`response_format.type` must be text, json_object or json_schema.",
            ));
        }
    }
    Ok(())
}

/// The system parts and the contents. Roles: `user`, `model` (assistant); a tool message is a
/// `functionResponse` part of a user turn, named after the call it answers (Gemini matches
/// responses by name). Consecutive turns of one role merge.
fn contents(messages: Option<&Value>) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let Some(Value::Array(list)) = messages else {
        return Err(ApiError::invalid("messages", "`messages` must be an array."));
    };
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // Tool call id → function name, from the assistant turns so far.
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}]{what}");
        let (role, parts) = match m.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                system.extend(parts(m.get("content"), &at(".content"), false)?);
                continue;
            }
            "user" => ("user", parts(m.get("content"), &at(".content"), true)?),
            "assistant" => {
                let mut p = parts(m.get("content"), &at(".content"), false)?;
                for (j, c) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let call = function_call(c, &at(&format!(".tool_calls[{j}]")))?;
                    if let (Some(id), Some(name)) =
                        (c.get("id").and_then(Value::as_str), call["functionCall"]["name"].as_str())
                    {
                        names.push((id.to_owned(), name.to_owned()));
                    }
                    p.push(call);
                }
                ("model", p)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let Some((_, name)) = names.iter().rev().find(|(call, _)| call == id) else {
                    return Err(ApiError::invalid(
                        at(".tool_call_id"),
                        "A tool message must answer a tool call of an earlier assistant message (Gemini matches results by function name).",
                    ));
                };
                let text: String = parts(m.get("content"), &at(".content"), false)?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                ("user", vec![json!({"functionResponse": {"name": name, "response": response}})])
            }
            other => {
                return Err(ApiError::invalid(
                    at(".role"),
                    format!("Role `{other}` cannot be expressed in a Gemini request."),
                ));
            }
        };
        crate::dialect::push_turn(&mut out, role, "parts", parts);
    }
    Ok((system, out))
}

/// Content → parts: text, and (where `images`) inline images from `data:` URLs.
fn parts(content: Option<&Value>, at: &str, images: bool) -> Result<Vec<Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for (j, p) in list.iter().enumerate() {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !t.is_empty() {
                            out.push(json!({"text": t}));
                        }
                    }
                    Some("image_url") if images => {
                        let url = p
                            .get("image_url")
                            .and_then(|i| i.get("url").or(Some(i)))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let Some((mime, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(";base64,"))
                        else {
                            return Err(ApiError::invalid(at, "Images reach Gemini inline: use a base64 `data:` URL."));
                        };
                        out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                    }
                    other => {
                        return Err(ApiError::invalid(
                            at,
                            format!(
                                "A `{}` part cannot be expressed here in a Gemini request.",
                                other.unwrap_or("untyped")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::invalid(at, "Content must be a string or an array of parts.")),
    }
}

fn function_call(c: &Value, at: &str) -> Result<Value, ApiError> {
    let f = c.get("function");
    let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        return Err(ApiError::invalid(at, "A tool call needs a `function.name`."));
    };
    let args = f.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
    let Some(args) = openai::arguments_object(args) else {
        return Err(ApiError::invalid(
            format!("{at}.function.arguments"),
            "Tool call arguments must be a JSON object to reach a Gemini upstream.",
        ));
    };
    // No `id`: the Gemini API refuses it in function parts (results are matched by name). A
    // thought signature the answer carried (Gemini 3 requires it back) rides on the tool call as
    // Google's OpenAI-compatible API puts it, `extra_content.google.thought_signature`.
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    let signature = c.get("extra_content").and_then(|e| e.get("google")).and_then(|g| g.get("thought_signature"));
    if let (Some(sig), Some(o)) = (signature, part.as_object_mut()) {
        o.insert("thoughtSignature".into(), sig.clone());
    }
    Ok(part)
}

fn declarations(value: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = value else { return Err(ApiError::invalid("tools", "`tools` must be an array.")) };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
            let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
                return Err(ApiError::invalid(
                    format!("tools[{i}]"),
                    "Only function tools with a name can be expressed in a Gemini request.",
                ));
            };
            let mut d = json!({"name": name});
            if let Some(o) = d.as_object_mut() {
                if let Some(desc) = f.and_then(|f| f.get("description")) {
                    o.insert("description".into(), desc.clone());
                }
                // Full JSON Schema (Gemini's `parameters` takes only an OpenAPI subset).
                if let Some(p) = f.and_then(|f| f.get("parameters")) {
                    o.insert("parametersJsonSchema".into(), p.clone());
                }
            }
            Ok(d)
        })
        .collect()
}

fn calling_config(value: &Value) -> Result<Value, ApiError> {
    let bad = || ApiError::invalid("tool_choice", "`tool_choice` must be auto, none, required or a function.");
    match value {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"mode": "AUTO"})),
            "none" => Ok(json!({"mode": "NONE"})),
            "required" => Ok(json!({"mode": "ANY"})),
            _ => Err(bad()),
        },
        _ => match value.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
            None => Err(bad()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Result<Value, ApiError> {
        let Value::Object(body) = v else { panic!("an object") };
        from_chat(&body).map(Value::Object)
    }

    #[test]
    fn a_conversation_with_tools_maps_to_contents() {
        let out = convert(json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                    "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\":\"rain\"}"},
                {"role": "user", "content": "And tomorrow?"}
            ],
            "max_completion_tokens": 100,
            "temperature": 0.5,
            "stop": ["END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Now", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "user": "u-1"
        }))
        .expect("converted");
        assert_eq!(
            out,
            json!({
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "weather", "response": {"sky": "rain"}}},
                        {"text": "And tomorrow?"}
                    ]}
                ],
                "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "stopSequences": ["END"], "responseMimeType": "application/json"},
                "tools": [{"functionDeclarations": [{"name": "weather", "description": "Now", "parametersJsonSchema": {"type": "object"}}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
            })
        );
    }

    #[test]
    fn what_gemini_cannot_express_is_refused_by_name() {
        let refused = |v: Value| convert(v).err().map(|e| e.param).expect("refused");
        let user = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(refused(json!({"messages": user, "n": 3})).as_deref(), Some("n"));
        assert_eq!(refused(json!({"messages": user, "logit_bias": {"1": 2}})).as_deref(), Some("logit_bias"));
        assert_eq!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]})).as_deref(),
            Some("messages[0].content[0]")
        );
        assert_eq!(
            refused(json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})).as_deref(),
            Some("messages[0].tool_call_id")
        );
        let out = convert(json!({"messages": user, "reasoning_effort": "low", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
            .expect("converted");
        assert_eq!(out["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 1024}));
        assert_eq!(out["generationConfig"]["responseJsonSchema"], json!({"type": "object"}));
    }
}
