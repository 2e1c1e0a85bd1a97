//! Talking to upstreams: transports (HTTP, and in process for the `mock` provider) that carry
//! request bytes out and yield a status, a few headers and a byte stream back; failure
//! classification; the SSRF guard of user endpoints.
//!
//! A transport never looks inside a body: building it and reading it is a dialect's job.
//!
//! Architecture Invariant: depends on `config` and `types` only; no store, no shared state, no
//! catalog, no dialect. Nothing outside `upstream::http` names the HTTP client library.

pub mod endpoint;
pub mod exchange;
pub mod failure;
pub mod http;
pub mod ssrf;
pub mod transport;

pub use endpoint::Endpoint;
pub use exchange::{Auth, BodyError, BodyStream, Outgoing, Response, read_body};
pub use failure::{Disposition, FailureKind, UpstreamFailure, sanitize};
pub use transport::{Carrier, InProcess, Transport};
