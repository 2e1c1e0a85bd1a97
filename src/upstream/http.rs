//! The HTTP transport: hyper's HTTP/1.1 client connections (rustls with the ring provider and the
//! webpki roots), pooled per actix worker and driven by the request that uses them — no task of
//! their own, so a response's body chunks reach the relay without a hop between tasks.
//!
//! hyper reads every body framing HTTP/1.1 allows — `Content-Length`, chunked, and a body that
//! ends when the upstream closes the connection (RFC 9112 §6.3; what Python's `http.server` and
//! HTTP/1.0 servers send). awc, the client before it, drops close-delimited bodies
//! (actix/actix-web#2287): its decoder reads no body for an HTTP/1.1 response without a length.
//!
//! User endpoints go through the SSRF guard: IP-literal hosts are checked in the connector (it
//! sees host and port, for the allowlist), host names by the resolver at connect time.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tower_service::Service as _;

use crate::upstream::endpoint::Endpoint;
use crate::upstream::exchange::{Auth, BodyError, Outgoing, Response};
use crate::upstream::failure::{FailureKind, UpstreamFailure};
use crate::upstream::ssrf;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// The HTTP clients of one worker.
pub struct Clients {
    /// For configured providers.
    pub open: HttpClient,
    /// For user-defined endpoints: behind the SSRF guard.
    pub guarded: HttpClient,
}

/// The TLS settings of every upstream connection: TLS 1.3 and 1.2 with the ring provider, the
/// webpki roots, no client certificate. Built once per process.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(hyper_rustls::ConfigBuilderExt::with_webpki_roots(tls).with_no_client_auth())
}

impl Clients {
    /// Builds a worker's clients (inside or outside a runtime: nothing runs until a request).
    pub fn new(
        tls: &rustls::ClientConfig,
        connect_timeout: Duration,
        pool_idle: Duration,
        allow: Arc<Vec<String>>,
    ) -> Self {
        Self {
            open: HttpClient::new(tls, connect_timeout, pool_idle, None),
            guarded: HttpClient::new(tls, connect_timeout, pool_idle, Some(allow)),
        }
    }
}

/// Why a [`FetchClient`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not sent, or no answer in time.
    #[error("{0}")]
    Transport(String),
    /// The answer's body is larger than allowed.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// A client for the gateway's own calls to services its operator configured (an OIDC
/// provider's discovery, keys, token and userinfo endpoints): any method, the answer read whole
/// up to a size, within a time limit. Not for upstream traffic.
#[derive(Clone)]
pub struct FetchClient {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl FetchClient {
    /// A client with TLS settings `tls`, answering within `timeout` with at most `max_body` bytes.
    pub fn new(tls: &rustls::ClientConfig, timeout: Duration, max_body: usize) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self { inner, timeout, max_body }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn fetch(&self, req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, FetchError> {
        use http_body_util::BodyExt as _;
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let max = self.max_body;
        let call = async {
            let res = self.inner.request(req).await.map_err(|e| FetchError::Transport(e.to_string()))?;
            let (parts, body) = res.into_parts();
            let body = http_body_util::Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(max)
                    } else {
                        FetchError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| FetchError::Transport("no answer in time".into()))?
    }
}

/// One HTTP/1.1 connection: the handle requests go through, and the connection itself, which
/// whoever waits on it drives.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<Io, Full<Bytes>>,
    /// What the connection and its answers are polled with.
    polled: Polled,
}

/// A connection's [`SelfWakes`] and the waker made of it (once per connection: a `Waker` from
/// the `Arc` at each poll would cost two atomic operations).
#[derive(Clone)]
struct Polled {
    wakes: Arc<SelfWakes>,
    waker: std::task::Waker,
}

/// What a connection and the answer waiting on it are woken through. The connection hands
/// what it reads to the answer through hyper's channels, which wake their reader: in one task
/// that is the task waking itself, and each such wake would poll the whole request again (and
/// actix's dispatcher around it) for nothing. A wake that comes while it is being polled is
/// absorbed: it is polled again at once. Any other wake (the socket is readable, a timer)
/// reaches the task that polled last.
struct SelfWakes {
    state: AtomicU8,
    outer: futures_util::task::AtomicWaker,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

impl std::task::Wake for SelfWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Err(IDLE) = self.state.compare_exchange(POLLING, WOKEN, AcqRel, Acquire) {
            self.outer.wake();
        }
    }
}

impl Polled {
    fn new() -> Self {
        let wakes = Arc::new(SelfWakes { state: AtomicU8::new(IDLE), outer: futures_util::task::AtomicWaker::new() });
        Self { waker: std::task::Waker::from(Arc::clone(&wakes)), wakes }
    }

    /// Polls `f` with the connection's waker until it is ready or nothing it did woke it.
    fn poll<T>(&self, cx: &mut Context<'_>, mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        let this = &self.wakes;
        this.outer.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        // A bound, so that a connection busy with a long answer still lets its worker's other
        // tasks run: past it, the task is woken and yields.
        for _ in 0..16 {
            this.state.store(POLLING, Release);
            if let Poll::Ready(v) = f(&mut inner) {
                this.state.store(IDLE, Release);
                return Poll::Ready(v);
            }
            if this.state.compare_exchange(POLLING, IDLE, AcqRel, Acquire).is_ok() {
                return Poll::Pending;
            }
        }
        this.state.store(IDLE, Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// No task waits on the connection any more (it goes back to the pool).
    fn park(&self) {
        self.wakes.outer.register(std::task::Waker::noop());
    }
}

impl Conn {
    /// Drives the connection once without waiting; `false` when it has ended (the upstream
    /// closed it, or it failed) or cannot take a request.
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            return false;
        }
        !self.sender.is_closed() && self.sender.is_ready()
    }
}

/// Idle connections by `scheme://authority`, newest last.
type Idle = Arc<Mutex<HashMap<Arc<str>, Vec<(Box<Conn>, Instant)>>>>;

/// One HTTP client and its pool of idle connections.
pub struct HttpClient {
    connector: HttpsConnector<Connectors>,
    idle: Idle,
    pool_idle: Duration,
}

impl HttpClient {
    /// A client; `guard` puts it behind the SSRF guard with that `host:port` allowlist.
    pub fn new(
        tls: &rustls::ClientConfig,
        connect_timeout: Duration,
        pool_idle: Duration,
        guard: Option<Arc<Vec<String>>>,
    ) -> Self {
        fn tune<R>(mut c: HttpConnector<R>, connect_timeout: Duration) -> HttpConnector<R> {
            c.enforce_http(false);
            c.set_nodelay(true);
            c.set_connect_timeout(Some(connect_timeout));
            c
        }
        let connectors = Connectors {
            plain: tune(HttpConnector::new(), connect_timeout),
            guarded: guard
                .map(|allow| (tune(HttpConnector::new_with_resolver(GuardedResolver), connect_timeout), allow)),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connectors);
        Self { connector, idle: Arc::default(), pool_idle }
    }

    /// An idle connection to `key` that is still alive, if any.
    fn checkout(&self, key: &str) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(key)?;
        while let Some((mut c, since)) = conns.pop() {
            if since.elapsed() < self.pool_idle && c.alive() {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self, uri: http::Uri) -> Result<Box<Conn>, UpstreamFailure> {
        let refused = |e: &dyn std::fmt::Display| {
            // The transport's own words (never a key: its errors hold no headers).
            tracing::debug!(error = %e, "Upstream connection not made.");
            UpstreamFailure::new(FailureKind::Connect, "the gateway could not connect to the upstream")
        };
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| refused(&e))?;
        let io = connector.call(uri).await.map_err(|e| refused(&e))?;
        let (sender, conn) = http1::handshake(io).await.map_err(|e| refused(&e))?;
        Ok(Box::new(Conn { sender, conn, polled: Polled::new() }))
    }

    /// Posts `out` to `endpoint` + its path, waiting at most `first_byte` for the answer's head.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        out: Outgoing<'_>,
        first_byte: Duration,
    ) -> Result<Response, UpstreamFailure> {
        // Boxed: a connection's state (TLS, buffers, hyper's) is kilobytes, and a future holding
        // it inline makes every future around it as large, copied whole at each move.
        match tokio::time::timeout(first_byte, Box::pin(self.exchange(endpoint, out))).await {
            Err(_) => Err(UpstreamFailure::new(FailureKind::Timeout, "the upstream did not answer in time")),
            Ok(r) => r,
        }
    }

    async fn exchange(&self, endpoint: &Endpoint, out: Outgoing<'_>) -> Result<Response, UpstreamFailure> {
        let bad_url = || UpstreamFailure::new(FailureKind::Connect, "the provider's endpoint is not a valid URL");
        let Some(ep) = endpoint.parts() else { return Err(bad_url()) };
        let path = Bytes::from(format!("{}{}", ep.prefix, &*out.path));
        let host = &ep.host;
        let build = || -> Result<http::Request<Full<Bytes>>, UpstreamFailure> {
            use http::header::{self, HeaderName, HeaderValue};
            let value = |v: &str| HeaderValue::from_str(v).map_err(|_| bad_url());
            let mut req = http::Request::new(Full::new(out.body.clone()));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = http::Uri::from_maybe_shared(path.clone()).map_err(|_| bad_url())?;
            let h = req.headers_mut();
            h.insert(header::HOST, host.clone());
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(
                header::ACCEPT,
                HeaderValue::from_static(if out.stream { "text/event-stream" } else { "application/json" }),
            );
            h.insert(HeaderName::from_static("x-request-id"), value(out.request_id)?);
            h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))));
            for (k, v) in out.trace_headers {
                h.insert(HeaderName::from_static(k), value(v)?);
            }
            for (k, v) in out.headers {
                h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            for (k, v) in out.forwarded {
                h.insert(HeaderName::from_static(k), value(v)?);
            }
            let key = match out.auth {
                Auth::None => None,
                Auth::Bearer(key) => Some((header::AUTHORIZATION, value(&format!("Bearer {key}"))?)),
                Auth::Header(name, key) => Some((HeaderName::from_static(name), value(key)?)),
            };
            if let Some((name, mut v)) = key {
                v.set_sensitive(true);
                h.insert(name, v);
            }
            Ok(req)
        };
        // A pooled connection the upstream closed just as the request went out refuses it before
        // writing it (hyper: "canceled"); that request is sent again on a new connection. Nothing
        // that reached the upstream is ever sent twice.
        let mut pooled = self.checkout(&ep.key);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => Box::pin(self.connect(ep.origin.clone())).await?,
            };
            let (resp, ended) = send_on(&mut conn, build()?).await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) if reused && e.is_canceled() => {
                    tracing::debug!(error = %e, "A pooled upstream connection had closed; sending on a new one.");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Upstream request failed.");
                    return Err(UpstreamFailure::new(FailureKind::Protocol, "the upstream connection failed"));
                }
            };
            let header = |name: http::header::HeaderName| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let content_type = header(http::header::CONTENT_TYPE).map(str::to_ascii_lowercase);
            let retry_after = header(http::header::RETRY_AFTER).and_then(|v| v.trim().parse::<u64>().ok());
            let status = resp.status().as_u16();
            let idle = Arc::clone(&self.idle);
            let polled = conn.polled.clone();
            let key = Arc::clone(&ep.key);
            let reading = Reading { body: resp.into_body(), conn: (!ended).then_some(conn), idle, key };
            let body = Driven { reading, polled };
            return Ok(Response { status, content_type, retry_after, body: Box::pin(body) });
        }
    }
}

/// Sends `req` on `conn`, driving the connection until the answer's head; says whether the
/// connection ended meanwhile.
async fn send_on(conn: &mut Conn, req: http::Request<Full<Bytes>>) -> (hyper::Result<http::Response<Incoming>>, bool) {
    let Conn { sender, conn, polled } = conn;
    let mut sent = std::pin::pin!(sender.send_request(req));
    let mut ended = false;
    let resp = std::future::poll_fn(|cx| {
        polled.poll(cx, |cx| {
            if !ended && Pin::new(&mut *conn).poll(cx).is_ready() {
                ended = true;
            }
            sent.as_mut().poll(cx)
        })
    })
    .await;
    (resp, ended)
}

/// An answer's body with the connection it arrives on: polling the body drives the connection;
/// at the body's end a connection that can take another request goes back to the pool.
struct Driven {
    reading: Reading,
    polled: Polled,
}

/// The body and its connection.
struct Reading {
    body: Incoming,
    conn: Option<Box<Conn>>,
    idle: Idle,
    key: Arc<str>,
}

impl Reading {
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = &mut self.conn
            && Pin::new(&mut c.conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    fn release(&mut self) {
        let Some(mut c) = self.conn.take() else { return };
        c.polled.park();
        if c.alive()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.entry(Arc::clone(&self.key)).or_default().push((c, Instant::now()));
        }
    }

    /// Drives the connection and reads the body's next piece.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            self.drive(cx);
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.release();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(_))) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(BodyError)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Trailers: nothing for the relay; read on.
                }
            }
        }
    }
}

impl Stream for Driven {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Driven { reading, polled } = &mut *self;
        polled.poll(cx, |cx| reading.step(cx))
    }
}

/// The connector: user endpoints' IP literals checked here (host and port known), their names
/// resolved by [`GuardedResolver`]; allowlisted `host:port` pairs and configured providers
/// connect plainly.
#[derive(Clone)]
struct Connectors {
    plain: HttpConnector,
    guarded: Option<(HttpConnector<GuardedResolver>, Arc<Vec<String>>)>,
}

impl tower_service::Service<http::Uri> for Connectors {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let Some((guarded, allow)) = &mut self.guarded else {
            let f = self.plain.call(uri);
            return Box::pin(async move { Ok(f.await?) });
        };
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        if ssrf::allowed(allow, &host, port) {
            let f = self.plain.call(uri);
            return Box::pin(async move { Ok(f.await?) });
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>()
            && ssrf::is_forbidden(ip)
        {
            return Box::pin(async move { Err("the endpoint's address is not allowed".into()) });
        }
        let f = guarded.call(uri);
        Box::pin(async move { Ok(f.await?) })
    }
}

/// The SSRF guard as a resolver: a user endpoint's host must resolve only to addresses user
/// endpoints may reach (the connector sets the port).
#[derive(Clone, Copy)]
struct GuardedResolver;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = ssrf::resolve_checked(&host, 0).await.map_err(BoxError::from)?;
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the wakes of the task that polls.
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_the_poll_is_absorbed_and_a_later_one_reaches_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let outer = std::task::Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&outer);
        let polled = Polled::new();
        // Woken by what it does itself twice, then ready: polled again at once, the task never woken.
        let mut left = 2;
        let r = polled.poll(&mut cx, |cx| {
            if left == 0 {
                return Poll::Ready(7);
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!((r, count.0.load(Ordering::SeqCst)), (Poll::Ready(7), 0));
        // Pending with nothing woken: the waker it kept wakes the task later (a readable socket).
        let mut kept = None;
        let r: Poll<()> = polled.poll(&mut cx, |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        assert_eq!((r, count.0.load(Ordering::SeqCst)), (Poll::Pending, 0));
        kept.expect("kept").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // A future that never stops waking itself yields after a bound: the task is woken to come back.
        let r: Poll<()> = polled.poll(&mut cx, |cx| {
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!((r, count.0.load(Ordering::SeqCst)), (Poll::Pending, 2));
        // Parked (back in the pool): a wake goes nowhere.
        polled.park();
        polled.waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
