//! The fixed routes of SPEC §5: `GET|POST /dashboard/login`, `POST /dashboard/logout`, the OIDC
//! pair, and the account page (password change).

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::dashboard::errors::DashError;
use crate::dashboard::forms::{Form, Nothing, same_secret};
use crate::dashboard::session::{self, Method, Principal, cookie, random_token};
use crate::dashboard::sso;
use crate::dashboard::state::DashboardState;
use crate::dashboard::views::{Frame, page, see_other};
use crate::shared::WindowCheck;

/// The cookie pairing the login form with the browser that loaded it.
const LOGIN_COOKIE: &str = "sy_login";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/oidc/login", web::get().to(sso::start))
        .route("/oidc/callback", web::get().to(sso::callback))
        .route("/account", web::get().to(account))
        .route("/account/password", web::post().to(change_password));
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
    username: String,
    sso: Option<String>,
}

/// The login page with a fresh form token (and its cookie), at `status`.
fn login_form(
    s: &DashboardState,
    status: actix_web::http::StatusCode,
    error: Option<String>,
    username: &str,
) -> Result<HttpResponse, DashError> {
    let csrf = random_token()?;
    let html = LoginPage {
        csrf: csrf.clone(),
        error,
        username: username.chars().take(64).collect(),
        sso: s.oidc.as_ref().map(|o| o.label().to_owned()),
    }
    .render()
    .map_err(|_| DashError::Unavailable)?;
    Ok(HttpResponse::build(status)
        .cookie(cookie(&s.cfg, LOGIN_COOKIE, csrf, 3600))
        .content_type("text/html; charset=utf-8")
        .body(html))
}

async fn login_page(s: web::Data<DashboardState>, req: HttpRequest) -> Result<HttpResponse, DashError> {
    if session::load(&s, &req).await?.is_some() {
        return Ok(see_other("/dashboard"));
    }
    login_form(&s, actix_web::http::StatusCode::OK, None, "")
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// The throttle's counters of one attempt: per username (whether or not it exists) and per
/// client address, cluster-wide.
fn throttle_checks(s: &DashboardState, username: &str, req: &HttpRequest, amount: i64) -> Vec<WindowCheck> {
    use actix_web::HttpMessage as _;
    let window_ms = s.cfg.window_secs.saturating_mul(1000);
    let mut checks = vec![WindowCheck {
        key: session::key_of("dashlogin:user:", &username.to_lowercase()),
        window_ms,
        amount,
        limit: (amount == 0).then_some(u64::from(s.cfg.failures_per_user)),
    }];
    if let Some(addr) = req.extensions().get::<crate::types::ClientAddr>() {
        checks.push(WindowCheck {
            key: format!("dashlogin:addr:{}", addr.0),
            window_ms,
            amount,
            limit: (amount == 0).then_some(u64::from(s.cfg.failures_per_address)),
        });
    }
    checks
}

async fn login(
    s: web::Data<DashboardState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, DashError> {
    let f = form.into_inner();
    let paired = req.cookie(LOGIN_COOKIE).is_some_and(|c| same_secret(c.value(), &f.csrf));
    if !paired {
        return Err(DashError::Forbidden("This login form has expired; reload the page and try again.".into()));
    }
    let unavailable = |e: crate::shared::SharedError| {
        tracing::warn!(error = %e, "Login throttle unreachable.");
        DashError::Unavailable
    };
    // Refused before any password check once either counter is spent.
    let open = s.shared.windows_add(&throttle_checks(&s, &f.username, &req, 0)).await.map_err(unavailable)?;
    if !open.allowed {
        let secs = open.retry_after_ms.div_ceil(1000).max(1);
        return Err(DashError::Throttled(
            format!("Too many failed logins; try again in {} minutes.", secs.div_ceil(60)),
            secs,
        ));
    }
    match s.control.verify_password(&f.username, &f.password).await {
        Ok(user) => {
            let c = session::open(&s, user.id, Method::Password).await?;
            tracing::info!(user_id = user.id, "Dashboard login.");
            Ok(HttpResponse::SeeOther()
                .insert_header((actix_web::http::header::LOCATION, "/dashboard"))
                .cookie(c)
                .cookie(cookie(&s.cfg, LOGIN_COOKIE, String::new(), 0))
                .finish())
        }
        Err(crate::control::ControlError::Forbidden(m)) => {
            s.shared.windows_add(&throttle_checks(&s, &f.username, &req, 1)).await.map_err(unavailable)?;
            login_form(&s, actix_web::http::StatusCode::UNAUTHORIZED, Some(m), &f.username)
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(s: web::Data<DashboardState>, p: Principal, _: Form<Nothing>) -> Result<HttpResponse, DashError> {
    session::close(&s, &p).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/dashboard/login"))
        .cookie(session::clear_cookie(&s.cfg))
        .finish())
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    f: Frame,
    role: String,
    email: String,
    tier: String,
    has_password: bool,
    sso: bool,
    done: bool,
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn account(
    s: web::Data<DashboardState>,
    p: Principal,
    q: web::Query<DoneQuery>,
) -> Result<HttpResponse, DashError> {
    let u = s.control.get_user_by_id(p.user_id).await?;
    page(&AccountPage {
        f: Frame::new(&p, "/dashboard/account", "Account"),
        role: u.role.as_str().to_owned(),
        email: u.email.clone().unwrap_or_default(),
        tier: u.tier.clone().unwrap_or_else(|| "—".into()),
        has_password: u.password_hash.is_some(),
        sso: u.oidc_subject.is_some(),
        done: q.done.is_some(),
    })
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    new: String,
    confirm: String,
}

async fn change_password(
    s: web::Data<DashboardState>,
    p: Principal,
    form: Form<PasswordForm>,
) -> Result<HttpResponse, DashError> {
    let f = form.0;
    if f.new != f.confirm {
        return Err(DashError::Invalid("The two new passwords differ.".into()));
    }
    s.control.change_password(p.user_id, &f.current, &f.new).await?;
    Ok(see_other("/dashboard/account?done=1"))
}
