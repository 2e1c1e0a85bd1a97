//! A reply that is not HTTP: a whole body with its usage recorded, or a relayed stream with its
//! usage tap, and the routing facts the client is told. Only [`respond`] makes an HTTP response
//! of it; internal callers (an autoselect's selection calls) read the body itself.

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use bytes::Bytes;

use crate::accounting::Finished;
use crate::catalog::BurstMode;
use crate::proxy::reason::Reason;
use crate::proxy::relay::Relay;
use crate::types::Locality;

/// The answer's body.
pub enum Body {
    /// A whole JSON body; its record is written.
    Whole(Bytes),
    /// An event stream being relayed; its record is written when it ends.
    Stream(Box<Relay>),
    /// A stored stream's events, replayed from the response cache; its record is written.
    Replay(Vec<Bytes>),
}

/// Where a request went and why (the routing headers).
#[derive(Clone, Debug)]
pub struct Routing {
    /// The route as resolved (`rotation/coding`).
    pub route: String,
    /// The provider that answered.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Why that target.
    pub reason: Reason,
    /// The target's locality (burst headers).
    pub locality: Locality,
    /// A burst rotation's mode and whether the request looked sensitive.
    pub burst: Option<(BurstMode, bool)>,
}

/// A reply to a request.
pub struct Reply {
    /// The body.
    pub body: Body,
    /// Where it came from.
    pub routing: Routing,
    /// The record of a whole reply (request id, latency, cost).
    pub served: Option<Finished>,
    /// What the response cache said (`X-Switchyard-Cache`, and `Age` on a hit), when it applies.
    pub cache: Option<CacheNote>,
}

/// The response cache's part of a reply's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheNote {
    /// Hit, miss or bypass.
    pub status: crate::cache::Status,
    /// A hit's age in seconds.
    pub age_secs: Option<u64>,
}

/// Makes the HTTP response of a reply.
pub fn respond(reply: Reply) -> HttpResponse {
    let mut res = match reply.body {
        Body::Whole(b) => HttpResponse::Ok().content_type("application/json").body(b),
        Body::Stream(relay) => event_stream().streaming((*relay).into_stream()),
        Body::Replay(events) => event_stream()
            .streaming(futures_util::stream::iter(events.into_iter().map(Ok::<Bytes, std::convert::Infallible>))),
    };
    let r = &reply.routing;
    let h = res.headers_mut();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    put("x-switchyard-route", &r.route);
    put("x-switchyard-provider", &r.provider);
    put("x-switchyard-model", &r.model);
    put("x-switchyard-reason", r.reason.as_str());
    if let Some(c) = reply.cache {
        put("x-switchyard-cache", c.status.as_str());
        if let Some(age) = c.age_secs {
            put("age", &age.to_string());
        }
    }
    if let Some((mode, sensitive)) = r.burst {
        put("x-burst-backend", if r.locality == Locality::Local { "local" } else { "cloud" });
        put("x-burst-mode", mode.as_str());
        put("x-burst-reason", r.reason.as_str());
        put("x-burst-sensitivity", if sensitive { "sensitive" } else { "public" });
    }
    res
}

fn event_stream() -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    b
}
