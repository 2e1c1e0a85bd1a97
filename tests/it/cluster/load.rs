//! A load generator: requests at a fixed rate (open loop, like wrk2: a slow answer does not slow
//! the sender), over one pooled client, recording status, latency, request id and, for streams,
//! every event with its arrival time.

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::Value;

/// One request as the client saw it.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// 0 when the request failed at the transport level.
    pub status: u16,
    pub latency: Duration,
    /// Time to the first body byte (streams).
    pub ttfb: Duration,
    /// When it was sent, from the start of the load.
    pub sent_at: Duration,
    pub request_id: Option<String>,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    pub error: Option<String>,
    pub body: Bytes,
    /// Stream events (`data:` payloads) with their arrival times since the request was sent.
    pub events: Vec<(String, Duration)>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status) && self.error.is_none()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A pooled client for many concurrent requests.
pub fn client() -> Rc<awc::Client> {
    Rc::new(
        awc::Client::builder().connector(awc::Connector::new().limit(4096)).timeout(Duration::from_secs(120)).finish(),
    )
}

/// Sends `make(i)` at `rate` per second for `duration`; waits for every answer.
pub async fn fixed_rate<F, Fut>(rate: f64, duration: Duration, make: F) -> Vec<Outcome>
where
    F: Fn(usize, Duration) -> Fut,
    Fut: Future<Output = Outcome> + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let sent_at = start.elapsed();
        let fut = make(i, sent_at);
        handles.push(actix_web::rt::spawn(async move {
            let mut o = fut.await;
            o.sent_at = sent_at;
            o
        }));
    }
    let mut out = Vec::with_capacity(total);
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| Outcome { error: Some(format!("task: {e}")), ..Outcome::default() }));
    }
    out
}

/// One JSON request (non-streaming or streaming) with a bearer token.
pub async fn request(client: Rc<awc::Client>, url: String, token: String, body: Value) -> Outcome {
    let started = Instant::now();
    let res = client
        .post(&url)
        .bearer_auth(&token)
        .insert_header(("content-type", "application/json"))
        .send_body(body.to_string())
        .await;
    let mut res = match res {
        Ok(r) => r,
        Err(e) => return Outcome { error: Some(e.to_string()), latency: started.elapsed(), ..Outcome::default() },
    };
    let status = res.status().as_u16();
    let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (request_id, retry_after) = (header("x-request-id"), header("retry-after"));
    let mut body = Vec::new();
    let mut events = Vec::new();
    let mut pending = Vec::new();
    let mut ttfb = None;
    let mut error = None;
    while let Some(chunk) = res.next().await {
        match chunk {
            Ok(c) => {
                ttfb.get_or_insert_with(|| started.elapsed());
                body.extend_from_slice(&c);
                pending.extend_from_slice(&c);
                // Complete SSE events, stamped as they arrive.
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let ev: Vec<u8> = pending.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&ev);
                    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                    if !data.is_empty() {
                        events.push((data.join("\n"), started.elapsed()));
                    }
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Outcome {
        status,
        latency: started.elapsed(),
        ttfb: ttfb.unwrap_or_default(),
        sent_at: Duration::ZERO,
        request_id,
        retry_after,
        error,
        body: Bytes::from(body),
        events,
    }
}
