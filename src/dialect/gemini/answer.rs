//! Gemini answers → OpenAI chat completions and chunks.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::dialect::facts::{Malformed, ResponseMeta, Step, StreamError, Whole};
use crate::dialect::gemini::{GeminiUsage, finish_reason};
use crate::dialect::{openai, sse};

/// What one candidate's parts say: its text (thought summaries left out) and its function calls
/// as OpenAI tool calls: Gemini's call id when it sends one, else one made from the response id
/// (`prefix`) and the call's index, unique across a conversation's turns; a part's thought
/// signature as `extra_content.google.thought_signature`, as Google's OpenAI-compatible API
/// returns it (Gemini 3 needs it back with the call).
fn read_parts(candidate: Option<&Value>, first_call: usize, prefix: &str) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = candidate.and_then(|c| c.get("content")).and_then(|c| c.get("parts")).and_then(Value::as_array);
    for p in parts.into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let n = first_call + calls.len();
            let id = f.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{prefix}_{n}"), str::to_owned);
            let args = f.get("args").cloned().unwrap_or_else(|| json!({}));
            let mut call = json!({
                "index": n,
                "id": id,
                "type": "function",
                "function": {"name": f.get("name").cloned().unwrap_or(Value::Null), "arguments": args.to_string()},
            });
            if let (Some(sig), Some(o)) = (p.get("thoughtSignature"), call.as_object_mut()) {
                o.insert("extra_content".into(), json!({"google": {"thought_signature": sig}}));
            }
            calls.push(call);
        }
    }
    (text, calls)
}

/// The finish reason of a candidate (or of a prompt blocked before any candidate).
fn finish(v: &Value, candidate: Option<&Value>, called: bool) -> Option<&'static str> {
    if candidate.is_none() && v.get("promptFeedback").and_then(|f| f.get("blockReason")).is_some() {
        return Some("content_filter");
    }
    let reason = candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str)?;
    Some(if called && reason == "STOP" { "tool_calls" } else { finish_reason(reason) })
}

/// The chat completion for a whole `generateContent` answer (its first candidate), and what it
/// says.
/// With `single_call` (the client asked for no parallel tool calls, which Gemini has no switch
/// for), a turn keeps its first call only.
pub fn to_chat(body: &[u8], created: u64, single_call: bool) -> Result<(Value, Whole), Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Malformed("the Gemini answer is not JSON"))?;
    let candidate = v.get("candidates").and_then(|c| c.get(0));
    if candidate.is_none() && v.get("promptFeedback").is_none() {
        return Err(Malformed("the Gemini answer has neither a candidate nor prompt feedback"));
    }
    let prefix = v.get("responseId").and_then(Value::as_str).unwrap_or_default();
    let (text, mut calls) = read_parts(candidate, 0, prefix);
    if single_call {
        calls.truncate(1);
    }
    let finish = finish(&v, candidate, !calls.is_empty()).unwrap_or("stop");
    for c in &mut calls {
        if let Some(o) = c.as_object_mut() {
            o.remove("index");
        }
    }
    let message = openai::assistant_message(text, calls);
    let usage = v.get("usageMetadata").map(GeminiUsage::read);
    let id = v.get("responseId").and_then(Value::as_str).map(str::to_owned);
    let model = v.get("modelVersion").and_then(Value::as_str).map(str::to_owned);
    let chat = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage.unwrap_or_default().chat_usage(),
    });
    let meta = ResponseMeta { id, model, finish_reasons: vec![finish.to_owned()] };
    Ok((chat, Whole { usage: usage.map(GeminiUsage::usage), output_tokens: 0, meta }))
}

/// The converter of one `streamGenerateContent` stream into chat chunks.
#[derive(Debug)]
pub struct ChatChunks {
    created: u64,
    include_usage: bool,
    started: bool,
    calls: usize,
    usage: Option<GeminiUsage>,
    finish: Option<&'static str>,
    meta: ResponseMeta,
    done: bool,
    single_call: bool,
}

impl ChatChunks {
    /// A converter stamping chunks with `created`; `include_usage`: the client asked for the
    /// usage chunk; `single_call`: a turn keeps its first tool call only ([`to_chat`]).
    pub fn new(created: u64, include_usage: bool, single_call: bool) -> Self {
        Self {
            single_call,
            created,
            include_usage,
            started: false,
            calls: 0,
            usage: None,
            finish: None,
            meta: ResponseMeta::default(),
            done: false,
        }
    }

    /// The usage the stream reported so far (the last `usageMetadata`).
    pub fn usage(&self) -> Option<GeminiUsage> {
        self.usage
    }

    /// Whether the stream was closed ([`Self::end`] after a finished candidate).
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Response id, model and finish reason, as far as the stream has told them.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Converts one event's data (a partial `GenerateContentResponse`).
    pub fn event(&mut self, data: &[u8]) -> Result<Step, StreamError> {
        let v: Value = serde_json::from_slice(data).map_err(|_| Malformed("a Gemini stream event is not JSON"))?;
        if let Some(message) = openai::stream_error(&v) {
            return Err(StreamError::Upstream(message));
        }
        let mut step = Step::default();
        if !self.started {
            self.started = true;
            self.meta.id = v.get("responseId").and_then(Value::as_str).map(str::to_owned);
            self.meta.model = v.get("modelVersion").and_then(Value::as_str).map(str::to_owned);
            step.frames.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(GeminiUsage::read(u));
        }
        let candidate = v.get("candidates").and_then(|c| c.get(0));
        let (text, mut calls) = read_parts(candidate, self.calls, self.meta.id.as_deref().unwrap_or_default());
        if self.single_call {
            calls.truncate(1usize.saturating_sub(self.calls));
        }
        if !text.is_empty() {
            step.text.push_str(&text);
            step.frames.push(self.chunk(json!({"content": text}), None));
        }
        if !calls.is_empty() {
            self.calls += calls.len();
            for c in &calls {
                step.text.push_str(c["function"]["name"].as_str().unwrap_or_default());
                step.text.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
            }
            step.frames.push(self.chunk(json!({"tool_calls": calls}), None));
        }
        if let Some(f) = finish(&v, candidate, self.calls > 0) {
            self.finish = Some(f);
            self.meta.finish_reasons.push(f.to_owned());
            step.frames.push(self.chunk(json!({}), Some(f)));
        }
        Ok(step)
    }

    /// Closes a stream at its end: the usage chunk (when asked for) and `[DONE]`, if a candidate
    /// finished; nothing otherwise (the stream was cut, and the relay says so).
    pub fn end(&mut self) -> Step {
        let mut step = Step::default();
        if self.done || self.finish.is_none() {
            return step;
        }
        self.done = true;
        if self.include_usage {
            let usage = openai::usage_chunk(
                &json!(self.meta.id),
                self.created,
                &json!(self.meta.model),
                self.usage.unwrap_or_default().chat_usage(),
            );
            step.frames.push(sse::json_data(&usage));
        }
        step.frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        step
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        sse::json_data(&openai::chunk(&json!(self.meta.id), self.created, &json!(self.meta.model), delta, finish))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Usage;

    #[test]
    fn a_whole_answer_with_a_function_call_becomes_a_completion() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"Checking."},
            {"functionCall":{"name":"weather","args":{"city":"Oslo"}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":5,"thoughtsTokenCount":7,"totalTokenCount":24},
            "modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#;
        let (chat, whole) = to_chat(body, 9, false).expect("converted");
        assert_eq!(
            chat["choices"][0],
            json!({"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {"role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_resp-1_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                    "extra_content": {"google": {"thought_signature": "c2ln"}}}]}})
        );
        assert_eq!(chat["id"], "resp-1");
        assert_eq!(chat["model"], "gemini-2.5-flash");
        assert_eq!(
            whole.usage,
            Some(Usage { prompt_tokens: 12, completion_tokens: 12, cached_tokens: 0, cache_write_tokens: 0 })
        );
    }

    /// Gemini has no switch for parallel calls: a client that asked for none gets the turn's
    /// first call only, whole or streamed.
    #[test]
    fn a_single_call_turn_keeps_its_first_call() {
        let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"a","args":{}}},{"functionCall":{"name":"b","args":{}}}]},"finishReason":"STOP"}],"responseId":"r"}"#;
        let calls =
            |single| to_chat(body, 0, single).expect("converted").0["choices"][0]["message"]["tool_calls"].clone();
        assert_eq!(calls(false).as_array().map(Vec::len), Some(2));
        assert_eq!(calls(true).as_array().map(Vec::len), Some(1));
        let mut c = ChatChunks::new(0, false, true);
        let frames = c.event(body).expect("event").frames;
        let text: String = frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        assert!(text.contains(r#""name":"a""#) && !text.contains(r#""name":"b""#), "{text}");
    }

    #[test]
    fn a_blocked_prompt_is_a_content_filter_answer_and_garbage_is_malformed() {
        let body = br#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}"#;
        let (chat, whole) = to_chat(body, 0, false).expect("converted");
        assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chat["choices"][0]["message"]["content"], "");
        assert_eq!(whole.usage.map(|u| u.prompt_tokens), Some(8));
        let (chat, _) =
            to_chat(br#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"MAX_TOKENS"}]}"#, 0, false)
                .expect("converted");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert!(to_chat(b"{}", 0, false).is_err());
        assert!(to_chat(b"nope", 0, false).is_err());
    }

    const EVENTS: &[&str] = &[
        r#"{"candidates":[{"content":{"parts":[{"text":"The weather"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":10,"totalTokenCount":10},"modelVersion":"gemini-2.5-flash","responseId":"r-2"}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":" is:"}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash","responseId":"r-2"}"#,
        r#"{"candidates":[{"content":{"parts":[{"functionCall":{"id":"fc-9","name":"weather","args":{"city":"Oslo"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":6,"cachedContentTokenCount":4,"totalTokenCount":16},"modelVersion":"gemini-2.5-flash","responseId":"r-2"}"#,
    ];

    fn data(frame: &Bytes) -> Value {
        let s = std::str::from_utf8(frame).expect("utf-8");
        let body = s.strip_prefix("data: ").and_then(|s| s.strip_suffix("\n\n")).expect("one data frame");
        if body == "[DONE]" { Value::String("[DONE]".into()) } else { serde_json::from_str(body).expect("json") }
    }

    #[test]
    fn stream_events_become_chat_chunks_and_end_with_usage_and_done() {
        let mut c = ChatChunks::new(5, true, false);
        let mut frames = Vec::new();
        for e in EVENTS {
            frames.extend(c.event(e.as_bytes()).expect("converted").frames.iter().map(data));
        }
        assert!(!c.finished());
        frames.extend(c.end().frames.iter().map(data));
        let deltas: Vec<Value> =
            frames.iter().filter_map(|f| f["choices"].get(0).map(|c| c["delta"].clone())).collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "The weather"}),
                json!({"content": " is:"}),
                json!({"tool_calls": [{"index": 0, "id": "fc-9", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
                json!({}),
            ]
        );
        assert_eq!(frames[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            frames[5]["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 4}})
        );
        assert_eq!(frames[6], Value::String("[DONE]".into()));
        assert_eq!(frames[1]["id"], "r-2");
        assert!(c.finished());
        assert!(c.end().frames.is_empty(), "closed once");
    }

    #[test]
    fn a_cut_stream_is_not_closed_and_cut_bytes_never_panic() {
        let mut c = ChatChunks::new(0, false, false);
        c.event(EVENTS[0].as_bytes()).expect("converted");
        assert!(c.end().frames.is_empty());
        assert_eq!(
            c.event(br#"{"error":{"code":500,"message":"Internal"}}"#),
            Err(StreamError::Upstream("Internal".into()))
        );
        for e in EVENTS {
            for cut in 0..e.len() {
                let _ = c.event(&e.as_bytes()[..cut]);
            }
        }
    }
}
