//! Reading OpenAI-dialect request bodies: validation, before anything is sent upstream. Errors name the
//! offending field in `param`, as OpenAI does. Unknown fields are forwarded (OpenAI-compatible
//! servers such as vLLM and Ollama define their own sampling fields), but fields that could
//! change where a request goes are refused, at the top level and one level down.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::types::Operation;

/// Fields that name a destination or credentials; never accepted from a client.
const DESTINATION_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "provider_id",
    "custom_llm_provider",
    "endpoint",
    "extra_headers",
    "deployment_id",
    "organization",
];

/// A prompt's size: UTF-8 bytes of text, plus tokens known without a tokenizer (token-id
/// inputs and chat framing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptSize {
    /// Bytes of text (message contents, prompts, inputs, tool definitions).
    pub bytes: u64,
    /// Tokens counted exactly already: token ids, and four per chat message for its framing.
    pub fixed: u64,
}

impl PromptSize {
    /// An upper bound of the prompt tokens: byte-level BPE never yields more tokens than bytes.
    pub fn bound(self) -> u64 {
        self.bytes.saturating_add(self.fixed)
    }

    /// A cheap estimate (no tokenizer).
    pub fn estimate(self) -> u64 {
        crate::tokens::estimate(self.bytes).saturating_add(self.fixed).max(1)
    }
}

/// Tokens of chat framing per message (role and separators), as OpenAI's counting guide has it.
const FRAMING_PER_MESSAGE: u64 = 4;

/// The tool definitions of a body as JSON text, for counting.
pub fn tools_text(body: &Map<String, Value>) -> Vec<String> {
    body.get("tools").and_then(Value::as_array).map_or_else(Vec::new, |t| t.iter().map(Value::to_string).collect())
}

/// Counts a valid body's prompt tokens with the tokenizer: the text the classifiers read (`text`,
/// from [`request_text`]), tool definitions (from [`tools_text`]), and what
/// [`PromptSize::fixed`] holds. CPU-bound: the pipeline runs it off the worker threads.
pub fn count_prompt(text: &str, tools: &[String], size: PromptSize) -> u64 {
    let tools = tools.iter().map(|t| crate::tokens::count(t)).sum::<u64>();
    crate::tokens::count(text).saturating_add(tools).saturating_add(size.fixed).max(1)
}

/// The fields an OpenAI-compatible server may read as the output limit: OpenAI's two, TGI's
/// `max_new_tokens`, llama.cpp's `n_predict`, Ollama's `num_predict`, and `max_output_tokens`.
/// A tier's cap applies to each of them, and the largest one given is the request's limit.
pub const OUTPUT_LIMIT_FIELDS: &[&str] =
    &["max_tokens", "max_completion_tokens", "max_new_tokens", "n_predict", "num_predict", "max_output_tokens"];

/// Tokens allowed for one non-text part (an image, audio or file) when bounding what an
/// upstream may report as prompt tokens.
pub const MEDIA_PART_TOKENS: u64 = 8_192;
/// Template tokens an upstream may add around a prompt beyond [`PromptSize::fixed`].
pub const PROMPT_SLACK_TOKENS: u64 = 64;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// What the pipeline needs from a valid body.
#[derive(Debug)]
pub struct Checked {
    /// The requested route name.
    pub model: String,
    /// Streaming requested.
    pub stream: bool,
    /// The client asked for `stream_options.include_usage` itself.
    pub client_wants_usage: bool,
    /// The prompt's size, for token estimates.
    pub prompt: PromptSize,
    /// The output limit: the largest of the [`OUTPUT_LIMIT_FIELDS`] given, if any.
    pub max_tokens: Option<u64>,
    /// Each output-limit field given, with its value.
    pub limits: Vec<(&'static str, u64)>,
    /// Completions asked for (`n`, or `best_of` when larger): each may use the output limit.
    pub choices: u64,
    /// Non-text message parts (images, audio, files).
    pub media_parts: u64,
}

impl Checked {
    /// The most output tokens the request allows across all its choices, if it sets a limit.
    pub fn output_limit(&self) -> Option<u64> {
        self.max_tokens.map(|m| m.saturating_mul(self.choices))
    }

    /// The most prompt tokens an upstream can honestly report for this request: the byte bound,
    /// template slack, and an allowance per non-text part.
    pub fn prompt_cap(&self) -> u64 {
        self.prompt
            .bound()
            .saturating_add(PROMPT_SLACK_TOKENS)
            .saturating_add(self.media_parts.saturating_mul(MEDIA_PART_TOKENS))
    }

    /// Refuses a request any of whose output-limit fields is above a tier's `cap`.
    pub fn check_output_cap(&self, cap: i64, tier: &str) -> Result<(), ApiError> {
        let cap_u = u64::try_from(cap).unwrap_or(0);
        match self.limits.iter().find(|(_, v)| *v > cap_u) {
            Some((field, v)) => Err(ApiError::invalid(
                *field,
                format!("{field} is {v}; the tier `{tier}` allows at most {cap} output tokens."),
            )),
            None => Ok(()),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        param,
        format!("Invalid type for '{param}': expected {expected}, but got {} instead.", type_name(got)),
    )
}

fn out_of_range(param: &str, what: &str) -> ApiError {
    ApiError::invalid(param, format!("Invalid value for '{param}': {what}."))
}

fn number(body: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            _ => Err(out_of_range(key, &format!("must be between {lo} and {hi}"))),
        },
        Some(v) => Err(wrong(key, "a number", v)),
    }
}

fn integer(body: &Map<String, Value>, key: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ if n.is_i64() || n.is_u64() => Err(out_of_range(key, &format!("must be an integer from {lo} to {hi}"))),
            _ => Err(wrong(key, "an integer", &Value::Number(n.clone()))),
        },
        Some(v) => Err(wrong(key, "an integer", v)),
    }
}

fn boolean(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(key, "a boolean", v)),
    }
}

fn string(body: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(v) => Err(wrong(key, "a string", v)),
    }
}

fn destinations(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (k, v) in body {
        if DESTINATION_FIELDS.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                k.as_str(),
                format!("The field '{k}' is not accepted: the gateway chooses the upstream."),
            ));
        }
        if let Value::Object(inner) = v
            && let Some(bad) = inner.keys().find(|ik| DESTINATION_FIELDS.contains(&ik.as_str()))
        {
            let param = format!("{k}.{bad}");
            return Err(ApiError::invalid(
                param.as_str(),
                format!("The field '{param}' is not accepted: the gateway chooses the upstream."),
            ));
        }
    }
    Ok(())
}

fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => len(s),
        Value::Array(parts) => parts.iter().map(|p| p.get("text").map_or(0, text_bytes)).sum(),
        _ => 0,
    }
}

fn len(s: &str) -> u64 {
    u64::try_from(s.len()).unwrap_or(u64::MAX)
}

/// Checks `prompt` (completions) or `input` (embeddings): a string, or a non-empty array of
/// strings, token ids or token-id arrays. Returns its size.
fn text_inputs(body: &Map<String, Value>, key: &str) -> Result<PromptSize, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Err(ApiError::missing(key)),
        Some(Value::String(s)) => Ok(PromptSize { bytes: len(s), fixed: 0 }),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid(key, format!("Invalid '{key}': empty array.")))
        }
        Some(Value::Array(items)) => {
            let mut size = PromptSize::default();
            for (i, it) in items.iter().enumerate() {
                match it {
                    Value::String(s) => size.bytes += len(s),
                    Value::Number(_) => size.fixed += 1,
                    Value::Array(a) if a.iter().all(Value::is_number) => {
                        size.fixed += u64::try_from(a.len()).unwrap_or(u64::MAX)
                    }
                    other => return Err(wrong(&format!("{key}[{i}]"), "a string, token or token array", other)),
                }
            }
            Ok(size)
        }
        Some(v) => Err(wrong(key, "a string or an array", v)),
    }
}

/// The text of a request that classifiers read: message contents, `prompt` or `input`.
pub fn request_text(body: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut push = |v: &Value| match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str).or_else(|| p.as_str()) {
                    out.push_str(t);
                    out.push('\n');
                }
            }
        }
        _ => {}
    };
    if let Some(Value::Array(msgs)) = body.get("messages") {
        for m in msgs {
            if let Some(c) = m.get("content") {
                push(c);
            }
        }
    }
    for key in ["prompt", "input"] {
        if let Some(v) = body.get(key) {
            push(v);
        }
    }
    out
}

/// Validates a body for `op` and returns what the pipeline needs.
pub fn check(op: Operation, body: &Map<String, Value>) -> Result<Checked, ApiError> {
    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(ApiError::missing("model")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::invalid("model", "The model must not be empty."));
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(wrong("model", "a string", v)),
    };
    destinations(body)?;
    string(body, "user")?;
    let mut size = PromptSize::default();
    let mut media = 0u64;
    let mut choices = 1u64;
    match op {
        Operation::Chat => {
            let messages = match body.get("messages") {
                None | Some(Value::Null) => return Err(ApiError::missing("messages")),
                Some(Value::Array(m)) => m,
                Some(v) => return Err(wrong("messages", "an array", v)),
            };
            if messages.is_empty() {
                return Err(ApiError::invalid(
                    "messages",
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                ));
            }
            for (i, m) in messages.iter().enumerate() {
                let at = format!("messages[{i}]");
                let Value::Object(m) = m else {
                    return Err(wrong(&at, "an object", m));
                };
                match m.get("role") {
                    None => return Err(ApiError::missing(&format!("{at}.role"))),
                    Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
                    Some(Value::String(r)) => {
                        let shown: String = r.chars().take(32).collect();
                        return Err(ApiError::invalid(
                            format!("{at}.role"),
                            format!("Invalid value for '{at}.role': `{shown}` is not a supported role."),
                        ));
                    }
                    Some(v) => return Err(wrong(&format!("{at}.role"), "a string", v)),
                }
                match m.get("content") {
                    None | Some(Value::Null | Value::String(_)) => {}
                    Some(Value::Array(parts)) => {
                        for (j, p) in parts.iter().enumerate() {
                            let pat = format!("{at}.content[{j}]");
                            match p {
                                Value::Object(o) if o.get("type").is_some_and(Value::is_string) => {}
                                Value::Object(_) => {
                                    return Err(ApiError::missing(&format!("{pat}.type")));
                                }
                                other => return Err(wrong(&pat, "an object", other)),
                            }
                        }
                    }
                    Some(v) => {
                        return Err(wrong(&format!("{at}.content"), "a string or an array", v));
                    }
                }
                size.bytes += m.get("content").map_or(0, text_bytes);
                size.fixed += FRAMING_PER_MESSAGE;
                media += m.get("content").and_then(Value::as_array).map_or(0, |parts| {
                    let n = parts.iter().filter(|p| p.get("type").and_then(Value::as_str) != Some("text")).count();
                    u64::try_from(n).unwrap_or(u64::MAX)
                });
            }
            if let Some(tools) = body.get("tools") {
                let Value::Array(tools) = tools else {
                    return Err(wrong("tools", "an array", tools));
                };
                for (i, t) in tools.iter().enumerate() {
                    let at = format!("tools[{i}]");
                    let Value::Object(t) = t else {
                        return Err(wrong(&at, "an object", t));
                    };
                    if t.get("type").and_then(Value::as_str) != Some("function") {
                        return Err(ApiError::invalid(
                            format!("{at}.type"),
                            format!("Invalid value for '{at}.type': expected `function`."),
                        ));
                    }
                    match t.get("function") {
                        Some(Value::Object(f)) => match f.get("name") {
                            Some(Value::String(n)) if !n.is_empty() && n.len() <= 64 => {}
                            Some(Value::String(_)) => {
                                return Err(out_of_range(&format!("{at}.function.name"), "must be 1–64 characters"));
                            }
                            None => return Err(ApiError::missing(&format!("{at}.function.name"))),
                            Some(v) => {
                                return Err(wrong(&format!("{at}.function.name"), "a string", v));
                            }
                        },
                        None => return Err(ApiError::missing(&format!("{at}.function"))),
                        Some(v) => return Err(wrong(&format!("{at}.function"), "an object", v)),
                    }
                    size.bytes += serde_json::to_string(t).map_or(0, |s| len(&s));
                }
            }
            choices = integer(body, "n", 1, 128)?.unwrap_or(1);
            number(body, "presence_penalty", -2.0, 2.0)?;
            number(body, "frequency_penalty", -2.0, 2.0)?;
            boolean(body, "logprobs")?;
            integer(body, "top_logprobs", 0, 20)?;
            boolean(body, "parallel_tool_calls")?;
        }
        Operation::Completions => {
            size = text_inputs(body, "prompt")?;
            let n = integer(body, "n", 1, 128)?.unwrap_or(1);
            let best_of = integer(body, "best_of", 1, 20)?.unwrap_or(1);
            choices = n.max(best_of);
            number(body, "presence_penalty", -2.0, 2.0)?;
            number(body, "frequency_penalty", -2.0, 2.0)?;
            string(body, "suffix")?;
        }
        Operation::Embeddings => {
            size = text_inputs(body, "input")?;
            match body.get("encoding_format") {
                None | Some(Value::Null) => {}
                Some(Value::String(f)) if f == "float" || f == "base64" => {}
                Some(_) => {
                    return Err(ApiError::invalid(
                        "encoding_format",
                        "Invalid value for 'encoding_format': use `float` or `base64`.",
                    ));
                }
            }
            integer(body, "dimensions", 1, 65_536)?;
        }
    }
    let mut limits = Vec::new();
    let (stream, client_wants_usage) = if op == Operation::Embeddings {
        (false, false)
    } else {
        number(body, "temperature", 0.0, 2.0)?;
        number(body, "top_p", 0.0, 1.0)?;
        integer(body, "seed", 0, u64::MAX)?;
        match body.get("stop") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {}
            Some(Value::Array(_)) => return Err(out_of_range("stop", "use at most 4 strings")),
            Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
        }
        let stream = boolean(body, "stream")?.unwrap_or(false);
        let wants = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(wrong("stream_options.include_usage", "a boolean", v)),
            },
            Some(v) => return Err(wrong("stream_options", "an object", v)),
        };
        for field in OUTPUT_LIMIT_FIELDS {
            if let Some(v) = integer(body, field, 1, u64::from(u32::MAX))? {
                limits.push((*field, v));
            }
        }
        (stream, wants)
    };
    // Ollama reads the limit from `options.num_predict` too.
    if let Some(Value::Object(options)) = body.get("options")
        && let Some(v) = integer(options, "num_predict", 1, u64::from(u32::MAX))
            .map_err(|_| out_of_range("options.num_predict", "must be an integer from 1 to 4294967295"))?
    {
        limits.push(("options.num_predict", v));
    }
    let max_tokens = limits.iter().map(|(_, v)| *v).max();
    Ok(Checked { model, stream, client_wants_usage, prompt: size, max_tokens, limits, choices, media_parts: media })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        match serde_json::from_str(s).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn params_name_the_field() {
        let cases = [
            (r#"{"messages":[]}"#, "model", "missing_required_parameter"),
            (r#"{"model":"m"}"#, "messages", "missing_required_parameter"),
            (r#"{"model":"m","messages":"hi"}"#, "messages", "invalid_request"),
            (r#"{"model":"m","messages":[{"role":"user","content":1}]}"#, "messages[0].content", "invalid_request"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
                "invalid_request",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"}"#,
                "max_tokens",
                "invalid_request",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e20}"#,
                "max_tokens",
                "invalid_request",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
                "invalid_request",
            ),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1000}"#, "n", "invalid_request"),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, "stream", "invalid_request"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"api_base":"http://x"}"#,
                "api_base",
                "invalid_request",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"extra_body":{"base_url":"x"}}"#,
                "extra_body.base_url",
                "invalid_request",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}"#,
                "tools[0].function.name",
                "missing_required_parameter",
            ),
        ];
        for (body, param, code) in cases {
            let e = check(Operation::Chat, &obj(body)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert_eq!(e.code.row().2, code, "{body}");
        }
        let ok = check(
            Operation::Chat,
            &obj(r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true,"top_k":5}"#),
        )
        .unwrap();
        assert!(ok.stream && !ok.client_wants_usage);
        assert!(check(Operation::Embeddings, &obj(r#"{"model":"m"}"#)).is_err());
        assert!(check(Operation::Completions, &obj(r#"{"model":"m","prompt":["a",[1,2]]}"#)).is_ok());
    }
}
