//! The awc transport: one `Client` per actix worker, redirects off, our own timeouts.

use std::time::Duration;

use awc::error::SendRequestError;
use awc::{Client, ClientResponse, Connector};
use bytes::Bytes;

use crate::upstream::{FailureKind, UpstreamFailure};

/// A streaming upstream response (awc's decoder over the connection).
pub type Response = ClientResponse;

/// Builds the client of one worker. awc's own timeout is off: every wait has its own deadline.
/// Pooled connections idle longer than `pool_idle` are closed.
pub fn build_client(connect_timeout: Duration, pool_idle: Duration) -> Client {
    let connector = Connector::new().timeout(connect_timeout).conn_keep_alive(pool_idle).limit(0);
    Client::builder().connector(connector).disable_redirects().disable_timeout().finish()
}

/// The SSRF guard as awc's resolver: a user endpoint's host must resolve only to addresses user
/// endpoints may reach (unless its `host:port` is allowlisted). IP-literal hosts never reach a
/// resolver; the caller checks those with [`crate::upstream::ssrf::literal_allowed`].
struct GuardedResolve {
    allow: std::sync::Arc<Vec<String>>,
}

impl actix_tls::connect::Resolve for GuardedResolve {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::LocalBoxFuture<'a, Result<Vec<std::net::SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            if crate::upstream::ssrf::allowed(&self.allow, host, port) {
                let addrs = tokio::net::lookup_host((host, port)).await.map_err(Box::<dyn std::error::Error>::from)?;
                return Ok(addrs.collect());
            }
            crate::upstream::ssrf::resolve_checked(host, port).await.map_err(Box::<dyn std::error::Error>::from)
        })
    }
}

/// Builds the client for user-defined endpoints: like [`build_client`], with the SSRF guard as
/// its resolver.
pub fn build_guarded_client(
    connect_timeout: Duration,
    pool_idle: Duration,
    allow: std::sync::Arc<Vec<String>>,
) -> Client {
    let resolver = actix_tls::connect::Resolver::custom(GuardedResolve { allow });
    let tcp = actix_tls::connect::Connector::new(resolver).service();
    let connector = Connector::new().connector(tcp).timeout(connect_timeout).conn_keep_alive(pool_idle).limit(0);
    Client::builder().connector(connector).disable_redirects().disable_timeout().finish()
}

/// One request to an OpenAI-compatible upstream.
pub struct Outgoing<'a> {
    /// Full URL.
    pub url: &'a str,
    /// Bearer key, if the provider has one.
    pub api_key: Option<&'a str>,
    /// The JSON body.
    pub body: Bytes,
    /// Our request id, forwarded as `X-Request-Id`.
    pub request_id: &'a str,
    /// Ask for SSE.
    pub stream: bool,
}

/// Sends the request and waits at most `first_byte` for the response head.
pub async fn send(client: &Client, out: Outgoing<'_>, first_byte: Duration) -> Result<Response, UpstreamFailure> {
    let mut req = client
        .post(out.url)
        .insert_header(("content-type", "application/json"))
        .insert_header(("accept", if out.stream { "text/event-stream" } else { "application/json" }))
        .insert_header(("x-request-id", out.request_id))
        .insert_header(("user-agent", concat!("switchyard/", env!("CARGO_PKG_VERSION"))));
    if let Some(key) = out.api_key {
        req = req.bearer_auth(key);
    }
    match tokio::time::timeout(first_byte, req.send_body(out.body)).await {
        Err(_) => Err(UpstreamFailure::new(FailureKind::Timeout, "the upstream did not answer in time")),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            // The transport's own words (never a key: awc's errors hold no headers).
            tracing::debug!(error = %e, "Upstream request not sent.");
            Err(classify_send_error(&e))
        }
    }
}

fn classify_send_error(e: &SendRequestError) -> UpstreamFailure {
    match e {
        SendRequestError::Connect(_) | SendRequestError::Url(_) => {
            UpstreamFailure::new(FailureKind::Connect, "the gateway could not connect to the upstream")
        }
        SendRequestError::Timeout => UpstreamFailure::new(FailureKind::Timeout, "the upstream did not answer in time"),
        _ => UpstreamFailure::new(FailureKind::Protocol, "the upstream connection failed"),
    }
}
