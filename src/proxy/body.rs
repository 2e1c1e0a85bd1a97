//! Reading request bodies: size cap (413), content type and encoding (400), and a strict JSON
//! parse that also refuses duplicate keys at any depth.

use std::fmt;

use actix_web::HttpRequest;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{BytesMut, Payload};
use futures_util::StreamExt as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, Code};

/// How a body must arrive: within `total` overall, and — after `grace` — at no less than
/// `min_rate` bytes a second on average (a body trickled a byte at a time is cut off).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// The whole body's deadline.
    pub total: std::time::Duration,
    /// Bytes a second, on average from the start, once `grace` has passed; 0 turns it off.
    pub min_rate: u64,
    /// How long a slow start is forgiven.
    pub grace: std::time::Duration,
}

impl Pace {
    /// When the next bytes must have arrived, `received` bytes in, for a body started at `start`.
    fn next_by(&self, start: tokio::time::Instant, received: usize) -> tokio::time::Instant {
        let deadline = start + self.total;
        if self.min_rate == 0 {
            return deadline;
        }
        // By the time `received + 1` bytes are owed at `min_rate` (never before the grace ends).
        let owed = u64::try_from(received).unwrap_or(u64::MAX).saturating_add(1);
        let by = std::time::Duration::from_millis(owed.saturating_mul(1_000) / self.min_rate);
        (start + self.grace.max(by)).min(deadline)
    }
}

/// Wraps a request's body so that it fails with a `TimedOut` I/O error when it arrives slower
/// than `pace` allows. The server installs it on every request, so no reader of any route can
/// be held by a trickled body.
pub fn paced(payload: actix_web::dev::Payload, pace: Pace) -> actix_web::dev::Payload {
    let start = tokio::time::Instant::now();
    let stream = futures_util::stream::unfold(Some((payload, 0usize)), move |state| async move {
        let (mut payload, received) = state?;
        match tokio::time::timeout_at(pace.next_by(start, received), payload.next()).await {
            Ok(Some(Ok(chunk))) => {
                let n = received.saturating_add(chunk.len());
                Some((Ok(chunk), Some((payload, n))))
            }
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => Some((Err(PayloadError::Io(std::io::Error::from(std::io::ErrorKind::TimedOut))), None)),
        }
    });
    actix_web::dev::Payload::Stream { payload: Box::pin(stream) }
}

/// Whether a payload error is [`paced`]'s timeout.
pub fn is_too_slow(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// The answer to a body that arrived too slowly.
pub fn too_slow() -> ApiError {
    ApiError::new(
        Code::RequestTimeout,
        "The request body arrived too slowly; send it at once, and within the time limit.",
    )
}

/// Reads the whole body, refusing more than `limit` bytes (and, through [`paced`], a body that
/// arrives too slowly: 408).
pub async fn read(req: &HttpRequest, mut payload: Payload, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::new(Code::RequestTooLarge, format!("The request body is larger than {limit} bytes."));
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::new(Code::InvalidRequest, "The request needs `Content-Type: application/json`."));
    }
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::new(Code::InvalidRequest, "Compressed request bodies are not accepted."));
    }
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        match len.trim().parse::<usize>() {
            Ok(n) if n > limit => return Err(too_large()),
            Ok(_) => {}
            Err(_) => {
                return Err(ApiError::new(Code::InvalidRequest, "The Content-Length header is invalid."));
            }
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            e if is_too_slow(&e) => too_slow(),
            actix_web::error::PayloadError::Overflow => too_large(),
            _ => ApiError::new(Code::InvalidRequest, "The request body could not be read completely."),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON object, refusing anything else, invalid UTF-8, lone surrogates, NaN,
/// nesting deeper than 128, trailing data and duplicate keys.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let bad = |detail: String| {
        ApiError::new(
            Code::InvalidRequest,
            format!("We could not parse the JSON body of your request ({detail}). Send a valid JSON object."),
        )
    };
    if body.is_empty() {
        return Err(bad("the body is empty".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Strict::deserialize(&mut de).map_err(|e| bad(e.to_string()))?;
    de.end().map_err(|e| bad(e.to_string()))?;
    match v.0 {
        Value::Object(m) => Ok(m),
        _ => Err(bad("the top level must be an object".into())),
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(key.clone(), v).is_some() {
                return Err(de::Error::custom(format!("duplicate key `{}`", key.chars().take(64).collect::<String>())));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_asks_for_the_minimum_rate_after_the_grace() {
        use std::time::Duration;
        let pace = Pace { total: Duration::from_secs(60), min_rate: 1_000, grace: Duration::from_secs(5) };
        let t0 = tokio::time::Instant::now();
        assert_eq!(pace.next_by(t0, 0), t0 + Duration::from_secs(5));
        assert_eq!(pace.next_by(t0, 5_999), t0 + Duration::from_secs(6));
        assert_eq!(pace.next_by(t0, 10_000_000), t0 + Duration::from_secs(60));
        let off = Pace { min_rate: 0, ..pace };
        assert_eq!(off.next_by(t0, 1), t0 + Duration::from_secs(60));
    }

    #[test]
    fn strict_parse() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,2]}}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":{"b":1,"b":2}}"#,
            br#"[1]"#,
            br#"{"a":NaN}"#,
            br#"{"a":1} x"#,
            b"\xef\xbb\xbf{}",
            br#"{"a":"\ud800"}"#,
            b"{\"a\":\"\xff\"}",
            br#"{'a':1}"#,
            br#"{"a":1 /* c */}"#,
            b"",
        ] {
            assert!(parse_object(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(parse_object(deep.as_bytes()).is_err());
    }
}
