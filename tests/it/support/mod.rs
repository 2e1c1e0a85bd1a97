//! The harness: apps on random loopback ports, the services `tests/run.sh` started, HTTP helpers.

pub mod browser;
pub mod dialect_upstream;
pub mod framed_upstream;
pub mod idp;
pub mod mock_upstream;
pub mod node;
pub mod services;
pub mod webdriver;

use std::time::Duration;

use actix_web::dev::ServerHandle;
use bytes::Bytes;
use serde_json::Value;
use switchyard::config::{ModelConfig, ProviderConfig, Secret, Settings};
use switchyard::server::Application;
use switchyard::types::{Locality, ProviderKind};

/// A service URL exported by `tests/run.sh`. Tests that need it fail loudly without it.
pub fn service_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{var} is not set: run the suite with tests/run.sh, which starts Postgres, MariaDB and Redis"),
    }
}

/// A fresh database name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Creates a fresh database on the server of `admin_url` and returns its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    use sea_orm::{ConnectionTrait, Database};
    let name = unique("t");
    let db = Database::connect(admin_url).await.expect("connect to the admin database");
    db.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
    db.close().await.ok();
    let (base, _) = admin_url.rsplit_once('/').expect("url with a database");
    format!("{base}/{name}")
}

/// A provider pointing at the mock upstream.
pub fn openai_provider(id: &str, base: &str, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        id: id.into(),
        kind: ProviderKind::Openai,
        endpoint: Some(base.into()),
        api_key: None,
        api_version: None,
        responses_api: false,
        default_context_size: None,
        default_error_cooldown: 60,
        timeout: None,
        max_concurrency: None,
        locality: Locality::Local,
        cost: Default::default(),
        models: models
            .iter()
            .map(|m| ModelConfig {
                name: (*m).into(),
                context_size: None,
                max_request_tokens: None,
                capabilities: vec![],
                cache_ttl_secs: None,
                cache_scope: Default::default(),
            })
            .collect(),
    }
}

/// A rotation with only the fields every strategy has.
pub fn rotation(
    name: &str,
    strategy: &str,
    entries: Vec<switchyard::config::RotationEntryConfig>,
) -> switchyard::config::RotationConfig {
    switchyard::config::RotationConfig {
        name: name.into(),
        strategy: strategy.into(),
        entries,
        privacy: false,
        eject_after: None,
        max_ejection_percent: None,
        capabilities: vec![],
        default_max_request_tokens: None,
        max_attempts: None,
        mode: None,
        max_queue: None,
        latency_threshold_ms: None,
        daily_cloud_budget_usd: None,
        sensitive_keywords: vec![],
        sensitive_patterns: vec![],
        primary: vec![],
        secondary: vec![],
        cache_ttl_secs: None,
        cache_scope: Default::default(),
    }
}

/// A running in-process node.
pub struct TestApp {
    pub port: u16,
    pub admin_token: String,
    pub settings: Settings,
    pub handle: ServerHandle,
    pub done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Settings with a SQLite file in `dir` and a known admin token.
pub fn settings_in(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::test_default();
    s.database.url = Secret::new(format!("sqlite://{}/sy.db?mode=rwc", dir.path().display()));
    s.database.max_connections = 4;
    s.bootstrap.admin_token = Some(Secret::new(format!("sy-{}", "a1".repeat(24))));
    s
}

impl TestApp {
    /// Starts a node; `edit` adjusts its settings first.
    pub async fn spawn(edit: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings_in(&dir);
        edit(&mut settings);
        let admin_token = settings.bootstrap.admin_token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
        let app = Application::build(settings.clone()).await.expect("build app");
        let port = app.port();
        let handle = app.handle();
        let done = tokio::spawn(app.run_until_stopped());
        Self { port, admin_token, settings, handle, done, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The database of this node.
    pub async fn store(&self) -> switchyard::store::Store {
        switchyard::store::Store::connect(self.settings.database.url.expose(), 2).await.expect("store")
    }

    /// Control over this node's database and (for Redis) shared state.
    pub async fn control(&self) -> switchyard::control::Control {
        let shared = switchyard::shared::connect(
            self.settings.redis.url.as_ref().map(|u| u.expose()),
            &self.settings.redis.key_prefix,
            2,
        )
        .await
        .expect("shared");
        switchyard::control::Control::new(self.store().await, shared)
    }

    /// Creates a user and a token for it.
    pub async fn user_with_token(&self, name: &str) -> String {
        let c = self.control().await;
        c.create_user(name, switchyard::types::Role::User, None, None).await.expect("user");
        let (raw, _) = c.create_token(switchyard::control::NewTokenRequest::for_user(name)).await.expect("token");
        raw
    }

    /// Waits until the usage record of `request_id` is stored.
    pub async fn usage(&self, request_id: &str) -> switchyard::store::UsageRow {
        let store = self.store().await;
        for _ in 0..200 {
            if let Some(r) = switchyard::store::find_usage(store.conn(), request_id).await.expect("usage query") {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no usage record for {request_id}");
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.done.await;
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {}", self.text());
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["type"].is_string());
        assert!(v["error"].get("param").is_some());
        assert!(self.header("x-request-id").is_some());
        v
    }
}

/// Sends a request with raw control over headers and body.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    let client = awc::Client::builder().disable_timeout().finish();
    let mut req = client.request(awc::http::Method::from_bytes(method.as_bytes()).expect("method"), url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send_body(body.into()).await.expect("request");
    let status = res.status().as_u16();
    let headers =
        res.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = res.body().limit(64 * 1024 * 1024).await.expect("body");
    Resp { status, headers, body }
}

/// `POST` JSON with a bearer token.
pub async fn post_json(url: &str, token: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {token}");
    send("POST", url, &[("authorization", &auth), ("content-type", "application/json")], body.to_string()).await
}

/// `GET` with a bearer token.
pub async fn get(url: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    send("GET", url, &[("authorization", &auth)], Bytes::new()).await
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            let lines: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

/// A chat body.
pub fn chat(model: &str, content: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]})
}
