//! One request as the phases see it: what the handler extracted, and whose names it resolves
//! among.

use crate::accounting::Outcome;
use crate::catalog::BurstMode;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::proxy::caller::Caller;
use crate::telemetry::Sampling;
use crate::types::{Operation, RequestId};

/// Whose names a request is resolved among.
#[derive(Clone, Debug)]
pub enum Scope {
    /// The token owner's namespace.
    Owner,
    /// `/api/u/{username}`: that user's namespace (already authorised; the user's id).
    User(i64),
    /// `/api/{provider_id}`: one provider's own model names.
    Provider(String),
    /// `/api/rotations`: `model` names a rotation.
    Rotation,
    /// `/api/autoselect`: `model` names an autoselect.
    Autoselect,
    /// An autoselect's selection call (embeddings or the selection model) on the caller's behalf:
    /// the autoselect's permission covers it; `private` keeps it on local targets.
    Selection {
        /// The prompt it carries is private.
        private: bool,
        /// Whose namespace the selection route is in (a user's autoselect), or global.
        owner: Option<i64>,
    },
}

/// What the handler extracted from the HTTP request (or a selection call made up).
pub struct Request<'a> {
    /// The request id.
    pub id: RequestId,
    /// The authenticated caller.
    pub caller: &'a Caller,
    /// Chat, completions or embeddings.
    pub op: Operation,
    /// Whose names the model resolves among.
    pub scope: Scope,
    /// The request's `X-Burst-Mode`, if it names a mode.
    pub burst_mode: Option<BurstMode>,
    /// The body as received.
    pub raw: &'a [u8],
    /// The dialect the client speaks.
    pub dialect: Dialect,
    /// For a selection call: the request it is made for.
    pub parent: Option<RequestId>,
    /// Whether its spans are exported (and what trace context an unsampled one sends upstream).
    pub sampling: Sampling,
    /// The client's headers of its own dialect, passed to an upstream of the same dialect
    /// (`anthropic-beta`).
    pub forwarded: Vec<(&'static str, String)>,
    /// The request's `Cache-Control` (the response cache's directives).
    pub cache_control: crate::cache::Directives,
}

impl Request<'_> {
    /// An autoselect's selection call, admitted with the request it serves.
    pub fn is_selection(&self) -> bool {
        matches!(self.scope, Scope::Selection { .. })
    }
}

/// A request that ends without an answer after admission: the client's error and the record's
/// outcome (the pipeline finishes the record, in one place).
#[derive(Debug)]
pub struct Refusal {
    /// What the client gets.
    pub error: ApiError,
    /// What the record says.
    pub outcome: Outcome,
}

impl Refusal {
    /// The gateway refused the request (`refused`).
    pub fn refused(error: ApiError) -> Self {
        Self { error, outcome: Outcome::Refused }
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::refused(error)
    }
}
