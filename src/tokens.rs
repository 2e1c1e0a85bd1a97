//! Token counting with a real BPE tokenizer (OpenAI's `o200k_base`, through `tiktoken-rs`).
//!
//! Counting costs about 17 µs per KB (release build), so the hot path avoids it: byte-level BPE
//! never makes more tokens than bytes, so `bytes` is an upper bound, and a request is counted
//! exactly only when that bound exceeds a limit it must be checked against. [`warm`] builds the
//! tables (about 0.2 s and 46 MB of memory) at start-up, off the request path.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

fn encoder() -> Option<&'static CoreBPE> {
    static ENCODER: OnceLock<Option<CoreBPE>> = OnceLock::new();
    ENCODER
        .get_or_init(|| match tiktoken_rs::o200k_base() {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "The tokenizer tables failed to load; estimating tokens as bytes / 4.");
                None
            }
        })
        .as_ref()
}

/// Builds the tokenizer tables now (call once at start-up, on a blocking thread).
pub fn warm() {
    let _ = encoder();
}

/// The number of `o200k_base` tokens in `text` (without chat framing).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoder() {
        Some(e) => u64::try_from(e.encode_ordinary(text).len()).unwrap_or(u64::MAX),
        None => u64::try_from(text.len().div_ceil(4)).unwrap_or(u64::MAX),
    }
}

/// A cheap estimate of the tokens in `bytes` bytes of text (no tokenizer): about four each.
pub fn estimate(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_o200k() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        // Not characters ÷ 4 (which would say 5, 3, 3 and 11).
        assert_eq!(count("internationalization"), 2);
        assert_eq!(count("1234567890"), 4);
        assert_eq!(count("東京は日本の首都です"), 7);
        assert_eq!(count("The quick brown fox jumps over the lazy dog."), 10);
        // The test mock streams one of these per chunk: one token each, also when joined.
        assert_eq!(count(" zero one two three four five six seven eight nine ten"), 11);
        assert_eq!(count(" more more more"), 3);
    }

    #[test]
    fn bytes_bound_the_count() {
        for s in ["a", "hello world", "東京は日本の首都です", "🦀🦀🦀", "x\u{0301}\u{0301}\u{0301}", "{\"k\": [1, 2]}"]
        {
            assert!(count(s) <= u64::try_from(s.len()).unwrap_or(0), "{s}");
        }
    }
}
