//! Validation: every problem, each with its location. `serve` refuses to start on any.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::config::{RotationEntryConfig, Settings, resolve_env_ref};
use crate::types::{ProviderKind, RouteRef, is_valid_provider_id};

/// One problem in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted path, e.g. `rotations[0].entries[1].provider_id`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Returns every problem of `s`; empty means valid.
pub fn check(s: &Settings) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut p = |path: String, msg: String| out.push(Problem::new(path, msg));

    if s.server.host.parse::<std::net::IpAddr>().is_err() && s.server.host != "localhost" {
        p("server.host".into(), format!("`{}` is not an IP address", s.server.host));
    }
    if s.server.max_body_bytes == 0 {
        p("server.max_body_bytes".into(), "must be greater than 0".into());
    }
    let db = s.database.url.expose();
    if !(db.starts_with("sqlite:")
        || db.starts_with("postgres://")
        || db.starts_with("postgresql://")
        || db.starts_with("mysql://"))
    {
        p("database.url".into(), "must start with sqlite:, postgres:// or mysql://".into());
    }
    if s.database.max_connections == 0 {
        p("database.max_connections".into(), "must be greater than 0".into());
    }
    if let Some(e) = &s.telemetry.otlp_endpoint
        && (!e.starts_with("http://") || check_url(e).is_err())
    {
        p("telemetry.otlp_endpoint".into(), "must be an http:// URL (OTLP/gRPC, e.g. http://127.0.0.1:4317)".into());
    }
    if let Some(r) = s.telemetry.sample_ratio
        && !(0.0..=1.0).contains(&r)
    {
        p("telemetry.sample_ratio".into(), "must be between 0 and 1".into());
    }
    if s.telemetry.max_queue == 0 {
        p("telemetry.max_queue".into(), "must be greater than 0".into());
    }
    if let Some(u) = &s.server.public_url
        && (!(u.starts_with("http://") || u.starts_with("https://")) || check_url(u).is_err())
    {
        p("server.public_url".into(), "must be an http:// or https:// URL".into());
    }
    if s.dashboard.session_ttl_secs == 0 {
        p("dashboard.session_ttl_secs".into(), "must be greater than 0".into());
    }
    if s.dashboard.login_window_secs == 0 {
        p("dashboard.login_window_secs".into(), "must be greater than 0".into());
    }
    if let Some(o) = &s.oidc {
        if !(o.issuer.starts_with("http://") || o.issuer.starts_with("https://")) || check_url(&o.issuer).is_err() {
            p("oidc.issuer".into(), "must be an http:// or https:// URL".into());
        }
        if o.client_id.is_empty() {
            p("oidc.client_id".into(), "must not be empty".into());
        }
        if let Err(e) = o.client_secret_value() {
            p("oidc.client_secret".into(), e);
        }
        match (&o.redirect_url, &s.server.public_url) {
            (Some(r), _) => {
                if check_url(r).is_err() || !r.ends_with("/dashboard/oidc/callback") {
                    p("oidc.redirect_url".into(), "must be an absolute URL ending in /dashboard/oidc/callback".into());
                }
            }
            (None, None) => {
                p("oidc.redirect_url".into(), "set it, or server.public_url to derive it from".into());
            }
            (None, Some(_)) => {}
        }
        if !o.scopes.iter().any(|sc| sc == "openid") {
            p("oidc.scopes".into(), "must include `openid`".into());
        }
        if o.admin_claim.is_some() && o.admin_values.is_empty() {
            p("oidc.admin_values".into(), "must list the values of `admin_claim` that make an admin".into());
        }
    }
    if let Some(url) = &s.redis.url
        && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
    {
        p("redis.url".into(), "must start with redis:// or rediss://".into());
    }
    for (name, v) in [
        ("connect_timeout_ms", s.upstream.connect_timeout_ms),
        ("pool_idle_timeout_ms", s.upstream.pool_idle_timeout_ms),
        ("first_byte_timeout_ms", s.upstream.first_byte_timeout_ms),
        ("idle_timeout_ms", s.upstream.idle_timeout_ms),
        ("total_timeout_ms", s.upstream.total_timeout_ms),
        ("keepalive_interval_ms", s.upstream.keepalive_interval_ms),
    ] {
        if v == 0 {
            p(format!("upstream.{name}"), "must be greater than 0".into());
        }
    }
    if s.usage.batch_size == 0 || s.usage.queue_capacity < s.usage.batch_size {
        p("usage".into(), "batch_size must be > 0 and queue_capacity ≥ batch_size".into());
    }
    if !matches!(s.log.format.as_str(), "text" | "json") {
        p("log.format".into(), "must be `text` or `json`".into());
    }
    if let Some(t) = &s.bootstrap.admin_token
        && !crate::types::is_well_formed_token(t.expose())
    {
        p("bootstrap.admin_token".into(), "must be `sy-` followed by at least 43 URL-safe characters".into());
    }
    if !crate::types::is_valid_username(&s.bootstrap.admin_username) {
        p("bootstrap.admin_username".into(), "is not a valid username".into());
    }

    // Providers: ids, endpoints, keys, models.
    let mut models: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (i, pr) in s.providers.iter().enumerate() {
        let at = format!("providers[{i}]");
        if !is_valid_provider_id(&pr.id) {
            p(
                format!("{at}.id"),
                format!("`{}` must match [a-z0-9][a-z0-9_-]{{0,62}} and not be a reserved word", pr.id),
            );
        }
        if models.contains_key(pr.id.as_str()) {
            p(format!("{at}.id"), format!("duplicate provider id `{}`", pr.id));
        }
        match (&pr.endpoint, pr.kind) {
            (None, ProviderKind::Mock | ProviderKind::Broker) => {}
            (Some(_), ProviderKind::Broker) => {
                p(format!("{at}.endpoint"), "a broker provider has none: its workers dial in".into());
            }
            (None, _) => p(format!("{at}.endpoint"), "is required".into()),
            (Some(e), _) => {
                if let Err(m) = check_url(e) {
                    p(format!("{at}.endpoint"), m);
                }
            }
        }
        if let Some(key) = &pr.api_key
            && let Err(m) = resolve_env_ref(key.expose())
        {
            p(format!("{at}.api_key"), m);
        }
        check_addressing(pr, &at, &mut p);
        if pr.max_concurrency == Some(0) {
            p(format!("{at}.max_concurrency"), "must be greater than 0".into());
        }
        if pr.timeout == Some(0) {
            p(format!("{at}.timeout"), "must be greater than 0".into());
        }
        if pr.models.is_empty() {
            p(format!("{at}.models"), "lists no model".into());
        }
        let mut names = HashSet::new();
        for (j, m) in pr.models.iter().enumerate() {
            if m.name.is_empty() || m.name.len() > 256 || m.name.chars().any(char::is_control) {
                p(format!("{at}.models[{j}].name"), "must be 1–256 printable characters".into());
            }
            if !names.insert(m.name.as_str()) {
                p(format!("{at}.models[{j}].name"), format!("duplicate model `{}`", m.name));
            }
            if let (Some(ctx), Some(max)) = (m.context_size.or(pr.default_context_size), m.max_request_tokens)
                && max > ctx
            {
                p(format!("{at}.models[{j}].max_request_tokens"), "is larger than the context size".into());
            }
        }
        for (model, cost) in &pr.cost {
            if !names.contains(model.as_str()) {
                p(format!("{at}.cost.{model}"), "names a model the provider does not list".into());
            }
            if cost.input_per_million < 0.0
                || cost.output_per_million < 0.0
                || cost.cached_input_per_million.is_some_and(|c| c < 0.0)
                || cost.cache_write_per_million.is_some_and(|c| c < 0.0)
            {
                p(format!("{at}.cost.{model}"), "prices must not be negative".into());
            }
        }
        models.insert(&pr.id, names);
    }

    let entry_problems = |at: &str, e: &RotationEntryConfig, out: &mut Vec<Problem>| match models
        .get(e.provider_id.as_str())
    {
        None => out.push(Problem::new(format!("{at}.provider_id"), format!("unknown provider `{}`", e.provider_id))),
        Some(ms) => {
            if !ms.contains(e.model.as_str()) {
                out.push(Problem::new(
                    format!("{at}.model"),
                    format!("provider `{}` has no model `{}`", e.provider_id, e.model),
                ));
            }
            if e.weight.is_nan() || e.weight <= 0.0 {
                out.push(Problem::new(format!("{at}.weight"), "must be greater than 0"));
            }
        }
    };

    // Rotations.
    let mut rotation_names = HashSet::new();
    for (i, r) in s.rotations.iter().enumerate() {
        let at = format!("rotations[{i}]");
        if !is_valid_provider_id(&r.name) {
            out.push(Problem::new(format!("{at}.name"), format!("`{}` must match [a-z0-9][a-z0-9_-]{{0,62}}", r.name)));
        }
        if !rotation_names.insert(r.name.as_str()) {
            out.push(Problem::new(format!("{at}.name"), format!("duplicate rotation `{}`", r.name)));
        }
        match r.strategy.as_str() {
            "weighted" | "priority" | "least_busy" => {
                if r.entries.is_empty() {
                    out.push(Problem::new(format!("{at}.entries"), "lists no entry"));
                }
            }
            "burst" => {
                if !matches!(r.mode.as_deref(), Some("edge_burst" | "cloud_burst")) {
                    out.push(Problem::new(format!("{at}.mode"), "must be `edge_burst` or `cloud_burst`"));
                }
                if r.primary.is_empty() {
                    out.push(Problem::new(format!("{at}.primary"), "lists no entry"));
                }
                if r.secondary.is_empty() {
                    out.push(Problem::new(format!("{at}.secondary"), "lists no entry"));
                }
                if r.daily_cloud_budget_usd.is_some_and(|b| b.is_nan() || b < 0.0) {
                    out.push(Problem::new(format!("{at}.daily_cloud_budget_usd"), "must not be negative"));
                }
            }
            other => out.push(Problem::new(
                format!("{at}.strategy"),
                format!("`{other}` is not one of weighted, priority, least_busy, burst"),
            )),
        }
        for (j, pat) in r.sensitive_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pat) {
                out.push(Problem::new(format!("{at}.sensitive_patterns[{j}]"), format!("invalid regex: {e}")));
            }
        }
        if r.eject_after == Some(0) {
            out.push(Problem::new(format!("{at}.eject_after"), "must be greater than 0"));
        }
        if r.max_ejection_percent.is_some_and(|p| p == 0 || p > 100) {
            out.push(Problem::new(format!("{at}.max_ejection_percent"), "must be between 1 and 100"));
        }
        if r.max_attempts == Some(0) {
            out.push(Problem::new(format!("{at}.max_attempts"), "must be greater than 0"));
        }
        for (list, entries) in [("entries", &r.entries), ("primary", &r.primary), ("secondary", &r.secondary)] {
            for (j, e) in entries.iter().enumerate() {
                entry_problems(&format!("{at}.{list}[{j}]"), e, &mut out);
            }
        }
    }

    // Security.
    match s.security.master_key_value() {
        Ok(Some(k)) if crate::crypto::MasterKey::parse(&k).is_err() => {
            out.push(Problem::new("security.master_key", "must be 32 bytes, as 64 hex characters or base64"));
        }
        Ok(_) => {}
        Err(e) => out.push(Problem::new("security.master_key", e)),
    }
    for (i, a) in s.security.endpoint_allowlist.iter().enumerate() {
        let ok = a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            out.push(Problem::new(format!("security.endpoint_allowlist[{i}]"), "must be an exact `host:port`"));
        }
    }

    match s.metrics.token_value() {
        Ok(Some(t)) if t.len() < 16 => out.push(Problem::new("metrics.token", "must be at least 16 characters")),
        Ok(_) => {}
        Err(e) => out.push(Problem::new("metrics.token", e)),
    }
    if s.security.auth_failures_per_minute == 0 {
        out.push(Problem::new("security.auth_failures_per_minute", "must be greater than 0"));
    }
    if s.security.unknown_token_lookups == 0 {
        out.push(Problem::new("security.unknown_token_lookups", "must be greater than 0"));
    }
    if s.server.header_timeout_ms == 0 || s.server.body_timeout_ms == 0 {
        out.push(Problem::new("server.body_timeout_ms", "header and body timeouts must be greater than 0"));
    }

    // Autoselects.
    let mut auto_names = HashSet::new();
    for a in &s.autoselects {
        auto_names.insert(a.name.as_str());
    }
    let route_exists = |route: &str| match RouteRef::parse(route) {
        RouteRef::Provider { provider, model } => {
            models.get(provider.as_str()).is_some_and(|m| m.contains(model.as_str()))
        }
        RouteRef::Rotation(n) => rotation_names.contains(n.as_str()),
        RouteRef::Autoselect(n) => auto_names.contains(n.as_str()),
        _ => false,
    };
    let mut seen = HashSet::new();
    for (i, a) in s.autoselects.iter().enumerate() {
        let at = format!("autoselects[{i}]");
        if !is_valid_provider_id(&a.name) {
            out.push(Problem::new(format!("{at}.name"), format!("`{}` must match [a-z0-9][a-z0-9_-]{{0,62}}", a.name)));
        }
        if !seen.insert(a.name.as_str()) {
            out.push(Problem::new(format!("{at}.name"), format!("duplicate autoselect `{}`", a.name)));
        }
        // A selection route is called for every request: it must exist and must not be an
        // autoselect itself (which would select by calling itself).
        let selection_route = |key: &str, route: Option<&str>, out: &mut Vec<Problem>| match route {
            Some(r) if matches!(RouteRef::parse(r), RouteRef::Autoselect(_)) => {
                out.push(Problem::new(format!("{at}.{key}"), "must not be an autoselect"));
            }
            Some(r) if route_exists(r) => {}
            _ => out.push(Problem::new(format!("{at}.{key}"), "must name an existing route")),
        };
        match a.selection.as_str() {
            "rules" => {}
            "embedding" => {
                selection_route("embedding_route", a.embedding_route.as_deref(), &mut out);
                for (j, c) in a.available_models.iter().enumerate() {
                    if c.description.trim().is_empty() && c.examples.iter().all(|e| e.trim().is_empty()) {
                        out.push(Problem::new(
                            format!("{at}.available_models[{j}]"),
                            "needs a description or examples to compare prompts with",
                        ));
                    }
                }
            }
            "llm" => selection_route("selection_model", a.selection_model.as_deref(), &mut out),
            other => out.push(Problem::new(
                format!("{at}.selection"),
                format!("`{other}` is not one of rules, embedding, llm"),
            )),
        }
        if a.selection_timeout_ms == 0 || a.selection_timeout_ms > 60_000 {
            out.push(Problem::new(format!("{at}.selection_timeout_ms"), "must be between 1 and 60000"));
        }
        if a.min_similarity.is_some_and(|m| !(-1.0..=1.0).contains(&m)) {
            out.push(Problem::new(format!("{at}.min_similarity"), "must be between -1 and 1"));
        }
        if let Some(f) = &a.fallback
            && !route_exists(f)
        {
            out.push(Problem::new(format!("{at}.fallback"), format!("unknown route `{f}`")));
        }
        for (j, pat) in a.privacy_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pat) {
                out.push(Problem::new(format!("{at}.privacy_patterns[{j}]"), format!("invalid regex: {e}")));
            }
        }
        if a.available_models.is_empty() {
            out.push(Problem::new(format!("{at}.available_models"), "lists no candidate"));
        }
        for (j, c) in a.available_models.iter().enumerate() {
            if !route_exists(&c.route) {
                out.push(Problem::new(
                    format!("{at}.available_models[{j}].route"),
                    format!("unknown route `{}`", c.route),
                ));
            }
        }
    }

    // Prices.
    let mut price_keys = HashSet::new();
    for (i, pr) in s.prices.iter().enumerate() {
        let at = format!("prices[{i}]");
        if pr.model.is_empty() {
            out.push(Problem::new(format!("{at}.model"), "is empty"));
        }
        if !price_keys.insert((pr.model.as_str(), pr.provider.as_deref())) {
            out.push(Problem::new(format!("{at}.model"), format!("duplicate price for `{}`", pr.model)));
        }
        if pr.input_per_million < 0.0
            || pr.output_per_million < 0.0
            || pr.cached_input_per_million.is_some_and(|c| c < 0.0)
            || pr.cache_write_per_million.is_some_and(|c| c < 0.0)
        {
            out.push(Problem::new(at.clone(), "prices must not be negative"));
        }
        if let Some(provider) = &pr.provider
            && !models.contains_key(provider.as_str())
        {
            out.push(Problem::new(format!("{at}.provider"), format!("unknown provider `{provider}`")));
        }
    }
    out
}

/// Azure OpenAI: an `api_version`, and deployment names (the models) that fit in a URL path.
fn check_addressing(pr: &crate::config::ProviderConfig, at: &str, p: &mut impl FnMut(String, String)) {
    let safe = |s: &str, extra: &[char]| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c))
    };
    match (pr.kind, pr.api_version.as_deref()) {
        (ProviderKind::Azure, None) => p(format!("{at}.api_version"), "is required for an azure provider".into()),
        (ProviderKind::Azure, Some(v)) if !safe(v, &['.']) => {
            p(format!("{at}.api_version"), format!("`{v}` is not an Azure api-version (e.g. 2024-10-21)"))
        }
        (ProviderKind::Azure, Some(_)) => {
            for (j, m) in pr.models.iter().enumerate() {
                if !safe(&m.name, &['.']) || m.name.starts_with('.') {
                    p(
                        format!("{at}.models[{j}].name"),
                        format!("`{}` is not an Azure deployment name (letters, digits, `-`, `_`, `.`)", m.name),
                    );
                }
            }
        }
        (_, Some(_)) => p(format!("{at}.api_version"), "applies to azure providers only".into()),
        (_, None) => {}
    }
    if pr.responses_api && pr.kind != ProviderKind::Openai {
        p(format!("{at}.responses_api"), "applies to openai providers only".into());
    }
    // Gemini names the model in the path.
    if pr.kind == ProviderKind::Gemini {
        for (j, m) in pr.models.iter().enumerate() {
            if !safe(&m.name, &['.']) || m.name.starts_with('.') {
                p(
                    format!("{at}.models[{j}].name"),
                    format!("`{}` is not a Gemini model name (letters, digits, `-`, `_`, `.`)", m.name),
                );
            }
        }
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("`{s}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials; use api_key".into());
    }
    if uri.query().is_some() {
        return Err("must not carry a query string".into());
    }
    Ok(())
}
