//! The frames of the worker protocol: one websocket binary message each.
//!
//! ```text
//! byte 0      version (1)
//! byte 1      kind
//! bytes 2–9   stream id, big-endian u64 (0: the connection itself)
//! bytes 10–   payload: JSON for control frames, raw bytes for `Chunk`, a JSON head and the
//!             body for `Request` (u32 head length, head, body)
//! ```
//!
//! Frames go one way each: [`Up`] from the worker, [`Down`] from the node; a side that receives
//! the other side's kind, an unknown kind, a frame over its size limit, a payload that does not
//! parse, or a field over its bounds ends the connection ([`FrameError`]). Decoding never panics
//! and never allocates more than the frame it was given.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The protocol's version.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER: usize = 10;
/// The most models one worker registers.
pub const MAX_MODELS: usize = 100;
/// The most labels one worker registers.
pub const MAX_LABELS: usize = 32;
/// The longest name, label, version or model a worker sends.
pub const MAX_NAME: usize = 256;
/// The longest failure message a worker sends.
pub const MAX_MESSAGE: usize = 1024;
/// The most header lines a request carries.
pub const MAX_HEADERS: usize = 32;

/// What a worker registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The broker provider's id it serves (its token's).
    pub provider: String,
    /// The models it serves (the provider's own names).
    pub models: Vec<String>,
    /// Requests it takes at once.
    pub max_concurrency: u32,
    /// The worker's build (`switchyard --version`).
    pub version: String,
    /// Free-form `key=value` labels.
    pub labels: Vec<(String, String)>,
}

/// How the node accepted a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// The worker's id in the registry.
    pub worker_id: String,
    /// How often it must send a heartbeat.
    pub heartbeat_ms: u64,
}

/// The head of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The local upstream's status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
}

/// Why a worker could not get an answer from its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The local upstream could not be reached.
    Connect,
    /// It did not answer in time, or stalled.
    Timeout,
    /// It answered with something that is not HTTP, or broke mid-body.
    Protocol,
}

/// A failure a worker reports for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// What failed.
    pub kind: FailKind,
    /// Why, for the node's logs (never sent to clients as it is).
    pub message: String,
}

/// A request for a worker's local upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHead {
    /// The path under the upstream's base URL (`/chat/completions`, `/messages`).
    pub path: String,
    /// Headers the upstream receives (content type, the dialect's, trace context).
    pub headers: Vec<(String, String)>,
    /// The client asked for a stream.
    pub stream: bool,
}

/// A frame from a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Up {
    /// The first frame: what it serves.
    Register(Registration),
    /// It is alive, with this many requests in flight.
    Heartbeat {
        /// Requests in flight on the worker.
        in_flight: u32,
    },
    /// An answer's status and type.
    Head(u64, Head),
    /// A piece of an answer's body.
    Chunk(u64, Bytes),
    /// The answer is complete.
    End(u64),
    /// No (more) answer: the request failed on the worker.
    Fail(u64, Failure),
}

/// A frame from the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    /// The registration was accepted.
    Accepted(Accepted),
    /// It was refused; the node closes the connection.
    Refused {
        /// Why.
        reason: String,
    },
    /// A request, with its body.
    Request(u64, RequestHead, Bytes),
    /// The client went away: stop the request.
    Cancel(u64),
    /// The node can take this many more chunks of the stream.
    Credit(u64, u32),
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header, or than its own lengths say.
    #[error("truncated frame")]
    Truncated,
    /// Larger than the side accepts.
    #[error("frame of {0} bytes over the limit")]
    TooLarge(usize),
    /// Another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A kind this side never receives.
    #[error("unexpected frame kind {0}")]
    Kind(u8),
    /// A payload that does not parse, or a field out of bounds.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

mod kind {
    pub const REGISTER: u8 = 1;
    pub const HEARTBEAT: u8 = 2;
    pub const HEAD: u8 = 3;
    pub const CHUNK: u8 = 4;
    pub const END: u8 = 5;
    pub const FAIL: u8 = 6;
    pub const ACCEPTED: u8 = 16;
    pub const REFUSED: u8 = 17;
    pub const REQUEST: u8 = 18;
    pub const CANCEL: u8 = 19;
    pub const CREDIT: u8 = 20;
}

fn frame(kind: u8, id: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_u8(VERSION);
    b.put_u8(kind);
    b.put_u64(id);
    b.put_slice(payload);
    b.freeze()
}

fn json(kind: u8, id: u64, v: &impl Serialize) -> Bytes {
    // Serialising these plain structs cannot fail.
    frame(kind, id, &serde_json::to_vec(v).unwrap_or_default())
}

/// The header of a frame: (kind, stream id, payload).
fn split(b: &[u8], limit: usize) -> Result<(u8, u64, &[u8]), FrameError> {
    if b.len() > limit {
        return Err(FrameError::TooLarge(b.len()));
    }
    let (head, payload) = b.split_at_checked(HEADER).ok_or(FrameError::Truncated)?;
    if head[0] != VERSION {
        return Err(FrameError::Version(head[0]));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[2..HEADER]);
    Ok((head[1], u64::from_be_bytes(id), payload))
}

fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|_| FrameError::Invalid("payload is not the frame's JSON"))
}

fn bounded(s: &str, max: usize, what: &'static str) -> Result<(), FrameError> {
    if s.len() > max || s.chars().any(char::is_control) { Err(FrameError::Invalid(what)) } else { Ok(()) }
}

fn empty(payload: &[u8]) -> Result<(), FrameError> {
    if payload.is_empty() { Ok(()) } else { Err(FrameError::Invalid("payload on a frame that has none")) }
}

fn stream(id: u64) -> Result<u64, FrameError> {
    if id == 0 { Err(FrameError::Invalid("stream id 0 is the connection's")) } else { Ok(id) }
}

impl Registration {
    fn check(&self) -> Result<(), FrameError> {
        bounded(&self.provider, 64, "provider id")?;
        bounded(&self.version, 64, "version")?;
        if self.provider.is_empty() || self.models.is_empty() || self.models.len() > MAX_MODELS {
            return Err(FrameError::Invalid("a registration names a provider and 1–100 models"));
        }
        if self.max_concurrency == 0 || self.labels.len() > MAX_LABELS {
            return Err(FrameError::Invalid("max_concurrency ≥ 1 and at most 32 labels"));
        }
        for m in &self.models {
            bounded(m, MAX_NAME, "model name")?;
        }
        for (k, v) in &self.labels {
            bounded(k, MAX_NAME, "label")?;
            bounded(v, MAX_NAME, "label")?;
        }
        Ok(())
    }
}

impl Up {
    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Register(r) => json(kind::REGISTER, 0, r),
            Self::Heartbeat { in_flight } => frame(kind::HEARTBEAT, 0, &in_flight.to_be_bytes()),
            Self::Head(id, h) => json(kind::HEAD, *id, h),
            Self::Chunk(id, b) => frame(kind::CHUNK, *id, b),
            Self::End(id) => frame(kind::END, *id, &[]),
            Self::Fail(id, f) => json(kind::FAIL, *id, f),
        }
    }

    /// Reads a worker's frame of at most `limit` bytes.
    pub fn decode(b: &[u8], limit: usize) -> Result<Self, FrameError> {
        let (k, id, payload) = split(b, limit)?;
        let connection =
            |f: Self| if id == 0 { Ok(f) } else { Err(FrameError::Invalid("a connection frame on a stream")) };
        match k {
            kind::REGISTER => {
                let r: Registration = parse(payload)?;
                r.check()?;
                connection(Self::Register(r))
            }
            kind::HEARTBEAT => {
                let n: [u8; 4] = payload.try_into().map_err(|_| FrameError::Invalid("a heartbeat is 4 bytes"))?;
                connection(Self::Heartbeat { in_flight: u32::from_be_bytes(n) })
            }
            kind::HEAD => {
                let h: Head = parse(payload)?;
                bounded(&h.content_type, MAX_NAME, "content type")?;
                if !(100..=599).contains(&h.status) {
                    return Err(FrameError::Invalid("an HTTP status is 100–599"));
                }
                Ok(Self::Head(stream(id)?, h))
            }
            kind::CHUNK => Ok(Self::Chunk(stream(id)?, Bytes::copy_from_slice(payload))),
            kind::END => {
                empty(payload)?;
                Ok(Self::End(stream(id)?))
            }
            kind::FAIL => {
                let f: Failure = parse(payload)?;
                if f.message.len() > MAX_MESSAGE {
                    return Err(FrameError::Invalid("a failure message is at most 1 KiB"));
                }
                Ok(Self::Fail(stream(id)?, f))
            }
            other => Err(FrameError::Kind(other)),
        }
    }
}

impl Down {
    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Accepted(a) => json(kind::ACCEPTED, 0, a),
            Self::Refused { reason } => json(kind::REFUSED, 0, &serde_json::json!({ "reason": reason })),
            Self::Request(id, head, body) => {
                let head = serde_json::to_vec(head).unwrap_or_default();
                let mut p = BytesMut::with_capacity(4 + head.len() + body.len());
                p.put_u32(u32::try_from(head.len()).unwrap_or(u32::MAX));
                p.put_slice(&head);
                p.put_slice(body);
                frame(kind::REQUEST, *id, &p)
            }
            Self::Cancel(id) => frame(kind::CANCEL, *id, &[]),
            Self::Credit(id, n) => frame(kind::CREDIT, *id, &n.to_be_bytes()),
        }
    }

    /// Reads a node's frame of at most `limit` bytes.
    pub fn decode(b: &[u8], limit: usize) -> Result<Self, FrameError> {
        let (k, id, payload) = split(b, limit)?;
        match k {
            kind::ACCEPTED => Ok(Self::Accepted(parse(payload)?)),
            kind::REFUSED => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Reason {
                    reason: String,
                }
                let r: Reason = parse(payload)?;
                Ok(Self::Refused { reason: r.reason.chars().take(MAX_MESSAGE).collect() })
            }
            kind::REQUEST => {
                let (len, rest) = payload.split_at_checked(4).ok_or(FrameError::Truncated)?;
                let mut n = [0u8; 4];
                n.copy_from_slice(len);
                let len = usize::try_from(u32::from_be_bytes(n)).map_err(|_| FrameError::Truncated)?;
                let (head, body) = rest.split_at_checked(len).ok_or(FrameError::Truncated)?;
                let head: RequestHead = parse(head)?;
                bounded(&head.path, 2048, "path")?;
                if !head.path.starts_with('/') || head.headers.len() > MAX_HEADERS {
                    return Err(FrameError::Invalid("a request's path starts with / and it has at most 32 headers"));
                }
                for (k, v) in &head.headers {
                    bounded(k, MAX_NAME, "header")?;
                    bounded(v, 8192, "header")?;
                }
                Ok(Self::Request(stream(id)?, head, Bytes::copy_from_slice(body)))
            }
            kind::CANCEL => {
                empty(payload)?;
                Ok(Self::Cancel(stream(id)?))
            }
            kind::CREDIT => {
                let n: [u8; 4] = payload.try_into().map_err(|_| FrameError::Invalid("a credit is 4 bytes"))?;
                Ok(Self::Credit(stream(id)?, u32::from_be_bytes(n)))
            }
            other => Err(FrameError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn registration() -> Registration {
        Registration {
            provider: "gpu-pool".into(),
            models: vec!["qwen".into(), "llama".into()],
            max_concurrency: 4,
            version: "0.1.0".into(),
            labels: vec![("gpu".into(), "a100".into())],
        }
    }

    fn ups() -> Vec<Up> {
        vec![
            Up::Register(registration()),
            Up::Heartbeat { in_flight: 3 },
            Up::Head(7, Head { status: 200, content_type: "text/event-stream".into() }),
            Up::Chunk(7, Bytes::from_static(b"data: {}\n\n")),
            Up::Chunk(7, Bytes::new()),
            Up::End(7),
            Up::Fail(8, Failure { kind: FailKind::Connect, message: "refused".into() }),
        ]
    }

    fn downs() -> Vec<Down> {
        let head = RequestHead {
            path: "/chat/completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            stream: true,
        };
        vec![
            Down::Accepted(Accepted { worker_id: "w1".into(), heartbeat_ms: 5000 }),
            Down::Refused { reason: "not your provider".into() },
            Down::Request(7, head, Bytes::from_static(br#"{"model":"qwen"}"#)),
            Down::Cancel(7),
            Down::Credit(7, 16),
        ]
    }

    #[test]
    fn every_frame_round_trips_and_goes_one_way() {
        for f in ups() {
            let b = f.encode();
            assert_eq!(Up::decode(&b, LIMIT), Ok(f.clone()));
            assert!(matches!(Down::decode(&b, LIMIT), Err(FrameError::Kind(_))), "{f:?} is not a node's frame");
            // Every truncation is an error, never a panic.
            for n in 0..b.len() {
                let _ = Up::decode(&b[..n], LIMIT);
            }
            assert!(Up::decode(&b, b.len() - 1).is_err(), "over the limit");
        }
        for f in downs() {
            let b = f.encode();
            assert_eq!(Down::decode(&b, LIMIT), Ok(f.clone()));
            assert!(matches!(Up::decode(&b, LIMIT), Err(FrameError::Kind(_))));
            for n in 0..b.len() {
                let _ = Down::decode(&b[..n], LIMIT);
            }
        }
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mut r = registration();
        r.models = (0..101).map(|i| format!("m{i}")).collect();
        assert!(Up::decode(&Up::Register(r).encode(), LIMIT).is_err(), "too many models");
        let mut r = registration();
        r.provider = "gpu\npool".into();
        assert!(Up::decode(&Up::Register(r).encode(), LIMIT).is_err(), "control characters");
        let mut r = registration();
        r.max_concurrency = 0;
        assert!(Up::decode(&Up::Register(r).encode(), LIMIT).is_err());
        assert!(Up::decode(&Up::End(0).encode(), LIMIT).is_err(), "stream 0 is the connection's");
        let mut on_stream = Up::Heartbeat { in_flight: 1 }.encode().to_vec();
        on_stream[9] = 1;
        assert!(Up::decode(&on_stream, LIMIT).is_err(), "a heartbeat is the connection's");
        let mut v2 = Up::End(1).encode().to_vec();
        v2[0] = 2;
        assert_eq!(Up::decode(&v2, LIMIT), Err(FrameError::Version(2)));
        let extra = frame(
            kind::REGISTER,
            0,
            br#"{"provider":"p","models":["m"],"max_concurrency":1,"version":"v","labels":[],"admin":true}"#,
        );
        assert!(Up::decode(&extra, LIMIT).is_err(), "unknown fields");
        let head = frame(kind::HEAD, 1, br#"{"status":700,"content_type":"x"}"#);
        assert!(Up::decode(&head, LIMIT).is_err());
        // A request whose head length points past the frame.
        let mut req = Down::Request(1, RequestHead { path: "/x".into(), headers: vec![], stream: false }, Bytes::new())
            .encode()
            .to_vec();
        req[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Down::decode(&req, LIMIT), Err(FrameError::Truncated));
    }

    proptest! {
        /// The decoders take any bytes without panicking, and what they accept re-encodes to the
        /// same bytes.
        #[test]
        fn decoding_arbitrary_bytes_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256), kind in 0u8..32) {
            let mut b = vec![VERSION, kind];
            b.extend_from_slice(&bytes);
            if let Ok(f) = Up::decode(&b, LIMIT) {
                prop_assert_eq!(Up::decode(&f.encode(), LIMIT), Ok(f));
            }
            if let Ok(f) = Down::decode(&b, LIMIT) {
                prop_assert_eq!(Down::decode(&f.encode(), LIMIT), Ok(f));
            }
            let _ = Up::decode(&bytes, LIMIT);
            let _ = Down::decode(&bytes, LIMIT);
        }

        /// Chunks of any content and any stream round-trip.
        #[test]
        fn chunks_round_trip(id in 1u64.., body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let f = Up::Chunk(id, Bytes::from(body));
            prop_assert_eq!(Up::decode(&f.encode(), LIMIT), Ok(f));
        }
    }
}
