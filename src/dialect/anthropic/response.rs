//! Anthropic Messages answer ⇄ OpenAI chat completion.

use serde_json::{Value, json};

use crate::dialect::anthropic::{MessagesUsage, finish_reason, stop_reason};
use crate::dialect::facts::{Malformed, ResponseMeta, Whole};
use crate::dialect::openai;

/// What a whole Messages answer relayed as it is says (usage, id, model, finish reason), read
/// without building anything of it: the passthrough's usage tap.
pub fn whole_facts(body: &[u8]) -> Result<Whole, Malformed> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "type", borrow, default, deserialize_with = "openai::view::text")]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default, deserialize_with = "openai::view::text")]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default, deserialize_with = "openai::view::text")]
        model: Option<Cow<'a, str>>,
        #[serde(borrow, default, deserialize_with = "openai::view::text")]
        stop_reason: Option<Cow<'a, str>>,
        #[serde(default)]
        usage: Option<Value>,
    }
    let a: Answer<'_> = serde_json::from_slice(body).map_err(|_| Malformed("the Messages answer is not JSON"))?;
    if a.kind.as_deref() != Some("message") {
        return Err(Malformed("the Messages answer is not a message"));
    }
    let usage = a.usage.as_ref().map(|u| {
        let mut m = MessagesUsage::default();
        m.absorb(u);
        m.usage()
    });
    let finish = finish_reason(a.stop_reason.as_deref().unwrap_or("end_turn"));
    let meta = ResponseMeta {
        id: a.id.map(Cow::into_owned),
        model: a.model.map(Cow::into_owned),
        finish_reasons: vec![finish.to_owned()],
    };
    Ok(Whole { usage, output_tokens: 0, meta })
}

/// The chat completion for a whole Messages answer (`created`: the Unix time to stamp it with),
/// and what the answer says (usage, id, model, finish reason). Text blocks join into the
/// message's content; `tool_use` blocks become tool calls with their input serialised as the
/// arguments; thinking blocks are not part of a chat completion and are left out.
pub fn to_chat(body: &[u8], created: u64) -> Result<(Value, Whole), Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Malformed("the Messages answer is not JSON"))?;
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return Err(Malformed("the Messages answer is not a message"));
    }
    let Some(blocks) = v.get("content").and_then(Value::as_array) else {
        return Err(Malformed("the Messages answer has no content array"));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": input.to_string()},
                }));
            }
            _ => {}
        }
    }
    let mut usage = MessagesUsage::default();
    if let Some(u) = v.get("usage") {
        usage.absorb(u);
    }
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let finish = finish_reason(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn"));
    let message = openai::assistant_message(text, calls);
    let chat = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage.chat_usage(),
    });
    let meta = ResponseMeta { id, model, finish_reasons: vec![finish.to_owned()] };
    let reported = v.get("usage").is_some().then(|| usage.usage());
    Ok((chat, Whole { usage: reported, output_tokens: 0, meta }))
}

/// The Messages answer for a whole chat completion (the first choice), and what it says. Its
/// text becomes a text block, each tool call a `tool_use` block with its arguments parsed (a
/// Messages client reads the input as an object: arguments that are not one are malformed).
pub fn from_chat(body: &[u8]) -> Result<(Value, Whole), Malformed> {
    let v = openai::view::read_completion(body)?;
    let choice = v.choice().ok_or(Malformed("the chat completion has no choice"))?;
    let message = choice.message.as_ref().ok_or(Malformed("the chat completion's choice has no message"))?;
    let mut content = Vec::new();
    if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.tool_calls.iter().flatten() {
        let f = call.function.as_ref();
        let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or_default();
        let input = openai::arguments_object(args).ok_or(Malformed("a tool call's arguments are not a JSON object"))?;
        content.push(json!({
            "type": "tool_use",
            "id": call.id.as_deref(),
            "name": f.and_then(|f| f.name.as_deref()),
            "input": input,
        }));
    }
    let called = content.iter().any(|b| b["type"] == "tool_use");
    let usage = v.usage.map(|u| messages_usage(u.usage));
    let finish = choice.finish_reason.as_deref().unwrap_or("stop");
    let id = v.id.as_deref().map(str::to_owned);
    let model = v.model.as_deref().map(str::to_owned);
    let u = usage.unwrap_or_default();
    let answer = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        // Some servers finish a turn that called tools with "stop".
        "stop_reason": if called && finish == "stop" { "tool_use" } else { stop_reason(finish) },
        "stop_sequence": null,
        "usage": u.messages_usage(),
    });
    let meta = ResponseMeta { id, model, finish_reasons: vec![finish.to_owned()] };
    Ok((answer, Whole { usage: usage.map(MessagesUsage::usage), output_tokens: 0, meta }))
}

/// The gateway's usage figures in Messages terms (cache reads and writes apart from the rest).
pub fn messages_usage(u: crate::types::Usage) -> MessagesUsage {
    let cached = u.cached_tokens.min(u.prompt_tokens);
    let written = u.cache_write_tokens.min(u.prompt_tokens - cached);
    MessagesUsage {
        input: u.prompt_tokens - cached - written,
        output: u.completion_tokens,
        cache_read: cached,
        cache_write: written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Usage;

    #[test]
    fn text_and_tool_use_become_content_and_tool_calls() {
        let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Checking "},{"type":"text","text":"now."},
                       {"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Oslo"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":20,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":9}}"#;
        let (chat, whole) = to_chat(body, 1_700_000_000).expect("converted");
        assert_eq!(whole_facts(body).expect("facts"), whole, "the passthrough reads the same facts");
        assert_eq!(
            chat,
            json!({
                "id": "msg_01", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude-sonnet-4-5",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
                    "role": "assistant", "content": "Checking now.",
                    "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]
                }}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129, "prompt_tokens_details": {"cached_tokens": 100}}
            })
        );
        assert_eq!(
            whole.usage,
            Some(Usage { prompt_tokens: 120, completion_tokens: 9, cached_tokens: 100, cache_write_tokens: 0 })
        );
        assert_eq!(whole.meta.finish_reasons, vec!["tool_calls".to_owned()]);
        assert_eq!(whole.meta.model.as_deref(), Some("claude-sonnet-4-5"));
    }

    #[test]
    fn a_tool_only_answer_has_null_content_and_garbage_is_malformed() {
        let body = br#"{"type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use"}"#;
        let (chat, whole) = to_chat(body, 0).expect("converted");
        assert_eq!(chat["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(whole.usage, None);
        assert!(to_chat(b"{\"type\":\"error\"}", 0).is_err());
        assert!(to_chat(b"not json", 0).is_err());
    }

    #[test]
    fn a_chat_completion_becomes_a_messages_answer() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x",
            "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Let me look.",
              "tool_calls":[{"id":"call_1","type":"function","function":{"name":"Bash","arguments":"{\"command\":\"ls\"}"}}]}}],
            "usage":{"prompt_tokens":120,"completion_tokens":9,"total_tokens":129,"prompt_tokens_details":{"cached_tokens":100}}}"#;
        let (answer, whole) = from_chat(body).expect("converted");
        assert_eq!(
            answer,
            json!({
                "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-x",
                "content": [{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}
            })
        );
        assert_eq!(
            whole.usage,
            Some(Usage { prompt_tokens: 120, completion_tokens: 9, cached_tokens: 100, cache_write_tokens: 0 })
        );
        let bad = br#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1]"}}]}}]}"#;
        assert!(from_chat(bad).is_err());
        assert!(from_chat(br#"{"choices":[]}"#).is_err());
    }

    #[test]
    fn whole_answers_round_trip_through_both_shapes() {
        let messages =
            br#"{"id":"msg_9","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"Hi"},
            {"type":"tool_use","id":"toolu_9","name":"f","input":{"a":[1,2],"b":"c"}}],"stop_reason":"tool_use",
            "usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":5,"cache_creation_input_tokens":0}}"#;
        let (chat, _) = to_chat(messages, 0).expect("to chat");
        let (back, _) = from_chat(chat.to_string().as_bytes()).expect("back");
        let original: Value = serde_json::from_slice(messages).expect("json");
        for key in ["id", "model", "content", "stop_reason", "usage"] {
            assert_eq!(back[key], original[key], "{key}");
        }
    }
}
