//! Anthropic Messages answer → OpenAI chat completion.

use serde_json::{Value, json};

use crate::dialect::anthropic::{MessagesUsage, finish_reason};
use crate::dialect::facts::{Malformed, ResponseMeta, Whole};

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
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty()
        && let Some(m) = message.as_object_mut()
    {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
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
        assert_eq!(whole.usage, Some(Usage { prompt_tokens: 120, completion_tokens: 9, cached_tokens: 100 }));
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
}
