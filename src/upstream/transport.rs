//! The transport seam: a request goes out as bytes (a path below the provider's endpoint, a
//! body, a few headers) and comes back as a status, the headers the data plane reads, and a
//! stream of body bytes. HTTP is one transport; an in-process responder (the `mock` provider) is
//! another; a broker worker's relay is the next.

use std::time::Duration;

use crate::upstream::endpoint::Endpoint;
use crate::upstream::exchange::{Outgoing, Response};
use crate::upstream::failure::UpstreamFailure;
use crate::upstream::http::HttpClient;

/// An upstream answered in process: the request's bytes in, the answer out.
pub type InProcess = fn(&Outgoing<'_>) -> Response;

/// A transport that lives elsewhere (a broker worker's connection): it carries one request and
/// returns its answer's head and body, or the failure an HTTP transport would.
#[async_trait::async_trait]
pub trait Carrier: Send + Sync {
    /// Sends `out` and waits at most `first_byte` for the answer's head.
    async fn carry(&self, out: Outgoing<'_>, first_byte: Duration) -> Result<Response, UpstreamFailure>;
}

/// How one attempt reaches its upstream.
pub enum Transport<'a> {
    /// HTTP to `endpoint` (a user endpoint through the SSRF-guarded client).
    Http {
        /// The client.
        client: &'a HttpClient,
        /// The provider's base URL.
        endpoint: &'a Endpoint,
    },
    /// An upstream in this process.
    InProcess(InProcess),
    /// A carrier of its own (a broker worker's connection).
    Carrier(&'a dyn Carrier),
}

impl Transport<'_> {
    /// Sends `out` and waits at most `first_byte` for the answer's head.
    pub async fn send(&self, out: Outgoing<'_>, first_byte: Duration) -> Result<Response, UpstreamFailure> {
        match self {
            Self::Http { client, endpoint } => client.send(endpoint, out, first_byte).await,
            Self::InProcess(answer) => Ok(answer(&out)),
            Self::Carrier(c) => c.carry(out, first_byte).await,
        }
    }

    /// What the attempt's span calls the transport (`network.transport`-like, for traces).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::InProcess(_) => "in_process",
            Self::Carrier(_) => "carrier",
        }
    }
}
