//! The composition root: builds every component from `Settings`, starts background tasks under
//! one cancellation token, installs the middleware (request id, panic net, error-shape net), and
//! drains in-flight requests, streams and usage records on shutdown.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{IntoServiceFactory as _, ServiceFactoryExt as _};
use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServerHandle, Service as _, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{App, HttpMessage as _, HttpResponse, ResponseError as _, web};
use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::{self, Accounting};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::control::{Bootstrap, Control};
use crate::error::{ApiError, Code};
use crate::ops::{self, OpsState};
use crate::proxy::{self, ProxyState};
use crate::shared;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::types::RequestId;

mod protocol_errors;
mod request_span;

use protocol_errors::Shaped;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has problems.
    #[error("invalid configuration:\n{0}")]
    Config(String),
    /// A dependency failed.
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> StartError {
    StartError::Other(e.to_string())
}

/// A built node, listening but not yet serving.
pub struct Application {
    server: Server,
    port: u16,
    cancel: CancellationToken,
    tasks: TaskTracker,
    store: Store,
    drain: crate::types::Drain,
    shutdown_timeout: Duration,
    /// What the first start created, to print once.
    pub bootstrap: Option<Bootstrap>,
}

impl Application {
    /// Builds a node from settings (checked here too: a node never starts on a bad configuration).
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let problems = crate::config::check(&settings);
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            return Err(StartError::Config(lines.join("\n")));
        }
        // The tokenizer's tables take a moment to build; do it now, off the request path.
        drop(tokio::task::spawn_blocking(crate::tokens::warm));
        let metrics = Arc::new(Metrics::new().map_err(other)?);
        let store = Store::connect(settings.database.url.expose(), settings.database.max_connections)
            .await
            .map_err(|e| StartError::Other(format!("cannot open the database: {e}")))?;
        store.migrate().await.map_err(|e| StartError::Other(format!("cannot migrate the database: {e}")))?;
        let (shared, cache_store) = shared::connect_with_cache(
            settings.redis.url.as_ref().map(|u| u.expose()),
            &settings.redis.key_prefix,
            settings.redis.pool_size,
            settings.cache.max_bytes,
        )
        .await
        .map_err(|e| StartError::Other(format!("cannot reach redis: {e}")))?;
        // A follower of a cache flight waits at most as long as its leader may take.
        let cache = crate::cache::ResponseCache::new(
            &settings.cache,
            cache_store,
            Duration::from_millis(settings.upstream.total_timeout_ms),
            Arc::clone(&metrics),
        );
        let control = Control::new(store.clone(), Arc::clone(&shared))
            .with_security(&settings.security)
            .map_err(|e| StartError::Other(format!("security.master_key: {e}")))?
            .with_tenant_limits(&settings.tenant_limits)
            .with_providers(&settings.providers);
        let bootstrap =
            control.bootstrap(&settings).await.map_err(|e| StartError::Other(format!("bootstrap failed: {e}")))?;
        control.seed_prices(&settings).await.map_err(|e| StartError::Other(format!("cannot seed [[prices]]: {e}")))?;
        let catalog = Arc::new(Catalog::load(&settings, store.clone(), Arc::clone(&shared)).await.map_err(other)?);

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port)).map_err(|e| {
            StartError::Other(format!("cannot listen on {}:{}: {e}", settings.server.host, settings.server.port))
        })?;
        let port = listener.local_addr().map_err(other)?.port();
        let node = if settings.server.node_id.is_empty() {
            format!("{}:{port}", settings.server.host)
        } else {
            settings.server.node_id.clone()
        };

        // This process in the node registry and the ledger: unique per start, so a restarted node
        // never inherits a dead one's unfinished records.
        let node_id = format!("{node}/{}", uuid::Uuid::now_v7());
        let cluster = settings.redis.url.is_some();
        let (accounting, queue) = Accounting::new(settings.usage.queue_capacity, &node, Arc::clone(&metrics));
        let accounting = if cluster { accounting.with_ledger(Arc::clone(&shared), &node_id) } else { accounting };
        let sink = if cluster {
            accounting::Sink::Ledger { shared: Arc::clone(&shared), node_id: node_id.clone(), store: store.clone() }
        } else {
            accounting::Sink::Store(store.clone())
        };
        let heartbeat = Duration::from_millis(settings.cluster.heartbeat_interval_ms.max(50));
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let drain = crate::types::Drain::default();
        if cluster {
            tasks.spawn(accounting::ledger::run_reader(
                Arc::clone(&shared),
                store.clone(),
                Arc::clone(&metrics),
                node_id.clone(),
                settings.usage.batch_size,
                Duration::from_millis(settings.usage.flush_interval_ms.max(10)),
                heartbeat * 3,
                cancel.child_token(),
            ));
            tasks.spawn(accounting::ledger::run_sweeper(
                Arc::clone(&shared),
                crate::shared::NODES_KEY.to_owned(),
                heartbeat,
                cancel.child_token(),
            ));
        }
        tasks.spawn(accounting::run_writer(
            queue,
            sink,
            Arc::clone(&metrics),
            settings.usage.batch_size,
            Duration::from_millis(settings.usage.flush_interval_ms),
            Duration::from_secs(10),
            cancel.child_token(),
        ));
        {
            let catalog = Arc::clone(&catalog);
            let token = cancel.child_token();
            tasks.spawn(async move { catalog.run(token).await });
        }
        {
            let shared = Arc::clone(&shared);
            let token = cancel.child_token();
            tasks.spawn(async move { shared.run(token).await });
        }

        let allowlist = Arc::new(settings.security.endpoint_allowlist.clone());
        let membership = Arc::new(crate::shared::membership::Membership::new(
            Arc::clone(&shared),
            node_id,
            heartbeat,
            catalog.live_nodes(),
        ));
        let limiter = Arc::new(crate::proxy::limits::Limiter::new(Arc::clone(&shared), Arc::clone(&membership)));
        let retries = Arc::new(crate::proxy::RetryBudget::new(
            settings.upstream.retry_budget_percent,
            settings.upstream.retry_budget_min,
        ));
        {
            let retries = Arc::clone(&retries);
            membership.describe(
                serde_json::json!({
                    "node": node,
                    "address": format!("{}:{port}", settings.server.host),
                    "version": env!("CARGO_PKG_VERSION"),
                    "started_at": crate::types::now_ms(),
                    "shared_state": shared.kind(),
                }),
                move || retries.in_flight(),
            );
        }
        {
            let membership = Arc::clone(&membership);
            let token = cancel.child_token();
            tasks.spawn(async move { membership.run(token).await });
        }
        let proxy_state = web::Data::new(ProxyState {
            catalog: Arc::clone(&catalog),
            accounting,
            upstream: Arc::new(settings.upstream.clone()),
            max_body_bytes: settings.server.max_body_bytes,
            metrics: Arc::clone(&metrics),
            shared: Arc::clone(&shared),
            latency: Arc::default(),
            failing: Arc::default(),
            retries,
            limiter,
            membership,
            tracing: crate::telemetry::TraceSettings { capture_content: settings.telemetry.capture_content },
            quotas: Arc::new(crate::accounting::quota::Quotas::new(store.clone(), Arc::clone(&shared))),
            endpoint_allowlist: Arc::clone(&allowlist),
            drain: drain.clone(),
            heavy: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))),
            cache: cache.clone(),
        });
        let tls = Arc::new(crate::upstream::http::tls_config().map_err(StartError::Other)?);
        let admin_state = web::Data::new(
            crate::admin::AdminState::new(Arc::clone(&catalog), control.clone(), Arc::clone(&shared))
                .with_cache(cache.clone()),
        );
        let dashboard_state = web::Data::new(
            crate::dashboard::DashboardState::new(
                &settings,
                Arc::clone(&catalog),
                control.clone(),
                Arc::clone(&shared),
                Arc::new(ProxyRouting(proxy_state.clone())),
                Arc::clone(&tls),
            )
            .map_err(StartError::Other)?,
        );
        let metrics_token = settings
            .metrics
            .token_value()
            .map_err(|e| StartError::Other(format!("metrics.token: {e}")))?
            .map(|t| <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes())));
        let ops_state = web::Data::new(OpsState {
            store: store.clone(),
            shared,
            metrics,
            drain: drain.clone(),
            metrics_token,
            cache: cache.clone(),
        });
        let connect_timeout = Duration::from_millis(settings.upstream.connect_timeout_ms);
        let pool_idle = Duration::from_millis(settings.upstream.pool_idle_timeout_ms);
        let workers = if settings.server.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            settings.server.workers
        };

        let drain_for_app = drain.clone();
        let gate = crate::proxy::gate::ClientGate::new(settings.server.max_requests_per_client);
        let trusted_proxies = Arc::new(settings.server.trusted_proxies.clone());
        let pace = crate::proxy::body::Pace {
            total: Duration::from_millis(settings.server.body_timeout_ms),
            min_rate: settings.server.body_min_bytes_per_sec,
            grace: BODY_GRACE,
        };
        let node_name: Arc<str> = Arc::from(node.as_str());
        let make_app = move || {
            let drain_mw = drain_for_app.clone();
            let node_name = Arc::clone(&node_name);
            let gate = Arc::clone(&gate);
            let trusted = Arc::clone(&trusted_proxies);
            App::new()
                .app_data(web::Data::new(crate::upstream::http::Clients::new(
                    &tls,
                    connect_timeout,
                    pool_idle,
                    Arc::clone(&allowlist),
                )))
                .app_data(proxy_state.clone())
                .app_data(ops_state.clone())
                .app_data(admin_state.clone())
                .app_data(dashboard_state.clone())
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|_, _| ApiError::new(Code::NotFound, "No such path.").into()),
                )
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|e, _| ApiError::new(Code::InvalidRequest, e.to_string()).into()),
                )
                .wrap_fn(move |mut req, srv| {
                    let id = RequestId::new();
                    let draining = drain_mw.draining.is_cancelled();
                    req.extensions_mut().insert(id);
                    // Every body arrives at a pace or fails (408), whichever route reads it.
                    let payload = req.take_payload();
                    req.set_payload(crate::proxy::body::paced(payload, pace));
                    // At most so many requests in flight per client address.
                    // The client address, once per request, for every limit kept per client.
                    let client = {
                        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
                        crate::types::client_ip(
                            req.peer_addr().map(|a| a.ip()),
                            h("x-forwarded-for"),
                            h("x-real-ip"),
                            &trusted,
                        )
                    };
                    if let Some(ip) = client {
                        req.extensions_mut().insert(crate::types::ClientAddr(ip));
                    }
                    let inside = match client.map(|ip| gate.enter(ip)) {
                        Some(None) => {
                            let err = ApiError::new(
                                Code::RateLimitExceeded,
                                "Too many requests in flight from this address; retry when some have finished.",
                            )
                            .with_retry_after(1);
                            let mut res = in_dialect(req.into_response(err.error_response()), proxy::error_dialect(""));
                            res.response_mut().head_mut().set_connection_type(ConnectionType::Close);
                            if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                                res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
                            }
                            return futures_util::future::Either::Left(futures_util::future::ready(Ok(res)));
                        }
                        Some(Some(inside)) => Some(inside),
                        None => None,
                    };
                    let dialect = proxy::error_dialect(req.path());
                    let span = request_span::start(&req, id, &node_name);
                    let fut = {
                        let _entered = span.enter();
                        srv.call(req)
                    };
                    let fut = tracing::Instrument::instrument(fut, span.clone());
                    futures_util::future::Either::Right(async move {
                        let _inside = inside;
                        // A panic cannot take the worker down: it becomes a 500 in the OpenAI shape
                        // (rendered by actix from the error, since the request is gone by then).
                        let res: ServiceResponse<BoxBody> = match AssertUnwindSafe(fut).catch_unwind().await {
                            Ok(Ok(res)) => res.map_into_boxed_body(),
                            Ok(Err(e)) => return Err(e),
                            Err(_) => {
                                tracing::error!(request_id = %id, "A handler panicked.");
                                return Err(ApiError::internal().into());
                            }
                        };
                        let mut res = in_dialect(json_errors(res), dialect);
                        if draining {
                            // A draining node closes each connection after its answer, so
                            // nginx's kept-alive connections move to the other nodes.
                            res.response_mut().head_mut().set_connection_type(ConnectionType::Close);
                        }
                        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                            res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
                        }
                        request_span::status(&span, res.status());
                        Ok(res.map_body(|_, b| BoxBody::new(request_span::SpanBody::new(b, span))))
                    })
                })
                .configure(ops::configure)
                .configure(crate::admin::configure)
                .configure(crate::dashboard::configure)
                .configure(proxy::configure)
                .default_service(web::to(|| async { ApiError::new(Code::NotFound, "No such path.").error_response() }))
        };
        let addr = listener.local_addr().map_err(other)?;
        let header_timeout = Duration::from_millis(settings.server.header_timeout_ms);
        let builder = actix_server::Server::build();
        let shutdown_signal = builder.graceful_shutdown_signal();
        let server = builder
            .workers(workers)
            // The node handles SIGTERM/SIGINT itself (`run_until_stopped`): actix's own handling
            // would cut streams silently at the deadline, and forces on SIGINT.
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_timeout_secs)
            .listen("switchyard", listener, move || {
                let signal = shutdown_signal.clone();
                let app = make_app().into_factory().map_err(|err: actix_web::Error| err.error_response());
                let http = actix_http::HttpService::<Shaped<actix_web::rt::net::TcpStream>, _, _>::build()
                    .graceful_shutdown_signal(move || {
                        let signal = signal.clone();
                        async move { signal.notified().await }
                    })
                    // A client has this long to send a request's head (408); bodies are paced by
                    // the middleware above.
                    .client_request_timeout(header_timeout)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    // A client that closes its side of the connection has left (TESTPLAN F6):
                    // actix then stops the connection at once, dropping its handler or stream —
                    // the upstream call with it (its connection closed, so the upstream stops
                    // generating) — and the usage guard records 499 `client_disconnected` with
                    // what was counted. A client that half-closes after sending its request is
                    // treated as gone (HTTP/1 clients and nginx do not do that).
                    .h1_allow_half_closed(false)
                    .local_addr(addr)
                    .h1(actix_service::map_config(app, |_| actix_web::dev::AppConfig::default()));
                actix_service::fn_service(|io: actix_web::rt::net::TcpStream| async move {
                    let peer = io.peer_addr().ok();
                    let _ = io.set_nodelay(true);
                    Ok::<_, actix_http::error::DispatchError>((Shaped::new(io), peer))
                })
                .and_then(http)
            })
            .map_err(other)?
            .run();
        tracing::info!(port, workers, shared = settings.redis.url.is_some(), "Switchyard node listening.");
        let shutdown_timeout = Duration::from_secs(settings.server.shutdown_timeout_secs);
        Ok(Self { server, port, cancel, tasks, store, drain, shutdown_timeout, bootstrap })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (gracefully with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until a stop signal (SIGTERM or SIGINT drain gracefully), then stops background
    /// tasks and writes every queued usage record.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let signals = tokio::spawn(drain_on_signal(self.server.handle(), self.drain.clone(), self.shutdown_timeout));
        let result = self.server.await;
        signals.abort();
        tracing::info!("HTTP server stopped; flushing usage.");
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.store.close().await;
        result
    }
}

/// The data plane's routing status, for the dashboard's cluster page.
struct ProxyRouting(web::Data<ProxyState>);

impl crate::dashboard::RoutingStatus for ProxyRouting {
    fn status(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + '_>> {
        Box::pin(crate::proxy::routing_status::status(&self.0))
    }
}

/// How long a slow start of a request body is forgiven before its minimum rate applies.
const BODY_GRACE: Duration = Duration::from_secs(5);

/// The first SIGTERM or SIGINT starts a graceful stop: the node stops accepting connections (so
/// nginx moves on to the other nodes) and turns unready, in-flight requests and streams get
/// `timeout` to finish, and streams still open shortly before it ends get an error event and a
/// partial usage record. A second signal stops at once.
async fn drain_on_signal(handle: ServerHandle, drain: crate::types::Drain, timeout: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "Cannot listen for stop signals; a signal will stop the node at once.");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(timeout_secs = timeout.as_secs(), "Stop signal: draining in-flight requests and streams.");
    drain.draining.cancel();
    // The streams are cut a little before actix's own deadline, so their last events leave.
    let margin = (timeout / 10).clamp(Duration::from_millis(250), Duration::from_secs(2)).min(timeout);
    let cut = drain.cut.clone();
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(timeout.saturating_sub(margin)).await;
        tracing::warn!("Drain deadline near: streams still open end now with an error event.");
        cut.cancel();
    });
    tokio::select! {
        () = handle.stop(true) => {}
        _ = term.recv() => handle.stop(false).await,
        _ = int.recv() => handle.stop(false).await,
    }
    cutter.abort();
}

/// Error bodies in the route's dialect: every error is rendered in OpenAI's shape, and an
/// Anthropic route's are rewritten into Anthropic's (status and headers kept).
fn in_dialect(res: ServiceResponse<BoxBody>, dialect: crate::dialect::Dialect) -> ServiceResponse<BoxBody> {
    if dialect != crate::dialect::Dialect::Anthropic || res.status().as_u16() < 400 {
        return res;
    }
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let body = match actix_web::body::MessageBody::try_into_bytes(body) {
        Ok(bytes) => match crate::dialect::anthropic::reshape_error(head.status().as_u16(), &bytes) {
            Some(b) => BoxBody::new(b),
            None => BoxBody::new(bytes),
        },
        Err(body) => body,
    };
    ServiceResponse::new(req, head.set_body(body))
}

/// The error-shape net: any error response that is not JSON (actix's own 404/405/400 texts,
/// payload errors) is rewritten into the OpenAI shape with the same status — except the
/// dashboard's, which are pages.
fn json_errors(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let path = res.request().path();
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        return res;
    }
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let code = match status.as_u16() {
        401 => Code::InvalidToken,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 => Code::MethodNotAllowed,
        413 => Code::RequestTooLarge,
        429 => Code::RateLimitExceeded,
        502 => Code::UpstreamError,
        503 => Code::ServiceUnavailable,
        504 => Code::UpstreamTimeout,
        s if s < 500 => Code::InvalidRequest,
        _ => Code::Internal,
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    let err = ApiError::new(code, format!("{reason}."));
    let mut new = HttpResponse::build(status);
    new.insert_header((CONTENT_TYPE, "application/json"));
    res.into_response(new.body(err.body()).map_into_boxed_body())
}
