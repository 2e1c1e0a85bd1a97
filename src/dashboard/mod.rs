//! The dashboard at `/dashboard`: askama pages rendered on the server, usable without
//! JavaScript, for admins (everything) and users (their own tokens, usage and routes).
//!
//! A request goes through one gate ([`gate`]): static files and the login routes pass; every
//! other page needs a session (else 303 to the login page), and the session's user, as the
//! catalog knows them now (a disabled user's sessions end on every node), is put in the request's
//! extensions as the [`Principal`]. A state-changing request must come from the dashboard's own
//! origin and carry the session's CSRF token ([`forms::Form`]), else 403.
//!
//! Architecture Invariant: a view of `control` and `accounting` like the admin API — every rule
//! lives there; never imports `proxy` or `admin` (what the data plane knows of routing comes in
//! through [`RoutingStatus`]); never names `sea_orm`.

mod chart;
mod errors;
mod forms;
mod login;
mod manage;
mod oidc;
mod pages;
mod session;
mod sso;
mod state;
mod views;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError as _, web};

pub use errors::DashError;
pub use session::Principal;
pub use state::{DashboardState, RoutingStatus};

/// Registers `/dashboard` and everything under it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/dashboard")
            .wrap(actix_web::middleware::from_fn(gate))
            .app_data(web::PathConfig::default().error_handler(|_, _| DashError::NotFound.into()))
            .app_data(
                web::FormConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|_, _| DashError::Invalid("The form could not be read.".into()).into()),
            )
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let m: String = e.to_string().chars().take(200).collect();
                DashError::Invalid(format!("Invalid query: {m}")).into()
            }))
            .route("/static/style.css", web::get().to(views::stylesheet))
            .configure(login::configure)
            .configure(pages::configure)
            .configure(manage::configure)
            .default_service(web::to(|| async { DashError::NotFound.error_response() })),
    );
}

/// Routes that need no session.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/dashboard/login" | "/dashboard/oidc/login" | "/dashboard/oidc/callback" | "/dashboard/static/style.css"
    )
}

/// The one gate of every dashboard request: origin check for state changes, session lookup,
/// security headers on every answer.
async fn gate(
    req: ServiceRequest,
    next: actix_web::middleware::Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<DashboardState>>().cloned().ok_or(DashError::Unavailable)?;
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes && !forms::same_origin(req.request(), state.cfg.public_origin.as_deref()) {
        return Ok(secure(
            req.into_response(DashError::Forbidden("This form came from another site.".into()).error_response()),
        ));
    }
    if !is_open(req.path()) {
        match session::load(&state, req.request()).await {
            Ok(Some(p)) => {
                req.extensions_mut().insert(p);
            }
            Ok(None) if changes => {
                return Ok(secure(
                    req.into_response(DashError::Forbidden("Your session has ended.".into()).error_response()),
                ));
            }
            Ok(None) => {
                let res = HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, "/dashboard/login"))
                    .cookie(session::clear_cookie(&state.cfg))
                    .finish();
                return Ok(secure(req.into_response(res)));
            }
            Err(e) => return Ok(secure(req.into_response(e.error_response()))),
        }
    }
    let res = next.call(req).await?;
    Ok(secure(res))
}

/// Headers every dashboard answer carries: nothing cached, framed, sniffed or leaked.
fn secure(mut res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let h = res.headers_mut();
    let set = |h: &mut actix_web::http::header::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(header::HeaderName::from_static(k), header::HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    res
}
