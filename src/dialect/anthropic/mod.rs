//! The Anthropic Messages dialect (`POST /v1/messages`, `x-api-key`, `anthropic-version`), and its
//! mapping to and from OpenAI Chat — the pivot every translated request goes through (an Anthropic
//! client reaching an OpenAI upstream, an OpenAI client reaching an Anthropic one). Pure, in the
//! spirit of Helicone's mapper: JSON in, JSON out, no I/O; this module is the one place that names
//! both dialects' fields for this pair.
//!
//! - [`request::from_chat`]: an OpenAI Chat request → the Messages request an Anthropic upstream
//!   receives. A field Messages cannot express is refused with a 400 naming it; the fields
//!   Anthropic's own OpenAI-compatibility documentation lists as ignored are dropped.
//! - [`request::to_chat`]: a Messages request → the OpenAI Chat request an OpenAI upstream
//!   receives (the Anthropic ingress), refusing what Chat cannot express by name.
//! - [`response::to_chat`]: a whole Messages answer → an OpenAI chat completion, with its usage
//!   (cache reads and cache writes apart).
//! - [`response::from_chat`]: a whole chat completion → a Messages answer.
//! - [`stream::ChatChunks`]: Messages stream events → OpenAI chat chunks, one event at a time
//!   (text, tool calls with their streamed arguments, stop reason, usage);
//!   [`stream::MessagesEvents`]: OpenAI chat chunks → Messages events, for a Messages client.
//!
//! [`crate::dialect::bridge`] chains these converters for each (client, upstream) pair.

pub mod request;
pub mod response;
pub mod stream;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{ApiError, Code};
use crate::types::Usage;

/// The API version sent as `anthropic-version`.
pub const VERSION: &str = "2023-06-01";

/// The path a Messages request is posted to, below a base URL that ends in the API version
/// (`https://api.anthropic.com/v1`).
pub const MESSAGES_PATH: &str = "/messages";

/// An Anthropic usage object's figures. Anthropic's `input_tokens` excludes the cached parts;
/// OpenAI's `prompt_tokens` includes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessagesUsage {
    /// `input_tokens`: input neither read from nor written to the prompt cache.
    pub input: u64,
    /// `output_tokens`.
    pub output: u64,
    /// `cache_read_input_tokens`.
    pub cache_read: u64,
    /// `cache_creation_input_tokens`.
    pub cache_write: u64,
}

impl MessagesUsage {
    /// Reads a `usage` object; absent fields are 0, and later fields of a stream (`message_delta`)
    /// overwrite only what they carry.
    pub fn absorb(&mut self, usage: &Value) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(v) = n("input_tokens") {
            self.input = v;
        }
        if let Some(v) = n("output_tokens") {
            self.output = v;
        }
        if let Some(v) = n("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = n("cache_creation_input_tokens") {
            self.cache_write = v;
        }
    }

    /// Every input token, cached or not (OpenAI's `prompt_tokens`).
    pub fn prompt_tokens(self) -> u64 {
        self.input.saturating_add(self.cache_read).saturating_add(self.cache_write)
    }

    /// The gateway's usage figures.
    pub fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens(),
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }
    }

    /// Anthropic's `usage` object for these figures.
    pub fn messages_usage(self) -> Value {
        serde_json::json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        })
    }

    /// OpenAI's `usage` object for these figures.
    pub fn chat_usage(self) -> Value {
        crate::dialect::openai::usage::usage_object(self.usage())
    }
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and any reason added later.
        _ => "stop",
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's error `type` for a gateway error, by its status as Anthropic's API documents them.
pub fn error_type(code: Code) -> &'static str {
    status_type(code.status())
}

/// Anthropic's error `type` for an HTTP status.
fn status_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 409 | 431 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

/// A gateway error in Anthropic's shape (`{"type":"error","error":{"type":…,"message":…}}`),
/// for the Anthropic routes. The field a 400 names leads the message, as Anthropic writes it.
pub fn error_body(err: &ApiError) -> Value {
    let message = match &err.param {
        Some(p) => format!("{p}: {}", err.message),
        None => err.message.clone(),
    };
    json!({"type": "error", "error": {"type": error_type(err.code), "message": message}})
}

/// An error body in OpenAI's shape (every gateway error is rendered in it first) rewritten into
/// Anthropic's, for an answer with `status` on an Anthropic route; `None` when it is not one.
pub fn reshape_error(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let message = e.get("message")?.as_str()?;
    let message = match e.get("param").and_then(Value::as_str) {
        Some(p) => format!("{p}: {message}"),
        None => message.to_owned(),
    };
    serde_json::to_vec(&json!({"type": "error", "error": {"type": status_type(status), "message": message}})).ok()
}

/// The event that ends a broken stream on an Anthropic route.
pub fn error_event(err: &ApiError) -> Bytes {
    let mut out = b"event: error\ndata: ".to_vec();
    // Serialising a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, &error_body(err));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The message of an Anthropic error body (`{"type":"error","error":{"type":…,"message":…}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("message")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_cached_input_in_the_prompt_and_apart() {
        let mut u = MessagesUsage::default();
        u.absorb(&serde_json::json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 1}));
        u.absorb(&serde_json::json!({"output_tokens": 42}));
        assert_eq!(u, MessagesUsage { input: 10, output: 42, cache_read: 100, cache_write: 5 });
        assert_eq!(
            u.usage(),
            Usage { prompt_tokens: 115, completion_tokens: 42, cached_tokens: 100, cache_write_tokens: 5 }
        );
        assert_eq!(u.chat_usage()["total_tokens"], 157);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("stop_sequence"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("refusal"), "content_filter");
        assert_eq!(finish_reason("something_new"), "stop");
        for (finish, stop) in
            [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")]
        {
            assert_eq!(stop_reason(finish), stop);
            assert_eq!(finish_reason(stop), finish);
        }
    }

    #[test]
    fn gateway_errors_take_anthropics_shape() {
        let err = ApiError::invalid("max_tokens", "Must be positive.");
        assert_eq!(
            error_body(&err),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Must be positive."}})
        );
        assert_eq!(error_type(Code::InvalidToken), "authentication_error");
        assert_eq!(error_type(Code::RateLimitExceeded), "rate_limit_error");
        assert_eq!(error_type(Code::NoAvailableUpstream), "overloaded_error");
        assert_eq!(error_type(Code::UpstreamTimeout), "api_error");
        assert_eq!(error_type(Code::ModelNotFound), "not_found_error");
        let event = error_event(&ApiError::new(Code::UpstreamError, "cut"));
        assert_eq!(
            &event[..],
            &b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"cut\"}}\n\n"[..]
        );
    }

    #[test]
    fn error_messages_are_read_from_the_error_shape() {
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        assert_eq!(error_message(body).as_deref(), Some("max_tokens: too big"));
        assert_eq!(error_message(b"<html>"), None);
    }
}
