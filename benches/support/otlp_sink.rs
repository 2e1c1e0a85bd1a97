//! A discarding OTLP/gRPC trace receiver for the benchmarks: HTTP/2 (hyper), every `Export` read
//! whole and answered with an empty `ExportTraceServiceResponse` and `grpc-status: 0`, nothing
//! decoded or kept. What a collector on another machine costs the gateway — the export thread
//! encodes and sends every batch — without a receiver in an interpreted language competing for the
//! benchmark's cores. Included by a bench with `#[path]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};

/// A running receiver: its port and what it has received so far.
pub struct Sink {
    pub port: u16,
    exports: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    /// `Export` calls and their request bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (self.exports.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// Starts the receiver on a loopback port, on a thread of its own (one current-thread runtime);
/// it lives as long as the process.
pub fn start() -> std::io::Result<Sink> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let (exports, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counters = (Arc::clone(&exports), Arc::clone(&bytes));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("otlp-sink".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((tcp, _)) = listener.accept().await {
                let counters = counters.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| export(req, counters.clone()));
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    })?;
    Ok(Sink { port, exports, bytes })
}

type Frames = futures_util::stream::Iter<std::array::IntoIter<Result<Frame<Bytes>, Infallible>, 2>>;

async fn export(
    req: hyper::Request<Incoming>,
    (exports, bytes): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> Result<hyper::Response<StreamBody<Frames>>, Infallible> {
    let len = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    exports.fetch_add(1, Ordering::Relaxed);
    bytes.fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    // One gRPC message: uncompressed (0), length 0 — the empty ExportTraceServiceResponse.
    let frames = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = hyper::Response::new(StreamBody::new(frames));
    response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/grpc"));
    Ok(response)
}
