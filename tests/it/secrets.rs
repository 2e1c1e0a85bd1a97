//! S8: secrets never appear in logs, metrics or responses, even at TRACE.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::mock_upstream::{MockUpstream, Plan};
use crate::support::{get, post_json, send};

fn windows(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(8).map(|w| w.iter().collect()).collect()
}

#[actix_web::test]
async fn canaries_never_reach_logs_metrics_or_bodies() {
    let mock = MockUpstream::start(1);
    let key = "sk-canary-KEY-7f3a9b1c5d2e8f4a6b0c";
    let admin = format!("sy-{}", "c0ffee".repeat(8));
    let prompt = "CANARY-PROMPT-zq81xv";
    // Traces go to the test's OTLP receiver: every exported attribute is checked too.
    let service = format!("sy-s8-{}", uuid::Uuid::now_v7().simple());
    let otlp = crate::support::service_url("SWITCHYARD_TEST_OTLP_GRPC");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sy.toml"),
        format!(
            "[server]\nport = 0\nworkers = 1\n[database]\nurl = \"sqlite://sy.db?mode=rwc\"\n[log]\nlevel = \"trace\"\n\
             [telemetry]\notlp_endpoint = \"{otlp}\"\nservice_name = \"{service}\"\n\
             [[providers]]\nid = \"local\"\ntype = \"openai\"\nendpoint = \"{}\"\napi_key = \"$SY_CANARY_KEY\"\nmodels = [{{ name = \"qwen\" }}]\n",
            mock.base()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .args(["--config", "sy.toml", "serve"])
        .env("SY_CANARY_KEY", key)
        .env("SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN", &admin)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx2.send(format!("STDERR-END\n{all}"));
    });
    let mut logs = String::new();
    let mut port = 0u16;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while port == 0 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(p) = line.strip_prefix("Switchyard listening on http://127.0.0.1:") {
                port = p.trim().parse().unwrap();
            }
            logs.push_str(&line);
            logs.push('\n');
        }
    }
    assert!(port != 0, "the node did not start: {logs}");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let mut bodies = String::new();
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    bodies.push_str(&r.text());
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    bodies.push_str(&r.text());
    mock.plan(Plan {
        status: 401,
        error_body: Some(format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}"}}}}"#)),
        ..Plan::default()
    });
    let r = post_json(
        &url("/v1/chat/completions"),
        &admin,
        &json!({"model": "qwen", "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(r.status, 502);
    bodies.push_str(&r.text());
    let wrong = format!("Bearer sy-{}", "d".repeat(64));
    bodies.push_str(
        &send(
            "POST",
            &url("/v1/chat/completions"),
            &[("authorization", &wrong), ("content-type", "application/json")],
            "{}",
        )
        .await
        .text(),
    );
    bodies.push_str(
        &post_json(&url("/v1/chat/completions"), &admin, &json!({"model": "qwen", "messages": prompt})).await.text(),
    );
    bodies.push_str(&get(&url("/metrics"), &admin).await.text());
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some(format!("Bearer {key}").as_str()),
        "the key must reach the upstream"
    );

    // SIGTERM drains and exits; then every line it wrote is checked.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    out_thread.join().unwrap();
    err_thread.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.contains("STDERR-END"));
    assert!(logs.len() > 2_000, "TRACE logging produced too little to be a real check: {} bytes", logs.len());
    let spans = serde_json::to_string(&crate::support::node::spans(&service).await).unwrap();
    assert!(spans.contains("gen_ai.usage.input_tokens"), "no attempt span was exported: {spans}");
    for (what, secret) in [("provider key", key), ("admin token", admin.as_str()), ("prompt", prompt)] {
        for w in windows(secret) {
            assert!(!logs.contains(&w), "{what} fragment `{w}` is in the logs");
            assert!(!spans.contains(&w), "{what} fragment `{w}` is in an exported span");
            if what != "prompt" {
                assert!(!bodies.contains(&w), "{what} fragment `{w}` is in a response body");
            }
        }
    }
}
