//! Dialects: the wire protocols spoken on each side of a request — what a client's body means
//! (its route, prompt, limits, whether it streams), how the body an upstream receives is built,
//! and how an upstream's answer is read (usage, response facts, stream events, error messages).
//!
//! A dialect is pure: bytes and JSON in, facts and bytes out; no I/O, no tenants. The data plane
//! asks it through [`Dialect`]; the transports (`upstream`) never look inside a body. OpenAI is the
//! first dialect; when both sides speak the same one, the request body is the client's bytes with
//! only `model` spliced in (and usage asked for on streams), and the answer is relayed untouched.
//!
//! Architecture Invariant: nothing outside a dialect's module names its JSON fields.

pub mod anthropic;
pub mod facts;
pub mod gemini;
pub mod json;
pub mod openai;
pub mod responses;
pub mod sse;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::types::Operation;

pub use facts::{Capability, Chunk, Event, Malformed, ResponseMeta, Step, StreamError, Whole};
pub use openai::request::{Checked, PromptSize};

/// Appends a turn `{"role": role, key: items}` to a conversation, or, when the last turn has the
/// same role, extends that one (dialects whose turns must alternate, or whose tool results must
/// share one turn).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t.get("role").and_then(Value::as_str) == Some(role))
        && let Some(Value::Array(existing)) = last.get_mut(key)
    {
        existing.extend(items);
        return;
    }
    let mut turn = Map::new();
    turn.insert("role".into(), Value::String(role.to_owned()));
    turn.insert(key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// Where an upstream speaking a dialect takes the provider's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPlacement {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// The whole value of a header of its own (`x-api-key`, `x-goog-api-key`, Azure's `api-key`).
    Header(&'static str),
}

/// The wire protocol of one side of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's Chat Completions, Completions and Embeddings (and every server that copies them).
    OpenAi,
}

impl Dialect {
    /// The path an operation is posted to, below a provider's endpoint.
    pub fn path(self, op: Operation) -> &'static str {
        match self {
            Self::OpenAi => openai::path(op),
        }
    }

    /// Where an upstream speaking this dialect takes the provider's key.
    pub fn key_placement(self) -> KeyPlacement {
        match self {
            Self::OpenAi => KeyPlacement::Bearer,
        }
    }

    /// Headers an upstream speaking this dialect requires of every request (`anthropic-version`).
    pub fn upstream_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::OpenAi => &[],
        }
    }

    /// Validates a client body for `op`.
    pub fn check(self, op: Operation, body: &Map<String, Value>) -> Result<Checked, ApiError> {
        match self {
            Self::OpenAi => openai::request::check(op, body),
        }
    }

    /// The request field an error about the prompt's size names (`param`).
    pub fn prompt_param(self, op: Operation) -> &'static str {
        match self {
            Self::OpenAi => match op {
                Operation::Chat => "messages",
                Operation::Completions => "prompt",
                Operation::Embeddings => "input",
            },
        }
    }

    /// The request field an error about the output limit names (`param`).
    pub fn output_param(self) -> &'static str {
        match self {
            Self::OpenAi => "max_tokens",
        }
    }

    /// The request's input as traces record it with `telemetry.capture_content` (JSON text).
    pub fn input_messages(self, body: &Map<String, Value>) -> String {
        match self {
            Self::OpenAi => ["messages", "prompt", "input"]
                .iter()
                .find_map(|k| body.get(*k))
                .map(Value::to_string)
                .unwrap_or_default(),
        }
    }

    /// The prompt text classifiers and the tokenizer read.
    pub fn request_text(self, body: &Map<String, Value>) -> String {
        match self {
            Self::OpenAi => openai::request::request_text(body),
        }
    }

    /// Counts a valid body's prompt tokens (CPU-bound: run it off the worker threads).
    pub fn count_prompt(self, body: &Map<String, Value>, text: &str, size: PromptSize) -> u64 {
        match self {
            Self::OpenAi => openai::request::count_prompt(text, &openai::request::tools_text(body), size),
        }
    }

    /// The capabilities a request needs.
    pub fn required_capabilities(self, body: &Map<String, Value>) -> Vec<Capability> {
        match self {
            Self::OpenAi => openai::required_capabilities(body),
        }
    }

    /// The body for an upstream speaking `self` when the client spoke `self` too: the client's
    /// bytes with `model` replaced and, when `ask_usage`, usage requested in the stream.
    pub fn passthrough_body(
        self,
        raw: &[u8],
        body: &Map<String, Value>,
        model: &str,
        ask_usage: bool,
    ) -> Result<Bytes, ApiError> {
        match self {
            Self::OpenAi => openai::upstream_body(raw, body, model, ask_usage),
        }
    }

    /// Reads a 2xx non-streaming answer.
    pub fn parse_whole(self, op: Operation, body: &[u8]) -> Result<Whole, Malformed> {
        match self {
            Self::OpenAi => openai::usage::summarize_body(body, op == Operation::Embeddings)
                .map(|s| Whole { usage: s.usage, output_tokens: s.output_tokens, meta: s.meta })
                .map_err(Malformed),
        }
    }

    /// Reads the data of one stream event.
    pub fn decode_event(self, data: &[u8]) -> Result<Event<'_>, Malformed> {
        match self {
            Self::OpenAi => openai::decode_event(data),
        }
    }

    /// The message of an upstream's error body, unsanitised (`None`: not this dialect's shape).
    pub fn error_message(self, body: &[u8]) -> Option<String> {
        match self {
            Self::OpenAi => openai::error_message(body),
        }
    }

    /// The event that ends a broken stream in this dialect (never a silent cut).
    pub fn error_event(self, err: &ApiError) -> Bytes {
        match self {
            Self::OpenAi => openai::error_event(err),
        }
    }
}
