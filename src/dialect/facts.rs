//! What dialects report about requests and answers, in no dialect's terms.

use std::borrow::Cow;

use crate::types::Usage;

/// Facts about a response that traces record (`gen_ai.response.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The upstream's response id.
    pub id: Option<String>,
    /// The model that answered, as the upstream names it.
    pub model: Option<String>,
    /// Why each choice stopped.
    pub finish_reasons: Vec<String>,
}

/// What a whole (non-streaming) answer says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Whole {
    /// The upstream's own usage figures, if it sent any.
    pub usage: Option<Usage>,
    /// Output tokens counted with the tokenizer when the upstream reported no usage.
    pub output_tokens: u64,
    /// Response id, model and finish reasons.
    pub meta: ResponseMeta,
}

/// What one stream event's data says (borrowing from it).
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The end-of-stream marker: the answer is complete.
    Done,
    /// A chunk of the answer.
    Chunk(Chunk<'a>),
}

/// Response id, model and finish reasons as one chunk names them, borrowed from the event: every
/// chunk repeats id and model, and only the first is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkMeta<'a> {
    /// The upstream's response id.
    pub id: Option<Cow<'a, str>>,
    /// The model that answered, as the upstream names it.
    pub model: Option<Cow<'a, str>>,
    /// Why each choice that stopped in this chunk stopped.
    pub finish_reasons: Vec<Cow<'a, str>>,
}

impl ResponseMeta {
    /// Takes what a chunk adds: the first id and model, every finish reason.
    pub fn absorb(&mut self, c: ChunkMeta<'_>) {
        if self.id.is_none() {
            self.id = c.id.map(Cow::into_owned);
        }
        if self.model.is_none() {
            self.model = c.model.map(Cow::into_owned);
        }
        self.finish_reasons.extend(c.finish_reasons.into_iter().map(Cow::into_owned));
    }
}

/// One chunk of a streamed answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Generated text (content, reasoning, tool-call names and arguments), for counting.
    pub text: String,
    /// The chunk carries generated output.
    pub has_output: bool,
    /// The chunk only carries usage (the one the gateway asked for on the client's behalf).
    pub usage_only: bool,
    /// Usage figures in the chunk.
    pub usage: Option<Usage>,
    /// Response id, model and finish reasons the chunk names.
    pub meta: ChunkMeta<'a>,
}

/// What one upstream stream event turned into, when the client speaks another dialect.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Complete SSE frames for the client (`data: …\n\n`), in order.
    pub frames: Vec<bytes::Bytes>,
    /// Generated text in the event (content, tool names and arguments), for counting when the
    /// stream is cut before its usage.
    pub text: String,
}

/// Why a stream cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// An event that is not what Messages promises.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The upstream sent an `error` event (its message).
    #[error("{0}")]
    Upstream(String),
}

/// A body or event that is not what the dialect promises; the text says what, for a 502.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// A capability a request needs from the model that serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Tool definitions.
    Tools,
    /// Image parts.
    Vision,
    /// JSON mode or a JSON schema.
    Json,
}

impl Capability {
    /// The name used in model `capabilities` lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Vision => "vision",
            Self::Json => "json",
        }
    }
}
