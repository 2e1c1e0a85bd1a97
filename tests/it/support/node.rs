//! A gateway node as its own process (`switchyard serve`), for what needs the process's own
//! globals: trace export, log lines, signals.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A running node.
pub struct Node {
    pub port: u16,
    /// Its bootstrap admin token.
    pub admin: String,
    child: Child,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts `switchyard serve` on a fresh SQLite database with `config` (TOML appended after
    /// `[server]` and `[database]`) and extra environment variables; waits until it listens.
    pub fn spawn(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin = format!("sy-{}{}", uuid::Uuid::now_v7().simple(), uuid::Uuid::now_v7().simple());
        std::fs::write(
            dir.path().join("sy.toml"),
            format!("[server]\nport = 0\nworkers = 1\n[database]\nurl = \"sqlite://sy.db?mode=rwc\"\n{config}"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.current_dir(dir.path())
            .args(["--config", "sy.toml", "serve"])
            .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", &admin)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                if let Some(p) = line.strip_prefix("Switchyard listening on http://127.0.0.1:") {
                    let port = p.trim().parse().unwrap();
                    return Self { port, admin, child, lines, _dir: dir };
                }
                seen.push_str(&line);
                seen.push('\n');
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the node did not start: {seen}");
    }

    /// A URL on the node.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops the node with SIGTERM (it drains and flushes) and returns every line it wrote.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
        std::thread::sleep(Duration::from_millis(100));
        let mut out = String::new();
        while let Ok(line) = self.lines.try_recv() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The spans the test OTLP receiver holds for `service`.
pub async fn spans(service: &str) -> Vec<serde_json::Value> {
    let base = crate::support::service_url("SWITCHYARD_TEST_OTLP_SPANS");
    let r = crate::support::send("GET", &format!("{base}/api/spans?service={service}"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}
