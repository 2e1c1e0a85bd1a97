//! The HTTP transport: hyper's client (HTTP/1.1, rustls with the ring provider and the webpki
//! roots), one per actix worker so every connection is driven by the thread that uses it.
//!
//! hyper reads every body framing HTTP/1.1 allows — `Content-Length`, chunked, and a body that
//! ends when the upstream closes the connection (RFC 9112 §6.3; what Python's `http.server` and
//! HTTP/1.0 servers send). awc, the client before it, drops close-delimited bodies
//! (actix/actix-web#2287): its decoder reads no body for an HTTP/1.1 response without a length.
//!
//! User endpoints go through the SSRF guard: IP-literal hosts are checked in the connector (it
//! sees host and port, for the allowlist), host names by the resolver at connect time.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::upstream::exchange::{BodyError, Outgoing, Response};
use crate::upstream::failure::{FailureKind, UpstreamFailure};
use crate::upstream::ssrf;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

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

/// One HTTP client and its connection pool.
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<Endpoints>, Full<Bytes>>,
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
        let endpoints = Endpoints {
            plain: tune(HttpConnector::new(), connect_timeout),
            guarded: guard
                .map(|allow| (tune(HttpConnector::new_with_resolver(GuardedResolver), connect_timeout), allow)),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(endpoints);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle)
            .build(https);
        Self { inner }
    }

    /// Posts `out` to `endpoint` + its path, waiting at most `first_byte` for the answer's head.
    pub async fn send(
        &self,
        endpoint: &str,
        out: Outgoing<'_>,
        first_byte: Duration,
    ) -> Result<Response, UpstreamFailure> {
        let url = format!("{endpoint}{}", out.path);
        let mut b = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, if out.stream { "text/event-stream" } else { "application/json" })
            .header("x-request-id", out.request_id)
            .header(http::header::USER_AGENT, concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        for (k, v) in out.trace_headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(key) = out.api_key {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = b
            .body(Full::new(out.body))
            .map_err(|_| UpstreamFailure::new(FailureKind::Connect, "the provider's endpoint is not a valid URL"))?;
        let resp = match tokio::time::timeout(first_byte, self.inner.request(req)).await {
            Err(_) => return Err(UpstreamFailure::new(FailureKind::Timeout, "the upstream did not answer in time")),
            Ok(Err(e)) if e.is_connect() => {
                // The transport's own words (never a key: its errors hold no headers).
                tracing::debug!(error = %e, "Upstream connection not made.");
                return Err(UpstreamFailure::new(
                    FailureKind::Connect,
                    "the gateway could not connect to the upstream",
                ));
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Upstream request failed.");
                return Err(UpstreamFailure::new(FailureKind::Protocol, "the upstream connection failed"));
            }
            Ok(Ok(r)) => r,
        };
        let header = |name: http::header::HeaderName| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let content_type = header(http::header::CONTENT_TYPE).map(str::to_ascii_lowercase);
        let retry_after = header(http::header::RETRY_AFTER).and_then(|v| v.trim().parse::<u64>().ok());
        let status = resp.status().as_u16();
        let body = resp.into_body().into_data_stream().map(|r| r.map_err(|_| BodyError));
        Ok(Response { status, content_type, retry_after, body: Box::pin(body) })
    }
}

/// The connector: user endpoints' IP literals checked here (host and port known), their names
/// resolved by [`GuardedResolver`]; allowlisted `host:port` pairs and configured providers
/// connect plainly.
#[derive(Clone)]
struct Endpoints {
    plain: HttpConnector,
    guarded: Option<(HttpConnector<GuardedResolver>, Arc<Vec<String>>)>,
}

impl tower_service::Service<http::Uri> for Endpoints {
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
