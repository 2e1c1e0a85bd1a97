//! Anthropic Messages stream events ⇄ OpenAI chat chunks, one event at a time.
//!
//! [`ChatChunks`] (an Anthropic upstream, a chat client):
//! `message_start` opens the answer (role chunk; input usage), `content_block_start` of a
//! `tool_use` block opens a tool call (its index among the answer's tool calls, id and name),
//! `content_block_delta` carries text or a tool call's argument fragment, `message_delta` the stop
//! reason and output usage, `message_stop` ends it (a usage chunk when the client asked for one,
//! then `[DONE]`). `ping`, thinking and signature deltas carry nothing a chat client reads.
//!
//! [`MessagesEvents`] (a chat upstream, a Messages client): the first chunk opens the message
//! (`message_start`), text opens a text block, a tool call's first delta (its id and name) a
//! `tool_use` block whose argument fragments follow as `input_json_delta`s; a block closes when
//! the next one opens or the choice finishes; `[DONE]` (or the end of a stream that finished
//! without it) sends `message_delta` with the stop reason and the usage, then `message_stop`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::dialect::anthropic::response::messages_usage;
use crate::dialect::anthropic::{MessagesUsage, finish_reason, stop_reason};
use crate::dialect::facts::{Malformed, ResponseMeta, Step, StreamError};
use crate::dialect::{openai, sse};

/// A `content_block_delta` event's fields, borrowed.
#[derive(serde::Deserialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<BlockDelta<'a>>,
}

/// A block delta's fields, borrowed.
#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "openai::view::text")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "openai::view::text")]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "openai::view::text")]
    partial_json: Option<std::borrow::Cow<'a, str>>,
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
        // The stream's most frequent event, read into borrowing fields and written directly; any
        // other (or one whose fields have surprising types) takes the general path below.
        if let Ok(e) = serde_json::from_slice::<DeltaEvent<'_>>(data)
            && e.kind == "content_block_delta"
            && let (Some(index), Some(delta)) = (e.index, &e.delta)
        {
            let mut step = Step::default();
            match delta.kind.as_deref() {
                Some("text_delta") => {
                    let text = delta.text.as_deref().unwrap_or_default();
                    if !text.is_empty() {
                        step.text.push_str(text);
                        step.frames.push(self.fast_chunk(|out| {
                            out.extend_from_slice(b"{\"content\":");
                            openai::view::push_json_str(out, text);
                            out.push(b'}');
                        }));
                    }
                }
                Some("input_json_delta") => {
                    let part = delta.partial_json.as_deref().unwrap_or_default();
                    let Some(n) = self.tools.iter().position(|b| *b == index) else {
                        return Err(Malformed("an input_json_delta outside a tool_use block").into());
                    };
                    if !part.is_empty() {
                        step.text.push_str(part);
                        step.frames.push(self.fast_chunk(|out| {
                            out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                            out.extend_from_slice(n.to_string().as_bytes());
                            out.extend_from_slice(b",\"function\":{\"arguments\":");
                            openai::view::push_json_str(out, part);
                            out.extend_from_slice(b"}}]}");
                        }));
                    }
                }
                _ => {}
            }
            return Ok(step);
        }
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
                    let usage =
                        openai::usage_chunk(&json!(self.id), self.created, &json!(self.model), self.usage.chat_usage());
                    step.frames.push(sse::json_data(&usage));
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
        sse::json_data(&openai::chunk(&json!(self.id), self.created, &json!(self.model), delta, finish))
    }

    /// What [`Self::chunk`] makes of an unfinished delta, written directly; `delta` writes the
    /// delta object.
    fn fast_chunk(&self, delta: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut out = Vec::with_capacity(self.id.len() + self.model.len() + 192);
        out.extend_from_slice(b"data: {\"id\":");
        openai::view::push_json_str(&mut out, &self.id);
        out.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        out.extend_from_slice(self.created.to_string().as_bytes());
        out.extend_from_slice(b",\"model\":");
        openai::view::push_json_str(&mut out, &self.model);
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        delta(&mut out);
        out.extend_from_slice(b",\"finish_reason\":null,\"logprobs\":null}]}\n\n");
        Bytes::from(out)
    }
}

/// A `content_block_delta` event, written directly (the stream's most frequent event: no JSON
/// tree built and walked for it): `{"type":"content_block_delta","index":…,"delta":{"type":kind,
/// field:value}}`.
fn block_delta(index: u64, kind: &str, field: &str, value: &str) -> Bytes {
    let mut out = Vec::with_capacity(value.len() + 128);
    out.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":");
    out.extend_from_slice(index.to_string().as_bytes());
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    openai::view::push_json_str(&mut out, value);
    out.extend_from_slice(b"}}\n\n");
    Bytes::from(out)
}

/// The block a Messages stream has open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    /// A tool call's block, by the call's OpenAI index.
    Tool(u64),
}

/// The converter of one chat stream into Messages events.
#[derive(Debug, Default)]
pub struct MessagesEvents {
    started: bool,
    /// The block open now, and its index.
    open: Option<(Open, u64)>,
    next_block: u64,
    /// OpenAI indexes of the tool calls seen so far.
    tools: Vec<u64>,
    stop: Option<&'static str>,
    usage: MessagesUsage,
    meta: ResponseMeta,
    done: bool,
}

impl MessagesEvents {
    /// A converter for a new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The usage the stream reported (zero until its usage chunk).
    pub fn usage(&self) -> MessagesUsage {
        self.usage
    }

    /// Whether the closing events were sent.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Response id, model and finish reason, as far as the stream has told them.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Converts one event's data (a chunk, or `[DONE]`).
    pub fn event(&mut self, data: &[u8]) -> Result<Step, StreamError> {
        let mut step = Step::default();
        let Some(v) = openai::view::read(data)? else {
            self.close(&mut step);
            return Ok(step);
        };
        if !self.started {
            self.meta.id = v.id.as_deref().map(str::to_owned);
            self.meta.model = v.model.as_deref().map(str::to_owned);
            self.start(&mut step);
        }
        if let Some(u) = v.usage {
            self.usage = messages_usage(u.usage);
        }
        let Some(choice) = v.choice() else { return Ok(step) };
        let delta = choice.delta.as_ref();
        if let Some(text) = delta.and_then(|d| d.content.as_deref()).filter(|t| !t.is_empty()) {
            let index = self.block(Open::Text, &mut step, || json!({"type": "text", "text": ""}));
            step.text.push_str(text);
            step.frames.push(block_delta(index, "text_delta", "text", text));
        }
        for call in delta.and_then(|d| d.tool_calls.as_ref()).into_iter().flatten() {
            self.tool_delta(call, &mut step)?;
        }
        if let Some(finish) = choice.finish_reason.as_deref() {
            self.meta.finish_reasons.push(finish.to_owned());
            self.stop = Some(stop_reason(finish));
            self.close_block(&mut step);
        }
        Ok(step)
    }

    /// The closing events of a stream that ended without `[DONE]` after its choice finished
    /// (some servers omit it); nothing if it was closed or never finished.
    pub fn end(&mut self) -> Step {
        let mut step = Step::default();
        if self.stop.is_some() {
            self.close(&mut step);
        }
        step
    }

    fn tool_delta(&mut self, call: &openai::view::CallDelta<'_>, step: &mut Step) -> Result<(), StreamError> {
        let n = call.index.unwrap_or(0);
        let f = call.function.as_ref();
        if !self.tools.contains(&n) {
            let id = call.id.as_deref().unwrap_or_default();
            let name = f.and_then(|f| f.name.as_deref()).unwrap_or_default();
            if name.is_empty() {
                return Err(Malformed("a tool call's first delta has no name").into());
            }
            self.tools.push(n);
            step.text.push_str(name);
            self.block(Open::Tool(n), step, || json!({"type": "tool_use", "id": id, "name": name, "input": {}}));
        }
        let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or_default();
        if args.is_empty() {
            return Ok(());
        }
        match self.open {
            Some((Open::Tool(open), index)) if open == n => {
                step.text.push_str(args);
                step.frames.push(block_delta(index, "input_json_delta", "partial_json", args));
                Ok(())
            }
            // Messages blocks are sequential: a call's arguments after another block opened
            // cannot be placed.
            _ => Err(Malformed("interleaved tool call arguments").into()),
        }
    }

    /// The index of the open block of `kind`, opening it (and closing another) if needed.
    fn block(&mut self, kind: Open, step: &mut Step, content_block: impl FnOnce() -> Value) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close_block(step);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        let start = json!({"type": "content_block_start", "index": index, "content_block": content_block()});
        step.frames.push(sse::json_event("content_block_start", &start));
        index
    }

    fn close_block(&mut self, step: &mut Step) {
        if let Some((_, index)) = self.open.take() {
            step.frames
                .push(sse::json_event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    /// `message_start`: every Messages stream opens with it, even one that ends at once.
    fn start(&mut self, step: &mut Step) {
        self.started = true;
        let start = json!({"type": "message_start", "message": {
            "id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }});
        step.frames.push(sse::json_event("message_start", &start));
    }

    fn close(&mut self, step: &mut Step) {
        if self.done {
            return;
        }
        if !self.started {
            self.start(step);
        }
        self.done = true;
        self.close_block(step);
        // Some servers finish a turn that called tools with "stop": a Messages client reads
        // `tool_use` as "run the tools".
        let stop = match self.stop {
            Some("end_turn") | None if !self.tools.is_empty() => "tool_use",
            other => other.unwrap_or("end_turn"),
        };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": self.usage.messages_usage(),
        });
        step.frames.push(sse::json_event("message_delta", &delta));
        step.frames.push(sse::json_event("message_stop", &json!({"type": "message_stop"})));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames written directly are the frames the general path makes of the same values.
    #[test]
    fn written_frames_equal_built_ones() {
        let mut c = ChatChunks::new(9, true);
        c.id = "msg_\"1".into();
        c.model = "claude \u{1F600}".into();
        for text in ["plain", "quote \" and \\ and \n newline", "\u{1F916} \u{0007}", ""] {
            let fast = c.fast_chunk(|out| {
                out.extend_from_slice(b"{\"content\":");
                openai::view::push_json_str(out, text);
                out.push(b'}');
            });
            assert_eq!(fast, c.chunk(json!({"content": text}), None), "{text:?}");
            for (kind, field) in [("text_delta", "text"), ("input_json_delta", "partial_json")] {
                let built = sse::json_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 3, "delta": {"type": kind, field: text}}),
                );
                assert_eq!(block_delta(3, kind, field, text), built, "{text:?}");
            }
        }
        let fast = c.fast_chunk(|out| {
            out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
            out.extend_from_slice(b"2");
            out.extend_from_slice(b",\"function\":{\"arguments\":");
            openai::view::push_json_str(out, "{\"a\":");
            out.extend_from_slice(b"}}]}");
        });
        assert_eq!(fast, c.chunk(json!({"tool_calls": [{"index": 2, "function": {"arguments": "{\"a\":"}}]}), None));
    }

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

    const CHUNKS: &[&str] = &[
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"Let me "},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"look."},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"Bash","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"ls\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"Read","arguments":"{}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":12,"total_tokens":62,"prompt_tokens_details":{"cached_tokens":30}}}"#,
        "[DONE]",
    ];

    fn named(frame: &Bytes) -> (String, Value) {
        let s = std::str::from_utf8(frame).expect("utf-8");
        let (head, data) = s.split_once('\n').expect("two lines");
        let name = head.strip_prefix("event: ").expect("named").to_owned();
        let data = data.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n")).expect("data");
        (name, serde_json::from_str(data).expect("json"))
    }

    #[test]
    fn chat_chunks_become_messages_events() {
        let mut m = MessagesEvents::new();
        let mut events = Vec::new();
        let mut text = String::new();
        for c in CHUNKS {
            let step = m.event(c.as_bytes()).expect("converted");
            text.push_str(&step.text);
            events.extend(step.frames.iter().map(named));
        }
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (name, data) in &events {
            assert_eq!(data["type"], name.as_str());
        }
        assert_eq!(events[0].1["message"]["id"], "chatcmpl-7");
        assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(events[3].1["delta"], json!({"type": "text_delta", "text": "look."}));
        assert_eq!(
            events[5].1,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}}})
        );
        assert_eq!(events[7].1["delta"], json!({"type": "input_json_delta", "partial_json": "\"ls\"}"}));
        assert_eq!(events[9].1["index"], 2);
        assert_eq!(events[10].1["delta"]["partial_json"], "{}");
        assert_eq!(events[12].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[12].1["usage"],
            json!({"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 0})
        );
        assert!(m.finished());
        assert_eq!(text, "Let me look.Bash{\"command\":\"ls\"}Read{}");
        assert!(m.end().frames.is_empty(), "closed once");
    }

    #[test]
    fn a_stream_without_done_is_closed_at_its_end_and_interleaving_is_refused() {
        let mut m = MessagesEvents::new();
        for c in &CHUNKS[..CHUNKS.len() - 1] {
            m.event(c.as_bytes()).expect("converted");
        }
        let names: Vec<String> = m.end().frames.iter().map(|f| named(f).0).collect();
        assert_eq!(names, vec!["message_delta", "message_stop"]);
        let mut m = MessagesEvents::new();
        m.event(CHUNKS[3].as_bytes()).expect("a call opens");
        m.event(CHUNKS[6].as_bytes()).expect("a second call opens");
        assert!(matches!(m.event(CHUNKS[4].as_bytes()), Err(StreamError::Malformed(_))));
        let mut m = MessagesEvents::new();
        assert!(m.end().frames.is_empty(), "an unfinished stream is not closed as if it had finished");
        let names: Vec<String> = m.event(b"[DONE]").expect("converted").frames.iter().map(|f| named(f).0).collect();
        assert_eq!(names, vec!["message_start", "message_delta", "message_stop"], "opened before it is closed");
        let mut m = MessagesEvents::new();
        m.event(CHUNKS[3].as_bytes()).expect("a call opens");
        m.event(br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#).expect("finished");
        let closing = m.event(b"[DONE]").expect("converted");
        let delta = closing.frames.iter().map(named).find(|(n, _)| n == "message_delta").expect("message_delta");
        assert_eq!(delta.1["delta"]["stop_reason"], "tool_use", "a turn that called tools ends in tool_use");
        assert_eq!(m.event(br#"{"error":{"message":"boom"}}"#), Err(StreamError::Upstream("boom".into())));
    }

    /// Messages → chat chunks → Messages keeps text, tool ids, names, arguments and the stop.
    #[test]
    fn streams_round_trip_through_both_shapes() {
        let mut to_chat = ChatChunks::new(0, true);
        let mut back = MessagesEvents::new();
        let mut out = Vec::new();
        for e in EVENTS {
            for f in to_chat.event(e.as_bytes()).expect("to chat").frames {
                let s = std::str::from_utf8(&f).expect("utf-8");
                let data = s.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n")).expect("data");
                out.extend(back.event(data.as_bytes()).expect("back").frames.iter().map(named));
            }
        }
        let text: String = out.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
        let args: String = out.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
        let tool = out.iter().find(|(_, d)| d["content_block"]["type"] == "tool_use").expect("a tool block");
        assert_eq!(text, "Okay, let's check");
        assert_eq!(args, "{\"location\": \"SF\"}");
        assert_eq!(tool.1["content_block"]["id"], "toolu_01");
        assert_eq!(tool.1["content_block"]["name"], "get_weather");
        let delta = out.iter().find(|(n, _)| n == "message_delta").expect("message_delta");
        assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta.1["usage"]["output_tokens"], 89);
        assert_eq!(out.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    }

    #[test]
    fn arbitrary_chat_bytes_never_panic() {
        let mut m = MessagesEvents::new();
        for c in CHUNKS {
            let bytes = c.as_bytes();
            for cut in 0..bytes.len() {
                let _ = m.event(&bytes[..cut]);
            }
        }
    }
}
