//! Headless Chromium over WebDriver (chromedriver, raw W3C protocol): what a person does with
//! the dashboard — open pages, type, click — and screenshots.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::services::free_port;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session.
pub struct Chrome {
    driver: Child,
    base: String,
    session: String,
    client: awc::Client,
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium with a 1280×800 viewport.
    pub async fn start() -> Self {
        let chromedriver = std::env::var("SWITCHYARD_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("SWITCHYARD_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{chromedriver}: {e} (tests/run.sh installs chromium-driver)"));
        let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}}}});
        let mut res = client.post(format!("{base}/session")).send_json(&caps).await.expect("new session");
        let v: Value = res.json().limit(1 << 20).await.expect("session json");
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        let mut me = Self { driver, base, session, client };
        // The viewport, not the window, is 1280×800.
        let inner = me.script("return [window.innerWidth, window.innerHeight]").await;
        let (w, h) = (inner[0].as_i64().unwrap_or(1280), inner[1].as_i64().unwrap_or(800));
        me.call("POST", "/window/rect", json!({"width": 1280 + (1280 - w), "height": 800 + (800 - h)})).await;
        me
    }

    async fn try_call(&mut self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut res = if method == "POST" { req.send_json(&body).await } else { req.send().await }.expect("webdriver");
        let v: Value = res.json().limit(64 << 20).await.expect("webdriver json");
        if res.status().as_u16() >= 400 { Err(v) } else { Ok(v["value"].clone()) }
    }

    async fn call(&mut self, method: &str, path: &str, body: Value) -> Value {
        match self.try_call(method, path, body).await {
            Ok(v) => v,
            Err(v) => panic!("webdriver {method} {path}: {v}"),
        }
    }

    /// Opens a URL and waits for its page.
    pub async fn goto(&mut self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).await;
    }

    /// The current URL.
    pub async fn url(&mut self) -> String {
        self.call("GET", "/url", json!({})).await.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML.
    pub async fn source(&mut self) -> String {
        self.call("GET", "/source", json!({})).await.as_str().unwrap_or_default().to_owned()
    }

    async fn script(&mut self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []})).await
    }

    async fn find(&mut self, css: &str) -> String {
        for _ in 0..50 {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let mut res =
                self.client.post(url).send_json(&json!({"using": "css selector", "value": css})).await.expect("find");
            let v: Value = res.json().await.expect("find json");
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element `{css}` on {}", self.url().await)
    }

    /// Types into the element `css`.
    pub async fn type_into(&mut self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/clear"), json!({})).await;
        self.call("POST", &format!("/element/{id}/value"), json!({"text": text})).await;
    }

    /// Clicks the element `css`, a link or a form's button, and waits until the page it leads
    /// to has loaded.
    pub async fn click(&mut self, css: &str) {
        self.script("window.__sy_before_click = true; return true").await;
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), json!({})).await;
        let probe =
            json!({"script": "return window.__sy_before_click === true ? 'old' : document.readyState", "args": []});
        for _ in 0..300 {
            // Errors while the old page unloads are expected: ask again.
            if self.try_call("POST", "/execute/sync", probe.clone()).await.is_ok_and(|v| v == "complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking `{css}` led nowhere from {}", self.url().await);
    }

    /// Saves a PNG of the viewport as `{dir}/{name}.png` when `dir` is given.
    pub async fn screenshot(&mut self, dir: Option<&std::path::Path>, name: &str) {
        let Some(dir) = dir else { return };
        let b64 = self.call("GET", "/screenshot", json!({})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn quit(mut self) {
        self.call("DELETE", "", json!({})).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
