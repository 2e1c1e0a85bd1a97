//! Phase `admit`: the cheap checks and the rate limits, in cost order — parse and validate the
//! body, resolve the model, the tier's output cap, the route's permission, room in the usage
//! queue, then rate limits and concurrency charged on the cheap estimate. An admitted request
//! has its usage record open; nothing refused here has one.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::accounting::{UsageGuard, UsageStart};
use crate::catalog::{Autoselect, Plan, Snapshot};
use crate::dialect::{Checked, Dialect, pivot};
use crate::error::ApiError;
use crate::proxy::permit::Permit;
use crate::proxy::request::{Request, Scope};
use crate::proxy::state::ProxyState;

/// What a request's `model` resolved to: a plan, or an autoselect that chooses one after admission.
pub enum Resolved {
    /// The candidates are known.
    Plan(Plan),
    /// An autoselect chooses them (after admission: it may classify and call a model).
    Autoselect(Arc<Autoselect>),
}

/// An admitted request.
pub struct Admitted {
    /// The parsed body in Chat, the pivot every phase reads.
    pub body: Map<String, Value>,
    /// The client's parsed body when it speaks another dialect than Chat (a passthrough to an
    /// upstream of that dialect sends it).
    pub client_body: Option<Map<String, Value>>,
    /// Why the client's body cannot be translated for another dialect's upstream, if it cannot.
    pub untranslatable: Option<ApiError>,
    /// What translating the answer back needs of the request.
    pub echo: crate::dialect::bridge::Echo,
    /// What validation found in it.
    pub checked: Checked,
    /// The catalog version the request runs on.
    pub snapshot: Arc<Snapshot>,
    /// The routes the caller may reach.
    pub permit: Permit,
    /// What `model` resolved to.
    pub resolved: Resolved,
}

/// Admits a request: `Ok` carries its open usage record.
pub async fn admit(state: &ProxyState, req: &Request<'_>) -> Result<(Admitted, UsageGuard), ApiError> {
    let parsed = crate::proxy::body::parse_object(req.raw)?;
    // A client speaking another dialect is read through its Chat pivot from here on.
    let (body, client_body, untranslatable) = match req.dialect {
        Dialect::OpenAi => (parsed, None, None),
        client => {
            let pivot = crate::dialect::bridge::to_pivot(client, &parsed)?;
            (pivot.body, Some(parsed), pivot.untranslatable)
        }
    };
    let echo = crate::dialect::bridge::echo(req.dialect, client_body.as_ref().unwrap_or(&body), &body);
    let client_terms = |e| crate::dialect::bridge::in_client_terms(req.dialect, e);
    let checked = pivot::check(req.op, &body).map_err(client_terms)?;
    let snapshot = state.catalog.snapshot();
    let caller = &req.caller.0;
    // A child token is held to its ancestors' scopes (which may have narrowed since it was
    // minted) and spends their limits and quotas.
    let ancestors = if caller.parent_id.is_some() { state.catalog.ancestors(caller).await? } else { Vec::new() };
    let tier = snapshot.tier_of(caller.user_id);
    let permit = Permit { token: Arc::clone(caller), ancestors, tier };
    // The tier's output cap, over every field an upstream may read as the limit.
    if let Some(t) = &permit.tier
        && let Some(cap) = t.max_tokens
    {
        checked.check_output_cap(cap, &t.name).map_err(client_terms)?;
    }
    let resolved = resolve(&snapshot, req, &checked.model)?;
    let route = match &resolved {
        Resolved::Autoselect(a) => a.route(),
        Resolved::Plan(p) => p.route.clone(),
    };
    permit.check(&route)?;
    if !state.accounting.has_room() {
        tracing::error!("Usage queue is full; refusing billable requests until it drains.");
        return Err(ApiError::unavailable().with_retry_after(5));
    }
    // Rate limits and concurrency, charged on the cheap estimate before any costly work.
    // Selection calls are billed (their own records) but ride on their request's admission.
    let settles = if req.is_selection() {
        None
    } else {
        let estimate = checked.prompt.estimate().saturating_add(checked.output_limit().unwrap_or(0));
        let holder = req.id.to_string();
        state.limiter.admit(caller, &permit.ancestors, permit.tier.as_deref(), estimate, &holder).await?
    };
    let mut guard = state.accounting.open(UsageStart {
        request_id: req.id,
        user_id: caller.user_id,
        token_id: caller.id,
        route: checked.model.clone(),
        stream: checked.stream,
        canonical_route: route,
        parent: req.parent,
    });
    guard.progress.estimated_prompt = checked.prompt.estimate();
    if let Some(s) = settles {
        guard.on_settle(s);
    }
    Ok((Admitted { body, client_body, untranslatable, echo, checked, snapshot, permit, resolved }, guard))
}

/// Counts a request's prompt tokens for `count_tokens`: parsed, mapped to the pivot, validated,
/// resolved and permitted like a request to the route, then counted (off the worker threads).
pub async fn count_tokens(state: &ProxyState, req: &Request<'_>) -> Result<u64, ApiError> {
    let mut parsed = crate::proxy::body::parse_object(req.raw)?;
    // Counting needs no output limit; Messages requires one on requests, not here.
    if !parsed.contains_key("max_tokens") {
        parsed.insert("max_tokens".into(), Value::from(1));
    }
    let body = crate::dialect::bridge::to_pivot(req.dialect, &parsed)?.body;
    let checked = pivot::check(req.op, &body)?;
    let snapshot = state.catalog.snapshot();
    let caller = &req.caller.0;
    let ancestors = if caller.parent_id.is_some() { state.catalog.ancestors(caller).await? } else { Vec::new() };
    let permit = Permit { token: Arc::clone(caller), ancestors, tier: snapshot.tier_of(caller.user_id) };
    let route = match resolve(&snapshot, req, &checked.model)? {
        Resolved::Autoselect(a) => a.route(),
        Resolved::Plan(p) => p.route,
    };
    permit.check(&route)?;
    let text = pivot::request_text(&body);
    let size = checked.prompt;
    crate::proxy::offload::offload(state, text.len(), move || pivot::count_prompt(&body, &text, size)).await
}

/// Resolves `model` in the request's scope.
fn resolve(snapshot: &Snapshot, req: &Request<'_>, model: &str) -> Result<Resolved, ApiError> {
    let user = req.caller.0.user_id;
    let auto = match &req.scope {
        Scope::Autoselect => {
            Some(snapshot.autoselect(model).ok_or_else(|| ApiError::model_not_found(&format!("autoselect/{model}")))?)
        }
        Scope::Owner => snapshot.autoselect_in(user, model),
        Scope::User(u) => snapshot.autoselect_in(*u, model),
        Scope::Provider(_) | Scope::Rotation | Scope::Selection { .. } => None,
    };
    if let Some(a) = auto {
        return Ok(Resolved::Autoselect(a));
    }
    let plan = match &req.scope {
        Scope::Provider(p) => snapshot.resolve_direct(p, model)?,
        Scope::Rotation => snapshot
            .rotation_plan(model)
            .unwrap_or_else(|| Err(ApiError::model_not_found(&format!("rotation/{model}"))))?,
        Scope::Selection { owner, .. } => snapshot.resolve_as(*owner, model)?,
        Scope::User(u) => snapshot.resolve_in(*u, model)?,
        Scope::Owner => snapshot.resolve_in(user, model)?,
        Scope::Autoselect => snapshot.resolve(model)?,
    };
    Ok(Resolved::Plan(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::proxy::testing::{Fixture, MOCKS};

    /// `admit` alone: resolution, rate limits (the fixture's token has 5 RPM), the record opened.
    #[actix_web::test]
    async fn admits_within_the_limits_and_opens_the_record() {
        let mut f = Fixture::new(MOCKS).await;
        let raw = br#"{"model":"rotation/r","messages":[{"role":"user","content":"x"}]}"#;
        for _ in 0..5 {
            let (a, guard) = admit(&f.state, &f.request(raw)).await.expect("admitted");
            assert!(matches!(&a.resolved, Resolved::Plan(p) if p.route == "rotation/r" && p.candidates.len() == 2));
            drop(guard);
        }
        let e = admit(&f.state, &f.request(raw)).await.err().expect("over the RPM");
        assert_eq!(e.code, Code::RateLimitExceeded);
        // Each admitted request's guard wrote its record when dropped; the refused one has none.
        let records = f.records();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.outcome == "client_disconnected" && r.status == 499));
    }

    #[actix_web::test]
    async fn scope_decides_the_namespace() {
        let f = Fixture::new(MOCKS).await;
        let raw = br#"{"model":"r","messages":[{"role":"user","content":"x"}]}"#;
        let mut req = f.request(raw);
        req.scope = Scope::Rotation;
        let (a, _g) = admit(&f.state, &req).await.expect("a rotation by its bare name");
        assert!(matches!(&a.resolved, Resolved::Plan(p) if p.route == "rotation/r"));
        req.scope = Scope::Provider("local".into());
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
        req.raw = raw;
        let (a, _g) = admit(&f.state, &req).await.expect("a provider's own model name");
        assert!(matches!(&a.resolved, Resolved::Plan(p) if p.route == "provider/local/m"));
    }
}
