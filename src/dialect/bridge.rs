//! Bridges: one request between the dialect its client speaks and the dialect its upstream
//! speaks, through OpenAI Chat, the pivot. Pure, like the converters it chains (Helicone's
//! mapper shape: a pair of converters per (client, upstream), and a passthrough when both sides
//! speak the same dialect).
//!
//! - [`to_pivot`]: a client body → the Chat body every phase reads (validation, counting,
//!   classification, autoselect).
//! - [`upstream_body`]: the body an upstream receives: the client's bytes with `model` replaced
//!   when both sides speak the same dialect, else the pivot in the upstream's dialect.
//! - [`whole`]: a whole upstream answer → the client's body and the facts the ledger records.
//! - [`Stream`]: an upstream event stream → the client's events, and the Chat chunks whose usage
//!   and text the relay reads (one place reads every dialect's stream usage: the pivot's).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::dialect::facts::{Malformed, Step, StreamError, Whole};
use crate::dialect::{Dialect, anthropic, gemini, openai, responses};
use crate::error::{ApiError, Code};
use crate::types::Operation;

/// Output tokens asked of an upstream whose dialect requires a limit (Messages' `max_tokens`)
/// when the client set none and the model declares no context size.
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// The two sides of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sides {
    /// The client's dialect.
    pub client: Dialect,
    /// The upstream's.
    pub upstream: Dialect,
}

impl Sides {
    /// Both sides speak the same dialect: bodies and answers pass as they are.
    pub fn passthrough(self) -> bool {
        self.client == self.upstream
    }
}

/// What translating an answer back into the client's dialect needs to know of its request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Echo {
    /// The Responses request's custom and namespaced tools (what their calls come back as).
    pub tools: responses::ToolKinds,
    /// The client asked for no parallel tool calls (`parallel_tool_calls: false`, or Messages'
    /// `disable_parallel_tool_use`): from an upstream that has no such switch (Gemini), a turn
    /// keeps its first call only.
    pub single_call: bool,
}

/// What the answer's translation needs of a request: `client_body` in `client`'s dialect, and
/// its pivot.
pub fn echo(client: Dialect, client_body: &Map<String, Value>, pivot: &Map<String, Value>) -> Echo {
    Echo {
        tools: if client == Dialect::Responses { responses::ToolKinds::of(client_body) } else { Default::default() },
        single_call: pivot.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false),
    }
}

/// A client's request in Chat, the pivot every phase reads.
#[derive(Debug)]
pub struct Pivot {
    /// The Chat body.
    pub body: Map<String, Value>,
    /// Why the request cannot be translated for an upstream of another dialect (a field or block
    /// only the client's dialect has): it may still go to an upstream of the client's dialect,
    /// as it is; any other gets this 400. The body is then a text rendering to count and classify.
    pub untranslatable: Option<ApiError>,
}

/// The pivot of a client body in `client`'s dialect (a copy of it for Chat clients: the pipeline
/// does not call this for them).
pub fn to_pivot(client: Dialect, body: &Map<String, Value>) -> Result<Pivot, ApiError> {
    let model = || match body.get("model") {
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::invalid("model", "`model` must be a string.")),
        None => Err(ApiError::missing("model")),
    };
    let strict = match client {
        Dialect::OpenAi => Ok(body.clone()),
        Dialect::Anthropic => anthropic::request::to_chat(body, &model()?),
        Dialect::Responses => responses::to_chat(body, &model()?),
        Dialect::Gemini => Err(ApiError::new(Code::InvalidRequest, "Gemini is not a client dialect.")),
    };
    // A request Chat cannot carry may still pass through to an upstream of its own dialect
    // (server tools to Anthropic, `previous_response_id` to a Responses upstream).
    let text = match client {
        Dialect::Anthropic => anthropic::request::to_chat_text,
        Dialect::Responses => responses::to_chat_text,
        Dialect::OpenAi | Dialect::Gemini => return strict.map(|body| Pivot { body, untranslatable: None }),
    };
    match strict {
        Ok(body) => Ok(Pivot { body, untranslatable: None }),
        Err(e) if e.code.status() == 400 => {
            let body = text(body, &model()?).map_err(|_| e.clone())?;
            Ok(Pivot { body, untranslatable: Some(e) })
        }
        Err(e) => Err(e),
    }
}

/// An error about the pivot in the client's terms: the field it names as the client wrote it
/// (Messages' `max_tokens`, Responses' `input`, …; a path into the conversation by its root,
/// since the pivot's messages are not the client's items one for one).
pub fn in_client_terms(client: Dialect, mut e: ApiError) -> ApiError {
    let Some(param) = e.param.clone() else { return e };
    let root = param.split(['.', '[']).next().unwrap_or_default();
    let mapped = match (client, root) {
        (Dialect::Anthropic, "max_completion_tokens") => "max_tokens",
        (Dialect::Anthropic, "stop") => "stop_sequences",
        (Dialect::Anthropic, "user") => "metadata.user_id",
        (Dialect::Anthropic, "messages") => "messages",
        (Dialect::Responses, "max_completion_tokens") => "max_output_tokens",
        (Dialect::Responses, "messages") => "input",
        (Dialect::Responses, "response_format") => "text.format",
        (Dialect::Responses, "reasoning_effort") => "reasoning.effort",
        (Dialect::Responses, "tools") => "tools",
        _ => return e,
    };
    // A path below a field that maps one to one keeps its tail (`tools[0].function` is the
    // client's `tools[0]`); a path into the conversation names the conversation.
    let keep_tail = matches!((client, root), (Dialect::Anthropic, "max_completion_tokens" | "stop" | "user"));
    let client_param = if keep_tail { format!("{mapped}{}", &param[root.len()..]) } else { mapped.to_owned() };
    e.message = e
        .message
        .replace(&format!("`{param}`"), &format!("`{client_param}`"))
        .replace(&format!("`{root}`"), &format!("`{mapped}`"));
    e.param = Some(client_param);
    e
}

/// What an upstream body is built from.
pub struct Outbound<'a> {
    /// The operation.
    pub op: Operation,
    /// The client's bytes.
    pub raw: &'a [u8],
    /// The client's parsed body (for a Chat client, the pivot itself).
    pub client_body: &'a Map<String, Value>,
    /// The pivot.
    pub pivot: &'a Map<String, Value>,
    /// Why the client's body cannot be translated, if it cannot ([`Pivot::untranslatable`]).
    pub untranslatable: Option<&'a ApiError>,
    /// The upstream's name of the model.
    pub model: &'a str,
    /// Ask a Chat upstream for usage in its stream (the client did not).
    pub ask_usage: bool,
    /// The output limit a dialect that requires one gets when the client set none.
    pub default_max_tokens: u64,
}

/// The body for the upstream side of `sides`.
pub fn upstream_body(sides: Sides, o: &Outbound<'_>) -> Result<Bytes, ApiError> {
    if sides.upstream != Dialect::OpenAi && o.op != Operation::Chat {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "This route's upstream speaks {} and serves chat only, not `{}`.",
                sides.upstream.name(),
                o.op.path()
            ),
        ));
    }
    if sides.passthrough() {
        // The client's bytes, `model` replaced (and usage asked for on a Chat stream).
        return openai::upstream_body(o.raw, o.client_body, o.model, o.ask_usage && sides.client == Dialect::OpenAi);
    }
    if let Some(e) = o.untranslatable {
        return Err(e.clone());
    }
    let body = match sides.upstream {
        // The pivot serialised once, `model` (and the usage request) spliced into its bytes: no
        // copy of the tree per attempt.
        Dialect::OpenAi => {
            let raw = serde_json::to_vec(o.pivot).map_err(|_| ApiError::internal())?;
            return openai::upstream_body(&raw, o.pivot, o.model, o.ask_usage);
        }
        Dialect::Anthropic => anthropic::request::from_chat(o.pivot, o.model, o.default_max_tokens)?,
        Dialect::Gemini => gemini::request::from_chat(o.pivot)?,
        // Only a Responses client is sent to a Responses upstream (a passthrough, above).
        Dialect::Responses => return Err(ApiError::internal()),
    };
    serde_json::to_vec(&body).map(Bytes::from).map_err(|_| ApiError::internal())
}

/// A whole 2xx upstream answer for the client: its body, and what it says (usage, meta).
pub fn whole(sides: Sides, op: Operation, body: Bytes, created: u64, echo: &Echo) -> Result<(Bytes, Whole), Malformed> {
    if sides == (Sides { client: Dialect::OpenAi, upstream: Dialect::OpenAi }) {
        let w = openai_whole(op, &body)?;
        return Ok((body, w));
    }
    // Same dialect: the answer as it is, its facts read without translating it.
    if sides == (Sides { client: Dialect::Anthropic, upstream: Dialect::Anthropic }) {
        let w = anthropic::response::whole_facts(&body)?;
        return Ok((body, w));
    }
    // The answer in Chat, and its facts as the upstream reported them.
    let (chat, facts) = match sides.upstream {
        Dialect::OpenAi => {
            let w = openai_whole(op, &body)?;
            (body.clone(), w)
        }
        Dialect::Anthropic => {
            let (v, w) = anthropic::response::to_chat(&body, created)?;
            (json_bytes(&v), w)
        }
        Dialect::Gemini => {
            let (v, w) = gemini::answer::to_chat(&body, created, echo.single_call)?;
            (json_bytes(&v), w)
        }
        // A Responses upstream answers Responses clients only (a passthrough).
        Dialect::Responses => {
            let w = responses::whole_facts(&body)?;
            return if sides.passthrough() {
                Ok((body, w))
            } else {
                Err(Malformed("a Responses answer for another dialect"))
            };
        }
    };
    if sides.passthrough() {
        return Ok((body, facts));
    }
    let out = match sides.client {
        Dialect::OpenAi => chat,
        Dialect::Anthropic => json_bytes(&anthropic::response::from_chat(&chat)?.0),
        Dialect::Responses => json_bytes(&responses::from_chat(&chat, created, &echo.tools)?.0),
        Dialect::Gemini => return Err(Malformed("Gemini is not a client dialect")),
    };
    Ok((out, facts))
}

fn openai_whole(op: Operation, body: &[u8]) -> Result<Whole, Malformed> {
    openai::usage::summarize_body(body, op == Operation::Embeddings)
        .map(|s| Whole { usage: s.usage, output_tokens: s.output_tokens, meta: s.meta })
        .map_err(Malformed)
}

fn json_bytes(v: &Value) -> Bytes {
    // Serialising a `Value` cannot fail.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// An upstream stream's events in Chat.
#[derive(Debug)]
enum Up {
    /// A Chat upstream: its events are the pivot's.
    OpenAi,
    Anthropic(anthropic::stream::ChatChunks),
    Gemini(gemini::answer::ChatChunks),
    /// A Responses upstream (its client speaks Responses too): Chat chunks for the usage tap.
    Responses(responses::ChatTap),
}

/// The client's events from Chat chunks.
#[derive(Debug)]
enum Down {
    /// A Chat client: the chunks themselves.
    OpenAi,
    /// The client speaks the upstream's dialect: the upstream's events as they are.
    Same,
    Anthropic(anthropic::stream::MessagesEvents),
    Responses(Box<responses::ResponseEvents>),
}

/// What one upstream event gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// The event's content as Chat chunk data (`{…}` or `[DONE]`), for the relay's usage tap.
    pub chat: Vec<Bytes>,
    /// Frames for the client, in order; `None` for a Chat client, which gets the Chat chunks.
    pub client: Vec<Bytes>,
}

/// One stream's translation between its two sides (never built for a Chat passthrough, which
/// the relay forwards byte for byte).
#[derive(Debug)]
pub struct Stream {
    up: Up,
    down: Down,
}

impl Stream {
    /// The translation of a stream between `sides`, stamped with `created`.
    pub fn new(sides: Sides, created: u64, echo: &Echo) -> Self {
        // Every upstream converter emits the usage chunk: the relay reads it, and drops it for a
        // Chat client that did not ask for it.
        let up = match sides.upstream {
            Dialect::Anthropic => Up::Anthropic(anthropic::stream::ChatChunks::new(created, true)),
            Dialect::Gemini => Up::Gemini(gemini::answer::ChatChunks::new(created, true, echo.single_call)),
            Dialect::Responses => Up::Responses(responses::ChatTap::default()),
            Dialect::OpenAi => Up::OpenAi,
        };
        let down = match sides.client {
            _ if sides.passthrough() => Down::Same,
            Dialect::Anthropic => Down::Anthropic(anthropic::stream::MessagesEvents::new()),
            Dialect::Responses => {
                Down::Responses(Box::new(responses::ResponseEvents::new(created, echo.tools.clone())))
            }
            Dialect::OpenAi | Dialect::Gemini => Down::OpenAi,
        };
        Self { up, down }
    }

    /// The client gets Chat chunks (the relay frames them itself).
    pub fn client_is_chat(&self) -> bool {
        matches!(self.down, Down::OpenAi)
    }

    /// The client gets the upstream's events as they are.
    pub fn client_is_upstream(&self) -> bool {
        matches!(self.down, Down::Same)
    }

    /// Converts one upstream event's data into Chat chunk data.
    pub fn upstream_event(&mut self, data: Vec<u8>) -> Result<Vec<Bytes>, StreamError> {
        match &mut self.up {
            Up::OpenAi => Ok(vec![Bytes::from(data)]),
            Up::Anthropic(c) => Ok(chat_data(c.event(&data)?)),
            Up::Gemini(c) => Ok(chat_data(c.event(&data)?)),
            Up::Responses(c) => Ok(c.event(&data)?),
        }
    }

    /// The Chat chunks that close an upstream stream that ended without an end marker (Gemini
    /// sends none); nothing when the stream was not complete.
    pub fn upstream_end(&mut self) -> Vec<Bytes> {
        match &mut self.up {
            Up::OpenAi | Up::Anthropic(_) | Up::Responses(_) => Vec::new(),
            Up::Gemini(c) => chat_data(c.end()),
        }
    }

    /// The client's frames for one Chat chunk's data (`[DONE]` closes the client's stream).
    pub fn client_event(&mut self, chat: &[u8]) -> Result<Vec<Bytes>, StreamError> {
        match &mut self.down {
            Down::OpenAi | Down::Same => Ok(Vec::new()),
            Down::Anthropic(m) => Ok(m.event(chat)?.frames),
            Down::Responses(r) => Ok(r.event(chat)?.frames),
        }
    }

    /// The client's closing frames for a Chat stream that finished without `[DONE]`; empty when
    /// it did not finish (the relay then ends it with an error).
    pub fn client_end(&mut self) -> Vec<Bytes> {
        match &mut self.down {
            Down::OpenAi | Down::Same => Vec::new(),
            Down::Anthropic(m) => m.end().frames,
            Down::Responses(r) => r.end().frames,
        }
    }

    /// The event that ends a broken stream in the client's dialect, with what the converter knows
    /// (a Responses stream fails its response).
    pub fn error_event(&mut self, client: Dialect, err: &ApiError) -> Vec<Bytes> {
        match &mut self.down {
            Down::Responses(r) => r.fail(err).frames,
            _ => vec![client.error_event(err)],
        }
    }
}

/// The data of the Chat frames a converter produced (`data: …\n\n`, one line each: compact JSON
/// has no line break), without copying.
fn chat_data(step: Step) -> Vec<Bytes> {
    step.frames
        .into_iter()
        .map(|f| {
            let start = if f.starts_with(b"data: ") { 6 } else { 0 };
            let end = f.len() - usize::from(f.ends_with(b"\n\n")) * 2;
            f.slice(start..end.max(start))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sides(client: Dialect, upstream: Dialect) -> Sides {
        Sides { client, upstream }
    }

    #[test]
    fn chat_data_unframes_without_copying() {
        let step = Step {
            frames: vec![Bytes::from_static(b"data: {\"a\":1}\n\n"), Bytes::from_static(b"data: [DONE]\n\n")],
            text: String::new(),
        };
        assert_eq!(chat_data(step), vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"[DONE]")]);
    }

    #[test]
    fn a_messages_client_reaches_every_upstream() {
        let raw =
            br#"{"model":"claude","max_tokens":100,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#;
        let Value::Object(client) = serde_json::from_slice(raw).unwrap() else { panic!() };
        let pivot = to_pivot(Dialect::Anthropic, &client).unwrap().body;
        assert_eq!(pivot["messages"][0], json!({"role": "system", "content": "be brief"}));
        let o = Outbound {
            op: Operation::Chat,
            raw,
            client_body: &client,
            pivot: &pivot,
            model: "up-model",
            ask_usage: true,
            default_max_tokens: 10,
            untranslatable: None,
        };
        // Same dialect: the client's bytes, only `model` replaced.
        let same = upstream_body(sides(Dialect::Anthropic, Dialect::Anthropic), &o).unwrap();
        assert_eq!(&same[..], &raw[..].replace_model("up-model")[..]);
        let chat: Value =
            serde_json::from_slice(&upstream_body(sides(Dialect::Anthropic, Dialect::OpenAi), &o).unwrap()).unwrap();
        assert_eq!(
            (chat["model"].as_str(), chat["stream_options"]["include_usage"].as_bool()),
            (Some("up-model"), Some(true))
        );
        let g: Value =
            serde_json::from_slice(&upstream_body(sides(Dialect::Anthropic, Dialect::Gemini), &o).unwrap()).unwrap();
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "be brief");
        let e = upstream_body(sides(Dialect::OpenAi, Dialect::Gemini), &Outbound { op: Operation::Embeddings, ..o })
            .unwrap_err();
        assert!(e.message.contains("chat only"), "{}", e.message);
    }

    trait ReplaceModel {
        fn replace_model(&self, m: &str) -> Vec<u8>;
    }
    impl ReplaceModel for [u8] {
        fn replace_model(&self, m: &str) -> Vec<u8> {
            String::from_utf8_lossy(self).replace("\"claude\"", &format!("\"{m}\"")).into_bytes()
        }
    }

    #[test]
    fn whole_answers_cross_in_both_directions() {
        let msg = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#;
        let (out, w) = whole(
            sides(Dialect::OpenAi, Dialect::Anthropic),
            Operation::Chat,
            Bytes::from_static(msg),
            7,
            &Echo::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(w.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((5, 2)));
        let (same, _) = whole(
            sides(Dialect::Anthropic, Dialect::Anthropic),
            Operation::Chat,
            Bytes::from_static(msg),
            7,
            &Echo::default(),
        )
        .unwrap();
        assert_eq!(&same[..], &msg[..]);
        let chat = br#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"hey"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let (out, w) = whole(
            sides(Dialect::Responses, Dialect::OpenAi),
            Operation::Chat,
            Bytes::from_static(chat),
            7,
            &Echo::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["object"].as_str(), v["output"][0]["content"][0]["text"].as_str()),
            (Some("response"), Some("hey"))
        );
        assert_eq!(w.usage.map(|u| u.prompt_tokens), Some(3));
        let (out, _) = whole(
            sides(Dialect::Anthropic, Dialect::OpenAi),
            Operation::Chat,
            Bytes::from_static(chat),
            7,
            &Echo::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["type"].as_str(), v["stop_reason"].as_str()), (Some("message"), Some("end_turn")));
    }

    #[test]
    fn a_stream_crosses_and_closes() {
        let mut s = Stream::new(sides(Dialect::Responses, Dialect::Anthropic), 7, &Echo::default());
        let events: [&[u8]; 5] = [
            br#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":4,"output_tokens":0}}}"#,
            br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}"#,
            br#"{"type":"message_stop"}"#,
        ];
        let mut frames = Vec::new();
        let mut done = false;
        for e in events {
            for chat in s.upstream_event(e.to_vec()).unwrap() {
                done |= &chat[..] == b"[DONE]";
                frames.extend(s.client_event(&chat).unwrap());
            }
        }
        assert!(done);
        let text: String = frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        assert!(
            text.contains("event: response.output_text.delta") && text.contains("event: response.completed"),
            "{text}"
        );
        let failed = s.error_event(Dialect::Responses, &ApiError::new(Code::UpstreamError, "x"));
        assert!(failed.is_empty(), "a completed response does not fail afterwards");
    }
}
