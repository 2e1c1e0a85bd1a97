//! Dialects: the wire protocols spoken on each side of a request — what a client's body means
//! (its route, prompt, limits, whether it streams), how the body an upstream receives is built,
//! and how an upstream's answer is read (usage, response facts, stream events, error messages).
//!
//! A dialect is pure: bytes and JSON in, facts and bytes out; no I/O, no tenants. The data plane
//! asks it through [`Dialect`] and [`bridge`]; the transports (`upstream`) never look inside a
//! body. Clients speak OpenAI Chat, Anthropic Messages or OpenAI Responses; upstreams speak OpenAI
//! Chat (Azure included), Anthropic Messages or Gemini. OpenAI Chat is the pivot: every phase reads
//! a request as Chat, and a pair of dialects is bridged through it. When both sides speak the same
//! dialect, the request body is the client's bytes with only `model` spliced in (and usage asked
//! for on Chat streams), and the answer is relayed untouched.
//!
//! Architecture Invariant: nothing outside a dialect's module names its JSON fields.

pub mod anthropic;
pub mod bridge;
pub mod facts;
pub mod gemini;
pub mod json;
pub mod openai;
pub mod pivot;
#[cfg(test)]
mod props;
pub mod responses;
pub mod sse;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::types::{Operation, ProviderKind};

/// Top-level request fields that do not change what an upstream answers, in any client dialect:
/// who asks (`user`, `metadata`), how usage is reported (`stream_options`), and the name the
/// route was called by and the stream flag (`model`, `stream`: a response-cache key counts the
/// resolved route and the stream flag itself).
pub const ANSWER_NEUTRAL_FIELDS: [&str; 5] = ["user", "metadata", "stream_options", "model", "stream"];

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

/// The path below a provider's endpoint that a request for `op` on `model` is posted to, and
/// where the provider takes its key. Azure speaks OpenAI at its own addresses (a deployment in
/// the path, the API version in the query, the key in `api-key`); Gemini names the model and
/// whether it streams in the path.
pub fn address(
    kind: ProviderKind,
    dialect: Dialect,
    op: Operation,
    model: &str,
    api_version: Option<&str>,
    stream: bool,
) -> (std::borrow::Cow<'static, str>, KeyPlacement) {
    if dialect == Dialect::Responses {
        return (responses::PATH.into(), KeyPlacement::Bearer);
    }
    match (kind, api_version) {
        (ProviderKind::Azure, Some(version)) => {
            (openai::azure::path(op, model, version).into(), KeyPlacement::Header(openai::azure::KEY_HEADER))
        }
        (ProviderKind::Anthropic, _) => (anthropic::MESSAGES_PATH.into(), Dialect::Anthropic.key_placement()),
        (ProviderKind::Gemini, _) => (gemini::path(model, stream).into(), Dialect::Gemini.key_placement()),
        _ => (openai::path(op).into(), KeyPlacement::Bearer),
    }
}

/// The rest of a counting pivot (a request only its own dialect's upstreams can carry, rendered
/// for the phases to count and classify): its output limit (`limit`) as
/// `max_completion_tokens`, whether it streams, and its named tools as functions (their schema
/// in `schema`).
pub(crate) fn counting_pivot_rest(body: &Map<String, Value>, out: &mut Map<String, Value>, limit: &str, schema: &str) {
    if let Some(max) = body.get(limit).filter(|v| !v.is_null()) {
        out.insert("max_completion_tokens".into(), max.clone());
    }
    if let Some(stream) = body.get("stream").filter(|v| !v.is_null()) {
        out.insert("stream".into(), stream.clone());
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = t.get("name").and_then(Value::as_str)?;
            let parameters = t.get(schema).cloned().unwrap_or_else(|| serde_json::json!({"type": "object"}));
            Some(serde_json::json!({"type": "function", "function": {"name": name, "parameters": parameters}}))
        })
        .collect();
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
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
    /// OpenAI's Chat Completions, Completions and Embeddings (and every server that copies them):
    /// the pivot every other dialect maps to and from.
    OpenAi,
    /// Anthropic Messages (`/v1/messages`): a client dialect and an upstream dialect.
    Anthropic,
    /// Gemini `generateContent`: an upstream dialect.
    Gemini,
    /// OpenAI Responses (`/v1/responses`): a client dialect.
    Responses,
}

impl Dialect {
    /// The dialect's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "OpenAI Chat",
            Self::Anthropic => "Anthropic Messages",
            Self::Gemini => "Gemini",
            Self::Responses => "OpenAI Responses",
        }
    }

    /// The dialect an attempt speaks to a provider for a client speaking `client`: Responses when
    /// both the client and the provider (`responses_api`) speak it, else the provider type's.
    pub fn for_attempt(kind: ProviderKind, responses_api: bool, client: Self) -> Option<Self> {
        if client == Self::Responses && responses_api && kind == ProviderKind::Openai {
            return Some(Self::Responses);
        }
        Self::of_provider(kind)
    }

    /// The dialect a provider type speaks, if this version speaks it.
    pub fn of_provider(kind: ProviderKind) -> Option<Self> {
        match kind {
            // A broker worker relays to a local OpenAI-compatible server.
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Mock | ProviderKind::Broker => {
                Some(Self::OpenAi)
            }
            ProviderKind::Anthropic => Some(Self::Anthropic),
            ProviderKind::Gemini => Some(Self::Gemini),
        }
    }

    /// Where an upstream speaking this dialect takes the provider's key.
    pub fn key_placement(self) -> KeyPlacement {
        match self {
            Self::OpenAi | Self::Responses => KeyPlacement::Bearer,
            Self::Anthropic => KeyPlacement::Header("x-api-key"),
            Self::Gemini => KeyPlacement::Header("x-goog-api-key"),
        }
    }

    /// A client's headers that belong to this dialect's protocol and pass on to an upstream
    /// speaking it too (Anthropic's beta features).
    pub fn client_headers(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => &["anthropic-beta"],
            Self::OpenAi | Self::Gemini | Self::Responses => &[],
        }
    }

    /// Headers an upstream speaking this dialect requires of every request (`anthropic-version`).
    pub fn upstream_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Anthropic => &[("anthropic-version", anthropic::VERSION)],
            Self::OpenAi | Self::Gemini | Self::Responses => &[],
        }
    }

    /// The client's field an error about the prompt's size names (`param`).
    pub fn prompt_param(self, op: Operation) -> &'static str {
        match (self, op) {
            (Self::Responses, _) => "input",
            (_, Operation::Chat) => "messages",
            (_, Operation::Completions) => "prompt",
            (_, Operation::Embeddings) => "input",
        }
    }

    /// The client's field an error about the output limit names (`param`).
    pub fn output_param(self) -> &'static str {
        match self {
            Self::Responses => "max_output_tokens",
            Self::OpenAi | Self::Anthropic | Self::Gemini => "max_tokens",
        }
    }

    /// The message of an upstream's error body, unsanitised (`None`: not this dialect's shape).
    pub fn error_message(self, body: &[u8]) -> Option<String> {
        match self {
            Self::OpenAi | Self::Responses => openai::error_message(body),
            Self::Anthropic => anthropic::error_message(body),
            Self::Gemini => gemini::error_message(body),
        }
    }

    /// The event that ends a broken stream in this dialect (never a silent cut). A Responses
    /// stream fails through its converter ([`bridge::Stream::error_event`]); this is its
    /// stateless `error` event.
    pub fn error_event(self, err: &ApiError) -> Bytes {
        match self {
            Self::OpenAi | Self::Gemini => openai::error_event(err),
            Self::Anthropic => anthropic::error_event(err),
            Self::Responses => sse::json_event(
                "error",
                &serde_json::json!({"type": "error", "code": err.code.row().2, "message": err.message, "param": err.param}),
            ),
        }
    }

    /// An error body in this dialect (Anthropic's shape on its routes, OpenAI's elsewhere).
    pub fn error_body(self, err: &ApiError) -> String {
        match self {
            Self::Anthropic => anthropic::error_body(err).to_string(),
            Self::OpenAi | Self::Gemini | Self::Responses => err.body(),
        }
    }
}
