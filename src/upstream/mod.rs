//! Talking to upstreams: the transport (awc), SSE framing, usage sniffing, failure
//! classification, and the in-process `mock` provider.
//!
//! OpenAI-compatible upstreams are passthrough: request bytes are forwarded with only `model`
//! rewritten and response bytes are relayed untouched; usage is only read from them.
//!
//! Architecture Invariant: depends on `config` and `types` only; no store, no shared state, no
//! catalog. awc is `!Send`, so a `Client` is built per actix worker and never crosses threads.

pub mod client;
pub mod mock;
pub mod sse;
pub mod ssrf;
pub mod usage;

use std::fmt;

/// What went wrong with one upstream attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// TCP/TLS connect failed.
    Connect,
    /// No answer within a timeout.
    Timeout,
    /// The upstream answered with a non-2xx status.
    Status(u16),
    /// The answer was not what the protocol promises (HTML, truncated JSON, no `choices`, …).
    Protocol,
}

impl FailureKind {
    /// A low-cardinality label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Status(429) => "rate_limited",
            Self::Status(s) if s >= 500 => "status_5xx",
            Self::Status(_) => "status_4xx",
            Self::Protocol => "protocol",
        }
    }
}

/// One failed upstream attempt: who failed, whether another candidate may be tried, and a
/// message that is safe to show a client (no URL, no key, at most 200 characters of upstream text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// Another candidate may be tried (only before any byte reached the client).
    pub retryable: bool,
    /// Safe, short description.
    pub message: String,
    /// The upstream's `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl UpstreamFailure {
    /// A failure of `kind` with a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let retryable = match kind {
            FailureKind::Connect | FailureKind::Timeout | FailureKind::Protocol => true,
            FailureKind::Status(s) => s == 429 || s >= 500 || s == 408,
        };
        Self { kind, retryable, message: message.into(), retry_after: None }
    }

    /// Whether this is the upstream judging the client's request (a 4xx other than 401/403/408/429),
    /// which must not count against the provider.
    pub fn is_client_fault(&self) -> bool {
        matches!(self.kind, FailureKind::Status(s) if (400..500).contains(&s) && !matches!(s, 401 | 403 | 408 | 429))
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Turns an upstream error body into a short, safe sentence: only the `error.message` of a JSON
/// body is used, truncated to 200 characters, with URLs and key-like words removed.
pub fn safe_upstream_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let msg = v.pointer("/error/message").or_else(|| v.get("message")).or_else(|| v.get("error"))?.as_str()?;
    let cleaned: Vec<String> = msg
        .split_whitespace()
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if lower.contains("://") || lower.starts_with("www.") {
                "[url]".to_owned()
            } else if looks_like_key(w) {
                "[redacted]".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let joined = cleaned.join(" ");
    Some(joined.chars().filter(|c| !c.is_control()).take(200).collect())
}

fn looks_like_key(w: &str) -> bool {
    let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let prefixed = ["sk-", "sy-", "key-", "AIza", "Bearer"].iter().any(|p| w.starts_with(p));
    let long_token = w.len() >= 24 && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    prefixed || long_token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_messages_are_sanitised() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abc123XYZ. See https://platform.example.com/keys for help."}}"#;
        let m = safe_upstream_message(body).unwrap();
        assert!(!m.contains("sk-abc"), "{m}");
        assert!(!m.contains("https://"), "{m}");
        assert!(safe_upstream_message(b"<html>bad gateway</html>").is_none());
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "word ".repeat(100));
        assert!(safe_upstream_message(long.as_bytes()).unwrap().chars().count() <= 200);
    }
}
