//! `/admin/api/`: users, tiers, tokens, prices and usage reports (admin tokens only).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::accounting::report::{self, GroupBy, ReportError};
use crate::admin::context::{Admin, AdminState, Reply, control_error};
use crate::control::{NewTokenRequest, ObjectKind};
use crate::error::{ApiError, Code};
use crate::store::{PriceRow, TierRow, UsageFilter};
use crate::types::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::get().to(list_users))
        .route("/users", web::post().to(create_user))
        .route("/users/{name}", web::get().to(get_user))
        .route("/users/{name}", web::patch().to(update_user))
        .route("/users/{name}/tokens", web::get().to(list_user_tokens))
        .route("/users/{name}/{kind}", web::get().to(list_objects))
        .route("/users/{name}/{kind}/{object}", web::get().to(get_object))
        .route("/users/{name}/{kind}/{object}", web::put().to(put_object))
        .route("/users/{name}/{kind}/{object}", web::delete().to(delete_object))
        .route("/tiers", web::get().to(list_tiers))
        .route("/tiers/{name}", web::get().to(get_tier))
        .route("/tiers/{name}", web::put().to(put_tier))
        .route("/tiers/{name}", web::delete().to(delete_tier))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}", web::patch().to(update_token))
        .route("/tokens/{id}", web::delete().to(revoke_token))
        .route("/prices", web::get().to(list_prices))
        .route("/prices", web::put().to(put_price))
        .route("/prices/{model}", web::get().to(get_price))
        .route("/prices/{model}", web::delete().to(delete_price))
        .route("/cluster", web::get().to(cluster))
        .route("/cache", web::get().to(cache_status))
        .route("/cache/purge", web::post().to(cache_purge))
        .route("/usage", web::get().to(usage))
        .route("/usage.csv", web::get().to(usage_csv));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

fn role(s: Option<&str>) -> Result<Role, ApiError> {
    match s {
        None => Ok(Role::User),
        Some(r) => Role::parse(r).ok_or_else(|| ApiError::invalid("role", "role must be `admin` or `user`")),
    }
}

async fn list_users(s: web::Data<AdminState>, _: Admin) -> Reply {
    let users = s.control.list_users().await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(json!({"users": users})))
}

async fn create_user(s: web::Data<AdminState>, _: Admin, body: web::Json<NewUser>) -> Reply {
    let b = body.into_inner();
    let role = role(b.role.as_deref())?;
    let u = s
        .control
        .create_user(&b.username, role, b.tier.as_deref(), b.password.as_deref())
        .await
        .map_err(control_error)?;
    let u = match b.email.as_deref() {
        Some(e) => s.control.set_email(&u.username, Some(e)).await.map_err(control_error)?,
        None => u,
    };
    Ok(HttpResponse::Created().json(json!({"user": u})))
}

async fn get_user(s: web::Data<AdminState>, _: Admin, name: web::Path<String>) -> Reply {
    let u = s.control.get_user(&name).await.map_err(control_error)?;
    let tokens = s.control.list_tokens(&name).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(json!({"user": u, "tokens": tokens})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    /// `null` takes the user off any tier.
    #[serde(default, deserialize_with = "present")]
    tier: Option<Option<String>>,
    #[serde(default)]
    status: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn update_user(s: web::Data<AdminState>, _: Admin, name: web::Path<String>, body: web::Json<UserPatch>) -> Reply {
    let b = body.into_inner();
    let mut user = s.control.get_user(&name).await.map_err(control_error)?;
    match b.status.as_deref() {
        None => {}
        Some("active") => user = s.control.enable_user(&name).await.map_err(control_error)?,
        Some("disabled") => user = s.control.disable_user(&name).await.map_err(control_error)?,
        Some(_) => return Err(ApiError::invalid("status", "status must be `active` or `disabled`")),
    }
    if let Some(tier) = b.tier {
        user = s.control.set_user_tier(&name, tier.as_deref()).await.map_err(control_error)?;
    }
    if let Some(email) = b.email {
        user = s.control.set_email(&name, email.as_deref()).await.map_err(control_error)?;
    }
    Ok(HttpResponse::Ok().json(json!({"user": user})))
}

async fn list_user_tokens(s: web::Data<AdminState>, _: Admin, name: web::Path<String>) -> Reply {
    let tokens = s.control.list_tokens(&name).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(json!({"tokens": tokens})))
}

async fn list_tiers(s: web::Data<AdminState>, _: Admin) -> Reply {
    Ok(HttpResponse::Ok().json(json!({"tiers": s.control.list_tiers().await.map_err(control_error)?})))
}

async fn get_tier(s: web::Data<AdminState>, _: Admin, name: web::Path<String>) -> Reply {
    Ok(HttpResponse::Ok().json(json!({"tier": s.control.get_tier(&name).await.map_err(control_error)?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierBody {
    #[serde(default)]
    rpm: Option<i64>,
    #[serde(default)]
    tpm: Option<i64>,
    #[serde(default)]
    max_concurrency: Option<i64>,
    #[serde(default)]
    monthly_quota_usd: Option<f64>,
    #[serde(default)]
    routes: Option<Vec<String>>,
    #[serde(default)]
    max_tokens: Option<i64>,
}

async fn put_tier(s: web::Data<AdminState>, _: Admin, name: web::Path<String>, body: web::Json<TierBody>) -> Reply {
    let b = body.into_inner();
    let row = TierRow {
        name: name.into_inner(),
        rpm: b.rpm,
        tpm: b.tpm,
        max_concurrency: b.max_concurrency,
        monthly_quota_usd: b.monthly_quota_usd,
        routes: b.routes,
        max_tokens: b.max_tokens,
    };
    Ok(HttpResponse::Ok().json(json!({"tier": s.control.put_tier(&row).await.map_err(control_error)?})))
}

async fn delete_tier(s: web::Data<AdminState>, _: Admin, name: web::Path<String>) -> Reply {
    s.control.delete_tier(&name).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// A token to create (admin: for any user, any scope; `/api/me`: for oneself, within scope).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) routes: Option<Vec<String>>,
    /// RFC 3339.
    #[serde(default)]
    pub(crate) expires_at: Option<String>,
    #[serde(default)]
    pub(crate) quota_usd: Option<f64>,
    #[serde(default)]
    pub(crate) rpm: Option<i64>,
    #[serde(default)]
    pub(crate) tpm: Option<i64>,
    /// A worker token for this broker provider.
    #[serde(default)]
    pub(crate) worker: Option<String>,
}

impl TokenBody {
    pub(crate) fn into_request(self, username: &str) -> Result<NewTokenRequest, ApiError> {
        let expires_at = match &self.expires_at {
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        ApiError::invalid("expires_at", "expires_at must be RFC 3339, e.g. 2027-01-01T00:00:00Z")
                    })?
                    .timestamp_millis(),
            ),
            None => None,
        };
        Ok(NewTokenRequest {
            name: self.name.unwrap_or_else(|| "default".into()),
            routes: self.routes,
            expires_at,
            quota_usd: self.quota_usd,
            rpm: self.rpm,
            tpm: self.tpm,
            worker: self.worker,
            ..NewTokenRequest::for_user(username)
        })
    }
}

async fn create_token(s: web::Data<AdminState>, _: Admin, body: web::Json<TokenBody>) -> Reply {
    let b = body.into_inner();
    let user = b.user.clone().ok_or_else(|| ApiError::missing("user"))?;
    let req = b.into_request(&user)?;
    let (raw, row) = s.control.create_token(req).await.map_err(control_error)?;
    Ok(HttpResponse::Created().json(json!({"token": raw, "id": row.id})))
}

/// `PATCH /admin/api/tokens/{id}`: `routes`, `rpm`, `tpm`, `quota_usd`, `expires_at` (RFC 3339);
/// a field left out stays, `null` clears it.
async fn update_token(
    s: web::Data<AdminState>,
    _: Admin,
    id: web::Path<i64>,
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> Reply {
    let body = body.into_inner();
    if let Some(k) = body.keys().find(|k| !["routes", "rpm", "tpm", "quota_usd", "expires_at"].contains(&k.as_str())) {
        return Err(ApiError::invalid(k, format!("unknown field `{k}`")));
    }
    let expires_at = match patch_field::<String>(&body, "expires_at")? {
        Some(Some(t)) => Some(Some(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| ApiError::invalid("expires_at", "expires_at must be RFC 3339, e.g. 2027-01-01T00:00:00Z"))?
                .timestamp_millis(),
        )),
        Some(None) => Some(None),
        None => None,
    };
    let change = crate::store::TokenScopeChange {
        routes: patch_field(&body, "routes")?,
        rpm: patch_field(&body, "rpm")?,
        tpm: patch_field(&body, "tpm")?,
        quota_usd: patch_field(&body, "quota_usd")?,
        expires_at,
    };
    let row = s.control.update_token(*id, &change).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(json!({"token": row})))
}

/// A PATCH field: absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
fn patch_field<T: serde::de::DeserializeOwned>(
    body: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<Option<T>>, ApiError> {
    match body.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(v) => serde_json::from_value(v.clone())
            .map(|v| Some(Some(v)))
            .map_err(|e| ApiError::invalid(key, format!("`{key}`: {e}"))),
    }
}

async fn revoke_token(s: web::Data<AdminState>, _: Admin, id: web::Path<i64>) -> Reply {
    s.control.revoke_token(*id).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_prices(s: web::Data<AdminState>, _: Admin) -> Reply {
    Ok(HttpResponse::Ok().json(json!({"prices": s.control.list_prices().await.map_err(control_error)?})))
}

async fn put_price(s: web::Data<AdminState>, _: Admin, body: web::Json<PriceRow>) -> Reply {
    Ok(HttpResponse::Ok().json(json!({"price": s.control.put_price(&body).await.map_err(control_error)?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderQuery {
    #[serde(default)]
    provider: String,
}

async fn get_price(
    s: web::Data<AdminState>,
    _: Admin,
    model: web::Path<String>,
    q: web::Query<ProviderQuery>,
) -> Reply {
    Ok(HttpResponse::Ok()
        .json(json!({"price": s.control.get_price(&model, &q.provider).await.map_err(control_error)?})))
}

async fn delete_price(
    s: web::Data<AdminState>,
    _: Admin,
    model: web::Path<String>,
    q: web::Query<ProviderQuery>,
) -> Reply {
    s.control.delete_price(&model, &q.provider).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Usage filters: `from`/`to` (RFC 3339), `user` (name), `model`, `route`, `group_by`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    #[serde(default)]
    pub(crate) from: Option<String>,
    #[serde(default)]
    pub(crate) to: Option<String>,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) route: Option<String>,
    #[serde(default)]
    pub(crate) group_by: Option<GroupBy>,
}

fn instant(field: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|_| ApiError::invalid(field, format!("`{field}` must be RFC 3339, e.g. 2026-11-01T00:00:00Z")))
    })
    .transpose()
}

impl UsageQuery {
    pub(crate) fn filter(&self, user_id: Option<i64>) -> Result<UsageFilter, ApiError> {
        Ok(UsageFilter {
            from_ms: instant("from", self.from.as_deref())?,
            to_ms: instant("to", self.to.as_deref())?,
            user_id,
            model: self.model.clone(),
            route: self.route.clone(),
            token_ids: None,
            errors_only: false,
        })
    }
}

pub(crate) fn report_error(e: ReportError) -> ApiError {
    match e {
        ReportError::TooMany => ApiError::new(Code::InvalidRequest, e.to_string()),
        ReportError::Store(e) => {
            tracing::error!(error = %e, "Store failure in a usage report.");
            ApiError::unavailable()
        }
    }
}

async fn user_id(s: &AdminState, q: &UsageQuery) -> Result<Option<i64>, ApiError> {
    match &q.user {
        Some(name) => Ok(Some(s.control.get_user(name).await.map_err(control_error)?.id)),
        None => Ok(None),
    }
}

async fn usage(s: web::Data<AdminState>, _: Admin, q: web::Query<UsageQuery>) -> Reply {
    let f = q.filter(user_id(&s, &q).await?)?;
    let r = report::report(s.control.store(), &f, q.group_by).await.map_err(report_error)?;
    Ok(HttpResponse::Ok().json(r))
}

async fn usage_csv(s: web::Data<AdminState>, _: Admin, q: web::Query<UsageQuery>) -> Reply {
    let f = q.filter(user_id(&s, &q).await?)?;
    let body = report::csv_stream(s.control.store().clone(), f);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("content-disposition", "attachment; filename=\"usage.csv\""))
        .streaming(body))
}

pub(crate) fn kind(s: &str) -> Result<ObjectKind, ApiError> {
    ObjectKind::from_plural(s).ok_or_else(|| ApiError::new(Code::NotFound, "No such path."))
}

/// Objects of one kind, as shown (keys never included).
pub(crate) async fn objects_of(s: &AdminState, user: &str, k: ObjectKind) -> Result<Vec<serde_json::Value>, ApiError> {
    let all = s.control.list_user_objects(user).await.map_err(control_error)?;
    let want = match k {
        ObjectKind::Provider => "provider",
        ObjectKind::Rotation => "rotation",
        ObjectKind::Autoselect => "autoselect",
    };
    Ok(all.into_iter().filter(|o| o["kind"] == want).collect())
}

async fn list_objects(s: web::Data<AdminState>, _: Admin, path: web::Path<(String, String)>) -> Reply {
    let (user, k) = path.into_inner();
    let k = kind(&k)?;
    Ok(HttpResponse::Ok().json(json!({"objects": objects_of(&s, &user, k).await?})))
}

async fn get_object(s: web::Data<AdminState>, _: Admin, path: web::Path<(String, String, String)>) -> Reply {
    let (user, k, name) = path.into_inner();
    let o = s.control.get_user_object(&user, kind(&k)?, &name).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(o))
}

async fn put_object(
    s: web::Data<AdminState>,
    _: Admin,
    path: web::Path<(String, String, String)>,
    body: web::Json<serde_json::Value>,
) -> Reply {
    let (user, k, name) = path.into_inner();
    let o = s.control.put_user_object(&user, kind(&k)?, &name, body.into_inner()).await.map_err(control_error)?;
    Ok(HttpResponse::Ok().json(o))
}

async fn delete_object(s: web::Data<AdminState>, _: Admin, path: web::Path<(String, String, String)>) -> Reply {
    let (user, k, name) = path.into_inner();
    s.control.delete_user_object(&user, kind(&k)?, &name).await.map_err(control_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /admin/api/cluster`: the live nodes (those heartbeating), with what each announces.
async fn cluster(s: web::Data<AdminState>, _: Admin) -> Reply {
    let nodes = s.control.cluster_nodes().await.map_err(|_| ApiError::unavailable())?;
    Ok(HttpResponse::Ok().json(json!({"nodes": nodes, "shared_state": s.shared.kind()})))
}

/// `GET /admin/api/cache`: whether the response cache is on, where it is kept, and (in process)
/// its entries, bytes and evictions.
async fn cache_status(s: web::Data<AdminState>, _: Admin) -> Reply {
    let Some(c) = &s.cache else { return Ok(HttpResponse::Ok().json(json!({"enabled": false}))) };
    let mut v = json!({"enabled": true, "store": c.kind(), "flights": c.flights()});
    if let Some(u) = c.usage().await {
        v["entries"] = json!(u.entries);
        v["bytes"] = json!(u.bytes);
        v["evictions"] = json!(u.evictions);
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    route: Option<String>,
}

/// `POST /admin/api/cache/purge` `{"user"?, "route"?}`: every node stops serving the cached
/// answers of that tenant and/or route (the route as the tenant would name it: `coding` is
/// `rotation/coding`); neither: every entry. The entries are removed from the store too.
async fn cache_purge(s: web::Data<AdminState>, _: Admin, body: web::Json<PurgeBody>) -> Reply {
    let PurgeBody { user, route } = body.into_inner();
    let snapshot = s.catalog.snapshot();
    // The store knows a user the catalog has not loaded yet.
    let owner = match user.as_deref() {
        Some(u) => match snapshot.user(u) {
            Some(e) => Some(e.id),
            None => Some(s.control.get_user(u).await.map_err(control_error)?.id),
        },
        None => None,
    };
    let route = match route {
        Some(r) => Some(snapshot.canonical_route(owner, &r).ok_or_else(|| {
            ApiError::new(Code::NotFound, "No such route (a user's own route is named with `user` too).")
        })?),
        None => None,
    };
    let scope = s.control.purge_cache(user.as_deref(), route.as_deref()).await.map_err(control_error)?;
    let removed = match &s.cache {
        Some(c) => match c.purge(scope).await {
            Ok(n) => json!(n),
            Err(e) => {
                tracing::warn!(error = %e, "Could not remove purged entries from the cache store; they are not served.");
                serde_json::Value::Null
            }
        },
        None => json!(0),
    };
    Ok(HttpResponse::Ok().json(json!({"purged": {"user": user, "route": route}, "removed": removed})))
}
