//! The node's side of one worker connection, apart from any socket: the streams in flight on
//! it, each with its credit window, and the frames to send the worker. The socket task feeds it
//! the worker's frames ([`Session::on_frame`]) and writes the frames it queues; each request reads
//! its answer through a [`StreamHandle`], which grants the worker credit as it takes chunks and
//! cancels the request when dropped before the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::frame::{Down, Failure, FrameError, Head, RequestHead, Up};

/// Chunks a worker may send on a stream before the node grants more.
pub const WINDOW: u32 = 16;

/// What a request hears from its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer's status and type.
    Head(Head),
    /// A piece of the body.
    Chunk(Bytes),
    /// The answer is complete.
    End,
    /// The worker could not answer.
    Fail(Failure),
    /// The worker went away (its socket closed, or it missed its heartbeats).
    Lost,
}

/// Why a request could not be opened on a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It has its maximum concurrency in flight.
    #[error("the worker is at its concurrency limit")]
    Busy,
    /// Its connection is gone.
    #[error("the worker is gone")]
    Gone,
}

struct Stream {
    tx: mpsc::Sender<Event>,
    /// Chunks the worker may still send.
    credit: u32,
}

struct Inner {
    streams: HashMap<u64, Stream>,
    next_id: u64,
    closed: bool,
}

/// One worker connection's streams.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Mutex<Inner>>,
    out: mpsc::Sender<Down>,
    max_streams: usize,
}

/// The answer of one request, as it arrives.
pub struct StreamHandle {
    id: u64,
    rx: mpsc::Receiver<Event>,
    session: Session,
    taken: u32,
    done: bool,
}

impl Session {
    /// A session for a worker taking `max_streams` requests at once; its frames go to `out` (the
    /// socket writer's queue).
    pub fn new(max_streams: u32, out: mpsc::Sender<Down>) -> Self {
        let inner = Inner { streams: HashMap::new(), next_id: 1, closed: false };
        Self { inner: Arc::new(Mutex::new(inner)), out, max_streams: usize::try_from(max_streams).unwrap_or(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a request to the worker; its answer arrives on the handle.
    pub async fn open(&self, head: RequestHead, body: Bytes) -> Result<StreamHandle, OpenError> {
        let (id, rx) = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(OpenError::Gone);
            }
            if inner.streams.len() >= self.max_streams {
                return Err(OpenError::Busy);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            // A window of chunks, plus the head and the end (or a failure).
            let (tx, rx) = mpsc::channel(usize::try_from(WINDOW).unwrap_or(16) + 2);
            inner.streams.insert(id, Stream { tx, credit: WINDOW });
            (id, rx)
        };
        let handle = StreamHandle { id, rx, session: self.clone(), taken: 0, done: false };
        if self.out.send(Down::Request(id, head, body)).await.is_err() {
            return Err(OpenError::Gone);
        }
        Ok(handle)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().streams.len()
    }

    /// A frame from the worker. `Err`: it broke the protocol (a chunk beyond its credit, a
    /// registration mid-connection); the connection must end. Frames of streams that ended
    /// (cancelled while the worker was still sending) are dropped.
    pub fn on_frame(&self, frame: Up) -> Result<(), FrameError> {
        let (id, event) = match frame {
            Up::Register(_) => return Err(FrameError::Invalid("registered twice")),
            Up::Heartbeat { .. } => return Ok(()),
            Up::Head(id, h) => (id, Event::Head(h)),
            Up::Chunk(id, b) => (id, Event::Chunk(b)),
            Up::End(id) => (id, Event::End),
            Up::Fail(id, f) => (id, Event::Fail(f)),
        };
        let mut inner = self.lock();
        let last = matches!(event, Event::End | Event::Fail(_));
        let Some(stream) = inner.streams.get_mut(&id) else { return Ok(()) };
        if matches!(event, Event::Chunk(_)) {
            if stream.credit == 0 {
                return Err(FrameError::Invalid("a chunk beyond the stream's credit"));
            }
            stream.credit -= 1;
        }
        // Within the window the channel has room; a full one means the worker ignored credits.
        let sent = stream.tx.try_send(event);
        if last {
            inner.streams.remove(&id);
        }
        match sent {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(FrameError::Invalid("more frames than the window")),
        }
    }

    /// The connection ended: every stream in flight hears [`Event::Lost`]; nothing opens again.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for (_, s) in inner.streams.drain() {
            // A full channel holds frames the request has not read; it sees the end by the
            // channel closing.
            let _ = s.tx.try_send(Event::Lost);
        }
    }

    fn grant(&self, id: u64, n: u32) -> bool {
        let mut inner = self.lock();
        match inner.streams.get_mut(&id) {
            Some(s) => {
                s.credit = s.credit.saturating_add(n);
                true
            }
            None => false,
        }
    }

    fn forget(&self, id: u64) -> bool {
        self.lock().streams.remove(&id).is_some()
    }
}

impl StreamHandle {
    /// The next event; `Lost` once the worker is gone. Taking chunks grants the worker credit
    /// for more, half a window at a time.
    pub async fn next(&mut self) -> Event {
        if self.done {
            return Event::Lost;
        }
        let event = self.rx.recv().await.unwrap_or(Event::Lost);
        match &event {
            Event::Chunk(_) => {
                self.taken += 1;
                if self.taken >= WINDOW / 2 {
                    let n = std::mem::take(&mut self.taken);
                    if self.session.grant(self.id, n) {
                        // The socket writer's queue: if it is gone, so is the worker.
                        let _ = self.session.out.send(Down::Credit(self.id, n)).await;
                    }
                }
            }
            Event::End | Event::Fail(_) | Event::Lost => self.done = true,
            Event::Head(_) => {}
        }
        event
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        // Dropped before its end (the client left): the worker stops the request.
        if !self.done && self.session.forget(self.id) {
            let (out, id) = (self.session.out.clone(), self.id);
            if let Err(mpsc::error::TrySendError::Full(_)) = out.try_send(Down::Cancel(id)) {
                drop(tokio::spawn(async move { out.send(Down::Cancel(id)).await }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::frame::FailKind;

    fn head() -> RequestHead {
        RequestHead { path: "/chat/completions".into(), headers: vec![], stream: true }
    }

    fn ok_head() -> Head {
        Head { status: 200, content_type: "text/event-stream".into() }
    }

    #[tokio::test]
    async fn a_stream_flows_within_its_window_and_grants_credit_as_it_is_read() {
        let (out, mut sent) = mpsc::channel(64);
        let s = Session::new(2, out);
        let mut h = s.open(head(), Bytes::from_static(b"{}")).await.unwrap();
        let Some(Down::Request(id, _, body)) = sent.recv().await else { panic!("a request frame") };
        assert_eq!(&body[..], b"{}");
        s.on_frame(Up::Head(id, ok_head())).unwrap();
        for i in 0..WINDOW {
            s.on_frame(Up::Chunk(id, Bytes::from(format!("{i}")))).unwrap();
        }
        assert!(s.on_frame(Up::Chunk(id, Bytes::from_static(b"x"))).is_err(), "a chunk beyond the credit");
        assert_eq!(h.next().await, Event::Head(ok_head()));
        for i in 0..WINDOW / 2 {
            assert_eq!(h.next().await, Event::Chunk(Bytes::from(format!("{i}"))));
        }
        assert_eq!(sent.recv().await, Some(Down::Credit(id, WINDOW / 2)), "half a window read: credit");
        for _ in 0..WINDOW / 2 {
            s.on_frame(Up::Chunk(id, Bytes::from_static(b"more"))).unwrap();
        }
        s.on_frame(Up::End(id)).unwrap();
        let mut rest = 0;
        loop {
            match h.next().await {
                Event::Chunk(_) => rest += 1,
                Event::End => break,
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(rest, WINDOW);
        assert_eq!(s.in_flight(), 0);
        drop(h);
        assert!(sent.try_recv().is_err(), "neither credit nor cancel after the end");
    }

    #[tokio::test]
    async fn concurrency_cancel_failure_and_a_lost_worker() {
        let (out, mut sent) = mpsc::channel(64);
        let s = Session::new(2, out);
        let a = s.open(head(), Bytes::new()).await.unwrap();
        let mut b = s.open(head(), Bytes::new()).await.unwrap();
        assert_eq!(s.open(head(), Bytes::new()).await.err(), Some(OpenError::Busy));
        let (Some(Down::Request(ia, ..)), Some(Down::Request(ib, ..))) = (sent.recv().await, sent.recv().await) else {
            panic!("two requests")
        };
        // The client of `a` leaves: the worker is told, its late frames are dropped.
        drop(a);
        assert_eq!(sent.recv().await, Some(Down::Cancel(ia)));
        s.on_frame(Up::Chunk(ia, Bytes::from_static(b"late"))).unwrap();
        let mut c = s.open(head(), Bytes::new()).await.unwrap();
        let Some(Down::Request(ic, ..)) = sent.recv().await else { panic!() };
        assert!(ic > ib, "stream ids are never reused");
        let fail = Failure { kind: FailKind::Connect, message: "refused".into() };
        s.on_frame(Up::Fail(ib, fail.clone())).unwrap();
        assert_eq!(b.next().await, Event::Fail(fail));
        assert!(
            s.on_frame(Up::Register(crate::broker::frame::Registration {
                provider: "p".into(),
                models: vec!["m".into()],
                max_concurrency: 1,
                version: "v".into(),
                labels: vec![],
            }))
            .is_err()
        );
        s.close();
        assert_eq!(c.next().await, Event::Lost);
        assert_eq!(s.open(head(), Bytes::new()).await.err(), Some(OpenError::Gone));
    }
}
