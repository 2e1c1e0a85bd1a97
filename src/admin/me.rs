//! `/api/me/`: the caller's own user, tokens and usage. A token mints child tokens only within
//! its own scope. A token without a parent manages its user's tokens and reads all of its
//! usage; a child token sees, revokes and reads the usage of only itself and the tokens minted
//! below it. A token out of reach answers exactly like a missing one.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::accounting::report;
use crate::admin::context::{AdminState, Me, Reply, control_error};
use crate::admin::resources::{TokenBody, UsageQuery, kind, objects_of, report_error};
use crate::control::child_within;
use crate::error::{ApiError, Code};
use crate::types::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(me))
        .route("/tokens", web::get().to(list_tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}", web::delete().to(revoke_token))
        .route("/usage", web::get().to(usage))
        .route("/{kind}", web::get().to(list_objects))
        .route("/{kind}/{object}", web::get().to(get_object))
        .route("/{kind}/{object}", web::put().to(put_object))
        .route("/{kind}/{object}", web::delete().to(delete_object));
}

async fn me(s: web::Data<AdminState>, caller: Me) -> Reply {
    let user = s.control.get_user(&caller.0.username).await.map_err(control_error)?;
    let tier = match &user.tier {
        Some(t) => Some(s.control.get_tier(t).await.map_err(control_error)?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "user": user,
        "tier": tier,
        "token": {"id": caller.0.id, "routes": caller.0.routes, "rpm": caller.0.rpm, "tpm": caller.0.tpm,
                  "quota_usd": caller.0.quota_usd, "expires_at": caller.0.expires_at, "parent_id": caller.0.parent_id},
    })))
}

/// The token ids a child token may manage and read (itself and its descendants); `None` for a
/// token without a parent, which manages all of its user's tokens.
async fn reach(s: &AdminState, caller: &Me) -> Result<Option<Vec<i64>>, ApiError> {
    if caller.0.parent_id.is_none() {
        return Ok(None);
    }
    Ok(Some(s.control.subtree(caller.0.user_id, caller.0.id).await.map_err(control_error)?))
}

async fn list_tokens(s: web::Data<AdminState>, caller: Me) -> Reply {
    let mut tokens = s.control.list_tokens(&caller.0.username).await.map_err(control_error)?;
    if caller.0.parent_id.is_some() {
        let ids = crate::control::subtree_of(&tokens, caller.0.id);
        tokens.retain(|t| ids.contains(&t.id));
    }
    Ok(HttpResponse::Ok().json(json!({"tokens": tokens})))
}

/// Counts one write of the caller's user against `tenant_limits.writes_per_minute`.
async fn write_allowed(s: &AdminState, caller: &Me) -> Result<(), ApiError> {
    s.control.tenant_write(caller.0.user_id).await.map_err(control_error)
}

async fn create_token(s: web::Data<AdminState>, caller: Me, body: web::Json<TokenBody>) -> Reply {
    write_allowed(&s, &caller).await?;
    let b = body.into_inner();
    if b.user.as_deref().is_some_and(|u| u != caller.0.username) {
        return Err(ApiError::new(Code::PermissionDenied, "A token can only mint tokens for its own user."));
    }
    let mut req = b.into_request(&caller.0.username)?;
    if caller.0.role != Role::Admin {
        child_within(&caller.0, &req).map_err(control_error)?;
    }
    req.parent_id = Some(caller.0.id);
    let (raw, row) = s.control.create_token(req).await.map_err(control_error)?;
    Ok(HttpResponse::Created().json(json!({"token": raw, "id": row.id})))
}

async fn revoke_token(s: web::Data<AdminState>, caller: Me, id: web::Path<i64>) -> Reply {
    write_allowed(&s, &caller).await?;
    let not_found = || ApiError::new(Code::NotFound, "No such token.");
    let token = s.control.get_token(*id).await.map_err(|_| not_found())?;
    if token.user_id != caller.0.user_id {
        return Err(not_found());
    }
    if reach(&s, &caller).await?.is_some_and(|ids| !ids.contains(&token.id)) {
        return Err(not_found());
    }
    s.control.revoke_token(*id).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn usage(s: web::Data<AdminState>, caller: Me, q: web::Query<UsageQuery>) -> Reply {
    if q.user.as_deref().is_some_and(|u| u != caller.0.username) {
        return Err(ApiError::new(Code::PermissionDenied, "Only your own usage is visible here."));
    }
    let mut f = q.filter(Some(caller.0.user_id))?;
    f.token_ids = reach(&s, &caller).await?;
    let r = report::report(s.control.store(), &f, q.group_by).await.map_err(report_error)?;
    Ok(HttpResponse::Ok().json(r))
}

async fn list_objects(s: web::Data<AdminState>, caller: Me, k: web::Path<String>) -> Reply {
    let k = kind(&k)?;
    Ok(HttpResponse::Ok().json(json!({"objects": objects_of(&s, &caller.0.username, k).await?})))
}

async fn get_object(s: web::Data<AdminState>, caller: Me, path: web::Path<(String, String)>) -> Reply {
    let (k, name) = path.into_inner();
    let o = s.control.get_user_object(&caller.0.username, kind(&k)?, &name).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(o))
}

async fn put_object(
    s: web::Data<AdminState>,
    caller: Me,
    path: web::Path<(String, String)>,
    body: web::Json<serde_json::Value>,
) -> Reply {
    let (k, name) = path.into_inner();
    only_root(&caller)?;
    write_allowed(&s, &caller).await?;
    let o = s
        .control
        .put_user_object(&caller.0.username, kind(&k)?, &name, body.into_inner())
        .await
        .map_err(control_error)?;
    Ok(HttpResponse::Ok().json(o))
}

async fn delete_object(s: web::Data<AdminState>, caller: Me, path: web::Path<(String, String)>) -> Reply {
    let (k, name) = path.into_inner();
    only_root(&caller)?;
    write_allowed(&s, &caller).await?;
    s.control.delete_user_object(&caller.0.username, kind(&k)?, &name).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Child tokens (minted by another token) may read the user's catalog but not change it.
fn only_root(caller: &Me) -> Result<(), ApiError> {
    if caller.0.parent_id.is_some() {
        return Err(ApiError::new(
            Code::PermissionDenied,
            "A child token may not change the user's providers or rotations.",
        ));
    }
    Ok(())
}
