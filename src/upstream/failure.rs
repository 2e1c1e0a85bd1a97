//! Upstream failures: their kinds, what they mean for the request, and safe messages.

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

/// What a failed attempt means for the request (decided before any byte reached the client;
/// afterwards nothing is retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The provider failed (connect, timeout, broken answer, 5xx, 429, refused credentials):
    /// it counts against the provider and another candidate may take the request.
    Failover,
    /// The upstream judged the client's request (a 4xx other than 401/403/408/429): the client
    /// gets that answer; the provider is not at fault and no other candidate is tried.
    Reject,
}

/// One failed upstream attempt: what went wrong, and a message that is safe to show a client
/// (no URL, no key, at most 200 characters of upstream text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// Safe, short description.
    pub message: String,
    /// The upstream's `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl UpstreamFailure {
    /// A failure of `kind` with a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after: None }
    }

    /// What this failure means for the request.
    pub fn disposition(&self) -> Disposition {
        match self.kind {
            FailureKind::Status(s) if (400..500).contains(&s) && !matches!(s, 401 | 403 | 408 | 429) => {
                Disposition::Reject
            }
            _ => Disposition::Failover,
        }
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Turns an upstream's error message (as its dialect found it in the body) into a short, safe
/// sentence: truncated to 200 characters, with URLs and key-like words removed, and every word
/// that carries 8 or more consecutive characters of `secret` (the provider key the request was
/// sent with), raw, URL-encoded or in any base64 alignment, standard or URL-safe.
pub fn sanitize(msg: &str, secret: Option<&str>) -> String {
    let fragments = secret.map(secret_fragments).unwrap_or_default();
    let cleaned: Vec<String> = msg
        .split_whitespace()
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if lower.contains("://") || lower.starts_with("www.") {
                "[url]".to_owned()
            } else if looks_like_key(w) || fragments.iter().any(|f| w.contains(f.as_str())) {
                "[redacted]".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let joined = cleaned.join(" ");
    joined.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The shortest run of a secret's characters that counts as leaking it.
const FRAGMENT: usize = 8;

/// Every 8-character window of `secret` in the forms an upstream may echo it: raw, URL-encoded,
/// and base64 (standard and URL-safe, at each of the three byte alignments, without the edge
/// characters that depend on the bytes around it).
fn secret_fragments(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms: Vec<String> = vec![secret.to_owned()];
    let encoded: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    forms.push(encoded);
    for pad in 0..3usize {
        let mut bytes = vec![0u8; pad];
        bytes.extend_from_slice(secret.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let e = engine.encode(&bytes);
            // The first group mixes in the padding, the last one what follows the secret.
            let start = if pad == 0 { 0 } else { 4 };
            let end = e.len().saturating_sub(4);
            if end > start {
                forms.push(e[start..end].to_owned());
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    for f in forms {
        let chars: Vec<char> = f.chars().collect();
        for w in chars.windows(FRAGMENT) {
            let s: String = w.iter().collect();
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
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
        let m =
            sanitize("Incorrect API key provided: sk-abc123XYZ. See https://platform.example.com/keys for help.", None);
        assert!(!m.contains("sk-abc"), "{m}");
        assert!(!m.contains("https://"), "{m}");
        assert!(sanitize(&"word ".repeat(100), None).chars().count() <= 200);
    }

    /// S8: fragments (8+ characters) of the provider key and its base64 forms never pass.
    #[test]
    fn key_fragments_and_encodings_are_redacted() {
        use base64::Engine as _;
        let key = "pk.live+Canary/7f3a9b2c";
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{key}"));
        let b64url = base64::engine::general_purpose::URL_SAFE.encode(format!("x{key}"));
        for echoed in [
            "Canary/7f3",
            "key=Canary/7f3a9b2c;",
            "(pk.live+Ca)",
            "pk.live%2BCanary%2F7f3a",
            b64.as_str(),
            &b64[4..16],
            b64url.as_str(),
        ] {
            let m = sanitize(&format!("Bad credential {echoed} for this org"), Some(key));
            assert!(m.contains("[redacted]") && m.contains("Bad credential"), "{echoed}: {m}");
            for w in m.split_whitespace() {
                for f in secret_fragments(key) {
                    assert!(!w.contains(&f), "{echoed}: {m}");
                }
            }
        }
        assert_eq!(sanitize("Rate limit reached for requests", Some(key)), "Rate limit reached for requests");
    }
}
