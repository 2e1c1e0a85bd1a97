//! The response cache in the data plane, between admission and planning: a hit is refused or
//! answered here (quota checked, record written, nothing planned or bought); a miss carries the
//! fill its answer is stored through — a whole body at once, a stream event by event through
//! its relay, stored only when the stream completes.

use crate::accounting::UsageGuard;
use crate::cache::{self, Hit, Lookup, Stored, key};
use crate::proxy::admit::{Admitted, Resolved};
use crate::proxy::plan::reserve_quota;
use crate::proxy::reason::Reason;
use crate::proxy::reply::{Body, CacheNote, Reply, Routing};
use crate::proxy::request::{Refusal, Request, Scope};
use crate::proxy::state::ProxyState;
use crate::types::Locality;

/// What the cache makes of an admitted request.
pub async fn lookup(state: &ProxyState, req: &Request<'_>, a: &Admitted) -> Lookup {
    let Some(cache) = &state.cache else { return Lookup::Off };
    let (route, policy) = route_of(a);
    let how = cache::decide(cache.ttl(policy.ttl_secs), req.cache_control, req.is_selection());
    // The tenant: whose namespace the request runs in; nobody's on a `global` route.
    let owner = (!policy.global).then(|| match req.scope {
        Scope::User(u) => u,
        _ => req.caller.0.user_id,
    });
    let ask = key::Ask {
        owner,
        route: &route,
        dialect: req.dialect.name(),
        op: req.op.path(),
        stream: a.checked.stream,
        headers: &req.forwarded,
        body: a.client_body.as_ref().unwrap_or(&a.body),
    };
    // The key, and the purges covering it, only when the request uses the cache.
    let purged_at = |k: &crate::shared::cache::CacheKey| a.snapshot.cache_purges.purged_at(k.owner, k.route);
    cache.lookup(|| key::derive(&ask), purged_at, how, a.checked.stream).await
}

/// The route the request resolved to (borrowed from its plan), and its cache policy.
fn route_of(a: &Admitted) -> (std::borrow::Cow<'_, str>, crate::catalog::CachePolicy) {
    match &a.resolved {
        Resolved::Plan(p) => (p.route.as_str().into(), p.cache),
        Resolved::Autoselect(auto) => (auto.route().into(), auto.cache),
    }
}

/// Answers a request from the cache: refused like any request when a quota is spent; else its
/// record says `cache` with the original's tokens and no cost, and the stored answer is the
/// reply (a stream's usage-only chunk only for a client that asked for usage).
pub async fn serve(
    state: &ProxyState,
    req: &Request<'_>,
    a: &Admitted,
    mut guard: UsageGuard,
    hit: Hit,
) -> Result<Reply, (UsageGuard, Refusal)> {
    if let Err(r) = reserve_quota(state, req, a, 0, &mut guard).await {
        return Err((guard, r));
    }
    let Hit { entry, age_secs } = hit;
    tracing::debug!(provider = %entry.provider, age_secs, "Served from the response cache.");
    let finished = guard.finish_cached(&entry.provider, &entry.model, entry.usage, entry.estimated);
    let (body, served) = match entry.body {
        Stored::Whole(b) => (Body::Whole(b), finished),
        Stored::Stream(frames) => {
            let wants_usage = a.checked.client_wants_usage;
            let events = frames.into_iter().filter(|f| wants_usage || !f.usage_only).map(|f| f.bytes).collect();
            (Body::Replay(events), None)
        }
    };
    let routing = Routing {
        route: route_of(a).0.into_owned(),
        provider: entry.provider,
        model: entry.model,
        reason: Reason::Cache,
        locality: Locality::default(),
        burst: None,
    };
    let cache = Some(CacheNote { status: cache::Status::Hit, age_secs: Some(age_secs) });
    Ok(Reply { body, routing, served, cache })
}

/// Stores a miss's answer through `fill`: a whole body now, a stream when it completes.
pub async fn keep(reply: &mut Reply, fill: cache::Fill) {
    let r = &reply.routing;
    match &mut reply.body {
        Body::Whole(b) => {
            if let Some(f) = &reply.served {
                fill.store_whole(b.clone(), &r.provider, &r.model, f.usage, f.estimated).await;
            }
        }
        Body::Stream(relay) => relay.capture(fill.capture(&r.provider, &r.model)),
        Body::Replay(_) => {}
    }
}
