//! The Gemini dialect (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`, the key
//! in `x-goog-api-key`, never in the URL), and its mapping to and from OpenAI Chat, the pivot.
//! Pure, like every dialect: JSON in, JSON out, no I/O.
//!
//! - [`request::from_chat`]: an OpenAI Chat request → a `generateContent` request (the model is in
//!   the path, [`path`]). What Gemini cannot express is refused with a 400 naming it.
//! - [`answer::to_chat`]: a whole `generateContent` answer → an OpenAI chat completion; a prompt
//!   blocked by safety is an answer with `finish_reason: content_filter`.
//! - [`answer::ChatChunks`]: `streamGenerateContent` events → OpenAI chat chunks. Gemini sends no
//!   end marker: [`answer::ChatChunks::end`] closes a stream whose candidate finished.
//!
//! [`crate::dialect::bridge`] chains these converters for each (client, upstream) pair.

pub mod answer;
pub mod request;

use serde_json::Value;

use crate::types::Usage;

/// The path of a request for `model` below a base URL that ends in the API version
/// (`https://generativelanguage.googleapis.com/v1beta`).
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/models/{model}:generateContent")
    }
}

/// A `usageMetadata` object's figures. `promptTokenCount` includes the cached part; thinking
/// tokens are output the client pays for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeminiUsage {
    /// `promptTokenCount`.
    pub prompt: u64,
    /// `candidatesTokenCount` + `thoughtsTokenCount`.
    pub output: u64,
    /// `cachedContentTokenCount`.
    pub cached: u64,
}

impl GeminiUsage {
    /// Reads a `usageMetadata` object.
    pub fn read(meta: &Value) -> Self {
        let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
        Self {
            prompt: n("promptTokenCount"),
            output: n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
            cached: n("cachedContentTokenCount"),
        }
    }

    /// The gateway's usage figures.
    pub fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt,
            completion_tokens: self.output,
            cached_tokens: self.cached.min(self.prompt),
            cache_write_tokens: 0,
        }
    }

    /// OpenAI's `usage` object for these figures.
    pub fn chat_usage(self) -> Value {
        crate::dialect::openai::usage::usage_object(self.usage())
    }
}

/// OpenAI's `finish_reason` for a Gemini `finishReason` (tool calls are decided by the caller: a
/// candidate that calls functions finishes with `STOP`).
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        // STOP, MALFORMED_FUNCTION_CALL, OTHER, FINISH_REASON_UNSPECIFIED, and reasons added later.
        _ => "stop",
    }
}

/// The message of a Gemini error body (`{"error":{"code":…,"message":…,"status":…}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error").or_else(|| v.get(0).and_then(|first| first.get("error")))?;
    e.get("message")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_model_and_the_key_stays_out_of_them() {
        assert_eq!(path("gemini-2.5-flash", false), "/models/gemini-2.5-flash:generateContent");
        assert_eq!(path("gemini-2.5-flash", true), "/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    }

    #[test]
    fn usage_counts_thinking_as_output_and_cached_input_apart() {
        let u = GeminiUsage::read(&serde_json::json!({
            "promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 64, "totalTokenCount": 150
        }));
        assert_eq!(
            u.usage(),
            Usage { prompt_tokens: 100, completion_tokens: 50, cached_tokens: 64, cache_write_tokens: 0 }
        );
        assert_eq!(u.chat_usage()["total_tokens"], 150);
    }

    #[test]
    fn finish_reasons_and_errors_map() {
        assert_eq!(finish_reason("STOP"), "stop");
        assert_eq!(finish_reason("MAX_TOKENS"), "length");
        assert_eq!(finish_reason("SAFETY"), "content_filter");
        assert_eq!(finish_reason("NEW_REASON"), "stop");
        let body = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(error_message(body).as_deref(), Some("API key not valid."));
        let streamed = br#"[{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}]"#;
        assert_eq!(error_message(streamed).as_deref(), Some("Resource exhausted."));
    }
}
