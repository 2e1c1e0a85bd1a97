//! Anthropic Messages stream events → OpenAI chat chunks, one event at a time.
//!
//! `message_start` opens the answer (role chunk; input usage), `content_block_start` of a
//! `tool_use` block opens a tool call (its index among the answer's tool calls, id and name),
//! `content_block_delta` carries text or a tool call's argument fragment, `message_delta` the stop
//! reason and output usage, `message_stop` ends it (a usage chunk when the client asked for one,
//! then `[DONE]`). `ping`, thinking and signature deltas carry nothing a chat client reads.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::dialect::anthropic::{MessagesUsage, finish_reason};
use crate::dialect::facts::{Malformed, ResponseMeta};

/// What one event turned into.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Complete SSE frames for the client (`data: …\n\n`), in order.
    pub frames: Vec<Bytes>,
    /// Generated text in the event (content, tool names and arguments), for counting when the
    /// stream is cut before its usage.
    pub text: String,
}

/// Why a stream cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// An event that is not what Messages promises.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The upstream sent an `error` event (its message).
    #[error("{0}")]
    Upstream(String),
}

/// The converter of one stream.
#[derive(Debug)]
pub struct ChatChunks {
    created: u64,
    include_usage: bool,
    id: String,
    model: String,
    usage: MessagesUsage,
    /// Per tool call so far: its content block's index (the position is its OpenAI index).
    tools: Vec<u64>,
    meta: ResponseMeta,
    done: bool,
}

impl ChatChunks {
    /// A converter stamping chunks with `created`; `include_usage`: the client asked for the
    /// usage chunk (`stream_options.include_usage`).
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            created,
            include_usage,
            id: String::new(),
            model: String::new(),
            usage: MessagesUsage::default(),
            tools: Vec::new(),
            meta: ResponseMeta::default(),
            done: false,
        }
    }

    /// The usage so far (input from `message_start`, output from the last `message_delta`).
    pub fn usage(&self) -> MessagesUsage {
        self.usage
    }

    /// Whether `message_stop` arrived.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Response id, model and finish reason, as far as the stream has told them.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Converts one event's data.
    pub fn event(&mut self, data: &[u8]) -> Result<Step, StreamError> {
        let v: Value = serde_json::from_slice(data).map_err(|_| Malformed("a Messages stream event is not JSON"))?;
        let mut step = Step::default();
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = v.get("message").ok_or(Malformed("message_start without its message"))?;
                self.id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                self.model = m.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
                self.meta.id = Some(self.id.clone()).filter(|s| !s.is_empty());
                self.meta.model = Some(self.model.clone()).filter(|s| !s.is_empty());
                if let Some(u) = m.get("usage") {
                    self.usage.absorb(u);
                }
                step.frames.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            Some("content_block_start") => {
                let index =
                    v.get("index").and_then(Value::as_u64).ok_or(Malformed("content_block_start without its index"))?;
                let block = v.get("content_block").ok_or(Malformed("content_block_start without its block"))?;
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
                        let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                        let n = self.tools.len();
                        self.tools.push(index);
                        step.text.push_str(name);
                        let call = json!({"index": n, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                        step.frames.push(self.chunk(json!({"tool_calls": [call]}), None));
                    }
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            step.text.push_str(text);
                            step.frames.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let index =
                    v.get("index").and_then(Value::as_u64).ok_or(Malformed("content_block_delta without its index"))?;
                let delta = v.get("delta").ok_or(Malformed("content_block_delta without its delta"))?;
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            step.text.push_str(text);
                            step.frames.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        let Some(n) = self.tools.iter().position(|b| *b == index) else {
                            return Err(Malformed("an input_json_delta outside a tool_use block").into());
                        };
                        if !part.is_empty() {
                            step.text.push_str(part);
                            let call = json!({"index": n, "function": {"arguments": part}});
                            step.frames.push(self.chunk(json!({"tool_calls": [call]}), None));
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.usage.absorb(u);
                }
                if let Some(reason) = v.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    let finish = finish_reason(reason);
                    self.meta.finish_reasons.push(finish.to_owned());
                    step.frames.push(self.chunk(json!({}), Some(finish)));
                }
            }
            Some("message_stop") => {
                self.done = true;
                if self.include_usage {
                    let usage = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.usage.chat_usage(),
                    });
                    step.frames.push(frame(&usage));
                }
                step.frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Some("error") => {
                let message = v.get("error").and_then(|e| e.get("message")).and_then(Value::as_str);
                return Err(StreamError::Upstream(message.unwrap_or("the upstream stream failed").to_owned()));
            }
            // ping, content_block_stop, and event types added later.
            Some(_) => {}
            None => return Err(Malformed("a Messages stream event without a type").into()),
        }
        Ok(step)
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        frame(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        }))
    }
}

fn frame(v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // Serialising a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of Anthropic's documented streaming example with a tool call.
    const EVENTS: &[&str] = &[
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"usage":{"input_tokens":472,"cache_read_input_tokens":8,"output_tokens":2}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type": "ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"SF\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    fn data(frame: &Bytes) -> Value {
        let s = std::str::from_utf8(frame).expect("utf-8");
        let body = s.strip_prefix("data: ").and_then(|s| s.strip_suffix("\n\n")).expect("one data frame");
        if body == "[DONE]" { Value::String("[DONE]".into()) } else { serde_json::from_str(body).expect("json") }
    }

    #[test]
    fn text_and_a_streamed_tool_call_become_chat_chunks() {
        let mut c = ChatChunks::new(7, true);
        let mut frames = Vec::new();
        let mut text = String::new();
        for e in EVENTS {
            let step = c.event(e.as_bytes()).expect("converted");
            text.push_str(&step.text);
            frames.extend(step.frames.iter().map(data));
        }
        let deltas: Vec<Value> =
            frames.iter().filter_map(|f| f["choices"].get(0).map(|c| c["delta"].clone())).collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Okay, let's check"}),
                json!({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"SF\"}"}}]}),
                json!({}),
            ]
        );
        assert_eq!(frames[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(frames[1]["id"], "msg_1");
        assert_eq!(frames[1]["model"], "claude-x");
        assert_eq!(frames[1]["object"], "chat.completion.chunk");
        assert_eq!(frames[6]["choices"], json!([]));
        assert_eq!(frames[6]["usage"]["prompt_tokens"], 480);
        assert_eq!(frames[6]["usage"]["completion_tokens"], 89);
        assert_eq!(frames[7], Value::String("[DONE]".into()));
        assert_eq!(frames.len(), 8);
        assert!(c.finished());
        assert_eq!(c.usage(), MessagesUsage { input: 472, output: 89, cache_read: 8, cache_write: 0 });
        assert_eq!(text, "Okay, let's checkget_weather{\"location\": \"SF\"}");
        assert_eq!(c.meta().finish_reasons, vec!["tool_calls".to_owned()]);
    }

    #[test]
    fn without_include_usage_no_usage_chunk_and_errors_stop_the_stream() {
        let mut c = ChatChunks::new(0, false);
        let last = EVENTS.iter().map(|e| c.event(e.as_bytes()).expect("converted")).last().expect("events");
        assert_eq!(last.frames, vec![Bytes::from_static(b"data: [DONE]\n\n")]);
        let mut c = ChatChunks::new(0, false);
        let err = c.event(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(err, Err(StreamError::Upstream("Overloaded".into())));
        assert!(matches!(c.event(b"{\"no\":1}"), Err(StreamError::Malformed(_))));
        assert!(matches!(
            c.event(
                br#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#
            ),
            Err(StreamError::Malformed(_))
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut c = ChatChunks::new(0, true);
        for e in EVENTS {
            let bytes = e.as_bytes();
            for cut in 0..bytes.len() {
                let _ = c.event(&bytes[..cut]);
            }
        }
    }
}
