//! Reading token usage (and the response facts traces carry) out of OpenAI-shaped bodies and
//! stream chunks, without re-serialising them.

use std::borrow::Cow;

use serde::Deserialize;

use crate::dialect::facts::{ChunkMeta, ResponseMeta};
use crate::types::Usage;

#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    /// The Responses API's name of the details.
    #[serde(default)]
    input_tokens_details: Option<Details>,
    /// Cache writes as gateways in front of Anthropic report them at the top level.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// Input written to the prompt cache (OpenRouter's name; the gateway's own in translated
    /// answers: OpenAI has none).
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn into_usage(self) -> Usage {
        let details = self.prompt_tokens_details.or(self.input_tokens_details);
        let detail = |f: fn(&Details) -> Option<u64>| details.as_ref().and_then(f);
        Usage {
            prompt_tokens: self.prompt_tokens.or(self.input_tokens).unwrap_or(0),
            completion_tokens: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cached_tokens: detail(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: detail(|d| d.cache_write_tokens).or(self.cache_creation_input_tokens).unwrap_or(0),
        }
    }
}

/// An OpenAI `usage` object's figures (absent fields are 0; the Responses names are read too).
pub fn read_usage(v: &serde_json::Value) -> Usage {
    WireUsage::deserialize(v).map(WireUsage::into_usage).unwrap_or_default()
}

/// The OpenAI `usage` object for `u` (what a translated answer carries to a chat client). Cache
/// writes, which OpenAI has no field for, ride in `prompt_tokens_details.cache_write_tokens`
/// (OpenRouter's name) when there are any.
pub fn usage_object(u: Usage) -> serde_json::Value {
    let mut details = serde_json::json!({"cached_tokens": u.cached_tokens});
    if u.cache_write_tokens > 0 {
        details["cache_write_tokens"] = serde_json::json!(u.cache_write_tokens);
    }
    serde_json::json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
        "prompt_tokens_details": details,
    })
}

/// What a non-streaming body says, as far as accounting, validation and traces care.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BodySummary {
    /// The upstream's own usage figures, if it sent any.
    pub usage: Option<Usage>,
    /// Tokens of generated text, counted with the tokenizer when `usage` is absent (else 0).
    pub output_tokens: u64,
    /// The response's `id`, `model` and finish reasons.
    pub meta: ResponseMeta,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<BodyChoice<'a>>>,
    #[serde(default)]
    data: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct BodyChoice<'a> {
    #[serde(default, borrow)]
    message: Option<BodyMessage<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct BodyMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

fn tokens(s: Option<&Cow<'_, str>>) -> u64 {
    s.map_or(0, |s| crate::tokens::count(s))
}

/// Validates a 2xx non-streaming body: a JSON object with `choices` (chat, completions) or `data`
/// (embeddings). `Err` says what is wrong, for a 502.
pub fn summarize_body(body: &[u8], embeddings: bool) -> Result<BodySummary, &'static str> {
    let parsed: Body<'_> =
        serde_json::from_slice(body).map_err(|_| "the upstream answered with a body that is not valid JSON")?;
    let output_tokens = match (&parsed.choices, embeddings) {
        (_, true) if parsed.data.is_some() => 0,
        (Some(_), false) if parsed.usage.is_some() => 0,
        (Some(choices), false) => choices
            .iter()
            .map(|c| {
                let m = c.message.as_ref();
                tokens(c.text.as_ref())
                    + tokens(m.and_then(|m| m.content.as_ref()))
                    + tokens(m.and_then(|m| m.reasoning_content.as_ref()))
            })
            .sum(),
        _ => return Err("the upstream answered with JSON of an unexpected shape"),
    };
    let finish_reasons =
        parsed.choices.iter().flatten().filter_map(|c| c.finish_reason.as_deref().map(str::to_owned)).collect();
    let meta =
        ResponseMeta { id: parsed.id.map(Cow::into_owned), model: parsed.model.map(Cow::into_owned), finish_reasons };
    Ok(BodySummary { usage: parsed.usage.map(WireUsage::into_usage), output_tokens, meta })
}

/// What one streamed chunk says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkSummary<'a> {
    /// The chunk carries generated text (content, reasoning or tool-call arguments).
    pub has_output: bool,
    /// The chunk has an empty `choices` list (the usage-only chunk of `include_usage`).
    pub empty_choices: bool,
    /// Usage figures in the chunk.
    pub usage: Option<Usage>,
    /// The generated text of the chunk (content, reasoning, completion text, tool-call arguments).
    pub text: String,
    /// The chunk's `id` and `model` (every chunk repeats them) and any finish reasons.
    pub meta: ChunkMeta<'a>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// A stream event whose data is not a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event data is not a JSON object")]
pub struct NotJson;

/// Reads one `data:` payload of an OpenAI stream. `Err` when it is not a JSON object.
pub fn summarize_chunk(data: &[u8]) -> Result<ChunkSummary<'_>, NotJson> {
    let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|_| NotJson)?;
    let choices = chunk.choices.unwrap_or_default();
    let empty_choices = choices.is_empty();
    let has_output = choices.iter().any(|c| {
        let d = c.delta.as_ref();
        let nonempty = |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().is_some_and(|s| !s.is_empty());
        nonempty(&c.text)
            || d.is_some_and(|d| nonempty(&d.content) || nonempty(&d.reasoning_content) || d.tool_calls.is_some())
    });
    let mut text = String::new();
    for c in &choices {
        let d = c.delta.as_ref();
        for part in
            [c.text.as_deref(), d.and_then(|d| d.content.as_deref()), d.and_then(|d| d.reasoning_content.as_deref())]
                .into_iter()
                .flatten()
        {
            text.push_str(part);
        }
        for call in d.and_then(|d| d.tool_calls.as_ref()).into_iter().flatten() {
            if let Some(f) = &call.function {
                text.push_str(f.name.as_deref().unwrap_or_default());
                text.push_str(f.arguments.as_deref().unwrap_or_default());
            }
        }
    }
    let finish_reasons = choices.into_iter().filter_map(|c| c.finish_reason).collect();
    Ok(ChunkSummary {
        has_output,
        empty_choices,
        usage: chunk.usage.map(WireUsage::into_usage),
        text,
        meta: ChunkMeta { id: chunk.id, model: chunk.model, finish_reasons },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_zero_stays_zero() {
        let b = br#"{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":0,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let s = summarize_body(b, false).unwrap();
        assert_eq!(
            s.usage,
            Some(Usage { prompt_tokens: 3, completion_tokens: 0, cached_tokens: 2, cache_write_tokens: 0 })
        );
        assert_eq!(s.output_tokens, 0, "not counted when the upstream reported usage");
        let n = summarize_body(br#"{"choices":[{"message":{"content":"hello world"}}]}"#, false).unwrap();
        assert_eq!((n.usage, n.output_tokens), (None, 2), "counted with the tokenizer");
        assert!(summarize_body(br#"{"id":"x"}"#, false).is_err());
        assert!(summarize_body(b"<html>", false).is_err());
        assert!(summarize_body(br#"{"data":[],"usage":{"prompt_tokens":4}}"#, true).is_ok());
    }

    #[test]
    fn reads_chunks() {
        let c = summarize_chunk(br#"{"choices":[{"delta":{"content":"hi"}}]}"#).unwrap();
        assert!(c.has_output && !c.empty_choices && c.usage.is_none());
        let u = summarize_chunk(br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#).unwrap();
        assert!(u.empty_choices && u.usage.is_some());
        assert!(summarize_chunk(b"not json").is_err());
    }
}
