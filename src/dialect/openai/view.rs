//! Typed, borrowing views of what chat upstreams send, for the converters that turn them into
//! another dialect: one pass over the bytes into structs that borrow their strings, instead of a
//! `serde_json::Value` tree (a map and an allocation a field) that is read once and dropped.
//! Wrong types are malformed; absent and `null` fields are `None`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::dialect::facts::{Malformed, StreamError};
use crate::types::Usage;

/// A chat completion chunk.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk<'a> {
    /// The completion's id.
    #[serde(borrow, default, deserialize_with = "text")]
    pub id: Option<Cow<'a, str>>,
    /// The model that answered.
    #[serde(borrow, default, deserialize_with = "text")]
    pub model: Option<Cow<'a, str>>,
    /// The choices (the converters read the first).
    #[serde(borrow, default)]
    pub choices: Option<Vec<Choice<'a>>>,
    /// Usage (the usage chunk).
    #[serde(default)]
    pub usage: Option<UsageView>,
    /// An error a server put in the stream.
    #[serde(borrow, default)]
    error: Option<ErrorView<'a>>,
}

impl<'a> Chunk<'a> {
    /// The first choice.
    pub fn choice(&self) -> Option<&Choice<'a>> {
        self.choices.as_ref().and_then(|c| c.first())
    }
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct Choice<'a> {
    /// What it adds.
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    /// Why it stopped, when it did.
    #[serde(borrow, default, deserialize_with = "text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// A choice's delta.
#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    /// Text.
    #[serde(borrow, default, deserialize_with = "text")]
    pub content: Option<Cow<'a, str>>,
    /// Tool-call fragments.
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<CallDelta<'a>>>,
}

/// A fragment of a tool call.
#[derive(Debug, Default, Deserialize)]
pub struct CallDelta<'a> {
    /// Which call of the choice (0 when absent).
    #[serde(default)]
    pub index: Option<u64>,
    /// Its id (the first fragment).
    #[serde(borrow, default, deserialize_with = "text")]
    pub id: Option<Cow<'a, str>>,
    /// Its function's name and an arguments fragment.
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

/// A function's name (first fragment) and a fragment of its arguments.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta<'a> {
    /// The function's name.
    #[serde(borrow, default, deserialize_with = "text")]
    pub name: Option<Cow<'a, str>>,
    /// A fragment of its arguments (JSON text).
    #[serde(borrow, default, deserialize_with = "text")]
    pub arguments: Option<Cow<'a, str>>,
}

/// A whole chat completion.
#[derive(Debug, Default, Deserialize)]
pub struct Completion<'a> {
    /// Its id.
    #[serde(borrow, default, deserialize_with = "text")]
    pub id: Option<Cow<'a, str>>,
    /// The model that answered.
    #[serde(borrow, default, deserialize_with = "text")]
    pub model: Option<Cow<'a, str>>,
    /// The choices (the converters read the first).
    #[serde(borrow, default)]
    pub choices: Option<Vec<CompletionChoice<'a>>>,
    /// Usage.
    #[serde(default)]
    pub usage: Option<UsageView>,
}

/// One choice of a completion.
#[derive(Debug, Default, Deserialize)]
pub struct CompletionChoice<'a> {
    /// The answer.
    #[serde(borrow, default)]
    pub message: Option<Message<'a>>,
    /// Why it stopped.
    #[serde(borrow, default, deserialize_with = "text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// An assistant message.
#[derive(Debug, Default, Deserialize)]
pub struct Message<'a> {
    /// Its text.
    #[serde(borrow, default, deserialize_with = "text")]
    pub content: Option<Cow<'a, str>>,
    /// Its tool calls.
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<CallDelta<'a>>>,
}

/// Reads a whole chat completion and its first choice's message.
pub fn read_completion(body: &[u8]) -> Result<Completion<'_>, Malformed> {
    let c: Completion<'_> = serde_json::from_slice(body).map_err(|_| Malformed("the chat completion is not JSON"))?;
    match c.choices.as_deref().and_then(<[CompletionChoice<'_>]>::first) {
        None => Err(Malformed("the chat completion has no choice")),
        Some(choice) if choice.message.is_none() => Err(Malformed("the chat completion's choice has no message")),
        Some(_) => Ok(c),
    }
}

impl<'a> Completion<'a> {
    /// The first choice (present: [`read_completion`] checked it).
    pub fn choice(&self) -> Option<&CompletionChoice<'a>> {
        self.choices.as_ref().and_then(|c| c.first())
    }
}

#[derive(Debug, Deserialize)]
struct ErrorView<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    message: Option<Cow<'a, str>>,
}

/// A usage object's figures, and the reasoning part of the output.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageView {
    /// The figures.
    pub usage: Usage,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

impl<'de> Deserialize<'de> for UsageView {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Reasoning {
            #[serde(default)]
            reasoning_tokens: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Both {
            #[serde(flatten)]
            wire: super::usage::WireUsage,
            #[serde(default)]
            completion_tokens_details: Option<Reasoning>,
        }
        let b = Both::deserialize(d)?;
        let reasoning_tokens = b.completion_tokens_details.and_then(|r| r.reasoning_tokens).unwrap_or(0);
        Ok(Self { usage: b.wire.into_usage(), reasoning_tokens })
    }
}

/// An optional string, borrowed from the input when it has no escapes (serde borrows a
/// `Cow<str>` only outside an `Option`).
pub(crate) fn text<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Maybe;
    impl<'de> serde::de::Visitor<'de> for Maybe {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(Text).map(Some)
        }
    }
    d.deserialize_option(Maybe)
}

/// One chat stream event's data: `None` for the `[DONE]` marker, the chunk otherwise; an error
/// event is the upstream's failure.
pub fn read(data: &[u8]) -> Result<Option<Chunk<'_>>, StreamError> {
    if data.trim_ascii() == b"[DONE]" {
        return Ok(None);
    }
    let c: Chunk<'_> = serde_json::from_slice(data).map_err(|_| Malformed("a chat stream event is not a chunk"))?;
    match &c.error {
        Some(e) => Err(StreamError::Upstream(e.message.as_deref().unwrap_or("the upstream stream failed").to_owned())),
        None => Ok(Some(c)),
    }
}

/// Appends `s` to `out` as a JSON string (quoted and escaped).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_borrowing_and_wrong_types_are_malformed() {
        let data = br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"hi","tool_calls":[{"index":1,"id":"t","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let c = read(data).expect("read").expect("a chunk");
        assert!(matches!(c.id, Some(Cow::Borrowed("c1"))));
        let escaped = read(br#"{"id":"a\"b"}"#).expect("read").expect("a chunk");
        assert!(matches!(escaped.id, Some(Cow::Owned(ref s)) if s == "a\"b"));
        let d = c.choice().and_then(|c| c.delta.as_ref()).expect("a delta");
        assert_eq!(d.content.as_deref(), Some("hi"));
        let call = &d.tool_calls.as_ref().expect("calls")[0];
        assert_eq!(
            (call.index, call.function.as_ref().and_then(|f| f.arguments.as_deref())),
            (Some(1), Some("{\"a\""))
        );
        let u = c.usage.expect("usage");
        assert_eq!((u.usage.prompt_tokens, u.usage.completion_tokens, u.reasoning_tokens), (3, 2, 1));
        assert!(read(b"[DONE]").expect("done").is_none());
        assert!(read(br#"{"choices":null,"usage":null,"id":null}"#).expect("nulls").is_some());
        assert!(read(br#"{"choices":[{"delta":{"content":5}}]}"#).is_err());
        assert!(matches!(read(br#"{"error":{"message":"boom"}}"#), Err(StreamError::Upstream(m)) if m == "boom"));
    }
}
