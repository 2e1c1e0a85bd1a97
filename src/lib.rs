//! # Switchyard: a clustered, multi-tenant LLM gateway
//!
//! ## Bird's-eye view
//!
//! A client sends an OpenAI-compatible request with a `sy-…` token. The node authenticates it
//! against an in-memory catalog, validates the body, resolves `model` to a provider and model,
//! opens a usage record, forwards the body (only `model` rewritten) to the upstream, and relays
//! the answer byte for byte — streams event by event as they arrive — while reading token usage
//! out of it. Every proxied request ends in exactly one usage record, written asynchronously in
//! batches. Nodes are stateless: durable state is in the database (SQLite embedded, Postgres or
//! MySQL in a cluster), shared volatile state behind one trait (in process, or Redis).
//!
//! ## Entry points
//!
//! - `main.rs` → [`cli::run`]: `serve`, `migrate`, `config check`, `user …`, `token …`.
//! - [`server::Application::build`]: the composition root used by `serve`, the tests and the
//!   benchmark.
//! - [`proxy::configure`]: every data-plane route; [`ops::configure`]: `/health`, `/ready`, `/metrics`.
//!
//! ## Code map (layers: a module uses only lower layers, plus the arrows named)
//!
//! - L0 [`types`], [`error`]: ids, route names, usage; the one error type and its code table.
//!   **Architecture Invariant:** every client-visible error is an [`error::ApiError`].
//! - L0 [`crypto`]: AES-256-GCM for provider keys at rest, bound to owner and provider.
//! - L0 [`tokens`]: the BPE tokenizer (`o200k_base`) and the cheap byte bound used before it.
//! - L0 [`privacy`]: the privacy classifier (secrets, personal data, keywords, regexes), compiled
//!   into the catalog snapshot with the autoselects and burst rotations that use it.
//! - L1 [`config`]: `Settings`, layered loading, validation returning every problem.
//! - L2 [`store`]: all SQL (sea-orm), migrations in the `migration` crate.
//!   **Architecture Invariant:** no other module names `sea_orm`.
//! - L2 [`shared`]: the `SharedState` trait, in-process and Redis implementations, Lua scripts;
//!   cluster membership (the heartbeat and the live-node count).
//!   **Architecture Invariant:** no other module names `redis`.
//! - L2 [`dialect`]: the wire protocols (OpenAI first): validating a client's body, building an
//!   upstream's (passthrough: the client's bytes, only `model` spliced in), reading answers,
//!   stream events, usage and error messages; SSE framing; the in-process `mock` upstream.
//!   Translation goes through OpenAI Chat as the pivot: `anthropic`, `gemini` and `responses`
//!   each map their dialect to and from Chat (requests, whole answers, stream events, pure state
//!   machines), `bridge` chains them for one (client, upstream) pair, and `pivot` is what every
//!   phase reads of a request (Chat, whatever the client spoke). **Architecture
//!   Invariant:** nothing outside a dialect names its JSON fields; a pair's mapping lives in the
//!   non-Chat side's module.
//! - L2 [`upstream`]: transports (HTTP over hyper, in process) that carry bytes and yield a status,
//!   a few headers and a byte stream; failure kinds; the SSRF guard. **Architecture Invariant:**
//!   knows nothing of tenants, the store, shared state or dialects; nothing else names hyper.
//! - L2 [`telemetry`]: structured logs, OpenTelemetry traces over OTLP/gRPC (bounded export
//!   queue, drops counted), and the Prometheus registry.
//! - L3 [`catalog`]: the swapped-whole snapshot of providers, users and token hashes, name
//!   resolution, and the reload loop; derived state (compiled classifiers, autoselect embedding
//!   vectors) lives in the snapshot, so a change takes effect with the version that carries it;
//!   the brute-force throttle of unknown tokens per client address. **Architecture Invariant:**
//!   the request path never waits on SQL except for a token hash it has never seen (a few such
//!   lookups at a time per node, none for a locked-out address).
//! - L3 [`accounting`] (◄ catalog): usage guards and the batching writer.
//!   **Architecture Invariant:** a guard that is dropped unfinished still writes its record.
//! - L3 [`broker`]: the broker workers' protocol — frames over the worker's websocket (one
//!   binary message each, multiplexed by stream id, credit-based flow control, cancellation) and
//!   the relay across nodes through shared-state streams; see its module docs. **Architecture
//!   Invariant:** a malformed frame ends its connection, never the node.
//! - L3 [`cache`]: the response cache — keys over the canonical body, the stored form of
//!   answers (streams event by event), single flight, `Cache-Control`; its store is a
//!   `shared` trait (in process, or Redis). **Architecture Invariant:** knows nothing of HTTP or
//!   the proxy's phases.
//! - L3 [`control`] (◄ catalog): write-side rules for users and tokens, bootstrap; every change
//!   bumps and announces the catalog version.
//! - L4 [`proxy`]: the data plane in named phases over one request: `admit` (cheap checks, rate
//!   limits; the usage record opens) → `plan` (autoselect, context windows counted off the worker
//!   threads, quota, burst, order, cooldowns) → `attempt` per candidate → a typed `Reply` that only
//!   `respond` turns into HTTP; retries are decided in one place, and every ending without an
//!   answer is finished into the record in one place. **The usage-record rule:** a request that
//!   passes admission (authenticated, valid, resolved, permitted, within its rate limits, room in
//!   the usage queue) has exactly one record whatever happens next — refusals, failures and
//!   disconnects included; a request refused before that has none; an autoselect's selection
//!   call has its own record naming the request it served. Also: the per-client gate and the
//!   request-body pacing the server installs. **Architecture Invariant:** never imports
//!   `control`; every route it calls is checked against the caller's token, its ancestors and its
//!   tier; no import cycle between its files.
//! - L4 [`admin`]: `/admin/api/` (admin tokens) and `/api/me/` (own objects) over `control` and
//!   accounting reports. **Architecture Invariant:** never imports `proxy`.
//! - L4 [`dashboard`]: `/dashboard`, askama pages over `control` and accounting reports (usage
//!   from the rollups, never a scan of the usage table); password and OIDC login; sessions,
//!   pending OIDC logins and login throttles in the shared state. **Architecture Invariant:**
//!   one gate puts the session's [`dashboard::Principal`] in the request; every state change
//!   is a `POST` whose form carries the session's CSRF token from the dashboard's own origin;
//!   never imports `proxy` or `admin` (routing status comes in through a trait).
//! - L4 [`ops`]: health, readiness, metrics.
//! - L5 [`server`], [`cli`]: composition (the HTTP server assembled from actix's parts, each
//!   connection wrapped so codec-level errors get the error shape) and the command line.
//!
//! `tests/it/layering.rs` enforces the layers, the forbidden arrows and the absence of import
//! cycles between the files of a module.
//!
//! ## Cross-cutting concerns
//!
//! - **Errors**: lower layers have their own error enums; the data plane maps them to
//!   [`error::ApiError`]; upstream failures never echo upstream URLs, keys or more than 200
//!   characters of upstream text.
//! - **Traces**: a server span per request (continued from the client's `traceparent`), a routing
//!   span, a client span per upstream attempt with the GenAI attributes; spans of streams last to
//!   the last byte; no prompt or answer text unless `telemetry.capture_content`.
//! - **Secrets**: tokens are stored as SHA-256 and compared in constant time; provider keys come
//!   from environment references; [`config::Secret`] never prints; logs never carry tokens, keys
//!   or prompt text (tested at TRACE level).
//! - **Testing**: one integration binary in `tests/it/` with apps on random loopback ports, a
//!   scriptable mock upstream, and real Postgres, MariaDB and Redis started by `tests/run.sh`.

pub mod accounting;
pub mod admin;
pub mod broker;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod dashboard;
pub mod dialect;
pub mod error;
pub mod ops;
pub mod privacy;
pub mod proxy;
pub mod server;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod types;
pub mod upstream;
