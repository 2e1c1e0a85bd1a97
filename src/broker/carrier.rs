//! A worker's connection as an upstream transport: the request goes to the worker as a
//! `Request` frame, its answer comes back as a `Response` whose body is the worker's chunks — so
//! the data plane treats a broker provider like any other, failover and usage included.

use std::time::Duration;

use bytes::Bytes;

use crate::broker::frame::{FailKind, RequestHead};
use crate::broker::session::{Event, OpenError, Session, StreamHandle};
use crate::upstream::{BodyError, BodyStream, Carrier, FailureKind, Outgoing, Response, UpstreamFailure};

/// The headers a worker's upstream receives: the protocol's, the client's of the same dialect,
/// the trace context and the request id. Never the provider's key: a worker holds its own.
fn headers(out: &Outgoing<'_>) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
    h.extend(out.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    h.extend(out.forwarded.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    h.extend(out.trace_headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    h.push(("x-request-id".into(), out.request_id.to_owned()));
    h
}

fn failure(kind: FailureKind, message: &str) -> UpstreamFailure {
    UpstreamFailure::new(kind, message)
}

#[async_trait::async_trait]
impl Carrier for Session {
    async fn carry(&self, out: Outgoing<'_>, first_byte: Duration) -> Result<Response, UpstreamFailure> {
        let head = RequestHead { path: out.path.to_string(), headers: headers(&out), stream: out.stream };
        let mut handle = match self.open(head, out.body.clone()).await {
            Ok(h) => h,
            Err(OpenError::Busy) => {
                return Err(failure(FailureKind::Status(503), "the worker is at its concurrency limit"));
            }
            Err(OpenError::Gone) => return Err(failure(FailureKind::Connect, "the worker went away")),
        };
        // Dropping the handle on a timeout cancels the request on the worker.
        let first = tokio::time::timeout(first_byte, handle.next()).await;
        match first {
            Err(_) => Err(failure(FailureKind::Timeout, "the worker did not answer in time")),
            Ok(Event::Head(h)) => Ok(Response {
                status: h.status,
                content_type: Some(h.content_type.to_ascii_lowercase()),
                retry_after: None,
                body: body(handle),
            }),
            Ok(Event::Fail(f)) => {
                let kind = match f.kind {
                    FailKind::Connect => FailureKind::Connect,
                    FailKind::Timeout => FailureKind::Timeout,
                    FailKind::Protocol => FailureKind::Protocol,
                };
                Err(failure(kind, "the worker's upstream failed"))
            }
            Ok(Event::Lost) => Err(failure(FailureKind::Connect, "the worker went away")),
            Ok(Event::Chunk(_) | Event::End) => {
                Err(failure(FailureKind::Protocol, "the worker answered without a head"))
            }
        }
    }
}

/// The answer's body: the worker's chunks until its end; a failure or a lost worker breaks it.
fn body(handle: StreamHandle) -> BodyStream {
    Box::pin(futures_util::stream::unfold(Some(handle), |state| async move {
        let mut h = state?;
        match h.next().await {
            Event::Chunk(b) => Some((Ok::<Bytes, BodyError>(b), Some(h))),
            Event::End => None,
            Event::Head(_) | Event::Fail(_) | Event::Lost => Some((Err(BodyError), None)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::frame::{Down, Failure, Head, Up};
    use futures_util::StreamExt as _;
    use tokio::sync::mpsc;

    fn outgoing(body: &'static [u8]) -> Outgoing<'static> {
        Outgoing {
            path: "/chat/completions".into(),
            body: Bytes::from_static(body),
            stream: true,
            request_id: "req-1",
            trace_headers: &[],
            auth: crate::upstream::Auth::Bearer("the-provider-key"),
            headers: &[],
            forwarded: &[],
        }
    }

    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Down>>>;

    /// A worker that answers every request with `answer(id)`; what it received is in `Seen`.
    fn worker(session: Session, mut rx: mpsc::Receiver<Down>, answer: fn(u64) -> Vec<Up>) -> Seen {
        let seen = Seen::default();
        let log = std::sync::Arc::clone(&seen);
        drop(tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if let Down::Request(id, ..) = &frame {
                    for up in answer(*id) {
                        if session.on_frame(up).is_err() {
                            break;
                        }
                    }
                }
                log.lock().unwrap().push(frame);
            }
        }));
        seen
    }

    #[tokio::test]
    async fn a_worker_answer_is_an_upstream_response() {
        let (tx, rx) = mpsc::channel(64);
        let s = Session::new(2, tx);
        let w = worker(s.clone(), rx, |id| {
            vec![
                Up::Head(id, Head { status: 200, content_type: "Text/Event-Stream".into() }),
                Up::Chunk(id, Bytes::from_static(b"data: 1\n\n")),
                Up::Chunk(id, Bytes::from_static(b"data: [DONE]\n\n")),
                Up::End(id),
            ]
        });
        let resp = s.carry(outgoing(b"{}"), Duration::from_secs(1)).await.expect("an answer");
        assert!(resp.is_event_stream() && resp.status == 200);
        let body: Vec<Bytes> = resp.body.map(|c| c.expect("whole")).collect().await;
        assert_eq!(body.concat(), b"data: 1\n\ndata: [DONE]\n\n");
        let seen = w.lock().unwrap().clone();
        let Down::Request(_, head, _) = &seen[0] else { panic!("{seen:?}") };
        assert!(head.headers.iter().any(|(k, v)| k == "x-request-id" && v == "req-1"));
        assert!(!head.headers.iter().any(|(_, v)| v.contains("the-provider-key")), "the key stays on the node");
    }

    #[tokio::test]
    async fn failures_map_to_upstream_failures() {
        let (tx, rx) = mpsc::channel(64);
        let s = Session::new(1, tx);
        let _w = worker(s.clone(), rx, |id| {
            vec![Up::Fail(id, Failure { kind: FailKind::Connect, message: "refused".into() })]
        });
        let e = s.carry(outgoing(b"{}"), Duration::from_secs(1)).await.err().expect("a failure");
        assert_eq!(e.kind, FailureKind::Connect);

        // A worker that never answers: a timeout, and the request is cancelled on it.
        let (tx, mut rx) = mpsc::channel(64);
        let s = Session::new(1, tx);
        let e = s.carry(outgoing(b"{}"), Duration::from_millis(50)).await.err().expect("a timeout");
        assert_eq!(e.kind, FailureKind::Timeout);
        assert!(matches!(rx.recv().await, Some(Down::Request(..))));
        assert!(matches!(rx.recv().await, Some(Down::Cancel(_))), "cancelled on the worker");
        assert_eq!(s.in_flight(), 0);

        // A worker lost mid-body: the body breaks.
        let (tx, rx) = mpsc::channel(64);
        let s = Session::new(1, tx);
        let _w = worker(s.clone(), rx, |id| {
            vec![
                Up::Head(id, Head { status: 200, content_type: "text/event-stream".into() }),
                Up::Chunk(id, Bytes::from_static(b"data: 1\n\n")),
            ]
        });
        let resp = s.carry(outgoing(b"{}"), Duration::from_secs(1)).await.expect("a head");
        let mut body = resp.body;
        assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"data: 1\n\n"))));
        s.close();
        assert_eq!(body.next().await, Some(Err(BodyError)));
        assert_eq!(body.next().await, None);
        let e = s.carry(outgoing(b"{}"), Duration::from_secs(1)).await.err().expect("gone");
        assert_eq!(e.kind, FailureKind::Connect);
    }
}
