//! What goes to an upstream and what comes back, whatever carries it: a request as bytes, an
//! answer as a status, the headers the data plane reads, and a byte stream.

use std::borrow::Cow;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::upstream::failure::{FailureKind, UpstreamFailure};

/// How the provider's key goes with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth<'a> {
    /// No key.
    None,
    /// `Authorization: Bearer KEY`.
    Bearer(&'a str),
    /// The key as the whole value of a header of its own (lower-case name).
    Header(&'static str, &'a str),
}

/// A request for an upstream.
pub struct Outgoing<'a> {
    /// Appended to the provider's endpoint (`/chat/completions`).
    pub path: Cow<'a, str>,
    /// The body, built by the upstream's dialect.
    pub body: Bytes,
    /// The caller wants an event stream (`Accept`).
    pub stream: bool,
    /// The gateway's request id, sent as `X-Request-Id`.
    pub request_id: &'a str,
    /// The attempt's W3C trace context, sent as `traceparent` (and `tracestate`).
    pub trace_headers: &'a [(&'static str, String)],
    /// The provider's key.
    pub auth: Auth<'a>,
    /// Headers the upstream's protocol requires of every request (lower-case names).
    pub headers: &'static [(&'static str, &'static str)],
    /// The client's own headers of the upstream's protocol, passed on when both speak it
    /// (`anthropic-beta`; lower-case names).
    pub forwarded: &'a [(&'static str, String)],
}

/// The body of an upstream answer broke off (the connection failed mid-body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the upstream connection broke while sending its answer")]
pub struct BodyError;

/// An answer's body, as it arrives.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// An upstream's answer: its head, and its body as a stream.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, lower-cased.
    pub content_type: Option<String>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: BodyStream,
}

impl Response {
    /// Whether the answer is an event stream.
    pub fn is_event_stream(&self) -> bool {
        self.content_type.as_deref().is_some_and(|c| c.trim_start().starts_with("text/event-stream"))
    }

    /// An answer made in process.
    pub fn in_process(status: u16, content_type: &str, chunks: Vec<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(content_type.to_owned()),
            retry_after: None,
            body: Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))),
        }
    }
}

/// Reads a whole body with a size cap, an idle timeout between chunks and an overall deadline.
pub async fn read_body(
    body: &mut BodyStream,
    cap: usize,
    idle: Duration,
    deadline: tokio::time::Instant,
) -> Result<Bytes, UpstreamFailure> {
    use futures_util::StreamExt as _;
    let mut buf = bytes::BytesMut::new();
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                return Err(UpstreamFailure::new(
                    FailureKind::Timeout,
                    "the upstream stalled while sending its answer",
                ));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(UpstreamFailure::new(FailureKind::Protocol, e.to_string())),
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > cap {
                    return Err(UpstreamFailure::new(
                        FailureKind::Protocol,
                        "the upstream answer was larger than the gateway accepts",
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}
