//! Reading the pivot: by the time a phase reads a request, a client's body in any dialect has
//! been mapped to OpenAI Chat ([`crate::dialect::bridge::to_pivot`]), and every upstream stream
//! is read as Chat chunks; these read that one shape, for every dialect.

use serde_json::{Map, Value};

use crate::dialect::openai;
use crate::dialect::{Capability, Checked, Event, Malformed, PromptSize};
use crate::error::ApiError;
use crate::types::Operation;

/// Validates a (pivot) body for `op`.
pub fn check(op: Operation, body: &Map<String, Value>) -> Result<Checked, ApiError> {
    openai::request::check(op, body)
}

/// The request's input as traces record it with `telemetry.capture_content` (JSON text).
pub fn input_messages(body: &Map<String, Value>) -> String {
    ["messages", "prompt", "input"].iter().find_map(|k| body.get(*k)).map(Value::to_string).unwrap_or_default()
}

/// The prompt text classifiers and the tokenizer read.
pub fn request_text(body: &Map<String, Value>) -> String {
    openai::request::request_text(body)
}

/// Counts a valid body's prompt tokens (CPU-bound: run it off the worker threads).
pub fn count_prompt(body: &Map<String, Value>, text: &str, size: PromptSize) -> u64 {
    openai::request::count_prompt(text, &openai::request::tools_text(body), size)
}

/// The capabilities a request needs.
pub fn required_capabilities(body: &Map<String, Value>) -> Vec<Capability> {
    openai::required_capabilities(body)
}

/// Reads the data of one Chat stream event.
pub fn decode_event(data: &[u8]) -> Result<Event<'_>, Malformed> {
    openai::decode_event(data)
}
