//! Property tests of the dialects (TESTPLAN P1, P3 and the stream-translation fuzz oracles of
//! §4.1, run as proptest cases): generated conversations survive a round trip through another
//! dialect (roles, text, tool ids and arguments, stop sequences, the output limit), whole answers
//! and streams too; and arbitrary bytes, cut anywhere, fed to every stream decoder never panic and
//! never yield half an event.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::dialect::bridge::{Echo, Sides, Stream};
use crate::dialect::sse::SseFramer;
use crate::dialect::{Dialect, anthropic, gemini, openai, responses};

/// One generated turn of a chat conversation (after the first user message).
#[derive(Clone, Debug)]
enum Turn {
    User(String),
    /// Assistant text (maybe none) and tool calls (name, arguments); each call's result follows.
    Assistant(Option<String>, Vec<(String, Map<String, Value>)>),
}

fn text() -> impl Strategy<Value = String> {
    // Letters, digits, punctuation, spaces inside, and non-ASCII; never blank.
    "[a-zA-Z0-9é漢][a-zA-Z0-9 .,:;!?é漢\"\\\\/{}-]{0,30}"
}

fn arguments() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![text().prop_map(Value::from), any::<i32>().prop_map(Value::from)],
        0..3,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        text().prop_map(Turn::User),
        (proptest::option::of(text()), proptest::collection::vec(("[a-z_]{1,8}", arguments()), 0..3)).prop_map(
            |(t, calls)| Turn::Assistant(if calls.is_empty() { t.or_else(|| Some("ok".into())) } else { t }, calls)
        ),
    ]
}

/// A chat request in the subset every dialect carries: a system prompt, turns that alternate
/// (tool results after the calls they answer), stop sequences, an output limit.
fn chat_request() -> impl Strategy<Value = Map<String, Value>> {
    (
        proptest::option::of(text()),
        text(),
        proptest::collection::vec(turn(), 0..6),
        proptest::option::of(proptest::collection::vec("[a-z]{1,5}", 1..3)),
        1u64..100_000,
    )
        .prop_map(|(system, first, turns, stop, max)| {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.push(json!({"role": "user", "content": first}));
            let mut call_no = 0;
            let mut last_user = true;
            for t in turns {
                match t {
                    Turn::User(u) => {
                        if last_user {
                            messages.push(json!({"role": "assistant", "content": "…"}));
                        }
                        messages.push(json!({"role": "user", "content": u}));
                        last_user = true;
                    }
                    Turn::Assistant(text, calls) => {
                        if !last_user {
                            messages.push(json!({"role": "user", "content": "go on"}));
                        }
                        let calls: Vec<Value> = calls
                            .into_iter()
                            .map(|(name, args)| {
                                call_no += 1;
                                json!({"id": format!("call_{call_no}"), "type": "function",
                                    "function": {"name": name, "arguments": Value::Object(args).to_string()}})
                            })
                            .collect();
                        messages.push(openai::assistant_message(text.unwrap_or_default(), calls.clone()));
                        for c in &calls {
                            messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": format!("result of {}", c["id"])}));
                        }
                        last_user = !calls.is_empty();
                    }
                }
            }
            if !last_user {
                messages.push(json!({"role": "user", "content": "thanks"}));
            }
            let mut body = Map::new();
            body.insert("model".into(), json!("m"));
            body.insert("messages".into(), Value::Array(messages));
            body.insert("max_tokens".into(), json!(max));
            if let Some(s) = stop {
                body.insert("stop".into(), json!(s));
            }
            body
        })
}

/// What a chat conversation says, in order: (role, text) of every message, each tool call's
/// (id, name, arguments as JSON), each tool result's (call id, text).
fn facts(messages: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in messages.as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or_default().to_owned();
        let text = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        };
        if !text.is_empty() || role != "assistant" {
            out.push((role.clone(), text));
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            let args: Value =
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
            out.push(("call".into(), format!("{} {} {args}", c["id"], c["function"]["name"])));
        }
        if let Some(id) = m["tool_call_id"].as_str() {
            out.push(("tool_id".into(), id.to_owned()));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// P3: Chat → Messages → Chat keeps the conversation, the stop sequences and the limit.
    #[test]
    fn chat_through_messages_and_back_keeps_the_conversation(body in chat_request()) {
        let messages = anthropic::request::from_chat(&body, "claude", 4096).expect("a supported request");
        let back = anthropic::request::to_chat(&messages, "m").expect("its own output maps back");
        prop_assert_eq!(facts(&body["messages"]), facts(&back["messages"]));
        prop_assert_eq!(back.get("stop"), body.get("stop"));
        prop_assert_eq!(back.get("max_completion_tokens"), body.get("max_tokens"));
    }

    /// P3 via Gemini: Chat → Gemini keeps every turn's text, each call's name and arguments, and
    /// each result with its call's name, in order (Gemini's parts have no ids).
    #[test]
    fn chat_to_gemini_keeps_turns_calls_and_results(body in chat_request()) {
        let g = gemini::request::from_chat(&body).expect("a supported request");
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        for c in g["contents"].as_array().into_iter().flatten() {
            for p in c["parts"].as_array().into_iter().flatten() {
                if let Some(t) = p["text"].as_str() { texts.push(t.to_owned()); }
                if let Some(f) = p.get("functionCall") { calls.push((f["name"].clone(), f["args"].clone())); }
            }
        }
        let mut want_texts = Vec::new();
        let mut want_calls = Vec::new();
        for m in body["messages"].as_array().into_iter().flatten().filter(|m| m["role"] != "system") {
            if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty() && m["role"] != "tool") {
                want_texts.push(t.to_owned());
            }
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
                want_calls.push((c["function"]["name"].clone(), args));
            }
        }
        prop_assert_eq!(texts, want_texts);
        prop_assert_eq!(calls, want_calls);
    }

    /// P3 for answers: a chat completion → a Messages answer → a chat completion keeps the text,
    /// the calls (ids, names, arguments) and the finish reason.
    #[test]
    fn a_whole_answer_crosses_and_comes_back(
        text in proptest::option::of(text()),
        calls in proptest::collection::vec(("[a-z_]{1,8}", arguments()), 0..3),
        finish in prop_oneof![Just("stop"), Just("length")],
    ) {
        let calls: Vec<Value> = calls.into_iter().enumerate().map(|(i, (name, args))| json!({"id": format!("toolu_{i}"), "type": "function",
            "function": {"name": name, "arguments": Value::Object(args).to_string()}})).collect();
        let finish = if calls.is_empty() { finish } else { "tool_calls" };
        let text = if calls.is_empty() { text.or_else(|| Some("x".into())) } else { text };
        let chat = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": openai::assistant_message(text.unwrap_or_default(), calls), "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
        let (messages, _) = anthropic::response::from_chat(chat.to_string().as_bytes()).expect("converted");
        let (back, whole) = anthropic::response::to_chat(messages.to_string().as_bytes(), 1).expect("back");
        prop_assert_eq!(facts(&json!([chat["choices"][0]["message"]])), facts(&json!([back["choices"][0]["message"]])));
        prop_assert_eq!(&back["choices"][0]["finish_reason"], &chat["choices"][0]["finish_reason"]);
        prop_assert_eq!(whole.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((5, 3)));
    }

    /// A chat stream → Messages events → a chat stream, and → Responses events: the text and the
    /// calls arrive whole, however the upstream cut them into deltas.
    #[test]
    fn a_stream_crosses_and_comes_back(
        pieces in proptest::collection::vec(text(), 0..6),
        calls in proptest::collection::vec(("[a-z_]{1,8}", arguments(), 1usize..4), 0..3),
    ) {
        let chunk = |delta: Value, finish: Value| json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).to_string();
        let mut chat = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        chat.extend(pieces.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
        let mut want_calls = Vec::new();
        for (i, (name, args, cuts)) in calls.iter().enumerate() {
            let args = Value::Object(args.clone()).to_string();
            want_calls.push((format!("call_{i}"), name.clone(), args.clone()));
            chat.push(chunk(json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
            let chars: Vec<char> = args.chars().collect();
            for part in chars.chunks(chars.len().div_ceil(*cuts).max(1)) {
                chat.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": part.iter().collect::<String>()}}]}), Value::Null));
            }
        }
        chat.push(chunk(json!({}), json!(if calls.is_empty() { "stop" } else { "tool_calls" })));
        chat.push(json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}).to_string());
        chat.push("[DONE]".into());

        // Chat → Messages (as a Messages client would get it) → Chat (as from an Anthropic upstream).
        let mut to_messages = anthropic::stream::MessagesEvents::new();
        let mut from_messages = anthropic::stream::ChatChunks::new(1, true);
        let (mut text, mut got_calls) = (String::new(), Vec::<(String, String, String)>::new());
        for data in &chat {
            for frame in to_messages.event(data.as_bytes()).expect("converted").frames {
                let data = event_data(&frame);
                for back in from_messages.event(data.as_bytes()).expect("back").frames {
                    let c: Value = match serde_json::from_str(&event_data(&back)) { Ok(v) => v, Err(_) => continue };
                    let d = &c["choices"][0]["delta"];
                    text.push_str(d["content"].as_str().unwrap_or_default());
                    for call in d["tool_calls"].as_array().into_iter().flatten() {
                        if let Some(id) = call["id"].as_str() {
                            got_calls.push((id.to_owned(), call["function"]["name"].as_str().unwrap_or_default().to_owned(), String::new()));
                        }
                        if let Some(last) = got_calls.last_mut() {
                            last.2.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
                        }
                    }
                }
            }
        }
        prop_assert!(from_messages.finished());
        prop_assert_eq!(text, pieces.concat());
        prop_assert_eq!(&got_calls, &want_calls);

        // Chat → Responses: the completed response holds the same.
        let mut to_responses = responses::ResponseEvents::new(1, responses::ToolKinds::default());
        let mut completed = Value::Null;
        for data in &chat {
            for frame in to_responses.event(data.as_bytes()).expect("converted").frames {
                let v: Value = serde_json::from_str(&event_data(&frame)).expect("JSON");
                if v["type"] == "response.completed" { completed = v["response"].clone(); }
            }
        }
        let mut r_text = String::new();
        let mut r_calls = Vec::new();
        for item in completed["output"].as_array().into_iter().flatten() {
            match item["type"].as_str() {
                Some("message") => r_text.push_str(item["content"][0]["text"].as_str().unwrap_or_default()),
                Some("function_call") => r_calls.push((item["call_id"].as_str().unwrap_or_default().to_owned(),
                    item["name"].as_str().unwrap_or_default().to_owned(), item["arguments"].as_str().unwrap_or_default().to_owned())),
                _ => {}
            }
        }
        prop_assert_eq!(r_text, pieces.concat());
        prop_assert_eq!(r_calls, want_calls);
    }

    /// Arbitrary bytes, cut anywhere, through the SSE framer and every stream translation: no
    /// panic, and every frame a client gets is whole (ends its event; its data is JSON or
    /// `[DONE]`).
    #[test]
    fn arbitrary_bytes_never_panic_nor_yield_half_an_event(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        fuzz_all(&bytes, &cuts)?;
    }

    /// The same over streams made of real events of every dialect, shuffled, dropped, repeated
    /// and with their JSON mutated: deeper into the converters' states than noise reaches.
    #[test]
    fn mangled_real_streams_never_panic_nor_yield_half_an_event(
        picks in proptest::collection::vec((0usize..CORPUS.len(), 0usize..4, any::<u8>()), 0..24),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        for (i, how, b) in picks {
            let event = CORPUS[i];
            match how {
                0 => bytes.extend_from_slice(event.as_bytes()),
                1 => { bytes.extend_from_slice(event.as_bytes()); bytes.extend_from_slice(event.as_bytes()); }
                2 => { let mut e = event.as_bytes().to_vec(); let at = usize::from(b) % e.len().max(1); if let Some(x) = e.get_mut(at) { *x = b; } bytes.extend(e); }
                _ => bytes.extend_from_slice(&event.as_bytes()[..usize::from(b) % event.len().max(1)]),
            }
        }
        fuzz_all(&bytes, &cuts)?;
    }
}

/// Real events of every dialect (data lines; the framer's input).
const CORPUS: &[&str] = &[
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"x\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
    "data: [DONE]\n\n",
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"index\":0}],\"responseId\":\"r\"}\n\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}},\"thoughtSignature\":\"c2ln\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}\n\n",
    "data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\n\n",
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"m\"}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n",
    ": keepalive\n\n",
    "\r\n",
];

/// The data of a frame a converter made (one `data:` line; `event:` lines skipped).
fn event_data(frame: &Bytes) -> String {
    let s = std::str::from_utf8(frame).expect("a frame is UTF-8");
    assert!(s.ends_with("\n\n"), "a frame ends its event: {s:?}");
    s.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n")
}

/// Feeds `bytes`, cut at `cuts`, through the framer and every (client, upstream) translation,
/// ending each stream as the relay would; checks every client frame is whole.
fn fuzz_all(bytes: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let pieces: Vec<&[u8]> = std::iter::once(0)
        .chain(at.iter().copied())
        .zip(at.iter().copied().chain(std::iter::once(bytes.len())))
        .map(|(a, b)| &bytes[a..b])
        .collect();
    let whole = |f: &Bytes| -> Result<(), TestCaseError> {
        let data = event_data(f);
        prop_assert!(data == "[DONE]" || serde_json::from_str::<Value>(&data).is_ok(), "half an event: {f:?}");
        Ok(())
    };
    for client in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Responses] {
        for upstream in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
            let sides = Sides { client, upstream };
            let mut framer = SseFramer::new(1 << 16);
            let mut stream = Stream::new(sides, 1, &Echo::default());
            let mut failed = false;
            for p in &pieces {
                let Ok(events) = framer.push(p) else {
                    failed = true;
                    break;
                };
                for ev in events {
                    let Some(data) = ev.data else { continue };
                    match stream.upstream_event(data) {
                        Ok(chats) => {
                            for chat in chats {
                                // A translated upstream's Chat chunks are whole too (a Chat
                                // upstream's are its own bytes, which the relay judges).
                                if upstream != Dialect::OpenAi {
                                    prop_assert!(
                                        &chat[..] == b"[DONE]" || serde_json::from_slice::<Value>(&chat).is_ok()
                                    );
                                }
                                match stream.client_event(&chat) {
                                    Ok(frames) => frames.iter().try_for_each(whole)?,
                                    Err(_) => failed = true,
                                }
                            }
                        }
                        Err(_) => failed = true,
                    }
                    if failed {
                        break;
                    }
                }
                if failed {
                    break;
                }
            }
            if !failed {
                for chat in stream.upstream_end() {
                    if let Ok(frames) = stream.client_event(&chat) {
                        frames.iter().try_for_each(whole)?;
                    }
                }
                stream.client_end().iter().try_for_each(whole)?;
            }
            let err = crate::error::ApiError::new(crate::error::Code::UpstreamError, "cut");
            stream.error_event(client, &err).iter().try_for_each(whole)?;
        }
    }
    let mut tap = responses::ChatTap::default();
    let mut framer = SseFramer::new(1 << 16);
    for p in &pieces {
        let Ok(events) = framer.push(p) else { break };
        for ev in events.into_iter().filter_map(|e| e.data) {
            if let Ok(chats) = tap.event(&ev) {
                for c in chats {
                    prop_assert!(&c[..] == b"[DONE]" || serde_json::from_slice::<Value>(&c).is_ok());
                }
            }
        }
    }
    Ok(())
}
