//! The pages that change things: tokens, users, tiers, prices, and users' own providers,
//! rotations and autoselects. Each form posts with the session's CSRF token ([`Form`]); each
//! change goes through `control`, which validates it and announces it to every node. A user
//! reaches only their own objects: another user's answer exactly like missing ones.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::control::{NewTokenRequest, ObjectKind};
use crate::dashboard::errors::DashError;
use crate::dashboard::forms::{Form, Nothing, list, opt, opt_text};
use crate::dashboard::session::Principal;
use crate::dashboard::state::DashboardState;
use crate::dashboard::views::{Frame, page, see_other, time, usd};
use crate::store::{PriceRow, TierRow, TokenRow};
use crate::types::{Role, now_ms};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}", web::get().to(token))
        .route("/tokens/{id}", web::post().to(rescope_token))
        .route("/tokens/{id}/revoke", web::post().to(revoke_token))
        .route("/routes", web::get().to(routes))
        .route("/routes", web::post().to(put_route))
        .route("/routes/delete", web::post().to(delete_route))
        .route("/users", web::get().to(users))
        .route("/users", web::post().to(create_user))
        .route("/users/{name}", web::get().to(user))
        .route("/users/{name}", web::post().to(update_user))
        .route("/tiers", web::get().to(tiers))
        .route("/tiers", web::post().to(put_tier))
        .route("/tiers/delete", web::post().to(delete_tier))
        .route("/prices", web::get().to(prices))
        .route("/prices", web::post().to(put_price))
        .route("/prices/delete", web::post().to(delete_price));
}

#[derive(Deserialize, Default)]
struct OwnerQuery {
    #[serde(default)]
    user: Option<String>,
}

/// Whose objects a page shows: the caller's, or (admins only) the named user's. A user naming
/// someone else gets the not-found page, as for a user that does not exist.
async fn owner(s: &DashboardState, p: &Principal, named: Option<&str>) -> Result<(i64, String), DashError> {
    match named.and_then(opt_text) {
        Some(name) if name != p.username => {
            if !p.is_admin() {
                return Err(DashError::NotFound);
            }
            let u = s.control.get_user(&name).await?;
            Ok((u.id, u.username))
        }
        _ => Ok((p.user_id, p.username.clone())),
    }
}

/// The `?user=` suffix of a page about `owner`, for links and redirects.
fn for_user(p: &Principal, owner: &str) -> String {
    if owner == p.username { String::new() } else { format!("?user={owner}") }
}

/// A token as listed.
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub routes: String,
    pub limits: String,
    pub expires: String,
    pub last_used: String,
    pub state: &'static str,
    pub live: bool,
}

fn token_view(t: &TokenRow) -> TokenView {
    let mut limits = Vec::new();
    if let Some(v) = t.rpm {
        limits.push(format!("{v} RPM"));
    }
    if let Some(v) = t.tpm {
        limits.push(format!("{v} TPM"));
    }
    if let Some(v) = t.quota_usd {
        limits.push(format!("quota {}", usd(v)));
    }
    let expired = t.expires_at.is_some_and(|e| e <= now_ms());
    TokenView {
        id: t.id,
        name: t.name.clone(),
        // Seven characters (`sy-` and four): enough to tell tokens apart, never an 8-character
        // piece of a secret on a page (TESTPLAN S8).
        prefix: format!("{}…", t.display_prefix.chars().take(7).collect::<String>()),
        routes: t.routes.as_ref().map_or_else(|| "all".into(), |r| r.join(", ")),
        limits: if limits.is_empty() { "—".into() } else { limits.join(", ") },
        expires: t.expires_at.map_or_else(|| "never".into(), time),
        last_used: t.last_used_at.map_or_else(|| "never".into(), time),
        state: if t.revoked {
            "revoked"
        } else if expired {
            "expired"
        } else {
            "active"
        },
        live: !t.revoked && !expired,
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    f: Frame,
    owner: String,
    other: bool,
    action: String,
    tokens: Vec<TokenView>,
    created: Option<String>,
}

async fn tokens_page(
    s: &DashboardState,
    p: &Principal,
    owner: &str,
    created: Option<String>,
) -> Result<HttpResponse, DashError> {
    let rows = s.control.list_tokens(owner).await?;
    let suffix = for_user(p, owner);
    page(&TokensPage {
        f: Frame::new(p, "/dashboard/tokens", "Tokens"),
        owner: owner.to_owned(),
        other: owner != p.username,
        action: format!("/dashboard/tokens{suffix}"),
        tokens: rows.iter().rev().map(token_view).collect(),
        created,
    })
}

async fn tokens(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<OwnerQuery>,
) -> Result<HttpResponse, DashError> {
    let (_, name) = owner(&s, &p, q.user.as_deref()).await?;
    tokens_page(&s, &p, &name, None).await
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    routes: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    quota_usd: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
}

/// A date (`YYYY-MM-DD`, the end of that day UTC) or an RFC 3339 instant.
fn expiry(v: &str) -> Result<Option<i64>, DashError> {
    let Some(v) = opt_text(v) else { return Ok(None) };
    if let Ok(d) = chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        let end = d.and_hms_opt(23, 59, 59).map(|t| t.and_utc().timestamp_millis());
        return end.map(Some).ok_or_else(|| DashError::Invalid("The expiry date is out of range.".into()));
    }
    chrono::DateTime::parse_from_rfc3339(&v)
        .map(|d| Some(d.timestamp_millis()))
        .map_err(|_| DashError::Invalid("Expiry: a date (2027-01-31) or an RFC 3339 time.".into()))
}

async fn create_token(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<OwnerQuery>,
    form: Form<TokenForm>,
) -> Result<HttpResponse, DashError> {
    let (owner_id, name) = owner(&s, &p, q.user.as_deref()).await?;
    let f = form.0;
    let routes = list(&f.routes);
    let req = NewTokenRequest {
        name: opt_text(&f.name).unwrap_or_else(|| "dashboard".into()),
        routes: (!routes.is_empty()).then_some(routes),
        expires_at: expiry(&f.expires)?,
        quota_usd: opt("quota_usd", &f.quota_usd)?,
        rpm: opt("rpm", &f.rpm)?,
        tpm: opt("tpm", &f.tpm)?,
        // A user's own tokens count against their cap; an admin's for others do not.
        self_service: !p.is_admin(),
        ..NewTokenRequest::for_user(&name)
    };
    if !p.is_admin() {
        s.control.tenant_write(owner_id).await?;
    }
    let (raw, _) = s.control.create_token(req).await?;
    tokens_page(&s, &p, &name, Some(raw)).await
}

async fn revoke_token(
    s: web::Data<DashboardState>,
    p: Principal,
    id: web::Path<i64>,
    _: Form<Nothing>,
) -> Result<HttpResponse, DashError> {
    let token = s.control.get_token(*id).await.map_err(|_| DashError::NotFound)?;
    if !p.is_admin() && token.user_id != p.user_id {
        return Err(DashError::NotFound);
    }
    if !p.is_admin() {
        s.control.tenant_write(p.user_id).await?;
    }
    s.control.revoke_token(token.id).await?;
    let owner = if token.user_id == p.user_id {
        p.username.clone()
    } else {
        s.control.get_user_by_id(token.user_id).await?.username
    };
    Ok(see_other(&format!("/dashboard/tokens{}", for_user(&p, &owner))))
}

#[derive(Template)]
#[template(path = "token.html")]
struct TokenPage {
    f: Frame,
    t: TokenView,
    owner: String,
    routes: String,
    rpm: String,
    tpm: String,
    quota: String,
    expires: String,
}

/// A token's page: who owns it, its scope; an admin changes the scope here.
async fn token(s: web::Data<DashboardState>, p: Principal, id: web::Path<i64>) -> Result<HttpResponse, DashError> {
    let t = s.control.get_token(*id).await.map_err(|_| DashError::NotFound)?;
    if !p.is_admin() && t.user_id != p.user_id {
        return Err(DashError::NotFound);
    }
    let owner = s.control.get_user_by_id(t.user_id).await?.username;
    let text = |v: Option<String>| v.unwrap_or_default();
    page(&TokenPage {
        f: Frame::new(&p, "/dashboard/tokens", format!("Token {} ({})", t.id, t.name)),
        owner,
        routes: text(t.routes.as_ref().map(|r| r.join(", "))),
        rpm: text(t.rpm.map(|v| v.to_string())),
        tpm: text(t.tpm.map(|v| v.to_string())),
        quota: text(t.quota_usd.map(|v| v.to_string())),
        expires: text(t.expires_at.and_then(chrono::DateTime::from_timestamp_millis).map(|d| d.to_rfc3339())),
        t: token_view(&t),
    })
}

#[derive(Deserialize)]
struct ScopeForm {
    #[serde(default)]
    routes: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    #[serde(default)]
    quota_usd: String,
    #[serde(default)]
    expires: String,
}

/// `POST /dashboard/tokens/{id}` (admins, as `PATCH /admin/api/tokens/{id}`): the whole scope
/// as typed; an empty field clears its limit.
async fn rescope_token(
    s: web::Data<DashboardState>,
    p: Principal,
    id: web::Path<i64>,
    form: Form<ScopeForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let t = s.control.get_token(*id).await.map_err(|_| DashError::NotFound)?;
    let f = form.0;
    let routes = list(&f.routes);
    let change = crate::store::TokenScopeChange {
        routes: Some((!routes.is_empty()).then_some(routes)),
        rpm: Some(opt("rpm", &f.rpm)?),
        tpm: Some(opt("tpm", &f.tpm)?),
        quota_usd: Some(opt("quota_usd", &f.quota_usd)?),
        expires_at: Some(expiry(&f.expires)?),
    };
    s.control.update_token(t.id, &change).await?;
    Ok(see_other(&format!("/dashboard/tokens/{}", t.id)))
}

/// A user's object as listed.
pub struct ObjectView {
    pub kind: String,
    pub name: String,
    pub route: String,
    pub spec: String,
    pub has_key: bool,
}

#[derive(Template)]
#[template(path = "routes.html")]
struct RoutesPage {
    f: Frame,
    owner: String,
    other: bool,
    suffix: String,
    objects: Vec<ObjectView>,
}

async fn routes(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<OwnerQuery>,
) -> Result<HttpResponse, DashError> {
    let (_, name) = owner(&s, &p, q.user.as_deref()).await?;
    let objects = s
        .control
        .list_user_objects(&name)
        .await?
        .into_iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap_or_default().to_owned();
            let oname = o["name"].as_str().unwrap_or_default().to_owned();
            let route = match kind.as_str() {
                "provider" => format!("user-provider/{oname}/<model>"),
                "rotation" => format!("user-rotation/{oname}"),
                _ => format!("user-autoselect/{oname}"),
            };
            ObjectView {
                spec: serde_json::to_string_pretty(&o["spec"]).unwrap_or_default(),
                has_key: o["has_api_key"].as_bool().unwrap_or(false),
                kind,
                name: oname,
                route,
            }
        })
        .collect();
    page(&RoutesPage {
        f: Frame::new(&p, "/dashboard/routes", "My routes"),
        other: name != p.username,
        suffix: for_user(&p, &name),
        owner: name,
        objects,
    })
}

#[derive(Deserialize)]
struct RouteForm {
    kind: String,
    name: String,
    spec: String,
    #[serde(default)]
    api_key: String,
}

fn object_kind(k: &str) -> Result<ObjectKind, DashError> {
    match k {
        "provider" => Ok(ObjectKind::Provider),
        "rotation" => Ok(ObjectKind::Rotation),
        "autoselect" => Ok(ObjectKind::Autoselect),
        _ => Err(DashError::Invalid("Kind: provider, rotation or autoselect.".into())),
    }
}

async fn put_route(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<OwnerQuery>,
    form: Form<RouteForm>,
) -> Result<HttpResponse, DashError> {
    let (owner_id, name) = owner(&s, &p, q.user.as_deref()).await?;
    let f = form.0;
    let kind = object_kind(&f.kind)?;
    let spec = if f.spec.trim().is_empty() { "{}" } else { f.spec.as_str() };
    let mut body: serde_json::Value = serde_json::from_str(spec).map_err(|e| {
        let m: String = e.to_string().chars().take(200).collect();
        DashError::Invalid(format!("The specification is not valid JSON: {m}"))
    })?;
    if let (Some(key), Some(obj)) = (opt_text(&f.api_key), body.as_object_mut()) {
        obj.insert("api_key".into(), serde_json::Value::String(key));
    }
    s.control.tenant_write(owner_id).await?;
    s.control.put_user_object(&name, kind, f.name.trim(), body).await?;
    Ok(see_other(&format!("/dashboard/routes{}", for_user(&p, &name))))
}

#[derive(Deserialize)]
struct DeleteRouteForm {
    kind: String,
    name: String,
}

async fn delete_route(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<OwnerQuery>,
    form: Form<DeleteRouteForm>,
) -> Result<HttpResponse, DashError> {
    let (owner_id, name) = owner(&s, &p, q.user.as_deref()).await?;
    let kind = object_kind(&form.0.kind)?;
    s.control.tenant_write(owner_id).await?;
    s.control.delete_user_object(&name, kind, &form.0.name).await?;
    Ok(see_other(&format!("/dashboard/routes{}", for_user(&p, &name))))
}

/// A user as listed.
pub struct UserView {
    pub username: String,
    pub role: &'static str,
    pub tier: String,
    pub status: String,
    pub active: bool,
    pub email: String,
    pub sign_in: String,
    pub created: String,
}

fn user_view(u: &crate::store::UserRow) -> UserView {
    let mut sign_in = Vec::new();
    if u.password_hash.is_some() {
        sign_in.push("password");
    }
    if u.oidc_subject.is_some() {
        sign_in.push("SSO");
    }
    UserView {
        username: u.username.clone(),
        role: u.role.as_str(),
        tier: u.tier.clone().unwrap_or_else(|| "—".into()),
        status: u.status.clone(),
        active: u.is_active(),
        email: u.email.clone().unwrap_or_default(),
        sign_in: if sign_in.is_empty() { "tokens only".into() } else { sign_in.join(", ") },
        created: time(u.created_at),
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    f: Frame,
    users: Vec<UserView>,
    tiers: Vec<String>,
}

async fn users(s: web::Data<DashboardState>, p: Principal) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let users = s.control.list_users().await?;
    let tiers = s.control.list_tiers().await?.into_iter().map(|t| t.name).collect();
    page(&UsersPage {
        f: Frame::new(&p, "/dashboard/users", "Users"),
        users: users.iter().map(user_view).collect(),
        tiers,
    })
}

#[derive(Deserialize)]
struct NewUserForm {
    username: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
}

fn role_of(v: &str) -> Result<Role, DashError> {
    match v {
        "" | "user" => Ok(Role::User),
        "admin" => Ok(Role::Admin),
        _ => Err(DashError::Invalid("Role: admin or user.".into())),
    }
}

async fn create_user(
    s: web::Data<DashboardState>,
    p: Principal,
    form: Form<NewUserForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let f = form.0;
    let name = f.username.trim().to_owned();
    let u = s
        .control
        .create_user(&name, role_of(&f.role)?, opt_text(&f.tier).as_deref(), opt_text(&f.password).as_deref())
        .await?;
    if let Some(email) = opt_text(&f.email) {
        s.control.set_email(&u.username, Some(&email)).await?;
    }
    Ok(see_other(&format!("/dashboard/users/{}", u.username)))
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    f: Frame,
    u: UserView,
    tiers: Vec<String>,
    myself: bool,
}

async fn user(s: web::Data<DashboardState>, p: Principal, name: web::Path<String>) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let u = s.control.get_user(&name).await?;
    let tiers = s.control.list_tiers().await?.into_iter().map(|t| t.name).collect();
    page(&UserPage {
        f: Frame::new(&p, "/dashboard/users", format!("User {}", u.username)),
        myself: u.id == p.user_id,
        u: user_view(&u),
        tiers,
    })
}

#[derive(Deserialize)]
struct UserForm {
    action: String,
    #[serde(default)]
    value: String,
}

async fn update_user(
    s: web::Data<DashboardState>,
    p: Principal,
    name: web::Path<String>,
    form: Form<UserForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let u = s.control.get_user(&name).await?;
    let f = form.0;
    match f.action.as_str() {
        "tier" => {
            s.control.set_user_tier(&u.username, opt_text(&f.value).as_deref()).await?;
        }
        "disable" if u.id == p.user_id => {
            return Err(DashError::Invalid("You cannot disable yourself.".into()));
        }
        "disable" => {
            s.control.disable_user(&u.username).await?;
        }
        "enable" => {
            s.control.enable_user(&u.username).await?;
        }
        "email" => {
            s.control.set_email(&u.username, opt_text(&f.value).as_deref()).await?;
        }
        "password" => s.control.set_password(u.id, &f.value).await?,
        _ => return Err(DashError::Invalid("Unknown change.".into())),
    }
    Ok(see_other(&format!("/dashboard/users/{}", u.username)))
}

/// A tier as listed.
pub struct TierView {
    pub name: String,
    pub rpm: String,
    pub tpm: String,
    pub max_concurrency: String,
    pub quota: String,
    pub routes: String,
    pub max_tokens: String,
}

fn num(v: Option<i64>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

#[derive(Template)]
#[template(path = "tiers.html")]
struct TiersPage {
    f: Frame,
    tiers: Vec<TierView>,
}

async fn tiers(s: web::Data<DashboardState>, p: Principal) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let tiers = s
        .control
        .list_tiers()
        .await?
        .iter()
        .map(|t| TierView {
            name: t.name.clone(),
            rpm: num(t.rpm),
            tpm: num(t.tpm),
            max_concurrency: num(t.max_concurrency),
            quota: t.monthly_quota_usd.map_or_else(|| "—".into(), usd),
            routes: t.routes.as_ref().map_or_else(|| "all".into(), |r| r.join(", ")),
            max_tokens: num(t.max_tokens),
        })
        .collect();
    page(&TiersPage { f: Frame::new(&p, "/dashboard/tiers", "Tiers"), tiers })
}

#[derive(Deserialize)]
struct TierForm {
    name: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    #[serde(default)]
    max_concurrency: String,
    #[serde(default)]
    monthly_quota_usd: String,
    #[serde(default)]
    routes: String,
    #[serde(default)]
    max_tokens: String,
}

async fn put_tier(s: web::Data<DashboardState>, p: Principal, form: Form<TierForm>) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let f = form.0;
    let routes = list(&f.routes);
    let row = TierRow {
        name: f.name.trim().to_owned(),
        rpm: opt("rpm", &f.rpm)?,
        tpm: opt("tpm", &f.tpm)?,
        max_concurrency: opt("max_concurrency", &f.max_concurrency)?,
        monthly_quota_usd: opt("monthly_quota_usd", &f.monthly_quota_usd)?,
        routes: (!routes.is_empty()).then_some(routes),
        max_tokens: opt("max_tokens", &f.max_tokens)?,
    };
    s.control.put_tier(&row).await?;
    Ok(see_other("/dashboard/tiers"))
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
}

async fn delete_tier(
    s: web::Data<DashboardState>,
    p: Principal,
    form: Form<NameForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    s.control.delete_tier(&form.0.name).await?;
    Ok(see_other("/dashboard/tiers"))
}

/// A price as listed.
pub struct PriceView {
    pub model: String,
    pub provider: String,
    pub input: String,
    pub output: String,
    pub cached: String,
    pub cache_write: String,
    pub aliases: String,
}

#[derive(Template)]
#[template(path = "prices.html")]
struct PricesPage {
    f: Frame,
    prices: Vec<PriceView>,
}

async fn prices(s: web::Data<DashboardState>, p: Principal) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let per = |v: f64| format!("${v}");
    let prices = s
        .control
        .list_prices()
        .await?
        .iter()
        .map(|r| PriceView {
            model: r.model.clone(),
            provider: r.provider.clone(),
            input: per(r.input_per_million),
            output: per(r.output_per_million),
            cached: r.cached_input_per_million.map_or_else(|| "= input".into(), per),
            cache_write: r.cache_write_per_million.map_or_else(|| "= input".into(), per),
            aliases: r.aliases.join(", "),
        })
        .collect();
    page(&PricesPage { f: Frame::new(&p, "/dashboard/prices", "Prices"), prices })
}

#[derive(Deserialize)]
struct PriceForm {
    model: String,
    #[serde(default)]
    provider: String,
    input: String,
    output: String,
    #[serde(default)]
    cached: String,
    #[serde(default)]
    cache_write: String,
    #[serde(default)]
    aliases: String,
}

async fn put_price(
    s: web::Data<DashboardState>,
    p: Principal,
    form: Form<PriceForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    let f = form.0;
    let required = |field: &str, v: &str| -> Result<f64, DashError> {
        opt(field, v)?.ok_or_else(|| DashError::Invalid(format!("`{field}` is required.")))
    };
    let row = PriceRow {
        model: f.model.trim().to_owned(),
        provider: f.provider.trim().to_owned(),
        input_per_million: required("input", &f.input)?,
        output_per_million: required("output", &f.output)?,
        cached_input_per_million: opt("cached", &f.cached)?,
        cache_write_per_million: opt("cache_write", &f.cache_write)?,
        aliases: list(&f.aliases),
    };
    s.control.put_price(&row).await?;
    Ok(see_other("/dashboard/prices"))
}

#[derive(Deserialize)]
struct DeletePriceForm {
    model: String,
    #[serde(default)]
    provider: String,
}

async fn delete_price(
    s: web::Data<DashboardState>,
    p: Principal,
    form: Form<DeletePriceForm>,
) -> Result<HttpResponse, DashError> {
    p.admin()?;
    s.control.delete_price(&form.0.model, &form.0.provider).await?;
    Ok(see_other("/dashboard/prices"))
}
